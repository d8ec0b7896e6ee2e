"""The option table, the `Config` dataclass, and the merge of command line, environment and INI.

ONE table (`OPTIONS`) describes every option: its long name, short flag, type, default,
environment variable, help text and section. The argparse parser, the INI reader, the
environment reader and the ``--help`` page are all generated from it, so they cannot drift.

Precedence, highest first: command line, environment (``FASTFORWARD_<NAME>``), config file
(``-c``), defaults. The original twistd plugin let the config file override the command line;
we follow the usual convention instead, and ``--help`` says so.

No I/O happens here apart from reading the config file; no gevent, no sockets.
"""

from __future__ import annotations

import argparse
import configparser
import difflib
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .endpoints import Endpoint, parse_endpoint
from .errors import ConfigError

__all__ = [
    "INI_SECTION",
    "OPTIONS",
    "Config",
    "Loaded",
    "Option",
    "UsageError",
    "help_text",
    "load",
]

INI_SECTION = "blueflood_carbon_forwarder"
ENV_PREFIX = "FASTFORWARD_"
DEFAULT_AUTH_URL = "https://identity.api.rackspacecloud.com/v2.0/tokens"
SAFE_BODY_BYTES = 1_000_000  # what --limit 0 means: under Blueflood's 1 MiB content cap
MAX_BODY_BYTES = 1_048_576  # Blueflood answers 413 above this
PROTOCOLS = {
    "metricpicklereceiver": "MetricPickleReceiver",
    "pickle": "MetricPickleReceiver",
    "metriclinereceiver": "MetricLineReceiver",
    "line": "MetricLineReceiver",
    "plaintext": "MetricLineReceiver",
}
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "critical")
# FASTFORWARD_* names that are not options but are known: the build switches of setup.py and
# codec.py, compression.py's choice of gzip, the Docker build argument, and the variables of
# the test suite (a prefix).
INTERNAL_ENV = frozenset(
    {
        "FASTFORWARD_REQUIRE_EXTENSION",
        "FASTFORWARD_NO_EXTENSIONS",
        "FASTFORWARD_GZIP_IMPLEMENTATION",
        "FASTFORWARD_VERSION",
    }
)
INTERNAL_ENV_PREFIX = "FASTFORWARD_TEST_"


class UsageError(ConfigError):
    """The command line itself is malformed (unknown option, missing value): exit code 2."""


def _attach(exc: ConfigError, warnings: list[str]) -> ConfigError:
    """Keep the warnings gathered so far on a refusal: a misspelt name is often its cause."""
    exc.warnings = list(warnings)  # type: ignore[attr-defined]
    return exc


def _did_you_mean(name: str, candidates: Sequence[str], show: Any = str) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {show(close[0])}?)" if close else ""


@dataclass(frozen=True)
class Option:
    """One row of the option table."""

    name: str  # long name with underscores; also the Config field and the INI key
    short: str | None
    kind: str  # "str", "int", "float", "bool", "list"
    default: Any
    help: str
    section: str
    metavar: str | None = None
    field: bool = True  # False: a command-line switch that is not a Config field
    env: bool = True

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flags(self) -> list[str]:
        out = [f"-{self.short}"] if self.short else []
        out.append(f"--{self.name}")
        if "_" in self.name:
            out.append("--" + self.name.replace("_", "-"))
        return out


SECTIONS = (
    ("listening", "Listening"),
    ("blueflood", "Blueflood"),
    ("auth", "Authentication (Keystone / Rackspace Identity v2.0)"),
    ("limits", "Limits"),
    ("reliability", "Reliability and observability"),
    ("logging", "Logging"),
    ("compatibility", "Compatibility with twistd (accepted, mostly no-ops)"),
)

