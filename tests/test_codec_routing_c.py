"""Routing in the compiled codec: its C decision cache and its bodies per tenant.

The contract both implementations share is tested in tests/test_codec_routing.py; these tests
hold what only the compiled encoder has: a cache in C keyed by the name's bytes (a name seen
before calls nothing, a full cache forgets and asks again, a series_budget drop is never
kept) and one C body per tenant.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter

import pytest

from fastforward.routing import Decision, Router, parse_rules

NOW = 1_700_000_000_000
RULES = r"""
[[rule]]
match = "prefix:app.web."
tenant = "web"
ttl = 604800

[[rule]]
match = 'regex:^db\.([^.]+)\.(.*)$'
rewrite = 'databases.\1.\2'
tenant = "db"

[[rule]]
match = "prefix:junk."
drop = true

[[rule]]
match = "tag:env=prod"
tenant = "prod"
"""


class Counting:
    """Wraps a router and counts its calls per name."""

    def __init__(self, decide) -> None:
        self.decide = decide
        self.calls: Counter[str] = Counter()

    def __call__(self, name: str) -> Decision:
        self.calls[name] += 1
        return self.decide(name)


def keep(tenant=None, ttl=None, rename=lambda n: n):
    return lambda name: Decision(rename(name), tenant, ttl, None, None)


def routed(enc, partial=True) -> dict:
    """tenant -> [(name, ttl, value)] in body order, with each body's count checked."""
    out: dict = {}
    for tenant, body, count in enc.take_routed(partial):
        items = json.loads(body)
        assert len(items) == count
        out.setdefault(tenant, []).extend(
            (d["metricName"], d["ttlInSeconds"], d["metricValue"]) for d in items
        )
    return out


