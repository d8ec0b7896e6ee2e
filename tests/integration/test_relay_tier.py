"""A relay tier: real relays in front of three fastforward instances.

carbon-c-relay (a ``carbon_ch`` and an ``any_of`` cluster, plaintext) and graphite's own
carbon-relay (consistent hashing over pickle). Each instance listens on its own loopback
address (127.0.0.2-4: the rings hash addresses) and posts to its own bench sink. During a
stream of 1,000,000 datapoints one instance is stopped with SIGTERM and started again, another
is killed with SIGKILL and started again. Afterwards the sinks' distinct (name, time) pairs are
compared with what was sent:

* nothing of the SIGTERM'd instance's series is missing behind carbon-c-relay: it closed its
  listener first, read what its connection held, and reset it at a pause so the relay kept the
  metric it was writing. carbon-relay (Twisted) drops its unsent write buffer on any close, so
  there the loss is bounded by that buffer instead, and printed;
* what is missing is at most what the SIGKILL'd instance held in memory (read from its /metrics
  just before the kill, with the relay frozen meanwhile), what its kernel held unread, and what
  the relay loses into a dead connection (carbon-c-relay: one write; carbon-relay: its write
  buffer); the test prints the figures;
* duplicates are counted, and bounded by the same figure.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from .conftest import TENANT, wait_until
from .fleet import CarbonCRelay, CarbonRelay, LineStream, Settled, Sink, home_of
from .helpers import scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
SERIES = 500
STEPS = 2000  # 500 x 2000 = 1,000,000 datapoints
STEPS_PER_SECOND = 150  # 75,000 datapoints/s: about 13 s of stream
SHORTEST_LINE = len("tier.s0.value 0.5 1700000000\n")


class Instance:
    """One fastforward of the tier, restartable on the same address and port: the kernel
    picks its ports at the first start, and a restart binds the same ones again."""

    def __init__(self, run_ff, host: str, sink: Sink, *extra: str) -> None:  # noqa: ANN001
        self.run_ff = run_ff
        self.extra = extra
        self.host = host
        self.port = 0
        self.admin = 0
        self.sink = sink
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = self.run_ff(
            "-e", f"tcp:port={self.port}:interface={self.host}",
            "-b", self.sink.url, "-t", TENANT, "-i", "0.2", "--drain-timeout", "10",
            "--admin-endpoint", f"tcp:port={self.admin}:interface=127.0.0.1", *self.extra,
        )  # fmt: skip
        self.port, self.admin = self.proc.port(), self.proc.admin_port

    def unread_kernel_bytes(self) -> int:
        """Bytes our kernel acknowledged on this instance's connections but it has not read."""
        local = f"{_hex_addr(self.host)}:{self.port:04X}"
        total = 0
        with open("/proc/net/tcp", encoding="ascii") as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                if fields[1] == local and fields[3] == "01":  # ESTABLISHED
                    total += int(fields[4].split(":")[1], 16)
        return total


def _hex_addr(host: str) -> str:
    return "".join(f"{int(b):02X}" for b in reversed(host.split(".")))


def _kill_and_bound(victim: Instance, relay: CarbonCRelay | CarbonRelay) -> dict[str, float]:
    """SIGKILL the victim; the most that can be lost with it.

    The relay is frozen (SIGSTOP, like a long pause) from just before the victim's socket and
    /metrics are read until the kill, so nothing arrives between those readings and the kill.
    """
    relay.send(signal.SIGSTOP)
    try:
        # Kernel first, then memory: what moves from one to the other in between is counted
        # twice rather than not at all.
        unread = victim.unread_kernel_bytes()
        held = scrape(victim.admin)["fastforward_buffered_datapoints"]
        assert victim.proc is not None
        victim.proc.proc.send_signal(signal.SIGKILL)
        victim.proc.proc.wait(timeout=10)
    finally:
        relay.send(signal.SIGCONT)
    bound = (
        held
        + unread // SHORTEST_LINE
        + 1  # in its kernel after all; a partial record read
        + relay.lost_on_kill  # what the relay writes into the dead connection, lost with it
    )
    return {"held": held, "unread_bytes": unread, "bound": bound}


