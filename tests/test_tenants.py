"""Delivery of several tenants (tenants.py): a failing tenant never stalls another.

Fakes only here (a routed encoder, a Blueflood client that fails chosen tenants, a spool in
memory); tests/test_tenants_blueflood.py runs the same story over HTTP against the fake
Blueflood. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from types import SimpleNamespace

import gevent
import gevent.event
import pytest

from fastforward.blueflood import Outcome, classify
from fastforward.protocols import take_routed
from fastforward.stats import Stats
from fastforward.tenants import TenantForwarder, with_tenant_ids
from tests.routed_encoder import RoutedEncoder
from tests.support import wait_until
from tests.test_forwarder import FakeEncoder, MemorySpool


class TenantsPoster:
    """A Blueflood client in memory: tenants in ``failing`` get ``status``, others are stored."""

    url = "http://bf.test/v2.0/t1/ingest"

    def __init__(self) -> None:
        self.failing: dict[str, int] = {}
        self.delivered: Counter[tuple[str, str]] = Counter()  # (tenant, name) -> times
        self.attempts: Counter[str] = Counter()

    def url_for(self, tenant: str) -> str:
        return f"http://bf.test/v2.0/{tenant}/ingest"

    def post(self, body: bytes, tenant: str | None = None) -> Outcome:
        gevent.sleep(0)  # a POST yields, as a real one does
        owner = tenant or "t1"
        self.attempts[owner] += 1
        status = self.failing.get(owner)
        if status:
            return classify(status, b"", None)
        for item in json.loads(body):
            self.delivered[(owner, item["metricName"])] += 1
        return classify(200, b"", None)

    def count(self, tenant: str) -> int:
        return sum(1 for (t, _), n in self.delivered.items() if t == tenant)

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.delivered.values())


class TenantSpool(MemorySpool):
    """The memory spool with the tenant filter of spool.Spool.oldest."""

    def oldest(self, wanted=None):
        for e in self.entries:
            if not e.claimed and (wanted is None or wanted(e.tenant or "t1")):
                e.claimed = True
                return e
        return None


def tenants_config(**kw) -> SimpleNamespace:
    base = {
        "interval": 0.2,
        "concurrency": 2,
        "max_buffer_bytes": 10_000_000,
        "tenant": "t1",
        "ingest_multi": False,
        "body_bytes": 1_000_000,
        "max_body_datapoints": 5000,
        "tenant_idle_timeout": 600.0,
    }
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def forwarders():
    started: list[TenantForwarder] = []
    yield started
    for fwd in started:
        if not fwd.stopping:
            fwd.stop(timeout=1)


def start(forwarders, poster, encoder, spool=None, **kw) -> tuple[TenantForwarder, Stats]:
    stats = Stats()
    fwd = TenantForwarder(tenants_config(**kw), encoder, stats, poster, spool=spool)
    fwd.tune(backoff_base=0.02, backoff_cap=0.1)
    fwd.start()
    forwarders.append(fwd)
    return fwd, stats


def test_an_encoder_without_routing_hands_over_the_default_tenants_bodies():
    plain = FakeEncoder(per_body=2)
    plain.add(3)
    routed = take_routed(plain, partial=True)
    assert [(tenant, n) for tenant, _, n in routed] == [(None, 2), (None, 1)]


def test_a_failing_tenant_never_stalls_another_then_catches_up(forwarders, caplog):
    poster, encoder = TenantsPoster(), RoutedEncoder(per_body=20)
    poster.failing["222"] = 403
    fwd, stats = start(forwarders, poster, encoder)
    caplog.set_level(logging.INFO, logger="fastforward")
    for _ in range(10):  # both tenants in every round, as one socket would carry them
        encoder.add(None, 100, prefix="a")
        encoder.add("222", 100, prefix="b")
        fwd.kick()
        wait_until(lambda: poster.count("t1") == encoder.seq // 2)
    assert poster.count("222") == 0 and poster.attempts["222"] > 0
    assert fwd.gate.is_set()
    assert stats.get("tenant_datapoints_sent", tenant="t1") == 1000
    assert "POST to http://bf.test/v2.0/222/ingest failed: HTTP 403" in caplog.text
    assert fwd.lanes[None].target.failures == 0  # the default tenant's state is untouched
    assert stats.get("tenant_buffered_datapoints", tenant="222") == 1000
    assert "tenant 222: 1000 datapoints" in fwd.describe()

    ok, reason = fwd.healthy()  # restarting would not help the tenants that deliver
    assert ok and "failing tenants: 222 (the others deliver)" in reason
    del poster.failing["222"]
    wait_until(lambda: poster.count("222") == 1000)
    assert poster.duplicates() == 0
    assert stats.get("tenant_datapoints_sent", tenant="222") == 1000
    assert stats.get("datapoints_sent") == 2000  # the unlabelled total stays the sum


class HangingPoster(TenantsPoster):
    """POSTs of the tenants in ``hanging`` wait for ``release``; counts POSTs in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.hanging: set[str] = set()
        self.release = gevent.event.Event()
        self.in_flight = self.most_in_flight = 0

    def post(self, body: bytes, tenant: str | None = None) -> Outcome:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if (tenant or "t1") in self.hanging:
                self.release.wait()
            return super().post(body, tenant)
        finally:
            self.in_flight -= 1


