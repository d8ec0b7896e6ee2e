"""carbon's storage-schemas.conf (``--storage-schemas FILE``) as TTLs.

Where no rule sets a TTL, a metric's TTL is the longest retention of the first section whose
``pattern`` (a regex, searched anywhere in the name, as carbon does) matches it, so carbon users
keep their retention rules. A section is::

    [name]
    pattern = ^servers\\.
    retentions = 10s:6h,1m:7d,10m:5y

Retentions are ``precision:duration`` with units s m h d w y (a year is 365 days), or carbon's
older ``seconds:points`` (``60:1440`` keeps 1440 points of 60 s: one day). ``match-all = true``
matches every name. Unlike carbon, no built-in default applies after the last section: a name
no section matches keeps fastforward's own TTL. Errors name the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Schema", "Schemas", "SchemasError", "load_schemas", "parse_retention", "parse_schemas"]

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_AMOUNT = re.compile(r"^(\d+)([a-z]+)?$")
_SECTION = re.compile(r"^\[([^\]]+)\]$")


class SchemasError(ValueError):
    """A storage-schemas file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Schema:
    name: str
    line: int
    pattern: re.Pattern[str] | None  # None: match-all
    ttl: int  # the longest retention, in seconds


@dataclass(frozen=True)
class Schemas:
    schemas: tuple[Schema, ...] = ()
    source: str = "<storage-schemas>"

    def ttl_for(self, name: str) -> int | None:
        """The TTL of the first matching section, or None when none matches."""
        for schema in self.schemas:
            if schema.pattern is None or schema.pattern.search(name):
                return schema.ttl
        return None

    def first_match(self, name: str) -> Schema | None:
        for schema in self.schemas:
            if schema.pattern is None or schema.pattern.search(name):
                return schema
        return None


def parse_retention(text: str) -> int:
    """Seconds one retention keeps: ``1m:7d`` -> 604800, ``60:1440`` -> 86400."""
    precision_text, colon, amount_text = text.strip().partition(":")
    if not colon:
        raise ValueError(f"retention {text.strip()!r} is not precision:duration")
    precision = _seconds(precision_text, "precision")
    m = _AMOUNT.match(amount_text.strip())
    if not m:
        raise ValueError(f"retention {text.strip()!r}: bad duration {amount_text!r}")
    if m.group(2) is None:  # seconds:points, carbon's first spelling
        seconds = precision * int(m.group(1))
    else:
        seconds = _seconds(amount_text, "duration")
    if precision <= 0 or seconds <= 0:
        raise ValueError(f"retention {text.strip()!r} keeps nothing")
    return seconds


def _seconds(text: str, what: str) -> int:
    m = _AMOUNT.match(text.strip())
    if not m:
        raise ValueError(f"bad {what} {text.strip()!r}")
    unit = m.group(2) or "s"
    if unit not in UNIT_SECONDS:
        raise ValueError(f"bad unit {unit!r} in {text.strip()!r} (use s, m, h, d, w or y)")
    return int(m.group(1)) * UNIT_SECONDS[unit]


def load_schemas(path: str) -> Schemas:
    """Read and validate a storage-schemas.conf: `Schemas`, or SchemasError naming the line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemasError(f"{path}: cannot read the storage schemas: {exc}") from None
    return parse_schemas(text, path)


def parse_schemas(text: str, source: str = "<storage-schemas>") -> Schemas:
    """The sections of a storage-schemas.conf in file order (carbon's INI dialect)."""
    sections: list[tuple[str, int, dict[str, tuple[str, int]]]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        section = _SECTION.match(line)
        if section:
            sections.append((section.group(1).strip(), number, {}))
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise SchemasError(f"{source}:{number}: expected [section] or key = value: {line!r}")
        if not sections:
            raise SchemasError(f"{source}:{number}: {key.strip()!r} before the first [section]")
        sections[-1][2][key.strip().lower()] = (value.strip(), number)
    return Schemas(tuple(_schema(s, source) for s in sections), source)


def _schema(section: tuple[str, int, dict[str, tuple[str, int]]], source: str) -> Schema:
    name, line, options = section
    if "retentions" not in options:
        raise SchemasError(f"{source}:{line}: [{name}] has no retentions")
    text, where = options["retentions"]
    try:
        ttl = max(parse_retention(part) for part in text.split(","))
    except ValueError as exc:
        raise SchemasError(f"{source}:{where}: [{name}] {exc}") from None
    match_all = options.get("match-all", ("", 0))[0].lower() in ("true", "yes", "on", "1")
    if match_all:
        return Schema(name, line, None, ttl)
    if "pattern" not in options:
        raise SchemasError(f"{source}:{line}: [{name}] has neither pattern nor match-all")
    pattern, where = options["pattern"]
    try:
        return Schema(name, line, re.compile(pattern), ttl)
    except re.error as exc:
        raise SchemasError(f"{source}:{where}: [{name}] bad pattern {pattern!r}: {exc}") from None
