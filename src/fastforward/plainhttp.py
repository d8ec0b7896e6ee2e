"""A minimal HTTP/1.1 keep-alive client for plain ``http://`` POSTs, without a proxy.

Why not urllib3 here: its Python work per request (the pool's checkout and dropped-connection
poll, Retry and Timeout objects, http.client's header parsing through ``email.parser``, the
response object): a 600 KB POST took 159 us of user CPU through urllib3 and 42 us written and
read by hand, about 20 ns per datapoint (bench/postcost.py; bench/README.md, "Where the CPU
goes").
``blueflood.BluefloodClient`` uses this module for plain http:// with no proxy and keeps
urllib3 for https:// and proxies.

What it does: a small pool of kept-alive sockets; a pooled socket is checked before reuse
with a non-blocking peek (EOF or bytes nobody asked for mean the server closed or broke it:
close it, take another); the request goes out as its header and its body (one system call
when the body is small, two without copying a large one); the status line and headers are
parsed by hand; a body is read by Content-Length, chunked, or to EOF; gzip or deflate answers
are decoded (we ask for ``identity``, but a server may ignore that); ``Connection: close``
and HTTP/1.0 answers close the socket after the answer; 1xx answers are skipped.

It raises ``OSError`` (refused, reset, timed out, name not resolved) or ``AnswerError`` (the
server's bytes are not an HTTP answer we can read) and leaves the meaning of the status to the
caller. It works with the standard socket module and with gevent's patched one.
"""

from __future__ import annotations

import socket
import zlib
from dataclasses import dataclass
from urllib.parse import quote

MAX_HEAD_BYTES = 65536  # status line and headers of one answer
MAX_BODY_BYTES = 16 * 1024 * 1024  # an answer's body (Blueflood's error lists stay far below)
_SMALL_BODY = 65536  # below this a body is copied after its header: one send instead of two
_READ_SIZE = 65536
_CRLF = b"\r\n"
_PATH_SAFE = "/!$&'()*+,;=:@-._~%"  # what a path may hold as it is (RFC 3986)


class AnswerError(Exception):
    """The server's answer could not be read; the message says why in plain words."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case; repeated headers joined with ", "
    body: bytes  # decoded when the answer was gzip or deflate

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Connection:
    """One socket and the bytes received on it but not yet consumed."""

    __slots__ = ("sock", "buffer", "eof")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.eof = False

    def fill(self) -> bool:
        """Read more into the buffer; False at EOF."""
        if self.eof:
            return False
        data = self.sock.recv(_READ_SIZE)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def line(self, what: str) -> bytes:
        """One CRLF-terminated line (without the CRLF) of at most MAX_HEAD_BYTES."""
        while True:
            end = self.buffer.find(_CRLF)
            if end >= 0:
                line = self.take(end)
                del self.buffer[:2]
                return line
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise AnswerError(f"malformed answer: {what} longer than {MAX_HEAD_BYTES} bytes")
            if not self.fill():
                raise AnswerError(f"connection closed in the middle of the answer ({what})")

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self.fill():
                raise AnswerError(
                    f"connection closed in the middle of the answer "
                    f"({len(self.buffer)} of {n} body bytes)"
                )
        return self.take(n)

    def close(self) -> None:
        self.sock.close()


def _peek(sock: socket.socket) -> bytes | None:
    """The next byte waiting on ``sock``, left there: b"" at EOF, None when nothing has come.
    Non-blocking, so it never waits; raises OSError if the connection was reset."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return None
    finally:
        sock.settimeout(timeout)


def _is_stale(sock: socket.socket) -> bool:
    """True if a kept-alive socket must not carry another request: the server closed it (EOF),
    reset it, or sent bytes nobody asked for."""
    try:
        return _peek(sock) is not None
    except OSError:
        return True


class PlainHttpPool:
    """Keep-alive connections to one ``host:port``; ``post`` sends one request at a time on
    each connection, so several greenlets (or threads) may post at once."""

    def __init__(self, host: str, port: int, *, timeout: float, size: int = 4) -> None:
        self.host = host.strip("[]")  # an IPv6 literal comes bracketed from the URL
        self.port = port
        self.timeout = timeout  # for connecting and for every wait for the server's bytes
        self.size = max(1, size)  # idle connections kept; more may be open while posting
        self._idle: list[_Connection] = []
        self._closed = False
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = netloc if port == 80 else f"{netloc}:{port}"

    def keep(self, n: int) -> None:
        """Keep up to ``n`` idle connections from now on (never fewer than now)."""
        self.size = max(self.size, n)

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def post(self, path: str, headers: bytes, body: bytes) -> Answer:
        """POST ``body`` to ``path``. ``headers``: the header lines, each ending in CRLF,
        without Host and Content-Length (added here)."""
        if not path.isascii():  # a tenant may be any UTF-8: percent-encoded, as urllib3 does
            path = quote(path, safe=_PATH_SAFE)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"Content-Length: {len(body)}\r\n".encode("latin-1")
            + headers
            + _CRLF
        )
        conn = self._checkout()
        try:
            _send(conn.sock, head, body)
            answer, reusable = _read_answer(conn)
        except BaseException:
            conn.close()
            raise
        if reusable and not conn.buffer and not self._closed and len(self._idle) < self.size:
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    def _checkout(self) -> _Connection:
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:  # none idle (another thread may have taken the last one)
                break
            if not _is_stale(conn.sock):
                return conn
            conn.close()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover - not a TCP socket; nothing to tune
            pass
        return _Connection(sock)


