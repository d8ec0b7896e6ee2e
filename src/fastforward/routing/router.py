"""The routing decision for a metric name: which rule, which name, tenant and TTL, or a drop.

Order of work for a name (docs/rules.md): tags to carbon's normal form; the first rule whose
match accepts the normalised name decides (prefix and regex rules see the whole normalised name,
tags included; tag rules see its tags); a regex rule's rewrite makes the new name (normalised
again if it carries tags); the --tags policy; the TTL from the rule, else from the storage
schemas (matched against the name after rewrite, with its tags), else None (the daemon's own
TTL); a budgeted rule admits the name or refuses it. The -p prefix is the caller's, afterwards.

First match without scanning every rule: prefix rules sit in a dict keyed by prefix, probed
once per distinct prefix length (the cost grows with the number of distinct lengths, at most
the longest prefix, not with the number of rules); tag rules in a dict keyed by (key, value);
only regex rules are tried in turn, and only those before the best indexed match. The answer is
the same as trying every rule in file order (tests/test_rules_router.py checks it).

Decisions are cached per name in two generations of at most ``cache_size // 2`` names each: a
name seen recently costs one dict lookup; when the young generation is full it becomes the old
one and the previous old one is forgotten (an approximate LRU with a hard bound). Names a
series budget refused are kept apart (at most ``cache_size // 2`` more, cleared when full), so
they are not decided again while their datapoints keep arriving, and not cached as admitted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._codec_rules import ROUTING_DROP_REASONS
from .budget import SeriesBudget
from .ruleset import Rule, Rules
from .schemas import Schemas
from .tags import TagError, join_tags, split_tags, tag_policy

__all__ = ["DEFAULT_CACHE_SIZE", "Decision", "Router", "first_match_naive", "rule_matches"]

DEFAULT_CACHE_SIZE = 200_000  # decisions; about 150-250 bytes each with the name
DROP_RULE, DROP_BUDGET, DROP_BAD_TAGS, DROP_EMPTY = ROUTING_DROP_REASONS  # the codec's names
_NONE = 1 << 62  # "no rule matched" while looking for the smallest index


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one metric name.

    `name` is the final name (before -p), `tenant` None for the default tenant, `ttl` None for
    the daemon's default TTL, `drop` None or the reason (rule, series_budget, bad_tags,
    empty_name), `rule` the 0-based index of the deciding rule or None when no rule matched.
    """

    name: str
    tenant: str | None
    ttl: int | None
    drop: str | None
    rule: int | None


def rule_matches(rule: Rule, name: str, tags: tuple[tuple[str, str], ...]) -> bool:
    """Does this rule accept this (normalised) name? The plain definition, rule by rule."""
    if rule.kind == "all":
        return True
    if rule.kind == "prefix":
        return name.startswith(rule.prefix)
    if rule.kind == "regex":
        assert rule.regex is not None
        return rule.regex.search(name) is not None
    return rule.tag in tags


def first_match_naive(rules: Rules, name: str, tags: tuple[tuple[str, str], ...]) -> int | None:
    """The index of the first rule accepting the name, trying every rule in order."""
    for rule in rules.rules:
        if rule_matches(rule, name, tags):
            return rule.index
    return None


