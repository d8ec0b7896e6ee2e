"""Forwarder against the fake Blueflood: delivery, retries, splitting, backpressure, stop, spool."""

from __future__ import annotations

import gc
import json
import logging
import time
import weakref
from types import SimpleNamespace

import gevent
import pytest

from fastforward.auth import TokenProvider
from fastforward.blueflood import BluefloodClient
from fastforward.flushing import BURST_QUIET
from fastforward.forwarder import Forwarder
from fastforward.outbox import split_body
from fastforward.stats import Stats
from fastforward.target import reminder_seconds
from tests.fake_blueflood import FakeBlueflood, FakeIdentity, Scripted
from tests.support import wait_until


class FakeEncoder:
    """Stands in for codec.Encoder: bodies in the codec's exact format, ``per_body`` each."""

    def __init__(self, per_body: int = 100) -> None:
        self.per_body = per_body
        self.full: list[bytes] = []
        self.items: list[bytes] = []
        self.seq = 0

    def add(self, n: int, ct: int | None = None, raw_value: str | None = None) -> None:
        now = int(time.time() * 1000) if ct is None else ct
        for _ in range(n):
            value = raw_value if raw_value is not None else str(self.seq)
            self.items.append(
                b'{"collectionTime":%d,"ttlInSeconds":86400,"metricValue":%s,"metricName":"m.%d"}'
                % (now, value.encode(), self.seq)
            )
            self.seq += 1
            if len(self.items) == self.per_body:
                self.full.append(self._close())

    def _close(self) -> bytes:
        body = b"[" + b",".join(self.items) + b"]"
        self.items = []
        return body

    @property
    def ready_bodies(self) -> int:
        return len(self.full)

    @property
    def pending_bytes(self) -> int:
        return sum(map(len, self.full)) + sum(len(i) + 1 for i in self.items)

    @property
    def held_bytes(self) -> int:
        return self.pending_bytes  # its lists hold no spare capacity worth counting

    @property
    def pending_datapoints(self) -> int:
        return len(self.full) * self.per_body + len(self.items)

    def take_counted(self, partial: bool = True) -> list[tuple[bytes, int]]:
        bodies, self.full = self.full, []
        if partial and self.items:
            bodies.append(self._close())
        return [(b, b.count(b'{"collectionTime"')) for b in bodies]


class MemorySpool:
    """The spool API (put/oldest/ack/release/disk_bytes/files/full) in memory."""

    def __init__(self, max_bytes: int = 10**9) -> None:
        self.entries: list[SimpleNamespace] = []
        self.max_bytes = max_bytes
        self.acked = 0

    def put(self, body: bytes, datapoints: int, tenant: str | None = None) -> bool:
        if self.disk_bytes + len(body) > self.max_bytes:
            return False
        entry = SimpleNamespace(body=body, datapoints=datapoints, tenant=tenant, claimed=False)
        self.entries.append(entry)
        return True

    def oldest(self):
        for e in self.entries:
            if not e.claimed:
                e.claimed = True
                return e
        return None

    def ack(self, entry) -> None:
        self.entries.remove(entry)
        self.acked += 1

    def release(self, entry) -> None:
        entry.claimed = False

    @property
    def disk_bytes(self) -> int:
        return sum(len(e.body) for e in self.entries)

    @property
    def files(self) -> int:
        return len(self.entries)

    @property
    def full(self) -> bool:
        return False


def config(**kw) -> SimpleNamespace:
    base = {
        "interval": 0.2,
        "concurrency": 2,
        "max_buffer_bytes": 10_000_000,
        "body_bytes": 1_000_000,
    }
    base.update(kw)
    return SimpleNamespace(**base)


def count_hand_overs(fwd: Forwarder) -> list[int]:
    """Count the flusher's hand-overs to the outbox (interval, burst end, kick), so that a test
    can wait for several flushes to have passed instead of sleeping through them."""
    count = [0]
    inner = fwd.flusher.moved

    def moved() -> None:
        count[0] += 1
        inner()

    fwd.flusher.moved = moved
    return count