def _send(sock: socket.socket, head: bytes, body: bytes) -> None:
    """Write the request. If the server closes while the body is still going out (a 413 for
    a body over its limit, then close), its answer may be waiting: the caller reads it, and
    only if there is none does the write's error stand."""
    try:
        if len(body) < _SMALL_BODY:
            sock.sendall(head + body)
        else:
            sock.sendall(head)
            sock.sendall(body)
    except (BrokenPipeError, ConnectionResetError):
        if not _answer_waiting(sock):
            raise


def _answer_waiting(sock: socket.socket) -> bool:
    try:
        return bool(_peek(sock))
    except OSError:
        return False


def _read_answer(conn: _Connection) -> tuple[Answer, bool]:
    """The final answer (1xx answers skipped) and whether the connection may be reused."""
    while True:
        try:
            status_line = conn.line("status line")
        except AnswerError:
            if conn.eof and not conn.buffer:
                raise AnswerError("connection closed without an answer") from None
            raise
        version, status = _parse_status_line(status_line)
        headers = _parse_headers(conn)
        if 100 <= status < 200:
            continue  # 100 Continue and friends: the real answer follows
        break
    keep_alive = version == "HTTP/1.1" and "close" not in _tokens(headers.get("connection"))
    if status in (204, 304):
        return Answer(status, headers, b""), keep_alive
    if "chunked" in _tokens(headers.get("transfer-encoding")):
        body = _read_chunked(conn)
    elif "content-length" in headers:
        body = conn.exactly(_content_length(headers["content-length"]))
    else:  # no length: the body ends where the connection does
        body = _read_to_eof(conn)
        keep_alive = False
    return Answer(status, headers, _decode(body, headers.get("content-encoding"))), keep_alive


def _parse_status_line(line: bytes) -> tuple[str, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise AnswerError(f"malformed answer: not an HTTP status line: {bytes(line[:80])!r}")
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        raise AnswerError(f"malformed answer: bad status code in {bytes(line[:80])!r}")
    return parts[0].decode("ascii"), int(code)


def _parse_headers(conn: _Connection) -> dict[str, str]:
    headers: dict[str, str] = {}
    size = 0
    while True:
        line = conn.line("headers")
        if not line:
            return headers
        size += len(line) + 2
        if size > MAX_HEAD_BYTES:
            raise AnswerError(f"malformed answer: headers longer than {MAX_HEAD_BYTES} bytes")
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise AnswerError(f"malformed answer: bad header line {bytes(line[:80])!r}")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in value.split(",")} if value else set()


def _content_length(value: str) -> int:
    values = {v.strip() for v in value.split(",")}  # repeated but equal is allowed
    if len(values) != 1 or not (length := values.pop()).isdigit():
        raise AnswerError(f"malformed answer: bad Content-Length {value!r}")
    if int(length) > MAX_BODY_BYTES:
        raise AnswerError(f"malformed answer: body of {length} bytes is over the limit")
    return int(length)


def _read_chunked(conn: _Connection) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = conn.line("chunk size").split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise AnswerError(
                f"malformed answer: bad chunk size {bytes(size_line[:40])!r}"
            ) from None
        if size < 0:
            raise AnswerError("malformed answer: negative chunk size")
        if size == 0:
            while conn.line("trailer"):  # trailers up to the empty line, ignored
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY_BYTES:
            raise AnswerError("malformed answer: chunked body over the limit")
        parts.append(conn.exactly(size))
        if conn.exactly(2) != _CRLF:
            raise AnswerError("malformed answer: chunk not followed by CRLF")


def _read_to_eof(conn: _Connection) -> bytes:
    while conn.fill():
        if len(conn.buffer) > MAX_BODY_BYTES:
            raise AnswerError("malformed answer: body without a length over the limit")
    return conn.take(len(conn.buffer))


def _decode(body: bytes, encoding: str | None) -> bytes:
    codings = [c for c in _tokens(encoding) if c and c != "identity"]
    if not codings or not body:
        return body
    if codings not in (["gzip"], ["x-gzip"], ["deflate"]):
        raise AnswerError(f"malformed answer: unsupported Content-Encoding {encoding!r}")
    try:
        if codings[0] == "deflate":
            try:
                return _inflate(body, zlib.MAX_WBITS)  # zlib-wrapped, as the RFC says
            except zlib.error:
                return _inflate(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send
        return _inflate(body, 16 + zlib.MAX_WBITS)
    except zlib.error as exc:
        raise AnswerError(f"malformed answer: {codings[0]} body does not decode ({exc})") from None


def _inflate(data: bytes, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, MAX_BODY_BYTES + 1)
    if len(out) > MAX_BODY_BYTES:
        raise zlib.error("decoded body over the limit")
    return out
