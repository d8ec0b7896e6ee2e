"""Codec throughput, run by hand (not in CI): datapoints per second, median of N runs (min-max).

Input: 1,000,000 datapoints in frames of 500, pickle protocol 2, 10,000 series, float
timestamps ``now - i`` and full-precision random float values (``random() * 100``), as
carbon-relay sends them. Cases, all in one process on the same frames:

- ``compiled``: ``fastforward._codec.Encoder.add_pickle`` + ``take`` (bodies as POSTed)
- ``twin``: the same through the pure-Python ``fastforward._codec_py``
- ``pickle.loads``: the stdlib unpickler alone (builds objects, writes no JSON)
- ``loads+dicts+json``: ``pickle.loads`` + one dict per datapoint + ``json.dumps`` (the
  original forwarder's shape)
- ``lines compiled``: the same datapoints as plaintext lines through ``add_lines``

    .venv/bin/python bench/codec.py [--datapoints N] [--per-frame K] [--reps R] [--clock cpu]

``--clock cpu`` (or ``--cpu``) times each run in process CPU time instead of wall time (steadier on
a shared host, and the yardstick for e2e.py's datapoints per CPU-second).
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import statistics
import sys
import time
from collections.abc import Callable

from fastforward import _codec_py

try:
    from fastforward import _codec
except ImportError:  # pragma: no cover - bench run without a build
    _codec = None


def make_input(n: int, per_frame: int, series: int, seed: int = 1) -> tuple[list, list, int]:
    """Pickle frames (no length prefix), plaintext chunks, and now in ms."""
    rng = random.Random(seed)
    now = time.time()
    names = [f"app.host{i % 100}.metric{i}.value" for i in range(series)]
    frames = []
    chunks = []
    for start in range(0, n, per_frame):
        batch = [
            (names[(start + j) % series], (now - (start + j) % 3600, rng.random() * 100.0))
            for j in range(min(per_frame, n - start))
        ]
        frames.append(pickle.dumps(batch, protocol=2))
        chunks.append("".join(f"{m} {v!r} {int(t)}\n" for m, (t, v) in batch).encode())
    return frames, chunks, int(now * 1000)


def run(fn: Callable[[], object], reps: int, clock: Callable[[], float]) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datapoints", type=int, default=1_000_000)
    ap.add_argument("--per-frame", type=int, default=500)
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: per CPU-second of this process (the yardstick for e2e.py's per CPU-s)",
    )
    ap.add_argument("--cases", default="", help="comma-separated subset of the case names")
    ap.add_argument("--cpu", action="store_true", help="the same as --clock cpu")
    a = ap.parse_args(argv)
    frames, chunks, now_ms = make_input(a.datapoints, a.per_frame, a.series)
    n = a.datapoints
    loads = pickle.loads
    dumps = json.dumps

    def codec_case(mod) -> Callable[[], object]:
        def f() -> None:
            enc = mod.Encoder(prefix="pfx", max_past_ms=-1, max_future_ms=-1)
            for fr in frames:
                enc.add_pickle(fr, now_ms=now_ms)
                if enc.ready_bodies:
                    enc.take(partial=False)
            enc.take()
            assert enc.counters()["accepted"] == n

        return f

    def lines_case(mod) -> Callable[[], object]:
        def f() -> None:
            enc = mod.Encoder(prefix="pfx", max_past_ms=-1, max_future_ms=-1)
            for ch in chunks:
                enc.add_lines(ch, now_ms=now_ms)
                if enc.ready_bodies:
                    enc.take(partial=False)
            enc.take()
            assert enc.counters()["accepted"] == n

        return f

    def loads_only() -> None:
        for fr in frames:
            loads(fr)

    def loads_dicts_json() -> None:
        for fr in frames:
            dumps(
                [
                    {
                        "collectionTime": int(t * 1000),
                        "ttlInSeconds": 86400,
                        "metricValue": float(v),
                        "metricName": "pfx." + m,
                    }
                    for m, (t, v) in loads(fr)
                ]
            ).encode()

    cases: dict[str, Callable[[], object]] = {}
    if _codec is not None:
        cases["compiled (add_pickle + take)"] = codec_case(_codec)
    cases["twin _codec_py (add_pickle + take)"] = codec_case(_codec_py)
    cases["pickle.loads alone"] = loads_only
    cases["pickle.loads + dicts + json.dumps"] = loads_dicts_json
    if _codec is not None:
        cases["compiled lines (add_lines + take)"] = lines_case(_codec)
    wanted = [c.strip() for c in a.cases.split(",") if c.strip()]
    print(
        f"python {sys.version.split()[0]}, {n:,} datapoints, {len(frames)} frames of "
        f"{a.per_frame}, {sum(map(len, frames)):,} pickle bytes, median of {a.reps}"
        f" ({'CPU' if a.clock == 'cpu' or a.cpu else 'wall'} time)",
        file=sys.stderr,
    )
    print("| case | datapoints/s median (min-max) | ns/datapoint |")
    print("|---|---|---|")
    for name, fn in cases.items():
        if wanted and not any(w in name for w in wanted):
            continue
        cpu = a.clock == "cpu" or a.cpu
        ts = run(fn, a.reps, time.process_time if cpu else time.perf_counter)
        med = statistics.median(ts)
        print(
            f"| {name} | {n / med / 1e6:.2f}M ({n / max(ts) / 1e6:.2f}-{n / min(ts) / 1e6:.2f}M)"
            f" | {med / n * 1e9:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
