#!/usr/bin/env python3
"""CPU per POST of ``BluefloodClient.post``: urllib3's pool against the plain-http client.

Starts ``sink.py`` on loopback, builds one Blueflood body of about ``--body-kb`` KB, and POSTs
it ``--posts`` times per round through each client in turn (alternating rounds, so a busy
moment of the machine hits both alike). The figure is this process's user and system CPU
(``getrusage``) per POST; the sink's CPU is in another process and not counted. Sockets are
gevent's, as in the daemon.

    .venv/bin/python bench/postcost.py --rounds 6 --posts 50
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from fastforward.blueflood import BluefloodClient, Kind  # noqa: E402
from fastforward.stats import Stats  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_body(kb: int) -> bytes:
    item = {"collectionTime": 1700000000000, "ttlInSeconds": 86400, "metricValue": 1.5}
    items = []
    size = 2
    while size < kb * 1000:
        entry = {**item, "metricName": f"bench.host{len(items) % 97}.metric{len(items)}"}
        items.append(entry)
        size += len(json.dumps(entry, separators=(",", ":"))) + 1
    return json.dumps(items, separators=(",", ":")).encode()


def cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def round_of(client: BluefloodClient, body: bytes, posts: int) -> tuple[float, float]:
    """User and system CPU in microseconds per POST over ``posts`` POSTs."""
    u0, s0 = cpu()
    for _ in range(posts):
        outcome = client.post(body)
        if outcome.kind is not Kind.OK:
            raise SystemExit(f"POST failed: {outcome.failure}")
    u1, s1 = cpu()
    return (u1 - u0) / posts * 1e6, (s1 - s0) / posts * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--posts", type=int, default=50, help="POSTs per client per round")
    p.add_argument("--body-kb", type=int, default=600)
    a = p.parse_args()
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "sink.py"), "--port", str(port), "--max-seconds", "600"]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"{url}/stats", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        body = make_body(a.body_kb)
        datapoints = body.count(b'"metricName"')
        clients = {
            "urllib3": BluefloodClient(url, "bench", Stats(), timeout=30),
            "plain": BluefloodClient(url, "bench", Stats(), timeout=30),
        }
        clients["urllib3"]._plain = None  # the urllib3 path, as for https:// or a proxy
        for client in clients.values():
            round_of(client, body, 3)  # connect and warm up
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        for _ in range(a.rounds):
            for name, client in clients.items():
                results[name].append(round_of(client, body, a.posts))
        print(f"body {len(body)} bytes, {datapoints} datapoints; {a.rounds} rounds of {a.posts}")
        for name, rows in results.items():
            user = [u for u, _s in rows]
            total = [u + s for u, s in rows]
            print(
                f"{name:8} user {statistics.median(user):6.0f} us per POST "
                f"({min(user):.0f}-{max(user):.0f}), user+sys {statistics.median(total):6.0f} "
                f"({min(total):.0f}-{max(total):.0f}), "
                f"user {statistics.median(user) * 1000 / datapoints:.1f} ns per datapoint"
            )
        for client in clients.values():
            client.close()
    finally:
        sink.terminate()
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()