_O = Option
OPTIONS: tuple[Option, ...] = (
    # listening
    _O(
        "endpoint",
        "e",
        "list",
        ["tcp:2004"],
        "Twisted endpoint string to listen on with --protocol; repeatable (tcp:PORT, "
        "tcp:port=PORT:interface=ADDR, tcp6:, unix:PATH, udp:PORT, "
        "ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem). In the environment and the config file, "
        "several endpoints are separated by commas.",
        "listening",
        "ENDPOINT",
    ),
    _O(
        "protocol",
        None,
        "str",
        "MetricPickleReceiver",
        "Protocol of the --endpoint listeners: MetricPickleReceiver (carbon pickle, what "
        "carbon-relay sends) or MetricLineReceiver (plaintext lines); 'pickle' and 'line' "
        "also work.",
        "listening",
        "CLASS",
    ),
    _O(
        "line_endpoint",
        None,
        "list",
        [],
        "Extra plaintext listener (tcp:2003, udp:2003, ...), on top of --endpoint; repeatable.",
        "listening",
        "ENDPOINT",
    ),
    _O(
        "config",
        "c",
        "str",
        "",
        "INI config file; only its [blueflood_carbon_forwarder] section is read, with the long "
        "option names as keys (the original's example.conf works as is).",
        "listening",
        "FILE",
        field=False,
    ),
    # blueflood
    _O(
        "blueflood",
        "b",
        "str",
        "http://localhost:19000",
        "Blueflood ingest URL (scheme, host, port); bodies are POSTed to "
        "URL/v2.0/TENANT/ingest. '-' is a dry run: bodies are written to stdout.",
        "blueflood",
        "URL",
    ),
    _O(
        "tenant",
        "t",
        "str",
        "",
        "Blueflood tenant ID (required unless dry run).",
        "blueflood",
        "TENANT",
    ),
    _O(
        "metric_prefix",
        "p",
        "str",
        "",
        "Prefix metric names with this string and a dot before sending them.",
        "blueflood",
        "PREFIX",
    ),
    _O(
        "ttl",
        None,
        "int",
        86400,
        "TTL of the metrics in Blueflood, seconds.",
        "blueflood",
        "SECONDS",
    ),
    _O(
        "interval",
        "i",
        "float",
        30.0,
        "Seconds between flushes; a full body is sent at once without waiting.",
        "blueflood",
        "SECONDS",
    ),
    _O(
        "limit",
        None,
        "int",
        0,
        "Maximum JSON body size, bytes; 0 means 1,000,000 (the original: no limit). Blueflood "
        "refuses bodies over 1,048,576, so more is refused here.",
        "blueflood",
        "BYTES",
    ),
    _O(
        "max_body_datapoints",
        None,
        "int",
        5000,
        "Maximum datapoints in one body.",
        "blueflood",
        "N",
    ),
    _O(
        "overwrite_collection_timestamp",
        None,
        "bool",
        False,
        "Replace each metric's timestamp with the time it was received.",
        "blueflood",
        None,
    ),
    _O("gzip", None, "bool", False, "Compress bodies (Content-Encoding: gzip).", "blueflood", None),
    _O("concurrency", None, "int", 4, "POST requests in flight at once.", "blueflood", "N"),
    _O(
        "request_timeout",
        None,
        "float",
        30.0,
        "Timeout of one POST, seconds.",
        "blueflood",
        "SECONDS",
    ),
    _O(
        "dry_run",
        None,
        "bool",
        False,
        "Same as -b -: write the bodies to stdout, POST nothing.",
        "blueflood",
        None,
        field=False,
    ),
    # auth
    _O(
        "user",
        "u",
        "str",
        "",
        "Identity user name; leave empty when Blueflood needs no authentication.",
        "auth",
        "USER",
    ),
    _O(
        "key",
        "k",
        "str",
        "",
        "Identity API key (RAX-KSKEY:apiKeyCredentials). Prefer the config file or "
        "FASTFORWARD_KEY: a key on the command line is visible to every local user.",
        "auth",
        "KEY",
    ),
    _O(
        "password",
        None,
        "str",
        "",
        "Identity password (passwordCredentials), instead of an API key.",
        "auth",
        "PASSWORD",
    ),
    _O("auth_url", None, "str", DEFAULT_AUTH_URL, "Identity v2.0 token URL.", "auth", "URL"),
    # limits
    _O(
        "max_frame_bytes",
        None,
        "int",
        1_048_576,
        "Largest pickle frame accepted; a longer one is logged and its connection closed.",
        "limits",
        "BYTES",
    ),
    _O(
        "max_connections",
        None,
        "int",
        1024,
        "Open connections per listener; more are refused (closed at once) and counted.",
        "limits",
        "N",
    ),
    _O(
        "idle_timeout",
        None,
        "float",
        300.0,
        "Close a connection that sends nothing for this many seconds; 0 disables.",
        "limits",
        "SECONDS",
    ),
    _O(
        "max_connection_age",
        None,
        "float",
        0.0,
        "Close a client connection gracefully after this many seconds (+-10% jitter), at a "
        "frame or line boundary, so senders reconnect and a load balancer can rebalance; "
        "0 disables.",
        "limits",
        "SECONDS",
    ),
    _O(
        "max_buffer_bytes",
        None,
        "int",
        50_000_000,
        "Memory cap on bodies waiting and in flight; at the cap, reading from sockets pauses "
        "(TCP backpressure) instead of dropping.",
        "limits",
        "BYTES",
    ),
    _O(
        "max_past",
        None,
        "float",
        259200.0,
        "Drop datapoints older than this many seconds (Blueflood refuses them); negative disables.",
        "limits",
        "SECONDS",
    ),
    _O(
        "max_future",
        None,
        "float",
        600.0,
        "Drop datapoints more than this many seconds in the future; negative disables.",
        "limits",
        "SECONDS",
    ),
    # reliability
    _O(
        "drain_timeout",
        None,
        "float",
        30.0,
        "On SIGTERM/SIGINT: seconds to deliver what is buffered before exiting.",
        "reliability",
        "SECONDS",
    ),
    _O(
        "spool_dir",
        None,
        "str",
        "",
        "Directory of the disk spool for bodies Blueflood cannot take now; off when empty.",
        "reliability",
        "DIR",
    ),
    _O(
        "spool_max_bytes",
        None,
        "int",
        1_000_000_000,
        "Disk spool size cap.",
        "reliability",
        "BYTES",
    ),
    _O(
        "admin_endpoint",
        None,
        "str",
        "",
        "Serve /metrics (Prometheus) and /health here, e.g. tcp:port=9108:interface=127.0.0.1; "
        "off when empty.",
        "reliability",
        "ENDPOINT",
    ),
    _O(
        "self_metrics_prefix",
        None,
        "str",
        "",
        "Forward fastforward's own counters to Blueflood under this prefix; off when empty.",
        "reliability",
        "PREFIX",
    ),
    _O(
        "workers",
        None,
        "str",
        "1",
        "Worker processes sharing the listeners, or 'auto'.",
        "reliability",
        "N",
    ),
    # logging
    _O(
        "logfile",
        "l",
        "str",
        "",
        "Log to this file; '-' or empty means stderr. Without it, $LOG_DIR/carbon_forwarder.log "
        "when LOG_DIR is set (size-rotated by LOG_ROTATE_LENGTH bytes, MAX_LOG_ROTATED_FILES "
        "kept).",
        "logging",
        "FILE",
    ),
    _O(
        "log_level",
        None,
        "str",
        "info",
        "debug, info, warn, error or critical; TWISTED_LOG_LEVEL is read too.",
        "logging",
        "LEVEL",
    ),
    _O(
        "pidfile", None, "str", "", "Write the process id here; removed at exit.", "logging", "FILE"
    ),
    # compatibility
    _O(
        "nodaemon",
        "n",
        "bool",
        False,
        "Accepted for twistd compatibility; fastforward never daemonizes.",
        "compatibility",
        None,
        field=False,
        env=False,
    ),
    _O(
        "logger",
        None,
        "str",
        "",
        "twistd log observer; ignored with a warning (use -l, LOG_DIR, --log-level).",
        "compatibility",
        "FQPN",
        field=False,
        env=False,
    ),
    _O(
        "syslog",
        None,
        "bool",
        False,
        "twistd syslog switch; ignored with a warning.",
        "compatibility",
        None,
        field=False,
        env=False,
    ),
    _O(
        "umask",
        None,
        "str",
        "",
        "twistd umask; ignored with a warning.",
        "compatibility",
        "UMASK",
        field=False,
        env=False,
    ),
    _O(
        "reactor",
        "r",
        "str",
        "",
        "twistd reactor; ignored with a warning (gevent is used).",
        "compatibility",
        "NAME",
        field=False,
        env=False,
    ),
)
del _O
BY_NAME = {o.name: o for o in OPTIONS}

