"""fastforward's settings: the `Config` dataclass, whose fields are the options, and `load`, the
merge of command line, environment and INI file into one validated `Config`.

Each setting is written once, as a `Config` field declared with `option(...)` (flags, help,
section, and its rule from `checks.py`); `OPTIONS` is derived from the fields, and the argparse
parser, the environment and INI readers, ``--help`` and the README tables (`manpage.py`) and the
options of `fastforward decode` are derived from `OPTIONS`. twistd's command-line layout is
`twistd.py`'s.

Precedence, highest first: command line, environment (``FASTFORWARD_<NAME>``), config file
(``-c``), defaults. The original twistd plugin let the config file override the command line;
we follow the usual convention instead, and ``--help`` says so.

No I/O happens here apart from reading the config file; no gevent, no sockets.
"""

from __future__ import annotations

import argparse
import configparser
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from . import checks, twistd
from ._codec_rules import DEFAULT_ROUTE_CACHE_SIZE
from .endpoints import Endpoint, parse_endpoint
from .errors import ConfigError
from .options import (
    ENV_PREFIX,
    Option,
    add_argument,
    convert,
    did_you_mean,
    option,
    options_of,
)

__all__ = [
    "INI_SECTION",
    "OPTIONS",
    "Config",
    "ConfigError",
    "Loaded",
    "Option",
    "UsageError",
    "add_arguments",
    "load",
    "settings_from_args",
]

INI_SECTION = "blueflood_carbon_forwarder"
DEFAULT_AUTH_URL = "https://identity.api.rackspacecloud.com/v2.0/tokens"
SAFE_BODY_BYTES = 1_000_000  # what --limit 0 means: under Blueflood's 1 MiB content cap
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


# ---------------------------------------------------------------------------------------------
# the settings; the order of the fields is the order of --help and the README within a section


