"""Routing-rules throughput, run by hand (not in CI): decisions per CPU-second.

Rule set: 100 prefix rules (``prefix:team{i}.``, every fifth with a tenant and TTL, one in
twenty a drop) and 10 regex rules (``regex:^svc{j}\\.([^.]+)\\.(.*)$`` with a rewrite),
interleaved (a regex every ten prefixes), ``--tags`` as given (default keep), and a
storage-schemas file with three sections. Names: 10,000 distinct, a third of them tagged
with three tags in shuffled order; the stream draws them with Zipf-like repetition (a few
names very often, most rarely), as a carbon stream repeats its series every interval.

Cases, all on the same stream, median of --reps runs:

- ``cold``: a new Router per run: every distinct name is decided once (tags, index, rewrite,
  schema), the rest are cache hits; this is the cost right after a start or a reload
- ``warm``: the same Router again: every name is a cache hit (one dict lookup)
- ``uncached``: ``Router.compute`` for every name (what a miss costs)
- ``indexed``: finding the first matching rule alone (tags split, prefix index, regexes)
- ``naive``: the same with the rules tried one by one in file order (what the index saves)

    .venv/bin/python bench/rules.py [--stream N] [--reps R] [--tags keep|strip|flatten]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from rulesgen import rules_text  # bench/: the same rules as the end-to-end run

from fastforward.routing import Router, parse_rules, parse_schemas
from fastforward.routing.router import first_match_naive
from fastforward.routing.tags import split_tags

SCHEMAS = """\
[carbon]
pattern = ^carbon\\.
retentions = 60:90d
[teams]
pattern = ^team1
retentions = 10s:6h,1m:7d,10m:5y
[default]
pattern = .*
retentions = 1m:30d
"""


def names(distinct: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(distinct):
        kind = i % 4
        if kind == 0:
            base = f"team{rng.randrange(120)}.host{i % 300}.cpu.m{i}"
        elif kind == 1:
            base = f"svc{rng.randrange(12)}.api{i % 50}.latency.p{i}"
        elif kind == 2:
            base = f"other.app{i % 100}.requests.r{i}"
        else:
            base = f"carbon.agents.a{i % 10}.x{i}"
        if i % 3 == 0:
            tags = [f"host=h{i % 200}", f"env={'prod' if i % 2 else 'dev'}", f"dc=dc{i % 4}"]
            rng.shuffle(tags)
            base += ";" + ";".join(tags)
        out.append(base)
    return out


def stream(pool: list[str], length: int, seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(pool))]
    return rng.choices(pool, weights=weights, k=length)


def measure(run: Callable[[], None], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", type=int, default=200_000, help="names decided per run")
    p.add_argument("--distinct", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tags", default="keep", choices=("keep", "strip", "flatten"))
    args = p.parse_args()

    rules = parse_rules(rules_text())
    schemas = parse_schemas(SCHEMAS)
    pool = names(args.distinct)
    items = stream(pool, args.stream)
    seen = len(set(items))

    def cold() -> None:
        decide = Router(rules, tags=args.tags, schemas=schemas).decide
        for name in items:
            decide(name)

    warm_router = Router(rules, tags=args.tags, schemas=schemas)
    for name in items:
        warm_router.decide(name)

    def warm() -> None:
        decide = warm_router.decide
        for name in items:
            decide(name)

    def uncached() -> None:
        compute = Router(rules, tags=args.tags, schemas=schemas).compute
        for name in items[: len(items) // 10]:
            compute(name)

    def indexed() -> None:
        first_match = Router(rules, tags=args.tags).first_match
        for name in items[: len(items) // 10]:
            metric, tags = split_tags(name)
            first_match(metric + "".join(f";{k}={v}" for k, v in tags), tags)

    def naive() -> None:
        for name in items[: len(items) // 10]:
            metric, tags = split_tags(name)
            first_match_naive(rules, metric + "".join(f";{k}={v}" for k, v in tags), tags)

    print(
        f"{len(rules)} rules (100 prefix, 10 regex), --tags {args.tags}, storage schemas on; "
        f"stream of {len(items):,} names, {seen:,} distinct; median of {args.reps} runs"
    )
    print(f"{'case':<10} {'decisions/CPU-s':>16}")
    for label, run, count in [
        ("cold", cold, len(items)),
        ("warm", warm, len(items)),
        ("uncached", uncached, len(items) // 10),
        ("indexed", indexed, len(items) // 10),
        ("naive", naive, len(items) // 10),
    ]:
        seconds = measure(run, args.reps)
        print(f"{label:<10} {count / seconds:>16,.0f}")


if __name__ == "__main__":
    main()
