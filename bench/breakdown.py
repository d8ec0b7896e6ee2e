#!/usr/bin/env python3
"""Where a forwarder's CPU goes: py-spy raw profiles sorted into parts, with /proc's user/sys.

    python3 bench/e2e.py --runs 5 -n 3000000 --input pickle,line --no-track-unique \\
        --compare fastforward=@fastforward --compare io-floor=@io-floor --json-out runs.jsonl \\
        --attach "{PEERS}/pyspy-venv/bin/py-spy record --nonblocking -r 1000 --format raw \\
        -o {RUN_DIR}/profile.txt --pid {PID}"
    python3 bench/breakdown.py [--src NAME=OTHER_CHECKOUT/src ...] runs.jsonl

Every sampled stack (``--format raw``: frames separated by ``;``, then a count) goes to the first
part whose marker it contains, innermost frames checked first, so a recv inside the HTTP client
counts as HTTP client. Per forwarder and input, the profiles of every run are summed; the CPU
seconds and user/sys split are the medians of the runs (``cpu_s``, ``user_s``, ``sys_s`` from
e2e.py), and each part's ns per datapoint is its share of that CPU. Standard library only.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import sys

CODEC = "codec: decode + encode (the compiled add_pickle / add_lines / take_counted)"
CODEC_CALLS = (".add_pickle(", ".add_lines(", ".take_counted(", ".take(")
# (part, markers): after the codec (found by the source line of the innermost fastforward
# frame: py-spy does not see inside the compiled codec, it shows the line that calls it), a
# stack belongs to the first part with a marker in any of its frames.
PARTS = [
    ("gzip", ("gzip_body", "compression.py")),
    (
        "HTTP client: plainhttp / urllib3 / http.client and their socket calls",
        ("BluefloodClient.post", "plainhttp.py", "urllib3/", "requests/", "http/client.py"),
    ),
    (
        "hand-over: bodies to the outbox, gate, kick, senders",
        ("flushing.py", "outbox.py", "forwarder.py", "parking.py", "delivery.py", "sending.py"),
    ),
    (
        "receive: recv_into, framing, waiting for the socket",
        ("receiver.py", "framing.py", "iofloor.py"),
    ),
    ("gevent scheduling: the hub loop, switches, events", ("gevent/",)),
]
OTHER = "other: stats, logging, interpreter"
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
_lines: dict[str, list[str]] = {}


def source_line(where: str, root: str) -> str:
    """The source text of ``fastforward/x.py:N`` under `root`."""
    path, _, num = where.rpartition(":")
    key = os.path.join(root, path)
    if key not in _lines:
        try:
            with open(key) as f:
                _lines[key] = f.read().splitlines()
        except OSError:
            _lines[key] = []
    text = _lines[key]
    return text[int(num) - 1] if num.isdigit() and 0 < int(num) <= len(text) else ""


def part_of(stack: str, root: str = SRC) -> str:
    frames = stack.split(";")
    for f in reversed(frames):
        where = f[f.rfind("(") + 1 : -1] if f.endswith(")") else ""
        if where.startswith("fastforward/"):
            if any(call in source_line(where, root) for call in CODEC_CALLS):
                return CODEC
            break
    for part, markers in PARTS:
        if any(m in f for f in frames for m in markers):
            return part
    return OTHER


def main() -> int:
    args = sys.argv[1:]
    roots: dict[str, str] = {}  # forwarder name -> its source tree (default: this checkout)
    while args[:1] == ["--src"] and len(args) > 2:
        name, _, root = args[1].partition("=")
        roots[name] = root
        args = args[2:]
    if len(args) != 1:
        print(__doc__)
        return 2
    runs = [json.loads(line) for line in open(args[0]) if line.strip()]
    groups: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for r in runs:
        if r.get("cpu_s"):
            groups[(r["input"], r["forwarder"])].append(r)
    for (inp, fwd), rs in sorted(groups.items()):
        samples: collections.Counter[str] = collections.Counter()
        for r in rs:
            path = os.path.join(r["run_dir"], "profile.txt")
            if not os.path.exists(path):
                continue
            for line in open(path, errors="replace"):
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if count.isdigit():
                    samples[part_of(stack, roots.get(fwd, SRC))] += int(count)
        n = rs[0]["n"]
        cpu = statistics.median(r["cpu_s"] for r in rs)
        user = statistics.median(r.get("user_s", 0.0) for r in rs)
        system = statistics.median(r.get("sys_s", 0.0) for r in rs)
        total = sum(samples.values())
        print(
            f"\n{inp} / {fwd}: {len(rs)} runs of {n:,} datapoints; CPU {cpu:.2f} s median "
            f"(user {user:.2f}, sys {system:.2f}) = {cpu / n * 1e9:.0f} ns per datapoint "
            f"({user / n * 1e9:.0f} user + {system / n * 1e9:.0f} sys); "
            f"{n / cpu:,.0f} datapoints per CPU-s; {total} samples"
        )
        if not total:
            continue
        print("| part | share of samples | ns per datapoint |\n|---|---|---|")
        for part, count in samples.most_common():
            share = count / total
            print(f"| {part} | {share:.1%} | {share * cpu / n * 1e9:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
