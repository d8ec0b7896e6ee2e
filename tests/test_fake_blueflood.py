"""The fake Blueflood and fake identity service behave as docs/blueflood-api.md section 8 says."""

from __future__ import annotations

import gzip
import json
import zlib

import gevent
import pytest
import requests

from tests.fake_blueflood import (
    FakeBlueflood,
    FakeIdentity,
    Scripted,
    fake_blueflood,  # noqa: F401 - fixture
    fake_identity,  # noqa: F401 - fixture
)

NOW = 1_700_000_000_000
JSON = {"Content-Type": "application/json", "Accept": "application/json"}


def metric(name="a.b", value=1.5, ct=NOW, ttl=86400, **extra) -> dict:
    return {"collectionTime": ct, "ttlInSeconds": ttl, "metricValue": value, "metricName": name}


def post(bf, body, tenant="t1", headers=JSON, session=requests):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with gevent.Timeout(10):
        return session.post(bf.ingest_url(tenant), data=data, headers=headers, timeout=10)


@pytest.fixture
def bf(fake_blueflood):  # noqa: F811
    fake_blueflood.clock = lambda: NOW
    return fake_blueflood


def test_valid_body_is_stored_with_empty_200(bf):
    r = post(bf, [metric("a", 1), metric("b", 2.5)])
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Length"] == "0"
    assert bf.points("t1", "a") == {NOW: 1} and bf.points("t1", "b") == {NOW: 2.5}
    assert bf.stored == 2 and bf.received == 2


def test_duplicate_upserts_and_counts_received(bf):
    post(bf, [metric("a", 1)])
    post(bf, [metric("a", 2)])
    assert bf.points("t1", "a") == {NOW: 2}
    assert bf.stored == 1 and bf.received == 2 and bf.duplicates == 1


def test_partial_207_lists_only_rejected(bf):
    r = post(bf, [metric("good"), metric("old", ct=NOW - 259_200_001), metric("s", value="42")])
    assert r.status_code == 207
    errors = r.json()["errors"]
    assert [(e["metricName"], e["source"]) for e in errors] == [
        ("old", "collectionTime"),
        ("s", "metricValue"),
    ]
    assert list(errors[0]) == ["tenantId", "timestamp", "metricName", "source", "message"]
    assert errors[0]["tenantId"] == "t1" and errors[0]["timestamp"] == NOW - 259_200_001
    assert bf.stored == 1


def test_all_invalid_is_400_with_errors(bf):
    r = post(bf, [{}])
    assert r.status_code == 400
    assert sorted(e["source"] for e in r.json()["errors"]) == [
        "collectionTime",
        "metricName",
        "ttlInSeconds",
    ]


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"", 400, "Cannot parse content"),
        (b'{"a":1}', 400, "Cannot parse content"),
        (b"[]", 400, "No valid metrics"),
        (b"[null]", 500, "Failed parsing content"),
        (
            b'[{"metricName":"a","metricValue":NaN,"collectionTime":1,"ttlInSeconds":1}]',
            400,
            "Cannot parse content",
        ),
        (
            b'[{"metricName":"a","tenantId":"x","collectionTime":1,"ttlInSeconds":1}]',
            400,
            "Cannot parse content",
        ),
        (b"[1,]", 400, "Cannot parse content"),
    ],
)
def test_whole_request_failures(bf, body, status, message):
    r = post(bf, body)
    assert r.status_code == status
    assert r.json()["errors"][0]["message"] == message
    assert bf.stored == 0


def test_jackson_coercions(bf):
    body = [
        {
            "metricName": 123,
            "metricValue": 1,
            "collectionTime": float(NOW) + 0.9,
            "ttlInSeconds": "60",
        },
        {"metricName": "n", "metricValue": None, "collectionTime": NOW, "ttlInSeconds": 1},
    ]
    r = post(bf, json.dumps(body).encode() + b" trailing garbage")
    assert r.status_code == 200
    assert bf.points("t1", "123") == {NOW: 1}
    assert bf.stored == 1  # null value silently skipped


def test_max_ttl_is_invalid_data(bf):
    r = post(bf, [metric(ttl=2**31 - 1)])
    assert r.status_code == 400
    assert r.json()["errors"][0]["message"].startswith("Invalid data TTL")


