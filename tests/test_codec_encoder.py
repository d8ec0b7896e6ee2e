"""What the Encoder writes: names, values, timestamps, bodies, plaintext lines, counters.

Parametrised over both implementations (`codec_impl`); every expectation is the exact JSON a
Blueflood server would receive.
"""

from __future__ import annotations

import json
import math
import pickle

import pytest

from fastforward.errors import FrameError
from tests import pickles as P

NOW_S = 1_700_000_000
NOW = NOW_S * 1000
DAY_MS = 86_400_000


def frame_of(*items) -> bytes:
    return pickle.dumps(list(items), protocol=3)  # 3: bytes without GLOBAL


def points(enc) -> list[dict]:
    return [d for body in enc.take() for d in json.loads(body)]


def one(impl, item, **kw):
    """Encode a frame with one item; return (datapoints, counters)."""
    enc = impl.Encoder(**kw)
    enc.add_pickle(frame_of(item), now_ms=NOW)
    return points(enc), enc.counters()


def dropped(counters: dict) -> dict:
    return {k: v for k, v in counters.items() if v and k not in ("frames", "lines", "accepted")}


def test_counters_have_every_key(codec_impl):
    enc = codec_impl.Encoder()
    assert set(enc.counters()) == {"accepted", "frames", "lines", *codec_impl.DROP_REASONS}
    assert codec_impl.DROP_REASONS == (
        "none",
        "nan",
        "inf",
        "bad_value",
        "bad_timestamp",
        "out_of_window",
        "invalid_name",
        "bad_item",
        "bad_line",
        "bad_frame",
        "rule",
        "series_budget",
        "bad_tags",
        "empty_name",
    )


def test_body_layout_is_exact(codec_impl):
    enc = codec_impl.Encoder(ttl=3600, prefix="pre")
    enc.add_pickle(frame_of(("a.b", (NOW_S, 1.5)), ("c", (NOW_S + 1, 7))), now_ms=NOW)
    assert enc.take() == [
        b'[{"collectionTime":1700000000000,"ttlInSeconds":3600,"metricValue":1.5,'
        b'"metricName":"pre.a.b"},{"collectionTime":1700000001000,"ttlInSeconds":3600,'
        b'"metricValue":7,"metricName":"pre.c"}]'
    ]


# --- shapes --------------------------------------------------------------------------------------


def test_item_shapes(codec_impl):
    enc = codec_impl.Encoder()
    frame = frame_of(
        ["list.item", [NOW_S, 1]],  # lists in place of tuples (og-rek)
        ("multi", (NOW_S, 1), (NOW_S + 1, 2), [NOW_S + 2, 3]),  # graphite-pickle style
        ("short",),  # bad
        "not an item",  # bad
        ("bad.pair", (NOW_S, 1), (NOW_S,)),  # one bad pair: the whole item is bad
        ("three", (NOW_S, 1, 2)),  # bad
        None,  # bad
        ("after", (NOW_S, 4)),
    )
    assert enc.add_pickle(frame, now_ms=NOW) == 5
    got = [(d["metricName"], d["collectionTime"], d["metricValue"]) for d in points(enc)]
    assert got == [
        ("list.item", NOW, 1),
        ("multi", NOW, 1),
        ("multi", NOW + 1000, 2),
        ("multi", NOW + 2000, 3),
        ("after", NOW, 4),
    ]
    assert dropped(enc.counters()) == {"bad_item": 5}


def test_top_level_tuple_is_accepted(codec_impl):
    enc = codec_impl.Encoder()
    assert enc.add_pickle(pickle.dumps((("a", (NOW_S, 1)),), 2), now_ms=NOW) == 1


def test_top_level_scalar_is_a_bad_frame(codec_impl):
    enc = codec_impl.Encoder()
    with pytest.raises(FrameError, match="top level not a list or tuple"):
        enc.add_pickle(pickle.dumps("a.b 1 2", 2), now_ms=NOW)
    assert enc.counters()["bad_frame"] == 1


# --- names ---------------------------------------------------------------------------------------

