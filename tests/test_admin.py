"""Admin endpoint: /metrics in Prometheus format, /health, 404; self-metric Graphite lines."""

from __future__ import annotations

import gevent
import pytest
from gevent import socket
from prometheus_client.parser import text_string_to_metric_families

from fastforward.admin import AdminServer, metrics_text, self_metric_lines
from fastforward.stats import METRICS, Stats


def http(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.0 request on a gevent socket (works whether or not stdlib is patched)."""
    with gevent.Timeout(5):
        conn = socket.create_connection(("127.0.0.1", port))
        try:
            conn.sendall(f"{method} {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        finally:
            conn.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return status, {k.lower(): v for k, v in headers.items()}, body


class Health:
    def __init__(self) -> None:
        self.state: tuple[bool, str] = (True, "")

    def __call__(self) -> tuple[bool, str]:
        return self.state


@pytest.fixture
def stats() -> Stats:
    return Stats()


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
def server(stats, health):
    srv = AdminServer("127.0.0.1", 0, stats, health)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from /metrics."""
    status, headers, body = http(port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_started_on_a_kernel_chosen_port(server):
    assert server.port > 0


def test_metrics_show_counter_and_gauge_values(server, stats):
    stats.incr("datapoints_received", 7, protocol="pickle")
    stats.incr("datapoints_received", 3, protocol="line")
    stats.incr("datapoints_dropped", 2, reason="nan")
    stats.incr("bodies_sent", 5)
    stats.set("buffered_bytes", 1234, place="disk")
    stats.set("connections_open", 4)
    m = scrape(server.port)
    assert m["fastforward_datapoints_received_total"] == {
        (("protocol", "pickle"),): 7,
        (("protocol", "line"),): 3,
    }
    dropped = m["fastforward_datapoints_dropped_total"]
    assert dropped[(("reason", "nan"),)] == 2
    # Every other reason is there from the start, at 0.
    assert {v for k, v in dropped.items() if k != (("reason", "nan"),)} == {0}
    assert len(dropped) > 10
    assert m["fastforward_bodies_sent_total"] == {(): 5}
    assert m["fastforward_buffered_bytes"] == {
        (("place", "disk"),): 1234,
        (("place", "memory"),): 0,
    }
    assert m["fastforward_connections_open"] == {(): 4}
    assert "fastforward_uptime_seconds" in m
    # Values are read at each scrape, not at start.
    stats.incr("bodies_sent", 1)
    assert scrape(server.port)["fastforward_bodies_sent_total"] == {(): 6}


def test_metrics_carry_type_and_help(server, stats):
    stats.incr("bodies_sent", 1)
    stats.set("spool_files", 2)
    _status, _headers, body = http(server.port, "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["fastforward_bodies_sent"].type == "counter"
    assert families["fastforward_bodies_sent"].documentation == METRICS["bodies_sent"][1]
    assert families["fastforward_spool_files"].type == "gauge"
    assert families["fastforward_spool_files"].documentation == METRICS["spool_files"][1]


def test_servers_do_not_share_state(health):
    # Two servers over two Stats in one process: no global registry collisions.
    a_stats, b_stats = Stats(), Stats()
    a_stats.incr("bodies_sent", 1)
    b_stats.incr("bodies_sent", 2)
    a = AdminServer("127.0.0.1", 0, a_stats, health)
    b = AdminServer("127.0.0.1", 0, b_stats, health)
    a.start()
    b.start()
    try:
        assert scrape(a.port)["fastforward_bodies_sent_total"] == {(): 1}
        assert scrape(b.port)["fastforward_bodies_sent_total"] == {(): 2}
    finally:
        a.stop()
        b.stop()


def test_health_ok_and_unavailable_with_reason(server, health):
    status, _h, body = http(server.port, "/health")
    assert (status, body) == (200, b"ok\n")
    health.state = (False, "blueflood unreachable for 42s, spool full")
    status, _h, body = http(server.port, "/health")
    assert status == 503
    assert body.decode().strip() == "blueflood unreachable for 42s, spool full"


def test_health_check_that_raises_is_503(server, health):
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server._health = broken
    status, _h, body = http(server.port, "/health")
    assert status == 503 and b"boom" in body


def test_root_lists_the_paths(server):
    status, headers, body = http(server.port, "/")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    listed = [line.split()[0] for line in body.decode().splitlines() if line.startswith("/")]
    assert listed == ["/metrics", "/health", "/debug/senders", "/debug/rejects", "/debug/series"]
    for path in listed:  # every path listed answers
        assert http(server.port, path)[0] == 200


def test_unknown_path_is_404_and_other_methods_405(server):
    assert http(server.port, "/index.html")[0] == 404
    assert http(server.port, "/metrics/extra")[0] == 404
    assert http(server.port, "/metrics", method="POST")[0] == 405


@pytest.mark.parametrize("path", ["/", "/metrics", "/health", "/debug/series"])
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_known_path_answers_other_methods_405_with_allow_get(server, path, method):
    status, headers, _body = http(server.port, path, method=method)
    assert status == 405 and headers["allow"] == "GET"


def test_stop_closes_the_port(stats, health):
    srv = AdminServer("127.0.0.1", 0, stats, health)
    srv.start()
    port = srv.port
    srv.stop()
    with pytest.raises(OSError), gevent.Timeout(5):
        socket.create_connection(("127.0.0.1", port))


def test_self_metric_lines_format():
    stats = Stats()
    stats.incr("datapoints_received", 7, protocol="pickle")
    stats.incr("http_responses", 2, status="503")
    stats.set("buffered_bytes", 1.5, place="disk")
    stats.incr("datapoints_dropped", 1, reason="bad.value here")
    out = self_metric_lines(stats, "relay.host1", 1_700_000_000.9)
    lines = out.decode().splitlines()
    assert out.endswith(b"\n")
    assert "relay.host1.datapoints_received.pickle 7 1700000000" in lines
    assert "relay.host1.http_responses.503 2 1700000000" in lines
    assert "relay.host1.buffered_bytes.disk 1.5 1700000000" in lines
    # A label value is one path component: dots and spaces replaced.
    assert "relay.host1.datapoints_dropped.bad_value_here 1 1700000000" in lines
    for line in lines:
        name, value, ts = line.split(" ")
        assert name.startswith("relay.host1.") and ".." not in name
        float(value)
        assert ts == "1700000000"
    # Every sample is there (uptime included).
    assert len(lines) == sum(1 for _ in stats.samples())


def test_self_metric_lines_go_through_the_line_codec(codec_impl):
    stats = Stats()
    stats.incr("bodies_sent", 3)
    enc = codec_impl.Encoder()
    data = self_metric_lines(stats, "ff.", 1_700_000_000)
    assert enc.add_lines(data, now_ms=1_700_000_000_000) == len(data)
    assert enc.counters()["bad_line"] == 0
    assert b'"metricName":"ff.bodies_sent"' in b"".join(enc.take())


def test_every_known_series_exists_at_zero_before_any_event():
    text = metrics_text(Stats()).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    dropped = {
        s.labels["reason"]: s.value for s in families["fastforward_datapoints_dropped"].samples
    }
    assert {"bad_frame", "oversize_frame", "nan", "expired_in_spool"} <= set(dropped)
    assert set(dropped.values()) == {0}
    for name, label in (
        ("fastforward_http_responses", "status"),
        ("fastforward_retries", "cause"),
        ("fastforward_datapoints_rejected", "source"),
        ("fastforward_datapoints_received", "protocol"),
    ):
        samples = families[name].samples
        assert samples and all(s.value == 0 and label in s.labels for s in samples), name
    assert [s.value for s in families["fastforward_bodies_sent"].samples] == [0]
    # A metric labelled only at run time has no unlabelled series to mislead a sum.
    assert "fastforward_auth_requests" not in families


def test_latency_is_a_histogram():
    stats = Stats()
    for seconds in (0.003, 0.03, 0.03, 45.0):
        stats.observe("flush_latency_seconds", seconds)
    families = {f.name: f for f in text_string_to_metric_families(metrics_text(stats).decode())}
    hist = families["fastforward_flush_latency_seconds"]
    assert hist.type == "histogram"
    by_name: dict[str, dict[str, float]] = {}
    for s in hist.samples:
        by_name.setdefault(s.name, {})[s.labels.get("le", "")] = s.value
    buckets = by_name["fastforward_flush_latency_seconds_bucket"]
    assert buckets["0.005"] == 1 and buckets["0.05"] == 3 and buckets["30.0"] == 3
    assert buckets["+Inf"] == 4
    assert by_name["fastforward_flush_latency_seconds_count"] == {"": 4}
    assert by_name["fastforward_flush_latency_seconds_sum"] == {"": pytest.approx(45.063)}
    lines = self_metric_lines(stats, "ff", 1_700_000_000).decode().splitlines()
    assert "ff.flush_latency_seconds.le_0_05 3 1700000000" in lines
    assert "ff.flush_latency_seconds.le__Inf 4 1700000000" in lines
    assert any(line.startswith("ff.flush_latency_seconds.sum 45.06") for line in lines)