# Other twistd switches seen in scripts: accepted before `blueflood-forward`, warned about.
_TWISTD_VALUE_OPTIONS = (
    "--rundir", "-d", "--chroot", "--uid", "-u", "--gid", "-g", "--prefix", "--profile", "-p",
    "--profiler", "--python", "-y", "--file", "-f", "--source", "-s",
)  # fmt: skip
_TWISTD_FLAG_OPTIONS = (
    "--no_save", "-o", "--originalname", "--debug", "-b", "--spew", "--euid", "--savestats",
    "--help-reactors",
)  # fmt: skip
TAPNAME = "blueflood-forward"
TWISTD_DEST = "twistd:"


@dataclass(frozen=True)
class Config:
    """Validated settings of one fastforward process; field names are the long option names."""

    endpoint: list[str] = field(default_factory=lambda: ["tcp:2004"])
    protocol: str = "MetricPickleReceiver"
    line_endpoint: list[str] = field(default_factory=list)
    interval: float = 30.0
    blueflood: str = "http://localhost:19000"
    tenant: str = ""
    metric_prefix: str = ""
    ttl: int = 86400
    user: str = ""
    key: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    auth_url: str = DEFAULT_AUTH_URL
    limit: int = 0
    max_body_datapoints: int = 5000
    overwrite_collection_timestamp: bool = False
    max_frame_bytes: int = 1_048_576
    max_connections: int = 1024
    idle_timeout: float = 300.0
    max_connection_age: float = 0.0
    max_buffer_bytes: int = 50_000_000
    concurrency: int = 4
    gzip: bool = False
    request_timeout: float = 30.0
    max_past: float = 259200.0
    max_future: float = 600.0
    drain_timeout: float = 30.0
    spool_dir: str = ""
    spool_max_bytes: int = 1_000_000_000
    admin_endpoint: str = ""
    self_metrics_prefix: str = ""
    workers: str = "1"
    logfile: str = ""
    log_level: str = "info"
    pidfile: str = ""

    @property
    def dry_run(self) -> bool:
        return self.blueflood == "-"

    @property
    def line_protocol(self) -> bool:
        """True when the --endpoint listeners speak plaintext lines rather than pickle."""
        return self.protocol == "MetricLineReceiver"

    @property
    def body_bytes(self) -> int:
        """The effective body byte limit (--limit 0 means the safe maximum)."""
        return self.limit or SAFE_BODY_BYTES

    def listeners(self) -> list[tuple[Endpoint, str]]:
        """Every listener as (endpoint, "pickle" | "line")."""
        main = "line" if self.line_protocol else "pickle"
        out = [(parse_endpoint(e), main) for e in self.endpoint]
        out += [(parse_endpoint(e), "line") for e in self.line_endpoint]
        return out

    def encoder_options(self) -> dict[str, Any]:
        """Keyword arguments of `codec.Encoder` for these settings."""
        return {
            "prefix": self.metric_prefix,
            "ttl": self.ttl,
            "overwrite_collection_time": self.overwrite_collection_timestamp,
            "max_body_bytes": self.body_bytes,
            "max_body_datapoints": self.max_body_datapoints,
            "max_frame_bytes": self.max_frame_bytes,
            "max_past_ms": int(self.max_past * 1000),
            "max_future_ms": int(self.max_future * 1000),
        }

    def redacted(self) -> dict[str, Any]:
        """Every field, secrets replaced, for logs."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for secret in ("key", "password"):
            if out[secret]:
                out[secret] = "***"
        return out


@dataclass
class Loaded:
    """What `load` returns: the config plus what the command line asked for besides running."""

    config: Config
    warnings: list[str]
    help: bool = False
    version: bool = False
    config_file: str = ""


# ---------------------------------------------------------------------------------------------
# value conversion


def _to_bool(opt: Option, value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", "y", "t"):
        return True
    if text in ("0", "false", "no", "off", "n", "f", ""):
        return False
    raise ConfigError(f"{source} {opt.name}: {value!r} is not a boolean (true/false)")


def _convert(opt: Option, value: Any, source: str) -> Any:
    """Turn a raw string (or list of strings from the command line) into the option's type."""
    if opt.kind == "bool":
        return _to_bool(opt, value, source)
    if opt.kind == "list":
        items = value if isinstance(value, list) else str(value).split(",")
        return [s.strip() for s in items if s.strip()]
    if opt.kind == "int":
        try:
            text = str(value).strip().replace("_", "")
            n = float(text) if "e" in text.lower() else int(text)
            if isinstance(n, float):
                if not n.is_integer():
                    raise ValueError
                n = int(n)
            return n
        except ValueError:
            raise ConfigError(f"{source} {opt.name}: {value!r} is not an integer") from None
    if opt.kind == "float":
        try:
            return float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{source} {opt.name}: {value!r} is not a number") from None
    return str(value)


