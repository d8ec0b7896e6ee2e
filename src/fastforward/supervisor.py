"""``--workers N``: one supervisor process and N worker processes sharing the listening sockets.

Design, and why
---------------
- **Pre-bound shared sockets, not SO_REUSEPORT.** The supervisor binds every listener once
  (TCP, TCP6, UNIX, UDP, and the TCP socket of a TLS listener; the TLS wrapping happens in the
  worker) and hands the same sockets to every worker; the kernel gives each new connection (or
  datagram) to whichever worker accepts (reads) first. This works for UNIX sockets and UDP as
  well, a kernel-chosen port (``tcp:0``) is the same for everyone, and a worker that dies
  leaves no orphaned accept queue behind: with SO_REUSEPORT each socket has its own queue and
  the connections waiting in a dead worker's queue are reset. The supervisor keeps its copies
  open, so a restarted worker gets the very same sockets and nothing is ever re-bound.
- **Balancing.** Idle workers race for each connection on a shared socket, and the one that
  is awake tends to win a whole burst (a relay opening its four connections at once would
  land on one worker). So each worker publishes its connection count in a small shared
  memory block, and a worker holding more connections than the least loaded one leaves a new
  connection ``DEFER_SECONDS`` (5 ms) to the others before taking it itself (`_Balancer`).
  SO_REUSEPORT would spread connections by a hash of their addresses: no better for a handful
  of long-lived carbon connections, and not available for UNIX sockets.
- **Workers are fresh interpreters (fork + exec), not bare forks.** A worker is
  ``python -m fastforward <the same arguments>`` with the sockets passed as inherited file
  descriptors (``pass_fds``) and a private environment variable naming them. So every worker,
  the first ones and every restart alike, starts exactly like a one-process fastforward: gevent
  patches the standard library before anything imports requests/urllib3/ssl, and there is no
  gevent hub, thread, lock or connection pool inherited from a parent. The supervisor itself
  can then use gevent freely (its admin endpoint, child watchers) without making later forks
  unsafe. The price is a fresh import per worker start (a fraction of a second) and no
  copy-on-write sharing of the interpreter's memory (a few tens of MB per worker).
- **A private control channel per worker** (a UNIX socketpair, newline-delimited JSON):
  the worker sends its stats samples and its health every second (and once more after it
  drained); the supervisor sends ``stop``. Stopping through the channel instead of re-sending
  SIGTERM means a worker that also received the signal directly (``kill`` of the process
  group, systemd's control-group stop, Ctrl-C in a terminal) sees one stop request, not two;
  a second signal would make it exit at once without draining. End of file on the channel
  (the supervisor died, even by SIGKILL) also makes the worker drain and exit: no orphans.
- **Self-metrics** on the supervisor's ``/metrics`` are the workers' samples merged
  (`merge_samples`): counters and per-worker gauges are summed; gauges describing a shared
  resource (the spool directory: ``buffered_bytes{place="disk"}``, ``spool_files``) and the
  0/1 ``backpressure_active`` take the maximum; ``uptime_seconds`` is the supervisor's. The
  last counters of a worker that exited are kept, so sums never go backwards after a restart.
  ``/health`` is 200 only while every worker runs, reports, and reports itself healthy.
  ``/debug/senders`` and ``/debug/rejects`` merge the running workers' tables
  (`attribution.merge_debug`).
  With ``--self-metrics-prefix``, each worker forwards its own numbers under
  ``<prefix>.worker<N>`` (the same names from several processes would overwrite each other).
- **Restarts:** a worker that exits while the supervisor is not stopping is restarted after a
  backoff that doubles on each death within ``STABLE_SECONDS`` of its start (0.5 s up to
  30 s), so a crash loop does not spin; each death is logged with its exit status. A worker
  that fails during the initial start (bad certificate, unusable spool directory...) stops
  the whole start with its exit code instead.
- **Stopping:** SIGTERM/SIGINT: the supervisor closes its copies of the listeners (so once the
  workers have drained their accept queues, new connections are refused rather than queued
  for nobody), asks every worker to stop, waits up to ``--drain-timeout`` plus
  ``DRAIN_MARGIN`` seconds, then SIGKILLs the stragglers. Exit 0 when every worker drained
  (exited 0). A second signal kills the workers and exits 1 at once; one that follows the
  first within ``SIGNAL_DEBOUNCE`` is taken as the same request delivered twice (to the
  supervisor and to its process group, as ``timeout`` or systemd do).
- **Spool:** each worker opens its own `Spool` on the shared ``--spool-dir`` (file names carry
  the pid, replay claims files with ``flock``), so whichever worker starts replays what any
  earlier process left there.
- The pidfile holds the supervisor's pid; workers' log lines carry ``[worker N]``. Every
  process appends to the same log; with ``LOG_DIR`` rotation, only the supervisor rotates
  (checking the size every ``ROTATE_CHECK_SECONDS``) and workers reopen the moved file.

``--workers 1`` (the default) runs no supervisor at all; ``auto`` is the number of CPUs this
process may run on.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import EXIT_ERROR, EXIT_OK, EXIT_UNDELIVERED, StartupError
from .pidfile import PidFile

__all__ = [
    "WORKER_ENV",
    "MergedStats",
    "Supervisor",
    "merge_samples",
    "resolve_workers",
    "restart_delay",
    "run_worker",
    "worker_spec",
]

log = logging.getLogger("fastforward.supervisor")

WORKER_ENV = "_FASTFORWARD_WORKER"  # private: set by the supervisor for its workers only
REPORT_SECONDS = 1.0  # worker -> supervisor stats period
STALE_SECONDS = 5.0  # a worker silent this long is unhealthy
STABLE_SECONDS = 30.0  # a worker that lived this long resets the restart backoff
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
DRAIN_MARGIN = 10.0  # beyond --drain-timeout: receiver drain, spool writes, interpreter exit
START_TIMEOUT = 60.0  # for the initial workers to report that they serve
DEFER_SECONDS = 0.005  # a busier worker leaves a new connection this long to a less busy one
IDLE_SLOT = 2**62  # the load of a dead worker: never the least loaded
ROTATE_CHECK_SECONDS = 2.0  # how often the supervisor checks the log size (LOG_DIR)
SIGNAL_DEBOUNCE = 1.0  # a repeat this soon is the same stop delivered twice

# Gauges that describe something the workers share: the maximum, not the sum.
MAX_GAUGES: frozenset[tuple[str, tuple[tuple[str, str], ...]]] = frozenset(
    {
        ("buffered_bytes", (("place", "disk"),)),
        ("spool_files", ()),
        ("backpressure_active", ()),
        ("blueflood_failing_seconds", ()),
    }
)

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels, float]


def resolve_workers(value: str) -> int:
    """The number of worker processes for a validated ``--workers`` value."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))  # cores we may run on (cgroups, taskset)
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)
    return max(1, int(value))