def settled(fwd: Forwarder) -> bool:
    """Nothing queued, in flight or held: no body is left that could be sent (again)."""
    return fwd.outbox.idle.is_set() and fwd.outbox.datapoints == 0


def answer_while_down(bf: FakeBlueflood, status: int) -> list[bool]:
    """Make the fake answer ``status`` to everything until ``down[0] = False``."""
    inner = bf._respond
    down = [True]

    def respond(environ, req):
        return (status, b"", {}) if down[0] else inner(environ, req)

    bf._respond = respond
    return down


@pytest.fixture
def bf():
    with FakeBlueflood() as server:
        yield server


def make(bf, encoder=None, spool=None, token_provider=None, **kw):
    stats = Stats()
    encoder = encoder or FakeEncoder()
    cfg = config(**kw)
    client = BluefloodClient(
        bf.url, "t1", stats, timeout=5, pool_size=cfg.concurrency, token_provider=token_provider
    )
    fwd = Forwarder(cfg, encoder, stats, client, spool=spool)
    fwd.backoff_base = 0.05  # fast retries in tests
    fwd.start()
    return fwd, encoder, stats


@pytest.fixture
def stopper():
    started = []
    yield started
    for fwd in started:
        if not fwd.stopping:
            fwd.stop(timeout=1)
        fwd.client.close()


# ---- body helpers -------------------------------------------------------------------------------


def test_split_body_keeps_braces_inside_names_intact():
    items = [{"metricName": n, "metricValue": 1} for n in ["a},{b", 'q"}', "c", "d{", "e"]]
    body = json.dumps(items, separators=(",", ":")).encode()
    (left, n_left), (right, n_right) = split_body(body)
    assert json.loads(left) + json.loads(right) == items
    assert (n_left, n_right) == (2, 3)
    assert split_body(b'[{"a":1}]') is None


# ---- delivery -----------------------------------------------------------------------------------


def test_exactly_once_when_nothing_fails_with_slow_posts(bf, stopper):
    # POSTs take longer than the flush interval: the original resent its buffer here.
    bf.delay = 0.1
    fwd, enc, stats = make(bf, interval=0.02, concurrency=3)
    stopper.append(fwd)
    hand_overs = count_hand_overs(fwd)
    for _ in range(20):
        enc.add(100)
        fwd.kick()
        gevent.sleep(0.01)  # the input's pace: bodies arrive while earlier POSTs are slow
    enc.add(37)  # a partial body, flushed by the interval
    wait_until(lambda: bf.stored == 2037)
    # Ten more flushes with every answer read and nothing left: nothing may be sent again.
    after = hand_overs[0] + 10
    wait_until(lambda: hand_overs[0] >= after and settled(fwd), what="ten more flushes")
    assert bf.received == 2037 and bf.duplicates == 0
    assert stats.get("datapoints_sent") == 2037
    assert stats.get("bodies_sent") == len(bf.ingests())
    assert bf.max_in_flight <= 3


def test_a_delivered_body_is_let_go_while_the_senders_wait_for_the_next(bf, stopper):
    # done() takes a body out of --max-buffer-bytes; an idle sender that still held it would
    # keep memory no count sees (one body per sender: 4 MB over the cap with the defaults).
    fwd, enc, stats = make(bf, concurrency=3)
    stopper.append(fwd)
    batches: list[weakref.ref] = []
    put = fwd.outbox.put

    def recording_put(batch, front=False):
        batches.append(weakref.ref(batch))
        return put(batch, front=front)

    fwd.outbox.put = recording_put
    for _ in range(6):
        enc.add(100)
        fwd.kick()
    wait_until(lambda: bf.stored == 600 and settled(fwd), what="six bodies delivered")
    gc.collect()
    held = [ref() for ref in batches if ref() is not None]
    assert len(batches) >= 6 and held == []


