"""The forwarder's side of the disk spool: writing bodies to it, and replaying it.

Replay takes the oldest spooled body, one at a time, and only while Blueflood answers and the
live queue is short, so it never crowds out live traffic. A replayed body may be split (413,
bisection); its file is acknowledged once every piece is finished, and released (kept for a
later replay) when a piece cannot be delivered now.
"""

from __future__ import annotations

import logging

import gevent

from .outbox import Batch, Outbox, SpoolRef
from .protocols import BodySpool
from .target import TargetState

# The forwarder's logger: these lines are part of its story for the operator.
log = logging.getLogger("fastforward.forwarder")

BUSY_PAUSE = 0.2  # seconds between looks while the live queue is busy or probing an outage
EMPTY_PAUSE = 1.0  # seconds between looks at an empty spool
ERROR_PAUSE = 5.0  # seconds after the spool could not be read


class Replay:
    """Writes bodies to the spool and replays them, oldest first, into the outbox."""

    def __init__(
        self, spool: BodySpool, outbox: Outbox, target: TargetState, concurrency: int
    ) -> None:
        self.spool = spool
        self.outbox = outbox
        self.target = target
        self.concurrency = concurrency
        self.stopping = False
        self.log = target.log

    @property
    def full(self) -> bool:
        return self.spool.full

    @property
    def files(self) -> int:
        return self.spool.files

    @property
    def disk_bytes(self) -> int:
        return self.spool.disk_bytes

    def put(self, batch: Batch) -> bool:
        """Write a body durably; False when the spool is full or the write failed."""
        try:
            return bool(self.spool.put(batch.body, batch.datapoints, batch.tenant))
        except Exception:
            self.log.exception("writing to the spool failed")
            return False  # the spool counts spool_written_bodies itself

    def finish(self, batch: Batch) -> None:
        """A piece of a replayed body is finished; the last one deletes the file."""
        origin = batch.origin
        if origin is None or origin.done.is_set():  # done: released already, file kept
            return
        origin.pieces -= 1
        if origin.pieces == 0:
            try:
                self.spool.ack(origin.entry)
            except Exception:
                self.log.exception("acknowledging a spool entry failed")
            origin.done.set()  # the spool counts spool_replayed_bodies itself

    def release(self, origin: SpoolRef) -> None:
        """Keep the file for a later replay (its body could not be delivered now)."""
        if origin.done.is_set():
            return
        origin.done.set()
        try:
            self.spool.release(origin.entry)
        except Exception:
            self.log.exception("releasing a spool entry failed")

    def respool(self, batch: Batch) -> bool:
        """Write a replayed piece as a new (newest) spool file and finish it here."""
        if not self.put(batch):
            return False
        self.finish(batch)
        return True

    def loop(self) -> None:
        """A greenlet: one spooled body in flight at a time, while nothing more urgent is."""
        outbox = self.outbox
        while not self.stopping:
            busy = len(outbox) >= self.concurrency or outbox.over_cap
            # While Blueflood fails, live bodies in flight are the probe; with none (all of
            # them spooled), the oldest spooled body is, retried by its sender until it goes.
            probing = self.target.failures and (outbox.queue or outbox.inflight)
            if busy or probing:
                gevent.sleep(BUSY_PAUSE)
                continue
            try:
                entry = self.spool.oldest()
            except Exception:
                self.log.exception("reading the spool failed")
                gevent.sleep(ERROR_PAUSE)
                continue
            if entry is None:
                gevent.sleep(EMPTY_PAUSE)
                continue
            ref = SpoolRef(entry)
            outbox.put(Batch(entry.body, entry.datapoints, origin=ref, tenant=entry.tenant))
            ref.done.wait()