def restart_delay(quick_deaths: int) -> float:
    """Seconds before restarting a worker that died ``quick_deaths`` times in a row, each
    within `STABLE_SECONDS` of its start: 0.5, 1, 2, 4... up to `BACKOFF_MAX`."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, min(quick_deaths - 1, 16)))


# ---- merging the workers' samples -------------------------------------------------------------


def merge_samples(
    snapshots: Iterable[Iterable[Sample]], retired: Mapping[tuple[str, Labels], float] | None = None
) -> list[Sample]:
    """Merge per-worker samples: sums, except `MAX_GAUGES` (maximum) and ``uptime_seconds``
    (left out: the caller reports its own). ``retired`` holds counters of workers that exited
    and is added in. The result is ordered like `Stats.samples`: registration order, then
    labels. Unknown names are skipped."""
    from .stats import METRICS  # noqa: PLC0415 - keeps this module importable before the patch

    out: dict[tuple[str, Labels], float] = dict(retired or {})
    for snapshot in snapshots:
        for name, labels, value in snapshot:
            if name not in METRICS or name == "uptime_seconds":
                continue
            key = (name, tuple(labels))
            if key in MAX_GAUGES:
                out[key] = max(out.get(key, value), value)
            else:
                out[key] = out.get(key, 0) + value
    order = {name: i for i, name in enumerate(METRICS)}
    return [
        (name, labels, value)
        for (name, labels), value in sorted(out.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    ]


def _decode_samples(raw: Any) -> list[Sample]:
    samples: list[Sample] = []
    for name, labels, value in raw:
        samples.append((str(name), tuple((str(k), str(v)) for k, v in labels), float(value)))
    return samples


# ---- the worker side ----------------------------------------------------------------------------


def worker_spec(environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The spec the supervisor gave this process (removed from the environment), or None."""
    env = os.environ if environ is None else environ
    raw = env.pop(WORKER_ENV, None)
    if raw is None:
        return None
    spec = json.loads(raw)
    if not isinstance(spec, dict) or not isinstance(spec.get("sockets"), dict):
        raise ValueError(f"{WORKER_ENV}: not a worker spec")
    return spec


