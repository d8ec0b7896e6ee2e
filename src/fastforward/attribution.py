"""Who sent what we dropped: per-sender counts, recent samples, and rate-limited warnings.

The codec counts drops per reason for the whole process and keeps a few samples
(``take_rejects``); it does not know connections. `Intake.settle` is called by a receiver right
after it decoded bytes of one sender and before it could yield to another greenlet (gevent runs
one at a time), so the difference of the codec's counters since the previous settle belongs to
that sender. That is one ``counters()`` call per read or frame batch, never work per datapoint.

Memory is bounded whatever the number of senders: `Senders` keeps the ``MAX_SENDERS`` most
recently seen source addresses and folds the ones it evicts into an ``others`` row;
`RejectLog` keeps ``SAMPLES_PER_REASON`` samples per reason (a fixed set of reasons) and the
warning rate limiter remembers at most ``MAX_LIMITED`` (reason, sender) pairs.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from typing import Any

from ._codec_rules import DROP_REASONS, LOOKS_LIKE_PICKLE, looks_like_pickle

log = logging.getLogger("fastforward.receiver")

MAX_SENDERS = 1024  # source addresses tracked one by one; the rest are summed in "others"
OTHERS = "others"
SAMPLES_PER_REASON = 10
MAX_LIMITED = 4096  # (reason, sender) pairs the warning rate limiter remembers
WARN_EVERY = 60.0  # seconds between two warnings for the same reason and sender
SHOWN_BYTES = 120  # bytes of a sample shown in a log line or /debug/rejects
LINE_HINT = "use --protocol pickle (an --endpoint) for carbon's pickle port"


def shown(sample: bytes) -> str:
    """A sample as printable ASCII: at most `SHOWN_BYTES`, everything else backslash-escaped,
    so a log line or a JSON string never carries control characters or raw binary."""
    cut = bytes(sample[:SHOWN_BYTES])
    # latin-1 maps each byte to one code point; unicode_escape writes \\, \n, \xHH for
    # everything outside printable ASCII. A quote is escaped too: logs show '<sample>'.
    text = cut.decode("latin-1").encode("unicode_escape").decode("ascii").replace("'", "\\'")
    return text + ("..." if len(sample) > SHOWN_BYTES else "")


def host_of(peer: str) -> str:
    """The source address without the port: a relay reconnects from a new port each time."""
    if peer.startswith("["):
        return peer[1 : peer.find("]")] if "]" in peer else peer
    if peer.count(":") == 1 and not peer.startswith("unix"):
        return peer.rsplit(":", 1)[0]
    return peer


class Senders:
    """Per source address: connections, datapoints received, dropped by reason, last seen."""

    def __init__(self, limit: int = MAX_SENDERS) -> None:
        self.limit = limit
        self._rows: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._others = self._new_row()
        self.evicted = 0

    @staticmethod
    def _new_row() -> dict[str, Any]:
        return {"connections": 0, "datapoints_received": 0, "dropped": {}, "last_seen": 0.0}

    def _row(self, host: str) -> dict[str, Any]:
        row = self._rows.get(host)
        if row is None:
            row = self._rows[host] = self._new_row()
            if len(self._rows) > self.limit:
                _, old = self._rows.popitem(last=False)
                self._fold(old)
        else:
            self._rows.move_to_end(host)
        row["last_seen"] = time.time()
        return row

    def _fold(self, row: dict[str, Any]) -> None:
        self.evicted += 1
        others = self._others
        others["connections"] += row["connections"]
        others["datapoints_received"] += row["datapoints_received"]
        for reason, n in row["dropped"].items():
            others["dropped"][reason] = others["dropped"].get(reason, 0) + n
        others["last_seen"] = max(others["last_seen"], row["last_seen"])

    def connected(self, host: str) -> None:
        self._row(host)["connections"] += 1

    def account(self, host: str, received: int, dropped: dict[str, int]) -> None:
        row = self._row(host)
        row["datapoints_received"] += received
        for reason, n in dropped.items():
            row["dropped"][reason] = row["dropped"].get(reason, 0) + n

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: the tracked senders, most recently seen first, then ``others``."""
        senders = {host: _copy(row) for host, row in reversed(self._rows.items())}
        out: dict[str, Any] = {"limit": self.limit, "senders": senders}
        if self.evicted:
            out["others"] = {**_copy(self._others), "addresses": self.evicted}
        return out


def _copy(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "dropped": dict(row["dropped"]), "last_seen": round(row["last_seen"], 3)}


