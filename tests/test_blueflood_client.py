"""BluefloodClient against the fake Blueflood: every status maps to the right Outcome."""

from __future__ import annotations

import email.utils
import io
import json
import socket
import ssl
import threading
import time

import gevent
import pytest

from fastforward.blueflood import BluefloodClient, Kind, StdoutClient, parse_retry_after
from fastforward.stats import Stats
from tests.fake_blueflood import (
    FakeBlueflood,
    Scripted,
    fake_blueflood,  # noqa: F401 - fixture
)
from tests.integration.test_daemon import _self_signed


def body(*names: str, ct: int | None = None, value: object = 1.5) -> bytes:
    ct = int(time.time() * 1000) if ct is None else ct
    items = [
        {"collectionTime": ct, "ttlInSeconds": 86400, "metricValue": value, "metricName": n}
        for n in names
    ]
    return json.dumps(items, separators=(",", ":")).encode()


@pytest.fixture
def stats() -> Stats:
    return Stats()


@pytest.fixture
def client(fake_blueflood, stats):  # noqa: F811
    c = BluefloodClient(fake_blueflood.url + "/", "t1", stats, timeout=5)
    yield c
    c.close()


def post(client, data):
    with gevent.Timeout(15):
        return client.post(data)


def test_ok_sends_json_headers_and_no_tenant_header(client, fake_blueflood, stats):  # noqa: F811
    sent = body("a", "b")
    outcome = post(client, sent)
    assert outcome.kind is Kind.OK and outcome.status == 200
    req = fake_blueflood.requests[-1]
    assert req.raw == req.body == sent  # byte for byte what was POSTed
    assert req.path == "/v2.0/t1/ingest"  # trailing '/' of the base URL stripped
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Accept"] == "application/json"
    assert not any(h.lower() == "tenantid" for h in req.headers)
    assert "Content-Encoding" not in req.headers
    assert fake_blueflood.stored == 2
    assert stats.get("http_responses", status="200") == 1
    assert stats.get("flush_latency_seconds", le="+Inf") == 1


def test_partial_207_carries_the_rejected_metrics(client):
    outcome = post(client, body("good") + b"")
    assert outcome.kind is Kind.OK
    mixed = json.loads(body("good")) + json.loads(body("old", ct=1000))
    outcome = post(client, json.dumps(mixed).encode())
    assert outcome.kind is Kind.PARTIAL and outcome.status == 207
    assert [(e["metricName"], e["source"]) for e in outcome.errors] == [("old", "collectionTime")]


def test_400_per_metric_is_rejected_and_parse_error_is_bad_request(client):
    outcome = post(client, body("old", ct=1000))
    assert outcome.kind is Kind.REJECTED and outcome.errors[0]["source"] == "collectionTime"
    outcome = post(client, b'[{"metricName":"a","metricValue":NaN}]')
    assert outcome.kind is Kind.BAD_REQUEST
    assert outcome.errors[0]["message"] == "Cannot parse content"


def test_413_without_retry_after_is_too_large(client, fake_blueflood):  # noqa: F811
    fake_blueflood.max_content_length = 100
    outcome = post(client, body("a", "b", "c"))
    assert outcome.kind is Kind.TOO_LARGE and outcome.status == 413
    fake_blueflood.max_content_length = 1_048_576
    # The server closed that connection; the next POST reconnects and works.
    assert post(client, body("a")).kind is Kind.OK


def test_retry_after_seconds_and_http_date(client, fake_blueflood):  # noqa: F811
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    fake_blueflood.push(
        Scripted(413, headers={"Retry-After": "7"}), Scripted(429, headers={"Retry-After": later})
    )
    first = post(client, body("a"))
    assert first.kind is Kind.RATE_LIMITED and first.retry_after == 7.0
    second = post(client, body("a"))
    assert second.kind is Kind.RATE_LIMITED and 25 < second.retry_after <= 31
    assert parse_retry_after("not a date") is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 403, 404, 405, 501, 415])
def test_server_and_config_errors_are_retried(client, fake_blueflood, status):  # noqa: F811
    fake_blueflood.push(status)
    outcome = post(client, body("a"))
    assert outcome.kind is Kind.RETRY and outcome.status == status
    assert fake_blueflood.stored == 0


def test_wrong_path_is_a_real_404(fake_blueflood, stats):  # noqa: F811
    c = BluefloodClient(fake_blueflood.url + "/nope", "t1", stats, timeout=5)
    assert post(c, body("a")).kind is Kind.RETRY
    assert fake_blueflood.requests[-1].status == 404
    c.close()


def test_connection_refused_and_timeout_are_retried(stats):
    with FakeBlueflood() as bf:
        url = bf.url
    c = BluefloodClient(url, "t1", stats, timeout=2)
    outcome = post(c, body("a"))
    assert outcome.kind is Kind.RETRY and outcome.status is None
    assert outcome.reason == "connection"
    c.close()
    with FakeBlueflood() as bf:
        bf.push(Scripted(200, delay=2))
        c = BluefloodClient(bf.url, "t1", stats, timeout=0.3)
        outcome = post(c, body("a"))
        assert outcome.kind is Kind.RETRY and outcome.reason == "timeout"
        c.close()


def test_close_without_response_is_retried(client, fake_blueflood):  # noqa: F811
    fake_blueflood.push(Scripted(close=True))
    outcome = post(client, body("a"))
    assert outcome.kind is Kind.RETRY and outcome.reason == "connection"