ESCAPES = [
    ('say"hi"', b'say\\"hi\\"'),
    ("back\\slash", b"back\\\\slash"),
    ("ctl\x01\x1f\x00", b"ctl\\u0001\\u001f\\u0000"),
    ("del\x7f", b"del\x7f"),
    ("caf\xe9.m\xfcnchen", "caf\xe9.m\xfcnchen".encode()),
    ("emoji.\U0001f600.\u20ac", "emoji.\U0001f600.\u20ac".encode()),
    ("a.b-c_d:e/f", b"a.b-c_d:e/f"),
]


@pytest.mark.parametrize(("name", "escaped"), ESCAPES, ids=[e[0] for e in ESCAPES])
def test_name_json_escaping(codec_impl, name, escaped):
    enc = codec_impl.Encoder()
    enc.add_pickle(frame_of((name, (NOW_S, 1))), now_ms=NOW)
    (body,) = enc.take()
    assert b'"metricName":"' + escaped + b'"}]' in body
    assert json.loads(body)[0]["metricName"] == name


def test_bytes_names_escape_the_same_way(codec_impl):
    enc = codec_impl.Encoder()
    frame = P.EMPTY_LIST + P.MARK
    for raw in (b'q"\\\x02', "caf\xe9".encode()):
        frame += P.short_binstring(raw) + P.binint(NOW_S) + P.binint1(1) + P.TUPLE2 + P.TUPLE2
    enc.add_pickle(frame + P.APPENDS + P.STOP, now_ms=NOW)
    assert [d["metricName"] for d in points(enc)] == ['q"\\\x02', "caf\xe9"]


def test_invalid_names_are_dropped_per_datapoint(codec_impl):
    frame = P.EMPTY_LIST + P.MARK
    names = [
        P.short_binstring(b"good.one"),
        P.short_binstring(b"bad\xff.utf8"),
        P.short_binstring(b"\xed\xa0\x80surrogate"),  # UTF-8 of a surrogate is invalid
        P.binunicode("lone\ud800"),  # str with a lone surrogate
        P.short_binunicode(""),
        P.short_binunicode("has space"),
        P.short_binunicode("tab\there"),
        P.short_binunicode("nl\nhere"),
        P.short_binunicode("vt\x0bff\x0c"),
        P.binint1(5),  # not a string
        P.short_binunicode("good.two"),
    ]
    for name in names:
        frame += name + P.binint(NOW_S) + P.binint1(1) + P.TUPLE2 + P.TUPLE2
    enc = codec_impl.Encoder()
    assert enc.add_pickle(frame + P.APPENDS + P.STOP, now_ms=NOW) == 2
    assert [d["metricName"] for d in points(enc)] == ["good.one", "good.two"]
    assert dropped(enc.counters()) == {"invalid_name": 9}
    rejects = enc.take_rejects()
    assert ("invalid_name", b"bad\xff.utf8") in rejects
    assert all(reason == "invalid_name" for reason, _ in rejects)


def test_name_length_counts_the_prefix(codec_impl):
    enc = codec_impl.Encoder(prefix="pre", max_name_bytes=10)
    frame = frame_of(("abcdef", (NOW_S, 1)), ("abcdefg", (NOW_S, 1)), ("\xe9" * 3, (NOW_S, 1)))
    assert enc.add_pickle(frame, now_ms=NOW) == 2  # "pre." + 6 bytes fits, 7 does not
    assert [d["metricName"] for d in points(enc)] == ["pre.abcdef", "pre.\xe9\xe9\xe9"]
    assert enc.counters()["invalid_name"] == 1


def test_prefix_is_escaped_too(codec_impl):
    enc = codec_impl.Encoder(prefix='t"en\u20ac')
    enc.add_pickle(frame_of(("x", (NOW_S, 1))), now_ms=NOW)
    (body,) = enc.take()
    assert b'"metricName":"t\\"en\xe2\x82\xac.x"' in body


# --- values --------------------------------------------------------------------------------------

