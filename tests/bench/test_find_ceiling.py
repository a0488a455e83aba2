"""The C-FIND ceiling (bench/noop_find.py): the no-op SCP really answers every query with the
captured identifiers, as pending responses to that query's Message ID, then Success, in the
syntax the client negotiated; and a Message ID mark that occurs in the data is not used."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import noop_find  # noqa: E402

from dicomvault.dimse.find import decode_identifier  # noqa: E402

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(shutil.which("findscu") is None, reason="dcmtk findscu not installed")]
N = 250  # more than one write batch


def identifiers() -> list[Dataset]:
    out = []
    for i in range(N):
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.1.{i}"
        ds.InstanceNumber = str(i + 1)
        out.append(ds)
    return out


@pytest.fixture(scope="module")
def noop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    answers = tmp_path_factory.mktemp("answers") / "answer.bin"
    noop_find.write_answers(answers, identifiers())
    proc = subprocess.Popen([sys.executable, str(BENCH / "noop_find.py"), str(answers)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("noop-find serving on"), line
        yield int(line.split()[3].rstrip(":"))
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("syntax", ["-xe", "-xi"])
def test_every_query_gets_the_whole_answer(noop: int, tmp_path: Path, syntax: str) -> None:
    """findscu, 2 queries on one association (Message IDs 1 and 2), responses extracted: each
    query's N identifiers, the captured values in order."""
    result = subprocess.run(["findscu", "-S", syntax, "-X", "--repeat", "2", "-od", str(tmp_path),
                             "-k", "QueryRetrieveLevel=IMAGE", "-k", "StudyInstanceUID=9.9",
                             "127.0.0.1", str(noop)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted(tmp_path.glob("rsp*.dcm"))
    assert len(files) == 2 * N
    want = [str(ds.SOPInstanceUID) for ds in identifiers()]
    assert [str(dcmread(f).SOPInstanceUID) for f in files] == want + want


def test_a_mark_found_in_the_answer_is_not_used() -> None:
    """An identifier holding the first mark's two bytes: the answer is cut at another mark, so
    splicing a Message ID back in fills exactly the 3 command sets and leaves the data whole."""
    first = struct.pack("<H", noop_find._ID_MARKS[0])
    raw = noop_find.encode_identifier(identifiers()[0], implicit=True)
    tricky = raw + b"\x10\x00\x10\x00\x04\x00\x00\x00" + first + b"AB"  # (0010,0010) holds the mark
    answer = noop_find.Answer(1, "1.2.840.10008.5.1.4.1.2.2.1", [tricky, raw], 16384)
    assert len(answer.parts) == 1 and len(answer.parts[0]) == 4  # 2 pending + final, one batch
    sent = struct.pack("<H", 7).join(answer.parts[0])
    assert sent.count(first) == 1 and sent.count(tricky) == 1
    assert decode_identifier(tricky, True).PatientName == "\xef\xbeAB"
