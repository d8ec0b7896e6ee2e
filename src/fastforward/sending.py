"""The sender greenlets: each pops a body and carries `delivery.decide`'s decision out.

A body is owned by exactly one sender until it is delivered, dropped for good, split into two
new bodies, spooled or parked, so nothing is sent twice unless a POST failed. A failing body is
retried by its sender with exponential backoff and jitter, never waiting for new traffic.
What Blueflood answers decides the rest (docs/blueflood-api.md section 7): 207 and per-metric
400 are logged and counted, never retried; "Cannot parse content" is bisected down to the bad
datapoint; 401 replays the same bytes after re-authenticating; 413 without Retry-After splits.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from gevent.lock import BoundedSemaphore

from .blueflood import Kind, Outcome
from .delivery import Attempt, Decision, Situation, Step, Wait, backoff_seconds, decide, is_failure
from .outbox import Batch, Outbox
from .poison import Parking, split
from .protocols import Counters, Poster
from .replay import Replay
from .target import TargetState

# The forwarder's logger: these lines are part of its story for the operator.
log = logging.getLogger("fastforward.forwarder")

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
LOG_ERRORS_PER_BODY = 10


class _Then(enum.Enum):
    """After a step: the sender is done with the body, POSTs it again, or tries the next step."""

    FINISHED = "finished"
    POST_AGAIN = "post_again"
    NEXT_STEP = "next_step"


class Stopped(Exception):
    """Raised inside a sender when the stop deadline has passed."""


@dataclass
class Backoff:
    """Exponential backoff of one destination: ``base * 2**(attempts-1)``, at most ``cap``."""

    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP

    def seconds(self, attempts: int) -> float:
        """The wait after ``attempts`` failed attempts, with jitter (half to all of it)."""
        return backoff_seconds(attempts, self.base, self.cap) * random.uniform(0.5, 1.0)


class PostSlots:
    """The slots one destination among several (a tenant's lane) holds for its POSTs.

    A POST takes a slot shared by every lane if one is free, else the lane's own. So the lanes
    together have at most ``shared + lanes`` POSTs (and connections) open, not ``concurrency``
    per lane, and each lane can always POST: a tenant whose POSTs fail or hang cannot hold up
    another. A failing lane uses only its own slot (one POST at a time while it fails), so
    its timeouts never hold the shared ones.
    """

    def __init__(self, shared: BoundedSemaphore) -> None:
        self.shared = shared
        self.own = BoundedSemaphore(1)

    def take(self, failing: bool) -> BoundedSemaphore:
        """A slot (waits until one is free); release it when the POST is over."""
        while True:
            if not failing and self.shared.acquire(blocking=False):
                return self.shared
            if self.own.acquire(blocking=False):
                return self.own
            gevent.wait([self.own] if failing else [self.shared, self.own], count=1)


class Senders:
    """``concurrency`` greenlets that deliver the outbox's bodies to one destination."""

    def __init__(
        self,
        outbox: Outbox,
        client: Poster,
        stats: Counters,
        target: TargetState,
        parking: Parking,
        replay: Replay | None,
        relieve: Callable[[], None],
    ) -> None:
        """``relieve``: called when memory use may have changed (spool under pressure)."""
        self.outbox = outbox
        self.client = client
        self.stats = stats
        self.target = target
        self.parking = parking
        self.replay = replay
        self.relieve = relieve
        self.backoff = Backoff()
        self.deadline: float | None = None  # set by stop: no wait may pass it
        self.slots: PostSlots | None = None  # shared with other lanes (tenants.py), if any
        self.log = target.log  # the lane's logger: the same as its target's

    def loop(self) -> None:
        """A sender greenlet."""
        outbox = self.outbox
        while True:
            outbox.has_work.wait()
            if not outbox.queue:
                continue
            batch = outbox.pop()
            try:
                self.deliver(batch)
            except Stopped:
                # Back in the queue, so stop() finds it and spools or counts it.
                outbox.put(batch, front=True)
                return
            except Exception:
                self.log.exception("sender failed on a body of %d datapoints", batch.datapoints)
                outbox.put(batch, front=True)  # keep it; another attempt will follow
                gevent.sleep(self.backoff.base)
            finally:
                outbox.done(batch)
                # done() took it out of --max-buffer-bytes: let it go now, not when this sender
                # takes its next body (idle senders would each hold a body no count sees).
                del batch
                self.relieve()

    def deliver(self, batch: Batch) -> None:
        """POST one body until it is finished (delivered, dropped, split, spooled, parked)."""
        while True:
            outcome = self._post(batch)
            if is_failure(outcome, batch.auth_replays):
                self._record_failure(batch, outcome)
            decision = decide(outcome, self._attempt(batch), self._situation())
            if decision.answered:
                self.target.succeeded()
            if decision.retry_cause:
                self.stats.incr("retries", cause=decision.retry_cause)
            if decision.auth_replays is not None:
                batch.auth_replays = decision.auth_replays
            if not self._carry_out(decision, batch, outcome):
                return

    def _post(self, batch: Batch) -> Outcome:
        slots = self.slots
        if slots is None:
            return self.client.post(batch.body, batch.tenant)
        slot = slots.take(self.target.failing)
        try:
            return self.client.post(batch.body, batch.tenant)
        finally:
            slot.release()

    def _attempt(self, batch: Batch) -> Attempt:
        since = batch.failing_since
        return Attempt(
            datapoints=batch.datapoints,
            attempts=batch.attempts,
            auth_replays=batch.auth_replays,
            replayed=batch.origin is not None,
            accepted_since_failing=since is not None and self.target.last_success > since,
        )

    def _situation(self) -> Situation:
        replay = self.replay
        return Situation(
            spool=replay is not None,
            receivers_paused=not self.outbox.gate.is_set(),
            others_queued=bool(self.outbox.queue),
            spool_files=0 if replay is None else replay.files,
        )

    def _carry_out(self, decision: Decision, batch: Batch, outcome: Outcome) -> bool:
        """Try the decision's steps in order; True when the same body is POSTed again."""
        for step in decision.steps:
            then = self._take(step, decision, batch, outcome)
            if then is not _Then.NEXT_STEP:
                return then is _Then.POST_AGAIN
        return False  # not reached: every decision ends with a step that cannot fail

    def _take(self, step: Step, decision: Decision, batch: Batch, outcome: Outcome) -> _Then:
        """One step; NEXT_STEP when it could not take the body (the spool refused it, ...)."""
        if step is Step.DELIVERED:
            self._count_delivered(batch, outcome, decision.errors_listed)
        elif step is Step.REJECTED:
            self._count_rejected(batch, outcome)
        elif step is Step.SPLIT:
            if not self._split(batch, outcome):
                return _Then.NEXT_STEP
        elif step is Step.DROP:
            self._drop(batch, outcome, decision.reject_source)
        elif step is Step.REPLAY:
            return _Then.POST_AGAIN  # the client invalidated the token: the same bytes, now
        elif step is Step.SPOOL or step is Step.RESPOOL:
            if not self._spool(batch, step):
                return _Then.NEXT_STEP
        elif step is Step.BISECT:
            if not self.parking.bisect(batch):
                return _Then.NEXT_STEP
        elif step is Step.PARK:
            self.parking.park(batch)
        elif step is Step.REQUEUE:
            self._wait(decision, batch, outcome)
            self.outbox.put(batch)
        elif step is Step.WAIT:
            self._wait(decision, batch, outcome)
            return _Then.POST_AGAIN
        return _Then.FINISHED

    # ---- the steps ----------------------------------------------------------------------------

    def _count_delivered(self, batch: Batch, outcome: Outcome, errors_listed: bool) -> None:
        rejected = self._log_errors(outcome, batch, "partially accepted") if errors_listed else 0
        self.stats.incr("bodies_sent")
        self.stats.incr("datapoints_sent", max(0, batch.datapoints - rejected))
        self.stats.incr("bytes_sent", len(batch.body))
        self._finish(batch)

    def _count_rejected(self, batch: Batch, outcome: Outcome) -> None:
        counted = self._log_errors(outcome, batch, "rejected")
        if batch.datapoints > counted:
            self.stats.incr("datapoints_rejected", batch.datapoints - counted, source="unknown")
        self._finish(batch)

    def _split(self, batch: Batch, outcome: Outcome) -> bool:
        if not split(self.outbox, batch):
            return False
        if outcome.kind is Kind.TOO_LARGE:
            self.log.info("413 for a body of %d bytes; split in two", len(batch.body))
        else:
            self.log.error(
                "BUG: Blueflood could not parse a body of %d datapoints (%s); bisecting",
                batch.datapoints,
                _first_message(outcome),
            )
        return True

    def _drop(self, batch: Batch, outcome: Outcome, source: str) -> None:
        if outcome.kind is Kind.TOO_LARGE:
            self.log.error("413 for a single datapoint of %d bytes, dropped", len(batch.body))
        else:
            self.log.error(
                "BUG: Blueflood refused this datapoint (%s), dropped: %.500r",
                _first_message(outcome),
                batch.body,
            )
        self.stats.incr("datapoints_rejected", batch.datapoints, source=source)
        self._finish(batch)

    def _spool(self, batch: Batch, step: Step) -> bool:
        if self.replay is None:
            return False
        if step is Step.RESPOOL:
            return self.replay.respool(batch)
        return self.replay.put(batch)

    def _finish(self, batch: Batch) -> None:
        if self.replay is not None:
            self.replay.finish(batch)

    def _wait(self, decision: Decision, batch: Batch, outcome: Outcome) -> None:
        if decision.wait is Wait.RETRY_AFTER:
            self.log.warning(
                "Blueflood rate limit (%s); waiting %.1fs", outcome.status, decision.seconds
            )
            self._sleep(decision.seconds)
        elif decision.wait is Wait.BACKOFF:
            self._sleep(self.backoff.seconds(batch.attempts))

    def _sleep(self, seconds: float) -> None:
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise Stopped
            seconds = min(seconds, remaining)
        gevent.sleep(seconds)

    # ---- bookkeeping --------------------------------------------------------------------------

    def _record_failure(self, batch: Batch, outcome: Outcome) -> None:
        batch.attempts += 1
        if batch.failing_since is None:
            batch.failing_since = time.monotonic()
        url = self.client.url_for(batch.tenant) if batch.tenant else self.client.url
        self.target.failed(outcome, url)
        self.relieve()

    def _log_errors(self, outcome: Outcome, batch: Batch, what: str) -> int:
        """Log each rejected metric (bounded) and count them; returns how many were listed."""
        errors = outcome.errors
        for error in errors[:LOG_ERRORS_PER_BODY]:
            self.log.warning(
                "Blueflood %s metric %r at %s: %s: %s",
                what,
                error.get("metricName"),
                error.get("timestamp"),
                error.get("source"),
                error.get("message"),
            )
        if len(errors) > LOG_ERRORS_PER_BODY:
            self.log.warning(
                "... and %d more rejected in the same body of %d datapoints",
                len(errors) - LOG_ERRORS_PER_BODY,
                batch.datapoints,
            )
        by_source = Counter(str(e.get("source") or "unknown") for e in errors)
        for source, n in by_source.items():
            self.stats.incr("datapoints_rejected", n, source=source)
        return len(errors)


def _first_message(outcome: Outcome) -> object:
    return outcome.errors[0].get("message") if outcome.errors else "(no body)"
