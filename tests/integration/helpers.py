"""Helpers of the no-loss suite that `conftest.py` does not have: failure modes for the fake
Blueflood, steady senders, /metrics scraping, the memory of a child process, and fastforward
started with both listeners and the admin endpoint (`start_with_admin`).

Process starting, ports, `wait_until` and `frame` come from `conftest.py` (the service
engineer's); this module only adds to them.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIServer

from tests.fake_blueflood import FakeBlueflood, _drop_connection, _Handler

from .conftest import ANY_PORT, TENANT, Process, frame

INGEST_PATH = re.compile(r"^/v2\.0/[^/]+/ingest$")


def start_with_admin(
    run_ff,  # noqa: ANN001 - the fixture's start function
    bf: FakeBlueflood,
    *extra: str,
    interval: str = "0.5",
) -> tuple[Process, int, int, int]:
    """fastforward into `bf` with a pickle listener, a plaintext one and the admin endpoint,
    each on a port the kernel picked: (process, pickle port, line port, admin port)."""
    ff = run_ff(
        "-e", ANY_PORT,
        "--line-endpoint", ANY_PORT,
        "-b", bf.url, "-t", TENANT, "-i", interval,
        "--admin-endpoint", ANY_PORT, *extra,
    )  # fmt: skip
    return ff, ff.port(), ff.port("tcp", "line"), ff.admin_port


# ---- failure modes of the fake Blueflood ------------------------------------------------------


class Outage:
    """Switchable failure modes wrapped around one FakeBlueflood's responder.

    ``mode``: None (healthy), ``"503"``, ``"500"``, ``"close"`` (drop the connection without a
    response, nothing stored), ``"close_after_store"`` (store, then drop: the client must retry,
    so those datapoints may arrive twice), ``"slow"`` (``slow_seconds`` before answering),
    ``"stall"`` (no answer until ``release()``: a Blueflood that hangs).
    ``failed`` holds the raw bodies that saw a failure, ``stored_bodies`` the bodies the fake
    stored (a dropped-after-store body included).
    """

    def __init__(self, bf: FakeBlueflood, slow_seconds: float = 5.0) -> None:
        self.bf = bf
        self.mode: str | None = None
        self.slow_seconds = slow_seconds
        self.failed: list[bytes] = []
        self.stored_bodies: list[bytes] = []
        self.poison: set[str] = set()  # metric names that always earn a 500
        self.hits = 0  # ingest requests that met a failure mode (slow included)
        self.released = Event()  # ends a "stall"
        self._inner = bf._respond
        bf._respond = self._respond  # type: ignore[method-assign]

    def _respond(self, environ: dict, req):  # noqa: ANN202 - the fake's signature
        if req.method != "POST" or not INGEST_PATH.match(req.path):
            return self._inner(environ, req)
        mode = self.mode
        if mode is not None:
            self.hits += 1
        if self.poison and any(f'"metricName":"{n}"'.encode() in req.raw for n in self.poison):
            self.failed.append(req.raw)
            return 500, b'{"errors":[{"message":"Failed parsing content"}]}', {}
        if mode == "503":
            self.failed.append(req.raw)
            return 503, b"", {}
        if mode == "500":
            self.failed.append(req.raw)
            return 500, b"", {}
        if mode == "close":
            self.failed.append(req.raw)
            _drop_connection(environ)
        if mode == "close_after_store":
            self.failed.append(req.raw)
            status, _body, _headers = self._inner(environ, req)
            if status in (200, 207):
                self.stored_bodies.append(req.raw)
            _drop_connection(environ)
        if mode == "slow":
            gevent.sleep(self.slow_seconds)
        if mode == "stall":
            self.released.wait()
        status, body, headers = self._inner(environ, req)
        if status in (200, 207):
            self.stored_bodies.append(req.raw)
        return status, body, headers

    def release(self) -> None:
        """End a "stall": the requests it holds are answered, the next ones at once."""
        self.mode = None
        self.released.set()

    def refuse(self) -> None:
        """Stop listening: connections are refused until ``resume()``.

        gevent's server keeps serving keep-alive connections it already has after ``stop()``;
        those are dropped at their next request, as a dying Blueflood would reset them.
        """
        self._port = self.bf.port
        self.bf.stop()
        self.mode = "close"

    def resume(self) -> None:
        """Listen again on the same port (SO_REUSEADDR is gevent's default)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                server = WSGIServer(
                    ("127.0.0.1", self._port),
                    self.bf._app,
                    handler_class=_Handler,
                    log=None,
                    error_log="default",
                )
                server.start()
                break
            except OSError:  # the old socket may linger a moment
                if time.monotonic() > deadline:
                    raise
                gevent.sleep(0.1)
        self.bf._server = server
        self.mode = None