def test_interval_flushes_a_partial_body(bf, stopper):
    fwd, enc, _ = make(bf, interval=0.1)
    stopper.append(fwd)
    enc.add(5)
    wait_until(lambda: bf.stored == 5, timeout=5)


def test_end_of_a_burst_sends_the_partial_body_without_waiting_for_the_interval(bf, stopper):
    fwd, enc, _ = make(bf, interval=60)
    stopper.append(fwd)
    enc.add(250)  # two full bodies and a partial one of 50
    fwd.kick()
    wait_until(lambda: bf.stored == 250, timeout=5)  # not 60 s: the burst ended
    assert sorted(len(json.loads(r.body)) for r in bf.ingests()) == [50, 100, 100]


def test_slow_input_waits_for_the_interval(bf, stopper):
    # Input that never fills a body keeps one request per interval, as the original did.
    fwd, enc, _ = make(bf, interval=60)
    stopper.append(fwd)
    for _ in range(5):
        enc.add(3)
        # The input's pace, slower than the burst-end quiet time; no body is ever full, so
        # nothing kicks the flusher and only the interval (60 s) may send.
        gevent.sleep(2 * BURST_QUIET)
    assert bf.stored == 0 and enc.pending_datapoints == 15


def test_5xx_and_dropped_connections_are_retried_without_new_traffic(bf, stopper):
    bf.push(503, Scripted(close=True), 500)
    fwd, enc, stats = make(bf)
    stopper.append(fwd)
    enc.add(100)
    fwd.kick()
    wait_until(lambda: bf.stored == 100)
    assert bf.received == 100
    assert stats.get("retries") == 3
    assert stats.get("retries", cause="503") == 1
    assert stats.get("retries", cause="connection") == 1


def test_207_logs_rejected_metrics_and_is_not_retried(bf, stopper, caplog):
    fwd, enc, stats = make(bf)
    stopper.append(fwd)
    enc.add(3)
    enc.add(1, ct=1000)  # out of Blueflood's window
    fwd.kick()
    fwd.flusher.move(partial=True)
    wait_until(lambda: stats.get("datapoints_rejected") == 1)
    wait_until(lambda: settled(fwd), what="the body finished with, not queued for a retry")
    assert len(bf.ingests()) == 1 and bf.stored == 3
    assert stats.get("datapoints_rejected", source="collectionTime") == 1
    assert stats.get("datapoints_sent") == 3
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "m.3" in r.message]
    assert warned and "1000" in warned[0].message and "collectionTime" in warned[0].message


def test_400_per_metric_errors_drop_the_body(bf, stopper):
    fwd, enc, stats = make(bf)
    stopper.append(fwd)
    enc.add(4, ct=1000)
    fwd.flusher.move(partial=True)
    wait_until(lambda: stats.get("datapoints_rejected") == 4)
    wait_until(lambda: settled(fwd), what="the body finished with, not queued for a retry")
    assert len(bf.ingests()) == 1 and bf.stored == 0


def test_cannot_parse_content_is_bisected_to_the_bad_datapoint(bf, stopper, caplog):
    enc = FakeEncoder(per_body=8)
    fwd, enc, stats = make(bf, encoder=enc)
    stopper.append(fwd)
    enc.add(5)
    enc.add(1, raw_value="NaN")  # a codec bug: not legal JSON, the whole body is refused
    enc.add(2)
    fwd.kick()
    wait_until(lambda: stats.get("datapoints_rejected", source="bad_request") == 1)
    wait_until(lambda: bf.stored == 7)
    assert "m.5" not in {name for _, name in bf.store}
    assert any(r.levelno == logging.ERROR and "BUG" in r.message for r in caplog.records)


