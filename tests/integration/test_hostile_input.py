"""Hostile input while a good sender streams on another connection.

A bounded fuzz run (count and time) of mutated real frames, random bytes, oversized lengths,
pickles that would run code, slowloris connections and a crowd of idle connections, all at
once against the real process: the good sender loses nothing, the daemon stays up, its memory
stays bounded, nothing from a pickle is executed, and the bad frames show on /metrics.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import resource
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from fastforward.receiver import INITIAL_BUFFER

from .conftest import ANY_PORT, TENANT, FakeBlueflood, frame, wait_until
from .helpers import Sender, http_get, proc_status_kb, scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IDLE_CONNECTIONS = 1000
FUZZ_SECONDS = 6.0
FUZZ_FRAMES = 400
SLOWLORIS = 20
# Growth of the daemon's peak RSS over its start-up RSS: a greenlet, a socket and a read buffer
# per connection (the buffer is allocated at accept, so it is the receiver's INITIAL_BUFFER
# even for a connection that never sends), plus the good sender's bodies and the fuzz frames.
PER_CONNECTION_KB = INITIAL_BUFFER // 1024 + 16
FIXED_GROWTH_KB = 48 * 1024


class Exploit:
    """Unpickling this with pickle.loads would run a shell command that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _length_prefixed(payload: bytes) -> bytes:
    return struct.pack("!L", len(payload)) + payload


def _real_frames(rng: random.Random) -> list[bytes]:
    """Payloads (no length) the way carbon's senders make them, every pickle protocol."""
    ts = int(time.time())
    frames = []
    for proto in range(6):
        items = [(f"fuzz.p{proto}.{i}", (ts + i, rng.random() * 100)) for i in range(20)]
        frames.append(pickle.dumps(items, protocol=proto))
    return frames


def _mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        pos = rng.randrange(len(data)) if data else 0
        if op < 0.5 and data:
            data[pos] = rng.randrange(256)
        elif op < 0.75:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif data:
            del data[pos : pos + rng.randint(1, 16)]
    return bytes(data)