def datapoint_counts(bodies: list[bytes]) -> Counter[tuple[str, int]]:
    """(metricName, collectionTime) occurrences over JSON bodies."""
    counts: Counter[tuple[str, int]] = Counter()
    for body in bodies:
        for p in json.loads(body):
            counts[(p["metricName"], p["collectionTime"])] += 1
    return counts


# ---- steady senders ---------------------------------------------------------------------------


@dataclass
class Sender:
    """One TCP pickle connection sending ``per_frame`` datapoints every ``period`` seconds.

    Names are ``<prefix>.<frame>.<i>`` at timestamp ``ts``, so every datapoint is distinct and
    ``expected`` lists what was handed to the kernel. With ``mix`` (more prefixes), datapoint
    ``i`` of a frame takes the ``i % n``-th of ``(prefix, *mix)``: one connection carrying
    several kinds of names (for routing, several tenants), as a relay's does.
    """

    port: int
    prefix: str
    ts: int
    per_frame: int = 100
    period: float = 0.05
    mix: tuple[str, ...] = ()
    expected: set[tuple[str, int]] = field(default_factory=set)
    frames: int = 0
    blocked: float = 0.0  # seconds sendall() waited: backpressure reaching the client
    _stop: bool = False
    _greenlet: gevent.Greenlet | None = None

    def start(self) -> Sender:
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        self._stop = True
        assert self._greenlet is not None
        self._greenlet.join(timeout=60)
        if not self._greenlet.successful():
            raise AssertionError(f"sender {self.prefix} failed: {self._greenlet.exception!r}")

    def _run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
            next_at = time.monotonic()
            prefixes = (self.prefix, *self.mix)
            while not self._stop:
                names = [
                    f"{prefixes[i % len(prefixes)]}.{self.frames}.{i}"
                    for i in range(self.per_frame)
                ]
                data = frame([(n, (self.ts, i)) for i, n in enumerate(names)])
                started = time.monotonic()
                s.sendall(data)
                self.blocked += max(0.0, time.monotonic() - started - 0.01)
                self.expected.update((n, self.ts * 1000) for n in names)
                self.frames += 1
                next_at += self.period
                gevent.sleep(max(0.0, next_at - time.monotonic()))


# ---- the admin endpoint -----------------------------------------------------------------------


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """One scrape of /metrics: ``m["fastforward_x_total"]`` sums over labels,
    ``m.get("fastforward_x_total", reason="nan")`` is one labelled sample."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            if match is None:
                raise AssertionError(f"not a Prometheus sample line: {line!r}")
            name, labels, value = match.groups()
            key = frozenset(_LABEL.findall(labels or ""))
            self.samples[(name, key)] = float(value)

    def get(self, name: str, **labels: str) -> float:
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def __getitem__(self, name: str) -> float:
        return self.get(name)


def scrape(admin_port: int) -> Metrics:
    status, text = http_get(f"http://127.0.0.1:{admin_port}/metrics")
    assert status == 200, text
    return Metrics(text)


# ---- memory of the child ----------------------------------------------------------------------


def proc_status_kb(pid: int, field_name: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field_name} not in /proc/{pid}/status")


# ---- file permissions that bind root too ------------------------------------------------------

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def obey_file_permissions() -> None:
    """``preexec_fn`` making a child started as root obey file modes (so a directory of mode
    0o555 is unwritable to it): drops the capabilities that bypass them from its bounding set.
    Nothing to do for an unprivileged user."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def start_routed(run_ff, bf: FakeBlueflood, tmp_path: Path, rules: str, *extra: str):  # noqa: ANN001, ANN201
    """fastforward with ``--rules`` (the text written to ``tmp_path/rules.toml``, which a test
    may rewrite before a SIGHUP), default tenant TENANT, flushing every 0.2 s, the admin
    endpoint on; returns (process, pickle port, admin port)."""
    path = tmp_path / "rules.toml"
    path.write_text(rules)
    ff = run_ff(
        "-e", ANY_PORT, "-b", bf.url, "-t", TENANT, "-i", "0.2",
        "--admin-endpoint", ANY_PORT, "--rules", str(path), *extra,
    )  # fmt: skip
    return ff, ff.port(), ff.admin_port
