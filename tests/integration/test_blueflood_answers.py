"""End to end: every kind of Blueflood answer, seen by the real `fastforward` process.

Each test scripts the fake Blueflood (or its identity service), sends datapoints over the
pickle protocol and checks what a user would see: what got stored, how many requests it took,
what the log says and what /metrics counts.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.fake_blueflood import Scripted

from .conftest import ANY_PORT, TENANT, FakeBlueflood, FakeIdentity, frame, send_tcp, wait_until
from .helpers import scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def start(run_ff, bf: FakeBlueflood, *extra: str):  # noqa: ANN001, ANN201
    ff = run_ff("-e", ANY_PORT, "-b", bf.url, "-t", TENANT,
                "-i", "0.2", "--admin-endpoint", ANY_PORT,
                *extra)  # fmt: skip
    port = ff.port()
    admin = ff.admin_port
    return ff, port, admin


def points(prefix: str, n: int, ts: int) -> list[tuple[str, tuple[int, float]]]:
    return [(f"{prefix}.{i}", (ts, i + 0.5)) for i in range(n)]


def stored_names(bf: FakeBlueflood) -> set[str]:
    return {name for (_tenant, name) in bf.store}


def test_207_stores_the_good_logs_the_rejected_and_never_retries(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    bf = fake_blueflood
    bf.before_ms = 30 * 60 * 1000  # this Blueflood keeps only half an hour; we allow 3 days
    ff, port, admin = start(run_ff, bf)
    now = int(time.time())
    send_tcp(port, frame([("fresh.metric", (now, 1.0)), ("stale.metric", (now - 3600, 2.0))]))
    wait_until(lambda: scrape(admin)["fastforward_datapoints_rejected_total"] == 1, 15, "207")
    assert stored_names(bf) == {"fresh.metric"}
    assert [r.status for r in bf.ingests()] == [207]  # not retried
    assert "partially accepted metric 'stale.metric'" in ff.stderr
    assert "collectionTime" in ff.stderr
    m = scrape(admin)
    assert m.get("fastforward_datapoints_rejected_total", source="collectionTime") == 1
    assert m["fastforward_datapoints_sent_total"] == 1
    assert ff.terminate() == 0


def test_400_with_per_metric_errors_is_logged_and_dropped_and_the_rest_flows(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    bf = fake_blueflood
    bf.before_ms = 30 * 60 * 1000
    ff, port, admin = start(run_ff, bf)
    now = int(time.time())
    send_tcp(port, frame(points("old", 3, now - 3600)))
    wait_until(lambda: scrape(admin)["fastforward_datapoints_rejected_total"] == 3, 15, "400")
    send_tcp(port, frame(points("new", 2, now)))
    bf.wait_for(lambda: bf.stored == 2)
    assert [r.status for r in bf.ingests()] == [400, 200]
    assert "rejected metric 'old.0'" in ff.stderr
    assert ff.terminate() == 0


def test_cannot_parse_content_is_a_loud_bug_and_the_body_is_bisected(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    bf = fake_blueflood
    cannot_parse = json.dumps({"errors": [{"tenantId": TENANT, "timestamp": None,
                                           "metricName": "", "source": None,
                                           "message": "Cannot parse content"}]})  # fmt: skip
    bf.push(Scripted(400, cannot_parse))
    ff, port, _admin = start(run_ff, bf)
    send_tcp(port, frame(points("bisect", 8, int(time.time()))))
    bf.wait_for(lambda: bf.stored == 8)
    statuses = [r.status for r in bf.ingests()]
    assert statuses[0] == 400 and statuses[1:] == [200, 200]  # two halves, both landed
    assert "BUG: Blueflood could not parse a body of 8 datapoints" in ff.stderr
    assert bf.duplicates == 0
    assert ff.terminate() == 0


def test_413_without_retry_after_splits_until_the_bodies_fit(run_ff) -> None:  # noqa: ANN001
    with FakeBlueflood(max_content_length=3000) as bf:
        ff, port, admin = start(run_ff, bf)
        send_tcp(port, frame(points("big.body.metric", 120, int(time.time()))))
        bf.wait_for(lambda: bf.stored == 120, timeout=20)
        assert 413 in [r.status for r in bf.requests]
        assert all(len(r.body) <= 3000 for r in bf.ingests() if r.status == 200)
        assert bf.duplicates == 0
        # counted once the answer is read, a moment after the fake stored the body
        wait_until(lambda: scrape(admin)["fastforward_datapoints_sent_total"] == 120, 10, "sent")
        assert ff.terminate() == 0


def test_429_with_retry_after_waits_as_told(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    bf = fake_blueflood
    bf.push(Scripted(429, headers={"Retry-After": "2"}))
    ff, port, admin = start(run_ff, bf)
    send_tcp(port, frame(points("limited", 5, int(time.time()))))
    bf.wait_for(lambda: bf.stored == 5, timeout=20)
    first, second = bf.ingests()[:2]
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.9  # waited for Retry-After, not the short backoff
    assert "rate limit (429); waiting 2.0s" in ff.stderr
    assert scrape(admin).get("fastforward_retries_total", cause="429") == 1
    assert ff.terminate() == 0


def test_401_reauthenticates_and_replays_the_same_bytes(
    fake_identity: FakeIdentity,
    run_ff,  # noqa: ANN001
) -> None:
    with FakeBlueflood(identity=fake_identity) as bf:
        ff, port, _admin = start(run_ff, bf, "-u", "alice", "-k", "k3y",
                                 "--auth_url", fake_identity.tokens_url)  # fmt: skip
        ts = int(time.time())
        send_tcp(port, frame(points("first", 2, ts)))
        bf.wait_for(lambda: bf.stored == 2)
        fake_identity.revoke()  # the token dies behind fastforward's back
        send_tcp(port, frame(points("second", 3, ts)))
        bf.wait_for(lambda: bf.stored == 5)
        refused, replayed = [r for r in bf.ingests() if b"second" in r.body]
        assert (refused.status, replayed.status) == (401, 200)
        assert replayed.body == refused.body  # the same bytes, not a rebuilt body
        assert refused.headers["X-Auth-Token"] != replayed.headers["X-Auth-Token"]
        assert fake_identity.issued == 2
        assert "k3y" not in ff.stderr
        assert ff.terminate() == 0


def test_identity_outage_then_recovery_delivers_everything(
    fake_identity: FakeIdentity,
    run_ff,  # noqa: ANN001
) -> None:
    fake_identity.failing = 503  # identity is down before fastforward even starts
    with FakeBlueflood(identity=fake_identity) as bf:
        ff, port, admin = start(run_ff, bf, "-u", "alice", "-k", "k3y",
                                "--auth_url", fake_identity.tokens_url)  # fmt: skip
        send_tcp(port, frame(points("during.outage", 4, int(time.time()))))
        wait_until(lambda: len(fake_identity.requests) >= 2, 15, "token requests to be retried")
        assert bf.stored == 0
        assert scrape(admin).get("fastforward_auth_requests_total", result="ok") == 0
        fake_identity.failing = None  # identity is back: no restart, no new traffic needed
        bf.wait_for(lambda: bf.stored == 4, timeout=30)
        assert scrape(admin).get("fastforward_auth_requests_total", result="ok") == 1
        assert ff.proc.poll() is None
        assert ff.terminate() == 0
