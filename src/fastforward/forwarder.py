"""The flush greenlet and the sender greenlets: from encoder bodies to Blueflood, losslessly.

Every ``interval`` seconds (and at once on ``kick()`` when full bodies are ready) the flusher
moves the encoder's bodies into the outbox; when a burst of input ends (``BURST_QUIET``), its
partial last body goes too. ``concurrency`` senders pop batches; a batch is
owned by exactly one sender until it is delivered, dropped for good, split into two new
batches, or spooled, so nothing is sent twice unless a POST failed. A failing batch is retried
by its sender with exponential backoff and jitter, never waiting for new traffic. What
Blueflood answers decides the rest (docs/blueflood-api.md section 7): 207 and per-metric 400 are
logged and counted, never retried; "Cannot parse content" is bisected down to the bad
datapoint; 401 replays the same bytes after re-authenticating; 413 without Retry-After splits.

With a disk spool, batches move to disk instead of pausing the receivers when the memory cap
is reached while Blueflood is failing (queued ones first, then a failing one its sender holds),
and the spool is replayed oldest first, one body at a time, once Blueflood answers again.

Poison data: Blueflood answers 500 both when it is down and for a datapoint it cannot handle.
A 500 is only suspected to be about the data when Blueflood accepted another body since this
one started failing. Such a body is bisected after ``BISECT_500_AFTER`` attempts; a single
datapoint that keeps failing that way is parked: it leaves its sender, is written to the spool
(or, without one, kept aside in memory and counted in the cap) and retried every
``PARK_RETRY`` seconds, forever. So it never holds a sender, the replay of the spool, or the
"Blueflood is failing" state that pauses replay.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from typing import Any, Protocol

import gevent
from gevent.event import Event

from .blueflood import Kind, Outcome
from .outbox import Batch, Outbox, SpoolRef, split_body
from .stats import Stats

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 600.0
MAX_AUTH_REPLAYS = 3
BISECT_500_AFTER = 5  # consecutive 500s before a batch is suspected of poison data
PARK_RETRY = 60.0  # seconds between attempts at a parked (suspected poison) datapoint
LOG_ERRORS_PER_BODY = 10
# Seconds of Blueflood failures (with data waiting), or of paused receivers, before /health
# says 503: three flush intervals, at least this many seconds, so one failed POST never flaps it.
UNHEALTHY_AFTER_MIN = 5.0
# A burst (input fast enough to fill bodies) has ended when no datapoint arrived for this long;
# its last, partial body is then sent at once instead of waiting up to an interval. Slow input
# never fills a body, so it keeps the one-request-per-interval pace of the original.
BURST_QUIET = 0.05
# While Blueflood fails, the log says so again this often (the first failure is logged at once).
# The variable is for tests, which cannot wait a minute; it is not an option.
LOST_AT_STOP = "undelivered_at_stop"  # datapoints_dropped reason of what a stop could not save
FAILURE_REMINDER_SECONDS = 60.0
FAILURE_REMINDER_ENV = "FASTFORWARD_TEST_FAILURE_REMINDER_SECONDS"


class Client(Protocol):
    def post(self, body: bytes, tenant: str | None = None) -> Outcome: ...


class Encoder(Protocol):
    @property
    def ready_bodies(self) -> int: ...
    @property
    def pending_bytes(self) -> int: ...
    @property
    def pending_datapoints(self) -> int: ...

    def take_counted(self, partial: bool = True) -> list[tuple[bytes, int]]: ...


def _reminder_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        return FAILURE_REMINDER_SECONDS
    return seconds if 0 < seconds <= FAILURE_REMINDER_SECONDS else FAILURE_REMINDER_SECONDS


class _Stopped(Exception):
    """Raised inside a sender when the stop deadline has passed."""


class Forwarder:
    """Owns the outbox, the flusher and the senders (and the spool replayer, if any)."""

    def __init__(
        self,
        config: Any,
        encoder: Encoder,
        stats: Stats,
        client: Client,
        spool: Any = None,
    ) -> None:
        self.config = config
        self.encoder = encoder
        self.stats = stats
        self.client = client
        self.spool = spool
        self.interval = float(config.interval)
        self.concurrency = max(1, int(config.concurrency))
        self.outbox = Outbox(int(config.max_buffer_bytes), stats, lambda: encoder.pending_bytes)
        self.backoff_base = BACKOFF_BASE
        self.backoff_cap = BACKOFF_CAP
        self._stopping = False
        self._deadline: float | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._flusher: gevent.Greenlet | None = None
        self._failures = 0  # consecutive failed POSTs, any batch
        self._last_success = time.monotonic()
        self._failing_since: float | None = None
        self._last_failure = ""  # the last failure in words, for the reminders
        self._last_failure_at = 0.0
        self.failure_reminder = _reminder_seconds(os.environ.get(FAILURE_REMINDER_ENV, ""))
        self._parked: list[Batch] = []  # suspected poison, without a spool
        self._burst = Event()  # set by kick(): full bodies left, input is fast
        self.park_retry = PARK_RETRY
        stats.add_collector(self._collect)

    # ---- the contract -------------------------------------------------------------------------

    @property
    def gate(self) -> Event:
        """Set while receivers may read; cleared while the memory cap is reached."""
        return self.outbox.gate

    def start(self) -> None:
        self._flusher = gevent.spawn(self._flush_loop)
        self._greenlets = [gevent.spawn(self._sender) for _ in range(self.concurrency)]
        if self.spool is not None:
            self._greenlets.append(gevent.spawn(self._replay_loop))
        self._greenlets.append(gevent.spawn(self._parked_loop))
        self._greenlets.append(gevent.spawn(self._burst_end_loop))
        self._greenlets.append(gevent.spawn(self._failure_reminder_loop))

    def kick(self) -> None:
        """Full bodies are ready: move them to the outbox now (called by the receivers)."""
        self._move(partial=False)
        self._burst.set()

    def stop(self, timeout: float) -> int:
        """Flush everything (partial body included) and send until ``timeout`` seconds pass.

        Returns the number of datapoints neither delivered nor written to the spool.
        """
        self._stopping = True
        self._deadline = time.monotonic() + max(0.0, timeout)
        if self._flusher is not None:
            self._flusher.kill(block=True)
        self._move(partial=True)
        self.outbox.idle.wait(timeout=max(0.0, self._deadline - time.monotonic()))
        leftover = list(self.outbox.queue) + list(self.outbox.inflight) + self._parked
        self._parked = []
        gevent.killall(self._greenlets, block=True, timeout=5)
        lost = spooled = 0
        for batch in leftover:
            if batch.origin is not None:
                self._release_entry(batch.origin)  # still on disk: replayed at next start
                continue
            if self.spool is not None and self._spool_put(batch):
                spooled += batch.datapoints
            else:
                lost += batch.datapoints
        self.outbox.clear()  # each leftover is now spooled, kept in its spool file, or lost
        if spooled:
            log.warning("stop: %d datapoints not delivered were written to the spool", spooled)
        if lost:
            self.stats.incr("datapoints_dropped", lost, reason=LOST_AT_STOP)
            log.error(
                "stop: %d datapoints could be neither delivered before --drain-timeout nor %s",
                lost,
                "written to the spool" if self.spool is not None else "spooled (no --spool-dir)",
            )
        else:
            log.info("stop: everything was delivered%s", " or spooled" if spooled else "")
        return lost

    def healthy(self) -> tuple[bool, str]:
        """(ok, reason) for /health.

        Blueflood failing for a while is unhealthy without a spool (data piles up in memory,
        then the receivers stop), and healthy while the spool takes the overflow and has room.
        """
        if self._stopping:
            return False, "stopping"
        if self._flusher is None or self._flusher.dead:
            return False, "flusher not running"
        if any(g.dead for g in self._greenlets):
            return False, "a sender died"
        grace = max(UNHEALTHY_AFTER_MIN, 3 * self.interval)
        spool_ok = self.spool is not None and not getattr(self.spool, "full", False)
        paused = self.outbox.paused_for()
        if paused > grace:
            return False, f"receivers paused by backpressure for {paused:.0f}s" + (
                "" if self.spool is None else "; spool full or failing"
            )
        if self._failing_since is not None and (self.outbox.datapoints or self._parked):
            failing = time.monotonic() - self._failing_since
            if failing > grace:
                if not spool_ok:
                    return False, f"Blueflood failing for {failing:.0f}s" + (
                        "; spool full" if self.spool is not None else ", no spool"
                    )
                return True, f"ok; Blueflood failing for {failing:.0f}s, the spool takes overflow"
        return True, "ok"

    # ---- flushing -----------------------------------------------------------------------------

    def _flush_loop(self) -> None:
        next_flush = time.monotonic() + self.interval
        while True:
            gevent.sleep(max(0.0, next_flush - time.monotonic()))
            self._move(partial=True)
            next_flush = time.monotonic() + self.interval

    def _burst_end_loop(self) -> None:
        encoder = self.encoder
        while True:
            self._burst.wait()
            self._burst.clear()
            seen = -1
            while (pending := encoder.pending_datapoints) != seen:
                seen = pending
                gevent.sleep(BURST_QUIET)
            if seen:
                self._move(partial=True)

    def _move(self, partial: bool) -> None:
        try:
            counted = self.encoder.take_counted(partial=partial)
        except Exception:  # never let a codec bug kill the flusher
            log.exception("taking bodies from the encoder failed")
            return
        for body, datapoints in counted:
            if body:
                self.outbox.put(Batch(body, datapoints))
        self._relieve()

    def _relieve(self) -> None:
        """Spool under memory pressure while Blueflood fails, then update the gate."""
        if self.spool is not None and self._failures and self.outbox.over_cap:
            target = self.outbox.max_bytes * 0.8
            for batch in list(self.outbox.queue):
                if self.outbox.memory_bytes <= target:
                    break
                if batch.origin is not None:
                    continue
                if not self._spool_put(batch):
                    break
                self.outbox.remove_queued(batch)
        self.outbox.update_gate()

    def _spool_put(self, batch: Batch) -> bool:
        try:
            ok = bool(self.spool.put(batch.body, batch.datapoints, batch.tenant))
        except Exception:
            log.exception("writing to the spool failed")
            return False
        return ok  # the spool counts spool_written_bodies itself

    # ---- sending ------------------------------------------------------------------------------

    def _sender(self) -> None:
        while True:
            self.outbox.has_work.wait()
            if not self.outbox.queue:
                continue
            batch = self.outbox.pop()
            try:
                self._deliver(batch)
            except _Stopped:
                # Back in the queue, so stop() finds it and spools or counts it.
                self.outbox.put(batch, front=True)
                return
            except Exception:
                log.exception("sender failed on a body of %d datapoints", batch.datapoints)
                self.outbox.put(batch, front=True)  # keep it; another attempt will follow
                gevent.sleep(self.backoff_base)
            finally:
                self.outbox.done(batch)
                self._relieve()

    def _deliver(self, batch: Batch) -> None:
        """Send one batch until it is finished (delivered, dropped or split)."""
        while True:
            outcome = self.client.post(batch.body, batch.tenant)
            kind = outcome.kind
            if kind in (Kind.OK, Kind.PARTIAL):
                self._succeeded()
                rejected = (
                    self._log_errors(outcome, batch, "partially accepted")
                    if (kind is Kind.PARTIAL)
                    else 0
                )
                self.stats.incr("bodies_sent")
                self.stats.incr("datapoints_sent", max(0, batch.datapoints - rejected))
                self.stats.incr("bytes_sent", len(batch.body))
                return self._finish(batch)
            if kind is Kind.REJECTED:
                self._succeeded()
                counted = self._log_errors(outcome, batch, "rejected")
                if batch.datapoints > counted:
                    self.stats.incr(
                        "datapoints_rejected", batch.datapoints - counted, source="unknown"
                    )
                return self._finish(batch)
            if kind is Kind.BAD_REQUEST:
                self._succeeded()
                message = outcome.errors[0].get("message") if outcome.errors else "(no body)"
                if self._split(batch):
                    log.error(
                        "BUG: Blueflood could not parse a body of %d datapoints (%s); bisecting",
                        batch.datapoints,
                        message,
                    )
                    return
                log.error(
                    "BUG: Blueflood refused this datapoint (%s), dropped: %.500r",
                    message,
                    batch.body,
                )
                self.stats.incr("datapoints_rejected", batch.datapoints, source="bad_request")
                return self._finish(batch)
            if kind is Kind.TOO_LARGE:
                if self._split(batch):
                    log.info("413 for a body of %d bytes; split in two", len(batch.body))
                    return
                log.error("413 for a single datapoint of %d bytes, dropped", len(batch.body))
                self.stats.incr("datapoints_rejected", batch.datapoints, source="too_large")
                return self._finish(batch)
            if kind is Kind.UNAUTHORIZED:
                batch.auth_replays += 1
                self.stats.incr("retries", cause="401")
                if batch.auth_replays <= MAX_AUTH_REPLAYS:
                    continue  # the client invalidated the token: replay the same bytes now
                batch.auth_replays = 0
                self._failed(batch, outcome)
                self._backoff(batch)
                continue
            # RATE_LIMITED and RETRY
            self.stats.incr("retries", cause=outcome.reason or "unknown")
            self._failed(batch, outcome)
            if self._spool_own(batch):
                return
            if outcome.status == 500 and batch.attempts >= BISECT_500_AFTER:
                if self._suspect(batch):
                    if self._split(batch, suspect=True):
                        log.warning("repeated 500s for one body; bisecting it for poison data")
                        return
                    self._park(batch)
                    return
                if self.outbox.queue:
                    # Try another body next: its answer tells an outage from poison data.
                    self._backoff(batch)
                    self.outbox.put(batch)
                    return
                if batch.origin is not None and self.spool.files > 1 and self._respool(batch):
                    return  # the same for the spool: its next file is replayed meanwhile
            if kind is Kind.RATE_LIMITED and outcome.retry_after is not None:
                wait = min(outcome.retry_after, RETRY_AFTER_CAP)
                log.warning("Blueflood rate limit (%s); waiting %.1fs", outcome.status, wait)
                self._sleep(wait)
            else:
                self._backoff(batch)

    def _finish(self, batch: Batch) -> None:
        origin = batch.origin
        if origin is None or origin.done.is_set():  # done: released already, file kept
            return
        origin.pieces -= 1
        if origin.pieces == 0:
            try:
                self.spool.ack(origin.entry)
            except Exception:
                log.exception("acknowledging a spool entry failed")
            origin.done.set()  # the spool counts spool_replayed_bodies itself

    def _release_entry(self, origin: SpoolRef) -> None:
        if origin.done.is_set():
            return
        origin.done.set()
        try:
            self.spool.release(origin.entry)
        except Exception:
            log.exception("releasing a spool entry failed")

    def _split(self, batch: Batch, suspect: bool = False) -> bool:
        halves = split_body(batch.body)
        if halves is None:
            return False
        (left, n_left), (right, n_right) = halves
        if batch.origin is not None:
            batch.origin.pieces += 1
        # Right first, so the left half is at the very front.
        for body, n in ((right, n_right), (left, n_left)):
            half = Batch(body, n, origin=batch.origin, tenant=batch.tenant)
            if suspect:  # the next 500 bisects again: log2(n) attempts to find the poison
                half.attempts = BISECT_500_AFTER - 1
                half.failing_since = batch.failing_since
            self.outbox.put(half, front=True)
        return True

    def _spool_own(self, batch: Batch) -> bool:
        """A failing batch this sender holds goes to disk while the receivers are paused, so
        bodies in flight never keep the memory cap reached (a spooled one is replayed later)."""
        if self.spool is None or batch.origin is not None or self.outbox.gate.is_set():
            return False
        return self._spool_put(batch)

    def _suspect(self, batch: Batch) -> bool:
        """Repeated 500s while Blueflood accepted other bodies: maybe the data, not an outage."""
        return (
            batch.attempts >= BISECT_500_AFTER
            and batch.failing_since is not None
            and self._last_success > batch.failing_since
        )

    def _park(self, batch: Batch) -> None:
        """Take a suspected poison datapoint away from its sender; it is retried later."""
        log.warning(
            "Blueflood keeps answering 500 for this datapoint while accepting others; "
            "retrying it every %.0fs: %.300r",
            self.park_retry,
            batch.body,
        )
        if self.spool is not None and self._respool(batch):
            return  # the spooled copy is the one replayed from now on
        if batch.origin is not None:
            # Stays tied to its spool file: the file is kept (released) and replayed later.
            self._release_entry(batch.origin)
            return
        parked = Batch(batch.body, batch.datapoints, attempts=batch.attempts, tenant=batch.tenant)
        parked.failing_since = batch.failing_since
        self._parked.append(parked)
        self.outbox.hold(parked)

    def _respool(self, batch: Batch) -> bool:
        """Write a replayed piece as a new (newest) spool file and finish it here."""
        if not self._spool_put(batch):
            return False
        self._finish(batch)
        return True

    def _parked_loop(self) -> None:
        while True:
            gevent.sleep(self.park_retry)
            parked, self._parked = self._parked, []
            for batch in parked:
                self.outbox.unhold(batch)
                self.outbox.put(batch)  # one more attempt; parked again if it still fails

    def _succeeded(self) -> None:
        if self._failing_since is not None:
            log.warning(
                "Blueflood at %s recovered after %.1fs of failures (last: %s)",
                self._target(),
                time.monotonic() - self._failing_since,
                self._last_failure,
            )
        self._failures = 0
        self._failing_since = None
        self._last_success = time.monotonic()

    def _failed(self, batch: Batch, outcome: Outcome) -> None:
        batch.attempts += 1
        now = time.monotonic()
        if batch.failing_since is None:
            batch.failing_since = now
        self._failures += 1
        self._last_failure, self._last_failure_at = outcome.failure, now
        if self._failing_since is None:
            self._failing_since = now
            log.error(
                "Blueflood POST to %s failed: %s; retrying with backoff, %s",
                self._url(batch),
                outcome.failure,
                self._holding(),
            )
        self._relieve()

    # ---- telling the operator that Blueflood fails ----------------------------------------------

    def _target(self) -> str:
        return str(getattr(self.client, "url", "Blueflood"))

    def _url(self, batch: Batch) -> str:
        url_for = getattr(self.client, "url_for", None)
        return url_for(batch.tenant) if batch.tenant and url_for else self._target()

    def failing_seconds(self) -> float:
        """Seconds since the first of the current run of failed POSTs; 0 while they succeed."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def _holding(self) -> str:
        """What waits for Blueflood now, in memory and on disk."""
        memory = (
            f"{self.outbox.datapoints + self.encoder.pending_datapoints} datapoints "
            f"({self.outbox.memory_bytes} bytes) in memory"
        )
        if self.spool is None:
            return f"{memory}, no spool (--spool-dir)"
        return f"{memory}, {self.spool.files} files ({self.spool.disk_bytes} bytes) spooled"

    def _failure_reminder_loop(self) -> None:
        while True:
            gevent.sleep(self.failure_reminder)
            if self._failing_since is None:
                continue
            log.error(
                "Blueflood at %s still failing after %.0fs: %s (last attempt %.0fs ago); %s",
                self._target(),
                self.failing_seconds(),
                self._last_failure,
                time.monotonic() - self._last_failure_at,
                self._holding(),
            )

    def _backoff(self, batch: Batch) -> None:
        delay = min(self.backoff_cap, self.backoff_base * 2 ** max(0, batch.attempts - 1))
        self._sleep(delay * random.uniform(0.5, 1.0))

    def _sleep(self, seconds: float) -> None:
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise _Stopped
            seconds = min(seconds, remaining)
        gevent.sleep(seconds)

    def _log_errors(self, outcome: Outcome, batch: Batch, what: str) -> int:
        """Log each rejected metric (bounded) and count them; returns how many were listed."""
        errors = outcome.errors
        for error in errors[:LOG_ERRORS_PER_BODY]:
            log.warning(
                "Blueflood %s metric %r at %s: %s: %s",
                what,
                error.get("metricName"),
                error.get("timestamp"),
                error.get("source"),
                error.get("message"),
            )
        if len(errors) > LOG_ERRORS_PER_BODY:
            log.warning(
                "... and %d more rejected in the same body of %d datapoints",
                len(errors) - LOG_ERRORS_PER_BODY,
                batch.datapoints,
            )
        by_source = Counter(str(e.get("source") or "unknown") for e in errors)
        for source, n in by_source.items():
            self.stats.incr("datapoints_rejected", n, source=source)
        return len(errors)

    # ---- spool replay -------------------------------------------------------------------------

    def _replay_loop(self) -> None:
        # One spooled body in flight at a time, only while Blueflood answers and the live
        # queue is short, so replay never crowds out live traffic.
        while not self._stopping:
            busy = len(self.outbox) >= self.concurrency or self.outbox.over_cap
            # While Blueflood fails, live bodies in flight are the probe; with none (all of
            # them spooled), the oldest spooled body is, retried by its sender until it goes.
            probing = self._failures and (self.outbox.queue or self.outbox.inflight)
            if busy or probing:
                gevent.sleep(0.2)
                continue
            try:
                entry = self.spool.oldest()
            except Exception:
                log.exception("reading the spool failed")
                gevent.sleep(5)
                continue
            if entry is None:
                gevent.sleep(1.0)
                continue
            ref = SpoolRef(entry)
            batch = Batch(entry.body, entry.datapoints, origin=ref, tenant=entry.tenant)
            self.outbox.put(batch)
            ref.done.wait()

    def _collect(self, stats: Stats) -> None:
        stats.set("blueflood_failing_seconds", round(self.failing_seconds(), 3))
        stats.set("buffered_bytes", self.outbox.memory_bytes, place="memory")
        stats.set(
            "buffered_datapoints",
            self.outbox.datapoints + getattr(self.encoder, "pending_datapoints", 0),
        )
        if self.spool is not None:
            stats.set("buffered_bytes", self.spool.disk_bytes, place="disk")
            stats.set("spool_files", self.spool.files)
