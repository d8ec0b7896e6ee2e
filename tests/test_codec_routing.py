"""Routing in the codec (--rules, issue 13), on both implementations: names routed to their
tenant's bodies with their final names and TTLs, routing drops counted per tenant, the series
budget asked again for refused names, the decision cache and its bound, and the totals the
memory cap reads (docs/architecture.md, "Routing in the codec").
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from dataclasses import dataclass

import pytest

from fastforward.routing import Router, parse_rules, parse_schemas

NOW_S = 1_700_000_000
NOW = NOW_S * 1000

RULES = r"""
[[rule]]
match = "prefix:app.web."
tenant = "111"

[[rule]]
match = "regex:^db\\.([^.]+)\\.(.*)$"
rewrite = "databases.\\1.\\2"
tenant = "222"
ttl = 604800

[[rule]]
match = "tag:env=prod"
tenant = "333"

[[rule]]
match = "prefix:noise."
drop = true
tenant = "111"

[[rule]]
match = "regex:^gone\\.(.*)$"
rewrite = "\\1"

[[rule]]
match = "prefix:budget."
tenant = "444"
max_new_series_per_minute = 2
"""


@dataclass(frozen=True)
class D:
    """A decision as a hand-written router returns it."""

    name: str
    tenant: str | None = None
    ttl: int | None = None
    drop: str | None = None


class Clock:
    def __init__(self, now: float = NOW_S) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counting:
    """Wraps a router and counts the names it is asked about."""

    def __init__(self, router) -> None:
        self.router = router
        self.asked: Counter[str] = Counter()

    def __call__(self, name: str):
        self.asked[name] += 1
        return self.router(name)


def rules_router(text: str = RULES, **kwargs) -> Router:
    kwargs.setdefault("budget_options", {"warmup_seconds": 0})
    return Router(parse_rules(text), **kwargs)


def encoder(impl, router, **kwargs):
    return impl.Encoder(router=router, max_past_ms=-1, max_future_ms=-1, **kwargs)


def frame(*items, protocol: int = 2) -> bytes:
    return pickle.dumps(list(items), protocol=protocol)


def lines(*names: str, value: int = 1) -> bytes:
    return b"".join(b"%s %d %d\n" % (n.encode(), value, NOW_S) for n in names)


def by_tenant(enc, partial: bool = True) -> dict[str | None, list[dict]]:
    """take_routed as tenant -> the datapoints of its bodies in order (bodies checked)."""
    out: dict[str | None, list[dict]] = {}
    for tenant, body, count in enc.take_routed(partial):
        items = json.loads(body)
        assert len(items) == count
        out.setdefault(tenant, []).extend(items)
    return out


def names_by_tenant(enc) -> dict[str | None, list[str]]:
    return {t: [i["metricName"] for i in items] for t, items in by_tenant(enc).items()}


def test_rules_route_names_to_their_tenants_from_frames_and_lines(codec_impl):
    enc = encoder(codec_impl, rules_router().decide)
    names = ["app.web.hits", "db.users.reads", "cpu;host=a;env=prod", "other.thing"]
    enc.add_pickle(frame(*[(n, (NOW_S, 1.5)) for n in names]), now_ms=NOW)
    enc.add_lines(lines(*names), now_ms=NOW)
    assert names_by_tenant(enc) == {
        "111": ["app.web.hits"] * 2,
        "222": ["databases.users.reads"] * 2,
        "333": ["cpu;env=prod;host=a"] * 2,  # tags in carbon's order
        None: ["other.thing"] * 2,
    }
    assert enc.counters()["accepted"] == 8


def test_a_star_rule_takes_every_name_left(codec_impl):
    router = rules_router(
        '[[rule]]\nmatch = "prefix:a."\ntenant = "1"\n\n[[rule]]\nmatch = "*"\ntenant = "2"\n'
    )
    enc = encoder(codec_impl, router.decide)
    enc.add_lines(lines("a.x", "b.y", "c.z"), now_ms=NOW)
    assert names_by_tenant(enc) == {"1": ["a.x"], "2": ["b.y", "c.z"]}


def test_the_prefix_is_put_in_front_after_routing(codec_impl):
    enc = encoder(codec_impl, rules_router().decide, prefix="pre")
    enc.add_pickle(frame(("app.web.hits", (NOW_S, 1)), ("db.a.b", (NOW_S, 2))), now_ms=NOW)
    assert names_by_tenant(enc) == {"111": ["pre.app.web.hits"], "222": ["pre.databases.a.b"]}


def test_ttl_from_the_rule_then_the_storage_schemas_then_the_encoder(codec_impl):
    schemas = parse_schemas("[carbon]\npattern = ^carbon\\.\nretentions = 60:90d\n")
    enc = encoder(codec_impl, rules_router(schemas=schemas).decide, ttl=1234)
    enc.add_lines(lines("db.a.b", "carbon.agents.x", "app.web.x"), now_ms=NOW)
    ttls = {i["metricName"]: i["ttlInSeconds"] for items in by_tenant(enc).values() for i in items}
    assert ttls == {"databases.a.b": 604800, "carbon.agents.x": 90 * 86400, "app.web.x": 1234}


def test_a_drop_rule_is_counted_for_its_tenant_and_sampled(codec_impl):
    enc = encoder(codec_impl, rules_router().decide)
    enc.add_pickle(frame(("noise.a", (NOW_S, 1), (NOW_S, 2)), ("app.web.a", (NOW_S, 3))), NOW)
    enc.add_lines(lines("noise.b"), now_ms=NOW)
    assert names_by_tenant(enc) == {"111": ["app.web.a"]}
    assert enc.counters()["rule"] == 3
    assert enc.counters_by_tenant()["111"] == {
        "accepted": 1,
        "rule": 3,
        "series_budget": 0,
        "bad_tags": 0,
        "empty_name": 0,
    }
    rejects = enc.take_rejects()
    assert ("rule", b"noise.a") in rejects
    assert ("rule", b"noise.b 1 %d" % NOW_S) in rejects


def test_bad_tags_and_an_empty_rewritten_name_are_dropped_and_counted(codec_impl):
    enc = encoder(codec_impl, rules_router().decide)
    enc.add_pickle(frame(("cpu;novalue", (NOW_S, 1)), ("gone.", (NOW_S, 1))), now_ms=NOW)
    enc.add_lines(lines("gone.kept"), now_ms=NOW)
    assert names_by_tenant(enc) == {None: ["kept"]}
    counters = enc.counters()
    assert (counters["bad_tags"], counters["empty_name"], counters["accepted"]) == (1, 1, 1)
    assert enc.counters_by_tenant()[None]["bad_tags"] == 1
    assert enc.counters_by_tenant()[None]["empty_name"] == 1
    assert {r for r, _ in enc.take_rejects()} == {"bad_tags", "empty_name"}


def test_value_and_timestamp_drops_come_before_routing(codec_impl):
    router = Counting(rules_router().decide)
    enc = encoder(codec_impl, router)
    enc.add_pickle(frame(("noise.a", (NOW_S, None)), ("app.web.a", ("x", 1))), now_ms=NOW)
    counters = enc.counters()
    assert (counters["none"], counters["bad_timestamp"], counters["rule"]) == (1, 1, 0)
    assert router.asked == Counter()
    assert enc.counters_by_tenant() == {}


def test_a_name_invalid_as_received_never_reaches_the_router(codec_impl):
    router = Counting(lambda name: D(name))
    enc = encoder(codec_impl, router)
    enc.add_pickle(frame(("", (NOW_S, 1)), (b"\xff", (NOW_S, 1)), (3, (NOW_S, 1)), protocol=3), NOW)
    assert enc.counters()["invalid_name"] == 3
    assert router.asked == Counter()


def test_a_final_name_too_long_or_not_a_name_is_invalid(codec_impl):
    def router(name: str) -> D:
        return D({"long": "x" * 20, "space": "a b", "empty": ""}.get(name, name), tenant="9")

    enc = encoder(codec_impl, router, prefix="pp", max_name_bytes=20)
    enc.add_lines(lines("long", "space", "empty", "ok.name", "x" * 17, "x" * 18), now_ms=NOW)
    # "pp." + 17 bytes fits in 20; 18 bytes and the rewritten 20 do not
    assert names_by_tenant(enc) == {"9": ["pp.ok.name", "pp." + "x" * 17]}
    assert enc.counters()["invalid_name"] == 4
    assert enc.counters_by_tenant()["9"]["accepted"] == 2


def test_series_budget_refused_names_are_asked_again_and_pass_next_minute(codec_impl):
    clock = Clock()
    router = Counting(rules_router(clock=clock).decide)
    enc = encoder(codec_impl, router)
    enc.add_lines(lines("budget.a", "budget.b", "budget.c", "budget.c", "budget.a"), now_ms=NOW)
    assert names_by_tenant(enc) == {"444": ["budget.a", "budget.b", "budget.a"]}
    assert enc.counters()["series_budget"] == 2
    assert enc.counters_by_tenant()["444"]["series_budget"] == 2
    assert ("series_budget", b"budget.c 1 %d" % NOW_S) in enc.take_rejects()
    assert router.asked["budget.a"] == 1  # admitted: decided once
    assert router.asked["budget.c"] == 2  # refused: never cached
    clock.now += 60
    enc.add_pickle(frame(("budget.c", (NOW_S, 5))), now_ms=NOW)
    assert names_by_tenant(enc) == {"444": ["budget.c"]}
    assert router.asked["budget.c"] == 3
    enc.add_pickle(frame(("budget.c", (NOW_S, 6))), now_ms=NOW)
    assert router.asked["budget.c"] == 3  # admitted now: cached


def test_set_router_forgets_decisions_and_keeps_open_bodies(codec_impl):
    first = Counting(lambda name: D(name, tenant="a"))
    second = Counting(lambda name: D("new." + name, tenant="b", ttl=7))
    enc = encoder(codec_impl, first)
    enc.add_lines(lines("x", "y"), now_ms=NOW)
    enc.set_router(second)
    enc.add_lines(lines("x"), now_ms=NOW)
    assert second.asked == Counter({"x": 1})
    out = by_tenant(enc)
    assert [i["metricName"] for i in out["a"]] == ["x", "y"]
    assert [(i["metricName"], i["ttlInSeconds"]) for i in out["b"]] == [("new.x", 7)]


def test_set_router_none_goes_back_to_the_default_tenant(codec_impl):
    enc = encoder(codec_impl, lambda name: D(name, tenant="a"))
    enc.add_lines(lines("x"), now_ms=NOW)
    enc.set_router(None)
    enc.add_lines(lines("x"), now_ms=NOW)
    assert names_by_tenant(enc) == {"a": ["x"], None: ["x"]}


def test_body_limits_and_arrival_order_hold_per_tenant(codec_impl):
    enc = encoder(
        codec_impl,
        lambda name: D(name, tenant=name.split(".")[0]),
        max_body_datapoints=3,
        max_body_bytes=300,
    )
    items = [
        (f"{t}.m{i % 4}", (NOW_S, n))
        for n, (i, t) in enumerate(
            (i, t) for i in range(12) for t in ("a", "b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        )
    ]
    enc.add_pickle(frame(*items), now_ms=NOW)
    seen: dict[str | None, list[float]] = {}
    for tenant, body, count in enc.take_routed():
        decoded = json.loads(body)
        assert len(body) <= 300 and count == len(decoded) <= 3
        assert {i["metricName"].split(".")[0] for i in decoded} == {tenant}
        seen.setdefault(tenant, []).extend(i["metricValue"] for i in decoded)
    for tenant, values in seen.items():
        assert values == sorted(values) and len(values) == 12, tenant


def test_pending_totals_count_every_tenant(codec_impl):
    enc = encoder(codec_impl, lambda name: D(name, tenant=name[0]), max_body_datapoints=2)
    enc.add_lines(lines("a1", "b1", "a2", "c1", "b2", "a3"), now_ms=NOW)
    assert enc.ready_bodies == 2  # a1+a2, b1+b2; a3 and c1 wait in open bodies
    assert enc.pending_datapoints == 6
    pending_bytes = enc.pending_bytes
    taken = enc.take_routed()
    assert sorted((t, n) for t, _, n in taken) == [("a", 1), ("a", 2), ("b", 2), ("c", 1)]
    assert pending_bytes == sum(len(b) for _, b, _ in taken)
    assert (enc.ready_bodies, enc.pending_datapoints, enc.pending_bytes) == (0, 0, 0)


def test_held_bytes_count_every_tenants_open_body(codec_impl):
    enc = encoder(codec_impl, lambda name: D(name, tenant=name[0]), max_body_datapoints=2)
    enc.add_lines(lines("a1", "b1", "c1"), now_ms=NOW)
    one_tenant = encoder(codec_impl, lambda name: D(name, tenant=name[0]), max_body_datapoints=2)
    one_tenant.add_lines(lines("a1"), now_ms=NOW)
    assert enc.held_bytes >= enc.pending_bytes > 0
    assert enc.held_bytes >= 3 * one_tenant.held_bytes  # three open bodies, each counted
    enc.add_lines(lines("a2", "b2", "c2"), now_ms=NOW)  # all three close full
    assert enc.ready_bodies == 3 and enc.held_bytes == enc.pending_bytes
    assert len(enc.take_routed(partial=False)) == 3
    assert enc.held_bytes == 0


def test_take_routed_partial_false_leaves_open_bodies(codec_impl):
    enc = encoder(codec_impl, lambda name: D(name, tenant=name[0]), max_body_datapoints=2)
    enc.add_lines(lines("a1", "a2", "b1"), now_ms=NOW)
    assert [(t, n) for t, _, n in enc.take_routed(partial=False)] == [("a", 2)]
    assert [(t, n) for t, _, n in enc.take_routed()] == [("b", 1)]


def test_take_routed_without_a_router_is_the_default_tenant(codec_impl):
    plain = codec_impl.Encoder(max_body_datapoints=2)
    same = codec_impl.Encoder(max_body_datapoints=2)
    data = lines("a", "b", "c")
    plain.add_lines(data, now_ms=NOW)
    same.add_lines(data, now_ms=NOW)
    routed = plain.take_routed()
    assert [t for t, _, _ in routed] == [None, None]
    assert [(b, n) for _, b, n in routed] == same.take_counted()


def test_a_small_route_cache_asks_again_and_changes_nothing(codec_impl):
    def route(name: str) -> D:
        return D("r." + name, tenant=name[-1])

    names = [f"m{i}" for i in range(5)] * 3
    small_router = Counting(route)
    small = encoder(codec_impl, small_router, route_cache_size=2)
    large = encoder(codec_impl, route)
    for enc in (small, large):
        enc.add_pickle(frame(*[(n, (NOW_S, 1)) for n in names]), now_ms=NOW)
    assert sum(small_router.asked.values()) > 5
    assert by_tenant(small) == by_tenant(large)
    assert small.counters() == large.counters()


def test_a_router_exception_propagates(codec_impl):
    def broken(name: str) -> D:
        raise RuntimeError("router bug")

    enc = encoder(codec_impl, broken)
    with pytest.raises(RuntimeError, match="router bug"):
        enc.add_lines(lines("x"), now_ms=NOW)
