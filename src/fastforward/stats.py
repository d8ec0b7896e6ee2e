"""Self-metrics: plain counters and gauges that every component updates; no I/O here.

Names are registered once in ``METRICS`` (kind and help text), so `/metrics`, the periodic log
line and the optional forwarding of self-metrics to Blueflood all describe the same numbers.
A metric may carry labels (``reason``, ``protocol``, ``status``...); a sample is keyed by the
metric name and its sorted label pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Literal

Kind = Literal["counter", "gauge"]
Labels = tuple[tuple[str, str], ...]

METRICS: dict[str, tuple[Kind, str]] = {
    # receiving
    "datapoints_received": ("counter", "Datapoints decoded from the wire, by protocol."),
    "datapoints_accepted": ("counter", "Datapoints accepted and queued for Blueflood."),
    "datapoints_dropped": ("counter", "Datapoints dropped before sending, by reason."),
    "frames_received": ("counter", "Pickle frames received, by result (ok, bad, oversize)."),
    "lines_received": ("counter", "Plaintext lines received."),
    "connections_accepted": ("counter", "Client connections accepted, by protocol."),
    "connections_refused": ("counter", "Client connections refused at the connection cap."),
    "connections_timed_out": ("counter", "Client connections closed by the idle timeout."),
    "connections_aged": ("counter", "Client connections closed by --max-connection-age."),
    "connections_open": ("gauge", "Client connections open now."),
    # sending
    "bodies_sent": ("counter", "Request bodies Blueflood accepted (200, 202, 207)."),
    "datapoints_sent": ("counter", "Datapoints in request bodies Blueflood accepted."),
    "bytes_sent": ("counter", "Uncompressed JSON bytes Blueflood accepted."),
    "http_responses": ("counter", "HTTP responses from Blueflood, by status code."),
    "retries": ("counter", "Retried requests, by cause (status code, connection, timeout)."),
    "datapoints_rejected": ("counter", "Datapoints Blueflood rejected (207/400), by source."),
    "flush_latency_seconds_sum": ("counter", "Total seconds spent in successful POSTs."),
    "flush_latency_seconds_count": ("counter", "Number of successful POSTs timed."),
    "auth_requests": ("counter", "Identity token requests, by result."),
    # buffering
    "buffered_bytes": ("gauge", "Bytes waiting to be sent, by place (memory, disk)."),
    "buffered_datapoints": ("gauge", "Datapoints waiting to be sent from memory."),
    "spool_files": ("gauge", "Files waiting in the disk spool."),
    "spool_written_bodies": ("counter", "Bodies written to the disk spool."),
    "spool_replayed_bodies": ("counter", "Spooled bodies delivered to Blueflood."),
    "spool_corrupt_files": ("counter", "Spool files found corrupt and moved aside."),
    "backpressure_seconds": ("counter", "Seconds receivers spent paused by the buffer cap."),
    "backpressure_active": ("gauge", "1 while receivers are paused by the buffer cap."),
    "uptime_seconds": ("gauge", "Seconds since the process started."),
    "worker_restarts": ("counter", "Worker processes restarted by the supervisor, by worker."),
}


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


class Stats:
    """Counters and gauges of one process. Not thread-safe: gevent runs one greenlet at a time."""

    def __init__(self) -> None:
        self._values: dict[str, dict[Labels, float]] = {name: {} for name in METRICS}
        self._collectors: list[Callable[[Stats], None]] = []
        self.started = time.monotonic()

    def incr(self, name: str, n: float = 1, **labels: str) -> None:
        series = self._values[name]
        key = _key(labels)
        series[key] = series.get(key, 0) + n

    def set(self, name: str, value: float, **labels: str) -> None:
        self._values[name][_key(labels)] = value

    def get(self, name: str, **labels: str) -> float:
        """One sample; with no labels given, the sum over every label set of that metric."""
        self.refresh()
        series = self._values[name]
        if labels:
            return series.get(_key(labels), 0)
        return sum(series.values())

    def add_collector(self, collect: Callable[[Stats], None]) -> None:
        """Register a function that refreshes gauges (or pulls counters) before each read."""
        self._collectors.append(collect)

    def refresh(self) -> None:
        self.set("uptime_seconds", round(time.monotonic() - self.started, 3))
        for collect in self._collectors:
            collect(self)

    def samples(self) -> Iterator[tuple[str, Labels, float]]:
        """Every (name, labels, value), refreshed; the order is stable (registration order)."""
        self.refresh()
        for name, series in self._values.items():
            for labels, value in sorted(series.items()):
                yield name, labels, value
