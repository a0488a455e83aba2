"""The association socket of our associations: large reads, and TCP_QUICKACK on request.

Why: pynetdicom's `AssociationSocket.recv` reads a PDU in 4 KiB pieces, each one a system call
and a GIL round trip (a 512 KiB data set: ~130 of them, all competing with the threads doing real
work). `ArchiveSocket.recv` reads into one buffer of the requested size, as much per call as the
kernel hands over, with the same return value and EOF behaviour.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pynetdicom.transport import AddressInformation, AssociationSocket

from ..refusals import REFUSALS
from .common import log

if TYPE_CHECKING:
    from pynetdicom.association import Association

# How often a read waiting for the rest of a PDU looks whether its association is ending, and its
# limit when the association has no timeout set.
STALL_CHECK = 0.25
STALL_DEFAULT = 300.0
MIN_PDU_BOUND = 16 << 20  # see ArchiveSocket._too_long


def recv_exactly(sock: socket.socket, nr_bytes: int,
                 stall: tuple[float, Callable[[], bool], Callable[[str], None]] | None = None) -> bytearray:
    """`nr_bytes` from `sock` in as few system calls as the kernel allows. Fewer bytes only if the
    peer closed the connection, or stalled; socket errors propagate.

    `stall` = (seconds, killed, stalled): the read stops early, as at a close, if no byte arrives
    for that long or once `killed()` says the association is ending, after `stalled(why)`. Why:
    pynetdicom reads a PDU with blocking reads until it is whole, so a caller that sent half a
    PDU and stopped (6 bytes of a header are enough) held its association thread, its slot of
    max_associations and the DUL thread forever (found by tests/dimse/test_dimse_limits.py). A
    short read is pynetdicom's "transport connection closed": the association ends."""
    buf = bytearray(nr_bytes)
    view = memoryview(buf)
    got = 0
    try:
        while got < nr_bytes:
            if stall is None:
                n = sock.recv_into(view[got:], nr_bytes - got)
            else:
                try:
                    n = _recv_or_stall(sock, view[got:], nr_bytes - got, stall[0], stall[1])
                except TimeoutError as exc:
                    stall[2](f"{exc} ({got} of {nr_bytes} bytes)")
                    break
            if not n:
                break
            got += n
    finally:
        view.release()  # a bytearray with an exported view cannot be resized
    if got < nr_bytes:
        del buf[got:]
    return buf


def recv_pdu(sock: socket.socket) -> bytes:
    """One whole PDU (6-byte header + body) read with blocking reads; ConnectionError if the peer
    closes first. For the tools that speak the upper layer without pynetdicom (benchmarks, tests)."""
    head = recv_exactly(sock, 6)
    if len(head) == 6:
        body = recv_exactly(sock, int.from_bytes(head[2:6], "big"))
        if len(body) == int.from_bytes(head[2:6], "big"):
            return bytes(head + body)
    raise ConnectionError("connection closed before a whole PDU")


def _recv_or_stall(sock: socket.socket, view: memoryview, n: int, seconds: float,
                   killed: Callable[[], bool]) -> int:
    try:
        return sock.recv_into(view, n, socket.MSG_DONTWAIT)  # data there: no extra system call
    except BlockingIOError:
        pass
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"nothing received for {seconds:g} s in the middle of a PDU")
        if killed():
            raise TimeoutError("the rest of the PDU did not come in time")
        readable, _, _ = select.select([sock], [], [], min(left, STALL_CHECK))
        if readable:
            try:
                return sock.recv_into(view, n, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue  # woken without data


class ArchiveSocket(AssociationSocket):
    """pynetdicom's association socket with `recv` reading whole PDUs at once (`big_reads`, the
    tuned reactor) and acknowledging every read at once when `quickack` is set (see
    common.enable_quickack; fastpath.py's native reader honours the same flag)."""

    def __init__(self, assoc: Association, client_socket: socket.socket | None = None,
                 address: AddressInformation | None = None, *, big_reads: bool = True) -> None:
        super().__init__(assoc, client_socket=client_socket, address=address)
        self.big_reads = big_reads
        self.quickack = False

    def _stall_limit(self) -> float:
        """How long a read may wait for the rest of a PDU: the ACSE timeout while negotiating,
        the network timeout once established (an association idle for that long is dropped
        anyway)."""
        assoc = self.assoc
        timeout = assoc.network_timeout if assoc.is_established else assoc.acse_timeout
        return float(timeout) if timeout else STALL_DEFAULT

    def _stalled(self, why: str) -> None:
        assoc = self.assoc
        if assoc.is_established and self._ending():
            return  # a release, an abort, a network timeout (counted by the reactor), a shutdown
        # Before the association: either this read's own limit or the ACSE timer (which ends the
        # association, so the read) came first; both are the caller's missing A-ASSOCIATE-RQ.
        remote = assoc.requestor if assoc.is_acceptor else assoc.acceptor
        setting = "network_timeout" if assoc.is_established else "acse_timeout"
        log.warning("association with %s@%s:%s dropped: %s, [dimse] %s = %g s", str(remote.ae_title).strip()
                    or "?", remote.address, remote.port, why, setting, self._stall_limit())
        if assoc.is_acceptor:
            REFUSALS.count("association", setting)
            assoc.dul.stall_reported = True  # server.py's close handler does not count it again

    def _ending(self) -> bool:
        assoc = self.assoc
        return bool(assoc._kill or getattr(assoc.dul, "_kill_thread", False))

    def _too_long(self, nr_bytes: int) -> bool:
        """A read of a PDU longer than any peer may send us: the native reader's bound (4x our
        max_pdu, at least 16 MiB; 1 GiB without one). Why here too: pynetdicom reads the first
        PDU of every association, and all of them with `tuned_reactor = false` or in the receiver
        processes of `workers`, into a buffer of the length the header claims, so six bytes
        claiming 4 GiB made it allocate 4 GiB."""
        if nr_bytes <= MIN_PDU_BOUND or not self.assoc.is_acceptor:
            return False
        ours = int(self.assoc.ae.maximum_pdu_size or 0)
        bound = (1 << 30) if ours == 0 else max(4 * ours, MIN_PDU_BOUND)
        if nr_bytes <= bound:
            return False
        remote = self.assoc.requestor
        log.warning("association with %s@%s:%s dropped: a PDU of %d bytes announced, more than the %d "
                    "accepted ([dimse] max_pdu = %d)", str(remote.ae_title).strip() or "?", remote.address,
                    remote.port, nr_bytes, bound, ours)
        return True

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        if sock is not None and self._too_long(nr_bytes):
            return bytearray()  # pynetdicom: a short read is a closed connection; the association ends
        if not self.big_reads or sock is None:
            data = super().recv(nr_bytes)
        elif isinstance(sock, ssl.SSLSocket):
            data = recv_exactly(sock, nr_bytes)  # TLS reads take no flags; our TLS is to peers we chose
        else:
            data = recv_exactly(sock, nr_bytes, (self._stall_limit(), self._ending, self._stalled))
        if self.quickack and sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                pass  # closing: nothing left to acknowledge
        return data
