#!/usr/bin/env python3
"""How evenly ``fastforward --workers N`` spreads a burst of new TCP connections.

    python3 bench/spread.py [--workers 2] [--burst 4] [--trials 20] [--tree NAME=SRC_DIR ...]

Per trial: start ``python -m fastforward --workers N`` on a free 127.0.0.1 port (a fresh
process, so every worker is idle), open ``--burst`` connections at once (what a relay does
when it starts), find which worker accepted each one (the worker whose descriptors hold the
accepted socket, read from /proc), close them, stop the daemon by PID. With several
``--tree`` (a source directory put first on PYTHONPATH; the default is the installed one)
the trials are interleaved (A B A B ...). Printed per tree: how often the burst was split
evenly, and the mean share of the busiest worker. Linux only; loopback only; bounded.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

from procnet import owner  # bench/procnet.py, beside this script

READY = re.compile(rb"all (\d+) workers started")
STARTED = re.compile(rb"worker (\d+) started \(pid (\d+)\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_trial(src: str, workers: int, burst: int) -> list[int]:
    """The number of connections each worker accepted, busiest first."""
    port = free_port()
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastforward", "--workers", str(workers), "--dry-run",
             "-e", f"tcp:port={port}:interface=127.0.0.1", "-t", "bench", "-i", "1"],
            stdout=subprocess.DEVNULL, stderr=err, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                err.seek(0)
                log = err.read()
                if READY.search(log):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fastforward did not start: {log.decode()[-2000:]}")
                time.sleep(0.05)
            pids = {int(w): int(p) for w, p in STARTED.findall(log)}
            conns = [
                socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(burst)
            ]
            owners: list[int | None] = [None] * burst
            deadline = time.monotonic() + 10
            while None in owners and time.monotonic() < deadline:
                for i, c in enumerate(conns):
                    if owners[i] is None:
                        owners[i] = owner(port, c.getsockname()[1], pids)
                time.sleep(0.01)
            for c in conns:
                c.close()
            if None in owners:
                raise RuntimeError(f"connections not accepted within 10s: {owners}")
            counts = Counter(owners)
            return sorted((counts.get(w, 0) for w in pids), reverse=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--burst", type=int, default=4)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--tree", action="append", default=[], metavar="NAME=SRC_DIR")
    a = p.parse_args()
    trees = [t.split("=", 1) for t in a.tree] or [["installed", ""]]
    results: dict[str, list[list[int]]] = {name: [] for name, _src in trees}
    for _ in range(min(a.trials, 200)):
        for name, src in trees:
            results[name].append(one_trial(src, a.workers, a.burst))
    even = -(-a.burst // a.workers)  # the busiest worker's share when the split is even
    print(f"--workers {a.workers}, bursts of {a.burst} connections, {a.trials} trials each")
    print(f"{'tree':<12} {'even split':>10} {'busiest worker, mean':>21}  splits")
    for name, runs in results.items():
        evens = sum(r[0] == even for r in runs)
        mean = sum(r[0] for r in runs) / len(runs)
        splits = Counter("/".join(map(str, r)) for r in runs)
        print(f"{name:<12} {evens:>4}/{len(runs):<5} {mean:>21.2f}  {dict(splits.most_common())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
