"""Twisted endpoint strings (as users have them in scripts today) to listener specs.

Supported: ``tcp:``, ``tcp6:``, ``unix:``, ``udp:`` and ``ssl:``, with positional or keyword
arguments, ``\\:`` escapes, and unescaped IPv6 addresses in a keyword value
(``tcp:2004:interface=::1``). Anything else raises `ConfigError` naming the string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["Endpoint", "parse_endpoint"]

# Positional argument order of each type, as Twisted's parsers take them.
_POSITIONAL: dict[str, tuple[str, ...]] = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "interface", "backlog"),
    "udp": ("port", "interface"),
    "unix": ("address", "mode", "backlog", "lockfile"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface", "backlog"),
}
_KEYWORDS: dict[str, frozenset[str]] = {
    "tcp": frozenset({"port", "interface", "backlog"}),
    "tcp6": frozenset({"port", "interface", "backlog"}),
    "udp": frozenset({"port", "interface"}),
    "unix": frozenset({"address", "mode", "backlog", "lockfile", "wantPID"}),
    "ssl": frozenset(
        {
            "port",
            "privateKey",
            "certKey",
            "sslmethod",
            "interface",
            "backlog",
            "extraCertChain",
            "dhParameters",
        }
    ),
}
_KEYWORD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)=")


@dataclass(frozen=True)
class Endpoint:
    """One listener: ``kind`` is ``tcp``, ``tcp6``, ``udp``, ``unix`` or ``ssl``."""

    kind: str
    text: str
    host: str = ""
    port: int = 0
    path: str = ""
    mode: int | None = None
    backlog: int = 50
    private_key: str = ""
    cert_key: str = ""

    @property
    def stream(self) -> bool:
        """True for connection-oriented listeners (everything but UDP)."""
        return self.kind != "udp"

    @property
    def ipv6(self) -> bool:
        return self.kind == "tcp6" or ":" in self.host

    def describe(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = self.host or ("::" if self.ipv6 else "0.0.0.0")
        if ":" in host:
            host = f"[{host}]"
        return f"{self.kind}:{host}:{self.port}"


def _split(text: str) -> list[str]:
    """Split on unescaped colons; a backslash escapes the next character (Twisted rules)."""
    parts: list[str] = []
    cur: list[str] = []
    it = iter(text)
    for ch in it:
        if ch == "\\":
            nxt = next(it, None)
            if nxt is None:
                raise ConfigError(f"endpoint {text!r}: dangling backslash at the end")
            cur.append(nxt)
        elif ch == ":":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _raw_pieces(text: str) -> list[tuple[str, bool]]:
    """Pieces with a flag saying whether the piece starts with an unescaped ``key=``."""
    out: list[tuple[str, bool]] = []
    for piece in _split(text):
        out.append((piece, bool(_KEYWORD_RE.match(piece))))
    return out


def _int(text: str, what: str, value: str, lo: int, hi: int) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise ConfigError(f"endpoint {text!r}: {what} {value!r} is not an integer") from None
    if not lo <= n <= hi:
        raise ConfigError(f"endpoint {text!r}: {what} {n} is outside {lo}..{hi}")
    return n


def parse_endpoint(text: str) -> Endpoint:
    """Parse one Twisted server endpoint string; raise `ConfigError` naming it when unusable."""
    text = text.strip()
    if not text:
        raise ConfigError("endpoint: empty string")
    pieces = _raw_pieces(text)
    kind = pieces[0][0].lower()
    if kind not in _POSITIONAL:
        if kind.isdigit() and len(pieces) == 1:  # a bare port, as `-e 2004`
            kind, pieces = "tcp", [("tcp", False), *pieces]
        else:
            raise ConfigError(
                f"endpoint {text!r}: unsupported type {pieces[0][0]!r} "
                "(use tcp:, tcp6:, unix:, udp: or ssl:)"
            )
    args: dict[str, str] = {}
    positional = list(_POSITIONAL[kind])
    last_key: str | None = None
    for piece, is_kw in pieces[1:]:
        if is_kw and piece.split("=", 1)[0] in _KEYWORDS[kind]:
            key, value = piece.split("=", 1)
            if key in args:
                raise ConfigError(f"endpoint {text!r}: {key} given twice")
            args[key] = value
            last_key = key
        elif last_key is not None:
            # An unescaped colon inside a keyword value, e.g. interface=::1.
            args[last_key] += ":" + piece
        elif is_kw:
            raise ConfigError(
                f"endpoint {text!r}: unknown option {piece.split('=', 1)[0]!r} for {kind}: "
                f"(known: {', '.join(sorted(_KEYWORDS[kind]))})"
            )
        elif positional:
            key = positional.pop(0)
            if key in args:
                raise ConfigError(f"endpoint {text!r}: {key} given twice")
            args[key] = piece
        else:
            raise ConfigError(f"endpoint {text!r}: unexpected argument {piece!r}")

    backlog = _int(text, "backlog", args["backlog"], 1, 65535) if "backlog" in args else 50
    if kind == "unix":
        path = args.get("address", "")
        if not path:
            raise ConfigError(f"endpoint {text!r}: unix needs a socket path")
        mode = None
        if "mode" in args:
            try:
                mode = int(args["mode"], 8)
            except ValueError:
                raise ConfigError(
                    f"endpoint {text!r}: mode {args['mode']!r} is not an octal number"
                ) from None
        return Endpoint(kind=kind, text=text, path=path, mode=mode, backlog=backlog)

    if "port" not in args or args["port"] == "":
        raise ConfigError(f"endpoint {text!r}: a port is required")
    port = _int(text, "port", args["port"], 0, 65535)
    host = args.get("interface", "")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if kind == "tcp6" and not host:
        host = "::"
    private_key = cert_key = ""
    if kind == "ssl":
        # Twisted's defaults: privateKey=server.pem, certKey=privateKey.
        private_key = args.get("privateKey") or "server.pem"
        cert_key = args.get("certKey") or private_key
    return Endpoint(
        kind=kind,
        text=text,
        host=host,
        port=port,
        backlog=backlog,
        private_key=private_key,
        cert_key=cert_key,
    )
