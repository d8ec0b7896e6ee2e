"""`fastforward rules check FILE` and `fastforward rules test FILE NAME...`.

check: validates the rules file (and --storage-schemas), prints ``OK`` with a summary, or every
error with its line and exits 2. test: shows what the daemon would do with each name: the rule
that matched (number and match text), the final name, tenant and TTL, or the drop and why.
Budgets are not applied by `test` (they depend on traffic, not on the name).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import EXIT_OK, EXIT_USAGE
from .routing.router import Router
from .routing.ruleset import Rules, RulesError, load_rules, tenant_problem
from .routing.schemas import Schemas, SchemasError, load_schemas
from .routing.tags import TAG_POLICIES

_DROP_WHY = {
    "rule": "the rule says drop = true",
    "bad_tags": "its Graphite tags are invalid (carbon would refuse them)",
    "empty_name": "the rewrite leaves an empty name",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastforward rules", description="Check a rules file, or test names against it."
    )
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a rules file; exit 2 on errors")
    check.add_argument("file", help="the rules file (TOML)")
    check.add_argument("--storage-schemas", metavar="FILE", help="carbon's storage-schemas.conf")
    test = sub.add_parser("test", help="show what happens to each metric name")
    test.add_argument("file", help="the rules file (TOML)")
    test.add_argument("names", nargs="+", metavar="NAME", help="metric names to route")
    test.add_argument("--storage-schemas", metavar="FILE", help="carbon's storage-schemas.conf")
    test.add_argument(
        "-t",
        "--default-tenant",
        "--tenant",
        default=None,
        metavar="T",
        help="the daemon's -t, shown for names no rule routes elsewhere",
    )
    test.add_argument("--tags", choices=TAG_POLICIES, default="keep", help="tag policy")
    return p


def _load(args: argparse.Namespace) -> tuple[Rules, Schemas | None]:
    rules = load_rules(args.file)
    schemas = load_schemas(args.storage_schemas) if args.storage_schemas else None
    return rules, schemas


def main(argv: Sequence[str]) -> int:
    """Entry point of `fastforward rules ...`; returns the exit code."""
    args = _parser().parse_args(argv)  # exits 2 on bad usage, as argparse does
    try:
        rules, schemas = _load(args)
    except RulesError as exc:
        for error in exc.errors:
            print(f"fastforward rules: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SchemasError as exc:
        print(f"fastforward rules: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check":
        for warning in rules.warnings:
            print(f"warning: {warning}")
        print(f"OK: {args.file}: {rules.summary()}")
        if schemas is not None:
            print(f"OK: {args.storage_schemas}: {len(schemas.schemas)} schemas")
        return EXIT_OK
    default = args.default_tenant
    if default is not None and tenant_problem(default):
        print(
            f"fastforward rules: --default-tenant {default!r} {tenant_problem(default)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    router = Router(rules, tags=args.tags, schemas=schemas)
    for name in args.names:
        print(_describe(router, name, default))
    return EXIT_OK


def _describe(router: Router, name: str, default_tenant: str | None) -> str:
    d = router.compute(name)
    if d.rule is None:
        matched = "no rule matched"
    else:
        rule = router.rules.rules[d.rule]
        matched = f"rule {rule.number} (line {rule.line}, match = {rule.match!r})"
    if d.drop is not None:
        return f"{name}: DROPPED ({d.drop}: {_DROP_WHY.get(d.drop, d.drop)}); {matched}"
    if d.tenant is not None:
        tenant = d.tenant
    else:
        tenant = f"{default_tenant} (default)" if default_tenant else "(the default tenant)"
    ttl = "default" if d.ttl is None else f"{d.ttl} s"
    return f"{name}: {matched} -> name {d.name!r}, tenant {tenant}, ttl {ttl}"