def test_413_splits_until_the_halves_fit(bf, stopper):
    bf.max_content_length = 3000  # a 100-datapoint body is about 9000 bytes
    fwd, enc, stats = make(bf)
    stopper.append(fwd)
    enc.add(100)
    fwd.kick()
    wait_until(lambda: bf.stored == 100)
    assert bf.received == 100
    assert any(r.status == 413 for r in bf.requests)
    wait_until(lambda: stats.get("datapoints_sent") == 100)  # counted once the answer is read


def test_retry_after_is_obeyed(bf, stopper):
    bf.push(Scripted(429, headers={"Retry-After": "1"}))
    fwd, enc, _ = make(bf)
    stopper.append(fwd)
    enc.add(100)
    started = time.monotonic()
    fwd.kick()
    wait_until(lambda: bf.stored == 100)
    assert time.monotonic() - started >= 0.9


def test_401_replays_the_same_bytes_after_reauthentication(stopper):
    with FakeIdentity() as ident, FakeBlueflood(identity=ident) as bf:
        tokens = TokenProvider(ident.tokens_url, "alice", key="k3y", stats=Stats(), timeout=5)
        fwd, enc, stats = make(bf, token_provider=tokens)
        stopper.append(fwd)
        enc.add(100)
        fwd.kick()
        wait_until(lambda: bf.stored == 100)
        ident.revoke()
        enc.add(100)
        fwd.kick()
        wait_until(lambda: bf.stored == 200)
        refused = [r for r in bf.ingests() if r.status == 401]
        replay = bf.ingests()[-1]
        assert len(refused) == 1 and replay.status == 200
        assert replay.raw == refused[0].raw
        assert replay.headers["X-Auth-Token"] != refused[0].headers["X-Auth-Token"]
        assert ident.issued == 2 and bf.received == 200
        fwd.stop(timeout=1)


def test_identity_outage_then_recovery_loses_nothing(stopper):
    with FakeIdentity() as ident, FakeBlueflood(identity=ident) as bf:
        ident.failing = 503
        tokens = TokenProvider(ident.tokens_url, "alice", key="k3y", stats=Stats(), timeout=5)
        fwd, enc, stats = make(bf, token_provider=tokens)
        stopper.append(fwd)
        enc.add(100)
        fwd.kick()
        wait_until(lambda: stats.get("retries", cause="auth") >= 1)
        ident.failing = None
        wait_until(lambda: bf.stored == 100, timeout=15)
        fwd.stop(timeout=1)


# ---- memory cap and backpressure ----------------------------------------------------------------


def test_backpressure_gate_with_a_slow_blueflood(bf, stopper, caplog):
    caplog.set_level(logging.WARNING)
    bf.delay = 0.1
    body_bytes = 9000  # about 100 datapoints
    cap = 4 * body_bytes
    fwd, enc, stats = make(bf, max_buffer_bytes=cap, concurrency=1)
    stopper.append(fwd)
    peak = 0
    sent = 0
    with gevent.Timeout(20):
        while sent < 2000:
            fwd.gate.wait()  # what a receiver does before reading
            enc.add(100)
            sent += 100
            fwd.kick()
            peak = max(peak, fwd.outbox.memory_bytes)
        wait_until(lambda: bf.stored == 2000, timeout=20)
    assert bf.duplicates == 0
    assert peak <= cap + 10_000  # at most one body over the cap
    assert fwd.gate.is_set()
    starts = [r for r in caplog.records if "pausing receivers" in r.message]
    ends = [r for r in caplog.records if "receivers resumed" in r.message]
    assert starts and len(starts) == len(ends)
    assert stats.get("backpressure_seconds") > 0 and stats.get("backpressure_active") == 0


# ---- stop ---------------------------------------------------------------------------------------


def test_stop_sends_the_partial_body(bf):
    fwd, enc, _ = make(bf, interval=60)
    enc.add(250)
    with gevent.Timeout(10):
        assert fwd.stop(timeout=5) == 0
    assert bf.stored == 250
    fwd.client.close()


