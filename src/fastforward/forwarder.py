"""The forwarder: from encoder bodies to Blueflood, losslessly. Wires the rooms together.

`Flusher` (flushing.py) moves bodies from the encoder into the `Outbox`; `Senders`
(sending.py) POST them and carry out `delivery.decide`; `Parking` (poison.py) bisects and parks
poison data; `Replay` (replay.py) writes to the disk spool and replays it; `TargetState`
(target.py) tracks and logs a failing Blueflood; `health.judge` answers ``/health``. What stays
here: start and stop, and spooling under memory pressure.

With a disk spool, bodies move to disk instead of pausing the receivers when the memory cap is
reached while Blueflood is failing (queued ones first, then a failing one its sender holds).

One destination (URL and tenant) has its own outbox, backoff, failure state and spool: the
pieces a per-tenant forwarder would hold once per tenant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
from gevent.event import Event

from .config import Config
from .flushing import Flusher
from .health import HealthFacts, judge
from .outbox import RESUME_FRACTION, Batch, Outbox, gate_headroom
from .poison import Parking
from .protocols import BodySource, BodySpool, Counters, Poster
from .replay import Replay
from .sending import Senders
from .stats import Stats
from .target import LaneLog, TargetState

log = logging.getLogger(__name__)

LOST_AT_STOP = "undelivered_at_stop"  # datapoints_dropped reason of what a stop could not save


class Forwarder:
    """Owns the outbox, the flusher and the senders (and the spool replayer, if any)."""

    def __init__(
        self,
        config: Config,
        encoder: BodySource,
        stats: Counters,
        client: Poster,
        spool: BodySpool | None = None,
    ) -> None:
        self.encoder = encoder
        self.stats = stats
        self.client = client
        self.interval = float(config.interval)
        self.concurrency = max(1, int(config.concurrency))
        cap = int(config.max_buffer_bytes)
        headroom = gate_headroom(cap, int(config.body_bytes))
        self.outbox = Outbox(cap, stats, lambda: encoder.held_bytes, headroom)
        self.target = TargetState(client.url, self._holding)
        self.replay = (
            None if spool is None else Replay(spool, self.outbox, self.target, self.concurrency)
        )
        self.parking = Parking(self.outbox, self.replay)
        self.flusher = Flusher(encoder, self.outbox, self.interval, self._relieve)
        self.senders = Senders(
            self.outbox, client, stats, self.target, self.parking, self.replay, self._relieve
        )
        self.stopping = False
        self.log = self.target.log
        self._flush_greenlet: gevent.Greenlet | None = None
        self._greenlets: list[gevent.Greenlet] = []
        stats.add_collector(self._collect)

    def name_lane(self, who: str) -> None:
        """Start this forwarder's log lines with ``who`` (a tenant's lane: ``tenant 222``)."""
        self.log = LaneLog(who)
        for part in (self.target, self.senders, self.parking, self.replay):
            if part is not None:
                part.log = self.log

    # ---- the contract -------------------------------------------------------------------------

    @property
    def gate(self) -> Event:
        """Set while receivers may read; cleared while the memory cap is reached."""
        return self.outbox.gate

    def start(self) -> None:
        self._flush_greenlet = gevent.spawn(self.flusher.interval_loop)
        self._greenlets = [gevent.spawn(self.senders.loop) for _ in range(self.concurrency)]
        if self.replay is not None:
            self._greenlets.append(gevent.spawn(self.replay.loop))
        self._greenlets.append(gevent.spawn(self.parking.loop))
        self._greenlets.append(gevent.spawn(self.flusher.burst_end_loop))
        self._greenlets.append(gevent.spawn(self.target.reminder_loop))

    def kick(self) -> None:
        """Full bodies are ready: move them to the outbox now (called by the receivers)."""
        self.flusher.kick()

    def recount(self) -> None:
        """The encoder's open body grew. Nothing to do: one body is open, and the gate's
        headroom (two bodies) covers its growth until it is full and moves (the gate is looked
        at then). Looking at every read cost plaintext about 5 % end to end."""

    @property
    def empty(self) -> bool:
        """Nothing queued, in flight or parked, and the destination not failing."""
        outbox = self.outbox
        return (
            outbox.idle.is_set()
            and outbox.bytes == 0
            and not self.parking.parked
            and not self.target.failing
        )

    def retire(self) -> bool:
        """Stop the greenlets of a forwarder that holds nothing (an idle tenant's lane, which
        the caller no longer feeds); False, and nothing stopped, when it is not `empty`. No
        flush and no spooling: there is nothing to save."""
        if not self.empty:
            return False
        self.stopping = True
        running = [g for g in (self._flush_greenlet, *self._greenlets) if g is not None]
        gevent.killall(running, block=False)  # each waits on an event or sleeps: nothing held
        return True

    def count_also(self, holder: Callable[[], int]) -> None:
        """Count `holder()` bytes against the memory cap too (the receivers' read buffers)."""
        self.outbox.count_also(holder)

    @property
    def memory_bytes(self) -> int:
        """Everything held for data, what the memory cap counts (`Outbox.memory_bytes`)."""
        return self.outbox.memory_bytes

    def stop(self, timeout: float) -> int:
        """Flush everything (partial body included) and send until ``timeout`` seconds pass.

        Returns the number of datapoints neither delivered nor written to the spool.
        """
        self.stopping = True
        if self.replay is not None:
            self.replay.stopping = True
        deadline = time.monotonic() + max(0.0, timeout)
        self.senders.deadline = deadline
        if self._flush_greenlet is not None:
            self._flush_greenlet.kill(block=True)
        self.flusher.move(partial=True)
        self.outbox.idle.wait(timeout=max(0.0, deadline - time.monotonic()))
        leftover = [*self.outbox.queue, *self.outbox.inflight, *self.parking.take_all()]
        gevent.killall(self._greenlets, block=True, timeout=5)
        lost = self._put_away(leftover)
        self.outbox.clear()  # each leftover is now spooled, kept in its spool file, or lost
        return lost

    def _put_away(self, leftover: list[Batch]) -> int:
        """At stop: spool what was not delivered; returns the datapoints that could not be."""
        lost = spooled = 0
        for batch in leftover:
            if batch.origin is not None and self.replay is not None:
                self.replay.release(batch.origin)  # still on disk: replayed at next start
                continue
            if self.replay is not None and self.replay.put(batch):
                spooled += batch.datapoints
            else:
                lost += batch.datapoints
        if spooled:
            self.log.warning("stop: %d datapoints not delivered were written to the spool", spooled)
        if lost:
            self.stats.incr("datapoints_dropped", lost, reason=LOST_AT_STOP)
            self.log.error(
                "stop: %d datapoints could be neither delivered before --drain-timeout nor %s",
                lost,
                "written to the spool" if self.replay is not None else "spooled (no --spool-dir)",
            )
        else:
            self.log.info("stop: everything was delivered%s", " or spooled" if spooled else "")
        return lost

    def healthy(self) -> tuple[bool, str]:
        """(ok, reason) for /health (see health.py)."""
        flusher = self._flush_greenlet
        return judge(
            HealthFacts(
                stopping=self.stopping,
                flusher_running=flusher is not None and not flusher.dead,
                senders_running=not any(g.dead for g in self._greenlets),
                interval=self.interval,
                paused_seconds=self.outbox.paused_for(),
                failing_seconds=self.target.failing_seconds() if self.target.failing else None,
                data_waiting=bool(self.outbox.datapoints or self.parking.parked),
                spool=self.replay is not None,
                spool_full=self.replay is not None and self.replay.full,
            )
        )

    def failing_seconds(self) -> float:
        """Seconds since the first of the current run of failed POSTs; 0 while they succeed."""
        return self.target.failing_seconds()

    # ---- tuning (tests make waits short) ------------------------------------------------------

    @property
    def backoff_base(self) -> float:
        return self.senders.backoff.base

    @backoff_base.setter
    def backoff_base(self, seconds: float) -> None:
        self.senders.backoff.base = seconds

    @property
    def backoff_cap(self) -> float:
        return self.senders.backoff.cap

    @backoff_cap.setter
    def backoff_cap(self, seconds: float) -> None:
        self.senders.backoff.cap = seconds

    @property
    def park_retry(self) -> float:
        return self.parking.retry

    @park_retry.setter
    def park_retry(self, seconds: float) -> None:
        self.parking.retry = seconds

    # ---- memory pressure ----------------------------------------------------------------------

    def _relieve(self) -> None:
        """Spool under memory pressure while Blueflood fails, then update the gate."""
        outbox, replay = self.outbox, self.replay
        if replay is not None and self.target.failures and outbox.over_cap:
            goal = outbox.max_bytes * RESUME_FRACTION  # where the gate opens again
            for batch in list(outbox.queue):
                if outbox.memory_bytes <= goal:
                    break
                if batch.origin is not None:
                    continue
                if not replay.put(batch):
                    break
                outbox.remove_queued(batch)
        outbox.update_gate()

    # ---- telling the operator -----------------------------------------------------------------

    def _holding(self) -> str:
        """What waits for Blueflood now, in memory and on disk."""
        memory = (
            f"{self.outbox.datapoints + self.encoder.pending_datapoints} datapoints "
            f"({self.outbox.memory_bytes} bytes) in memory"
        )
        if self.replay is None:
            return f"{memory}, no spool (--spool-dir)"
        return f"{memory}, {self.replay.files} files ({self.replay.disk_bytes} bytes) spooled"

    def _collect(self, stats: Stats) -> None:
        stats.set("blueflood_failing_seconds", round(self.failing_seconds(), 3))
        stats.set("buffered_bytes", self.outbox.memory_bytes, place="memory")
        stats.set("buffered_datapoints", self.outbox.datapoints + self.encoder.pending_datapoints)
        if self.replay is not None:
            stats.set("buffered_bytes", self.replay.disk_bytes, place="disk")
            stats.set("spool_files", self.replay.files)