@dataclass(frozen=True)
class Config:
    """Validated settings of one fastforward process; field names are the long option names."""

    # listening
    endpoint: list[str] = option(
        ["tcp:2004"],
        short="e",
        metavar="ENDPOINT",
        section="listening",
        check=checks.endpoints,
        help="Twisted endpoint string to listen on with --protocol; repeatable (tcp:PORT, "
        "tcp:port=PORT:interface=ADDR, tcp6:, unix:PATH, udp:PORT, "
        "ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem). In the environment and the config "
        "file, several endpoints are separated by commas.",
    )
    protocol: str = option(
        "MetricPickleReceiver",
        metavar="CLASS",
        section="listening",
        check=checks.protocol,
        help="Protocol of the --endpoint listeners: MetricPickleReceiver (carbon pickle, what "
        "carbon-relay sends) or MetricLineReceiver (plaintext lines); 'pickle' and 'line' "
        "also work.",
    )
    line_endpoint: list[str] = option(
        [],
        metavar="ENDPOINT",
        section="listening",
        check=checks.endpoints,
        help="Extra plaintext listener (tcp:2003, udp:2003, ...), on top of --endpoint; "
        "repeatable.",
    )
    # blueflood
    blueflood: str = option(
        "http://localhost:19000",
        short="b",
        metavar="URL",
        section="blueflood",
        check=checks.blueflood,
        help="Blueflood ingest URL (scheme, host, port); bodies are POSTed to "
        "URL/v2.0/TENANT/ingest. '-' is a dry run: bodies are written to stdout.",
    )
    tenant: str = option(
        "",
        short="t",
        metavar="TENANT",
        section="blueflood",
        check=checks.tenant,
        help="Blueflood tenant ID (required unless dry run).",
    )
    metric_prefix: str = option(
        "",
        short="p",
        metavar="PREFIX",
        section="blueflood",
        help="Prefix metric names with this string and a dot before sending them.",
    )
    ttl: int = option(
        86400,
        metavar="SECONDS",
        section="blueflood",
        check=checks.between(1, 2147483646),
        help="TTL of the metrics in Blueflood, seconds.",
    )
    interval: float = option(
        30.0,
        short="i",
        metavar="SECONDS",
        section="blueflood",
        check=checks.at_least(0.001),
        help="Seconds between flushes; a full body is sent at once without waiting.",
    )
    limit: int = option(
        0,
        metavar="BYTES",
        section="blueflood",
        check=checks.body_limit,
        help="Maximum JSON body size, bytes; 0 means 1,000,000 (the original: no limit). "
        "Blueflood refuses bodies over 1,048,576, so more is refused here.",
    )
    max_body_datapoints: int = option(
        5000,
        metavar="N",
        section="blueflood",
        check=checks.between(1, 1_000_000),
        help="Maximum datapoints in one body.",
    )
    overwrite_collection_timestamp: bool = option(
        False,
        section="blueflood",
        help="Replace each metric's timestamp with the time it was received.",
    )
    gzip: bool = option(
        False, section="blueflood", help="Compress bodies (Content-Encoding: gzip)."
    )
    ingest_multi: bool = option(
        False,
        section="blueflood",
        help="POST to /v2.0/{tenant}/ingest/multi, each datapoint carrying its tenantId, so "
        "one request may carry several tenants (self-hosted Blueflood).",
    )
    concurrency: int = option(
        4,
        metavar="N",
        section="blueflood",
        check=checks.between(1, 1024),
        help="POST requests in flight at once.",
    )
    request_timeout: float = option(
        30.0,
        metavar="SECONDS",
        section="blueflood",
        check=checks.at_least(0.001),
        help="Timeout of one POST, seconds.",
    )
    # auth
    user: str = option(
        "",
        short="u",
        metavar="USER",
        section="auth",
        help="Identity user name; leave empty when Blueflood needs no authentication.",
    )
    key: str = option(
        "",
        short="k",
        metavar="KEY",
        section="auth",
        secret=True,
        help="Identity API key (RAX-KSKEY:apiKeyCredentials). Prefer the config file or "
        "FASTFORWARD_KEY: a key on the command line is visible to every local user.",
    )
    password: str = option(
        "",
        metavar="PASSWORD",
        section="auth",
        secret=True,
        help="Identity password (passwordCredentials), instead of an API key.",
    )
    auth_url: str = option(
        DEFAULT_AUTH_URL,
        metavar="URL",
        section="auth",
        check=checks.http_url,
        help="Identity v2.0 token URL.",
    )
    # routing
    rules: str = option(
        "",
        metavar="FILE",
        section="routing",
        check=checks.readable_file,
        help="Routing rules (TOML, docs/rules.md): per metric name a tenant, a new name, a "
        "TTL, a drop, a series budget; names no rule matches go to --tenant unchanged. Checked "
        "at start (exit 2 naming the line), reloaded on SIGHUP (a bad file keeps the old rules).",
    )
    storage_schemas: str = option(
        "",
        metavar="FILE",
        section="routing",
        check=checks.readable_file,
        help="carbon's storage-schemas.conf: where no rule sets a TTL, the longest retention "
        "of the first matching schema is the TTL. Reloaded on SIGHUP with the rules.",
    )
    tags: str = option(
        "keep",
        metavar="POLICY",
        section="routing",
        check=checks.tag_policy,
        help="Graphite tags (name;k=v): always put in carbon's order; keep them in the name, "
        "strip them, or flatten them into the path (name.k_is_v).",
    )
    series_budget_warmup: float = option(
        300.0,
        metavar="SECONDS",
        section="routing",
        check=checks.at_least(0),
        help="For this long after a series budget starts (max_new_series_per_minute in the "
        "rules), it only learns the series flowing and refuses none: to a new process every "
        "series is new. 0 applies the budgets at once.",
    )
    tenant_idle_timeout: float = option(
        600.0,
        metavar="SECONDS",
        section="routing",
        check=checks.at_least(0),
        help="A tenant's delivery lane (its queue, senders and backlog gauges) that held "
        "nothing and got nothing for this long is removed; the tenant's next datapoint starts "
        "a new one. 0 keeps every lane for good.",
    )
    route_cache_names: int = option(
        DEFAULT_ROUTE_CACHE_SIZE,
        metavar="N",
        section="routing",
        check=checks.between(1, 1 << 30),
        help="Metric names whose routing decision the encoder remembers (with routing); when "
        "full it forgets them all and asks the rules again. About 140 bytes a 30-byte name, 270 "
        "a 60-byte one (38-71 MB at the default) per process, not counted in --max-buffer-bytes "
        "(/metrics: fastforward_route_cache_bytes).",
    )
    # limits
    max_frame_bytes: int = option(
        1_048_576,
        metavar="BYTES",
        section="limits",
        check=checks.between(16, 1 << 30),
        help="Largest pickle frame accepted; a longer one is logged and its connection closed.",
    )
    max_connections: int = option(
        1024,
        metavar="N",
        section="limits",
        check=checks.between(1, 1_000_000),
        help="Open connections per listener; more are refused (closed at once) and counted.",
    )
    idle_timeout: float = option(
        300.0,
        metavar="SECONDS",
        section="limits",
        check=checks.at_least(0),
        help="Close a connection that sends nothing for this many seconds; 0 disables.",
    )
    max_connection_age: float = option(
        0.0,
        metavar="SECONDS",
        section="limits",
        check=checks.at_least(0),
        help="Close a client connection gracefully after this many seconds (+-10% jitter), at "
        "a frame or line boundary, so senders reconnect and a load balancer can rebalance; "
        "0 disables.",
    )
    max_buffer_bytes: int = option(
        50_000_000,
        metavar="BYTES",
        section="limits",
        check=checks.at_least(1_048_576),
        help="Memory cap on everything held for data (bodies waiting, in flight and being "
        "filled, connection read buffers beyond their first 16 KiB); at the cap, reading from "
        "sockets pauses (TCP backpressure) instead of dropping.",
    )
    max_past: float = option(
        259200.0,
        metavar="SECONDS",
        section="limits",
        help="Drop datapoints older than this many seconds (Blueflood refuses them); negative "
        "disables.",
    )
    max_future: float = option(
        600.0,
        metavar="SECONDS",
        section="limits",
        help="Drop datapoints more than this many seconds in the future; negative disables.",
    )
    # reliability
    drain_timeout: float = option(
        30.0,
        metavar="SECONDS",
        section="reliability",
        check=checks.at_least(0),
        help="On SIGTERM/SIGINT: seconds to deliver what is buffered before exiting.",
    )
    spool_dir: str = option(
        "",
        metavar="DIR",
        section="reliability",
        help="Directory of the disk spool for bodies Blueflood cannot take now; off when empty.",
    )
    spool_max_bytes: int = option(
        1_000_000_000,
        metavar="BYTES",
        section="reliability",
        check=checks.at_least(1),
        help="Disk spool size cap.",
    )
    admin_endpoint: str = option(
        "",
        metavar="ENDPOINT",
        section="reliability",
        check=checks.admin_endpoint,
        help="Serve /metrics (Prometheus) and /health here, e.g. "
        "tcp:port=9108:interface=127.0.0.1; off when empty.",
    )
    self_metrics_prefix: str = option(
        "",
        metavar="PREFIX",
        section="reliability",
        help="Forward fastforward's own counters to Blueflood under this prefix; off when empty.",
    )
    workers: str = option(
        "1",
        metavar="N",
        section="reliability",
        check=checks.workers,
        help="Worker processes sharing the listeners, or 'auto'.",
    )
    # logging
    logfile: str = option(
        "",
        short="l",
        metavar="FILE",
        section="logging",
        help="Log to this file; '-' or empty means stderr. Without it, "
        "$LOG_DIR/carbon_forwarder.log when LOG_DIR is set (size-rotated by LOG_ROTATE_LENGTH "
        "bytes, MAX_LOG_ROTATED_FILES kept).",
    )
    log_level: str = option(
        "info",
        metavar="LEVEL",
        section="logging",
        check=checks.log_level,
        help="debug, info, warn, error or critical; TWISTED_LOG_LEVEL is read too.",
    )
    pidfile: str = option(
        "", metavar="FILE", section="logging", help="Write the process id here; removed at exit."
    )

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
            "max_past_ms": _window_ms(self.max_past),
            "max_future_ms": _window_ms(self.max_future),
            "route_cache_size": self.route_cache_names,
        }

    def redacted(self) -> dict[str, Any]:
        """Every field, secrets replaced, for logs."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for opt in OPTIONS:
            if opt.secret and out[opt.name]:
                out[opt.name] = "***"
        return out


_DEFAULTS = Config()


def tenant_label(tenant: str) -> str:
    """The default tenant as the log, /metrics and a routed dry run's lines name it: ``-t``,
    or ``-`` in a dry run without one (never an empty label)."""
    return tenant or "-"


def _window_ms(seconds: float) -> int:
    """--max-past / --max-future in the encoder's milliseconds; any negative value disables."""
    return -1 if seconds < 0 else int(seconds * 1000)