def test_stop_with_blueflood_down_reports_or_spools_the_rest():
    with FakeBlueflood() as bf:
        url_bf = SimpleNamespace(url=bf.url)
    fwd, enc, _ = make(url_bf, interval=60)  # nothing listens on that port any more
    enc.add(150)
    with gevent.Timeout(10):
        assert fwd.stop(timeout=0.5) == 150
    fwd.client.close()
    spool = MemorySpool()
    fwd, enc, _ = make(url_bf, interval=60, spool=spool)
    enc.add(150)
    with gevent.Timeout(10):
        assert fwd.stop(timeout=0.5) == 0
    assert sum(e.datapoints for e in spool.entries) == 150
    fwd.client.close()


def test_spool_takes_the_overflow_while_failing_then_replays(bf, stopper):
    spool = MemorySpool()
    bf.push(*[503] * 3)
    fwd, enc, stats = make(bf, spool=spool, max_buffer_bytes=30_000, concurrency=1)
    stopper.append(fwd)
    fwd.backoff_base = 0.2
    with gevent.Timeout(10):
        for _ in range(10):
            enc.add(100)
            fwd.kick()
            assert fwd.gate.is_set()  # the spool absorbs it: receivers keep reading
            gevent.sleep(0.01)  # the input's pace while Blueflood fails
    assert spool.entries  # some bodies went to disk
    wait_until(lambda: bf.stored == 1000, timeout=20)
    wait_until(lambda: not spool.entries)
    assert spool.acked >= 1 and bf.duplicates == 0


def test_healthy(bf):
    fwd, _, _ = make(bf)
    assert fwd.healthy() == (True, "ok")
    fwd.stop(timeout=1)
    assert fwd.healthy()[0] is False
    fwd.client.close()


# ---- poison data and the spool under pressure ---------------------------------------------------


def _poison(bf, name: bytes):
    """Make the fake answer 500 for every body holding metric ``name``; returns the counter."""
    inner = bf._respond
    hits = []

    def respond(environ, req):
        if b'"metricName":"%s"' % name in req.raw:
            hits.append(req.raw)
            return 500, b'{"errors":[{"message":"Failed parsing content"}]}', {}
        return inner(environ, req)

    bf._respond = respond
    return hits


@pytest.mark.parametrize("with_spool", [False, True])
def test_a_poison_datapoint_is_parked_and_never_blocks_the_senders(bf, stopper, caplog, with_spool):
    hits = _poison(bf, b"m.7")
    spool = MemorySpool() if with_spool else None
    fwd, enc, stats = make(bf, spool=spool, concurrency=1)
    fwd.park_retry = 0.3
    stopper.append(fwd)
    enc.add(100)  # m.7 is in the first body, so bisection is needed to isolate it
    fwd.kick()
    for _ in range(5):
        gevent.sleep(0.05)  # the input's pace: more bodies while the poison one is bisected
        enc.add(100)
        fwd.kick()
    wait_until(lambda: bf.stored == 599, timeout=20)  # one sender, yet everything else arrives
    assert bf.points("t1", "m.7") == {}
    assert "retrying it every" in caplog.text
    # Still retried: more attempts at the parked datapoint keep coming, forever.
    n = len(hits)
    wait_until(lambda: len(hits) > n + 1, timeout=10)
    if with_spool:  # parked on disk, not in memory (replayed now and then)
        wait_until(lambda: [e.datapoints for e in spool.entries] == [1], timeout=10)
    else:
        assert fwd.outbox.datapoints == 1  # parked in memory, counted in the cap
    # Blueflood fixes itself: the parked datapoint goes through.
    bf._respond = FakeBlueflood._respond.__get__(bf)
    wait_until(lambda: bf.stored == 600, timeout=10)
    # stored before the answer is read: the sender releases the batch right after
    wait_until(lambda: fwd.outbox.datapoints == 0, timeout=10)


