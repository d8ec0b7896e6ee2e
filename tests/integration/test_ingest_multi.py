"""``--ingest-multi`` in the real process: bodies go to ``/v2.0/{tenant}/ingest/multi`` with a
``tenantId`` in every item, and are stored under that tenant."""

from __future__ import annotations

import json
import time

from tests.integration.conftest import TENANT, FakeBlueflood, frame, free_port, send_tcp


def test_ingest_multi_posts_items_carrying_their_tenant(fake_blueflood: FakeBlueflood, run_ff):  # noqa: ANN001
    port = free_port()
    ff = run_ff(
        "-e", f"tcp:port={port}:interface=127.0.0.1", "-b", fake_blueflood.url, "-t", TENANT,
        "-i", "0.2", "--ingest-multi",
    )  # fmt: skip
    ts = int(time.time())
    send_tcp(port, frame([(f"multi.m{i}", (ts, float(i))) for i in range(50)]))
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 50)
    assert not fake_blueflood.ingests()  # nothing to the single-tenant URL
    posts = fake_blueflood.multi_ingests()
    assert {r.path for r in posts} == {f"/v2.0/{TENANT}/ingest/multi"}
    items = [item for r in posts for item in json.loads(r.raw)]
    assert {item["tenantId"] for item in items} == {TENANT}
    assert fake_blueflood.points(TENANT, "multi.m7") == {ts * 1000: 7.0}
    assert ff.terminate() == 0
