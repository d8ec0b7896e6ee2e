"""An in-process stand-in for the routing encoder (issue 13): bodies handed over per tenant.

It speaks `protocols.RoutedBodySource`: ``take_routed(partial)`` gives ``(tenant, body,
datapoints)`` with tenant None for the default tenant, bodies in the codec's exact item format,
``per_body`` datapoints each, one tenant per body, each tenant's bodies in arrival order.
"""

from __future__ import annotations

import time


class RoutedEncoder:
    def __init__(self, per_body: int = 50) -> None:
        self.per_body = per_body
        self.open: dict[str | None, list[bytes]] = {}
        self.full: list[tuple[str | None, bytes, int]] = []
        self.seq = 0

    def add(self, tenant: str | None, n: int, prefix: str = "m", ct: int | None = None) -> None:
        """``n`` datapoints for ``tenant``, named ``{prefix}.{seq}`` (each name is new)."""
        now = int(time.time() * 1000) if ct is None else ct
        items = self.open.setdefault(tenant, [])
        for _ in range(n):
            items.append(
                b'{"collectionTime":%d,"ttlInSeconds":86400,"metricValue":%d,"metricName":"%s.%d"}'
                % (now, self.seq, prefix.encode(), self.seq)
            )
            self.seq += 1
            if len(items) == self.per_body:
                self.full.append((tenant, b"[" + b",".join(items) + b"]", len(items)))
                items.clear()

    @property
    def ready_bodies(self) -> int:
        return len(self.full)

    @property
    def pending_bytes(self) -> int:
        open_bytes = sum(len(i) + 1 for items in self.open.values() for i in items)
        return sum(len(b) for _, b, _ in self.full) + open_bytes

    @property
    def held_bytes(self) -> int:
        return self.pending_bytes  # its lists hold no spare capacity worth counting

    @property
    def pending_datapoints(self) -> int:
        return sum(n for _, _, n in self.full) + sum(map(len, self.open.values()))

    def take_routed(self, partial: bool = True) -> list[tuple[str | None, bytes, int]]:
        out, self.full = self.full, []
        if partial:
            for tenant, items in self.open.items():
                if items:
                    out.append((tenant, b"[" + b",".join(items) + b"]", len(items)))
                    items.clear()
        return out

    def take_counted(self, partial: bool = True) -> list[tuple[bytes, int]]:
        """Without routing every body would be the default tenant's (not used by the tests)."""
        return [(body, n) for _, body, n in self.take_routed(partial)]
