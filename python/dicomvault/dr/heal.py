"""Scrub and heal: every blob that is missing or fails its hash is fetched by hash from another
site, verified (the native store decodes it and checks its BLAKE3 before writing) and replaced."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine import Engine, VerifyReport
from ..replication.client import ReplicationError, SiteClient


@dataclass
class HealReport:
    before: VerifyReport
    healed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    after: VerifyReport | None = None

    @property
    def clean(self) -> bool:
        return self.after is not None and self.after.clean

    def as_dict(self) -> dict[str, object]:
        return {
            "checked": self.before.checked,
            "damaged": [h for h, _ in self.before.damaged],
            "missing": self.before.missing,
            "healed": self.healed,
            "failed": [{"hash": h, "error": e} for h, e in self.failed],
            "clean": self.clean,
        }


def heal(engine: Engine, client: SiteClient, report: VerifyReport | None = None) -> HealReport:
    before = report or engine.verify()
    out = HealReport(before=before)
    bad = [bytes.fromhex(h) for h, _ in before.damaged] + [bytes.fromhex(h) for h in before.missing]
    for h in bad:
        try:
            codec, logical_len, data = client.blobs([h])[h]
        except ReplicationError as exc:
            out.failed.append((h.hex(), str(exc)))
            continue
        res = engine.replace_blob(h, codec, logical_len, data)
        if isinstance(res, Exception):
            out.failed.append((h.hex(), f"copy from {client.url} rejected: {res}"))
        else:
            out.healed.append(h.hex())
    out.after = engine.verify() if bad else before
    return out
