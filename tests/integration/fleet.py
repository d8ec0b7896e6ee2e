"""A fleet on one machine: real carbon-c-relay and haproxy in front of several fastforward
instances, the bench sink as their Blueflood, and a bounded plaintext stream.

Every process is started here with its own log file and stopped by its PID. The tools are the
Debian packages: a test skips without them, unless the CI environment variable is set (CI
installs them, so there a missing tool is a failure).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import gevent
import pytest

from tests.support import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
SINK_SCRIPT = REPO / "bench" / "sink.py"


def require_tool(name: str, package: str) -> str:
    """The path of a tool, or skip (fail in CI) naming the Debian package that provides it."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} not found; CI must install the Debian package {package}")
    pytest.skip(f"{name} not installed (Debian package {package})")


def wait_listening(host: str, port: int, what: str, timeout: float = 20.0) -> None:
    def up() -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(up, timeout, f"{what} to listen on {host}:{port}")


class Daemon:
    """A child process with its output in a file; stopped by its PID."""

    def __init__(
        self, name: str, argv: list[str], tmp: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = tmp / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        self.send(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(f"{self.name} did not stop in {timeout}s:\n{self.log}") from None


class Sink(Daemon):
    """bench/sink.py as one instance's Blueflood, remembering every distinct datapoint."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.port = free_port()  # its configuration names the port
        self.keys_path = tmp / f"{name}.keys"
        argv = [sys.executable, str(SINK_SCRIPT), "--port", str(self.port), "--track-unique",
                "--keys-file", str(self.keys_path), "--max-seconds", "600"]  # fmt: skip
        super().__init__(name, argv, tmp)
        wait_listening("127.0.0.1", self.port, name)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as resp:
            return dict(json.load(resp))

    def finish(self) -> tuple[int, set[tuple[str, int]]]:
        """Stop it; (datapoints received, the distinct (name, collectionTime) pairs)."""
        received = int(self.stats()["datapoints"])
        assert self.stop() == 0, self.log
        keys = set()
        for line in self.keys_path.read_bytes().splitlines():
            name, _, ts = line.rstrip(b",").rpartition(b":")
            keys.add((name.decode(), int(ts)))
        return received, keys


class LineStream:
    """A bounded plaintext sender: ``series`` names x ``steps`` timestamps, every pair once.

    Everything is built before it starts; one step (a line per series) is written every
    ``1 / steps_per_second`` seconds over ``connections`` TCP connections, round robin.
    ``sent`` counts lines handed to the kernel, so progress can be waited on.
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        prefix: str,
        series: int,
        steps: int,
        steps_per_second: float,
        connections: int = 1,
    ) -> None:
        self.address = address
        self.series = series
        self.steps_per_second = steps_per_second
        self.connections = connections
        self.base_ts = int(time.time()) - steps  # all inside fastforward's --max-past
        self.names = [f"{prefix}.s{i}.value" for i in range(series)]
        self.chunks = [
            "".join(f"{n} {step}.5 {self.base_ts + step}\n" for n in self.names).encode()
            for step in range(steps)
        ]
        self.sent = 0
        self.error: BaseException | None = None
        self._greenlet: gevent.Greenlet | None = None

    @property
    def total(self) -> int:
        return self.series * len(self.chunks)

    def expected(self) -> set[tuple[str, int]]:
        times = [(self.base_ts + step) * 1000 for step in range(len(self.chunks))]
        return {(n, t) for t in times for n in self.names}

    def start(self) -> LineStream:
        self._greenlet = gevent.spawn(self._run)
        return self

    def _run(self) -> None:
        socks = [socket.create_connection(self.address, 60) for _ in range(self.connections)]
        try:
            started = time.monotonic()
            for step, chunk in enumerate(self.chunks):
                socks[step % len(socks)].sendall(chunk)
                self.sent += self.series
                due = started + (step + 1) / self.steps_per_second
                gevent.sleep(max(0.0, due - time.monotonic()))
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            for s in socks:
                s.close()

    def wait_sent(self, fraction: float, timeout: float = 120.0) -> None:
        want = int(self.total * fraction)

        def reached() -> bool:
            if self.error is not None:
                raise AssertionError(f"the stream failed: {self.error!r}")
            return self.sent >= want

        wait_until(reached, timeout, f"{want} of {self.total} lines sent")

    def join(self, timeout: float = 120.0) -> None:
        assert self._greenlet is not None
        self._greenlet.join(timeout=timeout)
        if not self._greenlet.ready():
            raise AssertionError(f"stream still running after {timeout}s ({self.sent} sent)")
        if self.error is not None:
            raise AssertionError(f"the stream failed: {self.error!r}")


# ---- carbon-c-relay ---------------------------------------------------------------------------


class CarbonCRelay(Daemon):
    """carbon-c-relay with one cluster; its statistics go to a file every second.

    ``-q`` holds a whole restart's worth of metrics per destination and ``-L 15`` stalls the
    sender rather than dropping, so anything missing is the forwarders' doing, not the relay's.
    """

    # It writes one metric per write() and never reads: a dead connection swallows one write,
    # a close by fastforward (reset at a pause) nothing.
    lost_on_kill = 1
    lost_on_close = 0

    def __init__(self, tmp: Path, cluster: str, members: list[tuple[str, int]]) -> None:
        binary = require_tool("carbon-c-relay", "carbon-c-relay")
        self.port = free_port()  # its configuration names the port
        self.stats_path = tmp / "relay-stats.txt"
        # The ring hashes host (and instance): distinct addresses spread the series.
        dests = " ".join(f"{h}:{p}" for h, p in members)
        conf = tmp / "relay.conf"
        conf.write_text(
            f"listen type linemode 127.0.0.1:{self.port} proto tcp;\n"
            f"cluster relaystats file {self.stats_path};\n"
            f"cluster tier {cluster} {dests};\n"
            "statistics submit every 1 seconds prefix with relaystats send to relaystats stop;\n"
            "match * send to tier stop;\n"
        )
        argv = [binary, "-f", str(conf), "-q", "2000000", "-L", "15", "-w", "2", "-B", "128"]
        super().__init__(f"carbon-c-relay-{cluster}", argv, tmp)
        wait_listening("127.0.0.1", self.port, "carbon-c-relay")

    def stats(self) -> dict[str, float]:
        """The latest value of each of its own statistics (``metricsDropped``, ...)."""
        latest: dict[str, float] = {}
        if self.stats_path.exists():
            for line in self.stats_path.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0].startswith("relaystats."):
                    latest[parts[0].removeprefix("relaystats.")] = float(parts[1])
        return latest

    def totals(self) -> dict[str, float]:
        s = self.stats()
        keys = ("metricsReceived", "metricsSent", "metricsQueued", "metricsDropped", "metricStalls")
        return {k: s.get(k, 0.0) for k in keys}

    def idle(self) -> bool:
        """Its queues are empty (as of its last statistics, a second old at most)."""
        return self.totals()["metricsQueued"] == 0


