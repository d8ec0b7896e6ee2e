"""Series budget: "is this name new?" in bounded memory, and a per-minute allowance of new names.

`SeenSet` remembers series by a 64-bit fingerprint (Python's ``hash`` of the name, randomised per
process) in a fixed table of ``capacity`` slots of 8 bytes, grouped in buckets of 8: with the
default 1,048,576 slots that is 8 MiB per budgeted rule, whatever the cardinality.

- False "seen" (a new name taken for an existing one): two names with the same 64-bit hash in
  the same bucket, about n / 2**64 per lookup: never in practice.
- False "new" (an existing series forgotten): a name is forgotten only when its bucket of 8 is
  full and a newer name takes its slot: about 1 name in 120 at half the capacity, fewer than 1
  in 10,000 at a quarter; beyond the capacity names keep being forgotten in turn. A forgotten
  series counts against the budget once more; it is never silently dropped while there is
  budget left, and it stops being "new" as soon as it is admitted again.

`SeriesBudget` lets names it has seen through untouched and admits at most ``limit`` never-seen
names per minute of its clock (injected; the wall clock by default, minutes as users read them);
further new names are refused until the next minute (a refused name is not remembered, so it is
new again, and admitted, once a later minute has budget). For the first ``warmup_seconds``
after start it only learns: every series already flowing is new to a freshly started process,
and refusing them would drop existing series after every restart.

`TopPrefixes` is a space-saving top-k: at most k counters, the counts exact for prefixes that
never left the table and over-estimated by at most the reported ``error`` otherwise.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from collections.abc import Callable

__all__ = ["SeenSet", "SeriesBudget", "TopPrefixes", "prefix_of"]

_WAYS = 8
_MASK64 = (1 << 64) - 1


class SeenSet:
    """A bounded, approximate set of names (see the module docstring for the error bounds)."""

    def __init__(self, capacity: int = 1 << 20) -> None:
        buckets = 1
        while buckets * _WAYS < capacity:
            buckets <<= 1
        self.capacity = buckets * _WAYS
        self._mask = buckets - 1
        self._slots = array("Q", bytes(8 * self.capacity))
        self._victim = 0
        self.entries = 0

    def _locate(self, name: str) -> tuple[int, int]:
        h = hash(name) & _MASK64
        return ((h >> 7) & self._mask) * _WAYS, h | 1  # 0 marks an empty slot

    def __contains__(self, name: str) -> bool:
        base, fp = self._locate(name)
        return fp in self._slots[base : base + _WAYS]

    def add(self, name: str) -> None:
        base, fp = self._locate(name)
        slots = self._slots
        for i in range(base, base + _WAYS):
            if slots[i] == fp:
                return
            if slots[i] == 0:
                slots[i] = fp
                self.entries += 1
                return
        # Bucket full: forget one of its slots, round robin across the table.
        self._victim = (self._victim + 1) % _WAYS
        slots[base + self._victim] = fp


def prefix_of(name: str, depth: int = 2) -> str:
    """The first `depth` dot-separated nodes: what /debug/series groups new names by."""
    parts = name.split(".", depth)
    return ".".join(parts[:depth])


class TopPrefixes:
    """Space-saving top-k counter of the prefixes creating new series."""

    def __init__(self, k: int = 20) -> None:
        self.k = k
        self._counts: dict[str, list[int]] = {}  # prefix -> [count, error]

    def add(self, prefix: str) -> None:
        entry = self._counts.get(prefix)
        if entry is not None:
            entry[0] += 1
        elif len(self._counts) < self.k:
            self._counts[prefix] = [1, 0]
        else:  # take over the smallest counter, inheriting its count as the error bound
            smallest = min(self._counts, key=lambda p: self._counts[p][0])
            floor = self._counts.pop(smallest)[0]
            self._counts[prefix] = [floor + 1, floor]

    def top(self, n: int | None = None) -> list[dict[str, object]]:
        ranked = sorted(self._counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
        return [{"prefix": p, "new_series": c, "error": e} for p, (c, e) in ranked[:n]]


class SeriesBudget:
    """At most `limit` new series per clock minute for one rule; seen series always pass."""

    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float] = time.time,
        capacity: int = 1 << 20,
        warmup_seconds: float = 300.0,
        top_k: int = 20,
        prefix_depth: int = 2,
        history_minutes: int = 10,
    ) -> None:
        self.limit = limit
        self.clock = clock
        self.seen = SeenSet(capacity)
        self.top_prefixes = TopPrefixes(top_k)
        self.prefix_depth = prefix_depth
        self.learn_until = clock() + warmup_seconds
        self._minute = int(clock() // 60)
        self.new_this_minute = 0
        self.refused_this_minute = 0
        self.new_total = 0
        self.refused_total = 0
        # (minute, new, refused) for the last complete minutes, newest last
        self.history: deque[tuple[int, int, int]] = deque(maxlen=history_minutes)

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self.history.append((self._minute, self.new_this_minute, self.refused_this_minute))
            self._minute = minute
            self.new_this_minute = 0
            self.refused_this_minute = 0

    def admit(self, name: str) -> bool:
        """True when `name` may pass: seen before, or new with budget left this minute."""
        if name in self.seen:
            return True
        now = self.clock()
        self._roll(now)
        if now >= self.learn_until and self.new_this_minute >= self.limit:
            self.refused_this_minute += 1
            self.refused_total += 1
            return False
        self.seen.add(name)
        self.new_this_minute += 1
        self.new_total += 1
        self.top_prefixes.add(prefix_of(name, self.prefix_depth))
        return True

    def snapshot(self) -> dict[str, object]:
        """What GET /debug/series shows for this rule (JSON-ready)."""
        now = self.clock()
        self._roll(now)
        return {
            "limit_per_minute": self.limit,
            "learning": now < self.learn_until,
            "new_this_minute": self.new_this_minute,
            "refused_this_minute": self.refused_this_minute,
            "new_total": self.new_total,
            "refused_total": self.refused_total,
            "per_minute": [{"minute": m * 60, "new": n, "refused": r} for m, n, r in self.history],
            "top_prefixes": self.top_prefixes.top(),
            "seen_capacity": self.seen.capacity,
            "seen_entries": self.seen.entries,
        }
