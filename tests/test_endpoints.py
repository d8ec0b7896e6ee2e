"""Twisted endpoint strings, as users have them in scripts, parse to the listener they mean."""

from __future__ import annotations

import pytest

from fastforward.endpoints import parse_endpoint
from fastforward.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "kind", "host", "port"),
    [
        ("tcp:2004", "tcp", "", 2004),
        ("tcp:port=2004:interface=127.0.0.1", "tcp", "127.0.0.1", 2004),
        ("tcp:2004:interface=127.0.0.1", "tcp", "127.0.0.1", 2004),
        ("tcp:2004:127.0.0.1", "tcp", "127.0.0.1", 2004),
        ("tcp:2004:interface=::1", "tcp", "::1", 2004),
        (r"tcp6:port=2004:interface=\:\:1", "tcp6", "::1", 2004),
        ("tcp6:2004", "tcp6", "::", 2004),
        ("udp:2003", "udp", "", 2003),
        ("udp:port=2003:interface=127.0.0.1", "udp", "127.0.0.1", 2003),
        ("2004", "tcp", "", 2004),
    ],
)
def test_network_endpoints(text: str, kind: str, host: str, port: int) -> None:
    ep = parse_endpoint(text)
    assert (ep.kind, ep.host, ep.port) == (kind, host, port)
    assert ep.text == text


def test_backlog() -> None:
    assert parse_endpoint("tcp:2004:backlog=128").backlog == 128
    assert parse_endpoint("tcp:2004").backlog == 50


def test_unix_positional_and_keyword() -> None:
    ep = parse_endpoint("unix:/run/ff.sock")
    assert (ep.kind, ep.path, ep.mode) == ("unix", "/run/ff.sock", None)
    ep = parse_endpoint("unix:address=/tmp/p.sock:mode=660")
    assert (ep.path, ep.mode) == ("/tmp/p.sock", 0o660)
    assert parse_endpoint(r"unix:/tmp/a\:b.sock").path == "/tmp/a:b.sock"


def test_ssl_endpoint() -> None:
    ep = parse_endpoint("ssl:2004:privateKey=key.pem:certKey=cert.pem")
    assert (ep.kind, ep.port, ep.private_key, ep.cert_key) == ("ssl", 2004, "key.pem", "cert.pem")
    ep = parse_endpoint("ssl:port=2004:privateKey=both.pem:interface=127.0.0.1")
    # Twisted's rule: certKey defaults to privateKey.
    assert (ep.host, ep.private_key, ep.cert_key) == ("127.0.0.1", "both.pem", "both.pem")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("http:80", "unsupported type 'http'"),
        ("tcp:notaport", "port 'notaport' is not an integer"),
        ("tcp:70000", "outside 0..65535"),
        ("tcp:interface=127.0.0.1", "a port is required"),
        ("tcp:2004:bogus=1", "unknown option 'bogus'"),
        ("unix:", "socket path"),
        ("unix:/p:mode=999", "not an octal number"),
        ("tcp:2004:backlog=x", "backlog 'x'"),
        ("tcp:1:2:3:4", "unexpected argument"),
        ("tcp:2004\\", "dangling backslash"),
    ],
)
def test_bad_endpoints_name_the_string(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_endpoint(text)
    assert needle in str(info.value)
    if text:
        assert repr(text.strip()) in str(info.value)
