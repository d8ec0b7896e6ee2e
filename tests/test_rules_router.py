"""Routing decisions: first match in file order, rewrite, tags, TTLs, drops and the cache."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastforward.routing import Router, first_match_naive, parse_rules, parse_schemas
from fastforward.routing.tags import split_tags
from tests.support import ROUTING_RULES

RULES = (
    ROUTING_RULES
    + r"""
[[rule]]
match = "prefix:app.web."
tenant = "333"

[[rule]]
match = "prefix:app."
tenant = "444"
ttl = 60
"""
)


def router(text: str = RULES, **kwargs) -> Router:
    return Router(parse_rules(text), **kwargs)


def test_prefix_rules_route_to_their_tenant_and_ttl():
    r = router()
    d = r.decide("app.web.requests")
    assert (d.name, d.tenant, d.ttl, d.drop, d.rule) == ("app.web.requests", "333", None, None, 3)
    d = r.decide("app.db.queries")
    assert (d.tenant, d.ttl, d.rule) == ("444", 60, 4)


def test_regex_rewrite_uses_group_references():
    d = router().decide("db.mysql.queries.count")
    assert (d.name, d.tenant, d.ttl, d.rule) == ("databases.mysql.queries.count", "222", 604800, 1)


def test_named_groups_in_rewrite():
    r = router(
        '[[rule]]\nmatch = "regex:^(?P<host>[^.]+)\\\\.(?P<m>.*)$"\n'
        'rewrite = "\\\\g<m>.by_host.\\\\g<host>"\n'
    )
    assert r.decide("web01.cpu.user").name == "cpu.user.by_host.web01"


REWRITE_PARTS = [r"\1", r"\2", r"\g<0>", r"\g<host>", r"\g<3>", "x", ".", "{", "}}", "{0}",
                 r"\\", r"\n", r"\&", r"\012", r"\0", "\u00e9", r"\g<1>0"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(REWRITE_PARTS), min_size=1, max_size=8),
    st.sampled_from(["web01.cpu.user", "web01.cpu", "a.b.c.d.e", "x{y}.z", "host.{0}.\u00e9"]),
)
def test_a_rewrite_parsed_once_expands_as_python_expands_it(parts, name):
    """The template is parsed at load (Match.expand parses it again on every call before
    Python 3.12): the name it makes is Python's, escapes, octal, braces and unmatched groups
    included."""
    regex = r"^(?P<host>[^.{]+)\.([^.]+)(?:\.(.*))?$"
    text = "".join(parts)
    rules = parse_rules(f"[[rule]]\nmatch = {json.dumps('regex:' + regex)}\n"
                        f"rewrite = {json.dumps(text)}\n")  # fmt: skip
    rule = rules.rules[0]
    assert rule.rewrite_fmt is not None
    found = rule.regex.search(name) if rule.regex is not None else None
    if found is not None:
        assert rule.expand(found) == found.expand(text)


def test_a_name_no_rule_matches_goes_to_the_default_tenant_unchanged():
    d = router().decide("other.metric")
    assert (d.name, d.tenant, d.ttl, d.drop, d.rule) == ("other.metric", None, None, None, None)


def test_blocklist_and_allowlist():
    assert router().decide("junk.x").drop == "rule"
    allow = router('[[rule]]\nmatch = "prefix:keep."\n\n[[rule]]\nmatch = "*"\ndrop = true\n')
    assert allow.decide("keep.me").drop is None
    d = allow.decide("anything.else")
    assert (d.drop, d.rule) == ("rule", 1)


def test_tag_rules_match_normalised_tags_and_both_orders_make_one_name():
    r = router()
    a, b = r.decide("cpu;host=a;env=prod"), r.decide("cpu;env=prod;host=a")
    assert a == b
    assert (a.name, a.tenant, a.rule) == ("cpu;env=prod;host=a", "prod", 2)


@pytest.mark.parametrize(
    ("policy", "name"),
    [("keep", "cpu;env=dev;host=a"), ("strip", "cpu"), ("flatten", "cpu.env_is_dev.host_is_a")],
)
def test_tag_policies_apply_to_the_final_name(policy, name):
    assert router(tags=policy).decide("cpu;host=a;env=dev").name == name


def test_invalid_tags_are_dropped_as_carbon_would():
    d = router().decide("cpu;host")
    assert (d.drop, d.rule) == ("bad_tags", None)


def test_rewrite_that_empties_the_name_is_dropped():
    r = router('[[rule]]\nmatch = "regex:^gone\\\\.(.*)$"\nrewrite = "\\\\1"\n')
    assert r.decide("gone.").drop == "empty_name"
    assert r.decide("gone.x").name == "x"


def test_rewritten_tags_are_normalised_again():
    r = router('[[rule]]\nmatch = "regex:^(.*)$"\nrewrite = "\\\\1;z=1;a=2"\n')
    assert r.decide("m").name == "m;a=2;z=1"


def test_storage_schemas_set_the_ttl_where_no_rule_does():
    schemas = parse_schemas(
        "[dbs]\npattern = ^databases\\.\nretentions = 1m:30d\n\n"
        "[all]\npattern = .*\nretentions = 1m:1y\n"
    )
    r = router(schemas=schemas)
    assert r.decide("db.pg.x").ttl == 604800  # the rule's own TTL wins
    assert r.decide("app.web.x").ttl == 365 * 86400  # no TTL in the rule: the schema's
    assert r.decide("other").ttl == 365 * 86400
    r2 = router(
        '[[rule]]\nmatch = "regex:^db\\\\.(.*)$"\nrewrite = "databases.\\\\1"\n', schemas=schemas
    )
    assert r2.decide("db.x").ttl == 30 * 86400  # schemas see the name after rewrite


def test_cache_returns_the_same_decision_and_stays_bounded():
    r = router(cache_size=100)
    first = r.decide("app.web.x")
    assert r.decide("app.web.x") is first
    for i in range(1000):
        r.decide(f"app.web.n{i}")
        assert r.cache_entries() <= 100
    assert r.decide("app.web.x") == first  # forgotten, decided again: the same answer


def test_prefix_index_keeps_file_order_over_longer_prefixes():
    r = router(
        '[[rule]]\nmatch = "prefix:a."\ntenant = "1"\n\n'
        '[[rule]]\nmatch = "prefix:a.b."\ntenant = "2"\n'
    )
    assert r.decide("a.b.c").tenant == "1"  # first match, not longest match


# -- the indexed matcher against trying every rule in order ------------------------------------

_alphabet = "ab.;=x"
_prefixes = st.text(alphabet="ab.x", min_size=1, max_size=5)
_regexes = st.sampled_from(["^a", "b$", r"\.x", "a.*b", "^x?a\\.", "=", ";", "^$", "bb"])
_tags = st.tuples(st.sampled_from(["a", "b", "env"]), st.sampled_from(["1", "2", "prod"]))
_match = st.one_of(
    _prefixes.map(lambda p: "prefix:" + p),
    _regexes.map(lambda r: "regex:" + r),
    _tags.map(lambda kv: f"tag:{kv[0]}={kv[1]}"),
    st.just("*"),
)
_names = st.tuples(
    st.text(alphabet="ab.x", min_size=1, max_size=8),
    st.lists(_tags, max_size=3),
).map(lambda nt: nt[0] + "".join(f";{k}={v}" for k, v in nt[1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_match, max_size=12), st.lists(_names, min_size=1, max_size=10))
def test_indexed_first_match_equals_the_naive_scan(matches, names):
    text = "".join(f"[[rule]]\nmatch = {json.dumps(m)}\n\n" for m in matches)
    rules = parse_rules(text)
    r = Router(rules)
    for name in names:
        metric, tags = split_tags(name)
        canonical = metric + "".join(f";{k}={v}" for k, v in tags)
        assert r.first_match(canonical, tags) == first_match_naive(rules, canonical, tags)
        assert r.decide(name).rule == first_match_naive(rules, canonical, tags)
