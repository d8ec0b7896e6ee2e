#!/usr/bin/env python3
"""The I/O floor: what the bytes of a run cost in and out of the sockets, with no codec.

A stand-in forwarder for ``e2e.py`` on the same stack as fastforward (gevent, one process): it
reads carbon connections exactly as the receivers do (``recv_into`` a 256 KiB buffer, pickle
frames found by their length prefix, plaintext datapoints by their newline) but decodes and
encodes nothing; for every ``--body-datapoints`` datapoints read it POSTs one pre-built
Blueflood body of the size fastforward would send (same count of ``"metricName"`` keys, so the
sink counts it) over keep-alive HTTP/1.1 on a plain socket. Its CPU per datapoint is therefore
the floor under fastforward's: receive, framing, one POST per body, gevent scheduling, kernel.

    python3 bench/e2e.py --no-track-unique --runs 5 --compare fastforward=@fastforward \\
        --compare "io-floor={PYTHON} bench/iofloor.py --port {PORT} --protocol {PROTOCOL} \\
        --sink {SINK_PORT}"

Datapoints per pickle frame are not decoded, so they are taken from ``--per-frame`` (the load
generator's, 500). Run with ``--no-track-unique``: the bodies repeat one set of names.
"""

from __future__ import annotations

import argparse
import json
import struct
import time

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402 - after the patch, as in fastforward
from gevent.queue import Queue  # noqa: E402
from gevent.server import StreamServer  # noqa: E402
from gevent.socket import create_connection  # noqa: E402

READ_BUFFER = 256 * 1024
_length = struct.Struct("!I").unpack_from


def template_body(datapoints: int) -> bytes:
    """A Blueflood body shaped like fastforward's (name, 17-digit value, ms timestamp, TTL)."""
    now_ms = int(time.time()) * 1000
    items = [
        {
            "collectionTime": now_ms,
            "ttlInSeconds": 86400,
            "metricValue": 123.45678901234567,
            "metricName": f"bench.host{i // 8}.cpu.user",
        }
        for i in range(datapoints)
    ]
    return json.dumps(items, separators=(",", ":")).encode()


class Floor:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.pending = 0  # datapoints read, not yet covered by a body
        self.body = template_body(a.body_datapoints)
        self.outbox: Queue[int] = Queue()
        self.last_read = time.monotonic()

    def counted(self, datapoints: int) -> None:
        self.pending += datapoints
        self.last_read = time.monotonic()
        while self.pending >= self.a.body_datapoints:
            self.pending -= self.a.body_datapoints
            self.outbox.put(self.a.body_datapoints)

    def serve(self, sock: object, _address: object) -> None:
        buf = bytearray(READ_BUFFER)
        mv = memoryview(buf)
        start = end = 0
        pickle = self.a.protocol == "pickle"
        while True:
            if end == len(buf):  # move the unread tail to the front
                buf[: end - start] = buf[start:end]
                end -= start
                start = 0
            n = sock.recv_into(mv[end:])  # type: ignore[attr-defined]
            if not n:
                break
            if not pickle:
                self.counted(buf.count(b"\n", end, end + n))
                end += n
                start = end
                continue
            end += n
            frames = 0
            while end - start >= 4:
                stop = start + 4 + _length(buf, start)[0]
                if stop > end:
                    break
                start = stop
                frames += 1
            self.counted(frames * self.a.per_frame)
        sock.close()  # type: ignore[attr-defined]

    def burst_end(self) -> None:
        """Send the last partial body once reads stop, as fastforward does (50 ms)."""
        while True:
            gevent.sleep(0.05)
            if self.pending and time.monotonic() - self.last_read >= 0.05:
                self.outbox.put(self.pending)
                self.pending = 0

    def sender(self) -> None:
        conn = create_connection(("127.0.0.1", self.a.sink))
        reader = conn.makefile("rb")
        path = f"/v2.0/{self.a.tenant}/ingest"
        partial: dict[int, bytes] = {}  # the last bodies of bursts, built when first needed
        for datapoints in self.outbox:
            body = self.body
            if datapoints != self.a.body_datapoints:
                body = partial.get(datapoints) or partial.setdefault(
                    datapoints, template_body(datapoints)
                )
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            conn.sendall(head + body)
            length = 0
            while True:  # the status line and headers; the sink answers with no body
                line = reader.readline()
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b""):
                    break
            reader.read(length)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True, help="listen on 127.0.0.1:PORT")
    p.add_argument("--protocol", choices=("pickle", "line"), default="pickle")
    p.add_argument("--sink", type=int, required=True, help="the HTTP sink's port on 127.0.0.1")
    p.add_argument("--tenant", default="bench")
    p.add_argument("--per-frame", type=int, default=500, help="datapoints per pickle frame")
    p.add_argument("--body-datapoints", type=int, default=5000)
    p.add_argument("--senders", type=int, default=4, help="POSTs in flight, as --concurrency")
    a = p.parse_args()
    floor = Floor(a)
    server = StreamServer(("127.0.0.1", a.port), floor.serve)
    server.start()
    jobs = [gevent.spawn(floor.sender) for _ in range(a.senders)]
    jobs.append(gevent.spawn(floor.burst_end))
    gevent.joinall(jobs, raise_error=True)


if __name__ == "__main__":
    main()
