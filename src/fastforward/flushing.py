"""Moving the encoder's bodies into the outbox: every interval, at once when full bodies are
ready, and when a burst of input ends.

Every ``interval`` seconds everything the encoder holds moves, partial body included. A
receiver calls `kick()` when full bodies are ready: they move at once, and the end of the
burst (no datapoint for ``BURST_QUIET``) moves the partial last body too instead of leaving
it for up to an interval. Slow input never fills a body, so it keeps the one request per
interval of the original.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
from gevent.event import Event

from .outbox import Batch, Outbox
from .protocols import BodySource

# The forwarder's logger: these lines are part of its story for the operator.
log = logging.getLogger("fastforward.forwarder")

# A burst (input fast enough to fill bodies) has ended when no datapoint arrived for this long.
BURST_QUIET = 0.05


class Flusher:
    """The interval flush and the burst-end flush; `move` is the one hand-over."""

    def __init__(
        self,
        encoder: BodySource,
        outbox: Outbox,
        interval: float,
        moved: Callable[[], None],
    ) -> None:
        """``moved``: called after every hand-over (the forwarder relieves memory pressure)."""
        self.encoder = encoder
        self.outbox = outbox
        self.interval = interval
        self.moved = moved
        self._burst = Event()  # set by kick(): full bodies left, input is fast

    def kick(self) -> None:
        """Full bodies are ready: move them now, and watch for the end of the burst."""
        self.move(partial=False)
        self._burst.set()

    def move(self, partial: bool) -> None:
        """Move the encoder's bodies (with ``partial``, the open one too) into the outbox."""
        try:
            counted = self.encoder.take_counted(partial=partial)
        except Exception:  # never let a codec bug kill the flusher
            log.exception("taking bodies from the encoder failed")
            return
        for body, datapoints in counted:
            if body:
                self.outbox.put(Batch(body, datapoints))
        self.moved()

    def interval_loop(self) -> None:
        """A greenlet: everything moves every ``interval`` seconds."""
        next_flush = time.monotonic() + self.interval
        while True:
            gevent.sleep(max(0.0, next_flush - time.monotonic()))
            self.move(partial=True)
            next_flush = time.monotonic() + self.interval

    def burst_end_loop(self) -> None:
        """A greenlet: after a kick, the partial body moves once the input pauses."""
        encoder = self.encoder
        while True:
            self._burst.wait()
            self._burst.clear()
            seen = -1
            while (pending := encoder.pending_datapoints) != seen:
                seen = pending
                gevent.sleep(BURST_QUIET)
            if seen:
                self.move(partial=True)