def test_posts_in_flight_are_bounded_across_tenants_and_hanging_ones_hold_up_no_other(
    forwarders,
):
    poster, encoder = HangingPoster(), RoutedEncoder(per_body=10)
    poster.hanging = {"h1", "h2"}  # answered only at the end: they hold every slot they get
    fwd, stats = start(forwarders, poster, encoder)  # --concurrency 2 (2 senders per lane)
    others = [None, *(f"{i}00" for i in range(1, 10))]
    for round_ in range(5):
        for tenant in ["h1", "h2", *others]:
            encoder.add(tenant, 40, prefix=f"{tenant}.{round_}")
        fwd.kick()
    lanes = len(fwd.lanes)
    assert lanes == 12
    wait_until(lambda: all(poster.count(t or "t1") == 200 for t in others))
    # --concurrency shared by all lanes, plus one POST of each lane's own: not 2 per lane
    assert poster.most_in_flight <= 2 + lanes
    poster.release.set()
    wait_until(lambda: poster.count("h1") == poster.count("h2") == 200)
    assert poster.duplicates() == 0
    assert stats.get("datapoints_sent") == 12 * 200


def test_without_a_spool_a_failing_tenant_uses_free_memory_then_backpressure_pauses_all(
    forwarders, caplog
):
    poster, encoder = TenantsPoster(), RoutedEncoder(per_body=20)
    poster.failing["222"] = 503
    cap = 60_000
    fwd, _ = start(forwarders, poster, encoder, max_buffer_bytes=cap)

    def held() -> int:
        lane = fwd.lanes.get("222")
        return 0 if lane is None else lane.outbox.bytes

    # Past its fair share (half the cap, two tenants active) the receivers still read, and
    # the other tenant keeps delivering.
    while held() <= cap // 2:
        encoder.add(None, 20, prefix="a")
        encoder.add("222", 20, prefix="b")
        fwd.kick()
        wait_until(lambda: poster.count("t1") * 2 == encoder.seq)
    assert fwd.gate.is_set()
    # Only the whole cap pauses the receivers; the log names who holds the memory.
    while fwd.gate.is_set():
        encoder.add("222", 20, prefix="b")
        fwd.kick()
    assert "pausing receivers" in caplog.text and "tenant 222:" in caplog.text
    del poster.failing["222"]
    wait_until(fwd.gate.is_set)
    wait_until(lambda: poster.count("222") == encoder.seq - poster.count("t1"))
    assert poster.duplicates() == 0


