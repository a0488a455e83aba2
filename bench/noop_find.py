"""The machine's ceiling for a C-FIND answer: a no-op C-FIND SCP that replays one answer.

It holds the identifiers of one C-FIND answer in memory (captured from a real archive's answer
by bench/find_dv.py --ceiling) and answers every C-FIND-RQ with them: one pending response per
identifier, then Success, whatever the query says. No index, no matching, no encoding of values:
the answer is framed once into P-DATA-TF PDUs (the archive's own `_native.frame_message`) with
the Message ID Being Responded To cut out, so per query only that ID is spliced back in and the
bytes are written, 64 KB at a time. A client (dcmtk findscu) against it
measures the machine's ceiling for receiving the same answer; an archive can only be slower.

Association negotiation is noop_get.py's (pynetdicom's acceptor negotiation, every context
accepted, Explicit VR Little Endian where offered).

    python bench/noop_find.py --port 11198 ANSWERS
    # prints "noop-find serving on PORT: N identifiers"

ANSWERS: the identifiers, each as a 4-byte little-endian length and an Explicit VR Little Endian
data set (`write_answers`).
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading
from io import BytesIO
from pathlib import Path

from noop_get import A_RELEASE_RP, MAX_PDU, PDU_ABORT, PDU_RELEASE_RQ, accept
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomvault import _native
from dicomvault.dimse.command_set import C_FIND_RQ, C_FIND_RSP
from dicomvault.dimse.find import command_set
from dicomvault.dimse.status import PENDING, SUCCESS

BATCH_BYTES = 64 * 1024  # per write; the archive writes 4, 8, 16, 32, then 64 matches at a time
# Message IDs no benchmark query uses, cut out of the framed answer: the first whose two bytes
# occur nowhere else in it
_ID_MARKS = (0xBEEF, 0xFACE, 0xD00D, 0xCAFE, 0xABBA)


def encode_identifier(ds: Dataset, *, implicit: bool) -> bytes:
    """A data set in Implicit or Explicit VR Little Endian."""
    buf = BytesIO()
    fp = DicomFileLike(buf)
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return buf.getvalue()


def write_answers(path: Path, identifiers: list[Dataset]) -> None:
    with path.open("wb") as out:
        for ds in identifiers:
            raw = encode_identifier(ds, implicit=False)
            out.write(struct.pack("<I", len(raw)) + raw)


def read_answers(path: Path) -> list[bytes]:
    raw, at, out = path.read_bytes(), 0, []
    while at < len(raw):
        n = struct.unpack_from("<I", raw, at)[0]
        out.append(raw[at + 4:at + 4 + n])
        at += 4 + n
    return out


def reencode(explicit: list[bytes], implicit: bool) -> list[bytes]:
    if not implicit:
        return explicit
    return [encode_identifier(read_dataset(BytesIO(raw), is_implicit_VR=False, is_little_endian=True),
                              implicit=True) for raw in explicit]


class Answer:
    """One answer framed for one (context, SOP class, peer max PDU), in write batches, each batch
    split where the Message ID goes."""

    def __init__(self, context_id: int, model: str, identifiers: list[bytes], peer_max: int) -> None:
        for mark_id in _ID_MARKS:
            mark = struct.pack("<H", mark_id)
            pending = command_set(model, mark_id, PENDING)
            batches, batch = [], b""
            for ident in identifiers:
                batch += _native.frame_message(context_id, pending, ident, peer_max)
                if len(batch) >= BATCH_BYTES:
                    batches.append(batch)
                    batch = b""
            final = _native.encode_response(context_id, C_FIND_RSP, mark_id, model, "", SUCCESS, None,
                                            peer_max)
            batches.append(batch + final)
            self.parts = [b.split(mark) for b in batches]
            if sum(len(p) - 1 for p in self.parts) == len(identifiers) + 1:  # only in the command sets
                return
        raise ValueError("every Message ID mark also occurs elsewhere in the answer")

    def send(self, sock: socket.socket, message_id: int) -> None:
        mid = struct.pack("<H", message_id)
        for parts in self.parts:
            sock.sendall(mid.join(parts))


def serve(conn: socket.socket, identifiers: list[bytes]) -> None:
    contexts, peer_max, _ = accept(conn, {ExplicitVRLittleEndian})
    answers: dict[int, Answer] = {}
    reader = _native.PduReader(conn.fileno(), MAX_PDU, {cid: [C_FIND_RQ] for cid in contexts}, [], 0)
    while True:
        outs, state, _ = reader.next(None, 60.0)
        for out in outs:
            if out[0] == "msg" and out[2] == C_FIND_RQ:
                cid, message_id, model = out[1], out[3], out[4]
                answer = answers.get(cid)
                if answer is None:
                    implicit = str(contexts[cid].transfer_syntax[0]) == ImplicitVRLittleEndian
                    answer = answers[cid] = Answer(cid, model, reencode(identifiers, implicit), peer_max)
                answer.send(conn, message_id)
            elif out[0] == "pdu" and out[1][0] == PDU_RELEASE_RQ:
                conn.sendall(A_RELEASE_RP)
                return
            elif out[0] == "pdu" and out[1][0] == PDU_ABORT or out[0] == "error":
                return
        if state in ("closed", "timeout"):
            return


def handle(conn: socket.socket, identifiers: list[bytes]) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            serve(conn, identifiers)
        except (OSError, ValueError) as exc:
            print(f"noop-find: association ended: {exc}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("answers", type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--max-segment", type=int, default=16384,
                    help="TCP segment cap of the listening socket, as the archive's default (0: the OS's)")
    args = ap.parse_args()
    identifiers = read_answers(args.answers)
    srv = socket.create_server((args.host, args.port))
    if args.max_segment:
        srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, args.max_segment)
    print(f"noop-find serving on {srv.getsockname()[1]}: {len(identifiers)} identifiers", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, identifiers), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
