"""Listening sockets: what `bind` does with ports, UNIX socket files and certificates."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from fastforward.endpoints import parse_endpoint
from fastforward.errors import StartupError
from fastforward.sockets import bind, peer_name, tls_context

pytestmark = pytest.mark.integration  # real sockets, on loopback only


def test_tcp_binds_and_listens_on_the_port_the_kernel_chose() -> None:
    sock = bind(parse_endpoint("tcp:port=0:interface=127.0.0.1"))
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        with socket.create_connection((host, port), timeout=5):
            pass  # accepted into the backlog: it listens
    finally:
        sock.close()


def test_udp_binds_a_datagram_socket() -> None:
    sock = bind(parse_endpoint("udp:port=0:interface=127.0.0.1"))
    try:
        assert sock.type == socket.SOCK_DGRAM
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.sendto(b"a.b 1 1700000000\n", sock.getsockname())
        sender.close()
        sock.settimeout(5)
        assert sock.recv(100) == b"a.b 1 1700000000\n"
    finally:
        sock.close()


def test_a_busy_port_is_a_startup_error_naming_the_endpoint() -> None:
    first = bind(parse_endpoint("tcp:port=0:interface=127.0.0.1"))
    try:
        port = first.getsockname()[1]
        text = f"tcp:port={port}:interface=127.0.0.1"
        with pytest.raises(StartupError, match=f"cannot listen on '{text}'"):
            bind(parse_endpoint(text))
    finally:
        first.close()


def test_unix_socket_gets_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "carbon.sock"
    sock = bind(parse_endpoint(f"unix:address={path}:mode=640"))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        sock.close()


def test_stale_unix_socket_of_a_gone_process_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "carbon.sock"
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.bind(str(path))
    gone.close()  # the file stays behind, nobody listens
    sock = bind(parse_endpoint(f"unix:address={path}"))
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))  # the new socket answers
        client.close()
    finally:
        sock.close()


def test_unix_socket_of_a_live_listener_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "carbon.sock"
    live = bind(parse_endpoint(f"unix:address={path}"))
    try:
        with pytest.raises(StartupError, match="another process listens"):
            bind(parse_endpoint(f"unix:address={path}"))
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    finally:
        live.close()


def test_a_regular_file_in_the_way_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "carbon.sock"
    path.write_text("precious")
    with pytest.raises(StartupError, match="exists, not a socket"):
        bind(parse_endpoint(f"unix:address={path}"))
    assert path.read_text() == "precious"


def test_missing_certificate_is_a_startup_error_naming_both_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    endpoint = parse_endpoint(f"ssl:port=0:privateKey={key}:certKey={cert}")
    with pytest.raises(StartupError) as info:
        tls_context(endpoint)
    assert str(cert) in str(info.value) and str(key) in str(info.value)


@pytest.mark.parametrize(
    ("address", "shown"),
    [(("10.0.0.1", 2004), "10.0.0.1:2004"), (("::1", 2004, 0, 0), "[::1]:2004"), ("", "unix")],
)
def test_peer_names(address: object, shown: str) -> None:
    assert peer_name(address) == shown
