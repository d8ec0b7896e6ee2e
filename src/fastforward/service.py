"""Builds and wires everything; runs until SIGTERM/SIGINT, then drains.

Order at start: encoder, stats, client (Blueflood or stdout), token provider, spool,
forwarder, receivers (bound here: a busy port fails the start), admin endpoint. At stop:
receivers stop accepting and read what their connections already hold, then the forwarder
delivers everything (partial body included) within ``--drain-timeout``; what is left goes to
the spool when there is one. A second signal exits at once.

Must be imported after gevent monkey-patching (`cli.main` does it).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import Any

import gevent
from gevent.event import Event

from . import __version__
from .admin import AdminServer, self_metric_lines
from .auth import TokenProvider
from .blueflood import BluefloodClient, StdoutClient
from .codec import DROP_REASONS, IMPLEMENTATION, NO_EXTENSIONS, Encoder
from .compression import GZIP_IMPLEMENTATION
from .config import Config, tenant_label
from .endpoints import parse_endpoint
from .errors import EXIT_OK, EXIT_UNDELIVERED, StartupError
from .lifecycle import Signals
from .memtune import tune_malloc
from .pidfile import PidFile
from .receiver import Receivers
from .routes import Routing, load_routes, routing_wanted
from .spool import Spool, SpoolRefused
from .stats import RECEIVER_DROP_REASONS, Stats
from .tenants import TenantForwarder, build_forwarder

__all__ = ["Service", "StartupError"]

log = logging.getLogger("fastforward")

RECEIVER_DRAIN_SECONDS = 2.0  # reading what connections already hold, out of --drain-timeout


class Service:
    """One fastforward process."""

    def __init__(self, config: Config, *, sockets: dict[str, socket.socket] | None = None) -> None:
        """``sockets``: listeners a supervisor bound already (``--workers``), by endpoint text."""
        tune_malloc()  # megabyte bodies from the heap, not fresh pages each time
        self.config = config
        self.stats = Stats()
        # --rules / --storage-schemas / --tags: both files checked before anything is bound
        # (ConfigError: exit 2 with the file and line); without them no router at all.
        self.routes = load_routes(config) if routing_wanted(config) else None
        options = config.encoder_options()
        if self.routes is not None:
            options["router"] = self.routes.router.decide
        self.encoder = Encoder(**options)
        self.token_provider: TokenProvider | None = None
        self.client: BluefloodClient | StdoutClient
        if config.dry_run:
            # With routing each line starts with its tenant and a tab (docs/rules.md).
            self.client = StdoutClient(
                self.stats, tenant=None if self.routes is None else tenant_label(config.tenant)
            )
        else:
            if config.user:
                self.token_provider = TokenProvider(
                    config.auth_url,
                    config.user,
                    key=config.key or None,
                    password=config.password or None,
                    stats=self.stats,
                    timeout=config.request_timeout,
                )
            self.client = BluefloodClient(
                config.blueflood,
                config.tenant,
                self.stats,
                timeout=config.request_timeout,
                gzip=config.gzip,
                token_provider=self.token_provider,
                pool_size=config.concurrency,
            )
        self.spool: Spool | None = None
        if config.spool_dir:
            try:
                self.spool = Spool(
                    config.spool_dir,
                    config.spool_max_bytes,
                    self.stats,
                    max_past_ms=int(config.max_past * 1000),
                    tenant=config.tenant,
                    destination=config.blueflood,
                )
            except SpoolRefused as exc:
                raise StartupError(f"--spool-dir {config.spool_dir!r}: {exc.strerror}") from None
            except OSError as exc:
                raise StartupError(f"--spool-dir {config.spool_dir!r}: {exc}") from None
        self.routing: Routing | None = None
        if self.routes is None:
            self.forwarder = build_forwarder(
                config, self.encoder, self.stats, self.client, self.spool
            )
        else:
            routing = Routing(config, self.routes, self.encoder, self.stats)
            self.forwarder = build_forwarder(
                config,
                self.encoder,
                self.stats,
                self.client,
                self.spool,
                routed=True,
                posters=routing.posters(self.routes),
                tenants=self.routes.rules.tenants(),
            )
            assert isinstance(self.forwarder, TenantForwarder)
            routing.forwarder = self.forwarder
            self.routing = routing
        self.receivers = Receivers(
            config, self.encoder, self.forwarder, self.stats, sockets=sockets
        )
        # One memory cap: the connections' read buffers count with the bodies.
        read_memory = self.receivers.read_memory
        self.forwarder.count_also(lambda: read_memory.used)
        forwarder = self.forwarder
        read_memory.held = lambda: forwarder.memory_bytes
        self.admin: AdminServer | None = None
        if config.admin_endpoint:
            ep = parse_endpoint(config.admin_endpoint)
            host = ep.host or ("::" if ep.kind == "tcp6" else "0.0.0.0")
            self.admin = AdminServer(
                host, ep.port, self.stats, self.forwarder.healthy, debug=self.debug_state
            )
        self.stats.add_collector(self._collect_codec)
        self.stopping = Event()
        self.started = Event()  # set once start() completed: every listener is serving
        self._greenlets: list[gevent.Greenlet] = []
        self._last: dict[str, float] = {}
        self.pidfile = PidFile(config.pidfile)

    # -- counters -----------------------------------------------------------------------------

    def _collect_codec(self, stats: Stats) -> None:
        """Received = accepted + dropped at intake, per protocol, exactly.

        The codec counts datapoints, a refused frame as one (``bad_frame``: what it held is
        unknown), and every non-blank line as one datapoint, accepted or dropped; the
        receivers count their own drops one per frame, line or datagram. Each unit dropped is
        also a unit received, so the identity in the README holds whatever the mix.
        """
        counts = self.encoder.counters()
        accepted = counts.get("accepted", 0)
        dropped = 0
        stats.set("datapoints_accepted", accepted)
        for reason in DROP_REASONS:
            n = counts.get(reason, 0)
            dropped += n
            stats.set("datapoints_dropped", n, reason=reason)
        lines = counts.get("lines", 0)
        by_protocol = {"pickle": accepted + dropped - lines, "line": lines}
        for reason, protocol in RECEIVER_DROP_REASONS.items():
            by_protocol[protocol] += int(stats.peek("datapoints_dropped", reason=reason))
        for protocol, n in by_protocol.items():
            stats.set("datapoints_received", n, protocol=protocol)
        stats.set("lines_received", lines)

    def debug_state(self) -> dict[str, Any]:
        """What /debug/senders, /debug/rejects and /debug/series show (and a worker reports,
        --workers)."""
        return {
            "senders": self.receivers.senders.snapshot(),
            "rejects": self.receivers.rejects.snapshot(),
            "series": {
                "rules": [] if self.routing is None else self.routing.series_report(),
            },
        }

    def hangup(self) -> None:
        """SIGHUP (after the log was reopened): reload the rules and schemas, if any."""
        if self.routing is not None:
            self.routing.reload()

    # -- start --------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind everything and start the greenlets; `StartupError` when something is unusable."""
        self.pidfile.write()
        self.receivers.start()
        if self.admin is not None:
            try:
                self.admin.start()
            except OSError as exc:
                self.receivers.stop(0)
                raise StartupError(
                    f"cannot listen on --admin-endpoint {self.config.admin_endpoint!r}: "
                    f"{exc.strerror or exc}"
                ) from None
        self.forwarder.start()
        self._greenlets.append(gevent.spawn(self._report_loop))
        if self.config.self_metrics_prefix:
            self._greenlets.append(gevent.spawn(self._self_metrics_loop))
        self._banner()
        self.started.set()

    def _banner(self) -> None:
        c = self.config
        log.info(
            "fastforward %s starting (codec: %s, pid %d)", __version__, IMPLEMENTATION, os.getpid()
        )
        if IMPLEMENTATION == "python" and not NO_EXTENSIONS:
            log.warning(
                "the compiled codec is not installed (no wheel for this platform and no C "
                "compiler at install time): running the pure-Python codec, several times slower"
            )
        for kind, protocol, address in self.receivers.addresses():
            log.info("  listening: %s %s %s", kind, protocol, address)
        if c.dry_run:
            log.info("  dry run: bodies are written to stdout, nothing is POSTed")
        else:
            auth = f"identity user {c.user!r} at {c.auth_url}" if c.user else "no auth"
            log.info("  Blueflood: %s tenant %s (%s)", c.blueflood, c.tenant, auth)
            if c.gzip:
                log.info("  gzip bodies with %s", GZIP_IMPLEMENTATION)
        if self.routes is not None:
            log.info(
                "  routing: %s (%s)%s%s",
                self.routes.summary(),
                self.routes.rules.source if c.rules else "no rules file",
                f", storage schemas {c.storage_schemas}" if c.storage_schemas else "",
                f", tags {c.tags}",
            )
            for warning in self.routes.rules.warnings:
                log.warning("%s", warning)
            if c.ingest_multi and self.routes.rules.credentials:
                log.warning(
                    "  --ingest-multi: every tenant is sent with the daemon's credentials; the "
                    '[tenant."ID"] credentials of the rules file are not used'
                )
        log.info(
            "  interval %gs, body limit %d bytes / %d datapoints, %d in flight, buffer cap %d "
            "bytes, spool %s",
            c.interval,
            c.body_bytes,
            c.max_body_datapoints,
            c.concurrency,
            c.max_buffer_bytes,
            c.spool_dir or "off",
        )

    # -- periodic work ------------------------------------------------------------------------

    def _report_loop(self) -> None:
        period = max(self.config.interval, 1.0)
        while True:
            gevent.sleep(period)
            try:
                self.report()
            except Exception:
                log.exception("periodic report failed")

    def report(self) -> None:
        """One INFO line with the essential counters; every new loss at WARNING."""
        # One read of every sample: each read runs the collectors (with many tenants, each
        # lane's gauges), so not once per figure.
        snapshot = list(self.stats.samples())

        def total(name: str) -> float:
            return sum(value for sample, _, value in snapshot if sample == name)

        now = {
            "received": total("datapoints_received"),
            "sent": total("datapoints_sent"),
            "dropped": total("datapoints_dropped"),
            "rejected": total("datapoints_rejected"),
            "buffered": total("buffered_datapoints"),
        }
        changed = any(self._last.get(k) != v for k, v in now.items())
        if changed:
            log.info(
                "datapoints: received %d, sent %d, dropped %d, rejected by Blueflood %d, "
                "buffered %d; connections open %d",
                *(int(v) for v in now.values()),
                int(total("connections_open")),
            )
        for name in ("datapoints_dropped", "datapoints_rejected"):
            for sample, labels, value in snapshot:
                if sample != name:
                    continue
                key = f"{name}{labels}"
                before = self._last.get(key, 0)
                if value > before:
                    reason = ",".join(f"{k}={v}" for k, v in labels) or "unspecified"
                    log.warning(
                        "%s %s: %d (+%d since last report)",
                        name.replace("_", " "),
                        reason,
                        value,
                        value - before,
                    )
                self._last[key] = value
        self._last.update(now)

    def _self_metrics_loop(self) -> None:
        prefix = self.config.self_metrics_prefix
        while True:
            gevent.sleep(self.config.interval)
            try:
                lines = self_metric_lines(self.stats, prefix, time.time())
                try:
                    self.encoder.add_lines(lines, True)
                finally:  # its counts are nobody else's
                    self.receivers.intake.settle("self-metrics")
            except Exception:
                log.exception("self metrics failed")

    # -- stop ---------------------------------------------------------------------------------

    def stop(self) -> int:
        """Drain and stop everything; return the datapoints lost (neither sent nor spooled)."""
        deadline = time.monotonic() + self.config.drain_timeout
        self.receivers.stop(min(RECEIVER_DRAIN_SECONDS, self.config.drain_timeout))
        for g in self._greenlets:
            g.kill(block=False)
        lost = self.forwarder.stop(max(0.0, deadline - time.monotonic()))
        if self.admin is not None:
            self.admin.stop()
        for closable in (self.client, self.token_provider, self.spool):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    log.exception("error while closing %r", closable)
        self.report()
        self.pidfile.remove()
        return lost

    def run(self) -> int:
        """Start, serve until a signal, drain; the process exit code."""
        signals = Signals(
            self.stopping,
            log,
            stopping_text=(
                f"stopping; draining buffered data (deadline {self.config.drain_timeout:g}s)"
            ),
            forced_text="exiting now without draining",
            hup_text=(
                "log file reopened"
                if self.routing is None
                else "log file reopened; reloading the rules"
            ),
            on_hup=self.hangup,
        )
        try:
            with signals:
                try:
                    self.start()
                except BaseException:
                    self.pidfile.remove()
                    raise
                self.stopping.wait()
                return self._stopped(self.stop())
        finally:
            sys.stdout.flush()

    def _stopped(self, lost: int) -> int:
        """The final log line and the exit status, from the datapoints a stop lost."""
        if lost:
            log.error(
                "fastforward stopped; %d datapoints lost (neither delivered nor spooled), "
                "exit status %d",
                lost,
                EXIT_UNDELIVERED,
            )
            return EXIT_UNDELIVERED
        log.info("fastforward stopped")
        return EXIT_OK
