"""Rebalancing behind an L4 balancer: haproxy (mode tcp, leastconn) in front of two instances
with four long-lived sender connections; two more instances are switched on through haproxy's
runtime API. Without connection ageing the newcomers would get nothing until a sender
restarts; with --max-connection-age every instance carries traffic before any connection was
aged a second time, and nothing is lost or duplicated.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from .conftest import ANY_PORT, TENANT, wait_until
from .fleet import Haproxy, ReconnectingSender, Sink
from .helpers import scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_AGE = 2.0
NAMES = ("ff1", "ff2", "ff3", "ff4")


def test_new_instances_get_traffic_within_two_ages_and_nothing_is_lost(
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    sink = Sink("sink", tmp_path)
    fleet = {
        n: run_ff(
            "-e",
            ANY_PORT,
            "-b",
            sink.url,
            "-t",
            TENANT,
            "-i",
            "0.2",
            "--max-connection-age",
            str(MAX_AGE),
            "--admin-endpoint",
            ANY_PORT,
        )  # fmt: skip
        for n in NAMES
    }
    ports = {n: ff.port() for n, ff in fleet.items()}
    admins = {n: ff.admin_port for n, ff in fleet.items()}
    lb = Haproxy(tmp_path, ports, standby={"ff3", "ff4"})

    def received() -> dict[str, float]:
        return {n: scrape(admins[n])["fastforward_datapoints_received_total"] for n in NAMES}

    def aged() -> float:
        return sum(scrape(admins[n])["fastforward_connections_aged_total"] for n in NAMES)

    senders = [ReconnectingSender(("127.0.0.1", lb.port), f"lb.c{i}") for i in range(4)]
    wait_until(lambda: all(received()[n] > 0 for n in ("ff1", "ff2")), 20, "the first two busy")
    before = received()
    assert before["ff3"] == before["ff4"] == 0

    for n in ("ff3", "ff4"):
        answer = lb.command(f"enable server fleet/{n}")
        assert answer.strip() == "", answer
    enabled_at = time.monotonic()
    aged_at_enable = aged()
    at_enable = received()
    wait_until(
        lambda: all(v > at_enable[n] for n, v in received().items()),
        6 * MAX_AGE,
        "every instance to carry traffic",
    )
    rebalance_seconds = time.monotonic() - enabled_at
    ages_used = aged() - aged_at_enable
    # Two ages: no connection was aged twice since the newcomers were switched on (4 of them).
    assert ages_used <= 2 * len(senders), ages_used

    # Keep streaming until the newcomers carry a real share, then stop the senders.
    wait_until(
        lambda: all(v > at_enable[n] + 3000 for n, v in received().items()), 30, "a share each"
    )
    for s in senders:
        s.stop()
    expected = set().union(*(s.expected for s in senders))
    wait_until(lambda: sink.stats()["datapoints"] >= len(expected), 30, "everything delivered")
    share = received()
    for ff in fleet.values():
        assert ff.terminate() == 0, ff.stderr
    assert lb.stop(signal.SIGUSR1) == 0, lb.log  # soft stop: exits once idle
    total, delivered = sink.finish()
    lost = expected - delivered
    print(
        f"\nrebalance: {rebalance_seconds:.2f} s after enabling (max age {MAX_AGE} s, "
        f"{ages_used:.0f} ages), reconnects {[s.reconnects for s in senders]}; sent "
        f"{len(expected)}, delivered {len(delivered & expected)}, lost {len(lost)}, "
        f"duplicated {total - len(delivered)}; per instance {share}"
    )
    assert not lost, f"{len(lost)} datapoints lost"
    assert total == len(delivered), "duplicates"
