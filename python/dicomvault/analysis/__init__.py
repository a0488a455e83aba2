"""Derived objects the archive writes itself from what users do in the viewer: measurement reports
(sr.py, DICOM SR TID 1500); segmentations come later. Everything here is plain pydicom: a module
builds a Dataset, the caller stores it through the engine like any received object."""
