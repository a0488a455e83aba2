"""Report texts (from HL7 ORU^R01) linked to studies, in the index's `meta` column family:

    rpt/ E("uid:" study instance uid | "acc:" accession number) E(message control id) -> record

A report names its study by Study Instance UID when the sender gives one, else by Accession
Number, so a report that arrives before its images still finds them. `for_study` looks up both."""

from __future__ import annotations

from typing import Any

import msgpack

from ..index import Index
from ..index import keys as K

REPORT = b"rpt/"


def _link(study_uid: str, accession: str) -> str:
    return f"uid:{study_uid}" if study_uid else f"acc:{accession}"


class ReportStore:
    def __init__(self, index: Index) -> None:
        self.index = index

    def put(self, record: dict[str, Any]) -> None:
        key = REPORT + K.pack(_link(record["study_uid"], record["accession"]), record["control_id"])
        self.index.put_meta_many({key: msgpack.packb(record, use_bin_type=True)})

    def _under(self, link: str) -> list[dict[str, Any]]:
        return [msgpack.unpackb(v, raw=False) for _, v in self.index.meta_items(REPORT + K.encode(link))]

    def for_study(self, study_uid: str, accession: str = "") -> list[dict[str, Any]]:
        found = self._under(f"uid:{study_uid}")
        if accession:
            found += [r for r in self._under(f"acc:{accession}") if r not in found]
        return sorted(found, key=lambda r: (r.get("observed", ""), r.get("received", 0)))