VALUES = [
    (1.5, b"1.5"),
    (0.1, b"0.1"),
    (1e16, b"1e+16"),
    (-0.0, b"-0.0"),
    (5e-324, b"5e-324"),
    (1.7976931348623157e308, b"1.7976931348623157e+308"),
    (123456789.12345679, b"123456789.12345679"),
    (0, b"0"),
    (-7, b"-7"),
    (True, b"1"),
    (False, b"0"),
    (2**63 - 1, b"9223372036854775807"),
    (-(2**63), b"-9223372036854775808"),
    (2**63, b"9.223372036854776e+18"),
    (-(2**63) - 1, b"-9.223372036854776e+18"),
    (2**100, b"1.2676506002282294e+30"),
    (" 1.5 ", b"1.5"),
    ("+3", b"3"),
    ("-2", b"-2"),
    ("007", b"7"),
    ("1e3", b"1000.0"),
    (".5", b"0.5"),
    ("5.", b"5.0"),
    ("-0", b"0"),
    ("\t42\r\n", b"42"),
    ("9223372036854775808", b"9.223372036854776e+18"),
    ("0000000000000000000000000001", b"1"),
    ("1" * 30, repr(float("1" * 30)).encode()),
    (b"2.5", b"2.5"),
]


@pytest.mark.parametrize(("value", "json_value"), VALUES, ids=[repr(v[0]) for v in VALUES])
def test_value_is_written_exactly(codec_impl, value, json_value):
    enc = codec_impl.Encoder()
    assert enc.add_pickle(frame_of(("m", (NOW_S, value))), now_ms=NOW) == 1
    (body,) = enc.take()
    assert b'"metricValue":' + json_value + b"," in body


DROPS = [
    (None, "none"),
    (math.nan, "nan"),
    (-math.nan, "nan"),
    (math.inf, "inf"),
    (-math.inf, "inf"),
    ("nan", "nan"),
    ("-NaN", "nan"),
    ("inf", "inf"),
    ("-Infinity", "inf"),
    ("+INF", "inf"),
    ("1e999", "inf"),
    ("1" * 400, "bad_value"),  # an integer string past float range
    ("abc", "bad_value"),
    ("1,5", "bad_value"),
    ("0x10", "bad_value"),
    ("1_000", "bad_value"),
    ("\uff11", "bad_value"),  # a full-width digit: float() takes it, the grammar does not
    ("", "bad_value"),
    ("1.5 2", "bad_value"),
    ((1, 2), "bad_value"),
    ([1.5], "bad_value"),
]


@pytest.mark.parametrize(("value", "reason"), DROPS, ids=[repr(v[0]) for v in DROPS])
def test_unusable_values_are_dropped_and_counted(codec_impl, value, reason):
    got, counters = one(codec_impl, ("m.x", (NOW_S, value)))
    assert got == []
    assert dropped(counters) == {reason: 1}


def test_value_drops_keep_the_rest_of_the_frame(codec_impl):
    enc = codec_impl.Encoder()
    frame = frame_of(("a", (NOW_S, math.nan)), ("b", (NOW_S, 2.0)), ("c", (NOW_S, None)))
    assert enc.add_pickle(frame, now_ms=NOW) == 1
    assert [d["metricName"] for d in points(enc)] == ["b"]
    assert enc.take_rejects() == [("nan", b"a"), ("none", b"c")]


# --- timestamps ----------------------------------------------------------------------------------

TIMESTAMPS = [
    (NOW_S, NOW),
    (float(NOW_S) + 0.9999, int((NOW_S + 0.9999) * 1000.0)),
    (1699999999.0005, int(1699999999.0005 * 1000.0)),
    (-1, NOW),
    (-1.0, NOW),
    ("-1", NOW),
    ("-1.0", NOW),
    (str(NOW_S), NOW),
    (f"{NOW_S}.5", NOW + 500),
    (True, None),  # 1 second after the epoch: out of the window
]


@pytest.mark.parametrize(("ts", "ms"), TIMESTAMPS, ids=[repr(t[0]) for t in TIMESTAMPS])
def test_timestamps(codec_impl, ts, ms):
    got, counters = one(codec_impl, ("m", (ts, 1)))
    if ms is None:
        assert got == [] and counters["out_of_window"] == 1
    else:
        assert [d["collectionTime"] for d in got] == [ms]


@pytest.mark.parametrize("ts", [None, math.nan, math.inf, "abc", (1,), b"", "1e999", 10**30])
def test_bad_timestamps(codec_impl, ts):
    _, counters = one(codec_impl, ("m", (ts, 1)), max_past_ms=-1, max_future_ms=-1)
    assert dropped(counters) == {"bad_timestamp": 1}


