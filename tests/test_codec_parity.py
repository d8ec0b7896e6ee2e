"""Parity: the compiled codec and the pure-Python twin give byte-identical bodies, identical
counters and rejects, and identical errors (type, reason, offset) for the same input, including
random mutations of good frames. Skipped when the compiled codec is not built.
"""

from __future__ import annotations

import pickle

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

OPTIONS = {"prefix": "pre", "max_body_bytes": 700, "max_body_datapoints": 7}


def outcome(impl, frames: list[bytes], lines: bytes = b"", **kw):
    """Everything observable after feeding the frames (and lines) to a fresh Encoder."""
    enc = impl.Encoder(**{**OPTIONS, **kw})
    results = []
    for frame in frames:
        try:
            results.append(enc.add_pickle(frame, now_ms=NOW))
        except FrameError as exc:
            results.append((type(exc).__name__, exc.reason, exc.offset))
    if lines:
        results.append(enc.add_lines(lines, now_ms=NOW))
        results.append(enc.add_lines(lines, final=True, now_ms=NOW))
    return {
        "results": results,
        "ready": enc.ready_bodies,
        "pending": (enc.pending_bytes, enc.pending_datapoints),
        "full": enc.take(partial=False),
        "rest": enc.take(),
        "counters": enc.counters(),
        "rejects": enc.take_rejects(),
    }


def loads_outcome(impl, frame: bytes):
    try:
        return ("ok", repr(impl.safe_loads(frame, max_items_per_frame=1000)))
    except FrameError as exc:
        return (type(exc).__name__, exc.reason, exc.offset)


def assert_parity(compiled, frames: list[bytes], lines: bytes = b"", **kw):
    assert outcome(compiled, frames, lines, **kw) == outcome(_codec_py, frames, lines, **kw)
    for frame in frames:
        assert loads_outcome(compiled, frame) == loads_outcome(_codec_py, frame)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**100), 2**100),
    st.integers(NOW_S - 5 * 86400, NOW_S + 3600),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.sampled_from(["-1", " 1.5 ", "nan", "-inf", "1e999", "12", "x", "9" * 30]),
)
names = st.one_of(
    st.text(max_size=20),
    st.binary(max_size=20),
    st.from_regex(r"[a-z]{1,6}(\.[a-z0-9]{1,6}){0,3}", fullmatch=True),
    st.integers(0, 3),
)
pairs = st.one_of(st.tuples(scalars, scalars), st.lists(scalars, min_size=2, max_size=2))
items = st.one_of(
    st.tuples(names, pairs),
    st.lists(st.one_of(names, pairs), min_size=1, max_size=4),
    st.builds(lambda n, ps: (n, *ps), names, st.lists(pairs, min_size=1, max_size=3)),
    scalars,
)
batches = st.one_of(st.lists(items, max_size=25), st.tuples(items, items))


@st.composite
def mutated(draw, frames):
    frame = bytearray(draw(frames))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if not frame:
            break
        i = draw(st.integers(0, len(frame) - 1))
        if kind == "flip":
            frame[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del frame[i:]
        elif kind == "insert":
            frame[i:i] = draw(st.binary(min_size=1, max_size=9))
        else:
            del frame[i : i + draw(st.integers(1, 9))]
    return bytes(frame)


def _sender_frames() -> list[bytes]:
    return [
        P.carbon_relay_py3([("a.b", NOW_S, 1.5), ("a.c", NOW_S, 2.5)]),
        P.carbon_py2([(b"a.b", NOW_S, 2**40), (b"a.b", NOW_S, 1)]),
        P.og_rek("x.y", NOW_S, 0.5),
        P.statsd([("a.b", NOW_S, "1"), ("c", NOW_S, "x")]),
        P.statsite([("a", str(NOW_S), "3.5")]),
        P.diamond_py2([("a.b", NOW_S, 1.0), ("a.b", NOW_S, 2.0)]),
        P.py3_protocol4([("a.b", NOW_S, 1.0)]),
    ]


good_frames = st.one_of(
    st.builds(pickle.dumps, batches, st.integers(0, 5)),
    st.sampled_from(_sender_frames()),
)


@SETTINGS
@given(batch=batches, protocol=st.integers(0, 5))
def test_parity_on_random_batches(compiled_codec, batch, protocol):
    assert_parity(compiled_codec, [pickle.dumps(batch, protocol=protocol)])


@SETTINGS
@given(frames=st.lists(mutated(good_frames), min_size=1, max_size=4))
def test_parity_on_mutated_frames(compiled_codec, frames):
    assert_parity(compiled_codec, frames)


@SETTINGS
@given(frames=st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_parity_on_random_bytes(compiled_codec, frames):
    assert_parity(compiled_codec, frames)


line_fields = st.one_of(
    st.from_regex(r"[a-z]{1,6}(\.[a-z0-9]{1,6}){0,3}", fullmatch=True).map(str.encode),
    st.sampled_from([b"1.5", b"-1", b"nan", b"1e999", str(NOW_S).encode(), b"x", b"\xff"]),
    st.binary(max_size=8),
)
lines = st.lists(
    st.builds(
        lambda fs, sep, end: sep.join(fs) + end,
        st.lists(line_fields, max_size=4),
        st.sampled_from([b" ", b"\t", b"  "]),
        st.sampled_from([b"\n", b"\r\n"]),
    ),
    max_size=20,
).map(b"".join)


@SETTINGS
@given(data=lines, tail=st.binary(max_size=20))
def test_parity_on_lines(compiled_codec, data, tail):
    assert_parity(compiled_codec, [], data + tail)


@pytest.mark.parametrize("overwrite", [False, True])
def test_parity_options(compiled_codec, overwrite):
    frames = _sender_frames()
    for kw in (
        {"overwrite_collection_time": overwrite},
        {"max_past_ms": -1, "max_future_ms": -1, "ttl": 5},
        {"max_name_bytes": 8, "max_line_bytes": 10, "prefix": ""},
        {"max_frame_bytes": 60, "max_items_per_frame": 1},
    ):
        assert_parity(compiled_codec, frames, b"a.b 1 1700000000\nc 2 -1\n", **kw)


@pytest.mark.parametrize("max_body_bytes", [1_000_000, 600_000])
def test_full_bodies_are_whole_ordinary_bytes(compiled_codec, max_body_bytes):
    # A body full by bytes is handed over in the allocation it was filled in (its length set,
    # not reallocated): to every user of it, it must be the twin's bytes exactly.
    frames = [
        pickle.dumps(
            [(f"servers.host{i % 97}.cpu.core{i}", (NOW_S, i * 0.25)) for i in range(k, k + 500)],
            protocol=2,
        )
        for k in range(0, 60_000, 500)
    ]
    bodies = []
    for impl in (compiled_codec, _codec_py):
        enc = impl.Encoder(max_body_bytes=max_body_bytes)
        for frame in frames:
            enc.add_pickle(frame, now_ms=NOW)
        bodies.append(enc.take())
    compiled, twin = bodies
    assert len(compiled) >= 4 and compiled == twin
    for body in compiled[:-1]:  # the full ones
        copy = bytes(bytearray(body))
        assert len(body) <= max_body_bytes and body.endswith(b"}]")
        assert hash(body) == hash(copy) and body[-2:] + body[:1] == b"}][" and {body: 1}[copy]
        assert pickle.loads(pickle.dumps(body)) == copy and memoryview(body).tobytes() == copy