# Command-line switches that are not settings: consumed by `load`.
SWITCHES: tuple[Option, ...] = (
    Option(
        name="config",
        kind="str",
        default="",
        short="c",
        metavar="FILE",
        section="listening",
        field=False,
        help=f"INI config file; only its [{INI_SECTION}] section is read, with the "
        "long option names as keys (the original's example.conf works as is).",
    ),
    Option(
        name="dry_run",
        kind="bool",
        default=False,
        section="blueflood",
        field=False,
        help="Same as -b -: write the bodies to stdout, POST nothing.",
    ),
)
OPTIONS: tuple[Option, ...] = options_of(Config) + SWITCHES + twistd.OPTIONS
BY_NAME = {o.name: o for o in OPTIONS}


@dataclass
class Loaded:
    """What `load` returns: the config plus what the command line asked for besides running."""

    config: Config
    warnings: list[str]
    help: bool = False
    version: bool = False
    config_file: str = ""


def validate(values: Mapping[str, Any]) -> Config:
    """Build a Config from merged option values (defaults for the rest), refusing anything
    unusable: each field's own check in field order, then the rules between fields."""
    v = {f.name: getattr(_DEFAULTS, f.name) for f in fields(Config)}
    v.update(values)
    for opt in OPTIONS:
        if opt.field and opt.check is not None:
            v[opt.name] = opt.check(opt.name, v[opt.name])
    if v["blueflood"] != "-" and not v["tenant"]:
        raise ConfigError("--tenant is required (or use --dry-run / -b - to write to stdout)")
    if v["user"] and not (v["key"] or v["password"]):
        raise ConfigError(f"--user {v['user']!r}: needs --key (API key) or --password")
    if v["key"] and v["password"]:
        raise ConfigError("--key and --password: give one of them, not both")
    if not v["endpoint"] and not v["line_endpoint"]:
        raise ConfigError("--endpoint: at least one listener is needed")
    return Config(**v)