class Settled:
    """Waits for the end of a run: ``total`` datapoints delivered downstream or, when some
    were lost, the relay's queues empty and nothing delivered for ``quiet`` seconds."""

    def __init__(self, relay: CarbonCRelay | CarbonRelay, sinks: list[Sink], total: int) -> None:
        self.relay = relay
        self.sinks = sinks
        self.total = total
        self.last = (-1.0, 0.0)

    def __call__(self, quiet: float = 3.0) -> bool:
        delivered = sum(sink.stats()["datapoints"] for sink in self.sinks)
        if delivered >= self.total:
            return True
        now = time.monotonic()
        if delivered != self.last[0]:
            self.last = (delivered, now)
            return False
        return now - self.last[1] >= quiet and self.relay.idle()


def home_of(keysets: dict[str, set[tuple[str, int]]]) -> dict[str, str]:
    """For each series name, the instance that received most of its datapoints."""
    counts: dict[str, Counter[str]] = {}
    for instance, keys in keysets.items():
        for name, _ts in keys:
            counts.setdefault(name, Counter())[instance] += 1
    return {name: c.most_common(1)[0][0] for name, c in counts.items()}


# ---- haproxy ----------------------------------------------------------------------------------


class Haproxy(Daemon):
    """haproxy in ``mode tcp`` with ``balance leastconn``; servers switched on at run time.

    Servers listed in ``standby`` start in maintenance and are enabled through the runtime
    API on the stats socket (``enable server``): no reload, no dropped connections.
    """

    def __init__(self, tmp: Path, servers: dict[str, int], standby: set[str]) -> None:
        binary = require_tool("haproxy", "haproxy")
        self.port = free_port()  # its configuration names the port
        self.socket_path = tmp / "haproxy.sock"
        lines = [
            "global",
            f"    stats socket {self.socket_path} mode 600 level admin",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 60s",
            "    timeout server 60s",
            "frontend carbon",
            f"    bind 127.0.0.1:{self.port}",
            "    default_backend fleet",
            "backend fleet",
            "    balance leastconn",
        ]
        for name, port in servers.items():
            lines.append(
                f"    server {name} 127.0.0.1:{port}" + (" disabled" if name in standby else "")
            )
        conf = tmp / "haproxy.cfg"
        conf.write_text("\n".join(lines) + "\n")
        super().__init__("haproxy", [binary, "-db", "-f", str(conf)], tmp)
        wait_listening("127.0.0.1", self.port, "haproxy")

    def command(self, line: str) -> str:
        """One runtime API command; its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()


class ReconnectingSender:
    """A long-lived carbon pickle connection that, like carbon-relay, reads its socket: when
    the receiver closes, it stops writing, closes, and connects again (through the balancer).

    Frames of ``per_frame`` distinct datapoints every ``period`` seconds, until stopped or
    ``max_frames`` (a bound). ``expected`` is every datapoint handed to the kernel.
    """

    def __init__(
        self, address: tuple[str, int], prefix: str, *, per_frame: int = 100,
        period: float = 0.02, max_frames: int = 5000,
    ) -> None:  # fmt: skip
        self.address = address
        self.prefix = prefix
        self.per_frame = per_frame
        self.period = period
        self.max_frames = max_frames
        self.ts = int(time.time())
        self.expected: set[tuple[str, int]] = set()
        self.reconnects = 0
        self._stop = False
        self._greenlet = gevent.spawn(self._run)

    def _closed_by_peer(self, s: socket.socket) -> bool:
        s.settimeout(0.0)
        try:
            return s.recv(1) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True
        finally:
            s.settimeout(30)

    def _run(self) -> None:
        s = socket.create_connection(self.address, timeout=30)
        try:
            for f in range(self.max_frames):
                if self._stop:
                    break
                if self._closed_by_peer(s):
                    s.close()
                    s = socket.create_connection(self.address, timeout=30)
                    self.reconnects += 1
                names = [f"{self.prefix}.{f}.{i}" for i in range(self.per_frame)]
                payload = pickle.dumps([(n, (self.ts, i)) for i, n in enumerate(names)], 2)
                s.sendall(struct.pack("!L", len(payload)) + payload)
                self.expected.update((n, self.ts * 1000) for n in names)
                gevent.sleep(self.period)
        finally:
            s.close()

    def stop(self) -> None:
        self._stop = True
        self._greenlet.join(timeout=30)
        if not self._greenlet.successful():
            raise AssertionError(f"sender {self.prefix} failed: {self._greenlet.exception!r}")


# ---- graphite's carbon-relay ------------------------------------------------------------------


class CarbonRelay(Daemon):
    """graphite's own carbon-relay (the ``carbon`` package of the test extra, Python < 3.12):
    plaintext in, ``RELAY_METHOD = consistent-hashing`` over pickle out."""

    # Twisted drops what its transport still buffers when a connection closes, whoever closes
    # it, and carbon has no acknowledgement: up to its 64 KiB write buffer plus the 500-datapoint
    # message being written (about 35 bytes a datapoint here), 2,500 datapoints.
    lost_on_kill = 2500
    lost_on_close = 2500

    def __init__(self, tmp: Path, members: list[tuple[str, int]]) -> None:
        script = Path(sys.executable).parent / "carbon-relay.py"
        if not script.exists():
            if sys.version_info >= (3, 12):  # carbon 1.1.10 does not install there
                pytest.skip("graphite's carbon-relay does not install on Python 3.12+")
            pytest.fail(f"{script} not found: install the test extra (carbon, whisper)")
        self.port = free_port()  # its configuration names the port
        root = tmp / "graphite"
        for d in ("conf", "storage", "log", "run"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "conf" / "storage-schemas.conf").write_text(
            "[default]\npattern = .*\nretentions = 60s:1d\n"
        )
        # Instances a, b, c: the ring hashes (host, instance), as carbon_ch does.
        dests = ",".join(f"{h}:{p}:{chr(97 + i)}" for i, (h, p) in enumerate(members))
        conf = root / "conf" / "carbon.conf"
        conf.write_text(
            f"[cache]\nSTORAGE_DIR = {root}/storage\nLOCAL_DATA_DIR = {root}/storage/whisper\n"
            f"LOG_DIR = {root}/log\nPID_DIR = {root}/run\n\n[relay]\n"
            f"LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {self.port}\n"
            "PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = 0\n"
            "ENABLE_UDP_LISTENER = False\nRELAY_METHOD = consistent-hashing\n"
            f"REPLICATION_FACTOR = 1\nDESTINATIONS = {dests}\nDESTINATION_PROTOCOL = pickle\n"
            "MAX_DATAPOINTS_PER_MESSAGE = 500\nMAX_QUEUE_SIZE = 2000000\n"
            "USE_FLOW_CONTROL = True\nCARBON_METRIC_INTERVAL = 0\n"
            "LOG_LISTENER_CONN_SUCCESS = False\n"
        )
        argv = [sys.executable, str(script), f"--config={conf}", "--nodaemon",
                f"--pidfile={root}/run/relay.pid", f"--logdir={root}/log", "start"]  # fmt: skip
        env = dict(os.environ, GRAPHITE_ROOT=str(root))
        super().__init__("carbon-relay", argv, tmp, env)
        wait_listening("127.0.0.1", self.port, "carbon-relay", timeout=30)

    def totals(self) -> dict[str, float]:
        return {}  # no statistics of its own here (CARBON_METRIC_INTERVAL = 0)

    def idle(self) -> bool:
        return True  # it publishes no queue sizes here: `Settled` waits for quiet instead
