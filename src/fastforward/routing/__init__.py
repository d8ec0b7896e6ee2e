"""Routing rules for Blueflood tenants: the rules file, tags, storage schemas, series budgets.

Pure modules with no I/O beyond reading the two files; the daemon calls `Router.decide` once
per distinct metric name (docs/rules.md has the contract users write).
"""

from __future__ import annotations

from .budget import SeenSet, SeriesBudget, TopPrefixes
from .router import DEFAULT_CACHE_SIZE, Decision, Router, first_match_naive
from .ruleset import Credentials, Rule, Rules, RulesError, load_rules, parse_rules, tenant_problem
from .schemas import Schemas, SchemasError, load_schemas, parse_schemas
from .tags import TAG_POLICIES, TagError, normalise, split_tags

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "Credentials",
    "TAG_POLICIES",
    "Decision",
    "Router",
    "Rule",
    "Rules",
    "RulesError",
    "Schemas",
    "SchemasError",
    "SeenSet",
    "SeriesBudget",
    "TagError",
    "TopPrefixes",
    "first_match_naive",
    "load_rules",
    "load_schemas",
    "normalise",
    "parse_rules",
    "parse_schemas",
    "split_tags",
    "tenant_problem",
]
