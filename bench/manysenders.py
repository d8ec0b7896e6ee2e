#!/usr/bin/env python3
"""Many fast senders against a paused Blueflood: does ``--max-buffer-bytes`` bound the memory?

    python3 bench/manysenders.py [--connections 1000] [--seconds 5] [--cap-mb 64] \\
        [-- FORWARDER COMMAND with {PORT} {SINK_URL} {CAP}]

On 127.0.0.1: a "Blueflood" that listens but never accepts (every POST waits, none is answered,
so nothing leaves the forwarder), the forwarder under test (default: this project's fastforward
with ``--max-buffer-bytes {CAP}``), then ``--connections`` carbon pickle connections that all
send frames of 500 datapoints as fast as the forwarder reads them, for ``--seconds``. The
forwarder's RSS is sampled before the load (the baseline), with every connection open, and its
peak (VmHWM) at the end. ``held_for_data_mb`` (peak - RSS with every connection open) is what
``--max-buffer-bytes`` bounds; ``peak_over_baseline_mb`` adds what each open connection costs
besides data (its greenlet, socket objects and first 16 KiB read buffer, reported per
connection). ``--probe FILE`` runs it under bench/memprobe.py for where the peak goes (RSS by
mapping, glibc's heap, what the cap counts). Prints one JSON line; sizes in MiB. Bounded in
connections and time; everything started is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import selectors
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FASTFORWARD = os.path.join(os.path.dirname(HERE), ".venv", "bin", "fastforward")
MEMPROBE = os.path.join(HERE, "memprobe.py")
VENV_PYTHON = os.path.join(os.path.dirname(FASTFORWARD), "python")
DEFAULT_COMMAND = (
    f"{FASTFORWARD} -e tcp:port={{PORT}}:interface=127.0.0.1 -b {{SINK_URL}} -t bench -i 1 "
    "--max-buffer-bytes {CAP} --request-timeout 300 --max-connections 5000"
)


def status_mb(pid: int, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def probe(pid: int, path: str | None) -> None:
    """Ask bench/memprobe.py for a report and wait until it is written (the cap is held)."""
    if not path:
        return
    before = reports(path)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 120  # with PYTHONTRACEMALLOC, a snapshot takes a while
    while reports(path) == before and time.monotonic() < deadline:
        time.sleep(0.1)


def reports(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def frames(count: int, per_frame: int) -> tuple[bytes, list[int]]:
    """`count` pickle frames of `per_frame` datapoints (full-precision values, timestamps of
    now), and where each frame starts."""
    rng = random.Random(15)
    now = int(time.time())
    out, starts, at = [], [], 0
    for f in range(count):
        dps = [
            (f"bench.host{i % 100}.cpu.m{i}", (now - f, rng.random() * 1e6))
            for i in range(per_frame)
        ]
        body = pickle.dumps(dps, protocol=2)
        out.append(struct.pack("!I", len(body)) + body)
        starts.append(at)
        at += len(out[-1])
    return b"".join(out), starts


def wait_listening(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"forwarder exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("forwarder did not listen")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=5.0, help="load time (bounded)")
    p.add_argument("--cap-mb", type=float, default=64.0, help="--max-buffer-bytes in MiB")
    p.add_argument("--chunk", type=int, default=65536, help="bytes per send")
    p.add_argument(
        "--probe",
        metavar="FILE",
        help="run the forwarder under bench/memprobe.py and append its memory reports "
        "(before the load, every connection open, at the peak) to FILE",
    )
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    command = " ".join(a.command[1:] if a.command[:1] == ["--"] else a.command) or DEFAULT_COMMAND
    cap = int(a.cap_mb * 1024 * 1024)
    env = dict(os.environ)
    if a.probe:
        command = command.replace(FASTFORWARD, f"{VENV_PYTHON} {MEMPROBE}", 1)
        env["PROBE_OUT"] = os.path.abspath(a.probe)
    payload, starts = frames(64, 500)  # ~1.3 MB, sent round and round
    payload2 = payload + payload  # a window of `chunk` bytes from any offset, no copy per send

    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(64)  # never accepted: Blueflood paused, every POST waits
    port = free_port()
    cmd = command.format(PORT=port, SINK_URL=f"http://127.0.0.1:{sink.getsockname()[1]}", CAP=cap)
    run_dir = tempfile.mkdtemp(prefix="ff-manysenders-")
    with open(os.path.join(run_dir, "forwarder.log"), "wb") as log:
        proc = subprocess.Popen(
            shlex.split(cmd), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    conns: list[socket.socket] = []
    result: dict[str, object] = {"command": cmd, "connections": a.connections, "cap_mb": a.cap_mb}
    try:
        wait_listening(port, proc, time.monotonic() + 30)
        time.sleep(0.5)
        baseline = status_mb(proc.pid, "VmRSS")
        probe(proc.pid, a.probe)
        result["baseline_rss_mb"] = round(baseline, 1)
        for _ in range(a.connections):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.setblocking(False)
            conns.append(c)
        time.sleep(0.5)
        idle = status_mb(proc.pid, "VmRSS")
        probe(proc.pid, a.probe)
        result["idle_connections_rss_mb"] = round(idle, 1)
        sel = selectors.DefaultSelector()
        offsets = [starts[i % len(starts)] for i in range(len(conns))]  # at frame boundaries
        for i, c in enumerate(conns):
            sel.register(c, selectors.EVENT_WRITE, i)
        view = memoryview(payload2)
        sent = 0
        rss_max = 0.0
        start = time.monotonic()
        next_sample = start
        while (now := time.monotonic()) < start + a.seconds:
            for key, _ in sel.select(timeout=0.05):
                c = conns[key.data]
                off = offsets[key.data]
                try:
                    n = c.send(view[off : off + a.chunk])
                except (BlockingIOError, InterruptedError):
                    continue
                offsets[key.data] = (off + n) % len(payload)
                sent += n
            if now >= next_sample:
                rss_max = max(rss_max, status_mb(proc.pid, "VmRSS"))
                next_sample = now + 0.1
        result["sent_mb"] = round(sent / 1e6, 1)
        result["load_s"] = round(time.monotonic() - start, 2)
        result["rss_sampled_max_mb"] = round(rss_max, 1)
        peak = status_mb(proc.pid, "VmHWM")
        probe(proc.pid, a.probe)  # after the peak is read: the report allocates too
        result["peak_rss_mb"] = round(peak, 1)
        over = peak - baseline
        result["peak_over_baseline_mb"] = round(over, 1)
        # An open connection costs its greenlet, socket objects and first 16 KiB read buffer
        # (its own cost, bounded by --max-connections, outside the cap): what the cap bounds is
        # the peak over the RSS with every connection open.
        held = peak - idle
        result["per_connection_overhead_kib"] = round((idle - baseline) * 1024 / a.connections, 1)
        result["held_for_data_mb"] = round(held, 1)
        result["under_cap"] = held * 1024 * 1024 <= cap
        with open(os.path.join(run_dir, "forwarder.log"), errors="replace") as f:
            result["backpressure_logged"] = "backpressure:" in f.read()
        result["forwarder_alive"] = proc.poll() is None
    finally:
        for c in conns:
            c.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # a paused sink: a clean stop would wait for it
        proc.wait(timeout=30)
        sink.close()
    result["run_dir"] = run_dir
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
