#!/usr/bin/env python3
"""The routing benchmark's rules file and the names that exercise it (standard library only).

Rules: 100 prefix rules (``prefix:team{i}.``; every fifth gives a tenant ``t{i}`` and a TTL,
optionally one in twenty drops) and 10 regex rules (``regex:^svc{j}\\.([^.]+)\\.(.*)$``
rewritten to ``services.svc{j}.\\1.\\2``, tenant ``s{j}``), interleaved: a regex rule every
ten prefix rules, so most names try a few regexes before their prefix is found.

Names (`routed_names`, the load generator's ``--names routed``): a quarter each of
``team{k}.hostN.cpu.user`` (k up to 119: some match no prefix rule), ``svc{k}.apiN.latency.p99``
(k up to 11: some match no regex), ``other.appN.requests`` (no rule) and
``carbon.agents.aN.x`` (no rule); every third carries three Graphite tags in an order that is
not carbon's (``;host=..;env=..;dc=..``), so tag normalisation runs. Every name is distinct and
stays distinct after routing (rewrites and tag sorting map distinct names to distinct names,
and no rule drops), so the sink can still tell loss from duplication.

    python3 bench/rulesgen.py rules.toml      # write the end-to-end benchmark's rules file
"""

from __future__ import annotations

import sys


def rules_text(
    prefixes: int = 100, regexes: int = 10, drops: bool = True, tenants: bool = True
) -> str:
    """The rules file; ``drops=False`` for end-to-end runs (every datapoint must arrive),
    ``tenants=False``: the same rules without a tenant (everything to ``-t``)."""
    parts = []
    for i in range(prefixes):
        if i % 10 == 0 and i // 10 < regexes:
            j = i // 10
            parts.append(
                f'[[rule]]\nmatch = "regex:^svc{j}\\\\.([^.]+)\\\\.(.*)$"\n'
                f'rewrite = "services.svc{j}.\\\\1.\\\\2"\n'
                + (f'tenant = "s{j}"\n' if tenants else "")
            )
        rule = f'[[rule]]\nmatch = "prefix:team{i}."\n'
        if drops and i % 20 == 19:
            rule += "drop = true\n"
        elif i % 5 == 0:
            rule += (f'tenant = "t{i}"\n' if tenants else "") + "ttl = 604800\n"
        parts.append(rule)
    return "\n".join(parts)


def routed_names(count: int) -> list[str]:
    """``count`` distinct names for the rules above (see the module docstring)."""
    out = []
    for s in range(count):
        kind, k = s % 4, s // 4
        if kind == 0:
            name = f"team{k % 120}.host{s}.cpu.user"
        elif kind == 1:
            name = f"svc{k % 12}.api{s}.latency.p99"
        elif kind == 2:
            name = f"other.app{s}.requests"
        else:
            name = f"carbon.agents.a{s}.x"
        if s % 3 == 0:  # carbon's order is dc, env, host
            name += f";host=h{s % 200};env={'prod' if s % 2 else 'dev'};dc=dc{s % 4}"
        out.append(name)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], "w") as f:
        f.write(rules_text(drops=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
