"""Group commit: many unsynced batch writes share one WAL sync.

rocksdict's ``write`` holds the GIL even when ``sync=True``, which would
serialise every writer behind an fsync.  ``flush_wal(sync=True)`` releases
the GIL, so writers instead:

1. write their batch with ``sync=False`` (under the index write lock) and
   call :meth:`GroupCommitter.note_written` to get a *ticket*;
2. call :meth:`GroupCommitter.wait_durable` with that ticket, outside the
   write lock.  If a sync covering the ticket has completed, it returns at
   once; if a sync is in progress the writer waits on the condition
   variable; otherwise it becomes the *leader*: it snapshots the highest
   ticket written so far, syncs the WAL without holding any lock, publishes
   the synced ticket and wakes all followers.  Followers whose ticket was
   written after the leader's snapshot loop and one of them leads the next
   sync.

Tickets are issued in write order (the index write lock orders writes), and
``flush_wal`` makes every WAL record written before it durable, so
``synced >= ticket`` means the writer's batch is on disk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class GroupCommitter:
    """Leader/follower WAL sync shared by concurrent writers."""

    def __init__(self, sync_wal: Callable[[], None]) -> None:
        self._sync_wal = sync_wal
        self._cv = threading.Condition(threading.Lock())
        self._written = 0  # highest ticket issued (batch written, maybe not durable)
        self._written_seq = 0  # feed seq of the last written batch
        self._synced = 0  # highest ticket known durable
        self._synced_seq = 0  # feed seq known durable
        self._syncing = False
        self.commits = 0  # number of batches written
        self.syncs = 0  # number of WAL syncs performed

    def note_written(self, last_seq: int) -> int:
        """Record a batch written (sync=False) ending at feed ``last_seq``; return its ticket.

        Must be called in write order, i.e. while still holding the lock that
        serialises ``db.write`` calls.
        """
        with self._cv:
            self._written += 1
            self._written_seq = max(self._written_seq, last_seq)
            self.commits += 1
            return self._written

    def start_seq(self, seq: int) -> None:
        """Initialise the durable feed seq (on open: everything on disk is durable)."""
        with self._cv:
            self._written_seq = max(self._written_seq, seq)
            self._synced_seq = max(self._synced_seq, seq)

    @property
    def written_ticket(self) -> int:
        """Ticket of the most recently written batch."""
        with self._cv:
            return self._written

    @property
    def durable_seq(self) -> int:
        """Highest feed seq whose batch is known to be durable."""
        with self._cv:
            return self._synced_seq

    def wait_durable(self, ticket: int) -> None:
        """Block until the batch with ``ticket`` is durable (leading a sync if needed).

        An exception from the WAL sync propagates to the leader; followers
        retry (one of them leads a new sync attempt).
        """
        cv = self._cv
        with cv:
            while self._synced < ticket:
                if self._syncing:
                    cv.wait()
                    continue
                self._syncing = True
                target, target_seq = self._written, self._written_seq
                ok = False
                cv.release()
                try:
                    self._sync_wal()
                    ok = True
                finally:
                    cv.acquire()
                    self._syncing = False
                    if ok:
                        self.syncs += 1
                        if target > self._synced:
                            self._synced = target
                            self._synced_seq = max(self._synced_seq, target_seq)
                    cv.notify_all()

    def sync_all(self) -> None:
        """Make everything written so far durable (used by close())."""
        self.wait_durable(self.written_ticket)
