"""The plain-http client (plainhttp.py) against every kind of answer a server may give.

Each test starts a tiny loopback server that reads requests and answers them with scripted raw
bytes, so the answers can be what the fake Blueflood never sends: chunked, gzip, no length,
HTTP/1.0, garbage, a reset in the middle. Most go through ``BluefloodClient``, which uses this
client for plain http:// without a proxy, so each case is checked as the forwarder sees it.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
import pytest

from fastforward.blueflood import BluefloodClient, Kind, Outcome
from fastforward.plainhttp import PlainHttpPool
from fastforward.stats import Stats
from tests.support import wait_until

KEEP, CLOSE, RESET, HANG = "keep", "close", "reset", "hang"


@dataclass
class Step:
    """What the server does with one request: write ``raw``, then keep the connection, close
    it (FIN), reset it (RST), or hang (answer nothing more, keep it open)."""

    raw: bytes = b""
    then: str = KEEP


@dataclass
class Received:
    head: bytes
    body: bytes
    connection: int  # which accepted connection carried it (0, 1, ...)


@dataclass
class WireServer:
    """Answers each request on loopback with the next ``Step`` of the script."""

    script: list[Step]
    received: list[Received] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.open.append(conn)
            number = self.connections
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn, number), daemon=True).start()

    def _talk(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(_header(head, b"content-length") or 0)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                self.received.append(Received(head, buffer[:length], number))
                buffer = buffer[length:]
                step = self.script.pop(0)
                conn.sendall(step.raw)
                if step.then == CLOSE:
                    conn.close()
                    return
                if step.then == RESET:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.close()
                    return
                if step.then == HANG:
                    conn.recv(1)  # until the client gives up and closes
                    return
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for conn in self.open:
            conn.close()


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def answer(
    status: str = "200 OK", body: bytes = b"", headers: str = "", length: bool = True
) -> bytes:
    """One raw HTTP/1.1 answer."""
    extra = f"Content-Length: {len(body)}\r\n" if length else ""
    return f"HTTP/1.1 {status}\r\n{headers}{extra}\r\n".encode() + body


def chunked(status: str, body: bytes, headers: str = "") -> bytes:
    """``body`` in three chunks, one with an extension, and a trailer."""
    a, b = len(body) // 3, 2 * len(body) // 3
    parts = [body[:a], body[a:b], body[b:]]
    out = f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n{headers}\r\n".encode()
    out += f"{len(parts[0]):x};name=value\r\n".encode() + parts[0] + b"\r\n"
    for part in parts[1:]:
        out += f"{len(part):X}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\nX-Trailer: yes\r\n\r\n"


BODY = b'[{"collectionTime":1,"ttlInSeconds":86400,"metricValue":1.5,"metricName":"a"}]'
ERRORS_207 = json.dumps(
    {"errors": [{"metricName": "old", "source": "collectionTime", "message": "too old"}]}
).encode()


@pytest.fixture
def serve() -> Callable[..., WireServer]:
    started: list[WireServer] = []

    def start(*steps: Step) -> WireServer:
        server = WireServer(list(steps))
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def post_via_client(
    server: WireServer, data: bytes = BODY, stats: Stats | None = None, **options: object
) -> Outcome:
    """One POST through ``BluefloodClient`` (timeout 5 s unless ``options`` say otherwise)."""
    return posts_via_client(server, data, stats=stats, **options)[0]


def posts_via_client(
    server: WireServer, *bodies: bytes, stats: Stats | None = None, **options: object
) -> list[Outcome]:
    """POSTs of ``bodies`` in turn through one ``BluefloodClient`` (its pool kept between
    them), closed afterwards; timeout 5 s unless ``options`` say otherwise."""
    options = {"timeout": 5, **options}
    client = BluefloodClient(server.url, "t1", stats or Stats(), **options)  # type: ignore[arg-type]
    try:
        with gevent.Timeout(15):
            return [client.post(data) for data in bodies]
    finally:
        client.close()


def test_keep_alive_reuses_one_connection_and_the_bytes_arrive_exactly(serve):
    server = serve(Step(answer()), Step(answer()), Step(answer()))
    big = b"[" + b",".join([BODY[1:-1]] * 20_000) + b"]"  # ~1.6 MB: sent without a copy
    assert [o.kind for o in posts_via_client(server, BODY, big, BODY)] == [Kind.OK] * 3
    assert [r.body for r in server.received] == [BODY, big, BODY]
    assert server.connections == 1
    head = server.received[0].head
    assert head.startswith(b"POST /v2.0/t1/ingest HTTP/1.1\r\n")
    assert _header(head, b"host") == f"127.0.0.1:{server.port}".encode()
    assert _header(head, b"accept-encoding") == b"identity"
    assert _header(head, b"content-type") == b"application/json"
    assert _header(head, b"expect") is None  # never waits for a 100 Continue


def test_gzip_request_body_round_trips(serve):
    server = serve(Step(answer()))
    assert post_via_client(server, gzip=True).kind is Kind.OK
    (request,) = server.received
    assert _header(request.head, b"content-encoding") == b"gzip"
    assert gzip.decompress(request.body) == BODY


def test_a_chunked_answer_is_read_whole_and_the_connection_kept(serve):
    server = serve(Step(chunked("207 Multi-Status", ERRORS_207)), Step(answer()))
    partial, then = posts_via_client(server, BODY, BODY)
    assert partial.kind is Kind.PARTIAL
    assert [e["metricName"] for e in partial.errors] == ["old"]
    assert then.kind is Kind.OK
    assert server.connections == 1


@pytest.mark.parametrize(
    "encoding, encode",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send it
    ],
)
def test_a_compressed_answer_is_decoded(serve, encoding, encode):
    errors = json.dumps({"errors": [{"metricName": "a", "source": "metricValue"}]}).encode()
    server = serve(
        Step(answer("400 Bad Request", encode(errors), f"Content-Encoding: {encoding}\r\n"))
    )
    outcome = post_via_client(server)
    assert outcome.kind is Kind.REJECTED
    assert outcome.errors == [{"metricName": "a", "source": "metricValue"}]


def test_connection_close_is_honoured(serve):
    server = serve(Step(answer(headers="Connection: close\r\n")), Step(answer()))
    assert [o.kind for o in posts_via_client(server, BODY, BODY)] == [Kind.OK, Kind.OK]
    assert [r.connection for r in server.received] == [0, 1]


def test_an_answer_without_a_length_is_read_to_the_end(serve):
    raw = answer("401 Unauthorized", b"token expired", length=False)
    server = serve(Step(raw, then=CLOSE), Step(answer()))
    outcomes = posts_via_client(server, BODY, BODY)
    assert [o.kind for o in outcomes] == [Kind.UNAUTHORIZED, Kind.OK]
    assert [r.connection for r in server.received] == [0, 1]


def test_an_http_1_0_answer_works_and_is_not_reused(serve):
    server = serve(Step(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"), Step(answer()))
    pool = PlainHttpPool("127.0.0.1", server.port, timeout=5)
    try:
        first = pool.post("/x", b"", b"1")
        assert (first.status, first.body) == (200, b"{}")
        assert pool.post("/x", b"", b"2").status == 200
    finally:
        pool.close()
    assert [(r.body, r.connection) for r in server.received] == [(b"1", 0), (b"2", 1)]


def test_a_kept_alive_connection_the_server_closed_is_not_used_again(serve):
    # The server answers and then closes while the client holds the connection in its pool:
    # the next POST must notice before writing, not lose its body or fail.
    server = serve(Step(answer(), then=CLOSE), Step(answer()))
    client = BluefloodClient(server.url, "t1", Stats(), timeout=5)
    try:
        assert client.post(b"[1]").kind is Kind.OK
        wait_until(lambda: server.open and server.open[0].fileno() == -1, what="server close")
        outcome = client.post(b"[2]")
        assert outcome.kind is Kind.OK, outcome.failure
    finally:
        client.close()
    assert [(r.body, r.connection) for r in server.received] == [(b"[1]", 0), (b"[2]", 1)]


def test_stray_bytes_after_an_answer_retire_the_connection(serve):
    server = serve(Step(answer() + b"garbage"), Step(answer()))
    assert [o.kind for o in posts_via_client(server, b"[1]", b"[2]")] == [Kind.OK, Kind.OK]
    assert [r.connection for r in server.received] == [0, 1]


def test_100_continue_before_the_answer_is_skipped(serve):
    server = serve(Step(b"HTTP/1.1 100 Continue\r\n\r\n" + answer("202 Accepted")))
    outcome = post_via_client(server)
    assert (outcome.kind, outcome.status) == (Kind.OK, 202)


@pytest.mark.parametrize(
    "raw, kind",
    [
        (answer("207 Multi-Status", ERRORS_207), Kind.PARTIAL),
        (answer("413 Request Entity Too Large", b"too big"), Kind.TOO_LARGE),
        (answer("413 Request Entity Too Large", headers="Retry-After: 9\r\n"), Kind.RATE_LIMITED),
        (answer("401 Unauthorized", b"expired"), Kind.UNAUTHORIZED),
        (
            answer(
                "400 Bad Request",
                json.dumps({"errors": [{"message": "Cannot parse content"}]}).encode(),
            ),
            Kind.BAD_REQUEST,
        ),
        (answer("503 Service Unavailable", b"later"), Kind.RETRY),
    ],
)
def test_status_and_body_reach_the_outcome(serve, raw, kind):
    server = serve(Step(raw))
    stats = Stats()
    outcome = post_via_client(server, stats=stats)
    assert outcome.kind is kind
    assert stats.get("http_responses", status=str(outcome.status)) == 1
    if kind is Kind.RATE_LIMITED:
        assert outcome.retry_after == 9.0


def test_a_413_sent_while_a_large_body_is_still_going_out_is_read(serve):
    # A server over its size limit answers 413 after the headers and closes without reading
    # the body: the write fails, but the answer is there and says "split".
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        conn, _ = listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        conn.sendall(answer("413 Request Entity Too Large", headers="Connection: close\r\n"))
        conn.close()

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    client = BluefloodClient(
        f"http://127.0.0.1:{listener.getsockname()[1]}", "t1", Stats(), timeout=5
    )
    try:
        outcome = client.post(b"[" + b"1," * 4_000_000 + b"1]")
    finally:
        client.close()
        listener.close()
    assert outcome.kind is Kind.TOO_LARGE, outcome.failure


@pytest.mark.parametrize(
    "step, detail",
    [
        (Step(b"", then=CLOSE), "connection closed without an answer"),
        (
            Step(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", then=CLOSE),
            "connection closed in the middle of the answer (7 of 100 body bytes)",
        ),
        (
            Step(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", then=RESET),
            "connection reset",
        ),
        (
            Step(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            "malformed answer: not an HTTP status line: b'SSH-2.0-OpenSSH_9.6'",
        ),
        (
            Step(b"HTTP/1.1 2xx OK\r\n\r\n"),
            "malformed answer: bad status code in b'HTTP/1.1 2xx OK'",
        ),
        (
            Step(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"),
            "malformed answer: bad header line b'no colon here'",
        ),
        (
            Step(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n12345"),
            "malformed answer: bad Content-Length '5, 6'",
        ),
        (
            Step(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            "malformed answer: bad chunk size b'zz'",
        ),
        (
            Step(answer(body=b"not gzip", headers="Content-Encoding: gzip\r\n")),
            "malformed answer: gzip body does not decode",
        ),
    ],
)
def test_a_broken_answer_is_a_retry_told_in_plain_words(serve, step, detail):
    server = serve(step)
    outcome = post_via_client(server)
    assert (outcome.kind, outcome.status, outcome.reason) == (Kind.RETRY, None, "connection")
    assert outcome.failure.startswith(detail), outcome.failure


def test_a_server_that_never_answers_times_out(serve):
    server = serve(Step(b"HTTP/1.1 200 OK\r\n", then=HANG))
    outcome = post_via_client(server, timeout=0.2)
    assert (outcome.kind, outcome.reason) == (Kind.RETRY, "timeout")
    assert outcome.failure == "timed out (--request-timeout 0.2s)"


def test_a_tenant_outside_ascii_is_percent_encoded(serve):
    server = serve(Step(answer()))
    client = BluefloodClient(server.url, "t1", Stats(), timeout=5)
    try:
        assert client.post(BODY, "café").kind is Kind.OK
    finally:
        client.close()
    assert server.received[0].head.startswith(b"POST /v2.0/caf%C3%A9/ingest HTTP/1.1\r\n")


def test_the_pool_keeps_as_many_idle_connections_as_asked(serve):
    server = serve(*[Step(answer()) for _ in range(6)])
    pool = PlainHttpPool("127.0.0.1", server.port, timeout=5, size=1)
    pool.keep(2)
    try:
        for _round in range(2):
            posts = [gevent.spawn(pool.post, "/x", b"", b"[]") for _ in range(3)]
            gevent.joinall(posts, timeout=15, raise_error=True)
    finally:
        pool.close()
    # Three at once need three connections; two stay for the second round, one is made again.
    assert server.connections == 4


def test_works_with_the_standard_socket_module_too(serve):
    # The daemon runs it on gevent's patched sockets (as this test process does); it must work
    # on plain ones as well: keep-alive, a stale connection, a chunked answer, a timeout.
    script = textwrap.dedent(
        """
        import socket, threading
        from fastforward.plainhttp import PlainHttpPool

        OK = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok"
        CHUNKED = b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n"
        CHUNKED += b"2\\r\\nhi\\r\\n0\\r\\n\\r\\n"
        listener = socket.create_server(("127.0.0.1", 0))
        accepted = []
        closed = threading.Event()

        def read_request(conn):
            data = b""
            while not data.endswith(b"[]"):
                data += conn.recv(65536)

        def serve():
            conn, _ = listener.accept()  # two requests kept alive, then closed by the server
            accepted.append(conn)
            read_request(conn)
            conn.sendall(OK)
            read_request(conn)
            conn.sendall(CHUNKED)
            conn.close()
            closed.set()
            conn, _ = listener.accept()  # one answer, then a request left unanswered
            accepted.append(conn)
            read_request(conn)
            conn.sendall(OK)
            read_request(conn)

        threading.Thread(target=serve, daemon=True).start()
        pool = PlainHttpPool("127.0.0.1", listener.getsockname()[1], timeout=0.5)
        print(pool.post("/a", b"", b"[]").body, pool.post("/b", b"", b"[]").body)
        closed.wait(10)
        print(pool.post("/c", b"", b"[]").body)  # the pooled one was closed: a new one
        try:
            pool.post("/d", b"", b"[]")
        except TimeoutError:
            print("timeout", len(accepted))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["b'ok' b'hi'", "b'ok'", "timeout 2"]
