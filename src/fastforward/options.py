"""What an option is: the metadata a `Config` field carries, and the text-to-value rules.

`config.py` declares every setting once, as a `Config` field made with `option(...)`; the
long name is the field name, the type is the field's annotation, the default is the field's
default. `options_of(Config)` turns the fields into `Option` records, and everything else is
derived from those: the argparse flags (``--snake_case``, ``--kebab-case``, the short flag),
the environment variable, the INI key, ``--help``, the README tables and the options of
`fastforward decode`.

Nothing here names a particular option, and nothing here does I/O.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "SECTIONS",
    "Check",
    "Kind",
    "Option",
    "add_argument",
    "convert",
    "did_you_mean",
    "option",
    "options_of",
]

ENV_PREFIX = "FASTFORWARD_"

# The groups of --help and of the README's option tables, in their order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("listening", "Listening"),
    ("blueflood", "Blueflood"),
    ("auth", "Authentication (Keystone / Rackspace Identity v2.0)"),
    ("routing", "Routing to many tenants (docs/rules.md)"),
    ("limits", "Limits"),
    ("reliability", "Reliability and observability"),
    ("logging", "Logging"),
    ("compatibility", "Compatibility with twistd (accepted, mostly no-ops)"),
)

Kind = Literal["str", "int", "float", "bool", "list"]
# A field's check: (option name, converted value) -> the value to keep, or ConfigError.
Check = Callable[[str, Any], Any]

# Field annotations (strings: `from __future__ import annotations`) to option kinds.
_KIND_OF_ANNOTATION: dict[str, Kind] = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "list[str]": "list",
}
_META_KEY = "fastforward.option"


@dataclass(frozen=True)
class Option:
    """One option as every consumer sees it; built by `options_of`, or written out for the few
    command-line switches that are not `Config` fields (``-c``, ``--dry-run``, twistd's)."""

    name: str  # long name with underscores: the Config field, the INI key, --name
    kind: Kind
    default: Any
    help: str
    section: str
    short: str | None = None
    metavar: str | None = None
    env: bool = True  # also read from FASTFORWARD_<NAME>
    field: bool = True  # False: a switch that `load` consumes, not a Config field
    secret: bool = False  # hidden from repr() and from logged settings
    check: Check | None = None

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flags(self) -> list[str]:
        """``-s``, ``--snake_name`` and ``--kebab-name``, in that order (as --help lists them)."""
        out = [f"-{self.short}"] if self.short else []
        out.append(f"--{self.name}")
        if "_" in self.name:
            out.append("--" + self.name.replace("_", "-"))
        return out

    @property
    def kebab(self) -> str:
        """The spelling used in hints: ``--spool-dir``."""
        return "--" + self.name.replace("_", "-")

    @property
    def shown_default(self) -> str:
        """The default as a user would type it: 86400 (not 86_400), off, none, empty."""
        d = self.default
        if self.kind == "bool":
            return "off"
        if self.kind == "list":
            return ",".join(d) if d else "none"
        if d == "":
            return "empty"
        return str(d)


def option(
    default: Any,
    *,
    help: str,
    section: str,
    short: str | None = None,
    metavar: str | None = None,
    secret: bool = False,
    check: Check | None = None,
) -> Any:
    """A `Config` field that is also an option; the name, type and default come from the field."""
    meta = {
        _META_KEY: {
            "help": help,
            "section": section,
            "short": short,
            "metavar": metavar,
            "secret": secret,
            "check": check,
        }
    }
    if isinstance(default, list):  # a mutable default needs a factory; each Config its own
        items = list(default)
        return dataclasses.field(
            default_factory=lambda: list(items), repr=not secret, metadata=meta
        )
    return dataclasses.field(default=default, repr=not secret, metadata=meta)


def options_of(cls: type) -> tuple[Option, ...]:
    """The options declared on a dataclass with `option(...)`, in field order."""
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META_KEY)
        if meta is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with option()")
        kind = _KIND_OF_ANNOTATION.get(str(f.type))
        if kind is None:
            raise TypeError(f"{cls.__name__}.{f.name}: no option kind for type {f.type!r}")
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = f.default
        out.append(Option(name=f.name, kind=kind, default=default, **meta))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# text to values


_TRUE = ("1", "true", "yes", "on", "y", "t")
_FALSE = ("0", "false", "no", "off", "n", "f", "")


def convert(opt: Option, value: Any, where: str) -> Any:
    """A raw string (or the list of strings of a repeated flag) as the option's type.

    ``where`` starts the message of a refusal: ``option --ttl``,
    ``environment FASTFORWARD_TTL: ttl``, ``config file ff.conf: ttl``.
    """
    if opt.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ConfigError(f"{where}: {value!r} is not a boolean (true/false)")
    if opt.kind == "list":
        items = value if isinstance(value, list) else str(value).split(",")
        return [s.strip() for s in items if s.strip()]
    if opt.kind == "int":
        try:
            return _to_int(str(value))
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not an integer") from None
    if opt.kind == "float":
        try:
            return float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a number") from None
    return str(value)


def _to_int(raw: str) -> int:
    """``86400``, ``1_000_000`` and ``1e6`` are integers; ``1.5`` is not."""
    text = raw.strip().replace("_", "")
    if "e" not in text.lower():
        return int(text)
    n = float(text)
    if not n.is_integer():
        raise ValueError(raw)
    return int(n)


def did_you_mean(name: str, candidates: Sequence[str], show: Callable[[str], str] = str) -> str:
    """`` (did you mean X?)`` for the closest candidate, or nothing when none is close."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {show(close[0])}?)" if close else ""


# ---------------------------------------------------------------------------------------------
# argparse


def add_argument(
    parser: argparse.ArgumentParser,
    opt: Option,
    *,
    aliases: Iterable[str] = (),
    help: str | None = None,
    bool_values: bool = True,
) -> None:
    """Add the option's flags; its value is left as text under ``dest=opt.name`` (absent when
    not given: every default is SUPPRESS), for `convert` to turn into the option's type.

    A bool option alone means true; with ``bool_values`` it also takes a value
    (``--gzip=false``, ``--gzip no``), which a parser with positional arguments cannot allow:
    ``--gzip FILE`` would take FILE as the value.
    """
    kw: dict[str, Any] = {"dest": opt.name, "default": argparse.SUPPRESS}
    if help is not None:
        kw["help"] = help
    if opt.kind == "bool" and not bool_values:
        kw.update(action="store_const", const="true")
    elif opt.kind == "bool":
        kw.update(nargs="?", const="true", metavar="BOOL")
    elif opt.kind == "list":
        kw.update(action="append", metavar=opt.metavar)
    else:
        kw.update(metavar=opt.metavar)
    parser.add_argument(*opt.flags, *aliases, **kw)