def tag_log_lines(worker_id: int) -> None:
    """Put ``[worker N]`` into every line the root handlers write."""
    from .logsetup import FORMAT  # noqa: PLC0415 - logsetup is imported after the patch

    fmt = FORMAT.replace("[%(name)s]", f"[worker {worker_id}] [%(name)s]")
    if fmt == FORMAT:
        fmt = f"[worker {worker_id}] {FORMAT}"
    import logging.handlers  # noqa: PLC0415 - imports socket: after the patch

    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.handlers.RotatingFileHandler):
            # Only the supervisor rotates (several rotating processes would rotate the same
            # file over and over); a worker reopens the file once it has been moved aside.
            watched = logging.handlers.WatchedFileHandler(handler.baseFilename, encoding="utf-8")
            watched.setLevel(handler.level)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(watched)
            handler = watched
        handler.setFormatter(logging.Formatter(fmt))


def run_worker(config: Any, spec: dict[str, Any]) -> int:
    """Run one worker: the normal `Service` on the inherited sockets. Called after the patch."""
    import gevent  # noqa: PLC0415 - only after cli.main patched the standard library

    from .service import Service  # noqa: PLC0415 - imports requests/ssl: after the patch

    wid = int(spec["id"])
    sockets = {text: socket.socket(fileno=int(fd)) for text, fd in spec["sockets"].items()}
    channel = socket.socket(fileno=int(spec["channel"]))
    prefix = config.self_metrics_prefix
    config = replace(
        config,
        pidfile="",  # the supervisor's
        admin_endpoint="",  # served by the supervisor, summed over the workers
        self_metrics_prefix=f"{prefix.rstrip('.')}.worker{wid}" if prefix else "",
    )
    service = Service(config, sockets=sockets)
    balancer = None
    if spec.get("loads") is not None:
        balancer = _Balancer(int(spec["loads"]), wid - 1, int(spec["count"]), service)
    link = _WorkerLink(service, channel, balancer)
    greenlets = [gevent.spawn(link.report_loop), gevent.spawn(link.listen)]
    try:
        return service.run()
    finally:
        link.report()  # the counters after the drain
        gevent.killall(greenlets, block=False)
        channel.close()


class _Balancer:
    """Spreads connections over the workers: a worker holding more connections than the least
    loaded one lets a new connection wait ``DEFER_SECONDS`` for that one to take it.

    Without this, the worker that happens to be awake accepts a whole burst (a relay opening
    its connections at once lands on one worker). The counts live in a small shared memory
    block (one int64 per worker, written by its owner only; a dead worker's is set huge by
    the supervisor so nobody defers to it). A deferred connection is accepted by this worker
    after the wait if nobody else took it, so nothing waits longer than that.
    """

    def __init__(self, fd: int, index: int, count: int, service: Any) -> None:
        import mmap  # noqa: PLC0415

        self._mem = mmap.mmap(fd, 8 * count)
        os.close(fd)
        self._loads = memoryview(self._mem).cast("q")
        self._index = index
        self._service = service
        self._loads[index] = 0

    def install(self) -> None:
        from gevent.server import StreamServer  # noqa: PLC0415

        for listener in self._service.receivers.listeners:
            server = getattr(listener, "server", None)
            if isinstance(server, StreamServer):
                server.do_read = self._wrap(server, server.do_read)

    def load(self) -> int:
        """Open connections of this worker, the ones accepted but not yet started included."""
        n = sum(len(getattr(ln, "pool", ())) for ln in self._service.receivers.listeners)
        self._loads[self._index] = n
        return n

    def _wrap(self, server: Any, do_read: Any) -> Any:
        import gevent  # noqa: PLC0415

        deferred = [False]

        def resume() -> None:
            if server.started:
                server.start_accepting()

        def balanced_do_read() -> Any:
            mine = self.load()
            others = [v for i, v in enumerate(self._loads) if i != self._index]
            if not deferred[0] and others and mine > min(others):
                deferred[0] = True
                server.stop_accepting()
                gevent.get_hub().loop.timer(DEFER_SECONDS).start(resume)
                return None
            deferred[0] = False
            args = do_read()
            if args:
                self._loads[self._index] = mine + 1
            return args

        return balanced_do_read