# ---------------------------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and sys.exit(2)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser generated from the table; every default is SUPPRESS."""
    p = _Parser(prog="fastforward", add_help=False, allow_abbrev=False)
    p.add_argument("-h", "--help", action="store_true", default=argparse.SUPPRESS)
    p.add_argument("-V", "--version", action="store_true", default=argparse.SUPPRESS)
    for opt in OPTIONS:
        kw: dict[str, Any] = {"dest": opt.name, "default": argparse.SUPPRESS}
        if opt.kind == "bool":
            # `--gzip` alone is true; `--gzip=false` is accepted too (INI-style values).
            kw.update(nargs="?", const="true", metavar="BOOL")
        elif opt.kind == "list":
            kw.update(action="append", metavar=opt.metavar)
        else:
            kw.update(metavar=opt.metavar)
        p.add_argument(*opt.flags, **kw)
    # Other twistd switches: accepted with a warning. Short forms that are ours (-u, -p, -b)
    # mean ours here; before `blueflood-forward` they keep twistd's meaning (_split_twistd).
    ours = {f for opt in OPTIONS for f in opt.flags}
    for group, takes_value in ((_TWISTD_VALUE_OPTIONS, True), (_TWISTD_FLAG_OPTIONS, False)):
        for flag in group:
            if flag in ours:
                continue
            kw = {"dest": TWISTD_DEST + flag.lstrip("-"), "default": argparse.SUPPRESS}
            if takes_value:
                kw["metavar"] = "VALUE"
            else:
                kw.update(action="store_const", const=True)
            p.add_argument(flag, **kw)
    return p