class RejectLog:
    """Recent samples per reason for /debug/rejects, and warnings rate-limited per
    (reason, sender): the first one at once, then at most one per `WARN_EVERY` seconds, which
    says how many were not logged since."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[dict[str, Any]]] = {}
        self._limited: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def record(
        self, reason: str, peer: str, sample: bytes, count: int = 1, detail: str = ""
    ) -> None:
        """One loss of ``count`` datapoints from ``peer``, with a sample of its input."""
        entry = {"sender": peer, "time": round(time.time(), 3), "count": count}
        entry["sample"] = shown(sample)
        if detail:
            entry["detail"] = detail
        self._samples.setdefault(reason, deque(maxlen=SAMPLES_PER_REASON)).append(entry)
        self._warn(reason, peer, entry, count)

    def _warn(self, reason: str, peer: str, entry: dict[str, Any], count: int) -> None:
        key = (reason, host_of(peer))
        now = time.monotonic()
        state = self._limited.get(key)
        if state is not None:
            self._limited.move_to_end(key)
            if now - state[0] < WARN_EVERY:
                state[1] += count
                return
        elif len(self._limited) >= MAX_LIMITED:
            self._limited.popitem(last=False)
        unlogged = int(state[1]) if state is not None else 0
        self._limited[key] = [now, 0]
        detail = f" ({entry['detail']})" if "detail" in entry else ""
        since = f"; {unlogged} more from {key[1]} not logged since" if unlogged else ""
        log.warning(
            "dropped %d from %s: %s%s, e.g. '%s'%s",
            count,
            peer,
            reason,
            detail,
            entry["sample"],
            since,
        )

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: the most recent samples per reason, newest last."""
        return {
            "per_reason": SAMPLES_PER_REASON,
            "rejects": {reason: list(q) for reason, q in sorted(self._samples.items())},
        }


class Intake:
    """Attributes what the codec counted since the last call to the sender just decoded."""

    def __init__(self, encoder: Any, senders: Senders, rejects: RejectLog) -> None:
        self.encoder = encoder
        self.senders = senders
        self.rejects = rejects
        self._seen: dict[str, int] = encoder.counters()
        self._seen_total = sum(self._seen.values())

    def settle(self, peer: str) -> None:
        """Everything decoded since the previous settle came from ``peer``."""
        now = self.encoder.counters()
        seen = self._seen
        if now == seen:
            return
        total = sum(now.values())
        self._seen, seen_total, self._seen_total = now, self._seen_total, total
        accepted = now["accepted"] - seen["accepted"]
        counted = accepted + now["frames"] - seen["frames"] + now["lines"] - seen["lines"]
        dropped: dict[str, int] = {}
        if total - seen_total != counted:  # something was dropped: find what (rare path)
            for reason in DROP_REASONS:
                n = now[reason] - seen[reason]
                if n:
                    dropped[reason] = n
        self.senders.account(host_of(peer), accepted + sum(dropped.values()), dropped)
        if dropped:
            self._samples(peer, dropped)

    def _samples(self, peer: str, dropped: dict[str, int]) -> None:
        by_reason: dict[str, bytes] = {}
        for reason, sample in self.encoder.take_rejects():
            by_reason.setdefault(reason, sample)
            if reason == "bad_line" and looks_like_pickle(sample):
                by_reason[reason] = sample  # the telling one
        for reason, n in dropped.items():
            if reason == "bad_frame":
                continue  # the receiver records it with the frame's first bytes
            sample = by_reason.get(reason, b"")
            detail = ""
            if reason == "bad_line" and looks_like_pickle(sample):
                detail = f"{LOOKS_LIKE_PICKLE}: {LINE_HINT}"
            self.rejects.record(reason, peer, sample, n, detail)

    def dropped(self, peer: str, reason: str, sample: bytes, detail: str = "") -> None:
        """A loss the receiver found itself (oversize, truncated...), counted one per unit."""
        self.senders.account(host_of(peer), 1, {reason: 1})
        self.rejects.record(reason, peer, sample, 1, detail)


def merge_debug(states: dict[int, dict[str, Any]], limit: int = MAX_SENDERS) -> dict[str, Any]:
    """The /debug state of several workers (``--workers``, by worker id) as one: rows summed per
    address (still at most ``limit``, the rest folded into ``others``), samples of every
    worker merged per reason, newest last, each marked with its ``worker``."""
    rows: dict[str, dict[str, Any]] = {}
    others = Senders._new_row()
    evicted = 0

    def add(into: dict[str, Any], row: dict[str, Any]) -> None:
        into["connections"] += row.get("connections", 0)
        into["datapoints_received"] += row.get("datapoints_received", 0)
        for reason, n in row.get("dropped", {}).items():
            into["dropped"][reason] = into["dropped"].get(reason, 0) + n
        into["last_seen"] = max(into["last_seen"], row.get("last_seen", 0.0))

    samples: dict[str, list[dict[str, Any]]] = {}
    for worker, state in sorted(states.items()):
        senders = state.get("senders", {})
        for host, row in senders.get("senders", {}).items():
            add(rows.setdefault(host, Senders._new_row()), row)
        if "others" in senders:
            add(others, senders["others"])
            evicted += senders["others"].get("addresses", 0)
        for reason, entries in state.get("rejects", {}).get("rejects", {}).items():
            samples.setdefault(reason, []).extend({**e, "worker": worker} for e in entries)
    ordered = sorted(rows.items(), key=lambda kv: kv[1]["last_seen"], reverse=True)
    for _host, row in ordered[limit:]:
        add(others, row)
        evicted += 1
    merged_senders: dict[str, Any] = {"limit": limit, "senders": dict(ordered[:limit])}
    if evicted:
        merged_senders["others"] = {**others, "addresses": evicted}
    rejects = {
        reason: sorted(entries, key=lambda e: e.get("time", 0))[-SAMPLES_PER_REASON:]
        for reason, entries in sorted(samples.items())
    }
    return {
        "senders": merged_senders,
        "rejects": {"per_reason": SAMPLES_PER_REASON, "rejects": rejects},
    }