@pytest.mark.parametrize("cluster", ["carbon_ch", "any_of", "carbon-relay"])
def test_relay_tier_sigterm_loses_nothing_sigkill_bounded(
    run_ff,  # noqa: ANN001
    tmp_path: Path,
    cluster: str,
) -> None:
    # carbon-c-relay sends plaintext; graphite's carbon-relay sends pickle.
    protocol = "pickle" if cluster == "carbon-relay" else "line"
    sinks = {h: Sink(f"sink-{h}", tmp_path) for h in HOSTS}
    fleet = {h: Instance(run_ff, h, sinks[h], "--protocol", protocol) for h in HOSTS}
    members = [(h, fleet[h].port) for h in HOSTS]
    relay: CarbonCRelay | CarbonRelay = (
        CarbonRelay(tmp_path, members)
        if cluster == "carbon-relay"
        else CarbonCRelay(tmp_path, cluster, members)
    )
    termed, killed = fleet[HOSTS[1]], fleet[HOSTS[2]]

    stream = LineStream(
        ("127.0.0.1", relay.port),
        prefix="tier",
        series=SERIES,
        steps=STEPS,
        steps_per_second=STEPS_PER_SECOND,
    ).start()

    stream.wait_sent(0.25)
    assert termed.proc is not None
    assert termed.proc.terminate() == 0, termed.proc.stderr
    termed.start()

    stream.wait_sent(0.55)
    kill = _kill_and_bound(killed, relay)
    assert killed.proc is not None
    killed_log = killed.proc.stderr[-3000:]
    killed.start()

    stream.join()

    # Everything the relay took in has left its queues, and every instance drains on SIGTERM.
    wait_until(Settled(relay, list(sinks.values()), stream.total), 60, "the end of the run")
    relay_totals = relay.totals()
    for inst in fleet.values():
        assert inst.proc is not None
        assert inst.proc.terminate() == 0, inst.proc.stderr
    # twistd (carbon-relay) ends its clean shutdown by dying of the SIGTERM it handled.
    assert relay.stop() in (0, -signal.SIGTERM), relay.log

    received, keysets = {}, {}
    for h, sink in sinks.items():
        received[h], keysets[h] = sink.finish()
    delivered = set().union(*keysets.values())
    expected = stream.expected()
    lost = expected - delivered
    dups = sum(received.values()) - len(delivered)
    home = home_of(keysets)
    lost_by = Counter(home.get(name, "unknown") for name, _ts in lost)
    print(
        f"\n{cluster}: sent {stream.total}, delivered {len(delivered & expected)}, "
        f"lost {len(lost)} (by instance {dict(lost_by)}), duplicated {dups}; SIGKILL'd "
        f"instance held {kill['held']:.0f} + {kill['unread_bytes']} unread bytes, bound "
        f"{kill['bound']:.0f}; relay: {relay_totals}"
    )
    assert delivered <= expected | {k for k in delivered if not k[0].startswith("tier.")}
    assert relay_totals.get("metricsDropped", 0) == 0, relay_totals
    assert lost_by[termed.host] <= relay.lost_on_close, f"lost from the SIGTERM'd one: {lost_by}"
    assert len(lost) <= kill["bound"], (len(lost), kill, relay.log[-3000:], killed_log)
    assert dups <= kill["bound"], (dups, kill)


def test_aged_connections_of_carbon_c_relay_lose_nothing(run_ff, tmp_path: Path) -> None:  # noqa: ANN001
    """carbon-c-relay never reads its destination socket: an aged connection must be closed
    so that the relay's next write fails (it then reconnects and resends that metric)."""
    sink = Sink("sink", tmp_path)
    inst = Instance(run_ff, "127.0.0.2", sink, "--protocol", "line", "--max-connection-age", "1")
    relay = CarbonCRelay(tmp_path, "any_of", [(inst.host, inst.port)])
    stream = LineStream(
        ("127.0.0.1", relay.port), prefix="aged", series=200, steps=1200, steps_per_second=200
    ).start()  # 240,000 datapoints over 6 s: several ages
    stream.join()
    wait_until(Settled(relay, [sink], stream.total), 60, "the end of the run")
    relay_totals = relay.totals()
    assert inst.proc is not None
    aged = scrape(inst.admin)["fastforward_connections_aged_total"]
    assert inst.proc.terminate() == 0, inst.proc.stderr
    assert relay.stop() == 0, relay.log
    received, keys = sink.finish()
    lost = stream.expected() - keys
    print(
        f"\nageing under carbon-c-relay: {aged:.0f} connections aged, sent {stream.total}, "
        f"lost {len(lost)}, duplicated {received - len(keys)}; relay: {relay_totals}"
    )
    assert aged >= 2
    assert not lost, f"{len(lost)} lost, e.g. {sorted(lost)[:3]}"
    assert received == len(keys), "duplicates"