def _split_twistd(argv: list[str], warnings: list[str]) -> list[str]:
    """Handle the `twistd [twistd options] blueflood-forward [plugin options]` layout.

    The twistd part keeps its own meaning (there, -u is a uid and -p a profile file), so it is
    parsed apart; what matters (-n, -l, --pidfile, --logger, ...) is moved to our options.
    """
    if TAPNAME not in argv:
        return argv
    idx = argv.index(TAPNAME)
    head, tail = argv[:idx], argv[idx + 1 :]
    if head and head[0] == "twistd":
        head = head[1:]
    keep: list[str] = []
    i = 0
    while i < len(head):
        arg = head[i]
        name, eq, inline = arg.partition("=")
        if name in _TWISTD_VALUE_OPTIONS:
            if not eq:
                i += 1
            warnings.append(f"twistd option {name} is not supported by fastforward; ignored")
        elif name in _TWISTD_FLAG_OPTIONS:
            warnings.append(f"twistd option {name} is not supported by fastforward; ignored")
        else:
            keep.append(arg)
            opt = _flag_option(name)
            if opt is not None and opt.kind not in ("bool",) and not eq and i + 1 < len(head):
                keep.append(head[i + 1])
                i += 1
        i += 1
    return keep + tail


def _flag_option(flag: str) -> Option | None:
    for opt in OPTIONS:
        if flag in opt.flags:
            return opt
    return None


# ---------------------------------------------------------------------------------------------
# sources


def read_ini(path: str) -> dict[str, str]:
    """The [blueflood_carbon_forwarder] section of an INI file; keys may use - or _."""
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path!r}: {exc.strerror or exc}") from None
    except configparser.Error as exc:
        raise ConfigError(f"config file {path!r}: {exc.message}") from None
    if not parser.has_section(INI_SECTION):
        raise ConfigError(f"config file {path!r}: no [{INI_SECTION}] section")
    return {k.replace("-", "_").lower(): v for k, v in parser.items(INI_SECTION)}


def _env_option(env_var: str) -> str:
    """``FASTFORWARD_SPOOL_DIR`` -> ``FASTFORWARD_SPOOL_DIR, the --spool-dir option``."""
    opt = BY_NAME.get(env_var[len(ENV_PREFIX) :].lower())
    return f"{env_var}, the --{opt.name.replace('_', '-')} option" if opt else env_var


def _ini_option(key: str) -> str:
    return f"{key}, the --{key.replace('_', '-')} option"


def unknown_env_warnings(environ: Mapping[str, str]) -> list[str]:
    """A warning for each FASTFORWARD_* variable that no option or internal switch reads."""
    known = [o.env_var for o in OPTIONS if o.env]
    out = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in INTERNAL_ENV:
            continue
        if name.startswith(INTERNAL_ENV_PREFIX):
            continue
        hint = _did_you_mean(name, known, _env_option)
        out.append(f"environment variable {name} is not a fastforward setting; ignored{hint}")
    return out