# ---------------------------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and sys.exit(2)
        raise UsageError(message)


def add_arguments(
    parser: argparse.ArgumentParser,
    names: Iterable[str],
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
    with_help: bool = False,
    bool_values: bool = True,
) -> None:
    """Add the named options' flags to ``parser`` as the daemon spells them (plus ``aliases``);
    ``with_help`` writes each option's help and default into argparse's own --help;
    ``bool_values`` as `options.add_argument` says."""
    for name in names:
        opt = BY_NAME[name]
        text = None
        if with_help:  # argparse expands % in help texts ("+-10% jitter")
            text = f"{opt.help} (default: {opt.shown_default})".replace("%", "%%")
        extra = (aliases or {}).get(name, ())
        add_argument(parser, opt, aliases=extra, help=text, bool_values=bool_values)


def build_parser() -> argparse.ArgumentParser:
    """The daemon's parser: every option and switch; nothing given means nothing in the result."""
    p = _Parser(prog="fastforward", add_help=False, allow_abbrev=False)
    p.add_argument("-h", "--help", action="store_true", default=argparse.SUPPRESS)
    p.add_argument("-V", "--version", action="store_true", default=argparse.SUPPRESS)
    add_arguments(p, BY_NAME)
    twistd.add_other_switches(p, {f for opt in OPTIONS for f in opt.flags})
    return p


def settings_from_args(args: argparse.Namespace, names: Iterable[str]) -> Config:
    """The defaults with those of ``names`` given in ``args`` (parsed by a parser made with
    `add_arguments`) converted and checked as the daemon does; ConfigError names the problem.
    The rules between fields (a tenant, a listener) are not applied: this is for tools that
    share some of the daemon's options, like `fastforward decode`."""
    given = vars(args)
    values: dict[str, Any] = {}
    for name in names:
        if name in given:
            opt = BY_NAME[name]
            value = convert(opt, given[name], f"option --{name}")
            values[name] = opt.check(name, value) if opt.check is not None else value
    return replace(_DEFAULTS, **values)


def _takes_value(flag: str) -> bool:
    """Whether one of our flags consumes the next word of the command line."""
    return any(flag in opt.flags and opt.kind != "bool" for opt in OPTIONS)