def test_media_checks_and_routing(bf):
    r = post(bf, [metric()], headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert "Content-Type: text/plain" in r.json()["errors"][0]["message"]
    assert post(bf, [metric()], headers={"Accept": "text/html"}).status_code == 415
    assert post(bf, [metric()], headers={}).status_code == 200  # no Content-Type is fine
    with gevent.Timeout(10):
        assert requests.post(bf.url + "/v2.0/t1/ingest/", data=b"[]", timeout=5).status_code == 404
        r = requests.get(bf.ingest_url("t1"), timeout=5)
        assert r.status_code == 405 and r.headers["Allow"] == "POST"
        assert requests.put(bf.ingest_url("t1"), data=b"[]", timeout=5).status_code == 501
        assert requests.get(bf.url + "/v2.0", timeout=5).status_code == 200


def test_gzip_and_deflate(bf):
    raw = json.dumps([metric("g")]).encode()
    r = post(bf, gzip.compress(raw), headers={**JSON, "Content-Encoding": "gzip"})
    assert r.status_code == 200
    r = post(
        bf,
        zlib.compress(json.dumps([metric("d")]).encode()),
        headers={**JSON, "Content-Encoding": "deflate"},
    )
    assert r.status_code == 200
    assert bf.stored == 2
    assert bf.requests[0].body == raw


def test_413_over_limit_counts_decompressed_size_and_closes(bf):
    bf.max_content_length = 1000
    body = json.dumps([metric(f"m{i}") for i in range(20)]).encode()
    assert len(body) > 1000 and len(gzip.compress(body)) < 1000
    with requests.Session() as s:
        r = post(bf, gzip.compress(body), headers={**JSON, "Content-Encoding": "gzip"}, session=s)
        assert r.status_code == 413 and r.content == b""
        assert r.headers.get("Connection") == "close"
        assert post(bf, [metric()], session=s).status_code == 200
    assert len(bf.connections()) == 2


def test_keep_alive_reuses_one_connection(bf):
    with requests.Session() as s:
        for i in range(3):
            assert post(bf, [metric(f"k{i}")], session=s).status_code == 200
    assert len(bf.connections()) == 1


def test_scripted_answers(bf):
    bf.push(Scripted(429, headers={"Retry-After": "2"}), 503, Scripted(202, process=True))
    r = post(bf, [metric("x")])
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert post(bf, [metric("x")]).status_code == 503
    assert bf.stored == 0
    assert post(bf, [metric("x")]).status_code == 202
    assert bf.stored == 1
    assert post(bf, [metric("x")]).status_code == 200


def test_scripted_close_without_response(bf):
    bf.push(Scripted(close=True))
    with pytest.raises(requests.ConnectionError):
        post(bf, [metric()])
    assert post(bf, [metric()]).status_code == 200


def test_query_view(bf):
    post(bf, [metric("q", 1, ct=NOW), metric("q", 2, ct=NOW + 1000)])
    with gevent.Timeout(10):
        url = f"{bf.url}/v2.0/t1/views/q?from={NOW}&to={NOW + 1000}&resolution=FULL"
        r = requests.get(url, timeout=5)
        assert r.status_code == 200
        assert [(v["timestamp"], v["average"]) for v in r.json()["values"]] == [
            (NOW, 1),
            (NOW + 1000, 2),
        ]
        bad = f"{bf.url}/v2.0/t1/views/q?from=5&to=1&resolution=FULL"
        assert requests.get(bad, timeout=5).status_code == 400


def test_identity_issues_tokens_and_blueflood_checks_them(fake_identity):  # noqa: F811
    with FakeBlueflood(identity=fake_identity) as bf, gevent.Timeout(10):
        bf.clock = lambda: NOW
        creds = {"auth": {"RAX-KSKEY:apiKeyCredentials": {"username": "alice", "apiKey": "k3y"}}}
        r = requests.post(fake_identity.tokens_url, json=creds, timeout=5)
        assert r.status_code == 200
        token = r.json()["access"]["token"]["id"]
        assert r.json()["access"]["token"]["expires"].endswith("Z")
        assert post(bf, [metric()]).status_code == 401
        assert post(bf, [metric()], headers={**JSON, "X-Auth-Token": token}).status_code == 200
        fake_identity.revoke(token)
        assert post(bf, [metric()], headers={**JSON, "X-Auth-Token": token}).status_code == 401
        pw = {"auth": {"passwordCredentials": {"username": "alice", "password": "nope"}}}
        assert requests.post(fake_identity.tokens_url, json=pw, timeout=5).status_code == 401
        fake_identity.fail.append(500)
        assert requests.post(fake_identity.tokens_url, json=creds, timeout=5).status_code == 500
        assert requests.post(fake_identity.tokens_url, json=creds, timeout=5).status_code == 200


def test_context_manager_stops_server():
    with FakeIdentity() as ident:
        url = ident.tokens_url
    with gevent.Timeout(10), pytest.raises(requests.ConnectionError):
        requests.post(url, json={}, timeout=2)