class Router:
    """Decides and caches; one per loaded rule set (a reload builds a new one)."""

    def __init__(
        self,
        rules: Rules,
        *,
        tags: str = "keep",
        schemas: Schemas | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
        previous: Router | None = None,
        budget_options: dict[str, object] | None = None,
    ) -> None:
        self.rules = rules
        self.schemas = schemas
        self.tags = tags
        self._policy = tag_policy(tags)
        self._half = max(1, cache_size // 2)
        self._young: dict[str, Decision] = {}
        self._old: dict[str, Decision] = {}
        self._refused: dict[str, Decision] = {}  # budgeted names refused: decided, not admitted
        prefix_first: dict[str, int] = {}
        tag_first: dict[tuple[str, str], int] = {}
        self._star = _NONE
        self._regexes: list[tuple[int, re.Pattern[str]]] = []
        for rule in rules.rules:
            if rule.kind == "prefix":
                prefix_first.setdefault(rule.prefix, rule.index)
            elif rule.kind == "tag":
                assert rule.tag is not None
                tag_first.setdefault(rule.tag, rule.index)
            elif rule.kind == "regex":
                assert rule.regex is not None
                self._regexes.append((rule.index, rule.regex))
            elif self._star == _NONE:
                self._star = rule.index
        self._prefix_first = prefix_first
        self._prefix_lengths = tuple(sorted({len(p) for p in prefix_first}))
        self._tag_first = tag_first
        # Budgets carry over a reload for rules with the same match text (and limit): series
        # already seen stay seen, and this minute's spending is not reset by a SIGHUP.
        kept = {}
        if previous is not None:
            kept = {
                (previous.rules.rules[i].match, b.limit): b for i, b in previous.budgets.items()
            }
        self.budgets: dict[int, SeriesBudget] = {}
        for rule in rules.rules:
            if rule.max_new_series_per_minute is not None and not rule.drop:
                key = (rule.match, rule.max_new_series_per_minute)
                self.budgets[rule.index] = kept.get(key) or SeriesBudget(
                    rule.max_new_series_per_minute,
                    clock=clock,
                    **(budget_options or {}),  # type: ignore[arg-type]
                )

    def first_match(self, name: str, tags: tuple[tuple[str, str], ...] = ()) -> int | None:
        """Index of the first rule accepting the normalised name (same as first_match_naive)."""
        best = self._star
        prefix_first = self._prefix_first
        for length in self._prefix_lengths:
            if length > len(name):
                break
            i = prefix_first.get(name[:length])
            if i is not None and i < best:
                best = i
        for tag in tags:
            i = self._tag_first.get(tag)
            if i is not None and i < best:
                best = i
        for i, regex in self._regexes:
            if i >= best:
                break
            if regex.search(name):
                best = i
                break
        return None if best == _NONE else best

    def decide(self, name: str) -> Decision:
        """The decision for a metric name; one dict lookup for a name decided recently."""
        decision = self._young.get(name)
        if decision is not None:
            return decision
        return self._miss(name)

    def _miss(self, name: str) -> Decision:
        decision = self._old.pop(name, None)  # admitted before: no budget check again
        if decision is None:
            decision = self._refused.pop(name, None) or self.compute(name)
            budget = self.budgets.get(decision.rule) if decision.drop is None else None  # type: ignore[arg-type]
            if budget is not None and not budget.admit(decision.name):
                if len(self._refused) >= self._half:
                    self._refused.clear()
                self._refused[name] = decision
                return Decision(
                    decision.name, decision.tenant, decision.ttl, DROP_BUDGET, decision.rule
                )
        if len(self._young) >= self._half:
            self._old = self._young
            self._young = {}
        self._young[name] = decision
        return decision

    def compute(self, name: str) -> Decision:
        """The decision without cache or budget (what `fastforward rules test` shows)."""
        try:
            metric, tags = split_tags(name)
        except TagError:
            return Decision(name, None, None, DROP_BAD_TAGS, None)
        canonical = join_tags(metric, tags) if tags else metric
        index = self.first_match(canonical, tags)
        rule = None if index is None else self.rules.rules[index]
        tenant = ttl = None
        if rule is not None:
            if rule.drop:
                return Decision(canonical, rule.tenant, rule.ttl, DROP_RULE, index)
            tenant, ttl = rule.tenant, rule.ttl
            if rule.rewrite is not None:
                assert rule.regex is not None
                found = rule.regex.search(canonical)
                assert found is not None  # the rule matched this very name
                rewritten = rule.expand(found)
                try:
                    metric, tags = split_tags(rewritten)
                except TagError:
                    return Decision(rewritten, tenant, ttl, DROP_BAD_TAGS, index)
                canonical = join_tags(metric, tags) if tags else metric
        if not metric:
            return Decision(canonical, tenant, ttl, DROP_EMPTY, index)
        if ttl is None and self.schemas is not None:
            ttl = self.schemas.ttl_for(canonical)
        final = self._policy(metric, tags) if tags else metric
        return Decision(final, tenant, ttl, None, index)

    def series_report(self) -> list[dict[str, object]]:
        """Per budgeted rule, what GET /debug/series shows (JSON-ready)."""
        report = []
        for index, budget in sorted(self.budgets.items()):
            rule = self.rules.rules[index]
            report.append({"rule": rule.number, "match": rule.match, **budget.snapshot()})
        return report

    def cache_entries(self) -> int:
        return len(self._young) + len(self._old)
