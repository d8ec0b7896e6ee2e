"""gevent listeners: pickle and plaintext over TCP / UNIX / TLS, plaintext over UDP.

Each stream connection runs in its own greenlet from a per-listener `Pool` of
``max_connections``; a connection beyond the cap is closed at once and counted rather than
left waiting in the kernel's accept queue (carbon#428: a paused accept starves everyone).

Reads go into one growing ``bytearray`` per connection through ``recv_into`` on a memoryview,
and frames are handed to the codec as memoryview slices: no copy per frame. The unread tail is
moved to the front only when the buffer is full.

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
import stat
import struct
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import DatagramServer, StreamServer

from ._codec_rules import LOOKS_LIKE_PLAINTEXT, looks_like_plaintext
from .attribution import Intake, RejectLog, Senders, host_of
from .config import Config
from .endpoints import Endpoint
from .errors import FrameError, StartupError
from .protocols import Flow
from .stats import Stats

__all__ = ["Receivers", "StartupError"]

log = logging.getLogger(__name__)

# A connection starts small (a thousand idle relays must not cost 256 MiB) and its buffer
# doubles while reads fill it, up to READ_BUFFER, where one recv takes ~8 frames of 500.
INITIAL_BUFFER = 16 * 1024
READ_BUFFER = 256 * 1024
MAX_LINE_BYTES = 65_536
SAMPLE_BYTES = 64  # of a refused, oversize or truncated frame, for the log and /debug/rejects
PLAINTEXT_HINT = f"{LOOKS_LIKE_PLAINTEXT}: use --protocol line or --line-endpoint"
UDP_MAX_DATAGRAM = 65_535
# Closing a connection on purpose (shutdown drain, --max-connection-age), see `_recv_closing`:
# FIN once the sender pauses this long; a sender that reads then closes its side, one that
# never reads (carbon-c-relay) is reset at its next pause, so its next write() fails.
QUIET_GAP = 0.05
FIN_WAIT = 1.0  # longest wait for a pause before the FIN anyway (a sender that never pauses)
FIN_GRACE = 0.5  # a sender that reads has this long to answer our FIN before a gap counts
AGED_CLOSE_SECONDS = 5.0  # bound on closing one aged connection (time spent waiting for it)
_unpack_len = struct.Struct("!I").unpack_from


class _Drain(BaseException):
    """Thrown into connection greenlets at shutdown: read what is buffered, then close."""


def _wait_for_room(gate: Event) -> None:
    """Block while the gate is closed. A gevent Event releases every waiter on set(), even if
    it is cleared again before they run (a resume right before the next pause), so check again:
    otherwise a crowd of paused connections would all slip through at once."""
    while not gate.is_set():
        gate.wait()


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in str(host) else f"{host}:{address[1]}"
    return str(address) or "unix"


def age_deadline(max_age: float, now: float, rng: random.Random | None = None) -> float:
    """When a connection opened at `now` is closed by --max-connection-age; 0.0 for never.

    Jittered by +-10% per connection, so senders that a fleet accepted together do not all
    reconnect (and pile onto one instance) at the same moment.
    """
    if max_age <= 0:
        return 0.0
    return now + max_age * (rng or random).uniform(0.9, 1.1)


class _Conn:
    """State of one stream connection."""

    __slots__ = (
        "sock",
        "peer",
        "buf",
        "mv",
        "start",
        "end",
        "drain_until",
        "age_at",
        "closing_at",
        "fin_at",
        "age_budget",
        "eof",
        "reset",
    )

    def __init__(self, sock: Any, peer: str, size: int) -> None:
        self.sock = sock
        self.peer = peer
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.drain_until = 0.0  # > 0 once closing began (shutdown or age): the deadline
        self.age_at = 0.0  # --max-connection-age: when closing begins; 0 = never
        self.closing_at = 0.0  # when closing began
        self.fin_at = 0.0  # when we sent FIN
        self.age_budget = 0.0  # ageing: seconds left to wait for the sender while closing
        self.eof = False  # the sender closed its side
        self.reset = False  # close with RST, not FIN (a sender that does not read)

    def make_room(self, need: int) -> None:
        """Make sure `need` bytes from `start` fit; move the tail down or grow the buffer."""
        size = len(self.buf)
        pending = self.end - self.start
        if need <= size and self.start > 0 and (self.end == size or self.start + need > size):
            self.buf[:pending] = bytes(self.mv[self.start : self.end])  # occasional
        elif need > size:
            new = bytearray(max(need, min(size * 2, need * 2)))
            new[:pending] = self.mv[self.start : self.end]
            self.mv.release()
            self.buf = new
            self.mv = memoryview(new)
        else:
            return
        self.start, self.end = 0, pending

    def grow(self) -> None:
        """A read filled the buffer: the sender is fast, so read bigger chunks (fewer recvs)."""
        if len(self.buf) < READ_BUFFER:
            self.make_room(min(READ_BUFFER, 2 * len(self.buf)))

    def shrink(self) -> None:
        """After a frame larger than the read buffer, give the memory back once it is empty."""
        if len(self.buf) > READ_BUFFER and self.start == self.end:
            self.mv.release()
            self.buf = bytearray(READ_BUFFER)
            self.mv = memoryview(self.buf)
            self.start = self.end = 0


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
                    _peer(address),
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
        peer = _peer(address) if self.endpoint.kind != "unix" else f"unix:{self.endpoint.path}"
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
            conn = _Conn(sock, peer, INITIAL_BUFFER)
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
            owner.running.discard(me)
            owner.open_connections -= 1
            stats.set("connections_open", owner.open_connections)
            try:
                if conn is not None and conn.reset:
                    _set_abortive_close(sock)
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
                # No pause within the bound: a reset still tells the sender something failed.
                conn.reset = True
                return 0
            if not conn.fin_at and now >= conn.closing_at + FIN_WAIT:
                self._send_fin(conn)
            sock.settimeout(min(remaining, QUIET_GAP))
            try:
                n: int = sock.recv_into(conn.mv[conn.end :])
            except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
                if conn.end > conn.start and self._mid_record(conn):
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

    def _send_fin(self, conn: _Conn) -> None:
        conn.fin_at = time.monotonic()
        if not isinstance(conn.sock, ssl.SSLSocket):  # a TLS half-close would end reading too
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _mid_record(self, conn: _Conn) -> bool:
        """Whether the unread bytes end inside a pickle frame or a line."""
        if self.protocol == "pickle":
            return True  # a decoded pickle buffer keeps only an incomplete frame
        return conn.buf[conn.end - 1] != 0x0A

    def _serve_pickle(self, conn: _Conn) -> None:
        owner = self.owner
        encoder = owner.encoder
        stats = owner.stats
        max_frame = owner.config.max_frame_bytes
        need = 4  # bytes from conn.start needed to make progress
        while True:
            if conn.end == len(conn.buf) or conn.start + need > len(conn.buf):
                conn.make_room(need)
            n = self._recv(conn)
            if not n:
                break
            filled = conn.end + n == len(conn.buf)
            conn.end += n
            buf, mv = conn.buf, conn.mv
            ok = 0
            while conn.end - conn.start >= 4:
                # Hand full bodies over frame by frame, and stop decoding while the outbox is
                # at its cap: neither one big read nor many connections that each got their
                # read in before the gate closed may overshoot --max-buffer-bytes.
                if encoder.ready_bodies:
                    owner.flow.kick()
                # (At shutdown the forwarder is draining anyway: no wait.)
                if not owner.drain_until and not owner.flow.gate.is_set():
                    owner.intake.settle(conn.peer)  # before other connections run
                    _wait_for_room(owner.flow.gate)
                (length,) = _unpack_len(buf, conn.start)
                if length > max_frame:
                    stats.incr("frames_received", ok, result="ok")
                    self._oversize(conn, length, max_frame)
                    return
                stop = conn.start + 4 + length
                if stop > conn.end:
                    need = 4 + length
                    break
                frame = mv[conn.start + 4 : stop]
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
            else:
                need = 4
            owner.intake.settle(conn.peer)
            if ok:
                stats.incr("frames_received", ok, result="ok")
            if conn.start == conn.end:
                conn.start = conn.end = 0
                conn.shrink()
            if filled:
                conn.grow()
            if encoder.ready_bodies:
                owner.flow.kick()
        leftover = conn.end - conn.start
        if leftover:
            stats.incr("frames_received", result="truncated")
            stats.incr("datapoints_dropped", reason="truncated_frame")
            head = bytes(conn.mv[conn.start : min(conn.end, conn.start + SAMPLE_BYTES)])
            detail = f"the connection closed in the middle of a frame; {leftover} bytes discarded"
            if looks_like_plaintext(head):  # only with a --max-frame-bytes of 512 MiB or more
                detail += "; " + PLAINTEXT_HINT
            owner.intake.dropped(conn.peer, "truncated_frame", head, detail)

    def _oversize(self, conn: _Conn, length: int, max_frame: int) -> None:
        stats = self.owner.stats
        stats.incr("frames_received", result="oversize")
        stats.incr("datapoints_dropped", reason="oversize_frame")
        head = bytes(conn.mv[conn.start : min(conn.end, conn.start + SAMPLE_BYTES)])
        if looks_like_plaintext(head):
            detail = PLAINTEXT_HINT
        else:
            detail = f"frame of {length} bytes over --max-frame-bytes {max_frame}"
        self.owner.intake.dropped(conn.peer, "oversize_frame", head, detail + "; connection closed")

    def _bad_frame(self, conn: _Conn, frame: memoryview, exc: FrameError) -> None:
        # Counted as bad_frame by the codec (and settled to this sender); here the sample.
        self.owner.stats.incr("frames_received", result="bad")
        self.owner.rejects.record("bad_frame", conn.peer, bytes(frame[:SAMPLE_BYTES]), 1, str(exc))

    def _serve_lines(self, conn: _Conn) -> None:
        owner = self.owner
        encoder = owner.encoder
        stats = owner.stats
        skipping = False  # inside an over-long line, dropping bytes up to its newline
        while True:
            if conn.end == len(conn.buf):
                conn.make_room(len(conn.buf))
            n = self._recv(conn)
            if not n:
                break
            filled = conn.end + n == len(conn.buf)
            conn.end += n
            if skipping:
                nl = conn.buf.find(b"\n", conn.start, conn.end)
                if nl < 0:
                    conn.start = conn.end = 0
                    continue
                conn.start = nl + 1
                skipping = False
            if conn.end > conn.start:
                view = conn.mv[conn.start : conn.end]
                try:
                    conn.start += encoder.add_lines(view)
                finally:
                    view.release()
                owner.intake.settle(conn.peer)
            if conn.end - conn.start > MAX_LINE_BYTES:
                stats.incr("datapoints_dropped", reason="line_too_long")
                head = bytes(conn.mv[conn.start : conn.start + SAMPLE_BYTES])
                detail = f"line over {MAX_LINE_BYTES} bytes"
                owner.intake.dropped(conn.peer, "line_too_long", head, detail)
                conn.start = conn.end = 0
                skipping = True
            if conn.start == conn.end:
                conn.start = conn.end = 0
            if filled:
                conn.grow()
            if encoder.ready_bodies:
                owner.flow.kick()
        if conn.end > conn.start and not skipping:
            if conn.drain_until and not conn.eof:
                # Cut by our close, not ended by the sender: the line may be incomplete.
                stats.incr("datapoints_dropped", reason="truncated_line")
                head = bytes(conn.mv[conn.start : min(conn.end, conn.start + SAMPLE_BYTES)])
                owner.intake.dropped(conn.peer, "truncated_line", head, "cut by the stop")
            else:
                view = conn.mv[conn.start : conn.end]
                try:
                    encoder.add_lines(view, final=True)
                finally:
                    view.release()
                owner.intake.settle(conn.peer)
        conn.start = conn.end = 0
        if encoder.ready_bodies:
            owner.flow.kick()

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
        peer = _peer(address)
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
        if owner.encoder.ready_bodies:
            owner.flow.kick()

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


def _set_abortive_close(sock: Any) -> None:
    """Make close() send RST (SO_LINGER 0) instead of FIN; see `_recv_closing`."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind(endpoint: Endpoint) -> socket.socket:
    """Create and bind the listening socket of an endpoint; `StartupError` on failure."""
    try:
        if endpoint.kind == "unix":
            return _bind_unix(endpoint)
        host = endpoint.host or ("::" if endpoint.kind == "tcp6" else "0.0.0.0")
        if endpoint.kind == "udp":
            sock = socket.socket(_family(host), socket.SOCK_DGRAM)
            try:
                sock.bind((host, endpoint.port))
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, endpoint.port))
            sock.listen(endpoint.backlog)
        except BaseException:
            sock.close()
            raise
        return sock
    except OSError as exc:
        raise StartupError(f"cannot listen on {endpoint.text!r}: {exc.strerror or exc}") from None


def _bind_unix(endpoint: Endpoint) -> socket.socket:
    path = endpoint.path
    try:
        st = os.stat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise StartupError(f"cannot listen on {endpoint.text!r}: {path} exists, not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale socket of a process that is gone
        else:
            raise StartupError(f"cannot listen on {endpoint.text!r}: another process listens")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if endpoint.mode is not None:
            os.chmod(path, endpoint.mode)
        sock.listen(endpoint.backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """A server context from the endpoint's certKey / privateKey files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(endpoint.cert_key, endpoint.private_key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot listen on {endpoint.text!r}: certificate {endpoint.cert_key!r} / key "
            f"{endpoint.private_key!r}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    return ctx


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
