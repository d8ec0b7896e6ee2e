"""The pure-Python twin's two decoding paths: the fast reader of carbon-shaped frames and the
reference walker give the same output (bodies, counters, rejects, errors with their offsets),
and the fast reader really takes the frames real carbon senders write.

`reference_only()` switches the fast reader off, so each case runs once per path.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastforward import _codec_py
from fastforward.errors import FrameError
from tests import pickles as P

NOW_S = 1_700_000_000
NOW = NOW_S * 1000

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@contextmanager
def reference_only() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_codec_py, "_carbon_frame", lambda *args: None)
        yield


@contextmanager
def counting_reference_walks() -> Iterator[list[bytes]]:
    """Records every frame the reference walker decodes."""
    walked: list[bytes] = []
    reference = _codec_py._loads

    def spy(data: bytes, max_frame_bytes: int, max_items: int) -> tuple[object, int]:
        walked.append(data)
        return reference(data, max_frame_bytes, max_items)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_codec_py, "_loads", spy)
        yield walked


def outcome(frames: list[bytes], **kw: Any) -> dict[str, Any]:
    enc = _codec_py.Encoder(**{"prefix": "pre", "max_body_datapoints": 7, **kw})
    results: list[object] = []
    for frame in frames:
        try:
            results.append(enc.add_pickle(frame, now_ms=NOW))
        except FrameError as exc:
            results.append((type(exc).__name__, exc.reason, exc.offset))
    return {
        "results": results,
        "bodies": enc.take(),
        "counters": enc.counters(),
        "rejects": enc.take_rejects(),
    }


def both_paths(frames: list[bytes], **kw: Any) -> dict[str, Any]:
    """The outcome, after checking that both paths give it."""
    fast = outcome(frames, **kw)
    with reference_only():
        assert outcome(frames, **kw) == fast
    return fast


# --- the frames of real senders ---------------------------------------------------------------

POINTS = [(f"app.host{i % 3}.m{i}", NOW_S - i, i * 0.25) for i in range(40)]


def _stdlib_relay_frames() -> list[bytes]:
    """carbon-relay on Python 3: pickle.dumps(batch, protocol=2), a shared name object per
    metric (BINGET), more than 1000 items (two MARK..APPENDS batches), one item (APPEND)."""
    name = "app.shared"
    many = [(name if i % 2 else f"m{i}", (float(NOW_S - i), float(i))) for i in range(1500)]
    return [
        pickle.dumps(many, protocol=2),
        pickle.dumps([("one", (float(NOW_S), 1.5))], protocol=2),
        pickle.dumps([], protocol=2),
        pickle.dumps([("ints", (NOW_S, 7)), ("big", (NOW_S, 2**40)), ("neg", (-1, -5))], 2),
        pickle.dumps([("é.ü", (float(NOW_S + i), 2.0)) for i in range(3)], protocol=2),
    ]


CARBON_FRAMES = [
    P.carbon_relay_py3(POINTS),
    P.carbon_relay_py3([(f"m{i}", NOW_S, 1.0) for i in range(300)]),  # LONG_BINPUT
    P.carbon_py2([(b"a.b", NOW_S, 1.5), (b"a.b", NOW_S + 1, 7), (b"c" * 300, NOW_S, 70000)]),
    P.og_rek("x.y", NOW_S, 0.5),
    P.py3_protocol4([("a.b", NOW_S, 1.0), ("a.c", NOW_S, 2.0)]),
    *_stdlib_relay_frames(),
]


def test_fast_path_takes_the_frames_carbon_senders_write():
    with counting_reference_walks() as walked:
        fast = outcome(CARBON_FRAMES)
    assert walked == []  # the speed-up has not silently vanished
    assert fast["counters"]["accepted"] > 1500
    with reference_only():
        assert outcome(CARBON_FRAMES) == fast


def test_both_paths_route_the_frames_carbon_senders_write():
    """With a router the fast reader still takes carbon's frames, and the bodies per tenant
    are the ones the reference walker gives."""

    @dataclass(frozen=True)
    class Decision:
        name: str
        tenant: str | None
        ttl: int | None = 60
        drop: str | None = None

    def router(name: str) -> Decision:
        return Decision("r." + name, name.split(".")[0])

    def routed(frames: list[bytes]) -> list[tuple[str | None, bytes, int]]:
        enc = _codec_py.Encoder(prefix="pre", max_body_datapoints=7, router=router)
        for frame in frames:
            enc.add_pickle(frame, now_ms=NOW)
        return enc.take_routed()

    with counting_reference_walks() as walked:
        fast = routed(CARBON_FRAMES)
    assert walked == []
    assert {tenant for tenant, _, _ in fast} >= {"app", "m1", "a", "x"}
    with reference_only():
        assert routed(CARBON_FRAMES) == fast


@pytest.mark.parametrize(
    "frame",
    [
        P.statsd([("a.b", NOW_S, "1")]),
        P.statsite([("a", str(NOW_S), "3.5")]),
        P.diamond_py2([("a.b", NOW_S, 1.0), ("a.b", NOW_S, 2.0)]),
        P.carbon_py2([(b"a.b", NOW_S, 2**40)]),  # a text INT value
        pickle.dumps([("a", (NOW_S, None))], protocol=2),
        pickle.dumps([("a", (NOW_S, 1.0), (NOW_S, 2.0))], protocol=2),  # two pairs
        pickle.dumps([("a", [NOW_S, 1.0])], protocol=2),  # a list as the pair
        pickle.dumps([("a", (NOW_S, 1.0))], protocol=0),
        pickle.dumps([("a", (NOW_S, 1.0))] * 2, protocol=2),  # a shared tuple: BINGET of it
    ],
    ids=["statsd", "statsite", "diamond", "py2-long", "none", "pairs", "list", "proto0", "get"],
)
def test_other_shapes_go_to_the_reference_walker(frame):
    with counting_reference_walks() as walked:
        fast = outcome([frame])
    assert walked == [frame]
    with reference_only():
        assert outcome([frame]) == fast


# --- frames that leave the carbon shape midway --------------------------------------------------


def relay_frame(
    points: Sequence[tuple[str, float, float]], at: int = -1, extra: bytes = b""
) -> bytes:
    """carbon-relay's shape (BINUNICODE, BINPUT/LONG_BINPUT, numbers by type), with `extra`
    written before item `at`."""
    memo = iter(range(10**6))

    def put() -> bytes:
        i = next(memo)
        return P.binput(i) if i < 256 else P.long_binput(i)

    def number(v: float) -> bytes:
        if isinstance(v, float):
            return P.binfloat(v)
        assert isinstance(v, int)
        if 0 <= v < 256:
            return P.binint1(v)
        if -(2**31) <= v < 2**31:
            return P.binint(v)
        return P.long1(v)

    out = [P.proto(2), P.EMPTY_LIST, put(), P.MARK]
    for k, (name, ts, value) in enumerate(points):
        if k == at:
            out.append(extra)
        out += [P.binunicode(name), put(), number(ts), number(value), P.TUPLE2, put()]
        out += [P.TUPLE2, put()]
    out += [P.APPENDS, P.STOP]
    return b"".join(out)


carbon_names = st.one_of(
    st.from_regex(r"[a-z]{1,8}(\.[a-z0-9_-]{1,8}){0,4}", fullmatch=True),
    st.text(max_size=12),
)
carbon_numbers = st.one_of(
    st.floats(),
    st.integers(NOW_S - 4 * 86400, NOW_S + 3600),
    st.integers(-(2**70), 2**70),
    st.just(-1),
    st.just(-1.0),
)
carbon_points = st.lists(st.tuples(carbon_names, carbon_numbers, carbon_numbers), max_size=30)
# Valid pickle that no carbon sender writes: the reference walker decodes it to the same value.
detours = st.sampled_from([b"N0", b"(1", b"\x88\x88\x30\x30", P.frame_op(0), P.proto(2)])


@SETTINGS
@given(points=carbon_points.filter(bool), data=st.data())
def test_a_detour_midway_falls_back_for_the_whole_frame(points, data):
    at = data.draw(st.integers(0, len(points) - 1))
    plain = relay_frame(points)
    detoured = relay_frame(points, at, data.draw(detours))
    with counting_reference_walks() as walked:
        outcome([detoured])
    assert walked == [detoured]
    assert both_paths([detoured]) == both_paths([plain])  # same datapoints, drops, rejects


@st.composite
def mutated(draw: st.DrawFn, frames: st.SearchStrategy[bytes]) -> bytes:
    frame = bytearray(draw(frames))
    for _ in range(draw(st.integers(1, 3))):
        if not frame:
            break
        i = draw(st.integers(0, len(frame) - 1))
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if kind == "flip":
            frame[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del frame[i:]
        elif kind == "insert":
            frame[i:i] = draw(st.binary(min_size=1, max_size=9))
        else:
            del frame[i : i + draw(st.integers(1, 9))]
    return bytes(frame)


carbon_frames = st.one_of(
    carbon_points.map(relay_frame),
    st.lists(st.tuples(carbon_names, st.tuples(carbon_numbers, carbon_numbers)), max_size=30).map(
        lambda batch: pickle.dumps(batch, protocol=2)
    ),
    st.sampled_from(CARBON_FRAMES[:5]),
)


@SETTINGS
@given(frames=st.lists(st.one_of(carbon_frames, mutated(carbon_frames)), min_size=1, max_size=4))
def test_both_paths_agree_on_carbon_frames_good_and_broken(frames):
    both_paths(frames)


@SETTINGS
@given(
    frames=st.lists(carbon_frames, min_size=1, max_size=3),
    max_items=st.integers(1, 40),
    max_frame=st.integers(10, 2000),
    overwrite=st.booleans(),
)
def test_both_paths_agree_under_limits(frames, max_items, max_frame, overwrite):
    both_paths(
        frames,
        max_items_per_frame=max_items,
        max_frame_bytes=max_frame,
        overwrite_collection_time=overwrite,
        max_name_bytes=12,
    )


def test_a_memo_index_out_of_sequence_is_left_to_the_reference_walker():
    frame = relay_frame([("a", NOW_S, 1.0)])
    skewed = frame.replace(P.binput(1), P.binput(0), 1)  # the name put at the list's slot
    assert skewed != frame
    with counting_reference_walks() as walked:
        outcome([skewed])
    assert walked == [skewed]
    both_paths([skewed])


def test_a_truncated_carbon_frame_is_refused_as_the_reference_walker_refuses_it():
    frame = relay_frame([("a.b", NOW_S, 1.0)] * 3)
    cut = frame[:-12] + P.STOP  # the last item loses its value and tuples
    got = both_paths([cut])
    assert got["results"][0][0] == "FrameError"
    assert got["counters"]["bad_frame"] == 1
    assert got["bodies"] == []
