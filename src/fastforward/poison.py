"""Poison data: bisecting a body Blueflood keeps refusing with 500, and parking what is left.

Blueflood answers 500 both when it is down and for a datapoint it cannot handle. A 500 is only
suspected to be about the data when Blueflood accepted another body since this one started
failing (`delivery.decide` makes that call). Such a body is bisected: each half is marked so
that its next 500 bisects again, log2(n) attempts to find the datapoint. A single datapoint
that keeps failing that way is parked: it leaves its sender, is written to the spool (or,
without one, kept aside in memory and counted in the cap) and retried every ``retry``
seconds, forever. So it never holds a sender, the replay of the spool, or the "Blueflood is
failing" state that pauses replay.
"""

from __future__ import annotations

import logging

import gevent

from .delivery import BISECT_500_AFTER
from .outbox import Batch, Outbox, split_body
from .replay import Replay
from .target import LaneLog

# The forwarder's logger: these lines are part of its story for the operator.
log = logging.getLogger("fastforward.forwarder")

PARK_RETRY = 60.0  # seconds between attempts at a parked (suspected poison) datapoint


def split(outbox: Outbox, batch: Batch, suspect: bool = False) -> bool:
    """Put the two halves of ``batch`` at the front of the queue; False for one datapoint.

    ``suspect``: the halves of a bisection, whose next 500 bisects them again.
    """
    halves = split_body(batch.body)
    if halves is None:
        return False
    (left, n_left), (right, n_right) = halves
    if batch.origin is not None:
        batch.origin.pieces += 1
    # Right first, so the left half is at the very front.
    for body, n in ((right, n_right), (left, n_left)):
        half = Batch(body, n, origin=batch.origin, tenant=batch.tenant)
        if suspect:
            half.attempts = BISECT_500_AFTER - 1
            half.failing_since = batch.failing_since
        outbox.put(half, front=True)
    return True


class Parking:
    """Suspected poison datapoints, kept away from the senders and retried now and then."""

    def __init__(self, outbox: Outbox, replay: Replay | None) -> None:
        self.outbox = outbox
        self.replay = replay
        self.retry = PARK_RETRY
        self.parked: list[Batch] = []  # without a spool (or when it refused them): in memory
        self.log = LaneLog()

    def bisect(self, batch: Batch) -> bool:
        """Split a suspected body; False when it is a single datapoint (park it then)."""
        if not split(self.outbox, batch, suspect=True):
            return False
        self.log.warning("repeated 500s for one body; bisecting it for poison data")
        return True

    def park(self, batch: Batch) -> None:
        """Take a suspected poison datapoint away from its sender; it is retried later."""
        self.log.warning(
            "Blueflood keeps answering 500 for this datapoint while accepting others; "
            "retrying it every %.0fs: %.300r",
            self.retry,
            batch.body,
        )
        if self.replay is not None and self.replay.respool(batch):
            return  # the spooled copy is the one replayed from now on
        if batch.origin is not None and self.replay is not None:
            # Stays tied to its spool file: the file is kept (released) and replayed later.
            self.replay.release(batch.origin)
            return
        parked = Batch(batch.body, batch.datapoints, attempts=batch.attempts, tenant=batch.tenant)
        parked.failing_since = batch.failing_since
        self.parked.append(parked)
        self.outbox.hold(parked)

    def take_all(self) -> list[Batch]:
        """Every parked batch, no longer parked (at stop; they stay counted in the outbox)."""
        parked, self.parked = self.parked, []
        return parked

    def loop(self) -> None:
        """A greenlet: every ``retry`` seconds, each parked batch gets one more attempt."""
        while True:
            gevent.sleep(self.retry)
            for batch in self.take_all():
                self.outbox.unhold(batch)
                self.outbox.put(batch)  # parked again if it still fails
