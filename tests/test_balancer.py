"""Connection balancing of ``--workers``: the shared table of loads and the accept gate.

Two "workers" here are two gevent servers in this process on one shared listening socket,
each with its own `Balancer` on one `LoadTable`, as the worker processes share them."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import gevent
import gevent.event
import gevent.pool
import pytest
from gevent.server import StreamServer

from fastforward.workers.balancer import Balancer, should_defer
from fastforward.workers.loads import IDLE_SLOT, LoadTable


def test_a_busier_worker_defers_once_to_a_less_busy_one() -> None:
    assert should_defer(2, [1], deferred=False)
    assert not should_defer(2, [1], deferred=True)  # it waited once: it takes the connection
    assert not should_defer(1, [1], deferred=False)  # equal: no reason to wait
    assert not should_defer(0, [3, 5], deferred=False)
    assert not should_defer(5, [], deferred=False)  # alone
    assert not should_defer(1, [IDLE_SLOT], deferred=False)  # a dead worker takes nothing


def test_the_table_is_shared_between_views_of_one_descriptor() -> None:
    table = LoadTable.create(3)
    assert [table[i] for i in range(3)] == [IDLE_SLOT] * 3
    other = LoadTable.attach(os.dup(table.fd or -1), 3)  # what a worker process does
    other[1] = 7
    assert table[1] == 7
    assert table.others(1) == [IDLE_SLOT, IDLE_SLOT]
    table.close_fd()
    assert table.fd is None


class Worker:
    """One 'worker': a StreamServer on the shared socket whose connections stay open (in its
    pool from the moment they are accepted, as in `receiver`) until `close`."""

    def __init__(self, sock: socket.socket, table: LoadTable, index: int, held: int) -> None:
        self.held = held  # connections it already holds
        self.greenlets = gevent.pool.Pool()
        self.server = StreamServer(
            socket.socket(fileno=os.dup(sock.fileno())), self.handle, spawn=self.greenlets
        )
        self.accepted = gevent.event.Event()
        self.released = gevent.event.Event()
        self.balancer = Balancer(table, index, lambda: [self])

    @property
    def pool(self) -> list[object]:
        return [None] * (self.held + len(self.greenlets))

    def handle(self, conn: socket.socket, _address: object) -> None:
        self.accepted.set()
        try:
            self.released.wait()
        finally:
            conn.close()

    def close(self) -> None:
        self.released.set()
        self.server.stop()
        self.greenlets.join(timeout=5)


@pytest.fixture
def shared() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


def test_new_connections_go_to_the_less_loaded_worker(shared: socket.socket) -> None:
    table = LoadTable.create(2)
    busy, idle = Worker(shared, table, 0, held=3), Worker(shared, table, 1, held=0)
    clients = []
    try:
        for w in (busy, idle):
            w.server.start()
            w.balancer.install()
            w.balancer.load()
        # Each connection is made once the previous one was accepted; both servers wake for
        # it. Without the gate, whichever runs first takes it.
        for n in (1, 2, 3):
            idle.accepted.clear()
            busy.accepted.clear()
            clients.append(socket.create_connection(shared.getsockname(), timeout=5))
            assert gevent.wait([idle.accepted, busy.accepted], timeout=5, count=1)
            assert len(idle.pool) == n and len(busy.pool) == 3, (len(idle.pool), len(busy.pool))
        assert table[1] == 3
    finally:
        for c in clients:
            c.close()
        busy.close()
        idle.close()
        table.close_fd()


def test_a_deferred_connection_is_still_taken_when_nobody_else_does(
    shared: socket.socket,
) -> None:
    # The less loaded worker is not accepting (stuck, or between wake-ups): the busier one
    # waits a moment, then takes the connection itself rather than leaving it queued.
    table = LoadTable.create(2)
    table[1] = 0
    busy = Worker(shared, table, 0, held=2)
    try:
        busy.server.start()
        busy.balancer.install()
        with socket.create_connection(shared.getsockname(), timeout=5):
            assert busy.accepted.wait(timeout=5)
        assert len(busy.pool) == 3
        assert table[0] == 3
    finally:
        busy.close()
        table.close_fd()
