"""--max-connection-age in-process: aged connections close at a record boundary, lose nothing.

Two kinds of carbon sender are played here: one that reads its socket (Twisted carbon-relay,
client libraries: it sees our FIN and closes) and one that never reads (carbon-c-relay: it
learns of the close only from a failing write, so it must be reset, not just sent a FIN).
"""

from __future__ import annotations

import random
import socket
import time

import gevent
import pytest

from fastforward import receiver
from fastforward.config import ConfigError, load
from fastforward.receiver import QUIET_GAP, age_deadline
from tests.support import wait_until
from tests.test_receiver import connect, frame, make, names

__all__ = ["make"]  # the fixture, shared with test_receiver

pytestmark = pytest.mark.integration


def test_age_deadline_is_jittered_within_ten_percent() -> None:
    rng = random.Random(3)
    deadlines = [age_deadline(100.0, 1000.0, rng) for _ in range(500)]
    assert all(1090.0 <= d <= 1110.0 for d in deadlines)
    # Spread out, not one value: a fleet's connections must not all expire together.
    assert max(deadlines) - min(deadlines) > 15.0
    assert age_deadline(0.0, 1000.0, rng) == 0.0


def test_max_connection_age_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="--max_connection_age"):
        load(["--dry-run", "--max-connection-age", "-1"], environ={})
    assert load(["--dry-run"], environ={}).config.max_connection_age == 0.0


def _steady_pickle_sender(s: socket.socket, ts: int, sent: list[str]) -> bool:
    """Send a frame every 20 ms until the receiver closes; True once its FIN was seen."""
    s.setblocking(False)
    for f in range(500):  # bounded: 10 s at most
        try:
            if s.recv(1) == b"":
                return True
        except BlockingIOError:
            pass
        batch = [f"aged.{f}.{i}" for i in range(10)]
        s.setblocking(True)
        s.sendall(frame([(n, (ts, i)) for i, n in enumerate(batch)]))
        s.setblocking(False)
        sent.extend(batch)
        gevent.sleep(0.02)
    return False


def test_aged_connection_of_a_reading_sender_closes_after_everything_it_sent(make) -> None:  # noqa: ANN001
    r, ports = make("-e", "tcp:port=0:interface=127.0.0.1", "--max-connection-age", "0.3")
    sent: list[str] = []
    with connect(ports["tcp/pickle"]) as s:
        assert _steady_pickle_sender(s, int(time.time()), sent), "never closed by age"
    wait_until(lambda: r.open_connections == 0)
    assert r.stats.get("connections_aged", protocol="pickle") == 1
    assert names(r.encoder) == sent
    assert r.stats.get("datapoints_dropped") == 0


def test_aged_connection_of_a_sender_that_never_reads_is_reset_between_writes(make) -> None:  # noqa: ANN001
    r, ports = make(
        "--line-endpoint", "tcp:port=0:interface=127.0.0.1",
        "-e", "udp:port=0:interface=127.0.0.1", "--protocol", "line",
        "--max-connection-age", "0.3",
    )  # fmt: skip
    ts = int(time.time())
    written: list[str] = []
    failed_write = None
    with connect(ports["tcp/line"]) as s:
        # Like carbon-c-relay: bursts of writes, a pause, and never a read.
        for burst in range(100):  # bounded: 20 s at most
            try:
                for i in range(20):
                    name = f"relay.{burst}.{i}"
                    s.sendall(f"{name} {i} {ts}\n".encode())
                    written.append(name)
            except OSError as exc:  # the reset: this write (and no earlier one) failed
                failed_write = exc
                break
            gevent.sleep(4 * QUIET_GAP)
    assert isinstance(failed_write, ConnectionResetError | BrokenPipeError), failed_write
    wait_until(lambda: r.open_connections == 0)
    assert r.stats.get("connections_aged", protocol="line") == 1
    assert names(r.encoder) == written


def test_ageing_waits_for_the_end_of_a_line(make) -> None:  # noqa: ANN001
    r, ports = make(
        "--line-endpoint", "tcp:port=0:interface=127.0.0.1",
        "-e", "udp:port=0:interface=127.0.0.1", "--protocol", "line",
        "--max-connection-age", "0.1",
    )  # fmt: skip
    ts = int(time.time())
    with connect(ports["tcp/line"]) as s:
        wait_until(lambda: r.open_connections == 1, what="the connection accepted")
        # What this waits for is time itself: the age (0.1 s, at most 10 % jitter) has passed
        # since the accept, so the next read starts the close.
        aged_at = time.monotonic() + 0.1 * 1.1
        wait_until(lambda: time.monotonic() > aged_at, what="the connection's age reached")
        s.sendall(f"first 1 {ts}\nsecond 2".encode())
        gevent.sleep(6 * QUIET_GAP)  # the sender's pause: inside a line it is not a boundary
        s.sendall(f" {ts}\n".encode())
    wait_until(lambda: r.open_connections == 0)
    assert names(r.encoder) == ["first", "second"]
    assert r.stats.get("datapoints_dropped") == 0


def test_ageing_waits_out_backpressure_and_loses_nothing(
    make,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(receiver, "AGED_CLOSE_SECONDS", 0.5)
    r, ports = make("-e", "tcp:port=0:interface=127.0.0.1", "--max-connection-age", "0.1")
    ts = int(time.time())
    sent = 0
    with connect(ports["tcp/pickle"]) as s:
        # A sender that never reads; its connection is past its age, so it is being closed
        # when the outbox fills: reading pauses for three times the bound on closing, while
        # the sender's frames wait in the kernel. The close must wait for the gate too.
        for f in range(40):
            if f == 10:
                r.flow.gate.clear()
            s.sendall(frame([(f"held.{f}.{i}", (ts, i)) for i in range(10)]))
            sent += 10
            gevent.sleep(0.02)
        # The scenario, not a wait for something: the backpressure outlasts the bound on
        # closing three times over before reading resumes.
        gevent.sleep(3 * receiver.AGED_CLOSE_SECONDS)
        r.flow.gate.set()
        wait_until(lambda: r.open_connections == 0, 10)
    assert r.stats.get("connections_aged") == 1
    assert r.encoder.pending_datapoints == sent


def test_a_close_past_its_deadline_still_reads_what_the_kernel_accepted(make) -> None:  # noqa: ANN001
    # A stop whose reading deadline has passed (a slow decoder, a sender that never paused):
    # the bytes our kernel already acknowledged are the sender's "sent", so they are read
    # before the reset, not discarded with it.
    r, ports = make("-e", "tcp:port=0:interface=127.0.0.1")
    ts = int(time.time())
    sent: list[str] = []
    with connect(ports["tcp/pickle"]) as s:
        wait_until(lambda: r.open_connections == 1)
        r.flow.gate.clear()  # backpressure: the frames wait in our kernel, unread
        for f in range(40):  # about 60 KB: well within a loopback receive buffer
            batch = [f"kept.{f}.{i}" for i in range(50)]
            s.sendall(frame([(n, (ts, i)) for i, n in enumerate(batch)]))
            sent.extend(batch)
        r.stop(0.0)  # the deadline is already over when reading resumes
    assert names(r.encoder) == sent
    assert r.stats.get("datapoints_dropped") == 0
