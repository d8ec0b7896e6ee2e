"""The pickle side of the codec: every opcode, every real sender's frames, and hostile frames.

Parametrised over both implementations (`codec_impl`). The stdlib pickle module appears only as
an oracle for frames that contain no globals.
"""

from __future__ import annotations

import json
import os
import pickle
import struct

import pytest

from fastforward.errors import FrameError, FrameTooLarge
from tests import pickles as P

NOW_S = 1_700_000_000
NOW = NOW_S * 1000


def run(impl, frame: bytes, **kw):
    """Feed one frame; return (datapoints as dicts, counters). Raises what add_pickle raises."""
    enc = impl.Encoder(**kw)
    enc.add_pickle(frame, now_ms=NOW)
    return [d for body in enc.take() for d in json.loads(body)], enc.counters()


def dp(name: str, ms: int, value, ttl: int = 86400) -> dict:
    return {"collectionTime": ms, "ttlInSeconds": ttl, "metricValue": value, "metricName": name}


def tup(*ops: bytes) -> bytes:
    """A frame whose value is the tuple of the values the ops push."""
    return P.MARK + b"".join(ops) + P.TUPLE + P.STOP


# --- every accepted opcode -----------------------------------------------------------------------

ACCEPTED = {
    "PROTO": (P.proto(2) + P.EMPTY_LIST + P.STOP, []),
    "PROTO 5": (P.proto(5) + P.NONE + P.STOP, None),
    "FRAME": (P.proto(4) + P.frame_op(2) + P.EMPTY_LIST + P.STOP, []),
    "two FRAMEs": (P.frame_op(1) + P.NONE + P.frame_op(1) + P.TUPLE1 + P.STOP, (None,)),
    "MARK LIST": (P.MARK + P.binint1(1) + P.binint1(2) + P.LIST + P.STOP, [1, 2]),
    "EMPTY_LIST APPEND": (P.EMPTY_LIST + P.binint1(7) + P.APPEND + P.STOP, [7]),
    "APPENDS": (P.EMPTY_LIST + P.MARK + P.NONE + P.NEWTRUE + P.APPENDS + P.STOP, [None, True]),
    "empty APPENDS": (P.EMPTY_LIST + P.MARK + P.APPENDS + P.STOP, []),
    "EMPTY_TUPLE": (P.EMPTY_TUPLE + P.STOP, ()),
    "TUPLE": (tup(P.binint1(1), P.binint1(2), P.binint1(3), P.binint1(4)), (1, 2, 3, 4)),
    "TUPLE1": (P.NONE + P.TUPLE1 + P.STOP, (None,)),
    "TUPLE2": (P.NONE + P.NEWFALSE + P.TUPLE2 + P.STOP, (None, False)),
    "TUPLE3": (P.NONE + P.NONE + P.NONE + P.TUPLE3 + P.STOP, (None, None, None)),
    "STRING": (tup(P.string(b"a.b"), P.string(b"x", b'"')), (b"a.b", b"x")),
    "STRING escapes": (
        tup(P.string(rb"q\'\"\\\n\t\r\x41\101\7\a\b\f\v")),
        (b"q'\"\\\n\t\rAA\x07\x07\x08\x0c\x0b",),
    ),
    # kept as is, like Python (whose escape decoder also warns about it)
    "STRING unknown escape": (tup(P.string(rb"a\zb")), (b"a\\zb",)),
    "STRING unescaped quote": (tup(b"S'it's'\n"), (b"it's",)),
    "BINSTRING": (tup(P.binstring(b"n" * 300)), (b"n" * 300,)),
    "SHORT_BINSTRING": (tup(P.short_binstring(b"servers.web1")), (b"servers.web1",)),
    "UNICODE": (tup(P.unicode_("caf\xe9.\u20ac\\u")), ("caf\xe9.\u20ac\\u",)),
    "UNICODE escapes": (tup(b"Va\\u005cb\\u000ac\\U0001f600\n"), ("a\\b\nc\U0001f600",)),
    "BINUNICODE": (tup(P.binunicode("m\xfcnchen.cpu")), ("m\xfcnchen.cpu",)),
    "SHORT_BINUNICODE": (tup(P.short_binunicode("a.b")), ("a.b",)),
    "BINUNICODE8": (tup(P.binunicode8("a.b")), ("a.b",)),
    "SHORT_BINBYTES": (tup(P.short_binbytes(b"a.b")), (b"a.b",)),
    "BINBYTES": (tup(P.binbytes(b"a.b")), (b"a.b",)),
    "BINBYTES8": (tup(P.binbytes8(b"a.b")), (b"a.b",)),
    "INT": (tup(P.int_(5), P.int_(-5), P.int_(2**40), b"I+7\n", b"I-0\n"), (5, -5, 2**40, 7, 0)),
    "INT bools": (tup(P.int_(True), P.int_(False)), (True, False)),
    "BININT": (tup(P.binint(-(2**31)), P.binint(2**31 - 1)), (-(2**31), 2**31 - 1)),
    "BININT1": (tup(P.binint1(0), P.binint1(255)), (0, 255)),
    "BININT2": (tup(P.binint2(65535)), (65535,)),
    "LONG": (tup(P.long_(2**70), P.long_(-3), P.long_(12, suffix=False)), (2**70, -3, 12)),
    "LONG1": (
        tup(P.long1(0), P.long1(-1), P.long1(2**63), P.long1(-(2**100))),
        (0, -1, 2**63, -(2**100)),
    ),
    "LONG4": (tup(P.long4(2**200)), (2**200,)),
    "FLOAT": (tup(P.float_(1.5), P.float_(-1e300), b"F1\n", b"F.5e1\n"), (1.5, -1e300, 1.0, 5.0)),
    "BINFLOAT": (tup(P.binfloat(0.1), P.binfloat(-0.0), P.binfloat(5e-324)), (0.1, -0.0, 5e-324)),
    "NONE NEWTRUE NEWFALSE": (tup(P.NONE, P.NEWTRUE, P.NEWFALSE), (None, True, False)),
    "PUT GET": (tup(P.binint1(3), P.put(0), P.get(0)), (3, 3)),
    "BINPUT BINGET": (tup(P.binint1(3), P.binput(0), P.binget(0)), (3, 3)),
    "LONG_BINPUT LONG_BINGET": (tup(P.binint1(3), P.long_binput(1), P.long_binget(1)), (3, 3)),
    "MEMOIZE": (tup(P.binint1(3), P.MEMOIZE, P.binint1(4), P.MEMOIZE, P.binget(1)), (3, 4, 4)),
    "POP": (tup(P.binint1(1), P.binint1(2), P.POP), (1,)),
    "POP_MARK": (tup(P.binint1(1), P.MARK, P.binint1(2), P.POP_MARK), (1,)),
    "DUP": (tup(P.binint1(9), P.DUP), (9, 9)),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_every_accepted_opcode_decodes_like_pickle(codec_impl, case):
    frame, expected = ACCEPTED[case]
    got = codec_impl.safe_loads(frame)
    assert got == expected
    assert type(got) is type(expected)
    # the stdlib, as an oracle, agrees (these frames contain no globals)
    if case != "STRING unknown escape":
        assert got == pickle.loads(frame, encoding="bytes")


def test_memo_shares_one_object(codec_impl):
    # ] q0 h0 ... : the same list object twice, as pickle gives
    frame = P.EMPTY_LIST + P.binput(0) + P.binint1(1) + P.APPEND + P.binget(0) + P.TUPLE2 + P.STOP
    got = codec_impl.safe_loads(frame)
    assert got == ([1], [1]) and got[0] is got[1]


# --- the senders of docs/carbon-protocol.md section 1.4 -----------------------------------------


def test_carbon_relay_py3_protocol2_with_memo(codec_impl):
    points = [(f"servers.web{i}.cpu", NOW_S - i, i + 0.25) for i in range(300)]
    frame = P.carbon_relay_py3(points)
    assert frame == pickle.dumps([(n, (float(t), float(v))) for n, t, v in points], protocol=2)
    got, counters = run(codec_impl, frame)
    assert got == [dp(n, t * 1000, v) for n, t, v in points]
    assert counters["accepted"] == 300 and counters["frames"] == 1


def test_carbon_py2_cpickle_names_and_text_int(codec_impl):
    points = [
        (b"py2.a", NOW_S, 1.5),
        (b"py2.b", NOW_S, 2**40),  # a py2 int over 2**31 is text INT even at protocol 2
        (b"py2.a", NOW_S - 60, 7),  # repeated name: BINGET
        (b"p" * 300, NOW_S, 0.5),  # BINSTRING
    ]
    frame = P.carbon_py2(points)
    assert b"I1099511627776\n" in frame and b"h\x01" in frame and b"T,\x01\x00\x00" in frame
    got, _ = run(codec_impl, frame)
    assert got == [dp(n.decode(), t * 1000, v) for n, t, v in points]


def test_og_rek_one_datapoint_per_frame_list_not_tuple(codec_impl):
    enc = codec_impl.Encoder(max_future_ms=-1)
    enc.add_pickle(P.og_rek("relay.ng.a", NOW_S, 0.5), now_ms=NOW)
    later = 2**31 + 5  # og-rek switches the ts to text INT
    enc.add_pickle(P.og_rek("relay.ng.b", later, 1.0), now_ms=NOW)
    got = [d for b in enc.take() for d in json.loads(b)]
    assert got == [dp("relay.ng.a", NOW, 0.5), dp("relay.ng.b", later * 1000, 1.0)]


@pytest.mark.parametrize("sender", [P.statsd, P.dropwizard], ids=["statsd", "dropwizard"])
def test_statsd_and_dropwizard_protocol0_string_values(codec_impl, sender):
    points = [("stats.counters.a.rate", NOW_S, "0.5"), ("stats.gauges.b", NOW_S, "-12")]
    got, counters = run(codec_impl, sender(points))
    assert got == [dp("stats.counters.a.rate", NOW, 0.5), dp("stats.gauges.b", NOW, -12)]
    assert counters["accepted"] == 2


def test_statsite_strings_for_timestamp_and_value(codec_impl):
    points = [("statsite.x", str(NOW_S), "3.25"), ("statsite.y", str(NOW_S - 1), "10")]
    got, _ = run(codec_impl, P.statsite(points))
    assert got == [dp("statsite.x", NOW, 3.25), dp("statsite.y", NOW - 1000, 10)]


def test_diamond_py2_protocol0_put_get(codec_impl):
    points = [("dia.cpu", NOW_S, 1.5), ("dia.mem", NOW_S, 2.0), ("dia.cpu", NOW_S - 1, 3.0)]
    frame = P.diamond_py2(points)
    assert P.get(1) in frame
    got, _ = run(codec_impl, frame)
    assert got == [dp(n, t * 1000, v) for n, t, v in points]


def test_protocol4_frame_memoize_short_binunicode(codec_impl):
    points = [("adhoc.a", NOW_S, 1.0), ("adhoc.b", NOW_S, 2.5)]
    frame = P.py3_protocol4(points)
    got, _ = run(codec_impl, frame)
    assert got == [dp(n, t * 1000, v) for n, t, v in points]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_stdlib_pickle_every_protocol(codec_impl, protocol):
    data = [("std.a", (NOW_S, 1)), ["std.b", [float(NOW_S), 2.5]], ("std.c", (NOW_S, None))]
    got, counters = run(codec_impl, pickle.dumps(data, protocol=protocol))
    assert got == [dp("std.a", NOW, 1), dp("std.b", NOW, 2.5)]
    assert counters["none"] == 1


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_stdlib_bytes_names_from_protocol_3(codec_impl, protocol):
    frame = pickle.dumps([(b"std.bytes", (NOW_S, 1.5)), (b"b" * 300, (NOW_S, 2))], protocol)
    got, _ = run(codec_impl, frame)
    assert got == [dp("std.bytes", NOW, 1.5), dp("b" * 300, NOW, 2)]


def test_bytes_names_and_none_values(codec_impl):
    frame = P.EMPTY_LIST + P.MARK
    frame += P.short_binbytes(b"bytes.name") + P.binint(NOW_S) + P.binfloat(1.0)
    frame += P.TUPLE2 + P.TUPLE2
    frame += P.binbytes(b"none.value") + P.binint(NOW_S) + P.NONE + P.TUPLE2 + P.TUPLE2
    frame += P.APPENDS + P.STOP
    got, counters = run(codec_impl, frame)
    assert got == [dp("bytes.name", NOW, 1.0)]
    assert counters["none"] == 1 and counters["accepted"] == 1


def test_py3_bytes_name_at_protocol2_is_refused_like_carbon(codec_impl):
    # pickle.dumps([(b"x", ...)], 2) uses GLOBAL _codecs.encode + REDUCE
    frame = pickle.dumps([(b"x", (NOW_S, 1.0))], protocol=2)
    with pytest.raises(FrameError, match="forbidden opcode GLOBAL"):
        run(codec_impl, frame)


# --- truncated frames ----------------------------------------------------------------------------

GOOD_FRAMES = {
    "relay": P.carbon_relay_py3([("a.b", NOW_S, 1.5), ("a.c", NOW_S, 2.5)]),
    "py2": P.carbon_py2([(b"a.b", NOW_S, 2**40), (b"a.b", NOW_S, 1)]),
    "statsd": P.statsd([("a.b", NOW_S, "1")]),
    "diamond": P.diamond_py2([("a.b", NOW_S, 1.0), ("a.b", NOW_S, 2.0)]),
    "proto4": P.py3_protocol4([("a.b", NOW_S, 1.0)]),
    "proto5": pickle.dumps([("a.b", (NOW_S, 2**70)), ("c", (1.5, True))], protocol=5),
    "proto0": pickle.dumps([("a.b", (NOW_S, 2**70)), ("c\u20ac", (1.5, "x"))], protocol=0),
}


@pytest.mark.parametrize("name", sorted(GOOD_FRAMES))
def test_every_prefix_of_a_good_frame_is_refused_and_emits_nothing(codec_impl, name):
    frame = GOOD_FRAMES[name]
    enc = codec_impl.Encoder()
    assert enc.add_pickle(frame, now_ms=NOW) >= 1
    enc.take()
    for cut in range(len(frame)):
        with pytest.raises(FrameError) as info:
            enc.add_pickle(frame[:cut], now_ms=NOW)
        assert 0 <= info.value.offset <= cut
    assert enc.take() == []
    counters = enc.counters()
    assert counters["bad_frame"] == len(frame)
    assert counters["frames"] == len(frame) + 1


def test_bad_frame_does_not_affect_the_next_good_one(codec_impl):
    enc = codec_impl.Encoder()
    good = P.carbon_relay_py3([("a.b", NOW_S, 1.0)])
    with pytest.raises(FrameError):
        enc.add_pickle(good[:-1], now_ms=NOW)
    assert enc.add_pickle(good, now_ms=NOW) == 1
    assert [json.loads(b) for b in enc.take()] == [[dp("a.b", NOW, 1.0)]]


# --- hostile frames ------------------------------------------------------------------------------


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_pickle_that_runs_os_system_is_rejected_and_runs_nothing(codec_impl, tmp_path, protocol):
    target = tmp_path / "pwned"
    payload = [("a.b", (NOW_S, 1.0)), _Exploit(str(target))]
    frame = pickle.dumps(payload, protocol=protocol)
    enc = codec_impl.Encoder()
    with pytest.raises(FrameError, match="forbidden opcode (GLOBAL|STACK_GLOBAL)"):
        enc.add_pickle(frame, now_ms=NOW)
    with pytest.raises(FrameError):
        codec_impl.safe_loads(frame)
    assert not target.exists()
    assert enc.take() == []  # the good datapoint before it was not emitted either
    assert enc.counters()["bad_frame"] == 1


FORBIDDEN = {
    "GLOBAL": b"c",
    "STACK_GLOBAL": b"\x93",
    "REDUCE": b"R",
    "BUILD": b"b",
    "INST": b"i",
    "OBJ": b"o",
    "NEWOBJ": b"\x81",
    "NEWOBJ_EX": b"\x92",
    "PERSID": b"P",
    "BINPERSID": b"Q",
    "EXT1": b"\x82",
    "EXT2": b"\x83",
    "EXT4": b"\x84",
    "EMPTY_DICT": b"}",
    "DICT": b"d",
    "SETITEM": b"s",
    "SETITEMS": b"u",
    "EMPTY_SET": b"\x8f",
    "ADDITEMS": b"\x90",
    "FROZENSET": b"\x91",
    "BYTEARRAY8": b"\x96",
    "NEXT_BUFFER": b"\x97",
    "READONLY_BUFFER": b"\x98",
}


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_every_forbidden_opcode_is_refused_by_name(codec_impl, name):
    prefix = P.proto(2) + P.EMPTY_LIST + P.MARK + P.NONE
    frame = prefix + FORBIDDEN[name] + b"os\nsystem\n" + P.STOP
    with pytest.raises(FrameError) as info:
        codec_impl.safe_loads(frame)
    assert info.value.reason == f"forbidden opcode {name}"
    assert info.value.offset == len(prefix)


@pytest.mark.parametrize("byte", [0x00, 0x3F, 0x7A, 0x99, 0xFF])
def test_unknown_opcode(codec_impl, byte):
    with pytest.raises(FrameError) as info:
        codec_impl.safe_loads(P.EMPTY_LIST + bytes([byte]) + P.STOP)
    assert info.value.reason == f"unknown opcode 0x{byte:02x}"
    assert info.value.offset == 1


def _reason(impl, frame: bytes, **kw) -> str:
    with pytest.raises(FrameError) as info:
        impl.safe_loads(frame, **kw)
    return info.value.reason


def test_memo_bombs(codec_impl):
    one = P.NONE  # one value created
    assert _reason(codec_impl, one + P.long_binput(0x7FFFFFFF) + P.STOP) == (
        "memo index over values created"
    )
    assert _reason(codec_impl, one + b"p99999999999999999999999\n" + P.STOP) == (
        "memo index over values created"
    )
    assert _reason(codec_impl, one + P.binput(2) + P.STOP) == "memo index over values created"
    assert _reason(codec_impl, P.binget(0) + P.STOP) == "GET of unset memo slot"
    assert _reason(codec_impl, P.long_binget(0xFFFFFFFF) + P.STOP) == "GET of unset memo slot"
    assert _reason(codec_impl, one + P.binput(0) + P.get(1) + P.STOP) == "GET of unset memo slot"
    # MEMOIZE over and over on one value runs past the values created
    assert _reason(codec_impl, one + P.MEMOIZE * 3 + P.STOP) == "memo index over values created"
    assert _reason(codec_impl, one + b"p-1\n" + P.STOP) == "bad PUT argument"


def test_deep_nesting(codec_impl):
    ok = P.NONE + P.TUPLE1 * 64 + P.STOP
    value = codec_impl.safe_loads(ok)
    for _ in range(64):
        value = value[0]
    assert value is None
    assert _reason(codec_impl, P.NONE + P.TUPLE1 * 65 + P.STOP) == "nesting deeper than 64"
    lists = P.EMPTY_LIST + P.NONE + P.TUPLE1 * 40 + P.APPEND + P.TUPLE1 * 30 + P.STOP
    assert _reason(codec_impl, lists) == "nesting deeper than 64"
    assert codec_impl.safe_loads(P.MARK * 64 + P.LIST * 64 + P.STOP) is not None
    assert _reason(codec_impl, P.MARK * 65 + P.LIST * 65 + P.STOP) == "MARK depth over 64"


def test_lists_cannot_be_changed_once_inside_a_container(codec_impl):
    # a list appended to itself, and a list mutated after a tuple took it: both refused, so
    # no frame can build a cycle or hide depth
    self_append = P.EMPTY_LIST + P.binput(0) + P.binget(0) + P.APPEND + P.STOP
    assert _reason(codec_impl, self_append) == "APPEND to a list already inside a container"
    later = P.EMPTY_LIST + P.binput(0) + P.TUPLE1 + P.binget(0) + P.NONE + P.APPEND + P.POP + P.STOP
    assert _reason(codec_impl, later) == "APPEND to a list already inside a container"


def test_giant_integers(codec_impl):
    d100 = b"9" * 100
    assert codec_impl.safe_loads(b"I" + d100 + b"\n" + P.STOP) == int(d100)
    assert codec_impl.safe_loads(b"L-" + d100 + b"L\n" + P.STOP) == -int(d100)
    too_long = "text integer longer than 100 digits"
    assert _reason(codec_impl, b"I" + d100 + b"9\n" + P.STOP) == too_long
    assert _reason(codec_impl, b"L" + b"1" * 100_000 + b"L\n" + P.STOP) == (
        "text integer longer than 100 digits"
    )
    assert codec_impl.safe_loads(P.long1(2**511 - 1) + P.STOP) == 2**511 - 1
    long1_65 = b"\x8a\x41" + b"\x01" * 65 + P.STOP
    assert _reason(codec_impl, long1_65) == "binary long longer than 64 bytes"
    assert _reason(codec_impl, b"\x8b" + struct.pack("<i", 2**31 - 1) + P.STOP) == (
        "binary long longer than 64 bytes"
    )
    assert _reason(codec_impl, b"\x8b" + struct.pack("<i", -1) + P.STOP) == "bad LONG4 argument"


def test_frame_size_limit(codec_impl):
    frame = P.carbon_relay_py3([("a.b", NOW_S, 1.0)])
    assert codec_impl.safe_loads(frame, max_frame_bytes=len(frame))
    with pytest.raises(FrameTooLarge) as info:
        codec_impl.safe_loads(frame, max_frame_bytes=len(frame) - 1)
    assert info.value.reason == "frame longer than max_frame_bytes"
    enc = codec_impl.Encoder(max_frame_bytes=len(frame) - 1)
    with pytest.raises(FrameTooLarge):
        enc.add_pickle(frame, now_ms=NOW)
    assert enc.counters()["bad_frame"] == 1


def test_items_per_frame_limit(codec_impl):
    points = [(f"m.{i}", NOW_S, float(i)) for i in range(10)]
    frame = P.carbon_relay_py3(points)
    got, _ = run(codec_impl, frame, max_items_per_frame=10)
    assert len(got) == 10
    with pytest.raises(FrameError, match="more than max_items_per_frame items in a list"):
        run(codec_impl, frame, max_items_per_frame=9)
    # memo references cannot multiply datapoints past the limit either: 5 items of 5 pairs
    item = P.short_binunicode("a") + (P.binint(NOW_S) + P.binfloat(1.0) + P.TUPLE2) + P.binput(0)
    item = P.MARK + item + P.binget(0) * 4 + P.TUPLE + P.binput(1)
    amplified = P.EMPTY_LIST + P.MARK + item + P.binget(1) * 4 + P.APPENDS + P.STOP
    assert len(run(codec_impl, amplified, max_items_per_frame=25)[0]) == 25
    with pytest.raises(FrameError, match="more than max_items_per_frame datapoints"):
        run(codec_impl, amplified, max_items_per_frame=24)


STRUCTURE_ERRORS = {
    "data after STOP": P.EMPTY_LIST + P.STOP + P.NONE,
    "stack not exactly one value at STOP": P.EMPTY_LIST + P.NONE + P.STOP,
    "stack not exactly one value at STOP ": P.EMPTY_LIST + P.MARK + P.STOP,
    "stack not exactly one value at STOP  ": P.STOP,
    "pickle protocol over 5": P.proto(6) + P.EMPTY_LIST + P.STOP,
    "truncated frame": P.EMPTY_LIST,
    "truncated frame ": b"",
    "truncated frame  ": P.frame_op(100) + P.EMPTY_LIST + P.STOP,
    "truncated frame   ": P.binunicode("abc")[:-1],
    "APPEND to a non-list": P.EMPTY_TUPLE + P.NONE + P.APPEND + P.STOP,
    "stack underflow": P.TUPLE2 + P.STOP,
    "stack underflow ": P.NONE + P.MARK + P.TUPLE1 + P.STOP,
    "stack underflow  ": P.POP + P.STOP,
    "MARK missing": P.LIST + P.STOP,
    "MARK missing ": P.EMPTY_LIST + P.APPENDS + P.STOP,
    "bad STRING argument": P.string(b"x\\") + P.STOP,
    "bad STRING argument ": b"S'abc\"\n" + P.STOP,
    "bad STRING argument  ": b"S'\\xZZ'\n" + P.STOP,
    "bad UNICODE argument": b"V\\u12\n" + P.STOP,
    "bad BINUNICODE argument": b"X\x01\x00\x00\x00\xff" + P.STOP,
    "bad SHORT_BINUNICODE argument": b"\x8c\x01\xff" + P.STOP,
    "bad INT argument": b"I0x10\n" + P.STOP,
    "bad INT argument ": b"I 5\n" + P.STOP,
    "bad INT argument  ": b"I010\n" + P.STOP,  # octal to C pickle, decimal to Python 2
    "bad LONG argument": b"L\n" + P.STOP,
    "bad FLOAT argument": b"F1,5\n" + P.STOP,
    "bad BINSTRING argument": b"T\xff\xff\xff\xff" + P.STOP,
    "top level not a list or tuple": P.NONE + P.STOP,
}


@pytest.mark.parametrize("reason", sorted(STRUCTURE_ERRORS))
def test_malformed_frames_name_the_reason(codec_impl, reason):
    frame = STRUCTURE_ERRORS[reason]
    enc = codec_impl.Encoder()
    with pytest.raises(FrameError) as info:
        enc.add_pickle(frame, now_ms=NOW)
    assert info.value.reason == reason.strip()
    assert str(info.value.offset) in str(info.value)
    assert enc.counters()["bad_frame"] == 1 and enc.take() == []