def _parse_command_line(argv: list[str], warnings: list[str]) -> tuple[dict[str, Any], bool, bool]:
    """The options given on the command line, converted; and whether --help, --version were."""
    args = twistd.split_command(argv, warnings, _takes_value)
    ns, extra = build_parser().parse_known_args(args)
    if extra:
        flags = sorted({f for o in OPTIONS for f in o.flags if f.startswith("--") and "_" not in f})
        first = extra[0].split("=", 1)[0]
        hint = did_you_mean(first, flags) if first.startswith("--") else ""
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}{hint}")
    given = vars(ns)
    wants_help = bool(given.pop("help", False))
    wants_version = bool(given.pop("version", False))
    cli: dict[str, Any] = {}
    for dest, raw in given.items():
        warning = twistd.other_switch_warning(dest)
        if warning is not None:
            warnings.append(warning)
        else:
            cli[dest] = convert(BY_NAME[dest], raw, f"option --{dest}")
    return cli, wants_help, wants_version


# ---------------------------------------------------------------------------------------------
# environment and config file


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


def _from_ini(path: str, warnings: list[str]) -> dict[str, Any]:
    """The options of a config file, converted; unknown keys are warned about, all of them
    before any bad value is refused (a misspelt key is often why a value is missing)."""
    raw_values = read_ini(path)
    keys = [o.name for o in OPTIONS if o.name != "config"]
    for key in raw_values:
        if key not in keys:
            hint = did_you_mean(key, keys, _ini_option)
            warnings.append(f"config file {path}: unknown key {key!r} ignored{hint}")
    where = f"config file {path}:"
    return {
        key: convert(BY_NAME[key], raw, f"{where} {key}")
        for key, raw in raw_values.items()
        if key in keys
    }


def _env_option(env_var: str) -> str:
    """``FASTFORWARD_SPOOL_DIR`` -> ``FASTFORWARD_SPOOL_DIR, the --spool-dir option``."""
    opt = BY_NAME.get(env_var[len(ENV_PREFIX) :].lower())
    return f"{env_var}, the {opt.kebab} option" if opt else env_var


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
        hint = did_you_mean(name, known, _env_option)
        out.append(f"environment variable {name} is not a fastforward setting; ignored{hint}")
    return out


def _from_env(environ: Mapping[str, str], warnings: list[str]) -> dict[str, Any]:
    warnings += unknown_env_warnings(environ)
    out: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.env and opt.env_var in environ:
            where = f"environment {opt.env_var}: {opt.name}"
            out[opt.name] = convert(opt, environ[opt.env_var], where)
    # The original docker image's log level variable; ours wins when both are set.
    if "log_level" not in out and environ.get("TWISTED_LOG_LEVEL"):
        out["log_level"] = environ["TWISTED_LOG_LEVEL"]
    return out


# ---------------------------------------------------------------------------------------------
# the merge


def load(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Loaded:
    """Parse, merge (CLI > env > INI > defaults) and validate; raise ConfigError / UsageError,
    which carry the warnings gathered so far in ``.warnings``."""
    env = os.environ if environ is None else environ
    warnings: list[str] = []
    try:
        cli, wants_help, wants_version = _parse_command_line(list(argv), warnings)
        loaded = Loaded(_DEFAULTS, warnings, help=wants_help, version=wants_version)
        if not (wants_help or wants_version):
            _merge(loaded, cli, env)
    except ConfigError as exc:
        exc.warnings = list(warnings)  # type: ignore[attr-defined]
        raise
    return loaded


def _merge(loaded: Loaded, cli: dict[str, Any], env: Mapping[str, str]) -> None:
    """Environment and config file under the command line, then validation, into ``loaded``."""
    warnings = loaded.warnings
    env_values = _from_env(env, warnings)
    config_file = cli.get("config") or env_values.get("config") or ""
    ini_values = _from_ini(config_file, warnings) if config_file else {}
    loaded.config_file = config_file

    merged: dict[str, Any] = {**ini_values, **env_values, **cli}
    twistd.drop_ignored(merged, warnings)
    merged.pop("config", None)
    if merged.pop("dry_run", False):
        merged["blueflood"] = "-"
    loaded.config = validate(merged)
