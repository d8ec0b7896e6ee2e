"""The worker side of ``--workers``: the normal `Service` on the sockets the supervisor bound,
reporting over the control channel and stopping when asked (or when the supervisor is gone).

Imported after the gevent patch (`cli.main`).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import replace

import gevent

from ..config import Config
from ..service import Service
from .balancer import Balancer
from .channel import LineReader, Report, encode_report, is_stop
from .loads import LoadTable
from .spec import WorkerSpec

__all__ = ["REPORT_SECONDS", "WorkerLink", "run_worker"]

# The logger name the supervisor's messages have always had, in the workers' lines too.
log = logging.getLogger("fastforward.supervisor")

REPORT_SECONDS = 1.0  # worker -> supervisor report period


def run_worker(config: Config, spec: WorkerSpec) -> int:
    """Run one worker until it is stopped; the process exit code."""
    sockets = {text: socket.socket(fileno=fd) for text, fd in spec.sockets.items()}
    channel = socket.socket(fileno=spec.channel)
    prefix = config.self_metrics_prefix
    config = replace(
        config,
        pidfile="",  # the supervisor's
        admin_endpoint="",  # served by the supervisor, merged over the workers
        # The same names from several processes would overwrite each other in Blueflood.
        self_metrics_prefix=f"{prefix.rstrip('.')}.worker{spec.id}" if prefix else "",
    )
    service = Service(config, sockets=sockets)
    balancer = None
    if spec.loads is not None:
        table = LoadTable.attach(spec.loads, spec.count)
        balancer = Balancer(table, spec.id - 1, lambda: service.receivers.listeners)
    link = WorkerLink(service, channel, balancer)
    greenlets = [gevent.spawn(link.report_loop), gevent.spawn(link.listen)]
    try:
        return service.run()
    finally:
        link.report()  # the counters after the drain
        gevent.killall(greenlets, block=False)
        channel.close()


class WorkerLink:
    """The worker's end of the control channel."""

    def __init__(self, service: Service, channel: socket.socket, balancer: Balancer | None):
        self.service = service
        self.channel = channel
        self.balancer = balancer
        self.broken = False

    def report(self) -> None:
        """Send one report; a broken channel is left to `listen` (it sees the end of file)."""
        if self.broken:
            return
        svc = self.service
        try:
            health = svc.forwarder.healthy()
        except Exception as exc:
            health = (False, f"health check failed: {exc}")
        report = Report(
            started=svc.started.is_set(),
            health=health,
            samples=list(svc.stats.samples()),
            debug=svc.debug_state(),
        )
        try:
            self.channel.sendall(encode_report(report))
        except OSError:
            self.broken = True

    def report_loop(self) -> None:
        self.service.started.wait()
        if self.balancer is not None:
            self.balancer.install()
        while not self.broken:
            if self.balancer is not None:
                self.balancer.load()  # closed connections are published here
            self.report()
            gevent.sleep(REPORT_SECONDS)

    def listen(self) -> None:
        """Stop the service when the supervisor asks, or when it is gone (end of file, even
        after a SIGKILL of the supervisor): no orphans."""
        for line in LineReader(self.channel.makefile("rb")):
            if is_stop(line):
                log.info(
                    "supervisor asks to stop; draining (deadline %gs)",
                    self.service.config.drain_timeout,
                )
                self.service.stopping.set()
        if not self.service.stopping.is_set():
            log.warning("supervisor gone; stopping")
            self.service.stopping.set()