def test_500s_during_an_outage_are_not_bisected(bf, stopper):
    """Blueflood answers 500 to everything: an outage, not poison. Bodies stay whole."""
    down = answer_while_down(bf, 500)
    fwd, enc, stats = make(bf, concurrency=1)
    fwd.backoff_cap = 0.1
    stopper.append(fwd)
    enc.add(100)
    fwd.kick()
    wait_until(lambda: stats.get("retries") >= 8, timeout=20)
    down[0] = False
    wait_until(lambda: bf.stored == 100, timeout=20)
    assert len([r for r in bf.ingests() if r.status == 200]) == 1


def test_failing_bodies_in_flight_go_to_the_spool_when_the_cap_is_reached(bf, stopper):
    """Bodies held by failing senders must not keep the receivers paused: they are spooled."""
    spool = MemorySpool()
    down = answer_while_down(bf, 503)
    # Two senders each hold a 100-datapoint body (~10 kB): alone over the 15 kB cap.
    fwd, enc, stats = make(bf, spool=spool, max_buffer_bytes=15_000, concurrency=2)
    stopper.append(fwd)
    fwd.backoff_base = 0.2
    enc.add(100)
    fwd.kick()
    enc.add(100)
    fwd.kick()
    wait_until(lambda: fwd.gate.is_set() and stats.get("retries") >= 2, timeout=10)
    assert spool.entries
    for _ in range(5):
        enc.add(100)
        fwd.kick()
        wait_until(fwd.gate.is_set, timeout=10)  # the receivers are never stuck
    # No live traffic after the outage: the spool replays anyway.
    down[0] = False
    wait_until(lambda: bf.stored == 700, timeout=20)
    wait_until(lambda: not spool.entries)
    assert bf.duplicates == 0


# ---- a failing Blueflood is loud ----------------------------------------------------------------


def test_failing_blueflood_is_logged_at_once_reminded_and_its_recovery_told(
    bf, stopper, caplog, monkeypatch
):
    monkeypatch.setenv("FASTFORWARD_TEST_FAILURE_REMINDER_SECONDS", "0.2")
    down = answer_while_down(bf, 503)
    fwd, enc, stats = make(bf)
    stopper.append(fwd)
    assert stats.get("blueflood_failing_seconds") == 0
    with caplog.at_level(logging.WARNING, logger="fastforward.forwarder"):
        enc.add(7)
        fwd.kick()
        wait_until(lambda: sum("still failing" in r.getMessage() for r in caplog.records) >= 2)
        assert stats.get("blueflood_failing_seconds") > 0
        down[0] = False
        wait_until(lambda: bf.stored == 7)
        # The fake stores before its answer reaches the forwarder, which then tells the recovery.
        wait_until(
            lambda: any("s of failures (last: HTTP 503)" in r.getMessage() for r in caplog.records)
        )
    messages = [r.getMessage() for r in caplog.records]
    first = [m for m in messages if m.startswith("Blueflood POST to")]
    assert len(first) == 1  # once per outage; the reminders follow
    assert first[0].startswith(
        f"Blueflood POST to {bf.ingest_url('t1')} failed: HTTP 503; retrying with backoff, "
        "7 datapoints ("
    )
    assert first[0].endswith("bytes) in memory, no spool (--spool-dir)")
    reminder = next(m for m in messages if "still failing" in m)
    assert reminder.startswith(f"Blueflood at {bf.ingest_url('t1')} still failing after ")
    assert ": HTTP 503 (last attempt " in reminder and "7 datapoints" in reminder
    assert any(m.endswith("s of failures (last: HTTP 503)") for m in messages)
    assert stats.get("blueflood_failing_seconds") == 0


def test_the_reminder_interval_is_at_most_a_minute():
    assert reminder_seconds("") == 60.0
    assert reminder_seconds("3600") == 60.0
    assert reminder_seconds("soon") == 60.0
    assert reminder_seconds("0.5") == 0.5
