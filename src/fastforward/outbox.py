"""The bounded queue of bodies ready for Blueflood, and the backpressure gate of the receivers.

Bytes are counted from the moment a body enters the outbox until its sender is done with it
(delivered, dropped, or moved to the disk spool), so "in flight" is part of the cap. The gate
is a gevent Event: receivers ``wait()`` on it before reading; it is cleared when the memory in
use (outbox plus what the encoder still holds) goes over ``max_bytes`` and set again at 80 %.

The encoder counts by allocation (`held_bytes`): every open body with all it allocated once
it holds a datapoint, and the bodies not taken yet; an open body holds nothing until its
first write, so an encoder whose bodies were all taken holds 0 and cannot keep the gate shut.
The gate is looked at when a full body moves in (and when a sender finishes one), not after
every frame, so the next body can be allocated and filled between two looks (with many
tenants, also once their open bodies grew by a quarter body: `TenantForwarder.recount`).
A `headroom` lowers where the gate closes so that the peak stays under ``max_bytes``; it
reopens at 80 % of ``max_bytes`` as before (lower, memory that paused connections keep, their
read buffers, could hold it shut).
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gevent.event import Event

from .memtune import give_back_free_memory
from .protocols import Counters, SpoolEntry

log = logging.getLogger(__name__)

RESUME_FRACTION = 0.8
# Room between closing (cap - headroom) and reopening (80 % of the cap): at least 5 % of the cap.
MAX_HEADROOM_FRACTION = 0.15
# Memory no count sees grows with what is held (measured with bench/manysenders.py: 1.1 MiB at
# a 16 MiB cap, 2.3 MiB at 64): a 32nd of the cap covers it.
UNSEEN_FRACTION = 1 / 32
# The heap's free pages go back to the system as the gate reopens after a stall (an episode of
# a second or more: Blueflood away or slow) and after every episode of the minute that follows
# it (the recovery, when a thousand connections' backlogs churn bodies and read buffers through
# the heap: without it their holes took the RSS 7-8 MiB over a 16 MiB cap, bench/manysenders.py).
# Not after the short episodes of a burst that outruns healthy senders: there each give-back
# made the next fill fault its pages in again (bench/e2e.py, 3M pickle datapoints, 48 episodes:
# system CPU 0.12 -> 0.25 s).
STALL_SECONDS = 1.0
RECOVERY_SECONDS = 60.0


def gate_headroom(max_bytes: int, body_bytes: int) -> int:
    """What may be held beyond the counted bytes when the gate is looked at: the body the
    encoder allocates and fills between two looks, one more for the bodies of other tenants
    and connections caught in between, and a 32nd of the cap for memory no count sees (the
    allocator's free but resident heap, Python objects of active connections). Never more
    than 15 % of the cap."""
    unseen = int(max_bytes * UNSEEN_FRACTION)
    return min(2 * body_bytes + unseen, int(max_bytes * MAX_HEADROOM_FRACTION))


# A JSON string (escapes included) or a brace: strings are skipped so that braces inside
# metric names never count.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}]', re.DOTALL)


def _object_ends(body: bytes) -> list[int]:
    """Offsets just past each top-level object of a JSON array of objects."""
    ends = []
    depth = 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token == b"{":
            depth += 1
        elif token == b"}":
            depth -= 1
            if depth == 0:
                ends.append(match.end())
    return ends


def split_body(body: bytes) -> tuple[tuple[bytes, int], tuple[bytes, int]] | None:
    """Split a JSON array of objects in two at the object boundary nearest the middle.

    Returns ``((left, n_left), (right, n_right))``, or None for fewer than two objects.
    """
    ends = _object_ends(body)
    if len(ends) < 2:
        return None
    half = len(ends) // 2
    cut = ends[half - 1]  # just past the last object of the left half
    start = body.index(b"{", cut)  # the right half begins at its first object
    left = body[:cut] + b"]"
    right = b"[" + body[start:]
    return (left, half), (right, len(ends) - half)


@dataclass(eq=False)
class SpoolRef:
    """A spool entry being replayed; acked once every piece of it is finished."""

    entry: SpoolEntry
    pieces: int = 1
    done: Event = field(default_factory=Event)


@dataclass(eq=False)
class Batch:
    body: bytes
    datapoints: int
    attempts: int = 0  # consecutive failed attempts
    auth_replays: int = 0  # consecutive 401 replays
    origin: SpoolRef | None = None
    tenant: str | None = None  # None: the process's --tenant; a replayed body keeps its own
    created: float = field(default_factory=time.monotonic)
    failing_since: float | None = None  # monotonic time of the first failed attempt


class Backpressure:
    """A gate over a memory cap, the one rule for one destination (`Outbox`), for many
    (`tenants.TenantForwarder`) and for one tenant's share of the cap: closed when the memory
    in use goes over the cap (less a headroom), open again at `RESUME_FRACTION` of it.

    The receivers' gate (``share_of`` None) logs each episode once as a warning (with who
    holds the memory, when ``holders`` can say) and counts it in ``backpressure_active`` and
    ``backpressure_seconds``. A tenant's share (``share_of`` its tenant) only tells that
    lane's senders "over the share" (spool first), with an info line when it closes."""

    def __init__(self, stats: Counters, holders: Callable[[], str] | None = None) -> None:
        self.stats = stats
        self.holders = holders
        self.share_of: str | None = None
        self.gate = Event()
        self.gate.set()
        self._paused_since: float | None = None
        self._give_back_until = 0.0  # monotonic end of the recovery after a stall

    def update(self, used: int, cap: int, headroom: int = 0) -> None:
        """Closes over ``cap - headroom`` (see `gate_headroom`), reopens at 80 % of ``cap``."""
        if self.gate.is_set():
            if used > cap - headroom:
                self.gate.clear()
                self._paused_since = time.monotonic()
                self._closed(used, cap)
        elif used <= cap * RESUME_FRACTION:
            self.gate.set()
            paused = self.paused_for()
            self._paused_since = None
            self._opened(paused)

    def _closed(self, used: int, cap: int) -> None:
        if self.share_of is not None:
            log.info("tenant %s holds %d bytes, over its share %d of the memory cap",
                     self.share_of, used, cap)  # fmt: skip
            return
        self.stats.set("backpressure_active", 1)
        who = f"; {self.holders()}" if self.holders is not None else ""
        log.warning(
            "backpressure: %d bytes waiting for Blueflood (cap %d%s); pausing receivers",
            used,
            cap,
            who,
        )

    def _opened(self, paused: float) -> None:
        if self.share_of is not None:
            return
        # The episode's bodies went out: give their holes in the heap back before the next
        # fill (a few hundred microseconds), after a stall and during its recovery.
        now = time.monotonic()
        if paused >= STALL_SECONDS:
            self._give_back_until = now + RECOVERY_SECONDS
        if now <= self._give_back_until:
            give_back_free_memory()
        self.stats.set("backpressure_active", 0)
        self.stats.incr("backpressure_seconds", paused)
        log.warning("backpressure over after %.1fs; receivers resumed", paused)

    def paused_for(self) -> float:
        """Seconds the gate has been closed in the current episode (0 when open)."""
        return 0.0 if self._paused_since is None else time.monotonic() - self._paused_since


