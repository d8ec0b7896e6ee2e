"""Delivery of many tenants, isolated from each other: one lane per tenant.

The encoder hands over bodies per tenant (`protocols.take_routed`); each tenant's bodies go
into its own lane, a complete single-destination `Forwarder` (outbox, senders, backoff,
failure state, parking and replay of that tenant's spool files). So a tenant whose POSTs fail
(401, 403, 5xx for it alone) backs off, logs and spools on its own while the others go on.

Memory is one cap (``--max-buffer-bytes``) shared fairly: each lane's outbox gets
``cap / active lanes`` (a lane is active while it holds bodies). A lane over its share whose
tenant is failing spools its queued bodies (with ``--spool-dir``); its senders see "over the
share" as "receivers paused" and spool a failing body rather than keep it. Without a spool (or
with a full one) a failing tenant's bodies stay in memory beyond its share, using what the
others leave free; only when everything held reaches the whole cap do the receivers pause
(TCP backpressure), for every tenant, because a socket carries all tenants. Until then the
other tenants deliver at full rate, and while paused their bodies already in memory still go.

POSTs in flight are bounded across lanes, not per lane: ``--concurrency`` slots shared by all
tenants plus one of each lane's own (`sending.PostSlots`), so 31 tenants open at most
``concurrency + 31`` connections to Blueflood (the pool keeps that many alive), not
``31 * concurrency``, while a failing or hanging tenant still cannot hold up another.

With ``--ingest-multi`` there is one lane: every body's items carry their ``tenantId``
(`with_tenant_ids`) and go to ``/ingest/multi`` of the default tenant, so tenants share POSTs
and, by nature, their failures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import gevent
from gevent.lock import BoundedSemaphore

from .auth import TokenProvider
from .blueflood import BluefloodClient, Outcome
from .config import Config, tenant_label
from .forwarder import Forwarder
from .health import HealthFacts, judge
from .outbox import Backpressure, Batch, gate_headroom
from .protocols import (
    BodySource,
    BodySpool,
    Counters,
    Poster,
    RoutedBody,
    SpoolEntry,
    take_routed,
)
from .routing.ruleset import Credentials
from .sending import PostSlots
from .stats import Stats

log = logging.getLogger("fastforward.forwarder")

_LANE_GAUGES = ("tenant_buffered_bytes", "tenant_buffered_datapoints", "tenant_failing_seconds")
_ITEM_START = b'{"collectionTime":'  # every item of a codec body starts so (key order is fixed)


def with_tenant_ids(body: bytes, tenant: str) -> bytes:
    """The body with ``"tenantId"`` first in each item, for ``/ingest/multi``.

    Safe on codec bodies: names are JSON strings whose quotes are escaped, so the item start
    cannot occur inside a name.
    """
    return body.replace(
        _ITEM_START, b'{"tenantId":' + json.dumps(tenant).encode() + b"," + _ITEM_START[1:]
    )


class _TenantPoster:
    """A Poster bound to one tenant: its URL in the log, its bodies to its ingest URL."""

    def __init__(self, client: Poster, tenant: str) -> None:
        self.client = client
        self.tenant = tenant
        self.url = client.url_for(tenant)

    def post(self, body: bytes, tenant: str | None = None) -> Outcome:
        return self.client.post(body, tenant or self.tenant)

    def url_for(self, tenant: str) -> str:
        return self.client.url_for(tenant)


class _TenantSpool:
    """The shared spool as one lane sees it: it writes any body, replays only its tenants'."""

    def __init__(self, spool: BodySpool, wanted: Callable[[str], bool]) -> None:
        self.spool = spool
        self.wanted = wanted

    @property
    def disk_bytes(self) -> int:
        return self.spool.disk_bytes

    @property
    def files(self) -> int:
        return self.spool.files

    @property
    def full(self) -> bool:
        return self.spool.full

    def put(self, body: bytes, datapoints: int, tenant: str | None = None) -> bool:
        return self.spool.put(body, datapoints, tenant)

    def oldest(self, wanted: Callable[[str], bool] | None = None) -> SpoolEntry | None:
        return self.spool.oldest(self.wanted)

    def ack(self, entry: SpoolEntry) -> None:
        self.spool.ack(entry)

    def release(self, entry: SpoolEntry) -> None:
        self.spool.release(entry)