def _from_env(environ: Mapping[str, str], warnings: list[str]) -> dict[str, Any]:
    warnings += unknown_env_warnings(environ)
    out: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.env and opt.env_var in environ:
            out[opt.name] = _convert(opt, environ[opt.env_var], f"environment {opt.env_var}:")
    # The original docker image's log level variable; ours wins when both are set.
    if "log_level" not in out and environ.get("TWISTED_LOG_LEVEL"):
        out["log_level"] = environ["TWISTED_LOG_LEVEL"]
    return out


def load(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Loaded:
    """Parse, merge (CLI > env > INI > defaults) and validate; raise ConfigError / UsageError."""
    env = os.environ if environ is None else environ
    warnings: list[str] = []
    args = _split_twistd(list(argv), warnings)
    ns, extra = build_parser().parse_known_args(args)
    if extra:
        flags = sorted({f for o in OPTIONS for f in o.flags if f.startswith("--") and "_" not in f})
        first = extra[0].split("=", 1)[0]
        hint = _did_you_mean(first, flags) if first.startswith("--") else ""
        raise _attach(UsageError(f"unrecognized arguments: {' '.join(extra)}{hint}"), warnings)
    given = vars(ns)
    cli: dict[str, Any] = {}
    for name, raw in given.items():
        if name in ("help", "version"):
            continue
        if name.startswith(TWISTD_DEST):
            flag = name[len(TWISTD_DEST) :]
            flag = f"-{flag}" if len(flag) == 1 else f"--{flag}"
            warnings.append(f"twistd option {flag} is not supported by fastforward; ignored")
            continue
        cli[name] = _convert(BY_NAME[name], raw, "option --")
    loaded = Loaded(
        config=Config(),
        warnings=warnings,
        help=bool(given.get("help")),
        version=bool(given.get("version")),
    )
    if loaded.help or loaded.version:
        return loaded

    try:
        _merge(loaded, cli, env)
    except ConfigError as exc:
        raise _attach(exc, warnings) from None
    return loaded


def _merge(loaded: Loaded, cli: dict[str, Any], env: Mapping[str, str]) -> None:
    """Environment and config file under the command line, then validation, into ``loaded``."""
    warnings = loaded.warnings
    env_values = _from_env(env, warnings)
    config_file = cli.get("config") or env_values.get("config") or ""
    ini_values: dict[str, Any] = {}
    if config_file:
        raw_values = read_ini(config_file)
        keys = [o.name for o in OPTIONS if o.name != "config"]
        for key in raw_values:  # every unknown key first, so a bad value does not hide them
            if key not in keys:
                hint = _did_you_mean(key, keys, _ini_option)
                warnings.append(f"config file {config_file}: unknown key {key!r} ignored{hint}")
        for key, raw in raw_values.items():
            if key in keys:
                ini_values[key] = _convert(BY_NAME[key], raw, f"config file {config_file}:")
    loaded.config_file = config_file

    merged: dict[str, Any] = {}
    for source in (ini_values, env_values, cli):
        merged.update(source)

    for name in ("nodaemon",):
        merged.pop(name, None)
    for name in ("logger", "syslog", "umask", "reactor"):
        value = merged.pop(name, None)
        if value:
            warnings.append(f"twistd option --{name} {value!r} is not supported; ignored")
    merged.pop("config", None)
    if merged.pop("dry_run", False):
        merged["blueflood"] = "-"
    loaded.config = validate(merged)


# ---------------------------------------------------------------------------------------------
# validation


def _check_range(values: dict[str, Any], name: str, lo: float, hi: float | None = None) -> None:
    v = values[name]
    if v < lo or (hi is not None and v > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ConfigError(f"--{name} {v!r}: must be {bound}")


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


def validate(values: Mapping[str, Any]) -> Config:
    """Build a Config from merged option values, refusing anything unusable."""
    base = Config()
    v: dict[str, Any] = {f.name: getattr(base, f.name) for f in fields(Config)}
    v.update(values)

    proto = PROTOCOLS.get(str(v["protocol"]).strip().lower())
    if proto is None:
        raise ConfigError(
            f"--protocol {v['protocol']!r}: use MetricPickleReceiver or MetricLineReceiver"
        )
    v["protocol"] = proto

    bf = blueflood_url(str(v["blueflood"]))
    v["blueflood"] = bf

    tenant = str(v["tenant"]).strip()
    if bf != "-" and not tenant:
        raise ConfigError("--tenant is required (or use --dry-run / -b - to write to stdout)")
    if any(c in tenant for c in "/.?#%") or any(c.isspace() for c in tenant):
        raise ConfigError(
            f"--tenant {tenant!r}: must not contain '/', '.', '?', '#', '%' or spaces"
        )
    if len(tenant.encode()) > 255:
        raise ConfigError(f"--tenant {tenant[:20]!r}...: longer than 255 bytes")
    v["tenant"] = tenant

    _check_range(v, "ttl", 1, 2147483646)
    _check_range(v, "interval", 0.001)
    if v["limit"] < 0:
        raise ConfigError(f"--limit {v['limit']!r}: must be 0 (1,000,000) or a byte count")
    if v["limit"] > MAX_BODY_BYTES:
        raise ConfigError(
            f"--limit {v['limit']!r}: Blueflood refuses bodies over {MAX_BODY_BYTES} bytes"
        )
    _check_range(v, "max_body_datapoints", 1, 1_000_000)
    _check_range(v, "max_frame_bytes", 16, 1 << 30)
    _check_range(v, "max_connections", 1, 1_000_000)
    _check_range(v, "idle_timeout", 0)
    _check_range(v, "max_connection_age", 0)
    _check_range(v, "max_buffer_bytes", 1_048_576)
    _check_range(v, "concurrency", 1, 1024)
    _check_range(v, "request_timeout", 0.001)
    _check_range(v, "drain_timeout", 0)
    _check_range(v, "spool_max_bytes", 1)

    if v["user"] and not (v["key"] or v["password"]):
        raise ConfigError(f"--user {v['user']!r}: needs --key (API key) or --password")
    if v["key"] and v["password"]:
        raise ConfigError("--key and --password: give one of them, not both")
    if not str(v["auth_url"]).startswith(("http://", "https://")):
        raise ConfigError(f"--auth_url {v['auth_url']!r}: not an http(s) URL")

    workers = str(v["workers"]).strip().lower()
    if workers != "auto" and not (workers.isdigit() and int(workers) >= 1):
        raise ConfigError(f"--workers {v['workers']!r}: a positive number or 'auto'")
    v["workers"] = workers

    level = str(v["log_level"]).strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"--log-level {v['log_level']!r}: use one of {', '.join(LOG_LEVELS)}")
    v["log_level"] = level

    if not v["endpoint"] and not v["line_endpoint"]:
        raise ConfigError("--endpoint: at least one listener is needed")
    for name in ("endpoint", "line_endpoint"):
        for text in v[name]:
            parse_endpoint(text)  # raises ConfigError naming the string
    if v["admin_endpoint"]:
        ep = parse_endpoint(v["admin_endpoint"])
        if ep.kind not in ("tcp", "tcp6"):
            raise ConfigError(f"--admin-endpoint {v['admin_endpoint']!r}: must be tcp: or tcp6:")
    return Config(**v)


# ---------------------------------------------------------------------------------------------
# --help


def _default_text(opt: Option) -> str:
    d = opt.default
    if opt.kind == "bool":
        return "off"
    if opt.kind == "list":
        return ",".join(d) if d else "none"
    if d == "":
        return "empty"
    return str(d)  # as a user would type it: 86400, not 86_400


# The EXIT STATUS section of --help; the README's "Exit status" table says the same.
EXIT_STATUS_LINES = (
    "    0  stopped by SIGTERM/SIGINT with everything delivered or spooled",
    "    1  an unexpected error, or a second SIGTERM/SIGINT (exit at once, no drain)",
    "    2  bad options or configuration (the message names the option and the value)",
    "    3  a resource unusable at start (endpoint in use, certificate, spool directory, log)",
    "    4  stopped, but some datapoints could be neither delivered nor spooled (the count is",
    "       on stderr and in the log)",
)


def help_text(width: int = 100) -> str:
    """The man-page style text of `fastforward --help`."""
    wrap = textwrap.TextWrapper(
        width=width, initial_indent="        ", subsequent_indent="        "
    )
    out = [
        "NAME",
        "    fastforward - receive Graphite carbon metrics and forward them to Blueflood",
        "",
        "SYNOPSIS",
        "    fastforward [OPTIONS]",
        "    fastforward send NAME VALUE [TIMESTAMP] [NAME VALUE ...] [-e ENDPOINT] [--line]",
        "    fastforward decode [ARGS]   (see fastforward decode --help)",
        "",
        "DESCRIPTION",
    ]
    desc = (
        "A drop-in replacement for `twistd blueflood-forward` (blueflood-carbon-forwarder). It "
        "listens for carbon pickle frames (what carbon-relay sends) and plaintext lines over "
        "TCP, UDP, UNIX sockets or TLS, turns them into Blueflood JSON and POSTs them to "
        "URL/v2.0/TENANT/ingest every --interval seconds, or as soon as a body is full. Failed "
        "POSTs are retried; when the memory cap is reached, reading pauses (TCP backpressure) "
        "instead of dropping. Every option below can also be set in the environment "
        "(FASTFORWARD_<NAME>) and in the INI file given with -c."
    )
    out += textwrap.wrap(desc, width, initial_indent="    ", subsequent_indent="    ")
    for section, title in SECTIONS:
        out += ["", title.upper()]
        for opt in OPTIONS:
            if opt.section != section:
                continue
            flags = ", ".join(opt.flags)
            if opt.kind == "bool":
                flags += " [BOOL]"
            elif opt.metavar:
                flags += f" {opt.metavar}"
            out.append("    " + flags)
            out += wrap.wrap(opt.help)
            tail = f"default: {_default_text(opt)}"
            if opt.env:
                tail += f"    env: {opt.env_var}"
            out.append("        " + tail)
        if section == "compatibility":
            out += wrap.wrap(
                "The twistd layout works as well: `fastforward -n -l - blueflood-forward -e ...` "
                "(options before blueflood-forward are twistd's; -u, -p, -d there are ignored "
                "with a warning). Other twistd options (--rundir, --uid, --prefix, --profile, "
                "...) get a warning, never an error."
            )
        if section == "logging":
            out += wrap.wrap(
                "Environment of the original docker image: LOG_DIR (log to "
                "$LOG_DIR/carbon_forwarder.log when -l is not given), LOG_ROTATE_LENGTH (bytes "
                "before rotation, default 100000000), MAX_LOG_ROTATED_FILES (default 10), "
                "TWISTED_LOG_LEVEL (debug, info, warn, error, critical)."
            )
    out += ["", "OTHER"]
    out.append("    -h, --help")
    out += wrap.wrap("Show this page and exit.")
    out.append("    -V, --version")
    out += wrap.wrap("Print the version and the codec implementation (cython or python).")
    out += ["", "PRECEDENCE"]
    out += wrap.wrap(
        "Command line, then environment (FASTFORWARD_<NAME>), then the config file (-c), then "
        "the defaults. Note: the original twistd plugin let the config file override the "
        "command line; fastforward does not."
    )
    out += wrap.wrap(
        f"Config file: an INI file with a [{INI_SECTION}] section; keys are the long option "
        "names (endpoint, interval, blueflood, tenant, metric_prefix, ttl, user, key, auth_url, "
        "limit, overwrite_collection_timestamp, ...), with _ or -. Several endpoints are "
        "separated by commas."
    )
    out += [
        "",
        "EXAMPLES",
        "    Try it without Blueflood (bodies go to stdout), on loopback only (tcp:2004 alone",
        "    listens on every interface), then send a datapoint:",
        "        fastforward --dry-run -i 1 -e tcp:port=2004:interface=127.0.0.1",
        "        fastforward send my.metric 42",
        "",
        "    Forward carbon-relay's pickle stream to Blueflood:",
        "        fastforward -e tcp:2004 -b http://blueflood:19000 -t 123456",
        "",
        "    Pickle on 2004, plaintext on TCP and UDP 2003, with Rackspace Identity:",
        "        FASTFORWARD_KEY=... fastforward -t 123456 -u me --line-endpoint tcp:2003 \\",
        "            --line-endpoint udp:2003 -b https://ingest.example:19000",
        "",
        "    TLS ingest:",
        "        fastforward -e ssl:2004:privateKey=key.pem:certKey=cert.pem -t 123456",
        "",
        "EXIT STATUS",
        *EXIT_STATUS_LINES,
        "",
        "SIGNALS",
        "    SIGTERM, SIGINT: stop accepting, read what is buffered in open connections, deliver",
        "    everything within --drain-timeout, spool the rest (with --spool-dir), then exit. A",
        "    second signal exits at once (status 1).",
        "    SIGHUP: reopen the log file (-l), e.g. after logrotate moved it; never stops",
        "    fastforward. With --workers, it is passed on to every worker.",
    ]
    return "\n".join(out) + "\n"
