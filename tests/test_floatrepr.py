"""The compiled codec's float formatting is exactly Python's repr(float).

Bodies from the compiled codec and the pure-Python twin must be byte-identical, and the twin
writes floats with repr(), so the C formatter (shortest round-trip digits, repr's layout) is
compared with repr() on edge cases and on a few hundred thousand random doubles. The fast
path alone (`_test_float_repr_fast`, None where it defers to CPython) is also checked to cover the
values real metrics carry, so the speed claim is tested too.
"""

from __future__ import annotations

import math
import random
import struct
import sys

import pytest

_codec = pytest.importorskip("fastforward._codec", reason="compiled codec not built")

float_repr = _codec._test_float_repr
float_repr_fast = _codec._test_float_repr_fast


def _bits(u: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", u))[0]


def _edge_cases() -> list[float]:
    xs = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        0.2,
        0.3,
        1 / 3,
        2 / 3,
        0.5,
        1.5,
        123.456,
        5e-324,
        -5e-324,
        2.2250738585072014e-308,  # smallest normal
        2.225073858507201e-308,  # largest subnormal
        sys.float_info.max,
        -sys.float_info.max,
        sys.float_info.epsilon,
        9007199254740992.0,  # 2**53
        9007199254740993.0,
        4503599627370495.5,
        4503599627370496.5,
        1e15 + 0.5,
        9999999999999998.0,
        1e16,
        1e16 + 2,
        1.0000000000000002e16,
        1e17,
        1e22,
        1e23,
        1e-4,
        1e-5,
        1.5e-5,
        9.999999999999999e-5,
        0.00010000000000000002,
        0.0001234,
        1.7976931348623157e308,
        float(2**63),
        float(2**64),
        1700000000.123,
        1700000000123.0,
    ]
    for e in range(-1074, 1024):
        xs.append(math.ldexp(1.0, e))
        xs.append(math.ldexp(1.0, e) * 3)
        xs.append(math.nextafter(math.ldexp(1.0, e), 0.0))
        xs.append(math.nextafter(math.ldexp(1.0, e), math.inf))
    for e in range(-325, 309):
        p = float(f"1e{e}")
        xs += [p, math.nextafter(p, 0.0), math.nextafter(p, math.inf), float(f"5e{e}")]
    return [x for x in xs if math.isfinite(x)] + [-x for x in xs if math.isfinite(x)]


def test_edge_cases_match_repr():
    bad = [(repr(x), float_repr(x)) for x in _edge_cases() if float_repr(x) != repr(x)]
    assert bad == []


def test_layout_switches_to_exponent_form_where_repr_does():
    assert float_repr(1e16) == "1e+16"
    assert float_repr(9999999999999998.0) == "9999999999999998.0"
    assert float_repr(1.5e-5) == "1.5e-05"
    assert float_repr(0.0001) == "0.0001"
    assert float_repr(5e-324) == "5e-324"
    assert float_repr(-0.0) == "-0.0"
    assert float_repr(1.7976931348623157e308) == "1.7976931348623157e+308"


def test_random_bit_patterns_match_repr():
    rng = random.Random(20240601)
    bad = []
    for _ in range(200_000):
        x = _bits(rng.getrandbits(64))
        if math.isfinite(x) and float_repr(x) != repr(x):
            bad.append(repr(x))
    assert bad == []


def test_random_metric_like_values_match_repr():
    rng = random.Random(7)
    bad = []
    for _ in range(100_000):
        for x in (
            rng.random() * 100.0,
            round(rng.random() * 1000, rng.randint(0, 10)),
            rng.uniform(-1e6, 1e6),
            rng.randint(1, 2**53) * 2.0 ** rng.randint(-80, 0),
            rng.random() * 10.0 ** rng.randint(-8, 20),
        ):
            if float_repr(x) != repr(x):
                bad.append(repr(x))
    assert bad == []


@pytest.mark.skipif(
    float_repr_fast(0.5) is None, reason="built without 128-bit integers: CPython formats all"
)
def test_fast_path_covers_metric_values():
    # Values between about 7.6e-6 and 1e16 never need CPython's formatter.
    rng = random.Random(11)
    misses = 0
    for _ in range(50_000):
        for x in (rng.random() * 100.0, round(rng.random() * 1e6, 3), rng.uniform(1e-5, 1e15)):
            r = float_repr_fast(x)
            if r is None:
                misses += 1
            else:
                assert r == repr(x)
    assert misses == 0


def test_fast_path_defers_outside_its_range():
    for x in (1e16, 1e300, 5e-324, 1e-10, math.inf, -math.inf, math.nan):
        assert float_repr_fast(x) is None
    assert float_repr(1e300) == repr(1e300)


@pytest.mark.parametrize(
    "ts",
    [1700000000, 1700000000.5, 1700000000.123, 0.0015, -1.5, 1e9 + 0.0001, 2**31, 12345678901],
)
def test_collection_time_is_python_int_of_ts_times_1000(ts):
    enc = _codec.Encoder(max_past_ms=-1, max_future_ms=-1)
    enc.add_lines(b"m 1 %r\n" % ts, now_ms=0)
    (body,) = enc.take()
    want = ts * 1000 if isinstance(ts, int) else int(ts * 1000.0)
    assert body.startswith(b'[{"collectionTime":%d,' % want)


@pytest.mark.parametrize("v", [0, 1, -1, 9, 10, 99, 100, 2**31, 2**63 - 1, -(2**63), 10**18])
def test_integer_values_are_written_exactly(v):
    enc = _codec.Encoder(max_past_ms=-1, max_future_ms=-1)
    enc.add_lines(b"m %d 1\n" % v, now_ms=0)
    (body,) = enc.take()
    assert b'"metricValue":%d,' % v in body


def _same(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b)


def test_decimal_strings_parse_like_float():
    # String values (statsd, Dropwizard, plaintext lines) are read with the codec's own
    # correctly rounded parser where it can; it must agree with float() bit for bit.
    text_to_double = _codec._test_text_to_double
    rng = random.Random(3)
    cases = [b"0", b"-0.0", b".5", b"5.", b"1e19", b"1e-21", b"0.1", b"+1.5E+3", b"00.0001"]
    for _ in range(50_000):
        cases.append(repr(rng.random() * 100.0).encode())
        cases.append(b"%.*f" % (rng.randint(0, 20), rng.random() * 10.0 ** rng.randint(-5, 12)))
        cases.append(b"%de%d" % (rng.randint(0, 10**19), rng.randint(-40, 40)))
        # exact ties between two doubles above 2**53 round to even
        k = rng.randint(1, 10)
        cases.append(b"%d" % ((rng.getrandbits(52) | 1 << 52) << k | 1 << (k - 1)))
    bad = [c for c in cases if not _same(text_to_double(c), float(c))]
    assert bad == []
