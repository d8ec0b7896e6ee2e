"""The daemon's routing (``--rules``, ``--storage-schemas``, ``--tags``; docs/rules.md): the
two files loaded into a `Router` at start, their reload on SIGHUP, the per-tenant counters.

At start `load_routes` either returns everything complete or raises `ConfigError` with the
one line of `RulesError` / `SchemasError` (file and line), so the process exits 2 before it
binds anything. A reload builds the new router, the new tenants' lanes and the new
credentials' clients first; only when all of it succeeded is the encoder's router swapped
(`Encoder.set_router`: one reference, the codec's cache emptied), so a bad file changes
nothing. Bodies already encoded, queued or in flight keep their tenant and their client: a
reload loses nothing and sends nothing twice. The new `Router` is built with ``previous=``
the old one, so series budgets keep what they learnt (budgets are per process: with
``--workers N`` each worker admits up to the budget).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._codec_rules import ROUTING_DROP_REASONS
from .config import Config, tenant_label
from .errors import ConfigError
from .protocols import Poster
from .routing import Router, Rules, RulesError, Schemas, SchemasError, load_rules, load_schemas
from .stats import Stats
from .tenants import TenantForwarder, credential_posters

__all__ = [
    "ROUTING_DROP_REASONS",
    "Routes",
    "Routing",
    "check_routes",
    "load_routes",
    "routing_wanted",
]

log = logging.getLogger("fastforward.routing")


def routing_wanted(config: Config) -> bool:
    """Whether this configuration routes at all: without these three options the daemon is
    the single-tenant forwarder it always was (no router, the same `Forwarder`)."""
    return bool(config.rules or config.storage_schemas or config.tags != "keep")


@dataclass(frozen=True)
class Routes:
    """One loaded configuration of the router: the rules, the schemas, the router built."""

    router: Router
    rules: Rules
    schemas: Schemas | None

    def summary(self) -> str:
        """What the start and reload lines say: the rules, the tenants they route to, and the
        tenants with credentials of their own (those no rule names get a lane all the same)."""
        rules = len(self.rules)
        routed = {r.tenant for r in self.rules.rules if r.tenant is not None}
        own = [c.tenant for c in self.rules.credentials]
        text = f"{_count(rules, 'rule')} sending to {_count(len(routed), 'tenant')}"
        if own:
            unrouted = sum(1 for t in own if t not in routed)
            text += f", credentials for {_count(len(own), 'tenant')}"
            text += f" ({unrouted} named by no rule)" if unrouted else ""
        return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def load_routes(config: Config, previous: Router | None = None) -> Routes:
    """Both files read and checked, the router built; `ConfigError` with the file and line."""
    try:
        rules = load_rules(config.rules) if config.rules else Rules()
        schemas = load_schemas(config.storage_schemas) if config.storage_schemas else None
    except (RulesError, SchemasError) as exc:
        raise ConfigError(str(exc)) from None
    router = Router(
        rules,
        tags=config.tags,
        schemas=schemas,
        previous=previous,
        budget_options={"warmup_seconds": config.series_budget_warmup},
    )
    return Routes(router, rules, schemas)


def check_routes(config: Config, environ: Mapping[str, str]) -> Routes | None:
    """What a process that routes checks before it starts (the supervisor of ``--workers``
    too, so a bad file exits 2 once instead of failing every worker): both files, and the
    variables the credentials name (not in a dry run, which authenticates nothing)."""
    if not routing_wanted(config):
        return None
    routes = load_routes(config)
    if not config.dry_run:
        for cred in routes.rules.credentials:
            try:
                cred.secret(environ, routes.rules.source)
            except RulesError as exc:
                raise ConfigError(str(exc)) from None
    return routes


class RoutedEncoder(Protocol):
    """What the routing needs from the codec's encoder (issue 13's contract)."""

    def set_router(self, router: Callable[[str], Any] | None) -> None: ...

    def counters_by_tenant(self) -> dict[str | None, dict[str, int]]: ...

    @property
    def route_cache_names(self) -> int: ...

    @property
    def route_cache_bytes(self) -> int: ...


def _credential_key(cred: Any) -> tuple[str, str | None, str | None]:
    return (cred.user, cred.key_env, cred.password_env)


class Routing:
    """The routes in use, their reload, and the per-tenant intake counters.

    ``forwarder`` is the service's `TenantForwarder` (set once it is built: it needs
    `posters` first); a reload gives it the new tenants' lanes and the new clients."""

    def __init__(
        self,
        config: Config,
        routes: Routes,
        encoder: RoutedEncoder,
        stats: Stats,
        forwarder: TenantForwarder | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.routes = routes
        self.encoder = encoder
        self.stats = stats
        self.forwarder = forwarder
        self.environ = os.environ if environ is None else environ
        self.default_label = tenant_label(config.tenant)
        self.known: dict[str, None] = {self.default_label: None}  # tenants with series, ordered
        self._note_tenants(routes)
        stats.set("rules_loaded", len(routes.rules))
        for result in ("ok", "error"):
            stats.incr("rules_reloads", 0, result=result)
        stats.add_collector(self._collect)

    def posters(self, routes: Routes) -> dict[str, Poster]:
        """The clients for the tenants with credentials of their own (none in a dry run)."""
        if self.config.dry_run or not routes.rules.credentials:
            return {}
        try:
            return dict(
                credential_posters(
                    routes.rules.credentials,
                    self.config,
                    self.stats,
                    self.environ,
                    routes.rules.source,
                    pool_size=self.config.concurrency + 1,  # shared slots and its own (tenants.py)
                )
            )
        except RulesError as exc:
            raise ConfigError(str(exc)) from None

    # ---- reload ---------------------------------------------------------------------------

    def reload(self) -> bool:
        """SIGHUP: the new files in use, or the old ones kept (one ERROR naming the problem)."""
        old = self.routes
        try:
            new = load_routes(self.config, previous=old.router)
            changed = self._changed_posters(old, new)
        except ConfigError as exc:
            self.stats.incr("rules_reloads", result="error")
            log.error("rules reload failed, the previous rules stay in use: %s", exc)
            return False
        # Everything new exists: from here on nothing can fail half-way.
        if self.forwarder is not None:
            # only tenants named for the first time: one whose lane was removed as idle gets
            # a new lane from its next datapoint, not from every reload that still names it
            named_before = set(old.rules.tenants())
            self.forwarder.add_tenants(t for t in new.rules.tenants() if t not in named_before)
            self.forwarder.use_posters(changed, keep=[c.tenant for c in new.rules.credentials])
        self.encoder.set_router(new.router.decide)
        self.routes = new
        self._note_tenants(new)
        self.stats.set("rules_loaded", len(new.rules))
        self.stats.incr("rules_reloads", result="ok")
        for warning in new.rules.warnings:
            log.warning("%s", warning)
        log.info("rules reloaded: %s", new.summary())
        return True

    def _changed_posters(self, old: Routes, new: Routes) -> dict[str, Poster]:
        """Clients only for tenants whose credentials are new or changed (user, variable)."""
        before = {c.tenant: _credential_key(c) for c in old.rules.credentials}
        fresh = [c for c in new.rules.credentials if before.get(c.tenant) != _credential_key(c)]
        if not fresh:
            return {}
        rules = Rules(credentials=tuple(fresh), source=new.rules.source)
        return self.posters(Routes(new.router, rules, new.schemas))

    # ---- counters -------------------------------------------------------------------------

    def _note_tenants(self, routes: Routes) -> None:
        """Series at 0 for every tenant the rules name (kept after a reload drops one: a
        counter never goes backwards, and the set stays bounded by the files loaded)."""
        for tenant in routes.rules.tenants():
            self.known.setdefault(tenant, None)
        for label in self.known:
            self.stats.incr("tenant_datapoints_accepted", 0, tenant=label)
            for reason in ROUTING_DROP_REASONS:
                self.stats.incr("tenant_datapoints_dropped", 0, tenant=label, reason=reason)

    def _collect(self, stats: Stats) -> None:
        """The codec's per-tenant counts into the tenant-labelled series (the unlabelled
        totals are the service's, from `counters()`, as without rules)."""
        stats.set("route_cache_names", self.encoder.route_cache_names)
        stats.set("route_cache_bytes", self.encoder.route_cache_bytes)
        totals: dict[str, dict[str, int]] = {}
        for tenant, counts in self.encoder.counters_by_tenant().items():
            label = self.default_label if tenant is None else tenant
            into = totals.setdefault(label, {})
            for key, n in counts.items():
                into[key] = into.get(key, 0) + n
        for label, counts in totals.items():
            stats.set("tenant_datapoints_accepted", counts.get("accepted", 0), tenant=label)
            for reason in ROUTING_DROP_REASONS:
                n = counts.get(reason, 0)
                stats.set("tenant_datapoints_dropped", n, tenant=label, reason=reason)

    def series_report(self) -> list[dict[str, object]]:
        """What GET /debug/series shows: per budgeted rule, its budget's state."""
        return self.routes.router.series_report()