def lines(*names, value=1) -> bytes:
    return b"".join(b"%s %d %d\n" % (n.encode(), value, NOW // 1000) for n in names)


def test_rules_route_names_tenants_and_ttls_with_the_prefix(compiled_codec):
    router = Router(parse_rules(RULES), tags="keep")
    enc = compiled_codec.Encoder(prefix="pfx", ttl=3600, router=router.decide)
    frame = [
        ("app.web.hits", (NOW // 1000, 1)),
        ("db.main.queries", (NOW // 1000, 2)),
        ("junk.x", (NOW // 1000, 3)),
        ("cpu;host=a;env=prod", (NOW // 1000, 4)),
        ("other.thing", (NOW // 1000, 5)),
    ]
    assert enc.add_pickle(pickle.dumps(frame, protocol=2), now_ms=NOW) == 4
    enc.add_lines(lines("cpu;env=prod;host=a", "db.main.queries", value=6), now_ms=NOW)
    assert routed(enc) == {
        "web": [("pfx.app.web.hits", 604800, 1)],
        "db": [("pfx.databases.main.queries", 3600, 2), ("pfx.databases.main.queries", 3600, 6)],
        "prod": [("pfx.cpu;env=prod;host=a", 3600, 4), ("pfx.cpu;env=prod;host=a", 3600, 6)],
        None: [("pfx.other.thing", 3600, 5)],
    }
    assert enc.counters()["rule"] == 1
    assert enc.counters()["accepted"] == 6
    by_tenant = enc.counters_by_tenant()
    assert by_tenant["db"]["accepted"] == 2
    assert by_tenant[None]["rule"] == 1  # the drop rule names no tenant
    assert by_tenant[None]["accepted"] == 1


def test_a_known_name_is_not_decided_again(compiled_codec):
    router = Counting(keep("t"))
    enc = compiled_codec.Encoder(router=router, max_past_ms=-1, max_future_ms=-1)
    names = [f"m.{i}" for i in range(300)]
    for _ in range(5):
        enc.add_pickle(pickle.dumps([(n, (NOW // 1000, 1.5)) for n in names]), now_ms=NOW)
        enc.add_lines(lines(*names), now_ms=NOW)
    assert router.calls == Counter({n: 1 for n in names})
    assert sum(len(v) for v in routed(enc).values()) == 3000


def test_many_names_each_decided_once_and_written_under_their_own_name(compiled_codec):
    router = Counting(keep(rename=lambda n: "r." + n, ttl=60))
    enc = compiled_codec.Encoder(router=router, max_past_ms=-1, max_future_ms=-1)
    names = [f"host{i % 97}.metric{i}" for i in range(40_000)]
    for _ in range(2):
        enc.add_lines(lines(*names), now_ms=NOW)
    assert len(router.calls) == 40_000
    assert set(router.calls.values()) == {1}
    got = routed(enc)[None]
    assert [n for n, _, _ in got] == ["r." + n for n in names] * 2
    assert {ttl for _, ttl, _ in got} == {60}


def test_a_full_cache_forgets_and_asks_again_with_the_same_output(compiled_codec):
    names = [f"series.{i}" for i in range(1000)]
    data = lines(*names) * 3
    small_router = Counting(keep(tenant="t", rename=lambda n: n + ".x"))
    small = compiled_codec.Encoder(router=small_router, route_cache_size=64)
    large = compiled_codec.Encoder(router=keep(tenant="t", rename=lambda n: n + ".x"))
    small.add_lines(data, now_ms=NOW)
    large.add_lines(data, now_ms=NOW)
    assert routed(small) == routed(large)
    assert sum(small_router.calls.values()) > 1000  # forgotten names were asked again
    assert small.counters() == large.counters()


def test_series_budget_drops_are_never_cached(compiled_codec):
    refused = {"new.a"}

    def decide(name: str) -> Decision:
        drop = "series_budget" if name in refused else None
        return Decision(name, "t", None, drop, 0)

    router = Counting(decide)
    enc = compiled_codec.Encoder(router=router)
    enc.add_lines(lines("new.a", "new.a", "old.b", "old.b"), now_ms=NOW)
    assert router.calls == Counter({"new.a": 2, "old.b": 1})
    refused.clear()  # the next minute admits it
    enc.add_lines(lines("new.a", "new.a"), now_ms=NOW)
    assert router.calls["new.a"] == 3
    assert routed(enc) == {"t": [("old.b", 86400, 1)] * 2 + [("new.a", 86400, 1)] * 2}
    assert enc.counters()["series_budget"] == 2
    assert enc.counters_by_tenant()["t"] == {
        "accepted": 4,
        "rule": 0,
        "series_budget": 2,
        "bad_tags": 0,
        "empty_name": 0,
    }
    assert enc.take_rejects() == [("series_budget", b"new.a 1 1700000000")] * 2


def test_rule_drops_are_cached_and_counted_per_datapoint(compiled_codec):
    router = Counting(lambda name: Decision(name, "blocked", None, "rule", 0))
    enc = compiled_codec.Encoder(router=router)
    enc.add_lines(lines("a", "a", "a"), now_ms=NOW)
    assert router.calls == Counter({"a": 1})
    assert enc.counters()["rule"] == 3
    assert enc.counters_by_tenant()["blocked"]["rule"] == 3
    assert enc.take_routed() == []


def test_set_router_empties_the_cache_and_keeps_open_bodies(compiled_codec):
    first = Counting(keep(tenant="one"))
    enc = compiled_codec.Encoder(router=first)
    enc.add_lines(lines("a", "b"), now_ms=NOW)
    second = Counting(keep(tenant="two", rename=str.upper))
    enc.set_router(second)
    enc.add_lines(lines("a", "b"), now_ms=NOW)
    assert second.calls == Counter({"a": 1, "b": 1})
    assert routed(enc) == {
        "one": [("a", 86400, 1), ("b", 86400, 1)],
        "two": [("A", 86400, 1), ("B", 86400, 1)],
    }
    enc.set_router(None)
    enc.add_lines(lines("a"), now_ms=NOW)
    assert routed(enc) == {None: [("a", 86400, 1)]}


def test_final_names_are_escaped_and_checked(compiled_codec):
    renames = {"q": 'quote"back\\slash\x01', "ws": "has space", "long": "x" * 60, "ok": "é.ok"}
    router = Counting(lambda name: Decision(renames[name], None, None, None, None))
    enc = compiled_codec.Encoder(router=router, prefix="p", max_name_bytes=50)
    enc.add_lines(lines("q", "ws", "long", "ok", "ws"), now_ms=NOW)
    assert routed(enc) == {None: [('p.quote"back\\slash\x01', 86400, 1), ("p.é.ok", 86400, 1)]}
    assert enc.counters()["invalid_name"] == 3
    assert router.calls["ws"] == 1  # an unusable final name is cached too
    assert enc.counters_by_tenant()[None]["accepted"] == 2


def test_value_and_time_drops_come_before_routing(compiled_codec):
    router = Counting(keep("t"))
    enc = compiled_codec.Encoder(router=router)
    enc.add_lines(b"a nan 1700000000\nb 1 x\nc 1 1\n", now_ms=NOW)
    assert router.calls == Counter()
    counters = enc.counters()
    assert (counters["nan"], counters["bad_timestamp"], counters["out_of_window"]) == (1, 1, 1)
    assert enc.counters_by_tenant() == {}


def test_each_body_holds_one_tenant_in_arrival_order_within_the_limits(compiled_codec):
    enc = compiled_codec.Encoder(
        router=lambda name: Decision(name, name.split(".")[0], None, None, None),
        max_body_datapoints=3,
        max_body_bytes=400,
    )
    names = [f"{'ab'[i % 2]}.{i}" for i in range(40)]
    enc.add_lines(lines(*names), now_ms=NOW)
    ready = enc.ready_bodies
    pending = (enc.pending_bytes, enc.pending_datapoints)
    bodies = enc.take_routed(partial=False)
    assert len(bodies) == ready
    rest = enc.take_routed()
    assert pending == (sum(len(b) for _, b, _ in bodies + rest), 40)
    seen: dict = {}
    for tenant, body, count in bodies + rest:
        items = json.loads(body)
        assert 1 <= count <= 3 and len(body) <= 400
        assert {d["metricName"].split(".")[0] for d in items} == {tenant}
        seen.setdefault(tenant, []).extend(d["metricName"] for d in items)
    assert seen == {"a": names[0::2], "b": names[1::2]}


def test_a_router_error_propagates(compiled_codec):
    def broken(name: str) -> Decision:
        raise RuntimeError("router bug")

    enc = compiled_codec.Encoder(router=broken)
    with pytest.raises(RuntimeError, match="router bug"):
        enc.add_lines(lines("a"), now_ms=NOW)


@pytest.mark.parametrize("size", [0, -1, 1.5, None])
def test_route_cache_size_must_be_a_positive_integer(compiled_codec, size):
    with pytest.raises(ValueError, match="route_cache_size"):
        compiled_codec.Encoder(route_cache_size=size)


def test_plaintext_batches_find_known_names_whatever_the_line_shape(compiled_codec):
    # Lookups are prepared for a batch of lines at a time (their names' hashes computed
    # ahead): blank lines, CRLF, leading blanks, bad lines and chunks longer than a batch must
    # not shift a name onto another line's hash (a known name would be decided again).
    shapes = [b"%s 1 %d\n", b"  %s\t2 %d\r\n", b"%s 3\n", b"\n", b"\r\n", b" %s 4 %d  \n"]
    args = [2, 2, 1, 0, 0, 2]  # placeholders in each shape
    chunk = b""
    for i in range(2_000):
        name = b"line.%d" % (i % 700)
        chunk += shapes[i % 6] % (name, NOW // 1000)[: args[i % 6]]
    router = Counting(keep("t"))
    enc = compiled_codec.Encoder(router=router)
    for _ in range(3):
        assert enc.add_lines(chunk, now_ms=NOW) == len(chunk)
    assert set(router.calls.values()) == {1}
    counters = enc.counters()
    assert counters["bad_line"] == 3 * sum(1 for i in range(2_000) if i % 6 == 2)
    assert counters["accepted"] == 3 * sum(1 for i in range(2_000) if i % 6 in (0, 1, 5))


def test_the_body_after_a_full_one_is_allocated_at_its_first_write_and_counted(compiled_codec):
    # The body after a full one is sized like it (no regrowth while it fills), but only once
    # a datapoint goes in: an empty one would hold a body's worth that nobody takes.
    enc = compiled_codec.Encoder(max_body_datapoints=500)
    items = [(f"series.{i}", (1_700_000_000, i * 0.5)) for i in range(500)]
    enc.add_pickle(pickle.dumps(items), now_ms=1_700_000_000_000)
    [full] = enc.take(partial=False)
    assert enc.held_bytes == 0
    enc.add_lines(b"x.y 1 1700000000\n", now_ms=1_700_000_000_000)
    assert enc.held_bytes >= len(full) > 100 * enc.pending_bytes
