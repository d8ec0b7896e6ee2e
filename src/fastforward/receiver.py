"""gevent listeners: pickle and plaintext over TCP / UNIX / TLS, plaintext over UDP.

Each stream connection runs in its own greenlet from a per-listener `Pool` of
``max_connections``; a connection beyond the cap is closed at once and counted rather than
left waiting in the kernel's accept queue (carbon#428: a paused accept starves everyone).

Reads go into one growing `ReadBuffer` per connection through ``recv_into`` on a memoryview,
and frames are handed to the codec as memoryview slices: no copy per frame. How the bytes are
cut into frames and lines (and the limits on them) is `framing`'s; binding the listening
sockets and TLS is `sockets`'s. This module keeps the greenlets, backpressure and closing.

Before every read a connection waits on ``forwarder.gate`` (closed while the outbox is at its
byte cap): TCP backpressure, so a sender queues on its side instead of us dropping. UDP cannot
push back, so datagrams that arrive while the gate is closed are dropped and counted.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import DatagramServer, StreamServer

from .attribution import Intake, RejectLog, Senders, host_of
from .config import Config
from .endpoints import Endpoint
from .errors import FrameError, StartupError
from .framing import (
    INITIAL_BUFFER,
    LENGTH_BYTES,
    SAMPLE_BYTES,
    LineFraming,
    OversizeFrame,
    ReadBuffer,
    ReadMemory,
    frame_stop,
    mid_record,
    oversize_detail,
    truncated_detail,
)
from .protocols import Flow
from .sockets import bind, peer_name, set_abortive_close, tls_context
from .stats import Stats

__all__ = ["Receivers", "StartupError"]

log = logging.getLogger(__name__)

UDP_MAX_DATAGRAM = 65_535
# Closing a connection on purpose (shutdown drain, --max-connection-age), see `_recv_closing`:
# FIN once the sender pauses this long; a sender that reads then closes its side, one that
# never reads (carbon-c-relay) is reset at its next pause, so its next write() fails.
QUIET_GAP = 0.05
FIN_WAIT = 1.0  # longest wait for a pause before the FIN anyway (a sender that never pauses)
FIN_GRACE = 0.5  # a sender that reads has this long to answer our FIN before a gap counts
AGED_CLOSE_SECONDS = 5.0  # bound on closing one aged connection (time spent waiting for it)


class _Drain(BaseException):
    """Thrown into connection greenlets at shutdown: read what is buffered, then close."""


def _wait_for_room(gate: Event) -> None:
    """Block while the gate is closed. A gevent Event releases every waiter on set(), even if
    it is cleared again before they run (a resume right before the next pause), so check again:
    otherwise a crowd of paused connections would all slip through at once."""
    while not gate.is_set():
        gate.wait()


def age_deadline(max_age: float, now: float, rng: random.Random | None = None) -> float:
    """When a connection opened at `now` is closed by --max-connection-age; 0.0 for never.

    Jittered by +-10% per connection, so senders that a fleet accepted together do not all
    reconnect (and pile onto one instance) at the same moment.
    """
    if max_age <= 0:
        return 0.0
    return now + max_age * (rng or random).uniform(0.9, 1.1)


class _Conn(ReadBuffer):
    """One stream connection: its read buffer and the state of a close on purpose."""

    __slots__ = (
        "sock",
        "peer",
        "drain_until",
        "age_at",
        "closing_at",
        "fin_at",
        "age_budget",
        "eof",
        "reset",
        "last_budget",
    )

    def __init__(self, sock: Any, peer: str, size: int, memory: ReadMemory) -> None:
        super().__init__(size, memory)
        self.sock = sock
        self.peer = peer
        self.drain_until = 0.0  # > 0 once closing began (shutdown or age): the deadline
        self.age_at = 0.0  # --max-connection-age: when closing begins; 0 = never
        self.closing_at = 0.0  # when closing began
        self.fin_at = 0.0  # when we sent FIN
        self.age_budget = 0.0  # ageing: seconds left to wait for the sender while closing
        self.eof = False  # the sender closed its side
        self.reset = False  # close with RST, not FIN (a sender that does not read)
        self.last_budget = -1  # bytes still read past the closing deadline (-1: not started)


class _StreamListener:
    """One stream listener (tcp, tcp6, unix, ssl) with its connection pool."""

    def __init__(
        self,
        owner: Receivers,
        endpoint: Endpoint,
        protocol: str,
        listener: socket.socket,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.owner = owner
        self.endpoint = endpoint
        self.protocol = protocol
        self.ssl_context = ssl_context
        self.cap = owner.config.max_connections
        self.pool = Pool(self.cap)
        self.refused_in_episode = 0
        self.listen_socket = listener
        self.server = StreamServer(listener, self._handle, spawn=self._spawn)
        self.address = listener.getsockname()
        self.label = "tls" if endpoint.kind == "ssl" else protocol

    def _spawn(self, run: Callable[..., Any], *rest: Any) -> None:
        # gevent calls spawn(run, handle, close, (socket, address)): run closes the socket
        # when the handler returns.
        sock, address = rest[-1][:2]
        stats = self.owner.stats
        if self.pool.full():
            # Refuse rather than stop accepting: a stalled accept queue hurts every sender.
            sock.close()
            stats.incr("connections_refused", protocol=self.protocol)
            if not self.refused_in_episode:
                log.warning(
                    "%s: connection cap %d reached; refusing new connections (from %s first)",
                    self.endpoint.text,
                    self.cap,
                    peer_name(address),
                )
            self.refused_in_episode += 1
            return
        if self.refused_in_episode:
            log.warning(
                "%s: below the connection cap again; %d connections were refused",
                self.endpoint.text,
                self.refused_in_episode,
            )
            self.refused_in_episode = 0
        self.pool.spawn(run, *rest)

    def _handle(self, sock: Any, address: Any) -> None:
        owner = self.owner
        stats = owner.stats
        peer = peer_name(address) if self.endpoint.kind != "unix" else f"unix:{self.endpoint.path}"
        stats.incr("connections_accepted", protocol=self.protocol)
        owner.senders.connected(host_of(peer))
        owner.open_connections += 1
        stats.set("connections_open", owner.open_connections)
        me = gevent.getcurrent()
        owner.running.add(me)
        idle = owner.config.idle_timeout or None
        conn: _Conn | None = None
        try:
            sock.settimeout(idle)
            if self.ssl_context is not None:
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    log.warning(
                        "%s: TLS handshake with %s failed: %s", self.endpoint.text, peer, exc
                    )
                    return
            conn = _Conn(sock, peer, INITIAL_BUFFER, owner.read_memory)
            conn.drain_until = owner.drain_until
            conn.age_at = age_deadline(owner.config.max_connection_age, time.monotonic())
            serve = self._serve_pickle if self.protocol == "pickle" else self._serve_lines
            while True:
                try:
                    serve(conn)
                    break
                except _Drain:
                    conn.drain_until = owner.drain_until
        except TimeoutError:
            stats.incr("connections_timed_out", protocol=self.protocol)
            log.info("closing %s: idle for %s seconds", peer, owner.config.idle_timeout)
        except _Drain:
            pass
        except OSError as exc:
            log.info("connection from %s ended: %s", peer, exc)
        finally:
            owner.intake.settle(peer)
            if conn is not None:
                conn.release()
            owner.running.discard(me)
            owner.open_connections -= 1
            stats.set("connections_open", owner.open_connections)
            try:
                if conn is not None and conn.reset:
                    set_abortive_close(sock)
                sock.close()
            except OSError:
                pass

    # -- reading ----------------------------------------------------------------------------

    def _recv(self, conn: _Conn) -> int:
        """One read into the free space of the buffer; 0 means EOF (or the close is done)."""
        if conn.age_at and not conn.drain_until and time.monotonic() >= conn.age_at:
            self._begin_ageing(conn)
        if conn.drain_until:
            return self._recv_closing(conn)
        _wait_for_room(self.owner.flow.gate)
        return conn.sock.recv_into(conn.mv[conn.end :])

    def _begin_ageing(self, conn: _Conn) -> None:
        conn.drain_until = time.monotonic() + AGED_CLOSE_SECONDS  # marks the close as begun
        conn.age_budget = AGED_CLOSE_SECONDS
        self.owner.stats.incr("connections_aged", protocol=self.protocol)
        log.debug("closing %s: --max-connection-age reached", conn.peer)

    def _recv_closing(self, conn: _Conn) -> int:
        """Read while closing on purpose, losing nothing the sender wrote.

        carbon has no acknowledgement: whatever our kernel accepted is the sender's "sent".
        1. Read until the sender pauses (QUIET_GAP at a frame/line boundary; FIN_WAIT at most):
           a sender that reads (Twisted's carbon-relay) drops what it still buffers when it
           sees a FIN, and in a pause it buffers nothing.
        2. Send FIN and keep reading: that sender closes its side (EOF here).
        3. One that never reads (carbon-c-relay) learns of a FIN only from a failing write, and
           the write that meets a closed socket is lost. So after FIN_GRACE, at its next pause,
           reset instead: its next write() fails at once and it keeps (requeues) that metric.
        """
        sock = conn.sock
        if not conn.closing_at:
            conn.closing_at = time.monotonic()
        while True:
            shutdown = bool(self.owner.drain_until)
            if not shutdown:
                # Ageing: backpressure still holds, and only time spent waiting for the sender
                # counts against the bound (a reset after a pause would lose what the kernel
                # holds); at shutdown the deadline is absolute.
                _wait_for_room(self.owner.flow.gate)
            now = time.monotonic()
            remaining = conn.drain_until - now if shutdown else conn.age_budget
            if remaining <= 0:
                # No pause within the bound. What our kernel already accepted is the sender's
                # "sent": read it (at most one receive buffer, so a sender that never stops
                # cannot hold us), then reset, which tells the sender the rest failed.
                return self._recv_last(conn)
            if not conn.fin_at and now >= conn.closing_at + FIN_WAIT:
                self._send_fin(conn)
            sock.settimeout(min(remaining, QUIET_GAP))
            try:
                n: int = sock.recv_into(conn.mv[conn.end :])
            except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
                if mid_record(conn, self.protocol):
                    continue  # the rest of a frame or line is on its way: wait for it
                if not conn.fin_at:
                    self._send_fin(conn)
                    continue
                if time.monotonic() < conn.fin_at + FIN_GRACE:
                    continue  # a sender that reads may still be about to close
                conn.reset = True
                return 0
            finally:
                conn.age_budget -= time.monotonic() - now
            if not n:
                conn.eof = True
            return n

    def _recv_last(self, conn: _Conn) -> int:
        """Past the closing deadline: what the kernel holds now, without waiting; 0 = done."""
        if conn.last_budget < 0:
            try:
                conn.last_budget = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            except OSError:
                conn.last_budget = 0
        if conn.last_budget > 0 and not conn.eof:
            conn.sock.settimeout(0.0)
            try:
                room = conn.mv[conn.end :]
                n: int = conn.sock.recv_into(room, min(len(room), conn.last_budget))
            except (TimeoutError, BlockingIOError, ssl.SSLWantReadError, OSError):
                n = -1
            if n > 0:
                conn.last_budget -= n
                return n
            if n == 0:
                conn.eof = True
                return 0
        conn.reset = True
        return 0

    def _send_fin(self, conn: _Conn) -> None:
        conn.fin_at = time.monotonic()
        if not isinstance(conn.sock, ssl.SSLSocket):  # a TLS half-close would end reading too
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _serve_pickle(self, conn: _Conn) -> None:
        max_frame = self.owner.config.max_frame_bytes
        need = LENGTH_BYTES  # bytes from conn.start needed to make progress
        while True:
            if conn.end == len(conn.buf) or conn.start + need > len(conn.buf):
                conn.make_room(need)
            n = self._recv(conn)
            if not n:
                break
            filled = conn.end + n == len(conn.buf)
            conn.end += n
            need = self._decode_frames(conn, max_frame)
            if not need:
                return  # an oversize frame: the stream cannot be resynchronised
            if conn.start == conn.end:
                conn.start = conn.end = 0
                conn.shrink()
            if filled:  # grows only while under the memory cap (bodies and buffers together)
                conn.grow(self.owner.flow.gate.is_set())
            self.owner.decoded()
        if conn.end > conn.start:
            self._truncated_frame(conn)

    def _decode_frames(self, conn: _Conn, max_frame: int) -> int:
        """Decode every complete frame in the buffer; the bytes from ``conn.start`` needed for
        the next one, or 0 after an oversize frame (the connection is to be closed)."""
        owner = self.owner
        encoder = owner.encoder
        stats = owner.stats
        buf, mv = conn.buf, conn.mv
        gate = owner.flow.gate  # one Event for the forwarder's life: looked up once per read
        ok = 0
        need = LENGTH_BYTES
        while conn.end - conn.start >= LENGTH_BYTES:
            # Hand full bodies over frame by frame, and stop decoding while the outbox is at
            # its cap: neither one big read nor many connections that each got their read in
            # before the gate closed may overshoot --max-buffer-bytes.
            if encoder.ready_bodies:
                owner.flow.kick()
            # (At shutdown the forwarder is draining anyway: no wait.)
            if not gate.is_set() and not owner.drain_until:
                owner.intake.settle(conn.peer)  # before other connections run
                _wait_for_room(gate)
            try:
                stop = frame_stop(buf, conn.start, conn.end, max_frame)
            except OversizeFrame as exc:
                stats.incr("frames_received", ok, result="ok")
                self._oversize(conn, exc)
                return 0
            if stop > conn.end:
                need = stop - conn.start
                break
            frame = mv[conn.start + LENGTH_BYTES : stop]
            try:
                encoder.add_pickle(frame)
                ok += 1
            except FrameError as exc:
                self._bad_frame(conn, frame, exc)
            except Exception:  # a codec bug must not kill the connection's other frames
                log.exception("unexpected error decoding a frame from %s", conn.peer)
                stats.incr("frames_received", result="bad")
            finally:
                frame.release()
            conn.start = stop
        owner.intake.settle(conn.peer)
        if ok:
            stats.incr("frames_received", ok, result="ok")
        return need

    def _truncated_frame(self, conn: _Conn) -> None:
        """The sender closed in the middle of a frame: count and log what is lost."""
        stats = self.owner.stats
        stats.incr("frames_received", result="truncated")
        stats.incr("datapoints_dropped", reason="truncated_frame")
        head = conn.sample()
        detail = truncated_detail(head, conn.end - conn.start)
        self.owner.intake.dropped(conn.peer, "truncated_frame", head, detail)

    def _oversize(self, conn: _Conn, exc: OversizeFrame) -> None:
        stats = self.owner.stats
        stats.incr("frames_received", result="oversize")
        stats.incr("datapoints_dropped", reason="oversize_frame")
        head = conn.sample()
        detail = oversize_detail(head, exc) + "; connection closed"
        self.owner.intake.dropped(conn.peer, "oversize_frame", head, detail)

    def _bad_frame(self, conn: _Conn, frame: memoryview, exc: FrameError) -> None:
        # Counted as bad_frame by the codec (and settled to this sender); here the sample.
        self.owner.stats.incr("frames_received", result="bad")
        self.owner.rejects.record("bad_frame", conn.peer, bytes(frame[:SAMPLE_BYTES]), 1, str(exc))

    def _serve_lines(self, conn: _Conn) -> None:
        owner = self.owner
        lines = LineFraming()
        while True:
            if conn.end == len(conn.buf):
                conn.make_room(len(conn.buf))
            n = self._recv(conn)
            if not n:
                break
            filled = conn.end + n == len(conn.buf)
            conn.end += n
            if lines.skip_overlong(conn):
                continue
            if conn.end > conn.start:
                conn.start += self._decode_lines(conn)
            head = lines.cut_overlong(conn)
            if head is not None:
                owner.stats.incr("datapoints_dropped", reason="line_too_long")
                owner.intake.dropped(conn.peer, "line_too_long", head, lines.overlong_detail())
            if conn.start == conn.end:
                conn.start = conn.end = 0
                conn.shrink()
            if filled:  # grows only while under the memory cap (bodies and buffers together)
                conn.grow(self.owner.flow.gate.is_set())
            owner.decoded()
        if conn.end > conn.start and not lines.skipping:
            self._last_line(conn)
        conn.start = conn.end = 0
        if owner.encoder.ready_bodies:
            owner.flow.kick()

    def _decode_lines(self, conn: _Conn, final: bool = False) -> int:
        """Hand the unconsumed bytes to the codec; the bytes of the complete lines it took."""
        view = conn.mv[conn.start : conn.end]
        try:
            taken: int = self.owner.encoder.add_lines(view, final=final)
        finally:
            view.release()
        self.owner.intake.settle(conn.peer)
        return taken

    def _last_line(self, conn: _Conn) -> None:
        """A line without its newline when reading ended: the sender's last one, or cut."""
        if conn.drain_until and not conn.eof:
            # Cut by our close, not ended by the sender: the line may be incomplete.
            self.owner.stats.incr("datapoints_dropped", reason="truncated_line")
            self.owner.intake.dropped(conn.peer, "truncated_line", conn.sample(), "cut by the stop")
        else:
            self._decode_lines(conn, final=True)

    # -- stopping -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting; open connections go on.

        Connections still in the kernel's accept queue are accepted first: their senders
        already had their bytes acknowledged, so they are drained like the open ones.
        """
        self.server.stop_accepting()
        listener = self.listen_socket
        if listener.fileno() >= 0:
            listener.settimeout(0.0)
            for _ in range(100_000):
                try:
                    sock, address = listener.accept()
                except (BlockingIOError, TimeoutError, OSError):
                    break
                self.pool.spawn(self._handle, sock, address)
        self.server.close()
        if self.endpoint.kind == "unix":
            try:
                os.unlink(self.endpoint.path)
            except OSError:
                pass


class _UdpListener:
    """Plaintext lines over UDP: one datagram is a complete chunk of lines."""

    def __init__(self, owner: Receivers, endpoint: Endpoint, listener: socket.socket) -> None:
        self.owner = owner
        self.endpoint = endpoint
        self.protocol = "line"
        self.listen_socket = listener
        self.server = DatagramServer(listener, self._handle)
        self.address = listener.getsockname()
        self.dropped_in_episode = 0

    def _handle(self, data: bytes, address: Any) -> None:
        owner = self.owner
        peer = peer_name(address)
        if not owner.flow.gate.is_set():
            owner.stats.incr("datapoints_dropped", reason="udp_backpressure")
            owner.intake.dropped(peer, "udp_backpressure", data[:SAMPLE_BYTES], "buffer full")
            if not self.dropped_in_episode:
                log.warning("%s: buffer full; dropping UDP datagrams", self.endpoint.text)
            self.dropped_in_episode += 1
            return
        if self.dropped_in_episode:
            log.warning("%s: %d UDP datagrams dropped", self.endpoint.text, self.dropped_in_episode)
            self.dropped_in_episode = 0
        try:
            owner.encoder.add_lines(data, final=True)
        except Exception:
            log.exception("unexpected error decoding a datagram from %s", peer)
        owner.intake.settle(peer)
        owner.decoded()

    def drain(self) -> None:
        """Read the datagrams already queued on the socket, without blocking."""
        sock = self.listen_socket
        if sock.fileno() < 0:
            return
        sock.settimeout(0.0)
        for _ in range(100_000):
            try:
                data, address = sock.recvfrom(UDP_MAX_DATAGRAM)
            except (BlockingIOError, TimeoutError, OSError):
                break
            self._handle(data, address)

    def close(self) -> None:
        self.server.stop_accepting()
        self.drain()
        self.server.close()


class Receivers:
    """Every listener of the process; `start` binds them all or raises `StartupError`."""

    def __init__(
        self,
        config: Config,
        encoder: Any,
        flow: Flow,
        stats: Stats,
        *,
        sockets: dict[str, socket.socket] | None = None,
    ) -> None:
        self.config = config
        self.encoder = encoder
        self.flow = flow
        self.stats = stats
        # Who sent what was dropped: bounded tables read by /debug/senders and /debug/rejects.
        self.senders = Senders()
        self.rejects = RejectLog()
        self.intake = Intake(encoder, self.senders, self.rejects)
        self.open_connections = 0
        self.drain_seconds = 2.0
        self.drain_until = 0.0  # set at stop: connections accepted after it start draining
        self.running: set[Any] = set()  # connection greenlets that have begun running
        self._sockets = sockets or {}  # pre-bound by a supervisor (--workers), by endpoint text
        self.listeners: list[_StreamListener | _UdpListener] = []
        # Every connection's read buffer, counted against --max-buffer-bytes with the outbox.
        self.read_memory = ReadMemory(int(config.max_buffer_bytes))

    def start(self) -> None:
        try:
            for endpoint, protocol in self.config.listeners():
                sock = self._sockets.get(endpoint.text) or bind(endpoint)
                if endpoint.kind == "udp":
                    listener: _StreamListener | _UdpListener = _UdpListener(self, endpoint, sock)
                else:
                    ctx = tls_context(endpoint) if endpoint.kind == "ssl" else None
                    listener = _StreamListener(self, endpoint, protocol, sock, ctx)
                self.listeners.append(listener)
                listener.server.start()
                log.info(
                    "listening on %s (%s%s)",
                    endpoint.describe(),
                    protocol,
                    ", TLS" if endpoint.kind == "ssl" else "",
                )
        except BaseException:
            for listener in self.listeners:
                listener.close()
            self.listeners = []
            raise

    def decoded(self) -> None:
        """After each read's datapoints went into the encoder: full bodies move to the
        forwarder now; else the open bodies grew, and the memory cap is looked at again. With
        many tenants as many bodies are open, and together they would pass the cap long
        before one of them is full."""
        if self.encoder.ready_bodies:
            self.flow.kick()
        else:
            self.flow.recount()

    def addresses(self) -> list[tuple[str, str, Any]]:
        """(kind, protocol, bound address) of every listener: ports chosen by the kernel too."""
        return [(ln.endpoint.kind, ln.protocol, ln.address) for ln in self.listeners]

    def stop(self, deadline: float = 2.0) -> None:
        """Stop accepting, read what open connections already hold, close them."""
        self.drain_seconds = max(0.0, deadline)
        self.drain_until = time.monotonic() + self.drain_seconds
        streams = [ln for ln in self.listeners if isinstance(ln, _StreamListener)]
        # Only greenlets already running get _Drain thrown in: one killed before it starts
        # would never run, and its socket's data would be lost. The others see drain_until.
        running = list(self.running)
        for listener in self.listeners:
            listener.close()
        for g in running:
            g.kill(_Drain, block=False)
        everyone = [g for ln in streams for g in list(ln.pool)]
        if everyone:
            gevent.joinall(everyone, timeout=self.drain_seconds + 0.5)
        for ln in streams:
            ln.pool.kill(block=True, timeout=1.0)
        self.listeners = []
