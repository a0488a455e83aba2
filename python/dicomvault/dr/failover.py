"""Promote a replica to primary; fail back (re-sync the old primary from the new one)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..audit.log import DATA_DELETION, AuditLog
from ..audit.transfers import per_study
from ..engine import Engine
from ..errors import DicomVaultError
from ..replication import state
from ..replication.client import ReplicationError, SiteClient
from ..replication.puller import Puller

log = logging.getLogger("dicomvault.dr")


class BehindError(DicomVaultError):
    """Promotion refused: the replica knows it lacks changes of its upstream."""


@dataclass
class PromoteReport:
    was: str
    seq: int
    upstream_seq: int
    upstream_reachable: bool
    forced: bool

    @property
    def lag_events(self) -> int:
        return max(0, self.upstream_seq - self.seq)


def promote(engine: Engine, *, force: bool = False, client: SiteClient | None = None) -> PromoteReport:
    """Makes this site the writable primary. Refuses if it knows it is behind (the upstream, when
    reachable, says it has more; else the last pull said so), unless `force`."""
    index = engine.index
    up = state.upstream(index)
    was = state.role(index)
    seq = up.seq if up else 0
    upstream_seq = up.upstream_seq if up else 0
    reachable = False
    if client is not None:
        try:
            st = client.status()
            reachable = True
            if up is not None and st.get("feed_id") == up.feed_id:
                upstream_seq = max(upstream_seq, int(st["last_seq"]))
        except ReplicationError as exc:
            log.warning("upstream unreachable, judging by the last pull: %s", exc)
    report = PromoteReport(was, seq, upstream_seq, reachable, force)
    if report.lag_events and not force:
        raise BehindError(
            f"this replica is {report.lag_events} change(s) behind {up.url if up else 'its upstream'} "
            f"(applied seq {seq}, upstream seq {upstream_seq}); let it catch up or pass --force"
        )
    state.set_role(index, state.PRIMARY)
    return report


@dataclass
class FailbackReport:
    applied: int = 0
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    divergent: list[str] = field(default_factory=list)
    discarded: int = 0


def failback(engine: Engine, client: SiteClient, *, discard_divergent: bool = False) -> FailbackReport:
    """Turns this (old primary) site into a replica of `client`'s site and catches it up.

    The new primary's feed is replayed from seq 0: what this site already holds is skipped by
    hash, deletes and replacements made on the new primary apply. Instances only this site holds
    (acknowledged here after the new primary's last pull, i.e. lost by the failover) are listed
    as divergent; `discard_divergent` deletes them so both sites hold exactly the same set.
    Afterwards this site keeps replicating (`dicomvault replicate`); to switch back, stop writes
    on the new primary, let the lag reach 0 and `dr promote` here.
    """
    index = engine.index
    st = client.status()
    up = state.upstream(index)
    if up is None or up.feed_id != st.get("feed_id"):
        state.set_upstream(index, state.Upstream(url=client.url, feed_id=str(st["feed_id"]), seq=0))
    state.set_role(index, state.REPLICA)
    puller = Puller(engine, client)
    try:
        total = puller.catch_up(max_errors=3)
    finally:
        puller.close()
    report = FailbackReport(total.applied, total.blobs_fetched, total.bytes_fetched)
    theirs = {sop: bytes(h) for sop, h in client.instances()["instances"]}
    for rec in list(index.instances()):
        if theirs.get(rec.sop_uid) != rec.hash:
            report.divergent.append(rec.sop_uid)
    if discard_divergent:
        gone = [(r.study_uid, r.patient_id, True) for r in map(index.get_instance, report.divergent)
                if r is not None]
        for sop in report.divergent:
            engine.delete("instance", sop, converging=True)
        report.discarded = len(report.divergent)
        log = AuditLog(engine.data_dir)
        log.write(per_study(log, gone, user="dicomvault:failback", client=client.url, event=DATA_DELETION,
                            detail={"reason": "dr failback --discard-divergent", "upstream": client.url}))
    return report