@pytest.fixture
def more_fds() -> Iterator[int]:
    """Raise the soft RLIMIT_NOFILE (the child inherits it); how many fds are available."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * IDLE_CONNECTIONS)) if hard != resource.RLIM_INFINITY else 4096
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield max(soft, want)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _quiet_close(s: socket.socket) -> None:
    try:
        s.close()
    except OSError:
        pass


def test_hostile_input_while_a_good_sender_streams(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
    more_fds: int,
    request: pytest.FixtureRequest,
) -> None:
    idle_count = min(IDLE_CONNECTIONS, (more_fds - 200) // 2)  # both ends live in this machine
    rng = random.Random(20261125)
    marker = tmp_path / "pwned"
    ff = run_ff(
        "-e", ANY_PORT, "-b", fake_blueflood.url, "-t", TENANT,
        "-i", "0.2", "--max-frame-bytes", "100000", "--max-connections", str(idle_count + 200),
        "--admin-endpoint", ANY_PORT,
    )  # fmt: skip
    port = ff.port()
    admin = ff.admin_port
    base_kb = proc_status_kb(ff.proc.pid, "VmRSS")
    good = Sender(port, "good", int(time.time()), per_frame=100, period=0.05).start()
    deadline = time.monotonic() + FUZZ_SECONDS
    executed = {"fuzz": 0}

    def fuzz() -> None:
        real = _real_frames(rng)
        s = _connect(port)
        try:
            while executed["fuzz"] < FUZZ_FRAMES and time.monotonic() < deadline:
                executed["fuzz"] += 1
                kind = rng.random()
                if kind < 0.6:
                    data = _length_prefixed(_mutate(rng, rng.choice(real)))
                elif kind < 0.75:
                    data = os.urandom(rng.randint(1, 2048))  # random length prefix too
                elif kind < 0.85:
                    data = struct.pack("!L", rng.choice([0xFFFFFFFF, 100_001, 2**31])) + b"x" * 64
                else:
                    evil = Exploit(marker)
                    payload = rng.choice(
                        [pickle.dumps(evil, protocol=p) for p in (0, 2, 4)]
                        + [pickle.dumps([("ok", (1, 1)), evil], protocol=2)]
                    )
                    data = _length_prefixed(payload)
                try:
                    s.sendall(data)
                except OSError:  # closed by the daemon after an oversize frame: reconnect
                    _quiet_close(s)
                    s = _connect(port)
                gevent.sleep(0.005)
        finally:
            _quiet_close(s)

    def slowloris(k: int) -> None:
        # A valid frame, one byte at a time; every other one stops halfway and just waits.
        data = frame([(f"slow.{k}", (int(time.time()), k))])
        stop = len(data) if k % 2 == 0 else len(data) // 2
        s = _connect(port)
        try:
            for i in range(stop):
                s.sendall(data[i : i + 1])
                gevent.sleep(0.1)
            while time.monotonic() < deadline:
                gevent.sleep(0.2)
        finally:
            _quiet_close(s)

    idle: list[socket.socket] = []

    def crowd() -> None:
        for _ in range(idle_count):
            idle.append(_connect(port))
            if len(idle) % 50 == 0:
                gevent.sleep(0)

    # Closed whatever happens: 1,000 sockets left to the garbage collector would fail the next
    # test with ResourceWarnings.
    request.addfinalizer(lambda: [_quiet_close(s) for s in idle])
    jobs = [gevent.spawn(fuzz), gevent.spawn(crowd)]
    jobs += [gevent.spawn(slowloris, k) for k in range(SLOWLORIS)]
    gevent.joinall(jobs, timeout=FUZZ_SECONDS + 30, raise_error=True)
    assert all(j.dead for j in jobs)
    wait_until(lambda: scrape(admin)["fastforward_connections_open"] >= idle_count, 15,
             "the idle crowd accepted")  # fmt: skip
    good.stop()

    def missing() -> set[tuple[str, int]]:
        stored = {(n, ct) for (_t, n), pts in fake_blueflood.store.items() for ct in pts}
        return good.expected - stored

    # `stored` counts fuzz datapoints too, so wait for the good ones themselves.
    wait_until(lambda: not missing(), 30, "every good datapoint (none may be lost)")
    # The slowloris senders that finished their frame were served too.
    wait_until(lambda: all(("slow." + str(k)) in {n for _t, n in fake_blueflood.store}
                         for k in range(0, SLOWLORIS, 2)), 10, "the slow frames")  # fmt: skip

    assert ff.proc.poll() is None, ff.stderr
    assert not marker.exists(), "a pickle from the wire was executed"
    m = scrape(admin)
    assert m.get("fastforward_frames_received_total", result="bad") > 0
    assert m.get("fastforward_frames_received_total", result="oversize") > 0
    # Refused and oversize frames are in the dropped account, and traced to their sender.
    bad = m.get("fastforward_frames_received_total", result="bad")
    assert m.get("fastforward_datapoints_dropped_total", reason="bad_frame") == bad
    oversize = m.get("fastforward_frames_received_total", result="oversize")
    assert m.get("fastforward_datapoints_dropped_total", reason="oversize_frame") == oversize
    senders = json.loads(http_get(f"http://127.0.0.1:{admin}/debug/senders")[1])["senders"]
    assert senders["127.0.0.1"]["dropped"]["bad_frame"] == bad
    assert senders["127.0.0.1"]["connections"] >= idle_count
    rejects = json.loads(http_get(f"http://127.0.0.1:{admin}/debug/rejects")[1])["rejects"]
    for reason in ("bad_frame", "oversize_frame"):
        newest = rejects[reason][-1]
        assert newest["sender"].startswith("127.0.0.1:") and newest["sample"], newest
        assert len(rejects[reason]) <= 10  # bounded, however many there were
    hwm_kb = proc_status_kb(ff.proc.pid, "VmHWM")
    growth_kb = hwm_kb - base_kb
    print(f"hostile: {executed['fuzz']} fuzz frames, {idle_count} idle connections, "
          f"VmHWM {hwm_kb} kB, growth {growth_kb} kB")  # fmt: skip
    connections = idle_count + SLOWLORIS + 2
    assert growth_kb < FIXED_GROWTH_KB + connections * PER_CONNECTION_KB, growth_kb
    for s in idle:
        _quiet_close(s)
    assert ff.terminate() == 0
    assert "Traceback" not in ff.stderr
    # One warning per reason and sender per minute, whatever the flood, naming the sender
    # (the exploit frames' "forbidden opcode" is checked in test_accounting).
    warned = [ln for ln in ff.stderr.splitlines() if ": bad_frame (bad pickle frame" in ln]
    assert 1 <= len(warned) <= 2 and "from 127.0.0.1:" in warned[0], warned
    assert not marker.exists()
