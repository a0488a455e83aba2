"""Which objects may carry identity burned into their pixels (PS3.15 E.1.1: the profile does not
clean pixel data, so such objects are held back unless the caller accepts them).

An object is flagged when:
- Burned In Annotation (0028,0301) is YES; or
- the attribute is absent or empty and the object is of a kind whose pixels usually carry text:
  ultrasound, X-ray angiography and fluoroscopy, endoscopy, photography, video and secondary
  capture (screen grabs, scanned documents). Other modalities (CT, MR, PET, CR, DX, MG ...) put
  their annotations in overlays or presentation states, not in the pixels, and are not flagged.
- Burned In Annotation NO is trusted: the modality vouched for its pixels.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

LIKELY_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "OP", "SM", "OT", "DOC", "VIDEO"})
# Secondary Capture (single and multi-frame), VL photographic / endoscopic / microscopic and
# video objects: their pixels are pictures of something else, text included.
LIKELY_SOP_CLASS_PREFIXES = ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.77.1")


def burned_in_reason(ds: Dataset) -> str | None:
    """Why `ds` is flagged, or None."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    value = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if value == "YES":
        return "BurnedInAnnotation is YES"
    if value == "NO":
        return None
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in LIKELY_MODALITIES:
        return f"modality {modality} without BurnedInAnnotation usually has text in its pixels"
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if any(sop_class == p or sop_class.startswith(p + ".") for p in LIKELY_SOP_CLASS_PREFIXES):
        return f"SOP class {sop_class} (secondary capture / photographic) without BurnedInAnnotation"
    return None