def test_time_window_edges(codec_impl):
    past, future = 3 * DAY_MS, 600_000
    enc = codec_impl.Encoder(max_past_ms=past, max_future_ms=future)
    frame = frame_of(
        ("oldest", ((NOW - past) / 1000, 1)),
        ("too.old", ((NOW - past - 1) / 1000, 1)),
        ("newest", ((NOW + future) // 1000, 1)),
        ("too.new", ((NOW + future + 1000) // 1000, 1)),
    )
    assert enc.add_pickle(frame, now_ms=NOW) == 2
    assert [d["metricName"] for d in points(enc)] == ["oldest", "newest"]
    assert dropped(enc.counters()) == {"out_of_window": 2}


def test_negative_bounds_disable_the_window(codec_impl):
    enc = codec_impl.Encoder(max_past_ms=-1, max_future_ms=-1)
    assert enc.add_pickle(frame_of(("a", (0, 1)), ("b", (4_000_000_000, 1))), now_ms=NOW) == 2
    assert [d["collectionTime"] for d in points(enc)] == [0, 4_000_000_000_000]


def test_overwrite_collection_time_ignores_the_timestamp(codec_impl):
    enc = codec_impl.Encoder(overwrite_collection_time=True)
    frame = frame_of(("a", (12, 1)), ("b", (None, 2)), ("c", ("junk", 3)), ("d", (NOW_S, None)))
    assert enc.add_pickle(frame, now_ms=NOW) == 3
    assert [d["collectionTime"] for d in points(enc)] == [NOW] * 3
    assert dropped(enc.counters()) == {"none": 1}


def test_wall_clock_is_used_without_now_ms(codec_impl):
    import time

    enc = codec_impl.Encoder()
    before = int(time.time() * 1000)
    assert (
        enc.add_pickle(
            frame_of(("a", (-1, 1))),
        )
        == 1
    )
    after = int(time.time() * 1000)
    (dp,) = points(enc)
    assert before <= dp["collectionTime"] <= after


def test_drop_order_name_then_value_then_timestamp(codec_impl):
    enc = codec_impl.Encoder()
    frame = frame_of(("bad name", (None, None)), ("ok", (None, None)), ("ok", (None, 1)))
    enc.add_pickle(frame, now_ms=NOW)
    assert dropped(enc.counters()) == {"invalid_name": 1, "none": 1, "bad_timestamp": 1}


# --- bodies --------------------------------------------------------------------------------------


def _names(bodies: list[bytes]) -> list[str]:
    return [d["metricName"] for b in bodies for d in json.loads(b)]


@pytest.mark.parametrize("limit", [200, 250, 1000, 4096])
def test_bodies_split_by_bytes(codec_impl, limit):
    enc = codec_impl.Encoder(max_body_bytes=limit)
    names = [f"series.{i}.{'x' * (i % 17)}" for i in range(300)]
    for start in range(0, 300, 37):
        frame = frame_of(*[(n, (NOW_S, i * 0.1)) for i, n in enumerate(names[start : start + 37])])
        enc.add_pickle(frame, now_ms=NOW)
    assert enc.pending_datapoints == 300
    pending = enc.pending_bytes
    bodies = enc.take()
    assert sum(len(b) for b in bodies) == pending
    assert all(len(b) <= limit for b in bodies)
    assert _names(bodies) == names  # all present, once, in order
    # every body but the last was closed because the next datapoint did not fit
    for body, nxt in zip(bodies, bodies[1:], strict=False):
        first_next = json.dumps(json.loads(nxt)[0], separators=(",", ":")).encode()
        assert len(body) + 1 + len(first_next) > limit


def test_datapoint_alone_over_the_byte_limit_gets_its_own_body(codec_impl):
    enc = codec_impl.Encoder(max_body_bytes=50)
    enc.add_pickle(frame_of(("a", (NOW_S, 1)), ("b", (NOW_S, 2)), ("c", (NOW_S, 3))), now_ms=NOW)
    bodies = enc.take()
    assert _names(bodies) == ["a", "b", "c"] and len(bodies) == 3


def test_bodies_split_by_datapoints(codec_impl):
    enc = codec_impl.Encoder(max_body_datapoints=10)
    enc.add_pickle(frame_of(*[(f"m{i}", (NOW_S, i)) for i in range(25)]), now_ms=NOW)
    assert enc.ready_bodies == 2
    assert enc.pending_datapoints == 25
    full = enc.take(partial=False)
    assert [len(json.loads(b)) for b in full] == [10, 10]
    assert enc.ready_bodies == 0 and enc.pending_datapoints == 5
    rest = enc.take()
    assert [len(json.loads(b)) for b in rest] == [5]
    assert _names(full + rest) == [f"m{i}" for i in range(25)]
    assert enc.take() == [] and enc.pending_bytes == 0 and enc.pending_datapoints == 0


def test_take_counted_gives_each_body_with_its_datapoint_count(codec_impl):
    enc = codec_impl.Encoder(max_body_bytes=900, max_body_datapoints=7)
    enc.add_pickle(frame_of(*[(f"m{i}", (NOW_S, i * 1.5)) for i in range(40)]), now_ms=NOW)
    enc.add_lines(b"line.a 1 %d\nline.b 2 %d\n" % (NOW_S, NOW_S), now_ms=NOW)
    pending = enc.pending_datapoints
    counted = enc.take_counted()
    assert [n for _, n in counted] == [len(json.loads(body)) for body, _ in counted]
    assert sum(n for _, n in counted) == pending == 42
    assert enc.take_counted() == [] and enc.pending_datapoints == 0


def test_exactly_full_body_is_ready_at_once(codec_impl):
    enc = codec_impl.Encoder(max_body_datapoints=3)
    enc.add_pickle(frame_of(*[(f"m{i}", (NOW_S, i)) for i in range(3)]), now_ms=NOW)
    assert enc.ready_bodies == 1
    assert enc.take(partial=False) and enc.take() == []


# --- memory held (what --max-buffer-bytes counts for the encoder) ------------------------------


def test_an_encoder_whose_bodies_were_taken_holds_nothing(codec_impl):
    enc = codec_impl.Encoder(max_body_datapoints=100)
    assert enc.held_bytes == 0
    enc.add_pickle(frame_of(*[(f"m{i}", (NOW_S, i)) for i in range(200)]), now_ms=NOW)
    # two full bodies, and the open one after them is empty: it holds no memory
    assert enc.ready_bodies == 2 and enc.pending_datapoints == 200
    assert enc.held_bytes == enc.pending_bytes > 0
    assert len(enc.take(partial=False)) == 2
    assert enc.held_bytes == 0  # else the memory cap's gate could stay shut with nothing to send
    enc.add_lines(b"a.b 1 %d\n" % NOW_S, now_ms=NOW)
    assert enc.held_bytes >= enc.pending_bytes > 0
    assert len(enc.take()) == 1 and enc.held_bytes == 0


def test_held_bytes_cover_the_open_bodys_allocation(codec_impl):
    enc = codec_impl.Encoder(max_body_bytes=100_000)
    for start in range(0, 2000, 500):
        frame = frame_of(*[(f"series.{i}", (NOW_S, i * 0.5)) for i in range(start, start + 500)])
        enc.add_pickle(frame, now_ms=NOW)
        # the open body counts with all it allocated, at least what was written in it
        assert enc.held_bytes >= enc.pending_bytes
    assert enc.ready_bodies >= 1
    full = enc.take(partial=False)
    open_held = enc.held_bytes
    assert open_held >= enc.pending_bytes > 0  # the last body, still open
    assert sum(map(len, full)) + open_held >= sum(map(len, full + enc.take()))
    assert enc.held_bytes == 0


# --- rejects -------------------------------------------------------------------------------------


def test_rejects_are_bounded_and_cleared(codec_impl):
    enc = codec_impl.Encoder()
    enc.add_pickle(frame_of(*[(f"n{i}", (NOW_S, None)) for i in range(100)]), now_ms=NOW)
    rejects = enc.take_rejects()
    assert len(rejects) == 64
    assert rejects[-1] == ("none", b"n99")  # the most recent are kept
    assert enc.take_rejects() == []
    with pytest.raises(FrameError):
        enc.add_pickle(b"c", now_ms=NOW)
    ((reason, sample),) = enc.take_rejects()
    assert reason == "bad_frame" and b"forbidden opcode GLOBAL" in sample


def test_long_reject_samples_are_cut(codec_impl):
    enc = codec_impl.Encoder()
    enc.add_lines(b"x" * 10_000 + b"\n", now_ms=NOW)
    ((reason, sample),) = enc.take_rejects()
    assert reason == "bad_line" and sample == b"x" * 256


# --- plaintext -----------------------------------------------------------------------------------


def test_lines_crlf_blank_and_malformed(codec_impl):
    enc = codec_impl.Encoder()
    data = (
        b"a.b 1.5 1700000000\r\n"
        b"\n"
        b"   \r\n"
        b"two fields\n"
        b"one two three four\n"
        b"c.d\t2\t1700000001\n"
        b"bad.value x 1700000000\n"
        b"e.f 3 -1\n"
    )
    assert enc.add_lines(data, now_ms=NOW) == len(data)
    got = [(d["metricName"], d["metricValue"], d["collectionTime"]) for d in points(enc)]
    assert got == [("a.b", 1.5, NOW), ("c.d", 2, NOW + 1000), ("e.f", 3, NOW)]
    counters = enc.counters()
    assert counters["lines"] == 6 and counters["accepted"] == 3
    assert dropped(counters) == {"bad_line": 2, "bad_value": 1}
    assert ("bad_line", b"two fields") in enc.take_rejects()


def test_partial_trailing_line_is_left_for_the_caller(codec_impl):
    enc = codec_impl.Encoder()
    data = b"a 1 1700000000\nb 2 17000"
    n = enc.add_lines(data, now_ms=NOW)
    assert n == len(b"a 1 1700000000\n")
    assert enc.add_lines(b"no newline at all", now_ms=NOW) == 0
    rest = data[n:] + b"00000\n"
    assert enc.add_lines(rest, now_ms=NOW) == len(rest)
    assert [d["metricName"] for d in points(enc)] == ["a", "b"]
    assert enc.counters()["lines"] == 2


def test_final_consumes_the_partial_line(codec_impl):
    enc = codec_impl.Encoder()
    data = b"a 1 1700000000\nb 2 1700000000"
    assert enc.add_lines(data, final=True, now_ms=NOW) == len(data)
    assert enc.add_lines(b"c 3 1700000000\r", final=True, now_ms=NOW) == 15
    assert enc.add_lines(b"", final=True, now_ms=NOW) == 0
    assert [d["metricName"] for d in points(enc)] == ["a", "b", "c"]


def test_line_length_limit(codec_impl):
    enc = codec_impl.Encoder(max_line_bytes=20)
    data = b"a 1 1700000000\n" + b"b" * 10 + b" 1 1700000000\n"  # 15 and 24 bytes
    enc.add_lines(data, now_ms=NOW)
    assert [d["metricName"] for d in points(enc)] == ["a"]
    assert enc.counters()["bad_line"] == 1


def test_lines_accept_memoryview_and_bytearray(codec_impl):
    enc = codec_impl.Encoder()
    buf = bytearray(b"a 1 1700000000\nb 2 1700000000\n")
    assert enc.add_lines(memoryview(buf), now_ms=NOW) == len(buf)
    assert enc.add_pickle(memoryview(frame_of(("c", (NOW_S, 3)))), now_ms=NOW) == 1
    assert enc.add_pickle(bytearray(frame_of(("d", (NOW_S, 4)))), now_ms=NOW) == 1
    assert [d["metricName"] for d in points(enc)] == ["a", "b", "c", "d"]


def test_line_names_values_and_timestamps_follow_the_pickle_rules(codec_impl):
    enc = codec_impl.Encoder(prefix="p")
    data = (
        'caf\xe9."q" 1e16 1700000000.5\n'.encode()
        + b"bad\xff 1 1700000000\n"
        + b"n nan 1700000000\n"
        + b"i -inf 1700000000\n"
        + b"t 1 yesterday\n"
        + b"w 1 1000\n"
    )
    enc.add_lines(data, now_ms=NOW)
    (body,) = enc.take()
    assert body == (
        b'[{"collectionTime":1700000000500,"ttlInSeconds":86400,"metricValue":1e+16,'
        b'"metricName":"p.caf\xc3\xa9.\\"q\\""}]'
    )
    assert dropped(enc.counters()) == {
        "invalid_name": 1,
        "nan": 1,
        "inf": 1,
        "bad_timestamp": 1,
        "out_of_window": 1,
    }