def test_with_a_spool_a_failing_tenant_over_its_share_spools_and_never_pauses_receivers(
    forwarders,
):
    poster, encoder, spool = TenantsPoster(), RoutedEncoder(per_body=20), TenantSpool()
    poster.failing["222"] = 401
    cap = 60_000
    fwd, _ = start(forwarders, poster, encoder, spool=spool, max_buffer_bytes=cap)
    for _ in range(40):  # about 4 times the cap for tenant 222
        encoder.add(None, 20, prefix="a")
        encoder.add("222", 60, prefix="b")
        fwd.kick()
        assert fwd.gate.is_set()
        wait_until(lambda: poster.count("t1") == encoder.seq // 4)
    assert spool.files > 0
    assert all(e.tenant == "222" for e in spool.entries)
    assert fwd.lanes["222"].outbox.bytes <= cap
    del poster.failing["222"]
    wait_until(lambda: poster.count("222") == 2400 and not spool.entries)
    assert poster.duplicates() == 0


def test_spooled_files_of_a_tenant_without_a_lane_are_replayed_by_the_default_lane(forwarders):
    poster, spool = TenantsPoster(), TenantSpool()
    spool.put(b'[{"collectionTime":1,"ttlInSeconds":1,"metricValue":1,"metricName":"x"}]', 1, "9")
    start(forwarders, poster, RoutedEncoder(), spool=spool)
    wait_until(lambda: poster.delivered[("9", "x")] == 1)


def test_a_rule_naming_the_default_tenant_shares_the_default_lane(forwarders):
    poster, encoder = TenantsPoster(), RoutedEncoder(per_body=1000)
    fwd, stats = start(forwarders, poster, encoder)
    encoder.add(None, 5, prefix="a")
    encoder.add("t1", 7, prefix="b")
    assert fwd.stop(timeout=5) == 0
    assert list(fwd.lanes) == [None]
    assert stats.get("tenant_datapoints_sent", tenant="t1") == 12 == poster.count("t1")


def test_stop_delivers_every_tenants_partial_bodies(forwarders):
    poster, encoder = TenantsPoster(), RoutedEncoder(per_body=1000)
    fwd, _ = start(forwarders, poster, encoder)
    encoder.add(None, 5, prefix="a")
    encoder.add("222", 7, prefix="b")
    encoder.add("333", 9, prefix="c")
    assert fwd.stop(timeout=5) == 0
    assert (poster.count("t1"), poster.count("222"), poster.count("333")) == (5, 7, 9)


def test_stop_counts_what_a_failing_tenant_could_not_deliver(forwarders):
    poster, encoder = TenantsPoster(), RoutedEncoder(per_body=1000)
    poster.failing["222"] = 500
    fwd, stats = start(forwarders, poster, encoder)
    encoder.add(None, 5, prefix="a")
    encoder.add("222", 7, prefix="b")
    assert fwd.stop(timeout=0.5) == 7
    assert poster.count("t1") == 5
    assert stats.get("datapoints_dropped", reason="undelivered_at_stop") == 7


def test_each_lanes_log_lines_name_its_tenant(forwarders, caplog):
    """Failure, recovery and stop lines come once per lane: each says whose they are."""
    poster, encoder = TenantsPoster(), RoutedEncoder(per_body=1000)
    poster.failing["222"] = 503
    fwd, _ = start(forwarders, poster, encoder)
    caplog.set_level(logging.INFO, logger="fastforward")
    encoder.add(None, 5, prefix="a")
    encoder.add("222", 7, prefix="b")
    fwd.kick()
    wait_until(lambda: poster.count("t1") == 5 and poster.attempts["222"] > 0)
    del poster.failing["222"]
    wait_until(lambda: poster.count("222") == 7)
    assert fwd.stop(timeout=5) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "fastforward.forwarder"]
    assert "tenant 222: Blueflood POST to http://bf.test/v2.0/222/ingest failed: HTTP 503" in (
        "\n".join(lines)
    )
    assert any(
        line.startswith("tenant 222: Blueflood at ") and "recovered" in line for line in lines
    )
    stops = sorted(line for line in lines if "stop:" in line)
    assert stops == [
        "tenant 222: stop: everything was delivered",
        "tenant t1: stop: everything was delivered",
    ]


