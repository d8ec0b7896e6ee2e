"""The rules file (``--rules FILE``, TOML): parsing and validation, nothing else.

The contract users write (docs/rules.md)::

    [[rule]]
    match = "prefix:app.web."        # or "regex:...", "tag:k=v", "*"
    tenant = "222"                   # optional
    rewrite = "databases.\\1.\\2"    # optional, regex rules only
    ttl = 604800                     # optional, seconds, > 0
    drop = false                     # optional
    max_new_series_per_minute = 1000 # optional, > 0

    [tenant."222"]                   # optional: this tenant's own identity credentials
    user = "svc-222"
    key_env = "FF_KEY_222"           # or password_env: the environment variable, never the secret

Every error names the file and line: TOML syntax errors carry tomllib's line and column; an
error in rule N names the line of its key, or of the Nth ``[[rule]]`` header.
`load_rules` either returns a complete `Rules` or raises `RulesError`, so a reload can swap the
whole set at once and keep the old one on error.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..checks import MAX_TENANT_BYTES, tenant_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "Credentials",
    "KINDS",
    "MAX_TENANT_BYTES",
    "Rule",
    "Rules",
    "RulesError",
    "load_rules",
    "parse_rules",
    "tenant_problem",
]

KINDS = ("prefix", "regex", "tag", "all")
_KEYS = ("match", "tenant", "rewrite", "ttl", "drop", "max_new_series_per_minute")
_CREDENTIAL_KEYS = ("user", "key_env", "password_env")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `[[rule]]`, possibly spaced or followed by a comment: how rule N's line is found.
_RULE_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]\s*(?:#.*)?$")
# \1 .. \99 and \g<name> / \g<1> in a rewrite (Python's template syntax).
_GROUP_REF = re.compile(r"\\(?:g<([^>]*)>|(\d{1,2}))")


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and line.

    `errors` lists every problem found (one per rule at most); the message is the first one,
    on one line, with a count of the others, as a refusal at start or reload is logged.
    """

    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        message = errors[0]
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more: 'fastforward rules check' lists them)"
        super().__init__(message)


@dataclass(frozen=True)
class Rule:
    """One ``[[rule]]``: `index` is its position (0-based), `match` the text as written."""

    index: int
    match: str
    kind: str  # prefix, regex, tag or all
    line: int  # of its [[rule]] header (0 when not known)
    prefix: str = ""
    regex: re.Pattern[str] | None = None
    tag: tuple[str, str] | None = None
    tenant: str | None = None
    rewrite: str | None = None
    ttl: int | None = None
    drop: bool = False
    max_new_series_per_minute: int | None = None
    # The rewrite parsed once (`rewrite_format`): Match.expand parses it on every call.
    rewrite_fmt: str | None = field(default=None, compare=False, repr=False)

    def expand(self, found: re.Match[str]) -> str:
        """The new name for a match of this rule's regex (``rewrite`` filled in)."""
        assert self.rewrite is not None
        if self.rewrite_fmt is None:
            return found.expand(self.rewrite)
        return self.rewrite_fmt.format(found.group(0), *found.groups(""))

    @property
    def number(self) -> int:
        """The 1-based number users see ("rule 3")."""
        return self.index + 1


@dataclass(frozen=True)
class Credentials:
    """A ``[tenant."ID"]`` table: the identity user of one tenant and the environment variable
    holding its API key or password. The secret itself is never in the file nor in here."""

    tenant: str
    user: str
    key_env: str | None = None
    password_env: str | None = None
    line: int = 0

    @property
    def env(self) -> str:
        """The variable that holds the secret."""
        return self.key_env or self.password_env or ""

    def secret(self, environ: Mapping[str, str], source: str = "<rules>") -> str:
        """The secret from the environment; RulesError (naming the variable, never a value)
        when it is unset or empty."""
        value = environ.get(self.env, "")
        if not value:
            raise RulesError(
                _at(
                    source,
                    self.line,
                    f"tenant {self.tenant!r}: environment variable {self.env} is not set",
                )
            )
        return value


