"""DICOMweb (PS3.18): QIDO-RS, WADO-RS, STOW-RS under /dicom-web.

Modules: ``routes`` (the Starlette routes), ``qido`` (query parameters to index queries),
``json_model`` (DICOM JSON, PS3.18 F.2), ``metadata`` (instance metadata and its cache),
``pixels`` (frames out of stored objects), ``render`` (rendered and thumbnail images),
``transcode`` (lossless transfer-syntax changes), ``multipart`` (multipart/related in and out),
``media`` (Accept negotiation), ``stow`` (STOW-RS store and response).
"""
