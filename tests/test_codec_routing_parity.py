"""Parity with routing (issue 13): the compiled codec and the pure-Python twin, given the same
router and the same random frames and lines, hand over byte-identical bodies for every tenant
in the same order, and identical counters, counters per tenant and rejects. Skipped when the
compiled codec is not built. The random input is the one of tests/test_codec_parity.py, plus
names the rules below care about (prefixes, regex groups, tags, budgeted names).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from fastforward import _codec_py
from fastforward.errors import FrameError
from fastforward.routing import Router, parse_rules
from tests.test_codec_parity import NOW, NOW_S, SETTINGS, good_frames, items, lines, mutated

OPTIONS = {"prefix": "pre", "max_body_bytes": 700, "max_body_datapoints": 7, "max_name_bytes": 40}

RULES = r"""
[[rule]]
match = "prefix:a"
tenant = "1"

[[rule]]
match = "regex:^([b-d])\\.(.*)$"
rewrite = "\\2.\\1"
tenant = "2"
ttl = 60

[[rule]]
match = "tag:k=v"
tenant = "3"

[[rule]]
match = "prefix:e"
drop = true

[[rule]]
match = "regex:^f(.*)$"
rewrite = "\\1"

[[rule]]
match = "*"
tenant = "4"
max_new_series_per_minute = 1
"""


def rules_router() -> Callable[[str], object]:
    """A fresh Router per encoder (its budget has state), on a clock that stands still."""
    router = Router(parse_rules(RULES), clock=lambda: NOW_S, budget_options={"warmup_seconds": 0})
    return router.decide


@dataclass(frozen=True)
class D:
    name: str
    tenant: str | None = None
    ttl: int | None = None
    drop: str | None = None


def toy_router() -> Callable[[str], object]:
    """Stateless: every kind of decision, picked by the name's bytes."""

    def decide(name: str) -> D:
        kind = sum(name.encode()) % 7
        return [
            D(name),
            D(name, "t1", ttl=60),
            D("x." + name, "t2"),
            D(name, "t1", drop="rule"),
            D(name + " sp", "t3"),  # not a valid final name
            D(name, None, drop="bad_tags"),
            D(name * 3, "t2"),  # may be over max_name_bytes
        ][kind]

    return decide


routed_names = st.one_of(
    st.from_regex(r"[a-f]{1,3}(\.[a-z]{1,3}){0,2}(;[a-z]{1,2}=[a-z~]{0,2}){0,3}", fullmatch=True),
    st.sampled_from(["f", "b.", "a;k=v", "z;k=v;a=b", "e.x", "x;k="]),
)
good_pairs = st.tuples(
    st.integers(NOW_S - 100, NOW_S), st.one_of(st.integers(-5, 5), st.floats(-1e6, 1e6))
)
# Mostly datapoints that reach the router; the parity suite's items for everything else.
routed_items = st.one_of(
    st.tuples(routed_names, good_pairs), st.tuples(routed_names, good_pairs), items
)
routed_batches = st.lists(routed_items, max_size=25)
routed_frames = st.one_of(
    st.builds(pickle.dumps, routed_batches, st.integers(0, 5)), mutated(good_frames)
)
routed_lines = st.one_of(
    lines,
    st.lists(
        st.builds(lambda n, v: b"%s %s %d\n" % (n.encode(), v, NOW_S), routed_names, st.just(b"1")),
        max_size=20,
    ).map(b"".join),
)


def routed_outcome(impl, make_router, frames, data, switch_at=None, **kw):
    """Everything observable after feeding frames and lines to a routing Encoder; with
    ``switch_at`` a new router (from ``make_router``) is set before that frame."""
    enc = impl.Encoder(**{**OPTIONS, **kw}, router=make_router())
    results = []
    for i, frame in enumerate(frames):
        if i == switch_at:
            enc.set_router(make_router())
        try:
            results.append(enc.add_pickle(frame, now_ms=NOW))
        except FrameError as exc:
            results.append((type(exc).__name__, exc.reason, exc.offset))
    if data:
        results.append(enc.add_lines(data, now_ms=NOW))
        results.append(enc.add_lines(data, final=True, now_ms=NOW))
    totals = (enc.ready_bodies, enc.pending_bytes, enc.pending_datapoints)
    # Each tenant's bodies in order; tenants may interleave differently (the contract).
    full: dict[str | None, list[tuple[bytes, int]]] = {}
    for tenant, body, count in enc.take_routed(partial=False):
        full.setdefault(tenant, []).append((body, count))
    rest: dict[str | None, list[tuple[bytes, int]]] = {}
    for tenant, body, count in enc.take_routed():
        rest.setdefault(tenant, []).append((body, count))
    return {
        "results": results,
        "totals": totals,
        "full": full,
        "rest": rest,
        "counters": enc.counters(),
        "by_tenant": enc.counters_by_tenant(),
        "rejects": enc.take_rejects(),
    }


def assert_routed_parity(compiled, make_router, frames, data=b"", switch_at=None, **kw):
    theirs = routed_outcome(compiled, make_router, frames, data, switch_at, **kw)
    ours = routed_outcome(_codec_py, make_router, frames, data, switch_at, **kw)
    assert theirs == ours


@SETTINGS
@given(frames=st.lists(routed_frames, min_size=1, max_size=4), data=routed_lines)
def test_routed_parity_with_rules(compiled_codec, frames, data):
    assert_routed_parity(compiled_codec, rules_router, frames, data)


@SETTINGS
@given(
    frames=st.lists(routed_frames, min_size=1, max_size=4),
    data=routed_lines,
    switch_at=st.integers(0, 4),
    cache=st.sampled_from([1, 3, 1000]),
)
def test_routed_parity_with_a_toy_router(compiled_codec, frames, data, switch_at, cache):
    assert_routed_parity(
        compiled_codec, toy_router, frames, data, switch_at, route_cache_size=cache
    )


@SETTINGS
@given(frames=st.lists(routed_frames, min_size=1, max_size=3), data=routed_lines)
def test_routed_parity_with_options(compiled_codec, frames, data):
    for kw in (
        {"overwrite_collection_time": True, "prefix": ""},
        {"max_past_ms": -1, "max_future_ms": -1, "ttl": 5, "max_body_datapoints": 2},
    ):
        assert_routed_parity(compiled_codec, rules_router, frames, data, **kw)
