"""`Spool.oldest(wanted)`: each tenant's lane replays only its tenant's files, oldest first."""

from __future__ import annotations

import os

from fastforward.spool import Spool
from fastforward.stats import Stats

BODY = b'[{"collectionTime":%d,"ttlInSeconds":60,"metricValue":1,"metricName":"m"}]'


def body(ms: int) -> bytes:
    return BODY % ms


def test_oldest_of_a_tenant_skips_other_tenants_files_and_leaves_them_for_their_lane(tmp_path):
    now_ms = 1_700_000_000_000
    spool = Spool(str(tmp_path), 10**7, Stats(), clock=lambda: now_ms / 1000, tenant="t1")
    try:
        assert spool.put(body(now_ms - 3), 1, "a")
        assert spool.put(body(now_ms - 2), 1, "b")
        assert spool.put(body(now_ms - 1), 1, "a")
        first = spool.oldest("a".__eq__)
        assert first is not None and (first.tenant, first.body) == ("a", body(now_ms - 3))
        spool.ack(first)
        second = spool.oldest("a".__eq__)
        assert second is not None and second.body == body(now_ms - 1)
        assert spool.oldest("a".__eq__) is None  # b's file is not a's to take
        other = spool.oldest(lambda t: t != "a")
        assert other is not None and (other.tenant, other.body) == ("b", body(now_ms - 2))
        assert spool.files == 2  # nothing acked but the first
    finally:
        spool.close()


def test_a_file_with_a_corrupt_header_is_moved_aside_by_any_lane(tmp_path):
    spool = Spool(str(tmp_path), 10**7, Stats(), tenant="t1")
    try:
        with open(os.path.join(str(tmp_path), spool._new_name()[0]), "wb") as f:
            f.write(b"garbage, not a spool file\n")
        spool._rescan(force=True)
        assert spool.oldest("a".__eq__) is None
        assert os.listdir(os.path.join(str(tmp_path), "corrupt"))
    finally:
        spool.close()
