"""Transfer syntaxes: what each one is (syntaxes.py) and the lossless changes between them
(transcode.py), shared by every way objects leave the archive (DICOMweb, DIMSE retrieves)."""
