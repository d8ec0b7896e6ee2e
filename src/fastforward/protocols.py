"""What the daemon's parts need from each other, as Protocols: one place to read the seams.

The forwarder needs bodies from the encoder (`BodySource`), POSTs from a Blueflood client
(`Poster`), durable storage from the disk spool (`BodySpool`) and counters (`Counters`); the
receivers need the backpressure gate and a hand-over signal from the forwarder (`Flow`).
Concrete classes (`codec.Encoder`, `blueflood.BluefloodClient`, `spool.Spool`, `stats.Stats`)
satisfy them structurally; tests pass small in-memory stand-ins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gevent.event import Event

from .blueflood import Outcome
from .spool import SpoolEntry
from .stats import Stats

__all__ = [
    "BodySource",
    "BodySpool",
    "Counters",
    "Flow",
    "Poster",
    "RoutedBody",
    "RoutedBodySource",
    "SpoolEntry",
    "take_routed",
]

# One body for one tenant: (tenant, body, datapoints); tenant None is the default tenant (-t).
RoutedBody = tuple[str | None, bytes, int]


class BodySource(Protocol):
    """What the forwarder needs from the encoder (`codec.Encoder`)."""

    @property
    def ready_bodies(self) -> int: ...
    @property
    def held_bytes(self) -> int: ...  # memory held, allocations included (the cap counts it)
    @property
    def pending_datapoints(self) -> int: ...

    def take_counted(self, partial: bool = True) -> list[tuple[bytes, int]]: ...


class RoutedBodySource(BodySource, Protocol):
    """An encoder that routes names to tenants (issue 13): bodies come out per tenant.

    ``take_routed(partial)`` returns every waiting body (with ``partial``, the open ones too),
    each as ``(tenant, body, datapoints)``. A body holds the datapoints of one tenant only;
    tenant None is the default tenant (``-t``); any other tenant is one a rule names, so the
    set of tenants is bounded by the rules file. Bodies of one tenant come out in the order
    their datapoints went in. ``held_bytes`` / ``pending_datapoints`` /
    ``ready_bodies`` count all tenants together.
    """

    def take_routed(self, partial: bool = True) -> list[RoutedBody]: ...


def take_routed(source: BodySource, partial: bool = True) -> list[RoutedBody]:
    """The source's bodies by tenant; an encoder without routing gives the default tenant's."""
    routed = getattr(source, "take_routed", None)
    if routed is not None:
        return list(routed(partial=partial))
    return [(None, body, datapoints) for body, datapoints in source.take_counted(partial=partial)]


class Poster(Protocol):
    """What the forwarder needs from a Blueflood client (`blueflood.BluefloodClient`)."""

    url: str  # the default tenant's ingest URL, for the log

    def post(self, body: bytes, tenant: str | None = None) -> Outcome: ...

    def url_for(self, tenant: str) -> str: ...


class BodySpool(Protocol):
    """What the forwarder needs from the disk spool (`spool.Spool`)."""

    @property
    def disk_bytes(self) -> int: ...  # bytes of the spool files
    @property
    def files(self) -> int: ...
    @property
    def full(self) -> bool: ...  # a put was refused for lack of room, and none succeeded since

    def put(self, body: bytes, datapoints: int, tenant: str | None = None) -> bool: ...

    def oldest(self, wanted: Callable[[str], bool] | None = None) -> SpoolEntry | None: ...

    def ack(self, entry: SpoolEntry) -> None: ...

    def release(self, entry: SpoolEntry) -> None: ...


class Counters(Protocol):
    """What the forwarder needs from the metrics registry (`stats.Stats`)."""

    def incr(self, name: str, n: float = 1, **labels: str) -> None: ...

    def set(self, name: str, value: float, **labels: str) -> None: ...

    def add_collector(self, collect: Callable[[Stats], None]) -> None: ...


class Flow(Protocol):
    """What the receivers need from the forwarder."""

    @property
    def gate(self) -> Event: ...  # set while receivers may read

    def kick(self) -> None: ...  # full bodies are ready in the encoder

    def recount(self) -> None: ...  # the encoder's open bodies grew: look at the memory cap
