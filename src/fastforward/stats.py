"""Self-metrics: plain counters and gauges that every component updates; no I/O here.

Names are registered once in ``METRICS`` (kind and help text), so `/metrics`, the periodic log
line and the optional forwarding of self-metrics to Blueflood all describe the same numbers.
A metric may carry labels (``reason``, ``protocol``, ``status``...); a sample is keyed by the
metric name and its sorted label pairs. Every label set listed in ``KNOWN_LABELS`` exists at 0
from the start, so the first scrape already has the series that alert rules take
``increase()`` of; values seen later (a new status code) add series as they come.

A histogram (``observe``) is kept as cumulative ``le`` buckets plus its sum under the empty
label set; its count is the ``+Inf`` bucket. Buckets are plain counters, so the supervisor of
``--workers`` merges them by summing like any counter.

Merging (``--workers``): `merge_samples` folds the workers' samples into one view, and
`MergedStats` is what the supervisor's ``/metrics`` reads. Counters, histogram buckets and
per-worker gauges are summed; gauges describing something the workers share (`MAX_GAUGES`:
the spool directory, the 0/1 ``backpressure_active``, ``blueflood_failing_seconds``) take the
maximum; ``uptime_seconds`` is the reader's own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Literal, Protocol

from ._codec_rules import DROP_REASONS

Kind = Literal["counter", "gauge", "histogram"]
Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels, float]

METRICS: dict[str, tuple[Kind, str]] = {
    # receiving
    "datapoints_received": ("counter", "Datapoints decoded from the wire, by protocol."),
    "datapoints_accepted": ("counter", "Datapoints accepted and queued for Blueflood."),
    "datapoints_dropped": (
        "counter",
        "Datapoints dropped by fastforward, by reason (one per frame, line or datagram where "
        "its datapoints are unknown).",
    ),
    "frames_received": (
        "counter",
        "Pickle frames received, by result (ok, bad, oversize, truncated).",
    ),
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
    "flush_latency_seconds": ("histogram", "Seconds per successful POST to Blueflood."),
    "auth_requests": ("counter", "Identity token requests, by result."),
    "blueflood_failing_seconds": (
        "gauge",
        "Seconds since Blueflood started failing (every POST since failed); 0 while it answers.",
    ),
    # buffering
    "buffered_bytes": ("gauge", "Bytes waiting to be sent, by place (memory, disk)."),
    "buffered_datapoints": ("gauge", "Datapoints waiting to be sent from memory."),
    "spool_files": ("gauge", "Files waiting in the disk spool."),
    # Per tenant (issue 13): new series beside the unlabelled totals, which stay the sums.
    "tenant_datapoints_sent": ("counter", "Datapoints Blueflood accepted, by tenant."),
    "tenant_datapoints_rejected": ("counter", "Datapoints Blueflood rejected, by tenant."),
    "tenant_datapoints_accepted": (
        "counter",
        "Datapoints accepted by the routing rules, by tenant (--rules; the default tenant's "
        "under --tenant).",
    ),
    "tenant_datapoints_dropped": (
        "counter",
        "Datapoints the routing dropped, by tenant and reason (rule, series_budget, "
        "bad_tags, empty_name); also counted in datapoints_dropped.",
    ),
    "rules_reloads": ("counter", "Reloads of --rules / --storage-schemas (SIGHUP), by result."),
    "rules_loaded": ("gauge", "Routing rules in use."),
    "route_cache_names": (
        "gauge",
        "Metric names whose routing decision the encoder remembers (--route-cache-names).",
    ),
    "route_cache_bytes": (
        "gauge",
        "Bytes the routing decision cache takes (not counted in --max-buffer-bytes).",
    ),
    "tenant_buffered_bytes": ("gauge", "Bytes waiting in memory, by tenant."),
    "tenant_buffered_datapoints": ("gauge", "Datapoints waiting in memory, by tenant."),
    "tenant_failing_seconds": (
        "gauge",
        "Seconds since POSTs of this tenant started failing; 0 while they succeed.",
    ),
    "spool_written_bodies": ("counter", "Bodies written to the disk spool."),
    "spool_replayed_bodies": ("counter", "Spooled bodies delivered to Blueflood."),
    "spool_corrupt_files": ("counter", "Spool files found corrupt and moved aside."),
    "backpressure_seconds": ("counter", "Seconds receivers spent paused by the buffer cap."),
    "backpressure_active": ("gauge", "1 while receivers are paused by the buffer cap."),
    "uptime_seconds": ("gauge", "Seconds since the process started."),
    "worker_restarts": ("counter", "Worker processes restarted by the supervisor, by worker."),
}


# Datapoints dropped by the receivers, counted one per frame, line or datagram (the datapoints
# inside are unknown), and by the spool; the codec's reasons come from `_codec_rules`.
RECEIVER_DROP_REASONS: dict[str, str] = {
    "oversize_frame": "pickle",
    "truncated_frame": "pickle",
    "line_too_long": "line",
    "truncated_line": "line",
    "udp_backpressure": "line",
}
SPOOL_DROP_REASONS = ("expired_in_spool",)
# What a stop could neither deliver nor spool (the process then exits 4).
STOP_DROP_REASONS = ("undelivered_at_stop",)
# Statuses and causes worth a series from the start: what Blueflood answers in normal life and
# in the failures the alert rules watch.
KNOWN_STATUSES = ("200", "202", "207", "400", "401", "403", "404", "413", "429", "500", "503")
RETRY_CAUSES = ("connection", "timeout", "auth", "401", "413", "429", "500", "502", "503", "504")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


REJECT_SOURCES = (
    # Blueflood's per-metric validation (207/400), then fastforward's own: a 400 it could not
    # bisect, a single datapoint still too large (413), an error without a source.
    *("metricName", "collectionTime", "ttlInSeconds", "metricValue"),
    *("bad_request", "too_large", "unknown"),
)


def _known_labels() -> dict[str, list[dict[str, str]]]:
    reasons = [*DROP_REASONS, *RECEIVER_DROP_REASONS, *SPOOL_DROP_REASONS, *STOP_DROP_REASONS]
    protocols = [{"protocol": p} for p in ("pickle", "line")]
    return {
        "datapoints_received": protocols,
        "datapoints_dropped": [{"reason": r} for r in reasons],
        "frames_received": [{"result": r} for r in ("ok", "bad", "oversize", "truncated")],
        "connections_accepted": protocols,
        "connections_refused": protocols,
        "connections_timed_out": protocols,
        "http_responses": [{"status": s} for s in KNOWN_STATUSES],
        "retries": [{"cause": c} for c in RETRY_CAUSES],
        "datapoints_rejected": [{"source": s} for s in REJECT_SOURCES],
        "buffered_bytes": [{"place": "memory"}],
    }


KNOWN_LABELS = _known_labels()
# Labelled by values only known at run time (or present only with --rules): no series until
# the first event.
ALWAYS_LABELLED = frozenset(
    {
        "auth_requests",
        "worker_restarts",
        "tenant_datapoints_sent",
        "tenant_datapoints_rejected",
        "tenant_datapoints_accepted",
        "tenant_datapoints_dropped",
        "rules_reloads",
        "rules_loaded",
        "route_cache_names",
        "route_cache_bytes",
        "tenant_buffered_bytes",
        "tenant_buffered_datapoints",
        "tenant_failing_seconds",
    }
)


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


_INF: Labels = (("le", "+Inf"),)
# Each bucket's bound and label set, built once: observe() runs once per POST.
_BUCKETS: tuple[tuple[float, Labels], ...] = tuple(
    (b, _key({"le": _le(b)})) for b in LATENCY_BUCKETS
)


class Stats:
    """Counters and gauges of one process. Not thread-safe: gevent runs one greenlet at a time."""

    def __init__(self) -> None:
        self._values: dict[str, dict[Labels, float]] = {name: {} for name in METRICS}
        for name, label_sets in KNOWN_LABELS.items():
            for labels in label_sets:
                self._values[name][_key(labels)] = 0
        for name, (kind, _help) in METRICS.items():
            if kind == "histogram":
                self._values[name] = {_key({"le": _le(b)}): 0 for b in (*LATENCY_BUCKETS, math.inf)}
                self._values[name][()] = 0.0
            elif name not in KNOWN_LABELS and name not in ALWAYS_LABELLED:
                self._values[name][()] = 0
        self._collectors: list[Callable[[Stats], None]] = []
        self.started = time.monotonic()

    def incr(self, name: str, n: float = 1, **labels: str) -> None:
        series = self._values[name]
        key = _key(labels)
        series[key] = series.get(key, 0) + n

    def set(self, name: str, value: float, **labels: str) -> None:
        self._values[name][_key(labels)] = value

    def forget(self, name: str, **labels: str) -> None:
        """Remove one series: a gauge of something that is gone (an idle tenant's lane)."""
        self._values[name].pop(_key(labels), None)

    def observe(self, name: str, value: float) -> None:
        """One observation of a histogram (fixed `LATENCY_BUCKETS`)."""
        series = self._values[name]
        for bound, key in _BUCKETS:
            if value <= bound:
                series[key] += 1
        series[_INF] += 1
        series[()] += value

    def get(self, name: str, **labels: str) -> float:
        """One sample; with no labels given, the sum over every label set of that metric."""
        self.refresh()
        series = self._values[name]
        if labels:
            return series.get(_key(labels), 0)
        return sum(series.values())

    def peek(self, name: str, **labels: str) -> float:
        """One sample as it is now, without running the collectors (for collectors)."""
        return self._values[name].get(_key(labels), 0)

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
            # A histogram keeps its buckets in ascending order (as created), the sum last.
            ordered = series.items() if METRICS[name][0] == "histogram" else sorted(series.items())
            for labels, value in ordered:
                yield name, labels, value


class SampleSource(Protocol):
    """Anything `/metrics` can read: one process's `Stats` or the supervisor's `MergedStats`."""

    def samples(self) -> Iterator[Sample]: ...


# ---- merging the samples of several processes (--workers) -----------------------------------

# Gauges that describe something the workers share: the maximum, not the sum.
MAX_GAUGES: frozenset[tuple[str, Labels]] = frozenset(
    {
        ("buffered_bytes", (("place", "disk"),)),
        ("spool_files", ()),
        ("backpressure_active", ()),
        ("blueflood_failing_seconds", ()),
        ("rules_loaded", ()),
    }
)


def merge_samples(
    snapshots: Iterable[Iterable[Sample]], retired: Mapping[tuple[str, Labels], float] | None = None
) -> list[Sample]:
    """Merge per-process samples: sums, except `MAX_GAUGES` (maximum) and ``uptime_seconds``
    (left out: the caller reports its own). ``retired`` holds counters of processes that
    exited and is added in. The result is ordered like `Stats.samples`: registration order,
    then labels. Unknown names (a newer worker's) are skipped."""
    out: dict[tuple[str, Labels], float] = dict(retired or {})
    for snapshot in snapshots:
        for name, labels, value in snapshot:
            if name not in METRICS or name == "uptime_seconds":
                continue
            key = (name, tuple(labels))
            if key in MAX_GAUGES:
                out[key] = max(out.get(key, value), value)
            else:
                out[key] = out.get(key, 0) + value
    order = {name: i for i, name in enumerate(METRICS)}
    return [
        (name, labels, value)
        for (name, labels), value in sorted(out.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    ]


def retire(samples: Iterable[Sample], retired: MutableMapping[tuple[str, Labels], float]) -> None:
    """Add the counters (and histogram buckets) of a process that exited to ``retired``, so
    merged sums never go backwards; its gauges go with it."""
    for name, labels, value in samples:
        if name in METRICS and METRICS[name][0] in ("counter", "histogram"):
            key = (name, labels)
            retired[key] = retired.get(key, 0) + value


class MergedStats:
    """The merged view of several processes' samples, plus this process's uptime and its own
    series (``extra``: the supervisor's ``worker_restarts``)."""

    def __init__(
        self,
        snapshots: Callable[[], Iterable[Iterable[Sample]]],
        retired: Mapping[tuple[str, Labels], float],
        extra: Callable[[], Iterable[Sample]] = tuple,
    ) -> None:
        self._snapshots = snapshots
        self._retired = retired
        self._extra = extra
        self.started = time.monotonic()

    def samples(self) -> Iterator[Sample]:
        yield from merge_samples(self._snapshots(), self._retired)
        yield ("uptime_seconds", (), round(time.monotonic() - self.started, 3))
        yield from self._extra()

    def get(self, name: str, **labels: str) -> float:
        """One merged sample; with no labels given, the sum over every label set."""
        want = _key(labels)
        return sum(v for n, ls, v in self.samples() if n == name and (not labels or ls == want))
