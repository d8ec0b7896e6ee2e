"""`Stats`: the numbers /metrics, the periodic log line and the self-metrics all read."""

from __future__ import annotations

import pytest

from fastforward.codec import DROP_REASONS
from fastforward.stats import (
    ALWAYS_LABELLED,
    KNOWN_STATUSES,
    LATENCY_BUCKETS,
    METRICS,
    RECEIVER_DROP_REASONS,
    Stats,
)


def series(stats: Stats, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for n, labels, value in stats.samples() if n == name}


def test_every_known_series_exists_at_zero_before_anything_happened() -> None:
    # Alert rules take increase() of these: the first scrape must already have them.
    stats = Stats()
    dropped = series(stats, "datapoints_dropped")
    for reason in (*DROP_REASONS, *RECEIVER_DROP_REASONS):
        assert dropped[(("reason", reason),)] == 0, reason
    statuses = series(stats, "http_responses")
    assert {labels[0][1] for labels in statuses} == set(KNOWN_STATUSES)
    assert series(stats, "datapoints_sent") == {(): 0}


def test_run_time_labelled_metrics_appear_with_their_first_event() -> None:
    stats = Stats()
    assert series(stats, "auth_requests") == {}
    stats.incr("auth_requests", result="ok")
    assert series(stats, "auth_requests") == {(("result", "ok"),): 1}


def test_counters_add_per_label_set_and_sum_without_labels() -> None:
    stats = Stats()
    stats.incr("datapoints_dropped", 3, reason="bad_line")
    stats.incr("datapoints_dropped", reason="bad_line")
    stats.incr("datapoints_dropped", 2, reason="nan")
    assert stats.get("datapoints_dropped", reason="bad_line") == 4
    assert stats.get("datapoints_dropped", reason="nan") == 2
    assert stats.get("datapoints_dropped") == 6
    assert stats.get("datapoints_dropped", reason="never-seen") == 0


def test_labels_are_one_series_whatever_their_order() -> None:
    stats = Stats()
    stats.incr("buffered_bytes", 5, place="disk")
    stats.set("buffered_bytes", 7, place="disk")
    assert series(stats, "buffered_bytes")[(("place", "disk"),)] == 7


def test_a_gauge_is_set_not_added() -> None:
    stats = Stats()
    stats.set("connections_open", 5)
    stats.set("connections_open", 2)
    assert stats.get("connections_open") == 2


def test_an_unregistered_name_is_an_error_not_a_new_series() -> None:
    stats = Stats()
    with pytest.raises(KeyError):
        stats.incr("datapoint_sent")  # misspelt


def test_histogram_buckets_are_cumulative_with_count_and_sum() -> None:
    stats = Stats()
    for seconds in (0.003, 0.03, 0.03, 45.0):
        stats.observe("flush_latency_seconds", seconds)
    got = series(stats, "flush_latency_seconds")
    buckets = {labels[0][1]: v for labels, v in got.items() if labels}
    assert buckets["0.005"] == 1
    assert buckets["0.025"] == 1
    assert buckets["0.05"] == 3
    assert buckets["30.0"] == 3  # 45 s is beyond the last bound
    assert buckets["+Inf"] == 4  # the count
    assert got[()] == pytest.approx(45.063)  # the sum
    # Exposition order: ascending bounds, +Inf last, then the sum.
    order = [labels for n, labels, _v in stats.samples() if n == "flush_latency_seconds"]
    assert order == [(("le", repr(b)),) for b in LATENCY_BUCKETS] + [(("le", "+Inf"),), ()]


def test_collectors_refresh_before_every_read_but_not_a_peek() -> None:
    stats = Stats()
    calls: list[int] = []

    def collect(s: Stats) -> None:
        calls.append(1)
        s.set("buffered_datapoints", len(calls) * 10)

    stats.add_collector(collect)
    assert stats.peek("buffered_datapoints") == 0
    assert calls == []
    assert stats.get("buffered_datapoints") == 10
    assert series(stats, "buffered_datapoints") == {(): 20}
    assert stats.peek("buffered_datapoints") == 20  # unchanged by the peek itself


def test_samples_follow_registration_order_and_uptime_moves() -> None:
    stats = Stats()
    stats.started -= 5.0
    names = list(dict.fromkeys(n for n, _labels, _v in stats.samples()))
    # Labelled by values known only at run time (a user, a worker, a tenant): no series before
    # their first event.
    assert {"auth_requests", "worker_restarts"} <= ALWAYS_LABELLED
    assert names == [n for n in METRICS if n not in ALWAYS_LABELLED]
    assert stats.get("uptime_seconds") >= 5.0
