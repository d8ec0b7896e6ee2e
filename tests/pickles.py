"""Hand-built pickle frames: one helper per opcode, and the frames real carbon senders write.

Each sender function follows docs/carbon-protocol.md section 1.4; none of them uses the stdlib
pickler, so the tests see exactly the byte shapes those senders put on the wire.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

# --- opcodes with their arguments -------------------------------------------------------------

MARK = b"("
STOP = b"."
EMPTY_LIST = b"]"
LIST = b"l"
APPEND = b"a"
APPENDS = b"e"
EMPTY_TUPLE = b")"
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
TUPLE3 = b"\x87"
NONE = b"N"
NEWTRUE = b"\x88"
NEWFALSE = b"\x89"
MEMOIZE = b"\x94"
POP = b"0"
POP_MARK = b"1"
DUP = b"2"


def proto(v: int) -> bytes:
    return b"\x80" + bytes([v])


def frame_op(size: int) -> bytes:
    return b"\x95" + struct.pack("<Q", size)


def string(raw: bytes, quote: bytes = b"'") -> bytes:
    """STRING: the argument is written as given between quotes (escape it yourself)."""
    return b"S" + quote + raw + quote + b"\n"


def binstring(raw: bytes) -> bytes:
    return b"T" + struct.pack("<i", len(raw)) + raw


def short_binstring(raw: bytes) -> bytes:
    return b"U" + bytes([len(raw)]) + raw


def py2_str(raw: bytes) -> bytes:
    """What cPickle writes for a Python 2 str: SHORT_BINSTRING up to 255 bytes, else BINSTRING."""
    return short_binstring(raw) if len(raw) < 256 else binstring(raw)


def unicode_(text: str) -> bytes:
    """UNICODE as Python's pickler writes it: backslash and line ends as \\u escapes first."""
    for c in "\\\0\n\r\x1a":
        text = text.replace(c, f"\\u{ord(c):04x}")
    return b"V" + text.encode("raw_unicode_escape") + b"\n"


