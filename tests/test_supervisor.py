"""The supervisor's parts that run without processes: merging the workers' stats, /health,
restart backoff, the worker spec, ``--workers auto``, exit statuses. The processes themselves:
tests/integration/test_workers.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import gevent
import pytest

from fastforward.admin import metrics_text
from fastforward.config import load
from fastforward.stats import Labels, MergedStats, Sample, merge_samples
from fastforward.workers import WORKER_ENV, WorkerSpec, resolve_workers, worker_spec
from fastforward.workers import supervisor as sup
from fastforward.workers.channel import STOP, Report, encode_report

W1 = [
    ("datapoints_received", (), 100.0),
    ("datapoints_dropped", (("reason", "nan"),), 2.0),
    ("connections_open", (), 3.0),
    ("buffered_bytes", (("place", "memory"),), 1000.0),
    ("buffered_bytes", (("place", "disk"),), 5000.0),
    ("spool_files", (), 4.0),
    ("backpressure_active", (), 0.0),
    ("uptime_seconds", (), 12.0),
]
W2 = [
    ("datapoints_received", (), 50.0),
    ("datapoints_dropped", (("reason", "nan"),), 1.0),
    ("datapoints_dropped", (("reason", "inf"),), 7.0),
    ("connections_open", (), 1.0),
    ("buffered_bytes", (("place", "memory"),), 500.0),
    ("buffered_bytes", (("place", "disk"),), 6000.0),  # same spool dir, seen a moment later
    ("spool_files", (), 5.0),
    ("backpressure_active", (), 1.0),
    ("uptime_seconds", (), 3.0),
]


def as_dict(samples: list[Sample]) -> dict[tuple[str, Labels], float]:
    return {(n, ls): v for n, ls, v in samples}


def test_counters_and_per_worker_gauges_are_summed_shared_gauges_take_the_max() -> None:
    merged = as_dict(merge_samples([W1, W2]))
    assert merged[("datapoints_received", ())] == 150
    assert merged[("datapoints_dropped", (("reason", "nan"),))] == 3
    assert merged[("datapoints_dropped", (("reason", "inf"),))] == 7  # one worker only
    assert merged[("connections_open", ())] == 4
    assert merged[("buffered_bytes", (("place", "memory"),))] == 1500
    # The spool directory is shared: summing would count its files twice.
    assert merged[("buffered_bytes", (("place", "disk"),))] == 6000
    assert merged[("spool_files", ())] == 5
    assert merged[("backpressure_active", ())] == 1
    assert ("uptime_seconds", ()) not in merged  # the supervisor reports its own


def test_retired_counters_are_added_and_order_follows_registration() -> None:
    retired = {("datapoints_received", ()): 1000.0, ("bodies_sent", ()): 9.0}
    merged = merge_samples([W1], retired)
    d = as_dict(merged)
    assert d[("datapoints_received", ())] == 1100
    assert d[("bodies_sent", ())] == 9
    names = [n for n, _ls, _v in merged]
    assert names.index("datapoints_received") < names.index("bodies_sent")
    assert names.index("bodies_sent") < names.index("spool_files")


def test_unknown_names_are_skipped_and_nothing_merges_to_nothing() -> None:
    assert merge_samples([[("from_a_newer_worker", (), 1.0)]]) == []
    assert merge_samples([]) == []


def test_restart_delay_doubles_and_is_capped() -> None:
    assert [sup.restart_delay(k) for k in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert sup.restart_delay(100) == sup.BACKOFF_MAX
    assert sup.restart_delay(0) == sup.BACKOFF_FIRST


def test_workers_auto_is_the_usable_cores() -> None:
    assert resolve_workers("3") == 3
    assert resolve_workers("auto") == len(os.sched_getaffinity(0))


def test_worker_spec_is_taken_out_of_the_environment() -> None:
    env = {WORKER_ENV: json.dumps({"id": 2, "channel": 7, "sockets": {"tcp:2004": 5}})}
    spec = worker_spec(env)
    assert spec == WorkerSpec(id=2, channel=7, sockets={"tcp:2004": 5})
    assert WORKER_ENV not in env  # not inherited by anything the worker runs
    assert worker_spec({}) is None
    with pytest.raises(ValueError):
        worker_spec({WORKER_ENV: "[1, 2]"})
    with pytest.raises(ValueError):
        worker_spec({WORKER_ENV: "{not json"})
    with pytest.raises(ValueError):
        worker_spec({WORKER_ENV: json.dumps({"sockets": {}})})  # no id


def test_the_spec_a_supervisor_writes_is_the_spec_a_worker_reads() -> None:
    spec = WorkerSpec(id=1, channel=9, sockets={"tcp:2004": 5, "udp:2003": 6}, loads=8, count=2)
    assert worker_spec({WORKER_ENV: spec.to_env()}) == spec


class FakeProc:
    def __init__(self, code: int = 0) -> None:
        self.pid = 4242
        self.code = code
        self.signals: list[int] = []

    def wait(self) -> int:
        return self.code

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)


def two_workers() -> sup.Supervisor:
    config = load(["-t", "t", "--workers", "2"]).config
    s = sup.Supervisor(config, ["-t", "t", "--workers", "2"], 2)
    for slot, samples in zip(s.slots, (W1, W2), strict=True):
        slot.proc = FakeProc()
        slot.started = True
        slot.health = (True, "ok")
        slot.samples = list(samples)
        slot.reported_at = time.monotonic()
    return s


def test_metrics_text_shows_the_sums() -> None:
    s = two_workers()
    text = metrics_text(s.merged_stats()).decode()
    assert "fastforward_datapoints_received_total 150.0" in text
    assert 'fastforward_buffered_bytes{place="disk"} 6000.0' in text
    assert "fastforward_uptime_seconds " in text
    assert s.merged_stats().get("datapoints_dropped") == 10
    assert s.merged_stats().get("datapoints_dropped", reason="nan") == 3
    assert 'fastforward_worker_restarts_total{worker="2"} 0.0' in text


def test_health_needs_every_worker_running_reporting_and_healthy() -> None:
    s = two_workers()
    assert s.health() == (True, "ok")
    s.slots[1].health = (False, "Blueflood failing for 40s")
    assert s.health() == (False, "worker 2: Blueflood failing for 40s")
    s.slots[1].health = (True, "ok")
    s.slots[0].reported_at -= sup.STALE_SECONDS + 1
    ok, reason = s.health()
    assert not ok and reason.startswith("worker 1: silent for")
    s.slots[0].reported_at += sup.STALE_SECONDS + 1
    s.slots[0].exit_code = -9
    assert s.health() == (False, "worker 1: not running")
    s.stopping.set()
    assert s.health() == (False, "stopping")


def test_an_exited_workers_counters_stay_in_the_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    s = two_workers()
    s.stopping.set()  # no restart in this test
    slot = s.slots[0]
    slot.proc = FakeProc(-9)
    s._watch(slot, slot.proc)
    assert slot.exit_code == -9
    merged = s.merged_stats()
    assert merged.get("datapoints_received") == 150  # worker 1's 100 kept
    assert merged.get("connections_open") == 1  # its gauges are gone with it
    assert merged.get("spool_files") == 5


def test_a_dead_worker_is_restarted_after_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    s = two_workers()
    s._initial = False
    spawned: list[Any] = []
    monkeypatch.setattr(sup, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(s, "_spawn", spawned.append)
    slot = s.slots[1]
    slot.started_at = time.monotonic()
    slot.proc = FakeProc(1)
    gevent.spawn(s._watch, slot, slot.proc).join(timeout=5)
    assert spawned == [slot]
    assert slot.restarts == 1 and slot.quick_deaths == 1


def test_histogram_buckets_merge_by_summing() -> None:
    a = [("flush_latency_seconds", (("le", "0.1"),), 2.0), ("flush_latency_seconds", (), 0.1)]
    b = [("flush_latency_seconds", (("le", "0.1"),), 3.0), ("flush_latency_seconds", (), 0.2)]
    merged = as_dict(merge_samples([a, b]))
    assert merged[("flush_latency_seconds", (("le", "0.1"),))] == 5
    assert merged[("flush_latency_seconds", ())] == pytest.approx(0.3)


def test_blueflood_failing_seconds_is_the_longest_failure_not_the_sum() -> None:
    merged = as_dict(
        merge_samples(
            [[("blueflood_failing_seconds", (), 40.0)], [("blueflood_failing_seconds", (), 12.0)]]
        )
    )
    assert merged[("blueflood_failing_seconds", ())] == 40


def test_merged_view_adds_retired_counters_own_uptime_and_extra_series() -> None:
    view = MergedStats(
        lambda: [W1, W2],
        {("datapoints_received", ()): 5.0},
        lambda: [("worker_restarts", (("worker", "1"),), 2)],
    )
    names = [n for n, _ls, _v in view.samples()]
    assert names.count("uptime_seconds") == 1  # its own, not the workers' 12 and 3
    assert view.get("uptime_seconds") < 12
    assert view.get("datapoints_received") == 155
    assert view.get("worker_restarts", worker="1") == 2


def test_the_final_report_of_an_exiting_worker_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker reports its counters once more after its drain, then exits: the report may
    # still be in the channel when its exit is seen; it must be read before the counters are
    # retired, or the last interval's datapoints vanish from /metrics.
    s = two_workers()
    s.stopping.set()
    slot = s.slots[0]
    mine, theirs = socket.socketpair()
    slot.channel = mine
    slot.proc = proc = FakeProc(0)
    final = Report(True, (True, "ok"), [("datapoints_received", (), 130.0)])
    theirs.sendall(encode_report(final))
    slot.reader = gevent.spawn(s._read, slot, proc, mine)
    gevent.spawn_later(0.2, theirs.close)  # the exit, a moment after the report
    s._watch(slot, proc)
    assert s.merged_stats().get("datapoints_received") == 130 + 50


def test_stop_asks_through_the_channel_and_signals_when_it_is_gone() -> None:
    s = two_workers()
    with_channel, without = s.slots
    mine, theirs = socket.socketpair()
    with_channel.channel = mine
    s._ask_to_stop(with_channel)
    assert theirs.recv(100) == STOP
    assert with_channel.proc.signals == []  # type: ignore[union-attr]
    s._ask_to_stop(without)
    assert without.proc.signals == [signal.SIGTERM]  # type: ignore[union-attr]
    mine.close()
    theirs.close()


def test_exit_status_after_a_stop() -> None:
    assert sup.stop_status([0, 0]) == 0
    assert sup.stop_status([0, -9]) == 1  # a worker that did not drain
    assert sup.stop_status([1, 4]) == 4  # lost data outweighs an error
    assert sup.stop_status([0, None]) == 1  # one never ran


def test_sighup_reaches_a_starting_worker_only_once_it_can_take_it() -> None:
    # Before a worker has installed its handlers, SIGHUP's default action would kill it.
    s = two_workers()
    serving, starting = s.slots
    starting.started = False
    s._signals().hangup()
    assert serving.proc.signals == [signal.SIGHUP]  # type: ignore[union-attr]
    assert starting.proc.signals == []  # type: ignore[union-attr]
    mine, theirs = socket.socketpair()
    theirs.sendall(encode_report(Report(True, (True, "ok"))))
    theirs.close()
    s._read(starting, starting.proc, mine)  # type: ignore[arg-type]
    mine.close()
    assert starting.started
    assert starting.proc.signals == [signal.SIGHUP]  # type: ignore[union-attr]


def test_the_workers_package_imports_no_gevent_before_the_patch() -> None:
    # cli reads --workers and the worker spec before gevent patches the standard library.
    code = (
        "import sys, fastforward.cli, fastforward.workers; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'ssl', 'requests')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
