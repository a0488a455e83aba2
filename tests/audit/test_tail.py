"""Reading the audit log behind its writers (audit/tail.py): records after a cursor, a chunk at a
time, complete lines only, and the cursor's seq trusted over its offset."""

from __future__ import annotations

from pathlib import Path

from dicomvault.audit.log import LOGIN, SUCCESS, AuditLog
from dicomvault.audit.tail import CHUNK, AuditTail, Position, cursor_path, load_cursor, save_cursor


def fill(tmp_path: Path, n: int) -> AuditLog:
    log = AuditLog(tmp_path)
    log.write([log.event(LOGIN, SUCCESS, user=f"u{i}", client="10.0.0.1", detail={"pad": "x" * 300})
               for i in range(1, n + 1)])  # type: ignore[misc]
    return log


def test_a_large_backlog_is_read_in_bounded_batches(tmp_path: Path) -> None:
    fill(tmp_path, 1000)  # ~500 kB, several chunks
    assert (tmp_path / "audit" / "audit.jsonl").stat().st_size > 4 * CHUNK
    tail = AuditTail(tmp_path, Position())
    seqs: list[int] = []
    while batch := tail.read(150):
        assert len(batch) <= 150
        seqs += [rec["seq"] for _, rec in batch]
        # each record's position is just past its own line: a cursor saved there resumes after it
        pos = batch[-1][0]
        if pos.seq < 1000:
            assert AuditTail(tmp_path, pos).read(1)[0][1]["seq"] == pos.seq + 1
    assert seqs == list(range(1, 1001))


def test_the_seq_wins_over_an_offset_that_does_not_fit(tmp_path: Path) -> None:
    fill(tmp_path, 10)
    tail = AuditTail(tmp_path, Position())
    sixth = tail.read(6)[-1][0]
    for wrong in (sixth.offset - 7, sixth.offset + 10**6, 0):  # inside a line, past the end, none
        got = AuditTail(tmp_path, Position(sixth.seq, wrong)).read(100)
        assert [rec["seq"] for _, rec in got] == [7, 8, 9, 10]


def test_only_complete_lines_are_read(tmp_path: Path) -> None:
    log = fill(tmp_path, 2)
    path = tmp_path / "audit" / "audit.jsonl"
    tail = AuditTail(tmp_path, Position())
    assert len(tail.read(10)) == 2
    with path.open("ab") as f:
        f.write(b'{"seq": 3, "event": "lo')
    assert tail.read(10) == []
    log.record(LOGIN, SUCCESS, user="u3", client=None)  # cuts the torn line off, appends seq 3
    got = tail.read(10)
    assert [(rec["seq"], rec["user"]) for _, rec in got] == [(3, "u3")]


def test_cursor_file_round_trip_and_damage(tmp_path: Path) -> None:
    path = cursor_path(tmp_path)
    assert load_cursor(path) == Position()
    path.parent.mkdir(parents=True)
    save_cursor(path, Position(42, 4096))
    assert load_cursor(path) == Position(42, 4096)
    path.write_text("{not json")
    assert load_cursor(path) == Position()  # everything is sent again rather than anything skipped