def binunicode(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def short_binunicode(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return b"\x8c" + bytes([len(raw)]) + raw


def binunicode8(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return b"\x8d" + struct.pack("<Q", len(raw)) + raw


def short_binbytes(raw: bytes) -> bytes:
    return b"C" + bytes([len(raw)]) + raw


def binbytes(raw: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(raw)) + raw


def binbytes8(raw: bytes) -> bytes:
    return b"\x8e" + struct.pack("<Q", len(raw)) + raw


def int_(v: int | bool) -> bytes:
    if v is True:
        return b"I01\n"
    if v is False:
        return b"I00\n"
    return b"I%d\n" % v


def binint(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def binint1(v: int) -> bytes:
    return b"K" + bytes([v])


def binint2(v: int) -> bytes:
    return b"M" + struct.pack("<H", v)


def long_(v: int, suffix: bool = True) -> bytes:
    return b"L%d" % v + (b"L" if suffix else b"") + b"\n"


def _long_bytes(v: int) -> bytes:
    if v == 0:
        return b""
    n = (v.bit_length() + 8) // 8
    return v.to_bytes(n, "little", signed=True)


def long1(v: int) -> bytes:
    raw = _long_bytes(v)
    return b"\x8a" + bytes([len(raw)]) + raw


def long4(v: int) -> bytes:
    raw = _long_bytes(v)
    return b"\x8b" + struct.pack("<i", len(raw)) + raw


def float_(v: float) -> bytes:
    return b"F" + repr(v).encode() + b"\n"


def binfloat(v: float) -> bytes:
    return b"G" + struct.pack(">d", v)


def put(i: int) -> bytes:
    return b"p%d\n" % i


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def long_binput(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def get(i: int) -> bytes:
    return b"g%d\n" % i


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


def long_binget(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def framed(*frames: bytes) -> bytes:
    """Frames with carbon's 4-byte big-endian length prefix, as on the wire."""
    return b"".join(struct.pack("!L", len(f)) + f for f in frames)


# --- what real senders write --------------------------------------------------------------------

Point = tuple[str, float | int, float | int]


class _Memo:
    """Python 2 cPickle / Python 3 pickle protocol 2 memo numbering: BINPUT, then LONG_BINPUT."""

    def __init__(self) -> None:
        self.n = 0

    def put(self) -> bytes:
        i = self.n
        self.n += 1
        return binput(i) if i < 256 else long_binput(i)


def _py2_number(v: float | int) -> bytes:
    if isinstance(v, float):
        return binfloat(v)
    if 0 <= v < 256:
        return binint1(v)
    if 0 <= v < 65536:
        return binint2(v)
    if -(2**31) <= v < 2**31:
        return binint(v)
    return int_(v)  # 64-bit py2 ints over 2**31 are text INT even at protocol 2


def carbon_relay_py3(points: Iterable[Point]) -> bytes:
    """carbon-relay 1.1 on Python 3: pickle.dumps(list, protocol=2), BINUNICODE names, memo."""
    memo = _Memo()
    out = [proto(2), EMPTY_LIST, memo.put(), MARK]
    for name, ts, value in points:
        out += [binunicode(name), memo.put(), binfloat(float(ts)), binfloat(float(value))]
        out += [TUPLE2, memo.put(), TUPLE2, memo.put()]
    out += [APPENDS, STOP]
    return b"".join(out)


def carbon_py2(points: Iterable[tuple[bytes, float | int, float | int]]) -> bytes:
    """carbon on Python 2 (cPickle protocol 2): SHORT_BINSTRING/BINSTRING names, a repeated name
    is a BINGET, ints over 2**31 are text INT."""
    memo = _Memo()
    seen: dict[bytes, int] = {}
    out = [proto(2), EMPTY_LIST, memo.put(), MARK]
    for name, ts, value in points:
        if name in seen:
            i = seen[name]
            out.append(binget(i) if i < 256 else long_binget(i))
        else:
            seen[name] = memo.n
            out += [py2_str(name), memo.put()]
        out += [_py2_number(ts), _py2_number(value), TUPLE2, memo.put(), TUPLE2, memo.put()]
    out += [APPENDS, STOP]
    return b"".join(out)


def og_rek(name: str, ts: int, value: float) -> bytes:
    """carbon-relay-ng pickle route: one datapoint per frame, MARK..LIST, no memo."""
    ts_op = binint(ts) if ts < 2**31 else int_(ts)
    return b"".join(
        [proto(2), MARK, py2_str(name.encode()), ts_op, binfloat(value), TUPLE2, TUPLE2, LIST, STOP]
    )


def statsd(points: Iterable[tuple[str, int, str]]) -> bytes:
    """statsd's graphite backend (and Dropwizard PickledGraphite): hand-written protocol 0,
    value as a STRING, timestamp as LONG, the name between quotes without escaping."""
    out = [MARK, LIST]
    for name, ts, value in points:
        out += [MARK, b"S'" + name.encode() + b"'\n", MARK, long_(ts), string(value.encode())]
        out += [TUPLE, TUPLE, APPEND]
    out.append(STOP)
    return b"".join(out)


dropwizard = statsd


def statsite(points: Iterable[tuple[str, str, str]]) -> bytes:
    """statsite's graphite sink on Python 2: protocol 2, name, ts and value all SHORT_BINSTRING."""
    memo = _Memo()
    out = [proto(2), EMPTY_LIST, memo.put(), MARK]
    for name, ts, value in points:
        out += [py2_str(name.encode()), memo.put(), py2_str(ts.encode()), memo.put()]
        out += [py2_str(value.encode()), memo.put(), TUPLE2, memo.put(), TUPLE2, memo.put()]
    out += [APPENDS, STOP]
    return b"".join(out)


def diamond_py2(points: Iterable[tuple[str, int, float]]) -> bytes:
    """Diamond's GraphitePickleHandler on Python 2: cPickle protocol 0, PUT/GET, INT, FLOAT."""
    out = [MARK, LIST, put(0)]
    memo = 1
    seen: dict[str, int] = {}
    for name, ts, value in points:
        out.append(MARK)
        if name in seen:
            out.append(get(seen[name]))
        else:
            seen[name] = memo
            out += [string(name.encode()), put(memo)]
            memo += 1
        out += [MARK, int_(ts), float_(value), TUPLE, put(memo), TUPLE, put(memo + 1), APPEND]
        memo += 2
    out.append(STOP)
    return b"".join(out)


def py3_protocol4(points: Iterable[Point]) -> bytes:
    """What pickle.dumps(x) writes on Python 3.8+: FRAME, SHORT_BINUNICODE, MEMOIZE."""
    body = [EMPTY_LIST, MEMOIZE, MARK]
    for name, ts, value in points:
        body += [short_binunicode(name), MEMOIZE, binint(int(ts)), binfloat(float(value))]
        body += [TUPLE2, MEMOIZE, TUPLE2, MEMOIZE]
    body += [APPENDS, STOP]
    payload = b"".join(body)
    return proto(4) + frame_op(len(payload)) + payload