class Outbox:
    """FIFO of batches with byte accounting and the receivers' gate."""

    def __init__(
        self,
        max_bytes: int,
        stats: Counters,
        pending: Callable[[], int] = lambda: 0,
        headroom: int = 0,
    ) -> None:
        self.max_bytes = max_bytes
        self.headroom = headroom  # see `gate_headroom`; the receivers' gate only
        self.stats = stats
        self.pending = pending  # bytes still inside the encoder
        self.holders: list[Callable[[], int]] = []  # other memory held for data (read buffers)
        self.queue: deque[Batch] = deque()
        self.inflight: set[Batch] = set()
        self.bytes = 0  # queued + in flight
        self.datapoints = 0
        self.backpressure = Backpressure(stats)
        self.gate = self.backpressure.gate
        self.has_work = Event()
        self.idle = Event()  # nothing queued and nothing in flight
        self.idle.set()

    def __len__(self) -> int:
        return len(self.queue)

    @property
    def share_of(self) -> str | None:
        """Set by a forwarder of several tenants: this outbox is one tenant's share of the
        cap. Its gate then only tells its senders "over the share" (spool first); the
        receivers' gate is the forwarder's, over the whole cap."""
        return self.backpressure.share_of

    @share_of.setter
    def share_of(self, tenant: str | None) -> None:
        self.backpressure.share_of = tenant

    def count_also(self, holder: Callable[[], int]) -> None:
        """Count `holder()` bytes against the cap too (the receivers' read buffers)."""
        self.holders.append(holder)

    @property
    def memory_bytes(self) -> int:
        """Everything held for data: bodies queued and in flight, bodies being filled in the
        encoder, and whatever `count_also` added."""
        held = self.bytes + self.pending()
        for holder in self.holders:
            held += holder()
        return held

    @property
    def close_over(self) -> int:
        """The receivers' gate closes over this many bytes held (and opens at 80 % of the cap)."""
        return self.max_bytes - self._gate_headroom

    @property
    def _gate_headroom(self) -> int:
        return self.headroom if self.share_of is None else 0  # a tenant's share: at its cap

    @property
    def over_cap(self) -> bool:
        return self.memory_bytes > self.close_over

    def put(self, batch: Batch, front: bool = False) -> None:
        if front:
            self.queue.appendleft(batch)
        else:
            self.queue.append(batch)
        self.bytes += len(batch.body)
        self.datapoints += batch.datapoints
        self.has_work.set()
        self.idle.clear()

    def pop(self) -> Batch:
        """The oldest batch, now in flight (the caller must ``done()`` it)."""
        batch = self.queue.popleft()
        if not self.queue:
            self.has_work.clear()
        self.inflight.add(batch)
        return batch

    def remove_queued(self, batch: Batch) -> None:
        """Take a queued batch out (moved to the spool)."""
        self.queue.remove(batch)
        if not self.queue:
            self.has_work.clear()
        self._release(batch)

    def done(self, batch: Batch) -> None:
        """The sender is finished with this batch (delivered, dropped, split or spooled)."""
        self.inflight.discard(batch)
        self._release(batch)

    def _release(self, batch: Batch) -> None:
        self.bytes -= len(batch.body)
        self.datapoints -= batch.datapoints
        if not self.queue and not self.inflight:
            self.idle.set()

    def clear(self) -> None:
        """Forget every batch (at the end of a stop, once each was spooled or counted lost)."""
        self.queue.clear()
        self.inflight.clear()
        self.bytes = self.datapoints = 0
        self.has_work.clear()
        self.idle.set()

    def hold(self, batch: Batch) -> None:
        """Count a batch kept aside (parked) in the memory cap, outside the queue."""
        self.bytes += len(batch.body)
        self.datapoints += batch.datapoints

    def unhold(self, batch: Batch) -> None:
        self.bytes -= len(batch.body)
        self.datapoints -= batch.datapoints

    def update_gate(self) -> None:
        """Close the gate over the cap, open it again under 80 %; log each episode once."""
        self.backpressure.update(self.memory_bytes, self.max_bytes, self._gate_headroom)

    def paused_for(self) -> float:
        """Seconds the receivers have been paused in the current episode (0 when open)."""
        return self.backpressure.paused_for()
