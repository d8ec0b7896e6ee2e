"""Spreads new connections over the workers.

Idle workers race for each connection on a shared listening socket, and the one that is awake
tends to win a whole burst (a relay opening its four connections at once would land on one
worker). So each worker publishes its connection count (`LoadTable`), and a worker holding
more connections than the least loaded one leaves a new connection `DEFER_SECONDS` to the
others before taking it itself: it stops accepting for that long, and takes the connection
after the wait if nobody else did, so nothing waits longer than that.

Imported after the gevent patch (a worker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import gevent
from gevent.server import StreamServer

from .loads import LoadTable

__all__ = ["DEFER_SECONDS", "Balancer", "should_defer"]

DEFER_SECONDS = 0.005  # a busier worker leaves a new connection this long to a less busy one


def should_defer(mine: int, others: Iterable[int], deferred: bool) -> bool:
    """Whether a worker holding ``mine`` connections leaves a new one to the others (never
    twice in a row for the same wake-up: then it takes it)."""
    others = list(others)
    return not deferred and bool(others) and mine > min(others)


class Balancer:
    """One worker's side: counts its connections into the table, gates its TCP accepts."""

    def __init__(
        self, table: LoadTable, index: int, listeners: Callable[[], Iterable[object]]
    ) -> None:
        """``listeners`` lists the worker's listeners: those with a gevent ``server`` are
        balanced, and every ``pool`` (open connections) counts."""
        self._table = table
        self._index = index
        self._listeners = listeners
        table[index] = 0

    def install(self) -> None:
        """Gate every TCP listener's accepts (after the service started them)."""
        for listener in self._listeners():
            server = getattr(listener, "server", None)
            if isinstance(server, StreamServer):
                self._gate(server)

    def load(self) -> int:
        """Open connections of this worker, the ones accepted but not yet started included;
        published (a closed connection lowers it here)."""
        n = sum(len(getattr(listener, "pool", ())) for listener in self._listeners())
        self._table[self._index] = n
        return n

    def _gate(self, server: StreamServer) -> None:
        # gevent's StreamServer calls do_read() once per connection to accept; this is the one
        # place a connection can still be left in the kernel's queue for another worker.
        accept = server.do_read
        deferred = False

        def resume() -> None:
            if server.started:
                server.start_accepting()

        def balanced_accept() -> object:  # what do_read returns: (socket, address) or None
            nonlocal deferred
            mine = self.load()
            if should_defer(mine, self._table.others(self._index), deferred):
                deferred = True
                server.stop_accepting()
                gevent.spawn_later(DEFER_SECONDS, resume)
                return None
            deferred = False
            args = accept()
            if args:
                self._table[self._index] = mine + 1
            return args

        server.do_read = balanced_accept  # type: ignore[method-assign]
