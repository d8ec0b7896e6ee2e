#!/usr/bin/env python3
"""Load generator for the end-to-end benchmark (standard library only).

Sends carbon datapoints to ``--host:--port`` over ``-c`` TCP connections and prints one JSON line
with what it did.  Datapoint ``i`` belongs to series ``i % series`` at timestamp
``base_ts + i // series``, so every ``(name, timestamp)`` pair is distinct and the sink can tell
loss from duplication.  Values are full-precision random floats.

* Burst (default): exactly ``-n`` datapoints as fast as the receiver reads them.  Every byte is
  built before the clock starts: pickle protocol 2 frames of ``--per-frame`` datapoints (what
  carbon-relay sends) or plaintext lines in chunks of the same size.
* Paced (``--rate R --seconds T``): ``R`` datapoints/s for ``T`` seconds.  Frames are patched
  from pre-built templates (only the timestamp changes), so memory stays flat.  Frame ``f`` is
  due at ``start + f * per_frame / R``; a datapoint with timestamp ``base_ts + k`` was sent no
  earlier than ``start + k * series / R``, which is how the sink's arrival times become latency.

Output keys: ``datapoints``, ``frames``, ``bytes``, ``start_ts`` (wall clock), ``seconds`` (until
every connection was sent and closed by the peer), ``rate``, ``base_ts``, ``late_s`` (paced: worst
lag behind schedule), ``step_sent`` (paced: when each timestamp was first sent), ``errors``.
Every wait is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import socket
import struct
import sys
import threading
import time
from typing import Any

LEAVES = ("user", "system", "idle", "iowait", "nice", "irq", "softirq", "steal")
# A timestamp placeholder that cannot be confused with real data after encoding.
PLACEHOLDER_TS = 0x7A7A7A7A


def series_names(count: int, prefix: str, kind: str = "plain") -> list[str]:
    """Graphite-like names: ``prefix.hostN.cpu.leaf``; ``routed``: the names of the routing
    benchmark (`rulesgen.routed_names`: prefix and regex rule hits, tags out of order)."""
    if kind == "routed":
        from rulesgen import routed_names

        return routed_names(count)
    return [f"{prefix}.host{s // len(LEAVES)}.cpu.{LEAVES[s % len(LEAVES)]}" for s in range(count)]


def encode(mode: str, items: list[tuple[str, tuple[int, float]]]) -> bytes:
    """One pickle frame (with its 4-byte length) or one chunk of plaintext lines."""
    if mode == "pickle":
        payload = pickle.dumps(items, protocol=2)
        return struct.pack(">I", len(payload)) + payload
    return "".join(f"{n} {v!r} {ts}\n" for n, (ts, v) in items).encode()


def build_burst(a: argparse.Namespace, names: list[str], base_ts: int) -> list[list[bytes]]:
    """All frames of a burst, dealt round-robin to the connections."""
    rng = random.Random(a.seed)
    s = len(names)
    conns: list[list[bytes]] = [[] for _ in range(a.connections)]
    for f, i in enumerate(range(0, a.n, a.per_frame)):
        items = [
            (names[j % s], (base_ts + j // s, rng.random() * 100.0))
            for j in range(i, min(i + a.per_frame, a.n))
        ]
        conns[f % a.connections].append(encode(a.mode, items))
    return conns


class Templates:
    """Pre-built frames for paced mode; ``frame(f)`` patches the timestamp of frame ``f``."""

    VARIANTS = 4  # distinct value sets, so consecutive timestamps do not repeat values

    def __init__(self, a: argparse.Namespace, names: list[str], base_ts: int) -> None:
        if len(names) % a.per_frame:
            raise SystemExit("paced mode needs --series to be a multiple of --per-frame")
        rng = random.Random(a.seed)
        self.base_ts = base_ts
        self.per_step = len(names) // a.per_frame  # frames per timestamp
        self.pickle = a.mode == "pickle"
        self.marker = self._ts_bytes(PLACEHOLDER_TS)
        self.frames: list[list[bytes]] = []
        for _ in range(self.VARIANTS):
            row = []
            for j in range(self.per_step):
                block = names[j * a.per_frame : (j + 1) * a.per_frame]
                items = [(n, (PLACEHOLDER_TS, rng.random() * 100.0)) for n in block]
                frame = encode(a.mode, items)
                if frame.count(self.marker) != len(block):
                    raise SystemExit("timestamp placeholder collided with data; change --seed")
                row.append(frame)
            self.frames.append(row)

    def _ts_bytes(self, ts: int) -> bytes:
        # pickle protocol 2 writes a timestamp below 2**31 as BININT; plaintext as digits.
        return b"J" + struct.pack("<i", ts) if self.pickle else b" %d\n" % ts

    def frame(self, f: int) -> bytes:
        step, j = divmod(f, self.per_step)
        tmpl = self.frames[step % self.VARIANTS][j]
        return tmpl.replace(self.marker, self._ts_bytes(self.base_ts + step))


def connect(a: argparse.Namespace) -> socket.socket:
    deadline = time.monotonic() + a.timeout
    while True:
        try:
            s = socket.create_connection((a.host, a.port), timeout=a.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def finish(sock: socket.socket, deadline: float) -> str | None:
    """Half-close and wait until the peer has read everything and closed its side."""
    sock.shutdown(socket.SHUT_WR)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return None
        except TimeoutError:
            break
        except OSError as e:
            return repr(e)
    return "timeout waiting for the peer to close"


def burst_worker(
    a: argparse.Namespace,
    sock: socket.socket,
    chunks: list[bytes],
    go: threading.Event,
    res: dict[str, Any],
) -> None:
    try:
        go.wait(a.timeout)
        deadline = time.monotonic() + a.timeout
        sock.settimeout(a.timeout)
        data = b"".join(chunks)
        chunks.clear()
        sock.sendall(data)
        res["error"] = finish(sock, deadline)
    except Exception as e:  # report it, never hang
        res["error"] = repr(e)
    finally:
        res["end"] = time.monotonic()
        sock.close()


def paced_worker(
    a: argparse.Namespace,
    sock: socket.socket,
    k: int,
    tm: Templates,
    t0: list[float],
    go: threading.Event,
    res: dict[str, Any],
) -> None:
    try:
        go.wait(a.timeout)
        start = t0[0]
        frames = int(a.rate * a.seconds) // a.per_frame
        deadline = start + a.seconds + a.timeout
        sock.settimeout(a.timeout)
        late = 0.0
        sent = 0
        steps: dict[int, float] = {}
        for f in range(k, frames, a.connections):
            due = start + f * a.per_frame / a.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                late = max(late, now - due)
            step, j = divmod(f, tm.per_step)
            if j == 0:  # when the first datapoint of this timestamp really left
                steps[step] = time.monotonic() - start
            sock.sendall(tm.frame(f))
            sent += 1
            if now > deadline:
                raise TimeoutError("paced send deadline")
        res["frames"] = sent
        res["late_s"] = late
        res["steps"] = steps
        res["error"] = finish(sock, deadline)
    except Exception as e:
        res["error"] = repr(e)
    finally:
        res["end"] = time.monotonic()
        sock.close()


def main(argv: list[str] | None = None) -> int:
    """Build, connect, send, report; returns 1 when a connection failed."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=["pickle", "line"], default="pickle")
    p.add_argument("-n", "--n", type=int, default=1_000_000, help="burst: datapoints to send")
    p.add_argument("-c", "--connections", type=int, default=4)
    p.add_argument("--per-frame", type=int, default=500, help="datapoints per frame/chunk")
    p.add_argument("--series", type=int, default=10_000, help="distinct metric names")
    p.add_argument("--prefix", default="bench")
    p.add_argument(
        "--names",
        choices=["plain", "routed"],
        default="plain",
        help="plain: PREFIX.hostN.cpu.leaf; routed: for the rules of rulesgen.py (tags too)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.0, help="paced: datapoints/s (0 = burst)")
    p.add_argument("--seconds", type=float, default=60.0, help="paced: how long")
    p.add_argument("--timeout", type=float, default=300.0, help="bound for every wait")
    a = p.parse_args(argv)
    if min(a.n, a.connections, a.per_frame, a.series) <= 0 or a.rate < 0:
        p.error("counts must be positive")

    names = series_names(a.series, a.prefix, a.names)
    total = int(a.rate * a.seconds) // a.per_frame * a.per_frame if a.rate else a.n
    # Timestamps end before now, inside Blueflood's accepted window.
    base_ts = int(time.time()) - (total + a.series - 1) // a.series - 60
    g0 = time.monotonic()
    if a.rate:
        tm = Templates(a, names, base_ts)
        nbytes = 0
    else:
        conns = build_burst(a, names, base_ts)
        nbytes = sum(len(c) for cs in conns for c in cs)
    gen_s = time.monotonic() - g0

    socks = [connect(a) for _ in range(a.connections)]
    res: list[dict[str, Any]] = [{} for _ in socks]
    go = threading.Event()
    t0 = [0.0]
    if a.rate:
        threads = [
            threading.Thread(target=paced_worker, args=(a, s, k, tm, t0, go, res[k]))
            for k, s in enumerate(socks)
        ]
    else:
        threads = [
            threading.Thread(target=burst_worker, args=(a, s, conns[k], go, res[k]))
            for k, s in enumerate(socks)
        ]
        del conns
    for t in threads:
        t.start()
    start_ts = time.time()
    t0[0] = time.monotonic()
    go.set()
    for t in threads:
        t.join(a.timeout + a.seconds + 5)
    seconds = max(r.get("end", time.monotonic()) for r in res) - t0[0]
    errors = [r["error"] for r in res if r.get("error")]
    out = {
        "mode": a.mode,
        "datapoints": total,
        "frames": (total + a.per_frame - 1) // a.per_frame,
        "bytes": nbytes,
        "connections": a.connections,
        "series": a.series,
        "per_frame": a.per_frame,
        "rate_target": a.rate,
        "start_ts": start_ts,
        "seconds": round(seconds, 6),
        "rate": round(total / seconds, 1) if seconds > 0 else None,
        "base_ts": base_ts,
        "gen_seconds": round(gen_s, 3),
        "late_s": round(max((r.get("late_s", 0.0) for r in res), default=0.0), 4),
        # paced: seconds after start_ts at which timestamp base_ts + k was first sent
        "step_sent": [
            round(t, 4) for _, t in sorted(kv for r in res for kv in r.get("steps", {}).items())
        ],
        "errors": errors,
    }
    print(json.dumps(out), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
