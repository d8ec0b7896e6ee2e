"""The receivers in-process: framing across reads, limits, refusal at the cap, drain at stop."""

from __future__ import annotations

import json
import os
import pickle
import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from gevent.event import Event

from fastforward import codec
from fastforward.config import load
from fastforward.receiver import Receivers, StartupError
from fastforward.stats import Stats
from tests.support import wait_until

pytestmark = pytest.mark.integration


class FakeFlow:
    def __init__(self) -> None:
        self.gate = Event()
        self.gate.set()
        self.kicks = 0

    def kick(self) -> None:
        self.kicks += 1

    def recount(self) -> None:
        pass  # no cap here: the gate is the test's to close


def frame(items: object) -> bytes:
    payload = pickle.dumps(items, protocol=2)
    return struct.pack("!L", len(payload)) + payload


def names(encoder) -> list[str]:  # noqa: ANN001
    return [m["metricName"] for body in encoder.take() for m in json.loads(body)]


@pytest.fixture
def make() -> Iterator:
    started: list[Receivers] = []

    def build(*argv: str) -> tuple[Receivers, dict[str, tuple]]:
        config = load(["--dry-run", *argv], environ={}).config
        stats = Stats()
        encoder = codec.Encoder(**config.encoder_options())
        r = Receivers(config, encoder, FakeFlow(), stats)
        r.start()
        started.append(r)
        ports = {f"{kind}/{proto}": addr for kind, proto, addr in r.addresses()}
        return r, ports

    yield build
    for r in started:
        r.stop(0.1)


def connect(addr: tuple) -> socket.socket:
    return socket.create_connection(addr[:2], timeout=5)


def test_frames_cut_at_random_points(make) -> None:  # noqa: ANN001
    r, ports = make("-e", "tcp:port=0:interface=127.0.0.1")
    ts = int(time.time())
    data = b"".join(frame([(f"m.{f}.{i}", (ts, i)) for i in range(50)]) for f in range(20))
    rng = random.Random(7)
    with connect(ports["tcp/pickle"]) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pos = 0
        while pos < len(data):
            n = rng.randint(1, 700)
            s.sendall(data[pos : pos + n])
            pos += n
            gevent.sleep(0)
    wait_until(lambda: r.encoder.pending_datapoints == 1000)
    assert len(set(names(r.encoder))) == 1000
    assert r.stats.get("frames_received", result="ok") == 20


def test_frame_larger_than_the_initial_buffer(make) -> None:  # noqa: ANN001
    r, ports = make("-e", "tcp:port=0:interface=127.0.0.1", "--max-frame-bytes", "4000000")
    ts = int(time.time())
    big = frame([(f"big.metric.name.{i:06d}", (ts, i)) for i in range(20_000)])
    assert len(big) > 256 * 1024
    with connect(ports["tcp/pickle"]) as s:
        s.sendall(big + frame([("after", (ts, 1))]))
    wait_until(lambda: r.encoder.pending_datapoints == 20_001)


def test_connection_cap_refuses_and_recovers(make) -> None:  # noqa: ANN001
    r, ports = make("-e", "tcp:port=0:interface=127.0.0.1", "--max-connections", "2")
    addr = ports["tcp/pickle"]
    a, b = connect(addr), connect(addr)
    wait_until(lambda: r.open_connections == 2)
    c = connect(addr)
    assert c.recv(1) == b""  # closed at once, not left waiting in the accept queue
    assert r.stats.get("connections_refused") == 1
    a.close()
    wait_until(lambda: r.open_connections == 1)
    d = connect(addr)
    d.sendall(frame([("ok", (int(time.time()), 1))]))
    wait_until(lambda: r.encoder.pending_datapoints == 1)
    for s in (b, c, d):
        s.close()


def test_idle_connections_are_closed(make) -> None:  # noqa: ANN001
    r, ports = make("-e", "tcp:port=0:interface=127.0.0.1", "--idle-timeout", "0.2")
    with connect(ports["tcp/pickle"]) as s:
        s.sendall(b"\x00\x00")  # half a length prefix, then silence (slowloris)
        assert s.recv(1) == b""
    assert r.stats.get("connections_timed_out") == 1


