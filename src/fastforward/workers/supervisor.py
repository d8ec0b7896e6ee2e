"""The supervisor (arbiter) of ``--workers N``: binds the listeners once, runs N worker
processes on them, merges what they report, restarts the ones that die, stops them all.

Imported after the gevent patch (`cli.main`); see the package docstring for the design.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gevent
import gevent.event
from gevent import subprocess

from .. import __version__
from ..admin import AdminServer
from ..attribution import merge_debug
from ..config import Config
from ..endpoints import parse_endpoint
from ..errors import EXIT_ERROR, EXIT_OK, EXIT_UNDELIVERED, StartupError
from ..lifecycle import Signals
from ..pidfile import PidFile
from ..routes import check_routes
from ..sockets import bind, tls_context
from ..stats import Labels, MergedStats, Sample, retire
from .channel import STOP, LineReader, ReportError, decode_report
from .loads import IDLE_SLOT, LoadTable
from .logs import rotate_if_due
from .spec import WORKER_ENV, WorkerSpec

__all__ = ["Supervisor", "restart_delay"]

log = logging.getLogger("fastforward.supervisor")

STALE_SECONDS = 5.0  # a worker silent this long is unhealthy
STABLE_SECONDS = 30.0  # a worker that lived this long resets the restart backoff
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
DRAIN_MARGIN = 10.0  # beyond --drain-timeout: receiver drain, spool writes, interpreter exit
START_TIMEOUT = 60.0  # for the initial workers to report that they serve
LAST_REPORT_SECONDS = 2.0  # after a worker exited: for its final report still in the channel
ROTATE_CHECK_SECONDS = 2.0  # how often the supervisor checks the log size (LOG_DIR)
SIGNAL_DEBOUNCE = 1.0  # a repeat this soon is the same stop delivered twice


def restart_delay(quick_deaths: int) -> float:
    """Seconds before restarting a worker that died ``quick_deaths`` times in a row, each
    within `STABLE_SECONDS` of its start: 0.5, 1, 2, 4... up to `BACKOFF_MAX`."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, min(quick_deaths - 1, 16)))


