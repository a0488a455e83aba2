"""The association socket of our associations: large reads, and TCP_QUICKACK on request.

Why: pynetdicom's `AssociationSocket.recv` reads a PDU in 4 KiB pieces, each one a system call
and a GIL round trip (a 512 KiB data set: ~130 of them, all competing with the threads doing real
work). `ArchiveSocket.recv` reads into one buffer of the requested size, as much per call as the
kernel hands over, with the same return value and EOF behaviour.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from pynetdicom.transport import AddressInformation, AssociationSocket

if TYPE_CHECKING:
    from pynetdicom.association import Association


def recv_exactly(sock: socket.socket, nr_bytes: int) -> bytearray:
    """`nr_bytes` from `sock` in as few system calls as the kernel allows. Fewer bytes only if the
    peer closed the connection; socket errors propagate."""
    buf = bytearray(nr_bytes)
    view = memoryview(buf)
    got = 0
    try:
        while got < nr_bytes:
            n = sock.recv_into(view[got:], nr_bytes - got)
            if not n:
                break
            got += n
    finally:
        view.release()  # a bytearray with an exported view cannot be resized
    if got < nr_bytes:
        del buf[got:]
    return buf


class ArchiveSocket(AssociationSocket):
    """pynetdicom's association socket with `recv` reading whole PDUs at once (`big_reads`, the
    tuned reactor) and acknowledging every read at once when `quickack` is set (see
    common.enable_quickack; fastpath.py's native reader honours the same flag)."""

    def __init__(self, assoc: Association, client_socket: socket.socket | None = None,
                 address: AddressInformation | None = None, *, big_reads: bool = True) -> None:
        super().__init__(assoc, client_socket=client_socket, address=address)
        self.big_reads = big_reads
        self.quickack = False

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        if not self.big_reads or sock is None:
            data = super().recv(nr_bytes)
        else:
            data = recv_exactly(sock, nr_bytes)
        if self.quickack and sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                pass  # closing: nothing left to acknowledge
        return data
