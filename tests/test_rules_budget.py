"""Series budget: existing series pass, new ones up to the budget per minute, bounded memory."""

from __future__ import annotations

import json

from fastforward.routing import Router, SeenSet, SeriesBudget, TopPrefixes, parse_rules


class Clock:
    """A clock the test moves by hand: no sleeping."""

    def __init__(self, now: float = 6000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_seen_set_remembers_names_in_a_fixed_table():
    seen = SeenSet(capacity=1 << 14)
    assert seen.capacity == 16384
    names = [f"app.host{i}.cpu" for i in range(500)]
    for name in names:
        seen.add(name)
    assert all(name in seen for name in names)
    assert not any(f"other.{i}" in seen for i in range(10_000))  # no false "seen"


def test_seen_set_stays_bounded_beyond_its_capacity_and_forgets_only_some():
    seen = SeenSet(capacity=1 << 10)
    size_before = len(seen._slots)
    for i in range(50_000):
        seen.add(f"n{i}")
    assert len(seen._slots) == size_before == 1024
    assert seen.entries <= seen.capacity
    recent = sum(f"n{i}" in seen for i in range(49_900, 50_000))
    assert recent > 50  # the newest names are mostly still there


def test_seen_set_error_rate_at_half_load_is_small():
    # the documented bound (budget.py): about 1 name in 120 forgotten at 50% load
    seen = SeenSet(capacity=1 << 14)
    names = [f"s{i}" for i in range(seen.capacity // 2)]
    for name in names:
        seen.add(name)
    forgotten = sum(name not in seen for name in names)
    assert forgotten / len(names) < 0.02


def test_budget_admits_up_to_the_limit_per_minute_and_existing_series_always():
    clock = Clock()
    budget = SeriesBudget(3, clock=clock, warmup_seconds=0)
    assert [budget.admit(f"old{i}") for i in range(3)] == [True, True, True]
    assert budget.admit("new0") is False  # the minute's budget is spent
    assert all(budget.admit(f"old{i}") for i in range(3))  # existing series untouched
    assert budget.admit("new0") is False
    clock.now += 60  # next minute
    assert budget.admit("new0") is True  # a refused name is new again, and admitted now
    snap = budget.snapshot()
    assert snap["new_this_minute"] == 1 and snap["refused_total"] == 2
    assert snap["per_minute"] == [{"minute": 6000 // 60 * 60, "new": 3, "refused": 2}]


def test_warmup_learns_existing_series_without_refusing():
    clock = Clock()
    budget = SeriesBudget(2, clock=clock, warmup_seconds=300)
    assert all(budget.admit(f"s{i}") for i in range(10))  # a restart: all known series flow
    assert budget.snapshot()["learning"] is True
    clock.now += 300
    assert all(budget.admit(f"s{i}") for i in range(10))  # learnt: not new any more
    assert [budget.admit(f"new{i}") for i in range(3)] == [True, True, False]


def test_top_prefixes_are_bounded_and_find_the_heavy_hitter():
    top = TopPrefixes(k=3)
    for i in range(1000):
        top.add("bad.sender" if i % 2 else f"p{i}")
    ranked = top.top()
    assert len(ranked) == 3
    assert ranked[0]["prefix"] == "bad.sender" and ranked[0]["new_series"] >= 500


BUDGETED = """
[[rule]]
match = "prefix:app."
tenant = "1"
max_new_series_per_minute = 1000
"""


def test_router_budget_5000_new_names_under_1000_per_minute():
    clock = Clock()
    r = Router(parse_rules(BUDGETED), clock=clock, budget_options={"warmup_seconds": 0})
    existing = [f"app.old.{i}" for i in range(100)]
    for name in existing:
        assert r.decide(name).drop is None
    clock.now += 60
    new = [f"app.burst.{i}" for i in range(5000)]
    passed = sum(r.decide(name).drop is None for name in new)
    assert passed == 1000  # the budget, exactly: the table is far from full
    refused = r.decide("app.burst.4999")
    assert (refused.drop, refused.tenant, refused.rule) == ("series_budget", "1", 0)
    assert all(r.decide(name).drop is None for name in existing)  # existing series unaffected
    assert r.decide("other.x").drop is None  # names outside the rule have no budget
    report = json.loads(json.dumps(r.series_report()))  # what GET /debug/series serves
    assert [(x["rule"], x["match"]) for x in report] == [(1, "prefix:app.")]
    assert report[0]["new_this_minute"] == 1000 and report[0]["refused_this_minute"] == 4001
    assert report[0]["top_prefixes"][0] == {"prefix": "app.burst", "new_series": 1000, "error": 0}
    clock.now += 60
    # next minute: the 1000 admitted are existing series now, and 1000 more are new
    assert sum(r.decide(name).drop is None for name in new) == 2000


def test_budget_counts_a_name_once_even_after_the_cache_forgets_it():
    clock = Clock()
    r = Router(
        parse_rules(BUDGETED), clock=clock, cache_size=10, budget_options={"warmup_seconds": 0}
    )
    for i in range(500):
        r.decide(f"app.{i}")
    for i in range(500):  # evicted from the decision cache long ago: still known as existing
        assert r.decide(f"app.{i}").drop is None
    assert r.series_report()[0]["new_this_minute"] == 500


def test_a_reload_keeps_what_the_budget_learnt_for_the_same_rule():
    clock = Clock()
    opts = {"warmup_seconds": 0}
    old = Router(parse_rules(BUDGETED), clock=clock, budget_options=opts)
    for i in range(1000):
        old.decide(f"app.{i}")
    new = Router(
        parse_rules(BUDGETED + '\n[[rule]]\nmatch = "*"\n'),
        clock=clock,
        previous=old,
        budget_options=opts,
    )
    assert new.decide("app.0").drop is None  # seen before the reload
    assert new.decide("app.new").drop == "series_budget"  # the minute's budget stays spent
    changed = Router(
        parse_rules(BUDGETED.replace("1000", "5")), clock=clock, previous=old, budget_options=opts
    )
    assert changed.series_report()[0]["new_total"] == 0  # another limit: a fresh budget