def test_an_idle_tenants_lane_is_removed_and_its_next_datapoint_starts_a_new_one(
    forwarders, caplog
):
    poster, encoder = TenantsPoster(), RoutedEncoder(per_body=1000)
    fwd, stats = start(forwarders, poster, encoder, tenant_idle_timeout=60.0)
    caplog.set_level(logging.INFO, logger="fastforward")
    encoder.add("222", 3, prefix="a")
    fwd.kick()
    wait_until(lambda: poster.count("222") == 3)
    old = fwd.lanes["222"]
    running = [old._flush_greenlet, *old._greenlets]
    assert stats.get("tenant_buffered_bytes", tenant="222") == 0  # the series exists

    t0 = 1000.0  # the idle clock is the caller's: no waiting a minute here
    fwd.retire_idle(t0)
    fwd.retire_idle(t0 + 59)
    assert fwd.lanes["222"] is old
    encoder.add("222", 2, prefix="b")  # a body restarts the clock
    fwd.kick()
    wait_until(lambda: poster.count("222") == 5)
    fwd.retire_idle(t0 + 61)
    assert fwd.lanes["222"] is old
    fwd.retire_idle(t0 + 121)
    assert "222" not in fwd.lanes and None in fwd.lanes  # the default lane always stays
    wait_until(lambda: all(g.dead for g in running))
    assert "tenant 222: delivery lane removed after 60s idle" in caplog.text
    assert ("tenant_buffered_bytes", (("tenant", "222"),)) not in {
        (name, labels) for name, labels, _ in stats.samples()
    }
    assert stats.get("tenant_datapoints_sent", tenant="222") == 5  # counters stay

    encoder.add("222", 4, prefix="c")
    fwd.kick()
    wait_until(lambda: poster.count("222") == 9)
    assert fwd.lanes["222"] is not old and poster.duplicates() == 0
    assert fwd.stop(timeout=5) == 0


def test_a_lane_holding_data_or_failing_is_never_removed(forwarders):
    poster, encoder = TenantsPoster(), RoutedEncoder(per_body=1000)
    poster.failing["222"] = 503
    fwd, stats = start(forwarders, poster, encoder, tenant_idle_timeout=1.0)
    encoder.add("222", 3, prefix="a")
    fwd.kick()
    wait_until(lambda: poster.attempts["222"] > 0)
    lane = fwd.lanes["222"]
    for now in (0.0, 10.0, 20.0):
        fwd.retire_idle(now)
    assert fwd.lanes["222"] is lane and not lane.retire()
    del poster.failing["222"]
    wait_until(lambda: poster.count("222") == 3)
    wait_until(lambda: not lane.target.failing)
    fwd.retire_idle(30.0)
    fwd.retire_idle(31.0)
    assert "222" not in fwd.lanes and poster.duplicates() == 0


def test_ingest_multi_tags_items_and_joins_tenants_into_one_post(forwarders):
    poster, encoder = TenantsPoster(), RoutedEncoder(per_body=1000)
    posted: list[bytes] = []
    inner = poster.post
    poster.post = lambda body, tenant=None: posted.append(body) or inner(body, tenant)  # type: ignore[method-assign]
    fwd, _ = start(forwarders, poster, encoder, ingest_multi=True)
    encoder.add(None, 3, prefix="a")
    encoder.add("222", 4, prefix="b")
    assert fwd.stop(timeout=5) == 0
    assert len(posted) == 1
    owners = Counter(item["tenantId"] for item in json.loads(posted[0]))
    assert owners == {"t1": 3, "222": 4}


def test_with_tenant_ids_puts_the_tenant_first_in_every_item_and_not_inside_names():
    body = (
        b'[{"collectionTime":1,"ttlInSeconds":2,"metricValue":3,'
        b'"metricName":"x{\\"collectionTime\\":"}]'
    )
    tagged = json.loads(with_tenant_ids(body, "222"))
    assert tagged == [
        {
            "tenantId": "222",
            "collectionTime": 1,
            "ttlInSeconds": 2,
            "metricValue": 3,
            "metricName": 'x{"collectionTime":',
        }
    ]