@dataclass(frozen=True)
class Rules:
    """A complete, validated rule set, in file order."""

    rules: tuple[Rule, ...] = ()
    source: str = "<rules>"
    warnings: tuple[str, ...] = field(default=())
    credentials: tuple[Credentials, ...] = ()

    def tenants(self) -> tuple[str, ...]:
        """Every tenant the file names (rules and credentials), in order of appearance."""
        named = [r.tenant for r in self.rules if r.tenant is not None]
        named += [c.tenant for c in self.credentials]
        return tuple(dict.fromkeys(named))

    def __len__(self) -> int:
        return len(self.rules)

    def summary(self) -> str:
        """One line: how many rules of each kind, and what they do."""
        kinds = {k: sum(r.kind == k for r in self.rules) for k in KINDS}
        tenants = sorted({r.tenant for r in self.rules if r.tenant is not None})
        parts = [f"{len(self.rules)} rules"]
        parts += [f"{n} {k}" for k, n in kinds.items() if n]
        parts.append(f"{sum(r.drop for r in self.rules)} drop")
        parts.append(f"{sum(r.rewrite is not None for r in self.rules)} rewrite")
        parts.append(f"{sum(r.max_new_series_per_minute is not None for r in self.rules)} budget")
        parts.append(f"tenants: {', '.join(tenants) if tenants else '(default only)'}")
        if self.credentials:
            own = ", ".join(f"{c.tenant} (user {c.user}, ${c.env})" for c in self.credentials)
            parts.append(f"own credentials: {own}")
        return ", ".join(parts)


def load_rules(path: str) -> Rules:
    """Read and validate a rules file: a complete `Rules`, or `RulesError` naming the line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc}") from None
    return parse_rules(text, path)


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    """Validate the text of a rules file; raises RulesError with ``source:line: problem``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends "(at line L, column C)": keep it, it is the line users need.
        at = re.search(r"at line (\d+)", str(exc))
        raise RulesError(
            _at(source, int(at.group(1)) if at else 0, f"invalid TOML: {exc}")
        ) from None
    lines = text.splitlines()
    headers = [i + 1 for i, line in enumerate(lines) if _RULE_HEADER.match(line)]
    for key in doc:
        if key not in ("rule", "tenant"):
            where = _key_line(lines, key, 0, len(lines)) or 0
            raise RulesError(
                _at(source, where, f"unknown top-level key {key!r} (only [[rule]] and [tenant.ID])")
            )
    credentials = _credentials(doc.get("tenant", {}), source, lines)
    raw = doc.get("rule", [])
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise RulesError(_at(source, 0, "'rule' must be an array of tables: [[rule]]"))
    # Rule N's header line, when the file spells every rule as [[rule]] (it may not: an inline
    # array `rule = [{...}]` is valid TOML too; its errors then name the rule only).
    starts = headers if len(headers) == len(raw) else [0] * len(raw)
    rules, errors = [], []
    for i, r in enumerate(raw):
        try:
            rules.append(_rule(i, r, source, lines, starts))
        except RulesError as exc:
            errors.extend(exc.errors)
    if errors:
        raise RulesError(*errors)
    return Rules(tuple(rules), source, tuple(_warnings(tuple(rules), source)), credentials)


