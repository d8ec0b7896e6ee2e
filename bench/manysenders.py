#!/usr/bin/env python3
"""Many fast senders against a stalled Blueflood: does ``--max-buffer-bytes`` bound the memory,
and does everything arrive once Blueflood answers again?

    python3 bench/manysenders.py [--connections 1000] [--seconds 5] [--cap-mb 64] \\
        [--tenants 20] [--datapoints 2000000] [--probe FILE] \\
        [-- FORWARDER COMMAND with {PORT} {SINK_URL} {CAP} {RULES}]

On 127.0.0.1: the counting sink (bench/sink.py ``--track-unique``), the forwarder under test
(default: this project's fastforward with ``--max-buffer-bytes {CAP}``; with ``--tenants N``
also ``--rules {RULES}``, a rules file sending the names to N tenants), and ``--connections``
carbon pickle connections. The run, each step waited for:

1. **Warm-up**: every connection sends one frame of one datapoint (with ``--tenants``, every
   name of the load is also sent once, a minute ahead of the load's times: the routing
   decisions kept per name depend on the names, not on a backlog, and are not in
   ``--max-buffer-bytes``), and the sink counts them all (so the first POSTs, imported
   modules and HTTP connections are behind us). The RSS then, every connection open and idle, is the
   **baseline**: the process plus what each open connection costs whether it sends or not
   (its greenlet, socket objects and first 16 KiB read buffer, bounded by
   ``--max-connections``).
2. **Stall and load**: the sink is paused (SIGUSR1: it reads and answers nothing, so nothing
   leaves the forwarder), and every connection sends frames of 500 datapoints as fast as the
   forwarder reads them (``--series`` names in turn, each a second earlier every round), for
   ``--seconds`` (or until ``--datapoints`` are sent).
3. **Recovery**: the sink resumes, every connection finishes its frame and closes, and the run
   waits until the sink has every datapoint; ``lost`` and ``duplicated`` are counted by
   distinct (name, time).

``held_for_data_mb`` = peak RSS (VmHWM, the whole run) - baseline: what ``--max-buffer-bytes``
bounds (``over_cap_mb`` is it minus the cap: negative when under). ``cpu_s`` is the
forwarder's user + system CPU over the run. ``--probe FILE`` runs it under bench/memprobe.py
for where the memory goes (reports at the baseline, at the stall and after the recovery).
Prints one JSON line; sizes in MiB. Bounded in connections, datapoints and time; everything
started is stopped by PID.
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
import urllib.request
from collections.abc import Callable

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


def frames(
    count: int, per_frame: int, series: int, tenants: int, now: int | None = None
) -> list[bytes]:
    """`count` length-prefixed pickle frames of `per_frame` datapoints (full-precision values).
    Like carbon, every one of `series` names comes once per round, a second earlier each round
    from `now`, so every (name, time) is distinct; with `tenants`, the names of frame f start
    with ``t<k>.`` (k = its block of names modulo `tenants`: what the rules file routes on)."""
    rng = random.Random(15)
    now = int(time.time()) if now is None else now
    blocks = max(1, series // per_frame)
    out = []
    for f in range(count):
        block, ts = f % blocks, now - f // blocks
        top = f"t{block % tenants}." if tenants else ""
        dps = [(f"{top}bench.b{block}.m{i}", (ts, rng.random() * 1e6)) for i in range(per_frame)]
        body = pickle.dumps(dps, protocol=2)
        out.append(struct.pack("!I", len(body)) + body)
    return out


def one_datapoint_frame(name: str) -> bytes:
    body = pickle.dumps([(name, (int(time.time()), 1.0))], protocol=2)
    return struct.pack("!I", len(body)) + body


def rules_file(directory: str, tenants: int) -> str:
    """A rules file (TOML) sending names that start with ``t<k>.`` to tenant ``tenant<k>``."""
    path = os.path.join(directory, "rules.toml")
    with open(path, "w") as f:
        for k in range(tenants):
            f.write(f'[[rule]]\nmatch = "prefix:t{k}."\ntenant = "tenant{k}"\n\n')
    return path


def wait_listening(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.args!r} did not listen")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sink_stats(port: int, unique: bool = False) -> dict:
    url = f"http://127.0.0.1:{port}/stats" + ("?unique" if unique else "")
    with urllib.request.urlopen(url, timeout=120) as resp:
        return dict(json.loads(resp.read()))


def wait_for(what: str, predicate: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Load:
    """Every connection sends whole frames from one shared list, each frame once."""

    def __init__(self, conns: list[socket.socket], frame_list: list[bytes]) -> None:
        self.conns = conns
        self.frames = frame_list
        self.next_frame = 0
        self.current: list[memoryview | None] = [None] * len(conns)
        self.sent_frames = 0
        self.sent_bytes = 0

    def _take(self, i: int) -> memoryview | None:
        if self.next_frame >= len(self.frames):
            return None
        self.current[i] = memoryview(self.frames[self.next_frame])
        self.next_frame += 1
        return self.current[i]

    def run(self, seconds: float, on_tick: Callable[[], None]) -> None:
        sel = selectors.DefaultSelector()
        for i, c in enumerate(self.conns):
            sel.register(c, selectors.EVENT_WRITE, i)
        start = time.monotonic()
        # The whole time even once everything was sent: the forwarder reads it from the
        # kernel's buffers at its own pace, up to the cap.
        while time.monotonic() < start + seconds:
            for key, _ in sel.select(timeout=0.05):
                i = key.data
                view = self.current[i] or self._take(i)
                if view is None:
                    continue
                try:
                    n = self.conns[i].send(view)
                except (BlockingIOError, InterruptedError):
                    continue
                self.sent_bytes += n
                self.current[i] = view[n:] if n < len(view) else None
                self.sent_frames += n == len(view)
            on_tick()
        sel.close()

    def finish(self) -> None:
        """Send the rest of every frame begun (blocking), so only whole frames were sent."""
        for i, view in enumerate(self.current):
            if view is not None:
                self.conns[i].setblocking(True)
                self.conns[i].settimeout(120)
                self.conns[i].sendall(view)
                self.sent_bytes += len(view)
                self.sent_frames += 1
                self.current[i] = None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=5.0, help="load time (bounded)")
    p.add_argument("--cap-mb", type=float, default=64.0, help="--max-buffer-bytes in MiB")
    p.add_argument("--datapoints", type=int, default=2_000_000, help="at most this many sent")
    p.add_argument("--series", type=int, default=10_000, help="distinct names, sent in turn")
    p.add_argument("--tenants", type=int, default=0, help="route names to N tenants (--rules)")
    p.add_argument(
        "--probe",
        metavar="FILE",
        help="run the forwarder under bench/memprobe.py and append its memory reports "
        "(at the baseline, at the stall and after the recovery) to FILE",
    )
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    command = " ".join(a.command[1:] if a.command[:1] == ["--"] else a.command) or DEFAULT_COMMAND
    if a.tenants and not a.command:
        command += " --rules {RULES}"
    cap = int(a.cap_mb * 1024 * 1024)
    env = dict(os.environ)
    if a.probe:
        command = command.replace(FASTFORWARD, f"{VENV_PYTHON} {MEMPROBE}", 1)
        env["PROBE_OUT"] = os.path.abspath(a.probe)
    frame_list = frames(max(1, a.datapoints // 500), 500, a.series, a.tenants)
    # with routing, one round of every name, a minute ahead of the load's times (so each (name,
    # time) stays distinct): the routing decisions kept per name are in the baseline (without
    # routing nothing is kept per name, and the baseline stays that of idle connections alone)
    names_round = (
        frames(max(1, a.series // 500), 500, a.series, a.tenants, int(time.time()) + 60)
        if a.tenants
        else []
    )

    run_dir = tempfile.mkdtemp(prefix="ff-manysenders-")
    sink_port = free_port()
    with open(os.path.join(run_dir, "sink.log"), "wb") as log:
        sink = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "sink.py"), "--port", str(sink_port),
             "--track-unique", "--max-seconds", "900"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    port = free_port()
    rules = rules_file(run_dir, a.tenants) if a.tenants else ""
    cmd = command.format(PORT=port, SINK_URL=f"http://127.0.0.1:{sink_port}", CAP=cap, RULES=rules)
    with open(os.path.join(run_dir, "forwarder.log"), "wb") as log:
        proc = subprocess.Popen(
            shlex.split(cmd), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    conns: list[socket.socket] = []
    result: dict[str, object] = {"command": cmd, "connections": a.connections, "cap_mb": a.cap_mb}
    result["tenants"] = a.tenants
    paused = False
    try:
        wait_listening(sink_port, sink, time.monotonic() + 30)
        wait_listening(port, proc, time.monotonic() + 30)
        time.sleep(0.5)
        start_rss = status_mb(proc.pid, "VmRSS")
        result["start_rss_mb"] = round(start_rss, 1)
        # 1. warm-up: one datapoint from each connection, and every name of the load once
        # (spread over the first connections), all delivered
        for i in range(a.connections):
            c = socket.create_connection(("127.0.0.1", port), timeout=30)
            c.sendall(one_datapoint_frame(f"t{i % max(1, a.tenants)}.warm.c{i}"))
            conns.append(c)
        for i, frame in enumerate(names_round):
            conns[i % len(conns)].sendall(frame)
        warm_up = a.connections + len(names_round) * 500
        wait_for("the warm-up datapoints", lambda: sink_stats(sink_port)["datapoints"]
                 >= warm_up, 60)  # fmt: skip
        time.sleep(1.0)  # the burst-end and interval flushes are over, the connections idle
        baseline = status_mb(proc.pid, "VmRSS")
        probe(proc.pid, a.probe)
        result["baseline_rss_mb"] = round(baseline, 1)
        overhead_kib = (baseline - start_rss) * 1024 / a.connections
        result["per_connection_overhead_kib"] = round(overhead_kib, 1)
        # 2. stall and load
        os.kill(sink.pid, signal.SIGUSR1)
        paused = True
        for c in conns:
            c.setblocking(False)
            # little data waits in the kernel: what the sender has sent, the forwarder has
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        load = Load(conns, frame_list)
        rss_max = [0.0]

        def sample() -> None:
            rss_max[0] = max(rss_max[0], status_mb(proc.pid, "VmRSS"))

        started = time.monotonic()
        load.run(a.seconds, sample)
        result["load_s"] = round(time.monotonic() - started, 2)
        result["rss_sampled_max_mb"] = round(rss_max[0], 1)
        stall_peak = status_mb(proc.pid, "VmHWM")
        result["peak_rss_at_stall_mb"] = round(stall_peak, 1)
        probe(proc.pid, a.probe)  # after the peak is read: the report allocates too
        with open(os.path.join(run_dir, "forwarder.log"), errors="replace") as f:
            result["backpressure_logged"] = "backpressure:" in f.read()
        # 3. recovery: everything sent must arrive, once
        os.kill(sink.pid, signal.SIGUSR1)
        paused = False
        load.finish()
        for c in conns:
            c.close()
        conns = []
        expected = warm_up + load.sent_frames * 500
        result["sent_datapoints"] = expected
        result["sent_mb"] = round(load.sent_bytes / 1e6, 1)
        wait_for("every datapoint at the sink",
                 lambda: sink_stats(sink_port)["datapoints"] >= expected, 300)  # fmt: skip
        time.sleep(0.5)  # a late duplicate would show here
        probe(proc.pid, a.probe)  # after the recovery
        stats = sink_stats(sink_port, unique=True)
        result["lost"] = expected - int(stats["unique"])
        result["duplicated"] = int(stats["duplicates"])
        # VmHWM is read from approximate per-thread counters: the highest reading counts
        peak = max(status_mb(proc.pid, "VmHWM"), stall_peak, rss_max[0])
        result["peak_rss_mb"] = round(peak, 1)
        held = peak - baseline
        result["held_for_data_mb"] = round(held, 2)
        result["over_cap_mb"] = round(held - cap / (1024 * 1024), 2)
        result["under_cap"] = held * 1024 * 1024 <= cap
        result["cpu_s"] = round(cpu_seconds(proc.pid), 2)
        result["forwarder_alive"] = proc.poll() is None
        proc.terminate()
        result["exit_code"] = proc.wait(timeout=60)
    finally:
        for c in conns:
            c.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if paused and sink.poll() is None:
            os.kill(sink.pid, signal.SIGUSR1)
        if sink.poll() is None:
            sink.terminate()
            sink.wait(timeout=60)
    result["run_dir"] = run_dir
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