def test_gzip_body_arrives_intact(fake_blueflood, stats):  # noqa: F811
    c = BluefloodClient(fake_blueflood.url, "t1", stats, timeout=5, gzip=True)
    data = body(*[f"m.{i}" for i in range(50)])
    assert post(c, data).kind is Kind.OK
    req = fake_blueflood.requests[-1]
    assert req.headers["Content-Encoding"] == "gzip"
    assert len(req.raw) < len(data) and req.body == data
    assert fake_blueflood.stored == 50
    c.close()


def test_keep_alive_one_connection_for_many_posts(client, fake_blueflood):  # noqa: F811
    for i in range(5):
        assert post(client, body(f"k{i}")).kind is Kind.OK
    assert len(fake_blueflood.connections()) == 1


def test_a_pool_kept_as_large_as_the_posts_in_flight_opens_no_connection_per_post(
    fake_blueflood,  # noqa: F811
    stats,
):
    # Tenants' lanes share one client: its pool grows to what they may have in flight, else
    # every POST beyond the pool's size would open (and close) a connection of its own.
    fake_blueflood.delay = 0.05  # the four POSTs of a round overlap
    c = BluefloodClient(fake_blueflood.url, "t1", stats, timeout=5, pool_size=1)
    c.keep_connections(4)
    try:
        for round_ in range(3):
            posts = [gevent.spawn(c.post, body(f"r{round_}.{i}")) for i in range(4)]
            gevent.joinall(posts, timeout=15, raise_error=True)
            assert all(g.value.kind is Kind.OK for g in posts)
    finally:
        c.close()
    assert len(fake_blueflood.connections()) == 4


def test_stdout_client_writes_one_line_per_body(stats):
    out = io.BytesIO()
    c = StdoutClient(stats, out)
    assert c.post(b'[{"a":1}]').kind is Kind.OK
    assert c.post(b"[2]").kind is Kind.OK
    assert out.getvalue() == b'[{"a":1}]\n[2]\n'


def test_proxy_from_the_environment_is_still_used(fake_blueflood, stats, monkeypatch):  # noqa: F811
    # The environment is read once at start-up, not per POST, but it is still honoured.
    monkeypatch.setenv("HTTP_PROXY", fake_blueflood.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    c = BluefloodClient("http://blueflood.invalid:19000", "t1", stats, timeout=5)
    try:
        post(c, body("a"))
    finally:
        c.close()
    assert any("blueflood.invalid" in r.path for r in fake_blueflood.requests)


def test_a_body_goes_to_the_tenant_it_names(client, fake_blueflood):  # noqa: F811
    with gevent.Timeout(15):
        outcome = client.post(body("spooled"), "111")
    assert outcome.kind is Kind.OK
    assert fake_blueflood.requests[-1].path == "/v2.0/111/ingest"
    assert fake_blueflood.points("111", "spooled") and not fake_blueflood.points("t1", "spooled")


def test_connection_failures_are_told_in_plain_words(stats):
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        refused = BluefloodClient(f"http://127.0.0.1:{s.getsockname()[1]}", "t", stats)
        outcome = post(refused, body("a"))
    assert outcome.kind is Kind.RETRY and outcome.reason == "connection"
    assert outcome.failure == "connection refused"
    with socket.socket() as s:  # listens, never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        silent = BluefloodClient(f"http://127.0.0.1:{s.getsockname()[1]}", "t", stats, timeout=0.2)
        outcome = post(silent, body("a"))
    assert outcome.reason == "timeout"
    assert outcome.failure == "timed out (--request-timeout 0.2s)"
    unknown = BluefloodClient("http://no-such-host.invalid:19000", "t", stats)
    assert post(unknown, body("a")).failure == "name not resolved"


def test_an_http_failure_is_its_status(client, fake_blueflood):  # noqa: F811
    fake_blueflood.push(503)
    outcome = post(client, body("a"))
    assert outcome.kind is Kind.RETRY and outcome.failure == "HTTP 503"


def _tls_blueflood(cert: str, key: str, answers: int) -> tuple[str, threading.Thread]:
    """An HTTPS "Blueflood" on loopback answering 200 to `answers` connections, one POST each."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            for _ in range(answers):
                raw, _addr = listener.accept()
                try:
                    with ctx.wrap_socket(raw, server_side=True) as conn:
                        data = b""
                        while b"\r\n\r\n" not in data:
                            data += conn.recv(65536)
                        head, _, rest = data.partition(b"\r\n\r\n")
                        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                        while len(rest) < length:
                            rest += conn.recv(65536)
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                except (ssl.SSLError, OSError):
                    pass  # the client refused our certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"https://localhost:{port}", thread


def test_tls_is_verified_against_the_ca_bundle_from_the_environment(stats, tmp_path, monkeypatch):
    key, cert = _self_signed(tmp_path)
    url, server = _tls_blueflood(cert, key, answers=2)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    untrusted = BluefloodClient(url, "t1", stats, timeout=5)
    outcome = post(untrusted, body("a"))
    assert outcome.kind is Kind.RETRY and outcome.status is None
    assert outcome.failure.startswith("TLS error"), outcome.failure
    untrusted.close()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    trusted = BluefloodClient(url, "t1", stats, timeout=5)
    assert post(trusted, body("a")).kind is Kind.OK
    trusted.close()
    server.join(timeout=10)
