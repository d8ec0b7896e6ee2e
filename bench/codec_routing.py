"""Codec throughput with routing rules against without, run by hand (not in CI).

The rule set and names of ``bench/rules.py``: 100 prefix rules and 10 regex rules with
rewrites, storage schemas, ``--tags keep`` (a third of the names carry three tags in shuffled
order, so normalisation has work to do). The stream repeats its distinct names in turn, as
carbon sends every series once per interval: ``--datapoints`` in pickle frames of
``--per-frame`` (protocol 2, float timestamps, random float values), and the same datapoints as
plaintext lines. Cases, interleaved in one process on the same input, median of ``--reps``:

- ``no rules``: ``Encoder(prefix=...)`` without a router (today's path)
- ``rules, warm``: one encoder with ``router=Router.decide`` kept across runs (after the
  warm-up run its decision cache holds every name: the steady state of a running daemon)
- ``rules, cold``: a new Router and encoder per run (every distinct name is decided once: a
  start, or the first interval after a reload)

    .venv/bin/python bench/codec_routing.py [--datapoints N] [--distinct D] [--reps R]
        [--clock cpu|wall] [--input pickle|lines|both] [--glibc-malloc]

Prints codec-only datapoints per CPU-second (``--clock cpu``, the default) and each routed
case's ratio to ``no rules``. malloc is tuned as the daemon tunes it (``memtune``: megabyte
bodies from the heap, not fresh pages each); ``--glibc-malloc`` keeps glibc's defaults.
"""

from __future__ import annotations

import argparse
import pickle
import random
import statistics
import sys
import time
from collections.abc import Callable

from rules import SCHEMAS, names, rules_text

from fastforward import _codec
from fastforward.memtune import tune_malloc
from fastforward.routing import Router, parse_rules, parse_schemas


def make_input(n: int, per_frame: int, pool: list[str]) -> tuple[list[bytes], list[bytes], int]:
    rng = random.Random(1)
    now = time.time()
    frames, chunks = [], []
    for start in range(0, n, per_frame):
        batch = [
            (pool[(start + j) % len(pool)], (now - 30.0, rng.random() * 100.0))
            for j in range(min(per_frame, n - start))
        ]
        frames.append(pickle.dumps(batch, protocol=2))
        chunks.append("".join(f"{m} {v!r} {int(t)}\n" for m, (t, v) in batch).encode())
    return frames, chunks, int(now * 1000)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datapoints", type=int, default=1_000_000)
    ap.add_argument("--per-frame", type=int, default=500)
    ap.add_argument("--distinct", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--input", choices=["pickle", "lines", "both"], default="both")
    ap.add_argument("--glibc-malloc", action="store_true", help="do not tune malloc")
    a = ap.parse_args(argv)
    tuned = not a.glibc_malloc and tune_malloc()
    rules = parse_rules(rules_text())
    schemas = parse_schemas(SCHEMAS)
    pool = names(a.distinct)
    frames, chunks, now_ms = make_input(a.datapoints, a.per_frame, pool)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    n = a.datapoints

    def feed(enc: _codec.Encoder, kind: str) -> None:
        add = enc.add_pickle if kind == "pickle" else enc.add_lines
        for data in frames if kind == "pickle" else chunks:
            add(data, now_ms=now_ms)
            if enc.ready_bodies:
                enc.take_routed(partial=False)
        enc.take_routed()

    def plain(kind: str) -> Callable[[], _codec.Encoder]:
        def run() -> _codec.Encoder:
            enc = _codec.Encoder(prefix="pfx")
            feed(enc, kind)
            return enc

        return run

    def warm(kind: str) -> Callable[[], _codec.Encoder]:
        enc = _codec.Encoder(prefix="pfx", router=Router(rules, schemas=schemas).decide)

        def run() -> _codec.Encoder:
            feed(enc, kind)
            return enc

        return run

    def cold(kind: str) -> Callable[[], _codec.Encoder]:
        def run() -> _codec.Encoder:
            enc = _codec.Encoder(prefix="pfx", router=Router(rules, schemas=schemas).decide)
            feed(enc, kind)
            return enc

        return run

    kinds = ["pickle", "lines"] if a.input == "both" else [a.input]
    cases = {
        f"{kind}: {label}": make(kind)
        for kind in kinds
        for label, make in (("no rules", plain), ("rules, warm", warm), ("rules, cold", cold))
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for name, run in cases.items():  # warm-up (fills the warm cases' caches); one run's counts
        c = run().counters()
        print(f"{name}: accepted {c['accepted']:,}, rule drops {c['rule']:,}", file=sys.stderr)
    for _ in range(a.reps):  # interleaved: load on the host hits every case alike
        for name, run in cases.items():
            t0 = clock()
            run()
            times[name].append(clock() - t0)
    print(
        f"python {sys.version.split()[0]}, {n:,} datapoints, {len(frames)} frames of "
        f"{a.per_frame}, {len(pool):,} distinct names repeated in turn, {len(rules)} rules "
        f"(100 prefix, 10 regex), --tags keep, storage schemas; median of {a.reps} "
        f"({a.clock} time, malloc {'tuned as the daemon' if tuned else 'glibc defaults'})"
    )
    print(f"| case | datapoints per {a.clock}-s median (min-max) | ns/datapoint | vs no rules |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        base = statistics.median(times[name.split(":")[0] + ": no rules"])
        print(
            f"| {name} | {n / med / 1e6:.2f}M ({n / max(ts) / 1e6:.2f}-{n / min(ts) / 1e6:.2f}M)"
            f" | {med / n * 1e9:.0f} | {base / med:.0%} |"
        )


if __name__ == "__main__":
    main()
