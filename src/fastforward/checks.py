"""The rules one setting's value must follow, each an `options.Check`: ``(option name, value)``
to the value to keep (normalised: ``line`` -> ``MetricLineReceiver``), or a `ConfigError` whose
message names the option and the value as the user gave it.

`config.Config` attaches them to its fields; the rules between fields (a tenant unless dry
run, --key or --password with --user) are `config.validate`'s.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .endpoints import parse_endpoint
from .errors import ConfigError
from .options import Check

MAX_BODY_BYTES = 1_048_576  # Blueflood answers 413 above this
PROTOCOLS = {
    "metricpicklereceiver": "MetricPickleReceiver",
    "pickle": "MetricPickleReceiver",
    "metriclinereceiver": "MetricLineReceiver",
    "line": "MetricLineReceiver",
    "plaintext": "MetricLineReceiver",
}
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "critical")


def between(lo: float, hi: float) -> Check:
    """A check refusing values outside [lo, hi], naming the option and the value."""
    return _bounds(lo, hi)


def at_least(lo: float) -> Check:
    """A check refusing values under lo, naming the option and the value."""
    return _bounds(lo, None)


def _bounds(lo: float, hi: float | None) -> Check:
    def check(name: str, value: Any) -> Any:
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ConfigError(f"--{name} {value!r}: must be {bound}")
        return value

    return check


def protocol(_name: str, value: Any) -> str:
    """The receiver class name of the original, also from ``pickle`` or ``line``."""
    proto = PROTOCOLS.get(str(value).strip().lower())
    if proto is None:
        raise ConfigError(f"--protocol {value!r}: use MetricPickleReceiver or MetricLineReceiver")
    return proto


def endpoints(_name: str, value: list[str]) -> list[str]:
    """Every string a Twisted endpoint that fastforward can listen on."""
    for text in value:
        parse_endpoint(text)  # raises ConfigError naming the string
    return value


def admin_endpoint(_name: str, value: str) -> str:
    """Empty (off), or a TCP endpoint: the admin server speaks HTTP."""
    if value and parse_endpoint(value).kind not in ("tcp", "tcp6"):
        raise ConfigError(f"--admin-endpoint {value!r}: must be tcp: or tcp6:")
    return value


def blueflood(_name: str, value: Any) -> str:
    """`blueflood_url` as a check."""
    return blueflood_url(str(value))


MAX_TENANT_BYTES = 255
TAG_POLICIES = ("keep", "strip", "flatten")


def tenant_problem(tenant: str) -> str | None:
    """Why Blueflood cannot use this tenant id, or None when it can.

    The tenant is one segment of the ingest URL and the first part of Blueflood's storage key
    ``tenant.metric``: the one rule for ``--tenant`` and for the tenants of a rules file.
    """
    if not tenant:
        return "is empty"
    if any(c in tenant for c in "/.?#%") or any(c.isspace() for c in tenant):
        return "must not contain '/', '.', '?', '#', '%' or whitespace"
    if len(tenant.encode()) > MAX_TENANT_BYTES:
        return f"is longer than {MAX_TENANT_BYTES} bytes"
    return None


def tenant(name: str, value: Any) -> str:
    """Empty (not given), or a tenant id `tenant_problem` accepts."""
    text = str(value).strip()
    problem = tenant_problem(text) if text else None
    if problem:
        shown = text if len(text) <= 40 else text[:20] + "..."
        raise ConfigError(f"--{name.replace('_', '-')} {shown!r}: {problem}")
    return text


def tag_policy(name: str, value: Any) -> str:
    """One of `TAG_POLICIES`, in lower case."""
    text = str(value).strip().lower()
    if text not in TAG_POLICIES:
        raise ConfigError(f"--{name} {value!r}: use one of {', '.join(TAG_POLICIES)}")
    return text


def readable_file(name: str, value: Any) -> str:
    """Empty (off), or a path; whether it can be read and used is checked when it is loaded."""
    return str(value).strip()


def body_limit(_name: str, value: int) -> int:
    """0 (the safe maximum) or a byte count Blueflood accepts."""
    if value < 0:
        raise ConfigError(f"--limit {value!r}: must be 0 (1,000,000) or a byte count")
    if value > MAX_BODY_BYTES:
        raise ConfigError(
            f"--limit {value!r}: Blueflood refuses bodies over {MAX_BODY_BYTES} bytes"
        )
    return value


def http_url(name: str, value: Any) -> str:
    """An http:// or https:// URL (the identity service's)."""
    if not str(value).startswith(("http://", "https://")):
        raise ConfigError(f"--{name} {value!r}: not an http(s) URL")
    return str(value)


def workers(_name: str, value: Any) -> str:
    """A positive count of worker processes, or ``auto`` (one per CPU)."""
    text = str(value).strip().lower()
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise ConfigError(f"--workers {value!r}: a positive number or 'auto'")
    return text


def log_level(_name: str, value: Any) -> str:
    """One of `LOG_LEVELS`, in lower case."""
    level = str(value).strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"--log-level {value!r}: use one of {', '.join(LOG_LEVELS)}")
    return level


# A scheme-less host[:port], as the original docker image's default `localhost:19000`.
_BARE_HOST = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
# A path that already holds the API part fastforward appends (/v2.0/TENANT/ingest).
_API_PATH = re.compile(r"/v\d+(?:\.\d+)?(?:/|$)|/ingest(?:/|$)")


def blueflood_url(raw: str) -> str:
    """The normalised --blueflood base URL (scheme, host, port, optional proxy path), or
    ConfigError naming what is wrong with it; "-" (dry run) passes through."""
    text = raw.strip()
    if text == "-":
        return text
    shown = f"--blueflood {raw!r}"
    if any(c.isspace() for c in text):
        raise ConfigError(f"{shown}: contains spaces")
    if "://" not in text:
        text = text.rstrip("/")
        if not _BARE_HOST.fullmatch(text):
            raise ConfigError(f"{shown}: not a URL; expected http://HOST:PORT (no '://' in it)")
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"{shown}: the scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise ConfigError(f"{shown}: no host name; expected {scheme}://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rsplit(":", 1)[-1]
        raise ConfigError(f"{shown}: port {port_text!r} is not a number from 1 to 65535") from None
    if port == 0 or parts.netloc.endswith(":"):
        raise ConfigError(f"{shown}: the port is missing or 0")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ConfigError(f"{shown}: a base URL has no query or fragment")
    path = parts.path.rstrip("/")
    if _API_PATH.search(path):
        raise ConfigError(
            f"{shown}: give the base URL only ({scheme}://HOST:PORT); fastforward appends "
            f"/v2.0/TENANT/ingest itself, so the path {parts.path!r} would double it"
        )
    return urlunsplit((scheme, parts.netloc, path, "", ""))
