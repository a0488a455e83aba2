"""DR paths under faults, with real `dicomvault serve` / `replicate` processes on loopback:
failback of a primary that took writes nobody replicated (`--discard-divergent`), `dr status`
while a replica lags, a replica that resumes against a primary restored from a backup, and a
blob corrupted on the wire (rejected on arrival, fetched again)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from fault_kit import CLI, Tally, long_only, seed

from dicomvault.engine import Engine

sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))
from procs import Ingester, Relay, files_of, free_port, replicate, serve, snapshot, wait_until  # noqa: E402
from repl_helpers import TOKEN, synth_stream  # noqa: E402


def dv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)


def ingest(url: str, stream, n: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    ing = Ingester([url], stream).start()
    assert wait_until(lambda: len(ing.acked) >= n, 60, 0.05), f"only {len(ing.acked)} stored in 60 s"
    ing.stop()
    return ing.acked


def converged(a: Path, b: Path) -> bool:
    try:
        return snapshot(a) == snapshot(b)
    except Exception:  # noqa: BLE001 - a read-only open can race a starting writer; poll again
        return False


def clean(data: Path) -> None:
    run = dv("verify", "--data", str(data), "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["unreferenced"] == 0


def replica_status(primary: Path) -> dict:  # type: ignore[type-arg]
    out = dv("dr", "status", "--json", "--data", str(primary))
    assert out.returncode == 0, out.stderr
    (rep,) = json.loads(out.stdout)["replicas"].values()
    return rep


@long_only
def test_failback_discards_what_never_reached_the_new_primary(tmp_path: Path) -> None:
    s = seed()
    tally = Tally("dr failback --discard-divergent", s)
    a, b = tmp_path / "a", tmp_path / "b"
    site_a = serve(a, free_port(), tmp_path / "a.log", "--replication-token", TOKEN).start()
    rep_b = replicate(b, site_a.url, TOKEN, tmp_path / "b.log").start()
    stream = synth_stream(s % 1000 + 11)
    both = ingest(site_a.url, stream, 20)
    assert wait_until(lambda: converged(a, b), 30)
    rep_b.kill9()  # the link is gone: what A takes now never reaches B
    only_a = ingest(site_a.url, stream, 10)
    site_a.kill9()  # disaster
    assert dv("dr", "promote", "--data", str(b), "--force").returncode == 0
    site_b = serve(b, free_port(), tmp_path / "b2.log", "--replication-token", TOKEN).start()
    try:
        on_b = ingest(site_b.url, stream, 10)
        keep = dv("dr", "failback", "--data", str(a), "--from", site_b.url, "--token", TOKEN)
        assert keep.returncode == 0, keep.stderr
        assert "--discard-divergent" in keep.stdout
        assert set(json.loads(keep.stdout[: keep.stdout.rindex("}") + 1])["divergent"]) == set(only_a)
        assert set(only_a) <= set(snapshot(a)), "failback without --discard-divergent dropped objects"
        fb = dv(
            "dr", "failback", "--data", str(a), "--from", site_b.url, "--token", TOKEN, "--discard-divergent"
        )
        assert fb.returncode == 0, fb.stderr
        assert json.loads(fb.stdout)["discarded"] == len(only_a)
        assert snapshot(a) == snapshot(b)
        assert not set(only_a) & set(snapshot(a))
        want = {**both, **on_b}
        assert files_of(a, sorted(want)) == want
    finally:
        site_b.stop()
    clean(a)
    clean(b)
    tally.trials, tally.acked = 1, len(both) + len(on_b)
    tally.notes.append(
        f"{len(only_a)} objects only the old primary held: kept and listed without the flag, "
        "discarded with it; both sites then equal"
    )
    tally.report()


@long_only
def test_dr_status_reports_lag_and_its_end(tmp_path: Path) -> None:
    s = seed()
    tally = Tally("dr status under lag", s)
    a, b = tmp_path / "a", tmp_path / "b"
    site_a = serve(a, free_port(), tmp_path / "a.log", "--replication-token", TOKEN).start()
    rep_b = replicate(b, site_a.url, TOKEN, tmp_path / "b.log").start()
    stream = synth_stream(s % 1000 + 12)
    try:
        acked = ingest(site_a.url, stream, 10)
        assert wait_until(lambda: replica_status(a)["lag_events"] == 0, 30)
        rep_b.kill9()
        acked |= ingest(site_a.url, stream, 15)
        time.sleep(1.1)
        lagging = replica_status(a)
        assert lagging["lag_events"] >= 15, lagging
        assert lagging["lag_seconds"] >= 1, lagging
        rep_b.start()
        assert wait_until(lambda: replica_status(a)["lag_events"] == 0, 30), replica_status(a)
        assert replica_status(a)["lag_seconds"] == 0
        assert wait_until(lambda: converged(a, b), 30)
    finally:
        rep_b.stop()
        site_a.stop()
    assert files_of(b, sorted(acked)) == acked
    clean(b)
    tally.trials, tally.acked = 1, len(acked)
    tally.notes.append(
        f"replica down: lag {lagging['lag_events']} events / {lagging['lag_seconds']:.1f} s "
        "reported; back to 0 once it caught up"
    )
    tally.report()


@long_only
def test_replica_resumes_against_a_primary_restored_from_backup(tmp_path: Path) -> None:
    """The primary is lost and restored from a backup older than the replica's cursor: the
    replica keeps everything it has and still receives what the restored primary takes next."""
    s = seed()
    tally = Tally("dr replica after primary restored from backup", s)
    a, b, a2, bk = tmp_path / "a", tmp_path / "b", tmp_path / "a2", tmp_path / "backup"
    port = free_port()
    site_a = serve(a, port, tmp_path / "a.log", "--replication-token", TOKEN).start()
    rep_b = replicate(b, site_a.url, TOKEN, tmp_path / "b.log").start()
    stream = synth_stream(s % 1000 + 13)
    before = ingest(site_a.url, stream, 15)
    backup = dv("backup", str(bk), "--data", str(a))
    assert backup.returncode == 0, backup.stderr
    after_backup = ingest(site_a.url, stream, 15)
    assert wait_until(lambda: converged(a, b), 30)
    site_a.kill9()
    rep_b.kill9()
    restored = dv("restore", str(bk), "--data", str(a2))
    assert restored.returncode == 0, restored.stderr
    site_a2 = serve(a2, port, tmp_path / "a2.log", "--replication-token", TOKEN).start()  # same URL
    rep_b.start()
    try:
        new = ingest(site_a2.url, stream, 10)
        held = lambda: set(snapshot(b))  # noqa: E731
        assert wait_until(lambda: set(new) <= held(), 30), (
            "the replica never received the restored primary's writes"
        )
        assert set(before) | set(after_backup) <= held(), "the replica lost objects"
    finally:
        rep_b.stop()
        site_a2.stop()
    want = {**before, **after_backup, **new}
    assert files_of(b, sorted(want)) == want
    clean(b)
    tally.trials, tally.acked = 1, len(want)
    tally.notes.append(
        f"{len(after_backup)} objects newer than the backup kept on the replica; "
        f"{len(new)} written to the restored primary arrived"
    )
    tally.report()


class CorruptingRelay(Relay):
    """A relay that flips one byte inside the first blob it carries in a /replication/blobs answer."""

    def __init__(self, target: int) -> None:
        super().__init__(target)
        self.corrupted = 0

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        wants_blobs = threading.Event()
        threading.Thread(target=self._up, args=(client, upstream, wants_blobs), daemon=True).start()
        threading.Thread(target=self._down, args=(upstream, client, wants_blobs), daemon=True).start()

    def _up(self, src: socket.socket, dst: socket.socket, wants_blobs: threading.Event) -> None:
        self._pipe_with(
            src,
            dst,
            lambda data: (wants_blobs.set() if b"POST /replication/blobs" in data else None, data)[1],
        )

    def _down(self, src: socket.socket, dst: socket.socket, wants_blobs: threading.Event) -> None:
        seen = bytearray()

        def edit(data: bytes) -> bytes:
            if self.corrupted or not wants_blobs.is_set():
                return data
            start = len(seen)
            seen.extend(data)
            head_end = seen.find(b"\r\n\r\n")
            if head_end < 0:
                return data
            at = head_end + 4 + 64 + 200  # past the HTTP head, a chunk size and the frame's header
            if start <= at < len(seen):
                buf = bytearray(data)
                buf[at - start] ^= 0xFF
                self.corrupted += 1
                return bytes(buf)
            return data

        self._pipe_with(src, dst, edit)

    def _pipe_with(self, src: socket.socket, dst: socket.socket, edit) -> None:  # type: ignore[no-untyped-def]
        try:
            while data := src.recv(1 << 16):
                dst.sendall(edit(data))
        except OSError:
            pass
        finally:
            for x in (src, dst):
                with contextlib.suppress(OSError):
                    x.shutdown(socket.SHUT_RDWR)


def test_blob_corrupted_on_the_wire_is_rejected_then_fetched_again(tmp_path: Path) -> None:
    s = seed()
    tally = Tally("dr blob rejected on arrival", s)
    a, b = tmp_path / "a", tmp_path / "b"
    port = free_port()
    site_a = serve(a, port, tmp_path / "a.log", "--replication-token", TOKEN).start()
    relay = CorruptingRelay(port)
    relay.start()
    acked = ingest(site_a.url, synth_stream(s % 1000 + 14), 12)
    rep_b = replicate(b, relay.url, TOKEN, tmp_path / "b.log").start()
    try:
        assert wait_until(lambda: converged(a, b), 60), "the replica did not converge after the bad blob"
    finally:
        rep_b.stop()
        site_a.stop()
        relay.stop()
    assert relay.corrupted == 1, "the relay never corrupted a blob: the test proved nothing"
    log = (tmp_path / "b.log").read_text()
    assert "rejected" in log, log[-3000:]
    assert files_of(b, sorted(acked)) == acked
    with Engine(b, read_only=True) as engine:
        assert engine.verify().clean
    clean(b)
    tally.trials, tally.acked = 1, len(acked)
    line = next(ln for ln in log.splitlines() if "rejected" in ln)
    tally.notes.append(
        f"one byte flipped in transit; the replica logged: {line.split(': ', 1)[-1][:120]}; "
        "fetched again and converged"
    )
    tally.report()
