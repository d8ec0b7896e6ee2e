"""Admin HTTP endpoint: ``/metrics`` (Prometheus text format), ``/health``,
``/debug/senders`` / ``/debug/rejects`` (JSON: who sent what was dropped, see `attribution`) and
``/debug/series`` (JSON: the routing rules' series budgets, `routing.Router.series_report`).
Every path answers GET (and HEAD); another method on a known path is 405 with ``Allow: GET``.

Also ``self_metric_lines``: the same numbers as Graphite plaintext lines, which the forwarder
feeds back into its own encoder when ``--self-metrics-prefix`` is set (like carbon's
``carbon.agents.*`` metrics), so they reach Blueflood with the rest.

Prometheus names: a counter ``x`` is ``fastforward_x_total``, a gauge ``x`` is ``fastforward_x``;
labels are kept. The collector reads ``Stats.samples()`` at each scrape and is registered in a
private ``CollectorRegistry``, so nothing touches prometheus_client's global registry.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .stats import METRICS, Labels, SampleSource, Stats

log = logging.getLogger(__name__)

# The classic text format; prometheus_client 0.20 has no constant for it under this name.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "fastforward_"

StartResponse = Callable[[str, list[tuple[str, str]]], object]


class StatsCollector(Collector):
    """Exposes every sample of a ``Stats`` object, one metric family per registered name."""

    def __init__(self, stats: SampleSource) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for name, labels, value in self._stats.samples():
            kind, help_text = METRICS[name]
            family = families.get(name)
            if family is None:
                family = families[name] = Metric(PREFIX + name, help_text, kind)
            if kind == "histogram":
                _add_histogram_sample(family, PREFIX + name, labels, float(value))
                continue
            sample = PREFIX + name + ("_total" if kind == "counter" else "")
            family.add_sample(sample, dict(labels), float(value))
        yield from families.values()


def _add_histogram_sample(family: Metric, base: str, labels: Labels, value: float) -> None:
    """Stats keep a histogram as ``le`` buckets plus its sum (no labels); the count is the
    ``+Inf`` bucket, written here as ``_count`` as the text format wants."""
    if not labels:
        family.add_sample(base + "_sum", {}, value)
        return
    family.add_sample(base + "_bucket", dict(labels), value)
    if labels == (("le", "+Inf"),):
        family.add_sample(base + "_count", {}, value)


def metrics_text(stats: SampleSource) -> bytes:
    """The Prometheus exposition of ``stats``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats))
    return generate_latest(registry)


class AdminServer:
    """A small gevent WSGI server; ``port`` is the bound port once started."""

    def __init__(
        self,
        host: str,
        port: int,
        stats: SampleSource,
        health: Callable[[], tuple[bool, str]],
        debug: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """``debug`` returns ``{"senders": ..., "rejects": ..., "series": ...}`` for the /debug
        routes."""
        self.host = host
        self.port = port
        self._stats = stats
        self._health = health
        self._debug = debug
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(StatsCollector(stats))
        self._server: WSGIServer | None = None

    def start(self) -> None:
        # Bound here rather than by gevent, which leaves the socket open when bind fails.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
        except BaseException:
            listener.close()
            raise
        # log=None: no access log line per scrape; errors still go to our logger.
        self._server = WSGIServer(listener, self._app, log=None, error_log=log)
        self._server.start()
        self.port = self._server.server_port
        log.info(
            "admin endpoint on http://%s:%d/ (/metrics, /health, /debug/senders, /debug/rejects, "
            "/debug/series)",
            self.host,
            self.port,
        )

    def stop(self, timeout: float = 1.0) -> None:
        if self._server is not None:
            self._server.stop(timeout=timeout)
            self._server = None

    def _app(self, environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path not in ("/", "/metrics", "/health", *DEBUG_PATHS):
            return _reply(start_response, "404 Not Found", b"not found\n")
        if method not in ("GET", "HEAD"):
            return _reply(
                start_response, "405 Method Not Allowed", b"use GET\n", [("Allow", "GET")]
            )
        if path == "/":
            return _reply(start_response, "200 OK", INDEX)
        if path in DEBUG_PATHS:
            return self._debug_reply(DEBUG_PATHS[path], start_response)
        if path == "/metrics":
            try:
                body = generate_latest(self._registry)
            except Exception:
                log.exception("admin: /metrics failed")
                return _reply(start_response, "500 Internal Server Error", b"metrics failed\n")
            return _reply(start_response, "200 OK", body, content_type=CONTENT_TYPE)
        try:
            ok, reason = self._health()
        except Exception as exc:
            log.exception("admin: health check failed")
            ok, reason = False, f"health check failed: {exc}"
        if ok:  # the reason may say more: "ok; Blueflood failing for 9s, the spool takes ..."
            return _reply(start_response, "200 OK", (reason or "ok").encode() + b"\n")
        return _reply(start_response, "503 Service Unavailable", reason.encode() + b"\n")

    def _debug_reply(self, part: str, start_response: StartResponse) -> list[bytes]:
        try:
            state = self._debug() if self._debug is not None else {}
            body = json.dumps(state.get(part, {}), indent=1, sort_keys=True).encode() + b"\n"
        except Exception:
            log.exception("admin: /debug/%s failed", part)
            return _reply(start_response, "500 Internal Server Error", b"debug failed\n")
        return _reply(start_response, "200 OK", body, content_type="application/json")


DEBUG_PATHS = {
    "/debug/senders": "senders",
    "/debug/rejects": "rejects",
    "/debug/series": "series",
}


# GET /: what a person who opens the admin address in a browser or with curl can ask for.
INDEX = (
    b"fastforward admin endpoint\n"
    b"/metrics  counters and gauges, Prometheus text format\n"
    b"/health   200 ok, or 503 with the reason\n"
    b"/debug/senders  per source address: connections, datapoints, drops (JSON)\n"
    b"/debug/rejects  recent samples of dropped input per reason (JSON)\n"
    b"/debug/series   series budgets of the routing rules: new series per minute, top "
    b"prefixes (JSON)\n"
)


def _reply(
    start_response: StartResponse,
    status: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
    content_type: str = "text/plain; charset=utf-8",
) -> list[bytes]:
    start_response(
        status,
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *(headers or [])],
    )
    return [body]


_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def _path_part(value: str) -> str:
    # A label value becomes one Graphite path component: no dots, no whitespace.
    return _UNSAFE.sub("_", value) or "_"


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    return repr(float(value))


def self_metric_lines(stats: Stats, prefix: str, now: float) -> bytes:
    """Every sample as ``<prefix>.<name>[.<label value>...] <value> <timestamp>\\n``.

    Label values follow in the order of their label names, with characters outside
    ``[A-Za-z0-9_-]`` replaced by ``_``; NaN and infinite values are left out (Blueflood
    cannot store them). ``timestamp`` is ``now`` in whole seconds.
    """
    base = prefix.strip(".")
    ts = int(now)
    out = []
    for name, labels, value in stats.samples():
        if not math.isfinite(value):
            continue
        parts = [base, name] if base else [name]
        if METRICS[name][0] == "histogram":  # buckets as le_0_5 ..., the sum as .sum
            parts.append("le_" + _path_part(labels[0][1]) if labels else "sum")
        else:
            parts.extend(_path_part(v) for _k, v in labels)
        out.append(f"{'.'.join(parts)} {_number(value)} {ts}\n")
    return "".join(out).encode()
