"""Listening sockets: bind an endpoint (tcp, tcp6, udp, unix) and build its TLS context.

Used by the receivers and, before any worker starts, by the supervisor (``--workers``), so a
port that is taken or a bad certificate fails the start once, with exit status 3. Nothing here
imports gevent: under gevent these are the patched sockets, which is what the listeners need.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import struct

from .endpoints import Endpoint
from .errors import StartupError

__all__ = ["bind", "peer_name", "set_abortive_close", "tls_context"]


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


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_unix(endpoint: Endpoint) -> socket.socket:
    """Bind a UNIX socket, replacing the stale socket file of a process that is gone (but
    never a regular file, nor the socket of a process that still listens)."""
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


def peer_name(address: object) -> str:
    """A sender's address as logs and /debug/senders show it: ``host:port``, ``[v6]:port``."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in str(host) else f"{host}:{address[1]}"
    return str(address) or "unix"


def set_abortive_close(sock: socket.socket) -> None:
    """Make close() send RST (SO_LINGER 0) instead of FIN: the sender's next write fails."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
