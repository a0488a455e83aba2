"""Which body region a series' text names, and which regions a Body Part Examined value covers:
the small synonym table behind the quality analyzer's "body part vs protocol" check.

A region is named by whole words of Protocol Name / Series Description (lowercased, split at
anything not a letter or digit: "CT_THORAX-HR" -> ct, thorax, hr). The check flags only a clear
contradiction: the text names at least one region, Body Part Examined is a value of the table,
and none of the text's regions is one the body part covers. Values missing from the table (a
site's own terms) are never flagged."""

from __future__ import annotations

import re

# Words that name a region (a word names one region only; ambiguous ones like "pe" are left out).
REGION_WORDS: dict[str, frozenset[str]] = {
    "HEAD": frozenset({"head", "brain", "skull", "cranial", "cranium", "neuro", "sinus", "sinuses", "orbit",
                       "orbits", "iac", "pituitary", "cerebral", "kopf", "schaedel"}),
    "NECK": frozenset({"neck", "thyroid", "larynx", "carotid", "carotids", "hals"}),
    "CHEST": frozenset({"chest", "thorax", "thoracic", "thx", "lung", "lungs", "pulmonary", "pulmo", "rib",
                        "ribs", "mediastinum", "sternum"}),
    "HEART": frozenset({"heart", "cardiac", "coronary", "coronaries", "cardio", "herz"}),
    "ABDOMEN": frozenset({"abdomen", "abd", "abdominal", "liver", "pancreas", "kidney", "kidneys", "renal",
                          "urogram", "abdo", "bauch"}),
    "PELVIS": frozenset({"pelvis", "pelvic", "prostate", "bladder", "becken"}),
    "SPINE": frozenset({"spine", "spinal", "cspine", "tspine", "lspine", "lumbar", "lws", "bws", "hws",
                        "vertebral"}),
    "BREAST": frozenset({"breast", "breasts", "mammo", "mammography"}),
    "SHOULDER": frozenset({"shoulder", "shoulders"}),
    "ELBOW": frozenset({"elbow"}),
    "HAND": frozenset({"hand", "hands", "wrist", "finger", "fingers"}),
    "HIP": frozenset({"hip", "hips"}),
    "KNEE": frozenset({"knee", "knees"}),
    "FOOT": frozenset({"foot", "feet", "ankle", "toe", "toes", "calcaneus"}),
}
ALL_REGIONS = frozenset(REGION_WORDS)
LIMBS = frozenset({"SHOULDER", "ELBOW", "HAND", "HIP", "KNEE", "FOOT"})

# Body Part Examined (PS3.16 Annex L defined terms, and common variants) -> regions it covers.
BODY_PART_REGIONS: dict[str, frozenset[str]] = {
    "HEAD": frozenset({"HEAD"}), "BRAIN": frozenset({"HEAD"}), "SKULL": frozenset({"HEAD"}),
    "HEADNECK": frozenset({"HEAD", "NECK"}), "NECK": frozenset({"NECK", "SPINE"}),
    "CHEST": frozenset({"CHEST", "HEART", "BREAST", "SPINE"}),
    "THORAX": frozenset({"CHEST", "HEART", "SPINE"}),
    "LUNG": frozenset({"CHEST"}), "HEART": frozenset({"HEART", "CHEST"}),
    "BREAST": frozenset({"BREAST", "CHEST"}),
    "ABDOMEN": frozenset({"ABDOMEN", "SPINE"}), "LIVER": frozenset({"ABDOMEN"}),
    "PANCREAS": frozenset({"ABDOMEN"}), "KIDNEY": frozenset({"ABDOMEN"}),
    "PELVIS": frozenset({"PELVIS", "HIP"}), "ABDOMENPELVIS": frozenset({"ABDOMEN", "PELVIS", "HIP", "SPINE"}),
    "CHESTABDOMEN": frozenset({"CHEST", "HEART", "ABDOMEN", "SPINE"}),
    "CHESTABDPELVIS": frozenset({"CHEST", "HEART", "ABDOMEN", "PELVIS", "SPINE"}),
    "NECKCHEST": frozenset({"NECK", "CHEST", "HEART"}),
    "CSPINE": frozenset({"SPINE", "NECK"}), "TSPINE": frozenset({"SPINE", "CHEST"}),
    "LSPINE": frozenset({"SPINE", "ABDOMEN", "PELVIS"}), "SSPINE": frozenset({"SPINE", "PELVIS"}),
    "SPINE": frozenset({"SPINE"}),
    "SHOULDER": frozenset({"SHOULDER"}), "ELBOW": frozenset({"ELBOW"}), "HAND": frozenset({"HAND"}),
    "WRIST": frozenset({"HAND"}), "FINGER": frozenset({"HAND"}), "HIP": frozenset({"HIP", "PELVIS"}),
    "KNEE": frozenset({"KNEE"}), "FOOT": frozenset({"FOOT"}), "ANKLE": frozenset({"FOOT"}),
    "EXTREMITY": LIMBS, "UPPEREXTREMITY": frozenset({"SHOULDER", "ELBOW", "HAND"}),
    "LOWEREXTREMITY": frozenset({"HIP", "KNEE", "FOOT"}),
    "WHOLEBODY": ALL_REGIONS, "TORSO": frozenset({"CHEST", "HEART", "ABDOMEN", "PELVIS", "SPINE", "BREAST"}),
}

_WORD = re.compile(r"[a-z0-9]+")


def regions_named(*texts: str) -> frozenset[str]:
    words = {w for text in texts for w in _WORD.findall(text.lower())}
    return frozenset(region for region, names in REGION_WORDS.items() if words & names)


def mismatch(body_part: str, *texts: str) -> frozenset[str] | None:
    """The regions the texts name that `body_part` does not cover, when none of them is covered;
    None when there is no contradiction (or nothing to compare)."""
    covered = BODY_PART_REGIONS.get(body_part.strip().upper().replace(" ", ""))
    named = regions_named(*texts)
    if covered is None or not named or named & covered:
        return None
    return named