def _credentials(raw: object, source: str, lines: list[str]) -> tuple[Credentials, ...]:
    """The ``[tenant."ID"]`` tables: each tenant's identity user and secret's variable."""
    if not isinstance(raw, dict):
        raise RulesError(_at(source, 0, 'tenant credentials are tables: [tenant."222"]'))
    out, errors = [], []
    for tenant, table in raw.items():
        header = re.compile(rf"^\s*\[\s*tenant\s*\.\s*[\"']?{re.escape(tenant)}[\"']?\s*\]")
        line = next((i + 1 for i, text in enumerate(lines) if header.match(text)), 0)

        def fail(message: str, tenant: str = tenant, line: int = line) -> None:
            errors.append(_at(source, line, f"tenant {tenant!r}: {message}"))

        problem = tenant_problem(tenant)
        if problem:
            fail(f"is not a valid tenant id: it {problem}")
            continue
        if not isinstance(table, dict):
            fail('write a table: [tenant."ID"] with user and key_env or password_env')
            continue
        secrets = [k for k in table if k in ("key", "password", "apikey", "api_key")]
        if secrets:
            fail(
                f"{secrets[0]!r}: secrets are never written in the rules file; name the "
                "environment variable that holds it with key_env or password_env"
            )
            continue
        unknown = [k for k in table if k not in _CREDENTIAL_KEYS]
        if unknown:
            fail(f"unknown key {unknown[0]!r} (known: {', '.join(_CREDENTIAL_KEYS)})")
            continue
        user = table.get("user")
        if not isinstance(user, str) or not user:
            fail("'user' is required (a non-empty string)")
            continue
        envs = {k: table[k] for k in ("key_env", "password_env") if k in table}
        if len(envs) != 1:
            fail("give exactly one of key_env and password_env")
            continue
        ((which, env),) = envs.items()
        if not isinstance(env, str) or not _ENV_NAME.match(env):
            fail(f"{which} must be an environment variable name, not {env!r}")
            continue
        out.append(Credentials(tenant, user, line=line, **{which: env}))
    if errors:
        raise RulesError(*errors)
    return tuple(out)


def _at(source: str, line: int, message: str) -> str:
    return f"{source}:{line}: {message}" if line else f"{source}: {message}"


def _key_line(lines: list[str], key: str, start: int, end: int) -> int | None:
    """The 1-based line where `key = ` is written between lines start and end (0-based)."""
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for i in range(start, end):
        if pattern.match(lines[i]):
            return i + 1
    return None


def _rule(
    index: int, raw: dict[str, object], source: str, lines: list[str], starts: list[int]
) -> Rule:
    header = starts[index]
    end = starts[index + 1] - 1 if index + 1 < len(starts) and starts[index + 1] else len(lines)

    def fail(message: str, key: str | None = None) -> RulesError:
        line = header
        if key is not None and header:
            line = _key_line(lines, key, header, end) or header
        return RulesError(_at(source, line, f"rule {index + 1}: {message}"))

    for key in raw:
        if key not in _KEYS:
            raise fail(f"unknown key {key!r} (known: {', '.join(_KEYS)})", key)
    if "match" not in raw:
        raise fail("'match' is required")
    match = raw["match"]
    if not isinstance(match, str):
        raise fail("'match' must be a string", "match")
    fields: dict[str, object] = {}
    if match == "*":
        kind = "all"
    elif match.startswith("prefix:"):
        kind, fields["prefix"] = "prefix", match[len("prefix:") :]
        if not fields["prefix"]:
            raise fail('"prefix:" needs a prefix (use "*" to match every name)', "match")
    elif match.startswith("regex:"):
        kind = "regex"
        try:
            fields["regex"] = re.compile(match[len("regex:") :])
        except re.error as exc:
            raise fail(f"bad regex {match[len('regex:') :]!r}: {exc}", "match") from None
    elif match.startswith("tag:"):
        kind = "tag"
        key, eq, value = match[len("tag:") :].partition("=")
        if not eq or not key or not value:
            raise fail(f'{match!r}: write "tag:key=value"', "match")
        fields["tag"] = (key, value)
    else:
        raise fail(f'{match!r}: use "prefix:...", "regex:...", "tag:key=value" or "*"', "match")

    tenant = raw.get("tenant")
    if tenant is not None:
        if not isinstance(tenant, str):
            raise fail("'tenant' must be a string (quote numeric ids: tenant = \"222\")", "tenant")
        problem = tenant_problem(tenant)
        if problem:
            raise fail(f"tenant {tenant!r} {problem}", "tenant")
    rewrite = raw.get("rewrite")
    rewrite_fmt = None
    if rewrite is not None:
        if not isinstance(rewrite, str):
            raise fail("'rewrite' must be a string", "rewrite")
        if kind != "regex":
            raise fail("'rewrite' needs a regex rule (match = \"regex:...\")", "rewrite")
        assert isinstance(fields["regex"], re.Pattern)
        problem = _rewrite_problem(fields["regex"], rewrite)
        if problem:
            raise fail(problem, "rewrite")
        rewrite_fmt = rewrite_format(fields["regex"], rewrite)
    ttl = raw.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
        raise fail(f"'ttl' must be a positive whole number of seconds, not {ttl!r}", "ttl")
    drop = raw.get("drop", False)
    if not isinstance(drop, bool):
        raise fail(f"'drop' must be true or false, not {drop!r}", "drop")
    budget = raw.get("max_new_series_per_minute")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0
    ):
        key = "max_new_series_per_minute"
        raise fail(f"'{key}' must be a positive whole number, not {budget!r}", key)
    return Rule(
        index=index,
        match=match,
        kind=kind,
        line=header,
        tenant=tenant,
        rewrite=rewrite,
        rewrite_fmt=rewrite_fmt,
        ttl=ttl,
        drop=drop,
        max_new_series_per_minute=budget,
        **fields,  # type: ignore[arg-type]
    )