class _LaneCounters:
    """The registry as a lane sees it: totals as before, plus the per-tenant series; the
    gauges and the backpressure episode are the forwarder of all tenants' to report."""

    def __init__(self, stats: Counters, label: str | None) -> None:
        self.stats = stats
        self.label = label  # None: not split by tenant (--ingest-multi)

    def incr(self, name: str, n: float = 1, **labels: str) -> None:
        if name == "backpressure_seconds":
            return
        self.stats.incr(name, n, **labels)
        if self.label is not None and name in ("datapoints_sent", "datapoints_rejected"):
            self.stats.incr(f"tenant_{name}", n, tenant=self.label)

    def set(self, name: str, value: float, **labels: str) -> None:
        if name != "backpressure_active":
            self.stats.set(name, value, **labels)

    def add_collector(self, collect: Callable[[Stats], None]) -> None:
        pass  # TenantForwarder._collect sets the gauges of all lanes at once


class _Encoded:
    """The encoder as a lane's flusher sees it. The default lane's flusher (``primary``) moves
    every tenant's bodies, so the interval and burst-end flushes happen once, not per lane;
    the other lanes' flushers find nothing to do."""

    def __init__(self, owner: TenantForwarder, primary: bool) -> None:
        self.owner = owner
        self.primary = primary

    @property
    def ready_bodies(self) -> int:
        return 0

    @property
    def held_bytes(self) -> int:
        return 0  # the encoder's bytes count once, in the whole cap (TenantForwarder.gate)

    @property
    def pending_datapoints(self) -> int:
        # What the burst-end flush watches: the encoder's, for the default lane only.
        return self.owner.encoder.pending_datapoints if self.primary else 0

    def take_counted(self, partial: bool = True) -> list[tuple[bytes, int]]:
        if self.primary:
            self.owner.dispatch(partial)
        return []


