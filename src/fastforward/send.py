"""`fastforward send`: send test datapoints to a running forwarder (or any carbon receiver).

    fastforward send my.metric 42                       # now, pickle protocol 2, tcp:2004
    fastforward send a.b 1 1700000000 c.d 2.5            # several datapoints, one frame
    printf 'x.y 1 1700000000\\n' | fastforward send -    # `name value [timestamp]` lines
    fastforward send --line -e udp:2003 my.metric 1     # plaintext, over UDP

A TIMESTAMP is told apart from the next NAME by being a number. Plain blocking sockets, no
gevent. Exit codes: 0 sent, 2 bad arguments, 3 could not connect or send.
"""

from __future__ import annotations

import argparse
import pickle
import socket
import ssl
import struct
import sys
import time
from collections.abc import Iterable, Sequence

from .endpoints import Endpoint, parse_endpoint
from .errors import ConfigError

Datapoint = tuple[str, tuple[float, float]]
FRAME_DATAPOINTS = 500  # what carbon-relay puts in one frame


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _as_int(x: float) -> float:
    return int(x) if x.is_integer() else x


def parse_positional(tokens: Sequence[str], now: float) -> list[Datapoint]:
    """NAME VALUE [TIMESTAMP] repeated; raises ValueError with a clear message."""
    out: list[Datapoint] = []
    i = 0
    while i < len(tokens):
        name = tokens[i]
        if i + 1 >= len(tokens):
            raise ValueError(f"{name!r}: a VALUE is missing")
        value = _number(tokens[i + 1])
        if value is None:
            raise ValueError(f"{name!r}: value {tokens[i + 1]!r} is not a number")
        ts = float(now)
        i += 2
        if i < len(tokens) and _number(tokens[i]) is not None:
            ts = float(tokens[i])
            i += 1
        out.append((name, (_as_int(ts), _as_int(value))))
    return out


def parse_lines(lines: Iterable[str], now: float) -> list[Datapoint]:
    out: list[Datapoint] = []
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise ValueError(f"stdin line {n}: expected 'name value [timestamp]', got {line!r}")
        out.extend(parse_positional(fields, now))
    return out


def pickle_frames(datapoints: Sequence[Datapoint], protocol: int = 2) -> bytes:
    """Carbon pickle frames (4-byte big-endian length + payload) of up to 500 datapoints."""
    chunks = []
    for i in range(0, len(datapoints), FRAME_DATAPOINTS):
        payload = pickle.dumps(list(datapoints[i : i + FRAME_DATAPOINTS]), protocol=protocol)
        chunks.append(struct.pack("!L", len(payload)) + payload)
    return b"".join(chunks)


def plaintext(datapoints: Sequence[Datapoint]) -> bytes:
    return "".join(f"{name} {v} {ts}\n" for name, (ts, v) in datapoints).encode()


def _target_host(ep: Endpoint) -> str:
    # A listener's "all interfaces" is reached through the loopback.
    return ep.host if ep.host not in ("", "0.0.0.0", "::") else "127.0.0.1"


def _connect(ep: Endpoint, timeout: float) -> socket.socket:
    if ep.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(ep.path)
        return sock
    host = _target_host(ep)
    sock = socket.create_connection((host, ep.port), timeout=timeout)
    if ep.kind == "ssl":
        # A test tool: the forwarder's certificate is usually self-signed.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock, server_hostname=host)
    return sock


def send(ep: Endpoint, data: bytes, timeout: float = 10.0) -> None:
    """Send the bytes and close; for UDP, one datagram per line group under 8 KiB."""
    if ep.kind == "udp":
        host = _target_host(ep)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            chunk = b""
            for line in data.splitlines(keepends=True):
                if len(chunk) + len(line) > 8192 and chunk:
                    sock.sendto(chunk, (host, ep.port))
                    chunk = b""
                chunk += line
            if chunk:
                sock.sendto(chunk, (host, ep.port))
        return
    with _connect(ep, timeout) as sock:
        sock.sendall(data)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastforward send",
        description="Send test datapoints to a running forwarder over the carbon pickle "
        "protocol (or plaintext with --line).",
        epilog="Examples: `fastforward send my.metric 42`, "
        "`fastforward send a 1 1700000000 b 2`, `printf 'x 1\\n' | fastforward send -`.",
    )
    p.add_argument(
        "datapoints",
        nargs="+",
        metavar="NAME VALUE [TIMESTAMP]",
        help="one or more datapoints; TIMESTAMP defaults to now; '-' reads "
        "'name value [timestamp]' lines from stdin",
    )
    p.add_argument(
        "-e",
        "--endpoint",
        default="tcp:2004",
        help="where the forwarder listens, a Twisted endpoint string (default: tcp:2004, "
        "on 127.0.0.1 when no interface is given; udp: implies --line)",
    )
    p.add_argument("--line", action="store_true", help="send plaintext lines, not pickle")
    p.add_argument(
        "--pickle-protocol",
        type=int,
        default=2,
        choices=range(0, 6),
        help="pickle protocol (default 2, what carbon-relay sends)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    now = time.time()
    try:
        ep = parse_endpoint(args.endpoint)
        if args.datapoints == ["-"]:
            datapoints = parse_lines(sys.stdin, int(now))
        else:
            datapoints = parse_positional(args.datapoints, int(now))
    except (ValueError, ConfigError) as exc:
        print(f"fastforward send: {exc}", file=sys.stderr)
        return 2
    line = args.line or ep.kind == "udp"
    data = plaintext(datapoints) if line else pickle_frames(datapoints, args.pickle_protocol)
    try:
        send(ep, data)
    except OSError as exc:
        print(f"fastforward send: cannot send to {args.endpoint}: {exc}", file=sys.stderr)
        return 3
    if not args.quiet:
        kind = "plaintext" if line else f"pickle protocol {args.pickle_protocol}"
        where = ep.path if ep.kind == "unix" else f"{_target_host(ep)}:{ep.port}"
        count = f"{len(datapoints)} datapoint{'' if len(datapoints) == 1 else 's'}"
        print(f"sent {count} to {ep.kind}:{where} ({kind})")
    return 0
