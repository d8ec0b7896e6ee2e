"""Property tests: random carbon batches pickled by the stdlib (protocols 0-5) decode exactly as
`pickle.loads` does, and encode to exactly the JSON computed here from the original data.

The stdlib pickle module is only the oracle; both implementations are tested (`codec_impl`).
"""

from __future__ import annotations

import json
import math
import pickle
import re
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NOW_S = 1_700_000_000
NOW = NOW_S * 1000
PAST_MS = 259_200_000
FUTURE_MS = 600_000
INT64 = (-(2**63), 2**63 - 1)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

names = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[a-z]{1,8}(\.[a-z0-9_-]{1,8}){0,5}", fullmatch=True),
)
big_ints = st.integers(min_value=-(2**100), max_value=2**100)
numbers = st.one_of(big_ints, st.floats(), st.integers(-1000, 1000), st.just(-1))
timestamps = st.one_of(
    st.integers(NOW_S - 4 * 86400, NOW_S + 3600),
    st.floats(NOW_S - 4 * 86400, NOW_S + 3600),
    numbers,
)
batches = st.lists(st.tuples(names, st.tuples(timestamps, numbers)), max_size=40)


def norm(x):
    """A comparable form: floats by their bits (NaN == NaN, -0.0 != 0.0), types kept.

    Every NaN is one NaN: the text `nan` of protocol 0 parses with the sign bit set on
    CPython 3.10 and clear on 3.11+, and a NaN is dropped before any JSON is written anyway."""
    if isinstance(x, float):
        return ("f", b"nan" if math.isnan(x) else struct.pack(">d", x))
    if isinstance(x, list | tuple):
        return (type(x).__name__, [norm(i) for i in x])
    return (type(x).__name__, x)


_CTL = re.compile(r'[\x00-\x1f"\\]')


def json_name(name: str) -> bytes:
    def esc(m: re.Match) -> str:
        c = m.group()
        return "\\" + c if c in '"\\' else f"\\u{ord(c):04x}"

    return _CTL.sub(esc, name).encode()


def number(v) -> int | float | None:
    """The contract's rule for int/float: int64 stays int, others float; None if dropped."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if INT64[0] <= v <= INT64[1]:
        return v
    f = float(v)
    return f if math.isfinite(f) else None


def expected_objects(batch) -> list[bytes]:
    out = []
    for name, (ts, value) in batch:
        raw = name.encode("utf-8", "surrogatepass")
        if not raw or re.search(rb"[ \t\n\r\x0b\x0c]", raw) or len(raw) > 4096:
            continue
        v = number(value)
        if v is None:
            continue
        t = number(ts)
        if t is None:
            continue
        if t == -1:
            ms = NOW
        elif isinstance(t, float):
            tm = t * 1000.0
            if not math.isfinite(tm):
                continue
            ms = int(tm)
        else:
            ms = t * 1000
        if not NOW - PAST_MS <= ms <= NOW + FUTURE_MS:
            continue
        vb = repr(v) if isinstance(v, float) else str(v)
        out.append(
            b'{"collectionTime":%d,"ttlInSeconds":86400,"metricValue":%s,"metricName":"%s"}'
            % (ms, vb.encode(), json_name(name))
        )
    return out


@SETTINGS
@given(batch=batches, protocol=st.integers(0, 5))
def test_safe_loads_equals_pickle_loads(codec_impl, batch, protocol):
    frame = pickle.dumps(batch, protocol=protocol)
    assert norm(codec_impl.safe_loads(frame)) == norm(pickle.loads(frame))


@SETTINGS
@given(batch=batches, protocol=st.integers(0, 5))
def test_encoder_output_equals_the_model(codec_impl, batch, protocol):
    frame = pickle.dumps(batch, protocol=protocol)
    enc = codec_impl.Encoder(max_body_bytes=10**9, max_body_datapoints=10**6)
    accepted = enc.add_pickle(frame, now_ms=NOW)
    expected = expected_objects(batch)
    assert accepted == len(expected)
    bodies = enc.take()
    if not expected:
        assert bodies == []
        return
    assert bodies == [b"[" + b",".join(expected) + b"]"]
    counters = enc.counters()
    assert counters["accepted"] == len(expected)
    assert sum(counters[r] for r in codec_impl.DROP_REASONS) == len(batch) - len(expected)


@SETTINGS
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_float_values_round_trip_bit_exact(codec_impl, values):
    enc = codec_impl.Encoder()
    enc.add_pickle(pickle.dumps([("m", (NOW_S, v)) for v in values], 2), now_ms=NOW)
    got = [d["metricValue"] for b in enc.take() for d in json.loads(b)]
    assert [struct.pack(">d", float(g)) for g in got] == [struct.pack(">d", v) for v in values]


@SETTINGS
@given(values=st.lists(st.integers(INT64[0], INT64[1]), min_size=1, max_size=50))
def test_int64_values_stay_exact(codec_impl, values):
    enc = codec_impl.Encoder()
    enc.add_pickle(pickle.dumps([("m", (NOW_S, v)) for v in values], 4), now_ms=NOW)
    got = [d["metricValue"] for b in enc.take() for d in json.loads(b)]
    assert got == values and all(type(g) is int for g in got)


@SETTINGS
@given(
    batch=st.lists(
        st.tuples(
            st.from_regex(r"[a-z]{1,12}(\.[a-z0-9]{1,12}){0,4}", fullmatch=True),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        max_size=200,
    ),
    limit=st.integers(150, 3000),
    count=st.integers(1, 40),
)
def test_body_limits_hold_and_every_datapoint_lands_once(codec_impl, batch, limit, count):
    enc = codec_impl.Encoder(max_body_bytes=limit, max_body_datapoints=count)
    for start in range(0, len(batch), 50):
        chunk = [(n, (NOW_S, v)) for n, v in batch[start : start + 50]]
        enc.add_pickle(pickle.dumps(chunk, 2), now_ms=NOW)
    bodies = enc.take()
    for b in bodies:  # only a datapoint alone may go over the byte limit
        assert len(json.loads(b)) <= count
        assert len(b) <= limit or len(json.loads(b)) == 1
    got = [(d["metricName"], d["metricValue"]) for b in bodies for d in json.loads(b)]
    assert got == batch