def status_text(code: int) -> str:
    """An exit status as a log line says it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def stop_status(codes: Sequence[int | None]) -> int:
    """The supervisor's exit status from its workers' exit statuses (None: never ran): 4 when
    any lost data, else 1 when any did not exit 0, else 0."""
    if EXIT_UNDELIVERED in codes:
        return EXIT_UNDELIVERED
    return EXIT_OK if all(code == 0 for code in codes) else EXIT_ERROR


class Process(Protocol):
    """What the supervisor uses of a worker process (`gevent.subprocess.Popen`)."""

    pid: int

    def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


class Failed:
    """Stands for a process that could not be created: it has 'exited' with status 1."""

    pid = 0

    def wait(self) -> int:
        return 1

    def send_signal(self, sig: int) -> None:
        pass


@dataclass
class Slot:
    """One worker position: its current process and what it last reported."""

    id: int
    proc: Process | None = None
    channel: socket.socket | None = None
    reader: gevent.Greenlet | None = None  # reads the channel until the worker closes it
    started_at: float = 0.0
    started: bool = False
    health: tuple[bool, str] = (False, "starting")
    samples: list[Sample] = field(default_factory=list)
    debug: dict[str, Any] = field(default_factory=dict)  # its /debug state, last reported
    reported_at: float = 0.0
    quick_deaths: int = 0
    restarts: int = 0
    exit_code: int | None = None
    hup_pending: bool = False  # a SIGHUP came while it was starting (no handler yet)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.exit_code is None

    def signal(self, sig: int) -> None:
        if self.alive and self.proc is not None:
            try:
                self.proc.send_signal(sig)
            except OSError:
                pass


class Supervisor:
    """Binds the listeners, runs ``count`` workers, restarts them, stops them."""

    def __init__(self, config: Config, argv: Sequence[str], count: int) -> None:
        self.config = config
        self.argv = list(argv)
        self.slots = [Slot(i + 1) for i in range(count)]
        self.retired: dict[tuple[str, Labels], float] = {}
        self.sockets: dict[str, socket.socket] = {}
        self.stopping = gevent.event.Event()
        self.changed = gevent.event.Event()  # a worker started or exited
        self.admin: AdminServer | None = None
        self.loads: LoadTable | None = None
        self.pidfile = PidFile(config.pidfile)
        self._initial = True
        check_routes(config, os.environ)  # a bad rules file: exit 2 once, before any worker

    # -- what the admin endpoint shows ------------------------------------------------------

    def merged_stats(self) -> MergedStats:
        """/metrics: the running workers' samples merged, the exited ones' counters kept."""
        return MergedStats(
            lambda: [s.samples for s in self.slots if s.alive], self.retired, self._restarts
        )

    def _restarts(self) -> list[Sample]:
        # The supervisor's own counter, one series per worker.
        return [("worker_restarts", (("worker", str(s.id)),), s.restarts) for s in self.slots]

    def debug_state(self) -> dict[str, Any]:
        """/debug/senders and /debug/rejects: the running workers' tables merged;
        /debug/series: every worker's budgets, each entry marked with its ``worker`` (budgets
        are per worker, so they are listed side by side, not summed)."""
        running = {s.id: s.debug for s in self.slots if s.alive}
        merged = merge_debug(running)
        merged["series"] = {
            "rules": [
                {**entry, "worker": worker}
                for worker, state in sorted(running.items())
                for entry in state.get("series", {}).get("rules", [])
            ]
        }
        return merged

    def health(self) -> tuple[bool, str]:
        """200 only while every worker runs, reports, and reports itself healthy."""
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

    # -- start ------------------------------------------------------------------------------

    def _bind(self) -> None:
        for endpoint, _protocol in self.config.listeners():
            if endpoint.text in self.sockets:
                continue
            if endpoint.kind == "ssl":
                tls_context(endpoint)  # a bad certificate fails here, once, with exit code 3
            self.sockets[endpoint.text] = bind(endpoint)

    def _start_admin(self) -> None:
        if not self.config.admin_endpoint:
            return
        ep = parse_endpoint(self.config.admin_endpoint)
        host = ep.host or ("::" if ep.kind == "tcp6" else "0.0.0.0")
        admin = AdminServer(host, ep.port, self.merged_stats(), self.health, self.debug_state)
        try:
            admin.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on --admin-endpoint {self.config.admin_endpoint!r}: "
                f"{exc.strerror or exc}"
            ) from None
        self.admin = admin

    def _share_loads(self) -> None:
        """The shared table of per-worker connection counts (see `balancer`)."""
        try:
            self.loads = LoadTable.create(len(self.slots))
        except (AttributeError, OSError) as exc:
            log.warning("no shared memory (%s): connections are not balanced", exc)

    def _spawn(self, slot: Slot) -> None:
        mine, theirs = socket.socketpair()
        fds = {text: sock.fileno() for text, sock in self.sockets.items()}
        spec = WorkerSpec(id=slot.id, channel=theirs.fileno(), sockets=fds)
        pass_fds = [theirs.fileno(), *fds.values()]
        if self.loads is not None and self.loads.fd is not None:
            spec = WorkerSpec(slot.id, theirs.fileno(), fds, self.loads.fd, self.loads.count)
            pass_fds.append(self.loads.fd)
        env = dict(os.environ)
        env[WORKER_ENV] = spec.to_env()
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
        slot.hup_pending = False  # a fresh process opens the log anew
        log.info("worker %d started (pid %d)", slot.id, proc.pid)
        slot.reader = gevent.spawn(self._read, slot, proc, mine)
        gevent.spawn(self._watch, slot, proc)

    # -- while the workers run --------------------------------------------------------------

    def _read(self, slot: Slot, proc: Process, channel: socket.socket) -> None:
        """Take a worker's reports until it closes the channel (it exited)."""
        for line in LineReader(channel.makefile("rb")):
            if slot.proc is not proc:
                break
            try:
                report = decode_report(line)
            except ReportError as exc:
                log.error("worker %d: unreadable report (%s); ignored", slot.id, exc)
                continue
            slot.samples = report.samples
            slot.debug = report.debug
            slot.health = report.health
            slot.reported_at = time.monotonic()
            if report.started and not slot.started:
                slot.started = True
                self.changed.set()
                if slot.hup_pending:
                    slot.hup_pending = False
                    slot.signal(signal.SIGHUP)

    def _watch(self, slot: Slot, proc: Process) -> None:
        """Wait for a worker to exit, keep its counters, restart it unless we stop."""
        code = proc.wait()
        if self.loads is not None:
            self.loads[slot.id - 1] = IDLE_SLOT
        if slot.reader is not None:
            # Its final report (the counters after its drain) may still be in the channel:
            # the reader ends at the end of file that the exit caused.
            slot.reader.join(timeout=LAST_REPORT_SECONDS)
        slot.exit_code = code
        retire(slot.samples, self.retired)
        slot.samples = []
        if slot.channel is not None:
            slot.channel.close()
            slot.channel = None
        self.changed.set()
        if self.stopping.is_set():
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "worker %d (pid %d) stopped: %s", slot.id, proc.pid, status_text(code))
        elif self._initial:
            log.error(
                "worker %d (pid %d) failed to start: %s", slot.id, proc.pid, status_text(code)
            )
        else:
            self._restart(slot, proc, code)

    def _restart(self, slot: Slot, proc: Process, code: int) -> None:
        lived = time.monotonic() - slot.started_at
        slot.quick_deaths = slot.quick_deaths + 1 if lived < STABLE_SECONDS else 1
        delay = restart_delay(slot.quick_deaths)
        log.error(
            "worker %d (pid %d) died after %.1fs: %s; restarting in %.1fs",
            slot.id,
            proc.pid,
            lived,
            status_text(code),
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
            slot.reader = None
            gevent.spawn(self._watch, slot, Failed())

    def _rotate_loop(self) -> None:
        """Rotate the log for everyone: workers write to it too, but never rotate it."""
        while True:
            gevent.sleep(ROTATE_CHECK_SECONDS)
            rotate_if_due()

    # -- signals ----------------------------------------------------------------------------

    def _signals(self) -> Signals:
        def kill_all() -> None:
            for slot in self.slots:
                slot.signal(signal.SIGKILL)

        def pass_hup_on() -> None:
            for slot in self.slots:
                if slot.started:
                    slot.signal(signal.SIGHUP)
                else:  # its default action would kill it: it gets one once it serves
                    slot.hup_pending = True

        return Signals(
            self.stopping,
            log,
            stopping_text=f"stopping the workers (deadline {self.config.drain_timeout:g}s)",
            forced_text="killing the workers, exiting now without draining",
            hup_text="log file reopened; passing it on to the workers",
            debounce=SIGNAL_DEBOUNCE,
            on_force=kill_all,
            on_hup=pass_hup_on,
        )

    # -- run --------------------------------------------------------------------------------

    def run(self) -> int:
        """Start the workers, supervise until a signal, stop them; the process exit code."""
        rotator = gevent.spawn(self._rotate_loop)
        try:
            with self._signals():
                self.pidfile.write()
                try:
                    return self._serve()
                finally:
                    self._close()
        finally:
            rotator.kill(block=False)

    def _serve(self) -> int:
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

    def _wait_for(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``done()`` or the deadline, waking whenever a worker starts or exits."""
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            self.changed.wait(min(left, 0.5))
        return True

    def _wait_started(self) -> int | None:
        """None once every worker serves; an exit code when one failed or a signal came."""
        failed: list[Slot] = []

        def settled() -> bool:
            failed[:] = [s for s in self.slots if s.exit_code is not None]
            return bool(failed) or self.stopping.is_set() or all(s.started for s in self.slots)

        if not self._wait_for(settled, time.monotonic() + START_TIMEOUT):
            log.error("workers did not start within %gs", START_TIMEOUT)
            return 1
        if failed:
            code = failed[0].exit_code or 1
            return code if code > 0 else 1
        return 0 if self.stopping.is_set() and not all(s.started for s in self.slots) else None

    def _stop_all(self) -> int:
        self.stopping.set()
        for sock in self.sockets.values():  # the workers' copies stay open until they drained
            sock.close()
        for slot in self.slots:
            if slot.alive:
                self._ask_to_stop(slot)
        deadline = time.monotonic() + self.config.drain_timeout + DRAIN_MARGIN
        self._wait_for(lambda: not any(s.alive for s in self.slots), deadline)
        codes: list[int | None] = []  # what each worker ended with
        for slot in self.slots:
            if slot.alive and slot.proc is not None:
                # What it still held is lost, in an unknown amount.
                log.error("worker %d (pid %d) did not stop in time: killed", slot.id, slot.proc.pid)
                slot.signal(signal.SIGKILL)
                slot.proc.wait()
                codes.append(EXIT_UNDELIVERED)
            else:
                codes.append(slot.exit_code)
        code = stop_status(codes)
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

    def _ask_to_stop(self, slot: Slot) -> None:
        """Through the channel (one stop request even if the worker got the signal too);
        SIGTERM when the channel is gone."""
        if slot.channel is not None:
            try:
                slot.channel.sendall(STOP)
                return
            except OSError:
                pass
        slot.signal(signal.SIGTERM)

    def _close(self) -> None:
        if self.admin is not None:
            self.admin.stop()
            self.admin = None
        for sock in self.sockets.values():
            sock.close()
        if self.loads is not None:
            self.loads.close_fd()
        for endpoint, _protocol in self.config.listeners():
            if endpoint.kind == "unix" and endpoint.text in self.sockets:
                try:
                    os.unlink(endpoint.path)
                except OSError:
                    pass
        self.pidfile.remove()
