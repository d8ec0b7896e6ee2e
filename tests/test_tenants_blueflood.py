"""Several tenants over HTTP: the tenants' forwarder, the real client and the fake Blueflood.

The process cannot route by tenant until the codec does (issue 13), so this runs in process:
a routed encoder stand-in feeds two tenants while the fake Blueflood refuses one of them.
"""

from __future__ import annotations

import pytest

from fastforward.blueflood import BluefloodClient
from fastforward.spool import Spool
from fastforward.stats import Stats
from fastforward.tenants import TenantForwarder
from tests.fake_blueflood import FakeBlueflood
from tests.routed_encoder import RoutedEncoder
from tests.support import wait_until
from tests.test_tenants import tenants_config

ROUNDS = 30
PER_ROUND = 200  # datapoints per tenant per round


@pytest.fixture
def bf():
    with FakeBlueflood() as server:
        yield server


def run(bf, tmp_path, *, spool: bool, **kw):
    stats = Stats()
    cfg = tenants_config(**kw)
    # Each tenant's senders keep their own connections: the pool is sized for all of them.
    pool = cfg.concurrency * 3
    client = BluefloodClient(bf.url, "t1", stats, timeout=5, pool_size=pool)
    disk = Spool(str(tmp_path / "spool"), 10**9, stats, tenant="t1") if spool else None
    fwd = TenantForwarder(cfg, RoutedEncoder(per_body=100), stats, client, spool=disk)
    fwd.tune(backoff_base=0.02, backoff_cap=0.2)
    return fwd, fwd.encoder, client, stats, disk


def stored(bf: FakeBlueflood, tenant: str) -> int:
    return sum(len(points) for (t, _), points in bf.store.items() if t == tenant)


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
def test_one_tenant_refused_for_a_while_the_other_delivers_then_it_catches_up(bf, tmp_path, spool):
    fwd, encoder, client, stats, disk = run(
        bf, tmp_path, spool=spool, max_buffer_bytes=300_000 if spool else 10_000_000
    )
    bf.failing_tenants["222"] = 403
    fwd.start()
    try:
        for round_ in range(1, ROUNDS + 1):
            encoder.add(None, PER_ROUND, prefix="a")
            encoder.add("222", PER_ROUND, prefix="b")
            fwd.kick()
            # Every round of the healthy tenant is delivered while the other one is refused.
            wait_until(lambda r=round_: stored(bf, "t1") == r * PER_ROUND)
            assert fwd.gate.is_set()
        assert stored(bf, "222") == 0
        assert any(r.status == 403 for r in bf.ingests() if "/222/" in r.path)
        if spool:
            assert disk.files > 0  # 222's bodies over its share went to disk
        del bf.failing_tenants["222"]
        wait_until(lambda: stored(bf, "222") == ROUNDS * PER_ROUND, timeout=30)
        assert bf.duplicates == 0
        # (the last answer may still be on its way back when the fake has stored the body)
        wait_until(lambda: stats.get("tenant_datapoints_sent", tenant="222") == ROUNDS * PER_ROUND)
        assert fwd.stop(timeout=5) == 0
        if spool:
            assert disk.files == 0
    finally:
        if not fwd.stopping:
            fwd.stop(timeout=1)
        client.close()
        if disk is not None:
            disk.close()


def test_ingest_multi_stores_each_item_under_its_tenant(bf, tmp_path):
    fwd, encoder, client, _, _ = run(bf, tmp_path, spool=False, ingest_multi=True)
    client.use_ingest_multi()
    fwd.start()
    try:
        encoder.add(None, 30, prefix="a")
        encoder.add("222", 40, prefix="b")
        encoder.add("333", 50, prefix="c")
        assert fwd.stop(timeout=5) == 0
        assert (stored(bf, "t1"), stored(bf, "222"), stored(bf, "333")) == (30, 40, 50)
        assert len(bf.multi_ingests()) == 1 and not bf.ingests()
        assert bf.multi_ingests()[0].path == "/v2.0/t1/ingest/multi"
    finally:
        client.close()


def test_ingest_multi_a_refused_tenant_holds_back_the_shared_posts(bf, tmp_path):
    """The price of sharing POSTs: one refused tenant fails the whole request (retried)."""
    fwd, encoder, client, _, _ = run(bf, tmp_path, spool=False, ingest_multi=True)
    client.use_ingest_multi()
    bf.failing_tenants["222"] = 403
    fwd.start()
    try:
        encoder.add(None, 30, prefix="a")
        encoder.add("222", 40, prefix="b")
        fwd.kick()
        fwd.dispatch(partial=True)
        wait_until(lambda: len(bf.multi_ingests()) >= 2)
        assert stored(bf, "t1") == 0
        del bf.failing_tenants["222"]
        wait_until(lambda: stored(bf, "t1") == 30 and stored(bf, "222") == 40)
        assert bf.duplicates == 0
    finally:
        fwd.stop(timeout=1)
        client.close()
