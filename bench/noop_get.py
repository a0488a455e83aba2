"""The machine's ceiling for a C-GET or C-MOVE study retrieve: a no-op retrieve SCP.

It holds the objects of some Part-10 files in memory (their data sets, as stored: the bytes
after the file meta group) and answers a C-GET by sending them as C-STORE sub-operations on the
requestor's association, one at a time, waiting for each C-STORE-RSP as DIMSE requires, with a
pending C-GET-RSP after each (sent with the next request, in the same write, as our archive does)
and the final response. A C-MOVE the same way on a sub-association it opens to the destination
(`--dest AE=HOST:PORT`), proposing each (SOP class, stored syntax) as our archive does, with a
pending C-MOVE-RSP on the requestor's association after each. No index, no disk, no decode, no
hash: the work left is exactly what any retrieve SCP must do on the wire, so a client (dcmtk
getscu, movescu) against it measures the machine's ceiling for the same work; an archive can
only be slower.

Framing and the byte path are the archive's own native ones (`_native.send_message`: one
vectored write per object straight from the in-memory data set, no copy; `_native.PduReader`
reads the responses with the GIL released), so the ceiling and the archive differ by what the
archive does to find and read an object, not by how it frames it. A repeated C-GET (the
benchmark's rounds after its warm-up) is answered from a script: every command set and pending
response made and framed once, so per object only the write and the read of its response are
left. Association negotiation uses
pynetdicom's PDU classes and its acceptor negotiation: every presentation context the requestor
offers is accepted in the objects' stored transfer syntax where it offers that one (its first
offered syntax otherwise), and every SCP/SCU role it proposes is granted.

    python bench/noop_get.py --port 11199 [--dest AE=HOST:PORT] DIR [DIR ...]
    # prints "noop-get serving on PORT"

Used by bench/retrieve_ceiling.py.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from dicomvault import _native
from dicomvault.dimse.command_set import C_GET_RQ, C_GET_RSP, C_MOVE_RQ, C_MOVE_RSP, C_STORE_RSP
from dicomvault.dimse.fastretrieve import (
    A_RELEASE_RQ,
    GET_MODELS,
    MOVE_MODELS,
    Counts,
    Offer,
    _accepted,
    _first_pdu,
    _proposal,
    retrieve_rsp,
    store_rq,
)
from dicomvault.dimse.find import decode_identifier
from dicomvault.dimse.retrieve import Match, move_contexts
from dicomvault.dimse.status import MOVE_DESTINATION_UNKNOWN, PENDING, SUCCESS
from dicomvault.dimse.transport import recv_pdu

MAX_PDU = 131072  # what we receive; we send in PDUs as large as the requestor receives
A_RELEASE_RP = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
PDU_RELEASE_RQ, PDU_RELEASE_RP, PDU_ABORT = 0x05, 0x06, 0x07
OUR_AE = "NOOPGET"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


@dataclass(frozen=True, slots=True)
class Obj:
    sop_class: str
    sop_uid: str
    transfer_syntax: str
    data: bytes  # the data set, as stored


def read_part10(path: Path) -> Obj:
    """The data set of a Part-10 file (the bytes after its file meta group) and the UIDs its meta
    names; the file meta group is always Explicit VR Little Endian (PS3.10 7.1)."""
    raw = path.read_bytes()
    if raw[128:132] != b"DICM":
        raise ValueError(f"{path}: not a DICOM Part-10 file")
    at, meta = 132, {}
    while at + 8 <= len(raw) and raw[at:at + 2] == b"\x02\x00":
        elem = struct.unpack_from("<H", raw, at + 2)[0]
        vr = raw[at + 4:at + 6]
        if vr in _LONG_VRS:
            length, head = struct.unpack_from("<I", raw, at + 8)[0], 12
        else:
            length, head = struct.unpack_from("<H", raw, at + 6)[0], 8
        meta[elem] = raw[at + head:at + head + length]
        at += head + length

    def uid(elem: int) -> str:
        return meta.get(elem, b"").rstrip(b"\0 ").decode("ascii")

    return Obj(uid(0x0002), uid(0x0003), uid(0x0010), raw[at:])


def load(folders: list[Path]) -> dict[str, list[Obj]]:
    """Study Instance UID -> its objects, in file name order."""
    studies: dict[str, list[Obj]] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*.dcm")):
            study = str(dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                        .StudyInstanceUID)
            studies.setdefault(study, []).append(read_part10(path))
    return studies


Negotiated = tuple[bytes, dict[int, PresentationContext], int, str]
# A-ASSOCIATE-RQ PDU -> what was answered to it. Why: pynetdicom's decoding and negotiation of
# the ~120 contexts getscu proposes took ~37 ms, more than Orthanc's whole set-up; the benchmark's
# warm-up retrieve fills this, as our archive's negotiation cache (dimse/negotiation_cache.py).
_answers: dict[bytes, Negotiated] = {}


def accept(sock: socket.socket, stored: set[str]) -> tuple[dict[int, PresentationContext], int, str]:
    """Reads the A-ASSOCIATE-RQ and accepts it: (accepted contexts by id, the requestor's max PDU,
    its AE title)."""
    raw = recv_pdu(sock)
    if raw[0] != 0x01:
        raise ConnectionError(f"expected an A-ASSOCIATE-RQ, got PDU type 0x{raw[0]:02X}")
    if raw not in _answers:
        _answers[raw] = negotiate(raw, stored)
    ac, accepted, peer_max, calling = _answers[raw]
    sock.sendall(ac)
    return accepted, peer_max, calling


def negotiate(raw: bytes, stored: set[str]) -> Negotiated:
    """(A-ASSOCIATE-AC PDU, accepted contexts by id, the requestor's max PDU, its AE title) for an
    A-ASSOCIATE-RQ."""
    rq = A_ASSOCIATE_RQ()
    rq.decode(raw)
    prim = rq.to_primitive()
    peer_max = 0
    roles: dict[str, tuple[bool | None, bool | None]] = {}
    for item in prim.user_information:
        if isinstance(item, MaximumLengthNotification):
            peer_max = int(item.maximum_length_received)
        elif isinstance(item, SCP_SCU_RoleSelectionNegotiation):
            roles[str(item.sop_class_uid)] = (item.scu_role, item.scp_role)
    ours = []
    for cx in prim.presentation_context_definition_list:
        offered = [str(ts) for ts in cx.transfer_syntax]
        want = next((ts for ts in offered if ts in stored), offered[0])
        mine = PresentationContext()
        mine.abstract_syntax = cx.abstract_syntax
        mine.transfer_syntax = [want]
        mine.scu_role = mine.scp_role = True  # whatever role the requestor proposes is granted
        ours.append(mine)
    results, role_items = negotiate_as_acceptor(prim.presentation_context_definition_list, ours, roles)
    ac = A_ASSOCIATE()
    ac.application_context_name = prim.application_context_name
    ac.calling_ae_title = prim.calling_ae_title
    ac.called_ae_title = prim.called_ae_title
    ac.result, ac.result_source = 0x00, 0x01
    ac.presentation_context_definition_results_list = results
    length = MaximumLengthNotification()
    length.maximum_length_received = MAX_PDU
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    ac.user_information = [length, impl, version, *role_items]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(ac)
    accepted = {int(cx.context_id): cx for cx in results if cx.result == 0x00}
    return bytes(pdu.encode()), accepted, peer_max, str(prim.calling_ae_title).strip()


# per object: (context id, C-STORE-RQ command set, data set, framed pending response); final response
Script = tuple[list[tuple[int, bytes, bytes, bytes]], bytes]
_scripts: dict[tuple[int, str, int, int, str, int], Script] = {}


class Association:
    """One requestor's association: C-GETs answered from memory until it releases or aborts."""

    def __init__(self, sock: socket.socket, studies: dict[str, list[Obj]],
                 destinations: dict[str, tuple[str, int]]) -> None:
        self.sock = sock
        self.studies = studies
        self.destinations = destinations
        stored = {o.transfer_syntax for objs in studies.values() for o in objs}
        self.contexts, self.peer_max, self.caller = accept(sock, stored)
        self.get_cx = {cid for cid, cx in self.contexts.items() if cx.abstract_syntax in GET_MODELS}
        self.move_cx = {cid for cid, cx in self.contexts.items() if cx.abstract_syntax in MOVE_MODELS}
        # (SOP class, transfer syntax) -> the context a C-STORE of it goes on
        self.store_cx = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])): cid
                         for cid, cx in self.contexts.items() if cid not in self.get_cx | self.move_cx}
        fast = {cid: [C_STORE_RSP] for cid in self.contexts}
        fast.update({cid: [C_GET_RQ] for cid in self.get_cx} | {cid: [C_MOVE_RQ] for cid in self.move_cx})
        self.reader = _native.PduReader(sock.fileno(), MAX_PDU, fast, list(self.store_cx.values()), 0)
        self.reader.set_quickack(True)  # this association carries our data: ACK responses at once

    def serve(self) -> None:
        while True:
            outs, state, _ = self.reader.next(None, 60.0)
            for out in outs:
                if out[0] == "msg" and out[2] == C_GET_RQ:
                    self.get(out[1], out[3], out[4], out[6] if isinstance(out[6], bytes) else b"")
                elif out[0] == "msg" and out[2] == C_MOVE_RQ:
                    self.move(out[1], out[3], out[4], out[6] if isinstance(out[6], bytes) else b"", out[9])
                elif out[0] == "pdu" and out[1][0] == PDU_RELEASE_RQ:
                    self.sock.sendall(A_RELEASE_RP)
                    return
                elif out[0] == "pdu" and out[1][0] == PDU_ABORT or out[0] == "error":
                    return
            if state in ("closed", "timeout"):
                return

    def study(self, cid: int, raw: bytes) -> list[Obj]:
        implicit = str(self.contexts[cid].transfer_syntax[0]) == ImplicitVRLittleEndian
        return self.studies.get(str(decode_identifier(raw, implicit).get("StudyInstanceUID", "")), [])

    def get(self, cid: int, message_id: int, model: str, raw: bytes) -> None:
        implicit = str(self.contexts[cid].transfer_syntax[0]) == ImplicitVRLittleEndian
        study = str(decode_identifier(raw, implicit).get("StudyInstanceUID", ""))
        # the same C-GET on the same negotiated contexts (the benchmark's rounds) is answered
        # from its script: every command set made and framed once, as long as all succeed
        key = (id(self.contexts), study, cid, message_id, model, self.peer_max)
        script = _scripts.get(key)
        if script is None:
            script = _scripts[key] = self.script(cid, message_id, model, self.studies.get(study, []))
        steps, final = script
        fd, unsent = self.sock.fileno(), b""
        for i, (store_cid, command, data, pending) in enumerate(steps):
            _native.send_message(fd, unsent, store_cid, command, data, self.peer_max, 30.0)
            if self.await_store_rsp(i % 0xFFFF + 1) != SUCCESS:
                raise ConnectionError("a C-STORE sub-operation was refused: the ceiling expects none")
            unsent = pending
        self.sock.sendall(unsent + final)

    def script(self, cid: int, message_id: int, model: str, objs: list[Obj]) -> Script:
        """(per object: its context, its C-STORE-RQ command set, its data set, the pending
        response that follows its success), and the final response, all framed."""
        counts = Counts(len(objs))
        steps = []
        for i, obj in enumerate(objs):
            counts.remaining -= 1
            counts.completed += 1
            pending = retrieve_rsp(C_GET_RSP, model, message_id, PENDING, counts, remaining=True,
                                   data_set=False)
            steps.append((self.store_cx[(obj.sop_class, obj.transfer_syntax)],
                          store_rq(obj.sop_class, obj.sop_uid, i % 0xFFFF + 1), obj.data,
                          bytes(_native.frame_message(cid, pending, None, self.peer_max))))
        final = retrieve_rsp(C_GET_RSP, model, message_id, SUCCESS, counts, remaining=False, data_set=False)
        return steps, bytes(_native.frame_message(cid, final, None, self.peer_max))

    def await_store_rsp(self, msg_id: int, reader: _native.PduReader | None = None) -> int:
        while True:
            outs, state, why = (reader or self.reader).next(None, 30.0)
            for out in outs:
                if out[0] == "msg" and out[2] == C_STORE_RSP and out[7] == msg_id:
                    return int(out[8]) if out[8] is not None else 0xC000
            if state in ("closed", "timeout"):
                raise ConnectionError(f"no C-STORE-RSP to message {msg_id}: {state} {why or ''}")

    def move(self, cid: int, message_id: int, model: str, raw: bytes, dest_ae: str) -> None:
        """C-MOVE: the objects on a sub-association to the destination, a pending response on
        this association after each (the sub-association is opened per C-MOVE, as any C-MOVE
        SCP must: its set-up is part of the work)."""
        objs = self.study(cid, raw)
        counts = Counts(len(objs))
        dest = self.destinations.get(dest_ae.strip())

        def respond(status: int, *, remaining: bool) -> None:
            command = retrieve_rsp(C_MOVE_RSP, model, message_id, status, counts, remaining=remaining,
                                   data_set=False)
            self.sock.sendall(bytes(_native.frame_message(cid, command, None, self.peer_max)))

        if dest is None or not objs:
            respond(MOVE_DESTINATION_UNKNOWN if dest is None else SUCCESS, remaining=False)
            return
        matches = [Match(o.sop_uid, o.sop_class, o.transfer_syntax) for o in objs]
        contexts = move_contexts(matches)
        for i, cx in enumerate(contexts):
            cx.context_id = 2 * i + 1
        ids = [int(cx.context_id) for cx in contexts]
        with socket.create_connection(dest) as sub:
            sub.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = _native.PduReader(sub.fileno(), MAX_PDU, {i: [C_STORE_RSP] for i in ids}, ids, 0)
            reader.set_quickack(True)
            sub.sendall(_proposal(OUR_AE, dest_ae.strip(), contexts, MAX_PDU))
            accepted, peer_max = _accepted(_first_pdu(reader, 30.0), contexts, f"{dest_ae}@{dest}")
            offer = Offer(accepted)
            for i, obj in enumerate(objs):
                choice = offer.choose(obj.sop_class, obj.transfer_syntax)
                counts.remaining -= 1
                if choice is None or choice[1] != obj.transfer_syntax:
                    counts.fail(obj.sop_uid)  # a ceiling converts nothing
                else:
                    msg_id = i % 0xFFFF + 1
                    command = store_rq(obj.sop_class, obj.sop_uid, msg_id, (self.caller, message_id))
                    _native.send_message(sub.fileno(), b"", choice[0], command, obj.data, peer_max, 30.0)
                    if self.await_store_rsp(msg_id, reader) == SUCCESS:
                        counts.completed += 1
                    else:
                        counts.fail(obj.sop_uid)
                respond(PENDING, remaining=True)
            sub.sendall(A_RELEASE_RQ)
            while True:  # its A-RELEASE-RP, or the end of the connection
                outs, state, _ = reader.next(None, 10.0)
                if state != "ready" or any(o[0] == "pdu" and o[1][0] == PDU_RELEASE_RP for o in outs):
                    break
        respond(SUCCESS, remaining=False)


def handle(conn: socket.socket, studies: dict[str, list[Obj]], destinations: dict[str, tuple[str, int]]
           ) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            Association(conn, studies, destinations).serve()
        except (OSError, ValueError) as exc:
            print(f"noop-get: association ended: {exc}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+", help="folders of Part-10 files (*.dcm, recursive)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dest", action="append", default=[], metavar="AE=HOST:PORT",
                    help="a C-MOVE destination (repeatable)")
    args = ap.parse_args()
    destinations = {}
    for d in args.dest:
        ae, _, where = d.partition("=")
        host, _, port = where.rpartition(":")
        destinations[ae.strip()] = (host, int(port))
    studies = load(args.folders)
    srv = socket.create_server((args.host, args.port))
    n = sum(len(v) for v in studies.values())
    print(f"noop-get serving on {srv.getsockname()[1]}: {n} objects in {len(studies)} studies", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, studies, destinations), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
