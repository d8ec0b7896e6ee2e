"""The codec's share of the routing cost, run by hand (not in CI): CPU ns per datapoint.

The compiled encoder (or the twin with FASTFORWARD_NO_EXTENSIONS=1) on the e2e routing run's
load: `rulesgen.routed_names` (10,000 names, a third tagged out of order), pickle frames of
500, ``add_pickle`` then ``take_routed`` per frame as the daemon does. Cases, on the same
frames, median of --reps runs in process CPU time:

- ``no router``: as without ``--rules``
- ``empty rules``: a router with no rule (every name a cache hit after its first datapoint)
- ``rules, 1 tenant``: rulesgen's 110 rules without their tenants
- ``rules, 31 tenants``: rulesgen's rules as ``@fastforward-rules`` loads them

    .venv/bin/python bench/codec_routing.py [--datapoints N] [--reps R]
"""

from __future__ import annotations

import argparse
import pickle
import random
import statistics
import time
from collections.abc import Callable

from rulesgen import routed_names, rules_text

from fastforward import codec
from fastforward.routing import Router, parse_rules

SERIES = 10_000
PER_FRAME = 500


def frames(datapoints: int) -> list[bytes]:
    names = routed_names(SERIES)
    base = int(time.time()) - 600
    rng = random.Random(1)
    out = []
    for i in range(0, datapoints, PER_FRAME):
        items = [
            (names[j % SERIES], (base + j // SERIES, rng.random() * 100.0))
            for j in range(i, min(i + PER_FRAME, datapoints))
        ]
        out.append(pickle.dumps(items, protocol=2))
    return out


def cpu_seconds(data: list[bytes], make_router: Callable[[], object]) -> float:
    router = make_router()
    encoder = codec.Encoder() if router is None else codec.Encoder(router=router)
    start = time.process_time()
    for frame in data:
        encoder.add_pickle(frame)
        encoder.take_routed()
    encoder.take_routed(True)
    return time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datapoints", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    data = frames(a.datapoints)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("no router", lambda: None),
        ("empty rules", lambda: Router(parse_rules("")).decide),
        ("rules, 1 tenant", lambda: Router(parse_rules(rules_text(False, tenants=False))).decide),
        ("rules, 31 tenants", lambda: Router(parse_rules(rules_text(drops=False))).decide),
    ]
    print(f"codec: {codec.IMPLEMENTATION}; {a.datapoints:,} datapoints, median of {a.reps}")
    print(f"{'case':<20} {'ns per datapoint':>17}")
    for label, make in cases:
        runs = [cpu_seconds(data, make) for _ in range(a.reps)]
        print(f"{label:<20} {statistics.median(runs) / a.datapoints * 1e9:>17.0f}")


if __name__ == "__main__":
    main()