class _WorkerLink:
    """The worker's end of the control channel."""

    def __init__(self, service: Any, channel: socket.socket, balancer: _Balancer | None) -> None:
        self.service = service
        self.channel = channel
        self.balancer = balancer
        self.broken = False

    def report(self) -> None:
        if self.broken:
            return
        svc = self.service
        try:
            health = list(svc.forwarder.healthy())
        except Exception as exc:
            health = [False, f"health check failed: {exc}"]
        message = {
            "started": svc.started.is_set(),
            "health": health,
            "samples": [[n, [list(p) for p in ls], v] for n, ls, v in svc.stats.samples()],
            "debug": svc.debug_state(),
        }
        try:
            self.channel.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        except OSError:
            self.broken = True  # the supervisor is gone: listen() sees EOF and stops us

    def report_loop(self) -> None:
        import gevent  # noqa: PLC0415

        self.service.started.wait()
        if self.balancer is not None:
            self.balancer.install()
        while not self.broken:
            if self.balancer is not None:
                self.balancer.load()  # closed connections are published here
            self.report()
            gevent.sleep(REPORT_SECONDS)

    def listen(self) -> None:
        reader = self.channel.makefile("rb")
        try:
            for line in reader:
                if line.strip() == b"stop":
                    log.info("supervisor asks to stop; draining (deadline %gs)", self._deadline)
                    self.service.stopping.set()
        except OSError:
            pass
        finally:
            reader.close()
        if not self.service.stopping.is_set():
            log.warning("supervisor gone; stopping")
            self.service.stopping.set()

    @property
    def _deadline(self) -> float:
        return float(self.service.config.drain_timeout)


# ---- the supervisor side ------------------------------------------------------------------------


def _status_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


@dataclass
class _Slot:
    """One worker position: its current process and what it last reported."""

    id: int
    proc: Any = None
    channel: socket.socket | None = None
    started_at: float = 0.0
    started: bool = False
    health: tuple[bool, str] = (False, "starting")
    samples: list[Sample] = field(default_factory=list)
    debug: dict[str, Any] = field(default_factory=dict)  # its /debug state, last reported
    reported_at: float = 0.0
    quick_deaths: int = 0
    restarts: int = 0
    exit_code: int | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.exit_code is None