def test_gate_holds_reads_until_it_opens(make) -> None:  # noqa: ANN001
    r, ports = make("-e", "tcp:port=0:interface=127.0.0.1")
    r.flow.gate.clear()
    with connect(ports["tcp/pickle"]) as s:
        s.sendall(frame([("held", (int(time.time()), 1))]))
        # The connection's greenlet parks on the closed gate; once parked it cannot move on
        # until the gate opens, so what it decoded by then is all it will decode while closed.
        wait_until(lambda: r.open_connections == 1 and r.flow.gate.linkcount() == 1)
        assert r.encoder.pending_datapoints == 0, "decoded while the gate was closed"
        r.flow.gate.set()
        wait_until(lambda: r.encoder.pending_datapoints == 1)


def test_oversize_frame_closes_only_that_connection(make) -> None:  # noqa: ANN001
    r, ports = make("-e", "tcp:port=0:interface=127.0.0.1", "--max-frame-bytes", "1000")
    addr = ports["tcp/pickle"]
    with connect(addr) as good, connect(addr) as bad:
        bad.sendall(struct.pack("!L", 5000) + b"x" * 100)
        assert bad.recv(1) == b""
        good.sendall(frame([("good", (int(time.time()), 1))]))
        wait_until(lambda: r.encoder.pending_datapoints == 1)
    assert r.stats.get("frames_received", result="oversize") == 1


def test_overlong_line_is_dropped_and_the_next_one_kept(make) -> None:  # noqa: ANN001
    r, ports = make(
        "--line-endpoint", "tcp:port=0:interface=127.0.0.1",
        "-e", "udp:port=0:interface=127.0.0.1", "--protocol", "line",
    )  # fmt: skip
    ts = int(time.time())
    with connect(ports["tcp/line"]) as s:
        s.sendall(b"x" * 70_000)  # no newline in sight: cut at the line limit, not buffered
        wait_until(lambda: r.stats.get("datapoints_dropped", reason="line_too_long") == 1)
        s.sendall(b"x" * 70_000 + b" 1 2\n" + f"good.line 1 {ts}\n".encode())
    wait_until(lambda: r.encoder.pending_datapoints == 1)
    assert names(r.encoder) == ["good.line"]
    assert r.encoder.counters()["bad_line"] == 0


def test_udp_datagrams_are_complete_line_chunks(make) -> None:  # noqa: ANN001
    r, ports = make("-e", "udp:port=0:interface=127.0.0.1", "--protocol", "line")
    ts = int(time.time())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(f"u.a 1 {ts}\nu.b 2 {ts}".encode(), ports["udp/line"][:2])
    wait_until(lambda: r.encoder.pending_datapoints == 2)


def test_unix_socket_with_mode(make, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "ff.sock"
    r, _ = make("-e", f"unix:address={path}:mode=600")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(frame([("unix.metric", (int(time.time()), 1))]))
    wait_until(lambda: r.encoder.pending_datapoints == 1)
    r.stop(0.1)
    assert not path.exists()


def test_stop_reads_what_open_connections_hold(make) -> None:  # noqa: ANN001
    r, ports = make("-e", "tcp:port=0:interface=127.0.0.1")
    r.flow.gate.clear()  # nothing is read before the stop
    ts = int(time.time())
    s = connect(ports["tcp/pickle"])
    s.sendall(b"".join(frame([(f"d.{f}.{i}", (ts, i)) for i in range(100)]) for f in range(30)))
    wait_until(lambda: r.stats.get("connections_open") == 1, what="the connection accepted")
    assert r.encoder.pending_datapoints == 0  # the closed gate held every read back
    r.stop(1.0)
    s.close()
    assert r.encoder.pending_datapoints == 3000


def test_busy_port_is_a_startup_error(make) -> None:  # noqa: ANN001
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StartupError, match=f"tcp:port={port}.*in use"):
            make("-e", f"tcp:port={port}:interface=127.0.0.1")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_tcp6_endpoint_with_escaped_colons(make) -> None:  # noqa: ANN001
    r, ports = make("-e", r"tcp6:port=0:interface=\:\:1")
    addr = ports["tcp6/pickle"]
    with socket.create_connection(("::1", addr[1]), timeout=5) as s:
        s.sendall(frame([("v6.metric", (int(time.time()), 1))]))
    wait_until(lambda: r.encoder.pending_datapoints == 1)
