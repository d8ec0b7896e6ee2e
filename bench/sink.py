#!/usr/bin/env python3
"""Counting sinks for the end-to-end benchmark (standard library only).

Modes:

* ``http`` (default): a Blueflood stand-in. ``POST /v2.0/<tenant>/ingest`` (and ``/ingest/multi``)
  is answered ``200`` at once; datapoints are counted by the number of ``"metricName"`` keys.
* ``--carbon pickle``: a carbon pickle receiver (4-byte length + pickle), what carbon-relay sends.
* ``--carbon line``: a plaintext receiver (``name value ts`` lines), what carbon-c-relay sends.

``--track-unique`` keeps every batch and, on ``GET /stats?unique`` (and at exit), counts the
distinct ``(metricName, collectionTime)`` pairs, so loss and duplication can be told apart
without slowing the receive path (``unique``, ``duplicates``, and ``complete_ts``: the arrival of
the batch that made the distinct count reach ``--expect``); ``--keys-file`` writes those distinct
keys at exit, so a test can tell which datapoints are missing.  ``--latency`` records
``(arrival time, oldest timestamp, datapoints)`` per batch, written to ``--stats-file`` at exit.

``GET /stats`` on the HTTP port (``--stats-port`` in carbon modes) returns the counters as JSON:
``datapoints``, ``requests``, ``bytes`` (JSON, after inflating ``Content-Encoding: gzip`` bodies),
``compressed_bytes`` (gzip bodies as received), ``first_ts``, ``last_ts`` (wall-clock arrival of the
first/last datapoint), ``invalid``.

One thread, one ``selectors`` loop; it exits on SIGTERM/SIGINT or after ``--max-seconds``.
SIGUSR1 pauses it (nothing is accepted, read or answered: a Blueflood that hangs, /stats
included) and resumes it at the next one.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import pickle
import selectors
import signal
import socket
import sys
import time
import zlib
from typing import Any

NEEDLE = b'"metricName"'
RECV_SIZE = 1 << 18
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)


class Stats:
    """Counters of one sink.

    With ``track_unique`` the raw batches are kept and folded into the set of distinct keys
    only when asked (``resolve``), so key extraction never slows the receive path while a
    forwarder is being timed.  ``complete_ts`` is the arrival time of the batch that made the
    distinct count reach ``expect``.
    """

    def __init__(self, track_unique: bool, latency: bool, expect: int) -> None:
        self.track_unique = track_unique
        self.expect = expect
        self.datapoints = 0
        self.requests = 0
        self.bytes = 0
        self.compressed_bytes = 0  # bytes on the wire of gzip bodies (``bytes`` is after inflating)
        self.invalid = 0
        self.connections = 0
        self.ingest_connections = 0  # connections that posted data (not /stats polls)
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.complete_ts: float | None = None
        self.unique: set[Any] = set()
        self.pending: list[tuple[float, str, Any]] = []
        self.latency: list[tuple[float, float, int]] | None = [] if latency else None

    def accepted(
        self, count: int, nbytes: int, raw: Any = None, kind: str = "", oldest: float | None = None
    ) -> None:
        """Account one batch; ``raw`` (of ``kind``) is kept for ``resolve`` when tracking."""
        if not count:
            return
        now = time.time()
        self.datapoints += count
        self.requests += 1
        self.bytes += nbytes
        if self.first_ts is None:
            self.first_ts = now
        self.last_ts = now
        if raw is not None and self.track_unique:
            self.pending.append((now, kind, raw))
        if self.latency is not None and oldest is not None:
            self.latency.append((now, oldest, count))

    def resolve(self) -> None:
        """Fold the kept batches into the distinct set."""
        for now, kind, raw in self.pending:
            if kind == "json":
                keys = json_keys(bytes(raw))[1]
                if keys is None:
                    self.invalid += 1
                    continue
            elif kind == "pickle":
                keys = zip(map(_first, raw), map(_first, map(_second, raw)), strict=True)
            else:
                toks = raw.split()
                keys = zip(toks[0::3], map(float, toks[2::3]), strict=False)
            self.unique.update(keys)
            if self.complete_ts is None and self.expect and len(self.unique) >= self.expect:
                self.complete_ts = now
        self.pending.clear()

    def as_dict(self, resolve: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "datapoints": self.datapoints,
            "requests": self.requests,
            "bytes": self.bytes,
            "compressed_bytes": self.compressed_bytes,
            "invalid": self.invalid,
            "connections": self.connections,
            "ingest_connections": self.ingest_connections,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "now": time.time(),
        }
        if self.track_unique and resolve:
            self.resolve()
            d["unique"] = len(self.unique)
            d["duplicates"] = self.datapoints - len(self.unique)
            d["complete_ts"] = self.complete_ts
        return d


def json_keys(body: bytes) -> tuple[int, list[bytes] | None, float | None, bool]:
    """Count the datapoints of a Blueflood body; return (count, keys, oldest_seconds, valid).

    The fast path splits on ``"`` and relies on the compact layout fastforward and the original
    forwarder write (``collectionTime``, ``ttlInSeconds``, ``metricValue``, ``metricName``); any
    other layout falls back to a full JSON parse.
    """
    toks = body.split(b'"')
    n = len(toks) // 10
    if (
        len(toks) == 10 * n + 1
        and toks[1::10].count(b"collectionTime") == n
        and toks[7::10].count(b"metricName") == n
    ):
        cts = toks[2::10]  # b':1700000000000,'
        oldest = int(min(cts)[1:-1]) / 1000.0 if n else None
        return n, list(map(operator.add, toks[9::10], cts)), oldest, True
    try:
        items = json.loads(body)
        keys = [(it["metricName"].encode() + b":%d," % it["collectionTime"]) for it in items]
    except (ValueError, KeyError, TypeError, AttributeError):
        return body.count(NEEDLE), None, None, False
    oldest = min(it["collectionTime"] for it in items) / 1000.0 if items else None
    return len(keys), keys, oldest, True


def oldest_ms(body: bytearray) -> int:
    """The older of the first and the last ``collectionTime`` of a body: cheap, and exact
    for forwarders that keep arrival order."""
    i = body.find(b'"collectionTime":')
    j = body.rfind(b'"collectionTime":')
    if i < 0:
        return 0
    vals = []
    for p in (i + 17, j + 17):
        e = p
        while e < len(body) and 48 <= body[e] <= 57:
            e += 1
        vals.append(int(body[p:e] or b"0"))
    return min(vals)


class Conn:
    """One accepted connection and its read buffer."""

    def __init__(self, sock: socket.socket, kind: str) -> None:
        self.sock = sock
        self.kind = kind
        self.buf = bytearray()
        self.closed = False
        self.body: bytearray | None = None  # a large HTTP body being read in place
        self.got = 0
        self.ingested = False
        self.request: tuple[bytes, bytes, bool] = (b"", b"", True)


class Sink:
    """The select loop serving every mode."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.st = Stats(args.track_unique, args.latency, args.expect)
        self.sel = selectors.DefaultSelector()
        self.running = True
        self.paused = False  # toggled by SIGUSR1

    def listen(self, port: int, kind: str) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.a.host, port))
        s.listen(512)
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, kind)

    def accept(self, lsock: socket.socket, kind: str) -> None:
        for _ in range(64):
            try:
                c, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            c.setblocking(False)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.st.connections += 1
            self.sel.register(c, selectors.EVENT_READ, Conn(c, kind))

    def close(self, conn: Conn) -> None:
        if not conn.closed:
            conn.closed = True
            self.sel.unregister(conn.sock)
            conn.sock.close()

    def send(self, conn: Conn, data: bytes) -> None:
        # Responses are tiny; a blocking sendall cannot stall the loop for long.
        try:
            conn.sock.setblocking(True)
            conn.sock.sendall(data)
            conn.sock.setblocking(False)
        except OSError:
            self.close(conn)

    def on_read(self, conn: Conn) -> None:
        if conn.body is not None:
            self.read_body(conn)
            return
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if conn.kind == "line" and conn.buf:
                self.feed_line(conn, final=True)
            self.close(conn)
            return
        conn.buf += data
        if conn.kind == "http":
            self.feed_http(conn)
        elif conn.kind == "pickle":
            self.feed_pickle(conn)
        else:
            self.feed_line(conn)

    # ------------------------------------------------------------------ http
    def read_body(self, conn: Conn) -> None:
        """Read the rest of a large body straight into its buffer (no re-copying)."""
        assert conn.body is not None
        try:
            n = conn.sock.recv_into(memoryview(conn.body)[conn.got :])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if not n:
            self.close(conn)
            return
        conn.got += n
        if conn.got == len(conn.body):
            body, conn.body = conn.body, None
            method, path, keep, gz = conn.request
            self.request(conn, method, path, body, keep, gz)

    def feed_http(self, conn: Conn) -> None:
        buf = conn.buf
        while not conn.closed:
            he = buf.find(b"\r\n\r\n")
            if he < 0:
                if len(buf) > 65536:
                    self.close(conn)
                return
            head = bytes(buf[:he]).lower()
            i = head.find(b"\r\ncontent-length:")
            clen = 0
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                clen = int(head[i + 17 : j if j >= 0 else len(head)])
            line = head.split(b"\r\n", 1)[0].split(b" ")
            keep = not (b"\r\nconnection: close" in head or line[-1] == b"http/1.0")
            gz = b"\r\ncontent-encoding: gzip" in head
            path = line[1] if len(line) > 1 else b""
            if len(buf) < he + 4 + clen:
                if clen > RECV_SIZE:
                    conn.body = bytearray(clen)
                    conn.got = len(buf) - he - 4
                    conn.body[: conn.got] = buf[he + 4 :]
                    conn.request = (line[0], path, keep, gz)
                    buf.clear()
                return
            body = buf[he + 4 : he + 4 + clen]
            del buf[: he + 4 + clen]
            self.request(conn, line[0], path, body, keep, gz)

    def request(
        self, conn: Conn, method: bytes, path: bytes, body: bytearray, keep: bool, gz: bool
    ) -> None:
        st = self.st
        if method == b"post" and b"/ingest" in path:
            if gz:  # count what Blueflood would store: the decompressed JSON
                st.compressed_bytes += len(body)
                body = bytearray(zlib.decompress(body, wbits=31))
            oldest = None
            if not conn.ingested:
                conn.ingested = True
                st.ingest_connections += 1
            if st.latency is not None:
                oldest = oldest_ms(body) / 1000.0
            st.accepted(body.count(NEEDLE), len(body), body, "json", oldest)
            self.send(conn, OK if keep else OK_CLOSE)
        elif method == b"get" and path.startswith(b"/stats"):
            rb = json.dumps(st.as_dict(resolve=b"unique" in path)).encode()
            hdr = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            self.send(
                conn, hdr % len(rb) + (b"\r\n" if keep else b"Connection: close\r\n\r\n") + rb
            )
        else:
            self.send(conn, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        if not keep:
            self.close(conn)

    # ---------------------------------------------------------------- carbon
    def feed_pickle(self, conn: Conn) -> None:
        buf, pos, end = conn.buf, 0, len(conn.buf)
        while end - pos >= 4:
            flen = int.from_bytes(buf[pos : pos + 4], "big")
            if end - pos - 4 < flen:
                break
            payload = bytes(buf[pos + 4 : pos + 4 + flen])
            pos += 4 + flen
            try:
                # Trusted local peer (the relay under test), never exposed beyond 127.0.0.1.
                items = pickle.loads(payload)
                oldest = None
                if self.st.latency is not None and items:
                    oldest = float(min(map(_first, map(_second, items))))
            except Exception:
                self.st.invalid += 1
                continue
            self.st.accepted(len(items), flen + 4, items, "pickle", oldest)
        del buf[:pos]

    def feed_line(self, conn: Conn, final: bool = False) -> None:
        buf = conn.buf
        cut = len(buf) if final else buf.rfind(b"\n") + 1
        if cut <= 0:
            return
        chunk = bytes(buf[:cut])
        del buf[:cut]
        count = chunk.count(b"\n") + (not chunk.endswith(b"\n"))
        oldest = None
        if self.st.latency is not None:
            stamps = chunk.split()[2::3]
            oldest = min(map(float, stamps)) if stamps else None
        self.st.accepted(count, cut, chunk, "line", oldest)

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        a = self.a
        if a.carbon:
            self.listen(a.port, a.carbon)
            self.listen(a.stats_port, "http")
        else:
            self.listen(a.port, "http")
        deadline = time.monotonic() + a.max_seconds
        while self.running and time.monotonic() < deadline:
            if self.paused:
                time.sleep(0.05)
                continue
            for key, _mask in self.sel.select(0.5):
                if isinstance(key.data, str):
                    self.accept(key.fileobj, key.data)  # type: ignore[arg-type]
                elif not key.data.closed:
                    self.on_read(key.data)
        if a.stats_file:
            d = self.st.as_dict(resolve=True)
            if self.st.latency is not None:
                d["latency"] = self.st.latency
            tmp = a.stats_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(d, f)
            os.replace(tmp, a.stats_file)
        if a.keys_file and self.st.track_unique:
            self.write_keys(a.keys_file)

    def write_keys(self, path: str) -> None:
        """One distinct key a line: ``name:collectionTime,`` (JSON) or ``name timestamp``."""
        self.st.resolve()
        with open(path + ".tmp", "wb") as f:
            for key in self.st.unique:
                if isinstance(key, bytes):
                    f.write(key + b"\n")
                else:
                    name, ts = key
                    f.write(b"%s %d\n" % (name if isinstance(name, bytes) else name.encode(), ts))
        os.replace(path + ".tmp", path)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the sink until stopped."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="data port")
    p.add_argument("--carbon", choices=["pickle", "line"], help="carbon TCP receiver mode")
    p.add_argument("--stats-port", type=int, default=0, help="HTTP /stats port (carbon modes)")
    p.add_argument("--track-unique", action="store_true", help="count distinct (name, time)")
    p.add_argument("--expect", type=int, default=0, help="datapoints that complete the run")
    p.add_argument("--latency", action="store_true", help="record arrival per batch")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="safety bound")
    p.add_argument("--stats-file", default="", help="write the final stats JSON here at exit")
    p.add_argument(
        "--keys-file", default="", help="with --track-unique: write the distinct keys here at exit"
    )
    a = p.parse_args(argv)
    if a.carbon and not a.stats_port:
        sys.exit("--carbon needs --stats-port")
    sink = Sink(a)

    def stop(_signum: int, _frame: object) -> None:
        sink.running = False

    def pause(_signum: int, _frame: object) -> None:
        sink.paused = not sink.paused

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, pause)
    signal.signal(signal.SIGINT, stop)
    sink.run()


if __name__ == "__main__":
    main()