class TenantForwarder:
    """The `Forwarder` contract (gate, start, kick, stop, healthy) over one lane per tenant."""

    def __init__(
        self,
        config: Config,
        encoder: BodySource,
        stats: Counters,
        client: Poster,
        spool: BodySpool | None = None,
        posters: Mapping[str, Poster] | None = None,
        tenants: Iterable[str] = (),
    ) -> None:
        """``posters``: a client of its own for a tenant with its own credentials;
        ``tenants``: those the rules name (their lanes start at once, the others on their
        first body)."""
        self.config = config
        self.encoder = encoder
        self.stats = stats
        self.client = client
        self.spool = spool
        self.posters = dict(posters or {})
        self.default_tenant = config.tenant
        self.default_label = tenant_label(config.tenant)
        self.multi = bool(config.ingest_multi)
        self.max_bytes = int(config.max_buffer_bytes)
        self._headroom = gate_headroom(self.max_bytes, int(config.body_bytes))
        self._recount_step = max(1, int(config.body_bytes) // 4)  # see `recount`
        self._encoder_at_look = 0  # the encoder's held bytes when the gate was last looked at
        self.lanes: dict[str | None, Forwarder] = {}
        self.backpressure = Backpressure(stats, self._backlogs)
        self.gate = self.backpressure.gate
        self.started = False
        self.stopping = False
        self._report: gevent.Greenlet | None = None
        self._retiring: gevent.Greenlet | None = None
        self.idle_timeout = float(config.tenant_idle_timeout)  # 0: lanes are kept for good
        self._empty_since: dict[str, float] = {}  # tenant lanes seen empty, since when
        self._gone: list[str] = []  # tenants whose lane was removed since the last collect
        self._tuning: dict[str, float] = {}
        self._holders: list[Callable[[], int]] = []  # more bytes held for data (read buffers)
        self.concurrency = max(1, int(config.concurrency))
        self._shared_slots = BoundedSemaphore(self.concurrency)  # POSTs of any lane
        self._lane(None)
        for tenant in [*tenants, *self.posters]:
            if not self.multi and tenant != self.default_tenant:
                self._lane(tenant)  # at once: they replay their spool files from the start
        stats.add_collector(self._collect)

    # ---- lanes ------------------------------------------------------------------------------

    def _label(self, tenant: str | None) -> str:
        return self.default_label if tenant is None else tenant

    def _lane(self, tenant: str | None) -> Forwarder:
        lane = self.lanes.get(tenant)
        if lane is not None:
            return lane
        if tenant is None:
            poster = self.client
            # The default lane replays its own files and those of tenants without a lane yet.
            wanted: Callable[[str], bool] = self._default_lane_replays
        else:
            poster = self.posters.get(tenant) or _TenantPoster(self.client, tenant)
            wanted = tenant.__eq__
        spool = None if self.spool is None else _TenantSpool(self.spool, wanted)
        label = None if self.multi else self._label(tenant)
        view = _Encoded(self, primary=tenant is None)
        lane = Forwarder(self.config, view, _LaneCounters(self.stats, label), poster, spool)
        lane.outbox.share_of = self._label(tenant)
        if label is not None:
            lane.name_lane(f"tenant {label}")
        for name, value in self._tuning.items():
            setattr(lane, name, value)
        lane.senders.relieve = lane.flusher.moved = self._relieve_all
        lane.senders.slots = PostSlots(self._shared_slots)
        self.lanes[tenant] = lane
        self._keep_connections()
        if label is not None:  # every lane's series exist from its start, at 0
            for name in ("tenant_datapoints_sent", "tenant_datapoints_rejected"):
                self.stats.incr(name, 0, tenant=label)
        if tenant is not None:
            log.info("tenant %s: delivery lane started (%s)", tenant, poster.url)
        if self.started:
            lane.start()
        return lane

    def _keep_connections(self) -> None:
        """The default client's pool keeps alive as many connections as its lanes may have
        POSTs in flight (shared slots plus one per lane), so none is opened per POST."""
        keep = getattr(self.client, "keep_connections", None)
        if keep is not None:
            own = sum(1 for t in self.lanes if t is None or t not in self.posters)
            keep(self.concurrency + own)

    def add_tenants(self, tenants: Iterable[str]) -> None:
        """Lanes for tenants a reloaded rules file names for the first time."""
        if self.multi:
            return
        for tenant in tenants:
            if tenant != self.default_tenant:
                self._lane(tenant)

    def use_posters(self, changed: Mapping[str, Poster], keep: Iterable[str]) -> None:
        """After a reload: ``changed`` clients for tenants with new or changed credentials;
        tenants not in ``keep`` lose their own client and use the default one. A POST in
        flight finishes with the client it started with; the old clients are closed once
        such a POST has timed out for sure."""
        kept = set(keep)
        retired = [p for t, p in self.posters.items() if t in changed or t not in kept]
        self.posters = {t: p for t, p in self.posters.items() if t in kept}
        self.posters.update(changed)
        for tenant, lane in self.lanes.items():
            if tenant is None or self.multi:
                continue
            if tenant in changed:
                lane.client = lane.senders.client = changed[tenant]
            elif any(lane.client is p for p in retired):
                lane.client = lane.senders.client = _TenantPoster(self.client, tenant)
        for tenant in changed:
            if not self.multi and tenant != self.default_tenant:
                self._lane(tenant)
        if retired:
            gevent.spawn_later(2 * float(self.config.request_timeout) + 1, _close_all, retired)

    def _default_lane_replays(self, tenant: str) -> bool:
        # Files of the tenants without a lane, but not of one with credentials of its own:
        # the default client's token is not its. Those wait for its lane (started at start,
        # and after an idle removal by its next datapoint).
        if tenant == self.default_tenant:
            return True
        return tenant not in self.lanes and tenant not in self.posters

    def _retire_loop(self) -> None:
        """A greenlet: removes the lanes of tenants idle for ``--tenant-idle-timeout``."""
        period = min(max(self.idle_timeout / 4, 0.05), 5.0)
        while True:
            gevent.sleep(period)
            self.retire_idle(time.monotonic())

    def retire_idle(self, now: float) -> None:
        """Remove every tenant lane that was empty at each look for ``idle_timeout`` seconds
        and got no body (`dispatch` resets its clock). The default lane stays. Removal does
        not yield, so no body can reach the old lane after this look: the next one for the
        tenant makes a new lane; its spool files are replayed by that lane or, for a tenant
        without credentials of its own, by the default lane meanwhile."""
        for tenant, lane in list(self.lanes.items()):
            if tenant is None:
                continue
            if not lane.empty:
                self._empty_since.pop(tenant, None)
                continue
            since = self._empty_since.setdefault(tenant, now)
            if now - since >= self.idle_timeout and lane.retire():
                del self.lanes[tenant]
                del self._empty_since[tenant]
                self._gone.append(tenant)  # its backlog gauges go at the next collect
                self._keep_connections()
                lane.log.info(
                    "delivery lane removed after %.0fs idle (its next datapoint starts a new one)",
                    now - since,
                )

    def dispatch(self, partial: bool) -> None:
        """Move the encoder's bodies into their tenants' lanes (the caller relieves: the
        default lane's flusher does after every hand-over)."""
        try:
            routed = take_routed(self.encoder, partial)
        except Exception:  # never let a codec bug kill a flusher
            log.exception("taking bodies from the encoder failed")
            return
        if self.multi:
            routed = self._merged(routed)
        for tenant, body, datapoints in routed:
            if body:
                if tenant == self.default_tenant:
                    tenant = None  # a rule naming the default tenant: the same lane
                if tenant is not None:
                    self._empty_since.pop(tenant, None)  # not idle: its clock starts again
                self._lane(tenant).outbox.put(Batch(body, datapoints, tenant=tenant))

    def _merged(self, routed: list[RoutedBody]) -> list[RoutedBody]:
        """``--ingest-multi``: items tagged with their tenantId, bodies of several tenants
        joined up to the body limits (``--limit``, ``--max-body-datapoints``)."""
        max_bytes, max_points = self.config.body_bytes, self.config.max_body_datapoints
        out: list[RoutedBody] = []
        for tenant, body, datapoints in routed:
            if not body:
                continue
            body = with_tenant_ids(body, self._label(tenant))
            if out:
                _, last, n = out[-1]
                if len(last) + len(body) - 1 <= max_bytes and n + datapoints <= max_points:
                    out[-1] = (None, last[:-1] + b"," + body[1:], n + datapoints)
                    continue
            out.append((None, body, datapoints))
        return out

    # ---- the Forwarder contract -------------------------------------------------------------

    def start(self) -> None:
        self.started = True
        for lane in list(self.lanes.values()):
            lane.start()
        self._report = gevent.spawn(self._report_loop)
        if self.idle_timeout > 0 and not self.multi:
            self._retiring = gevent.spawn(self._retire_loop)

    def _report_loop(self) -> None:
        """A greenlet: each tenant's backlog in the log when it changed (several tenants)."""
        period, last = max(float(self.config.interval), 1.0), ""
        while True:
            gevent.sleep(period)
            line = self.describe() if len(self.lanes) > 1 else ""
            if line != last and line:
                log.info("backlog by tenant: %s", line)
            last = line

    def kick(self) -> None:
        """Full bodies are ready: move them into their lanes now."""
        self.lanes[None].kick()  # the default lane's flusher moves every tenant's bodies

    def recount(self) -> None:
        """Every tenant's open body may have grown: the gate over the whole cap, once they
        grew (or shrank) by a quarter of a body since it was last looked at. The sum over
        every lane is not free with many tenants, and the headroom's two bodies cover less."""
        if abs(self.encoder.held_bytes - self._encoder_at_look) >= self._recount_step:
            self._update_gate()

    def stop(self, timeout: float) -> int:
        """Flush everything and stop every lane in parallel; returns the datapoints lost."""
        self.stopping = True
        for greenlet in (self._report, self._retiring):
            if greenlet is not None:
                greenlet.kill(block=False)
        self.dispatch(partial=True)
        self._relieve_all()
        stops = [gevent.spawn(lane.stop, timeout) for lane in list(self.lanes.values())]
        gevent.joinall(stops)
        return sum(int(g.value or 0) for g in stops)

    def healthy(self) -> tuple[bool, str]:
        """One forwarder's judgement over all lanes. A failing tenant alone does not make the
        process unhealthy while another tenant's POSTs succeed (restarting would not help it);
        the receivers paused, or every tenant failing, does."""
        lanes = list(self.lanes.items())
        waiting = [(t, lane) for t, lane in lanes if lane.outbox.datapoints or lane.parking.parked]
        failing = [(t, lane) for t, lane in waiting if lane.target.failing]
        everyone = all(lane.target.failing for _, lane in lanes)
        ok, reason = judge(
            HealthFacts(
                stopping=self.stopping,
                flusher_running=all(
                    lane._flush_greenlet is not None and not lane._flush_greenlet.dead
                    for _, lane in lanes
                ),
                senders_running=not any(g.dead for _, lane in lanes for g in lane._greenlets),
                interval=float(self.config.interval),
                paused_seconds=self.paused_for(),
                failing_seconds=(
                    min(lane.target.failing_seconds() for _, lane in failing) if everyone else None
                ),
                data_waiting=bool(waiting),
                spool=self.spool is not None,
                spool_full=self.spool is not None and self.spool.full,
            )
        )
        if ok and failing and not everyone:
            names = ", ".join(self._label(t) for t, _ in failing)
            reason += f"; failing tenants: {names} (the others deliver)"
        return ok, reason

    def failing_seconds(self) -> float:
        """The longest current run of failures of any tenant."""
        return max(lane.target.failing_seconds() for lane in self.lanes.values())

    def paused_for(self) -> float:
        return self.backpressure.paused_for()

    def tune(self, **values: float) -> None:
        """Set ``backoff_base``, ``backoff_cap`` or ``park_retry`` on every lane (tests)."""
        self._tuning.update(values)
        for lane in self.lanes.values():
            for name, value in values.items():
                setattr(lane, name, value)

    # ---- memory -----------------------------------------------------------------------------

    def count_also(self, holder: Callable[[], int]) -> None:
        """Count `holder()` bytes against the memory cap too (the receivers' read buffers)."""
        self._holders.append(holder)

    @property
    def memory_bytes(self) -> int:
        held = sum(lane.outbox.bytes for lane in self.lanes.values()) + self.encoder.held_bytes
        return held + sum(holder() for holder in self._holders)

    def _relieve_all(self) -> None:
        """New shares, each lane's own relief (a failing lane over its share spools), the gate."""
        lanes = list(self.lanes.values())
        active = sum(1 for lane in lanes if lane.outbox.bytes) or 1
        share = max(1, self.max_bytes // active)
        for lane in lanes:
            lane.outbox.max_bytes = share
            lane._relieve()
        self._update_gate()

    def _update_gate(self) -> None:
        """The receivers' gate over the whole cap (all lanes, the encoder, the read buffers)."""
        self._encoder_at_look = self.encoder.held_bytes
        self.backpressure.update(self.memory_bytes, self.max_bytes, self._headroom)

    # ---- telling the operator ---------------------------------------------------------------

    def _backlogs(self) -> str:
        """Each tenant's bytes in memory, largest first, in words."""
        held = sorted(
            ((lane.outbox.bytes, self._label(t)) for t, lane in self.lanes.items()), reverse=True
        )
        return ", ".join(f"tenant {t}: {n} bytes" for n, t in held if n) or "nothing held"

    def describe(self) -> str:
        """A line for the periodic log: each tenant's backlog and failure state."""
        parts = []
        for tenant, lane in self.lanes.items():
            state = f" failing {lane.target.failing_seconds():.0f}s" if lane.target.failing else ""
            parts.append(
                f"tenant {self._label(tenant)}: {lane.outbox.datapoints} datapoints "
                f"({lane.outbox.bytes} bytes){state}"
            )
        return "; ".join(parts)

    def _collect(self, stats: Stats) -> None:
        lanes = list(self.lanes.items())
        stats.set("blueflood_failing_seconds", round(self.failing_seconds(), 3))
        stats.set("buffered_bytes", self.memory_bytes, place="memory")
        stats.set(
            "buffered_datapoints",
            sum(lane.outbox.datapoints for _, lane in lanes) + self.encoder.pending_datapoints,
        )
        if self.spool is not None:
            stats.set("buffered_bytes", self.spool.disk_bytes, place="disk")
            stats.set("spool_files", self.spool.files)
        if self.multi:
            return
        for gone in self._gone:
            if gone not in self.lanes:  # (not started again meanwhile)
                for name in _LANE_GAUGES:
                    stats.forget(name, tenant=gone)
        self._gone.clear()
        for tenant, lane in lanes:
            label = self._label(tenant)
            stats.set("tenant_buffered_bytes", lane.outbox.bytes, tenant=label)
            stats.set("tenant_buffered_datapoints", lane.outbox.datapoints, tenant=label)
            stats.set(
                "tenant_failing_seconds", round(lane.target.failing_seconds(), 3), tenant=label
            )


def _close_all(clients: Iterable[Poster]) -> None:
    for client in clients:
        close = getattr(client, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("closing a retired Blueflood client failed")


def credential_posters(
    credentials: Iterable[Credentials],
    config: Config,
    stats: Stats,
    environ: Mapping[str, str],
    source: str = "<rules>",
    pool_size: int = 4,
) -> dict[str, BluefloodClient]:
    """A client per tenant with credentials of its own, one `TokenProvider` per credential
    set (tenants sharing a user and a variable share the token). Raises `RulesError` naming
    the variable (never its value) when it is unset."""
    providers: dict[tuple[str, str], TokenProvider] = {}
    clients = {}
    for cred in credentials:
        provider = providers.get((cred.user, cred.env))
        if provider is None:
            secret = cred.secret(environ, source)
            provider = TokenProvider(
                config.auth_url,
                cred.user,
                key=secret if cred.key_env else None,
                password=secret if cred.password_env else None,
                stats=stats,
                timeout=config.request_timeout,
            )
            providers[(cred.user, cred.env)] = provider
        clients[cred.tenant] = BluefloodClient(
            config.blueflood,
            cred.tenant,
            stats,
            timeout=config.request_timeout,
            gzip=config.gzip,
            token_provider=provider,
            pool_size=pool_size,
        )
    return clients


def build_forwarder(
    config: Config,
    encoder: BodySource,
    stats: Counters,
    client: Poster,
    spool: BodySpool | None = None,
    *,
    routed: bool = False,
    posters: Mapping[str, Poster] | None = None,
    tenants: Iterable[str] = (),
) -> Forwarder | TenantForwarder:
    """The service's forwarder: one destination as before, or the tenants' lanes.

    ``routed`` (the encoder routes by ``--rules``) and ``--ingest-multi`` take the tenants'
    forwarder: a lane per tenant (``tenants`` the rules name start at once, ``posters`` for
    tenants with credentials of their own), or with ``--ingest-multi`` one lane whose items
    carry their tenant. Otherwise the single-destination `Forwarder`, exactly as before.
    """
    multi = False
    if config.ingest_multi and isinstance(client, BluefloodClient):
        client.use_ingest_multi()
        multi = True
    if multi or routed:
        return TenantForwarder(
            config, encoder, stats, client, spool=spool, posters=posters, tenants=tenants
        )
    return Forwarder(config, encoder, stats, client, spool=spool)


__all__ = ["TenantForwarder", "build_forwarder", "credential_posters", "with_tenant_ids"]