class MergedStats:
    """What `admin.StatsCollector` reads: the workers' samples merged, plus our uptime."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor
        self.started = time.monotonic()

    def samples(self) -> Iterator[Sample]:
        merged = merge_samples((s.samples for s in self._sup.slots if s.alive), self._sup.retired)
        uptime = ("uptime_seconds", (), round(time.monotonic() - self.started, 3))
        yield from merged
        yield uptime
        for slot in self._sup.slots:  # the supervisor's own counter, one series per worker
            yield ("worker_restarts", (("worker", str(slot.id)),), slot.restarts)

    def get(self, name: str, **labels: str) -> float:
        want = tuple(sorted(labels.items()))
        return sum(v for n, ls, v in self.samples() if n == name and (not labels or ls == want))


class Supervisor:
    """Binds the listeners, runs ``count`` workers, restarts them, stops them. After the patch."""

    def __init__(self, config: Any, argv: Sequence[str], count: int) -> None:
        import gevent.event  # noqa: PLC0415 - only after cli.main patched the standard library

        self.config = config
        self.argv = list(argv)
        self.slots = [_Slot(i + 1) for i in range(count)]
        self.retired: dict[tuple[str, Labels], float] = {}
        self.sockets: dict[str, socket.socket] = {}
        self.stopping = gevent.event.Event()
        self.changed = gevent.event.Event()  # a worker started or exited
        self.admin: Any = None
        self._loads_fd: int | None = None
        self._loads: Any = None
        self._signals = 0
        self._first_signal = 0.0
        self.pidfile = PidFile(config.pidfile)
        self._initial = True

    # -- start ------------------------------------------------------------------------------

    def _bind(self) -> None:
        from .sockets import bind, tls_context  # noqa: PLC0415 - imports ssl: after the patch

        for endpoint, _protocol in self.config.listeners():
            if endpoint.text in self.sockets:
                continue
            if endpoint.kind == "ssl":
                tls_context(endpoint)  # a bad certificate fails here, once, with exit code 3
            self.sockets[endpoint.text] = bind(endpoint)

    def _start_admin(self) -> None:
        if not self.config.admin_endpoint:
            return
        from .admin import AdminServer  # noqa: PLC0415
        from .endpoints import parse_endpoint  # noqa: PLC0415

        ep = parse_endpoint(self.config.admin_endpoint)
        host = ep.host or ("::" if ep.kind == "tcp6" else "0.0.0.0")
        self.admin = AdminServer(
            host,
            ep.port,
            MergedStats(self),  # type: ignore[arg-type]
            self.health,
            debug=self.debug_state,
        )
        try:
            self.admin.start()
        except OSError as exc:
            self.admin = None
            raise StartupError(
                f"cannot listen on --admin-endpoint {self.config.admin_endpoint!r}: "
                f"{exc.strerror or exc}"
            ) from None

    def _share_loads(self) -> None:
        """The shared block of per-worker connection counts (see `_Balancer`)."""
        import mmap  # noqa: PLC0415

        try:
            fd = os.memfd_create("fastforward-loads")
            os.ftruncate(fd, 8 * len(self.slots))
        except (AttributeError, OSError) as exc:
            log.warning("no shared memory (%s): connections are not balanced", exc)
            return
        self._loads_fd = fd
        self._loads = memoryview(mmap.mmap(fd, 8 * len(self.slots))).cast("q")
        for i in range(len(self.slots)):
            self._loads[i] = IDLE_SLOT

    def _spawn(self, slot: _Slot) -> None:
        import gevent  # noqa: PLC0415
        from gevent import subprocess  # noqa: PLC0415

        mine, theirs = socket.socketpair()
        fds = {text: sock.fileno() for text, sock in self.sockets.items()}
        spec: dict[str, Any] = {"id": slot.id, "channel": theirs.fileno(), "sockets": fds}
        pass_fds = [theirs.fileno(), *fds.values()]
        if self._loads_fd is not None:
            spec.update(loads=self._loads_fd, count=len(self.slots))
            pass_fds.append(self._loads_fd)
        env = dict(os.environ)
        env[WORKER_ENV] = json.dumps(spec)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fastforward", *self.argv],
                env=env,
                pass_fds=pass_fds,
                close_fds=True,
            )
        finally:
            theirs.close()
        slot.proc = proc
        slot.channel = mine
        slot.started_at = time.monotonic()
        slot.started = False
        slot.health = (False, "starting")
        slot.samples = []
        slot.reported_at = 0.0
        slot.exit_code = None
        log.info("worker %d started (pid %d)", slot.id, proc.pid)
        gevent.spawn(self._read, slot, proc, mine)
        gevent.spawn(self._watch, slot, proc)

    def _read(self, slot: _Slot, proc: Any, channel: socket.socket) -> None:
        reader = channel.makefile("rb")
        try:
            for line in reader:
                if slot.proc is not proc:
                    break
                try:
                    message = json.loads(line)
                    samples = _decode_samples(message["samples"])
                    ok, reason = message["health"]
                    started = bool(message["started"])
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("worker %d: unreadable report (%s); ignored", slot.id, exc)
                    continue
                slot.samples = samples
                debug = message.get("debug")
                slot.debug = debug if isinstance(debug, dict) else {}
                slot.health = (bool(ok), str(reason))
                slot.reported_at = time.monotonic()
                if started and not slot.started:
                    slot.started = True
                    self.changed.set()
        except OSError:
            pass
        finally:
            reader.close()

    def _watch(self, slot: _Slot, proc: Any) -> None:
        import gevent  # noqa: PLC0415

        code = proc.wait()
        if self._loads is not None:
            self._loads[slot.id - 1] = IDLE_SLOT
        gevent.sleep(0.05)  # let the reader take the final report that preceded the exit
        slot.exit_code = code
        for name, labels, value in slot.samples:  # keep its counters in the sums
            if _kind(name) in ("counter", "histogram"):
                key = (name, labels)
                self.retired[key] = self.retired.get(key, 0) + value
        slot.samples = []
        if slot.channel is not None:
            slot.channel.close()
            slot.channel = None
        self.changed.set()
        if self.stopping.is_set():
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "worker %d (pid %d) stopped: %s", slot.id, proc.pid, _status_text(code))
            return
        if self._initial:
            log.error(
                "worker %d (pid %d) failed to start: %s", slot.id, proc.pid, _status_text(code)
            )
            return
        lived = time.monotonic() - slot.started_at
        slot.quick_deaths = slot.quick_deaths + 1 if lived < STABLE_SECONDS else 1
        delay = restart_delay(slot.quick_deaths)
        log.error(
            "worker %d (pid %d) died after %.1fs: %s; restarting in %.1fs",
            slot.id,
            proc.pid,
            lived,
            _status_text(code),
            delay,
        )
        if self.stopping.wait(delay):
            return
        slot.restarts += 1
        try:
            self._spawn(slot)
        except OSError as exc:
            log.error("worker %d: cannot start a process: %s; retrying", slot.id, exc)
            slot.started_at = time.monotonic()
            gevent.spawn(self._watch, slot, _Failed())

    # -- health -----------------------------------------------------------------------------

    def debug_state(self) -> dict[str, Any]:
        """/debug/senders and /debug/rejects: the running workers' tables merged."""
        from .attribution import merge_debug  # noqa: PLC0415

        return merge_debug({s.id: s.debug for s in self.slots if s.alive})

    def health(self) -> tuple[bool, str]:
        if self.stopping.is_set():
            return False, "stopping"
        problems = []
        now = time.monotonic()
        for slot in self.slots:
            if not slot.alive or not slot.started:
                problems.append(f"worker {slot.id}: not running")
            elif now - slot.reported_at > STALE_SECONDS:
                problems.append(f"worker {slot.id}: silent for {now - slot.reported_at:.0f}s")
            elif not slot.health[0]:
                problems.append(f"worker {slot.id}: {slot.health[1]}")
        return (False, "; ".join(problems)) if problems else (True, "ok")

    # -- signals, pidfile -------------------------------------------------------------------

    def _on_hup(self) -> None:
        """SIGHUP: reopen our log and have every worker reopen its own (never stop)."""
        from . import logsetup  # noqa: PLC0415

        logsetup.reopen()
        log.info("SIGHUP: log file reopened; passing it on to the workers")
        for slot in self.slots:
            if slot.alive:
                _kill(slot.proc, signal.SIGHUP)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self._signals and now - self._first_signal < SIGNAL_DEBOUNCE:
            # One stop delivered twice (to us and to our process group, as `timeout` and
            # systemd do), not an impatient operator.
            log.info("%s again within %gs: same stop request", name, SIGNAL_DEBOUNCE)
            return
        self._signals += 1
        if self._signals > 1:
            log.error("%s again: killing the workers, exiting now without draining", name)
            for slot in self.slots:
                if slot.alive:
                    _kill(slot.proc, signal.SIGKILL)
            logging.shutdown()
            os._exit(1)
        self._first_signal = now
        log.info("%s: stopping the workers (deadline %gs)", name, self.config.drain_timeout)
        self.stopping.set()

    # -- run --------------------------------------------------------------------------------

    def run(self) -> int:
        """Start the workers, supervise until a signal, stop them; the process exit code."""
        import gevent  # noqa: PLC0415

        from . import __version__  # noqa: PLC0415

        handlers = [
            gevent.signal_handler(sig, self._on_signal, sig)
            for sig in (signal.SIGTERM, signal.SIGINT)
        ]
        handlers.append(gevent.signal_handler(signal.SIGHUP, self._on_hup))
        rotator = gevent.spawn(self._rotate_loop)
        try:
            self.pidfile.write()
            try:
                self._bind()
                self._share_loads()
                self._start_admin()
                log.info(
                    "fastforward %s supervisor (pid %d): starting %d workers",
                    __version__,
                    os.getpid(),
                    len(self.slots),
                )
                for slot in self.slots:
                    self._spawn(slot)
                code = self._wait_started()
                if code is not None:
                    self._stop_all()
                    return code
                self._initial = False
                log.info("all %d workers started", len(self.slots))
                self.stopping.wait()
                return self._stop_all()
            finally:
                self._close()
        finally:
            rotator.kill(block=False)
            for h in handlers:
                h.cancel()

    def _rotate_loop(self) -> None:
        """Rotate the log for everyone: workers write to it too, but never rotate it."""
        import logging.handlers  # noqa: PLC0415

        import gevent  # noqa: PLC0415

        probe = logging.makeLogRecord({"msg": ""})
        while True:
            gevent.sleep(ROTATE_CHECK_SECONDS)
            for h in logging.getLogger().handlers:
                if isinstance(h, logging.handlers.RotatingFileHandler):
                    h.acquire()
                    try:
                        if h.shouldRollover(probe):
                            h.doRollover()
                    except OSError as exc:
                        log.error("log rotation failed: %s", exc)
                    finally:
                        h.release()

    def _wait_started(self) -> int | None:
        """None once every worker serves; an exit code when one failed or a signal came."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            failed = [s for s in self.slots if s.exit_code is not None]
            if failed:
                code = failed[0].exit_code or 1
                return code if code > 0 else 1
            if all(s.started for s in self.slots):
                return None
            if self.stopping.is_set():
                return 0
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("workers did not start within %gs", START_TIMEOUT)
                return 1
            self.changed.clear()
            self.changed.wait(min(left, 0.5))

    def _stop_all(self) -> int:
        self.stopping.set()
        for sock in self.sockets.values():  # the workers' copies stay open until they drained
            sock.close()
        for slot in self.slots:
            if not slot.alive:
                continue
            try:
                assert slot.channel is not None
                slot.channel.sendall(b"stop\n")
            except (OSError, AssertionError):
                _kill(slot.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.config.drain_timeout + DRAIN_MARGIN
        while any(s.alive for s in self.slots):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.changed.clear()
            self.changed.wait(min(left, 0.5))
        code = EXIT_OK
        for slot in self.slots:
            if slot.alive:
                # What it still held is lost, in an unknown amount.
                log.error("worker %d (pid %d) did not stop in time: killed", slot.id, slot.proc.pid)
                _kill(slot.proc, signal.SIGKILL)
                slot.proc.wait()
                code = EXIT_UNDELIVERED
            elif slot.exit_code == EXIT_UNDELIVERED:
                code = EXIT_UNDELIVERED  # its log line states the count
            elif slot.exit_code != 0 and code == EXIT_OK:
                code = EXIT_ERROR
        if code == EXIT_UNDELIVERED:
            log.error(
                "fastforward supervisor stopped; some datapoints were neither delivered nor "
                "spooled (see the workers' lines above), exit status %d",
                code,
            )
        else:
            drained = "" if code == EXIT_OK else " (not every worker drained)"
            log.info("fastforward supervisor stopped%s", drained)
        return code

    def _close(self) -> None:
        if self.admin is not None:
            self.admin.stop()
            self.admin = None
        for sock in self.sockets.values():
            sock.close()
        if self._loads_fd is not None:
            os.close(self._loads_fd)
            self._loads_fd = None
        for endpoint, _protocol in self.config.listeners():
            if endpoint.kind == "unix" and endpoint.text in self.sockets:
                try:
                    os.unlink(endpoint.path)
                except OSError:
                    pass
        self.pidfile.remove()


class _Failed:
    """Stands for a process that could not be created: it has 'exited' with status 1."""

    pid = 0

    def wait(self) -> int:
        return 1


def _kill(proc: Any, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (OSError, AttributeError):
        pass


def _kind(name: str) -> str:
    from .stats import METRICS  # noqa: PLC0415

    return METRICS[name][0] if name in METRICS else ""