_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: a group's mark in a probe
_MARK = re.compile(_OPEN + r"(\d+)" + _CLOSE)


def rewrite_format(regex: re.Pattern[str], rewrite: str) -> str | None:
    """A checked rewrite as a `str.format` string over (the whole match, group 1, group 2,
    ...): filled in per decision without parsing the template again (`Match.expand` parses it
    on every call before Python 3.12, some 5 us). Python's own parser reads the template
    (escapes, ``\\g<name>``, octal): it is expanded once against a probe match whose group N
    is a mark naming N. None (use `Match.expand`) when the template holds a mark character."""
    if _OPEN in rewrite or _CLOSE in rewrite:
        return None
    names = {number: name for name, number in regex.groupindex.items()}
    groups = []
    for n in range(1, regex.groups + 1):
        named = f"?P<{names[n]}>" if n in names else ""
        groups.append(f"(?=.*?({named}{_OPEN}{n}{_CLOSE}))")  # lookaheads: group 0 is mark 0
    marks = "".join(f"{_OPEN}{n}{_CLOSE}" for n in range(regex.groups + 1))
    probe = re.compile(f"{_OPEN}0{_CLOSE}" + "".join(groups), re.DOTALL).match(marks)
    assert probe is not None
    pieces = _MARK.split(probe.expand(rewrite))  # text, group, text, group, ..., text
    return "".join(
        "{" + piece + "}" if i % 2 else piece.replace("{", "{{").replace("}", "}}")
        for i, piece in enumerate(pieces)
    )


def _rewrite_problem(regex: re.Pattern[str], rewrite: str) -> str | None:
    """Why this rewrite cannot be expanded from this regex's groups, or None."""
    if not rewrite:
        return "'rewrite' is empty"
    for named, number in _GROUP_REF.findall(rewrite):
        ref = named if named else number
        if ref.isdigit():
            if int(ref) > regex.groups:
                return f"rewrite refers to group {ref}; the regex has {regex.groups}"
        elif ref not in regex.groupindex:
            return f"rewrite refers to group {ref!r}, which the regex does not define"
    # The rest of the template syntax (stray backslashes) as Python's re checks it.
    try:
        regex.sub(rewrite, "")  # re compiles the template before it searches: no match needed
    except (re.error, IndexError) as exc:
        return f"bad rewrite {rewrite!r}: {exc}"
    return None


def _warnings(rules: tuple[Rule, ...], source: str) -> list[str]:
    """Rules that can never match: everything after the first "*" rule."""
    out = []
    star = next((r for r in rules if r.kind == "all"), None)
    if star is not None:
        for rule in rules[star.index + 1 :]:
            out.append(
                _at(
                    source,
                    rule.line,
                    f"rule {rule.number} never matches: rule {star.number} "
                    f'(match = "*") comes first',
                )
            )
    return out
