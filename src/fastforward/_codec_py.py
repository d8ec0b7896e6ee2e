"""Pure-Python codec: carbon pickle frames and plaintext lines to Blueflood JSON bodies.

This is the reference twin of the compiled ``_codec``: same names, same bytes out, same errors
(docs/architecture.md, "The codec contract"). It walks the pickle opcodes itself; it never calls
``pickle.loads`` or ``pickle.Unpickler``, so nothing in a frame can import or call anything.

Decisions the contract leaves open are marked ``DECISION:`` below; the compiled codec matches
them, and the parity tests (tests/test_codec_parity.py) hold both to them.
"""

from __future__ import annotations

import re
import struct
import time
from collections import deque

from ._codec_rules import (
    DROP_REASONS,
    FORBIDDEN_OPCODES,
    R_AFTER_STOP,
    R_DATAPOINTS,
    R_DEPTH,
    R_DIGITS,
    R_ITEMS,
    R_LONG_BYTES,
    R_MARKS,
    R_MEMO_INDEX,
    R_MEMO_UNSET,
    R_NO_MARK,
    R_NOT_LIST,
    R_PROTO,
    R_SEALED,
    R_STOP_STACK,
    R_TOO_LARGE,
    R_TOP,
    R_TRUNCATED,
    R_UNDERFLOW,
    unescape_string,
)
from .errors import FrameError, FrameTooLarge

__all__ = ["DROP_REASONS", "Encoder", "safe_loads"]

MAX_DEPTH = 64  # containers nested, and MARKs open at once
MAX_TEXT_DIGITS = 100  # digits of a text INT / LONG argument
MAX_LONG_BYTES = 64  # payload of LONG1 / LONG4
MAX_REJECTS = 64  # (reason, sample) pairs kept for take_rejects()
SAMPLE_BYTES = 256  # a reject sample is cut to this many bytes
_NAME_CACHE_SIZE = 65_536  # names remembered (escaped, or refused); cleared when full
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_u8 = struct.Struct("<B").unpack_from
_u16 = struct.Struct("<H").unpack_from
_i32 = struct.Struct("<i").unpack_from
_u32 = struct.Struct("<I").unpack_from
_u64 = struct.Struct("<Q").unpack_from
_f64 = struct.Struct(">d").unpack_from

_DIGITS_RE = re.compile(rb"[0-9]+")
_TEXT_INT_RE = re.compile(rb"[+-]?(0|[1-9][0-9]*)")
_STR_INT_RE = re.compile(rb"[+-]?[0-9]+")
_STR_FLOAT_RE = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_STR_NAN_RE = re.compile(rb"[+-]?nan", re.IGNORECASE)
_STR_INF_RE = re.compile(rb"[+-]?inf(?:inity)?", re.IGNORECASE)
_ASCII_WS = b" \t\n\r\x0b\x0c"
_NAME_WS_RE = re.compile(rb"[ \t\n\r\x0b\x0c]")
_JSON_ESC_RE = re.compile(rb'[\x00-\x1f"\\]')
_JSON_ESC = {c: b"\\u%04x" % c for c in range(0x20)}
_JSON_ESC[0x22] = b'\\"'
_JSON_ESC[0x5C] = b"\\\\"


def _text_int(arg: bytes, opname: str, offset: int) -> int:
    # DECISION: text INT/LONG arguments are plain decimal, `[+-]?(0|[1-9][0-9]*)`: no spaces,
    # underscores, 0x prefixes, nor leading zeros (C pickle reads "010" as octal 8, Python 2
    # as 10: no sender writes them, so refuse rather than guess).
    m = _TEXT_INT_RE.fullmatch(arg)
    if m is None:
        raise FrameError(f"bad {opname} argument", offset)
    if m.end(1) - m.start(1) > MAX_TEXT_DIGITS:
        raise FrameError(R_DIGITS, offset)
    return int(arg)


def _memo_text_index(arg: bytes, opname: str, offset: int) -> int:
    # DECISION: PUT/GET arguments are ASCII digits only; more than 18 digits is over any
    # possible number of values created (for GET it cannot name a set slot either).
    if _DIGITS_RE.fullmatch(arg) is None:
        raise FrameError(f"bad {opname} argument", offset)
    if len(arg) > 18:
        raise FrameError(R_MEMO_INDEX if opname == "PUT" else R_MEMO_UNSET, offset)
    return int(arg)


# Opcodes whose argument is a length then that many bytes: (width of the length, how to
# read it, the opcode's name for "bad ... argument").
_SIZED: dict[int, tuple[int, object, str]] = {
    0x55: (1, _u8, "SHORT_BINSTRING"),
    0x43: (1, _u8, "SHORT_BINBYTES"),
    0x8C: (1, _u8, "SHORT_BINUNICODE"),
    0x54: (4, _i32, "BINSTRING"),
    0x42: (4, _u32, "BINBYTES"),
    0x58: (4, _u32, "BINUNICODE"),
    0x8E: (8, _u64, "BINBYTES8"),
    0x8D: (8, _u64, "BINUNICODE8"),
}


def _sized(data: bytes, pos: int, n: int, op: int, start: int) -> tuple[int, int]:
    """(first, end) of a length-prefixed argument at ``pos``; truncated or negative: error."""
    width, unpack, name = _SIZED[op]
    if pos + width > n:
        raise FrameError(R_TRUNCATED, start)
    size = unpack(data, pos)[0]  # type: ignore[operator]
    pos += width
    if size < 0:  # only BINSTRING's length is signed
        raise FrameError(f"bad {name} argument", start)
    if size > n - pos:
        raise FrameError(R_TRUNCATED, start)
    return pos, pos + size


def _memo_index(data: bytes, pos: int, n: int, wide: bool, start: int) -> tuple[int, int]:
    """(index, next position) of a BINPUT/BINGET (1 byte) or LONG_ (4 bytes) argument."""
    width = 4 if wide else 1
    if pos + width > n:
        raise FrameError(R_TRUNCATED, start)
    return (_u32(data, pos)[0] if wide else data[pos]), pos + width


def _loads(data: bytes, max_frame_bytes: int, max_items: int) -> tuple[object, int]:
    """Decode one frame; returns (value, offset of STOP). Raises FrameError.

    DECISIONS, beyond the contract's list:
    - Strings from STRING/BINSTRING/SHORT_BINSTRING come back as ``bytes`` (like
      ``pickle.loads(..., encoding="bytes")``); BINUNICODE & co. decode UTF-8 with
      "surrogatepass" and UNICODE with "raw-unicode-escape", exactly as pickle does.
    - Values are taken only from above the topmost MARK (as pickle does). POP with nothing
      above the mark removes the mark (as pickle does); with no mark at all it is underflow.
    - "Values created" counts every value pushed except by GET/BINGET/LONG_BINGET/DUP. A
      PUT/BINPUT/LONG_BINPUT index, and MEMOIZE's index (the memo's size), may not exceed it.
    - Depth: a scalar is 0, a container 1 + its deepest element; over 64 is an error. To keep
      this exact with shared (memoised) lists, a list that has been put inside a container
      (tuple, LIST, APPEND/APPENDS; itself included) is sealed: appending to it later is
      refused (R_SEALED). Python's pickler always finishes a list before its parent, so only
      self-containing lists are refused, and the result is always a finite tree/DAG.
    - max_items_per_frame bounds every list and tuple built (not only the top level).
    - FRAME's length must fit in the bytes left; apart from that, FRAME is only a hint.
    - PROTO may appear anywhere; its argument must be 0..5.
    - At STOP: first no data may follow, then no MARK may be open and exactly one value must
      be on the stack (both R_STOP_STACK).
    """
    n = len(data)
    if n > max_frame_bytes:
        raise FrameTooLarge(R_TOO_LARGE, 0)
    stack: list = []
    push = stack.append
    marks: list[int] = []
    floor = 0  # values below this index belong to an outer MARK
    memo: dict[int, object] = {}
    created = 0
    depth: dict[int, int] = {}  # id(container) -> depth; containers are kept alive by `keep`
    keep: list = []
    keep_add = keep.append
    sealed: set[int] = set()  # id() of lists that are inside a container
    pos = 0
    while True:
        if pos >= n:
            raise FrameError(R_TRUNCATED, pos)
        start = pos
        op = data[pos]
        pos += 1
        # The most frequent opcodes of real frames come first.
        if op == 0x71 or op == 0x72:  # BINPUT q, LONG_BINPUT r
            idx, pos = _memo_index(data, pos, n, op == 0x72, start)
            if len(stack) <= floor:
                raise FrameError(R_UNDERFLOW, start)
            if idx > created:
                raise FrameError(R_MEMO_INDEX, start)
            memo[idx] = stack[-1]
        elif op == 0x47:  # BINFLOAT G
            if pos + 8 > n:
                raise FrameError(R_TRUNCATED, start)
            push(_f64(data, pos)[0])
            pos += 8
            created += 1
        elif op == 0x86:  # TUPLE2, the commonest container: unrolled
            if len(stack) - floor < 2:
                raise FrameError(R_UNDERFLOW, start)
            b = stack.pop()
            a = stack[-1]
            d = 1
            ta = type(a)
            if ta is tuple or ta is list:
                if ta is list:
                    sealed.add(id(a))
                d = depth[id(a)] + 1
            tb = type(b)
            if tb is tuple or tb is list:
                if tb is list:
                    sealed.add(id(b))
                db = depth[id(b)] + 1
                if db > d:
                    d = db
            if d > MAX_DEPTH:
                raise FrameError(R_DEPTH, start)
            t = (a, b)
            depth[id(t)] = d
            keep_add(t)
            stack[-1] = t
            created += 1
        elif 0x85 <= op <= 0x87:  # TUPLE1, TUPLE3
            k = op - 0x84
            if len(stack) - floor < k:
                raise FrameError(R_UNDERFLOW, start)
            items = stack[-k:]
            del stack[-k:]
            d = 1
            for x in items:
                tx = type(x)
                if tx is tuple or tx is list:
                    if tx is list:
                        sealed.add(id(x))
                    dx = depth[id(x)] + 1
                    if dx > d:
                        d = dx
            if d > MAX_DEPTH:
                raise FrameError(R_DEPTH, start)
            t = tuple(items)
            depth[id(t)] = d
            keep_add(t)
            push(t)
            created += 1
        elif op == 0x58 or op == 0x8C or op == 0x8D:  # BINUNICODE X, SHORT_BINUNICODE, 8
            pos, end = _sized(data, pos, n, op, start)
            try:
                push(data[pos:end].decode("utf-8", "surrogatepass"))
            except UnicodeDecodeError:
                raise FrameError(f"bad {_SIZED[op][2]} argument", start) from None
            pos = end
            created += 1
        elif op == 0x94:  # MEMOIZE
            if len(stack) <= floor:
                raise FrameError(R_UNDERFLOW, start)
            idx = len(memo)
            if idx > created:
                raise FrameError(R_MEMO_INDEX, start)
            memo[idx] = stack[-1]
        elif op == 0x68 or op == 0x6A:  # BINGET h, LONG_BINGET j
            idx, pos = _memo_index(data, pos, n, op == 0x6A, start)
            try:
                push(memo[idx])
            except KeyError:
                raise FrameError(R_MEMO_UNSET, start) from None
        elif op == 0x4A:  # BININT J
            if pos + 4 > n:
                raise FrameError(R_TRUNCATED, start)
            push(_i32(data, pos)[0])
            pos += 4
            created += 1
        elif op == 0x4B:  # BININT1 K
            if pos >= n:
                raise FrameError(R_TRUNCATED, start)
            push(data[pos])
            pos += 1
            created += 1
        elif op == 0x4D:  # BININT2 M
            if pos + 2 > n:
                raise FrameError(R_TRUNCATED, start)
            push(_u16(data, pos)[0])
            pos += 2
            created += 1
        elif op == 0x55 or op == 0x54 or op == 0x43 or op == 0x42 or op == 0x8E:
            # SHORT_BINSTRING U, BINSTRING T, SHORT_BINBYTES C, BINBYTES B, BINBYTES8
            pos, end = _sized(data, pos, n, op, start)
            push(data[pos:end])
            pos = end
            created += 1
        elif op == 0x28:  # MARK (
            if len(marks) >= MAX_DEPTH:
                raise FrameError(R_MARKS, start)
            floor = len(stack)
            marks.append(floor)
        elif op == 0x65 or op == 0x61:  # APPENDS e, APPEND a
            if op == 0x65:
                if not marks:
                    raise FrameError(R_NO_MARK, start)
                k = marks.pop()
                items = stack[k:]
                del stack[k:]
                floor = marks[-1] if marks else 0
            else:
                if len(stack) - floor < 1:
                    raise FrameError(R_UNDERFLOW, start)
                items = [stack.pop()]
            if len(stack) <= floor:
                raise FrameError(R_UNDERFLOW, start)
            target = stack[-1]
            if type(target) is not list:
                raise FrameError(R_NOT_LIST, start)
            d = 1
            for x in items:
                tx = type(x)
                if tx is tuple or tx is list:
                    if tx is list:
                        sealed.add(id(x))
                    dx = depth[id(x)] + 1
                    if dx > d:
                        d = dx
            if id(target) in sealed:
                raise FrameError(R_SEALED, start)
            if d > MAX_DEPTH:
                raise FrameError(R_DEPTH, start)
            if len(target) + len(items) > max_items:
                raise FrameError(R_ITEMS, start)
            target.extend(items)
            if d > depth[id(target)]:
                depth[id(target)] = d
        elif op == 0x5D:  # EMPTY_LIST ]
            lst: list = []
            depth[id(lst)] = 1
            keep_add(lst)
            push(lst)
            created += 1
        elif op == 0x74 or op == 0x6C:  # TUPLE t, LIST l
            if not marks:
                raise FrameError(R_NO_MARK, start)
            k = marks.pop()
            items = stack[k:]
            del stack[k:]
            floor = marks[-1] if marks else 0
            d = 1
            for x in items:
                tx = type(x)
                if tx is tuple or tx is list:
                    if tx is list:
                        sealed.add(id(x))
                    dx = depth[id(x)] + 1
                    if dx > d:
                        d = dx
            if d > MAX_DEPTH:
                raise FrameError(R_DEPTH, start)
            if len(items) > max_items:
                raise FrameError(R_ITEMS, start)
            c = tuple(items) if op == 0x74 else items
            depth[id(c)] = d
            keep_add(c)
            push(c)
            created += 1
        elif op == 0x29:  # EMPTY_TUPLE )
            empty = ()
            depth[id(empty)] = 1
            push(empty)
            created += 1
        elif op == 0x2E:  # STOP .
            if pos != n:
                raise FrameError(R_AFTER_STOP, start)
            if marks or len(stack) != 1:
                raise FrameError(R_STOP_STACK, start)
            return stack[0], start
        elif op == 0x80:  # PROTO
            if pos >= n:
                raise FrameError(R_TRUNCATED, start)
            if data[pos] > 5:
                raise FrameError(R_PROTO, start)
            pos += 1
        elif op == 0x95:  # FRAME
            if pos + 8 > n:
                raise FrameError(R_TRUNCATED, start)
            size = _u64(data, pos)[0]
            pos += 8
            if size > n - pos:
                raise FrameError(R_TRUNCATED, start)
        elif op == 0x4E:  # NONE N
            push(None)
            created += 1
        elif op == 0x88 or op == 0x89:  # NEWTRUE, NEWFALSE
            push(op == 0x88)
            created += 1
        elif op == 0x8A or op == 0x8B:  # LONG1, LONG4
            if op == 0x8A:
                if pos >= n:
                    raise FrameError(R_TRUNCATED, start)
                size = data[pos]
                pos += 1
            else:
                if pos + 4 > n:
                    raise FrameError(R_TRUNCATED, start)
                size = _i32(data, pos)[0]
                pos += 4
                if size < 0:
                    raise FrameError("bad LONG4 argument", start)
            if size > MAX_LONG_BYTES:
                raise FrameError(R_LONG_BYTES, start)
            if size > n - pos:
                raise FrameError(R_TRUNCATED, start)
            push(int.from_bytes(data[pos : pos + size], "little", signed=True))
            pos += size
            created += 1
        elif op in FORBIDDEN_OPCODES:
            raise FrameError(f"forbidden opcode {FORBIDDEN_OPCODES[op]}", start)
        elif op in _TEXT_OPS:
            # Text opcodes: the argument runs to the next newline.
            nl = data.find(b"\n", pos)
            if nl < 0:
                raise FrameError(R_TRUNCATED, start)
            arg = data[pos:nl]
            pos = nl + 1
            if op == 0x49:  # INT I
                if arg == b"00" or arg == b"01":
                    push(arg == b"01")
                else:
                    push(_text_int(arg, "INT", start))
                created += 1
            elif op == 0x4C:  # LONG L
                if arg[-1:] == b"L":
                    arg = arg[:-1]
                push(_text_int(arg, "LONG", start))
                created += 1
            elif op == 0x46:  # FLOAT F
                v = _parse_text_float(arg)
                if v is None:
                    raise FrameError("bad FLOAT argument", start)
                push(v)
                created += 1
            elif op == 0x53:  # STRING S
                if len(arg) < 2 or arg[0] != arg[-1] or arg[0] not in b"'\"":
                    raise FrameError("bad STRING argument", start)
                try:
                    push(unescape_string(arg[1:-1]))
                except ValueError:
                    raise FrameError("bad STRING argument", start) from None
                created += 1
            elif op == 0x56:  # UNICODE V
                try:
                    push(arg.decode("raw_unicode_escape"))
                except UnicodeDecodeError:
                    raise FrameError("bad UNICODE argument", start) from None
                created += 1
            elif op == 0x70:  # PUT p
                idx = _memo_text_index(arg, "PUT", start)
                if len(stack) <= floor:
                    raise FrameError(R_UNDERFLOW, start)
                if idx > created:
                    raise FrameError(R_MEMO_INDEX, start)
                memo[idx] = stack[-1]
            else:  # GET g
                idx = _memo_text_index(arg, "GET", start)
                try:
                    push(memo[idx])
                except KeyError:
                    raise FrameError(R_MEMO_UNSET, start) from None
        elif op == 0x30:  # POP 0
            if len(stack) > floor:
                stack.pop()
            elif marks:
                marks.pop()
                floor = marks[-1] if marks else 0
            else:
                raise FrameError(R_UNDERFLOW, start)
        elif op == 0x31:  # POP_MARK 1
            if not marks:
                raise FrameError(R_NO_MARK, start)
            k = marks.pop()
            del stack[k:]
            floor = marks[-1] if marks else 0
        elif op == 0x32:  # DUP 2
            if len(stack) <= floor:
                raise FrameError(R_UNDERFLOW, start)
            push(stack[-1])
        else:
            raise FrameError(f"unknown opcode 0x{op:02x}", start)


_TEXT_OPS = frozenset(b"ILFSVpg")


def _parse_text_float(arg: bytes) -> float | None:
    """FLOAT's argument: the contract's float grammar, or nan/inf/infinity (any case, signed)."""
    if _STR_FLOAT_RE.fullmatch(arg) or _STR_NAN_RE.fullmatch(arg) or _STR_INF_RE.fullmatch(arg):
        return float(arg)
    return None


def safe_loads(
    frame: bytes | bytearray | memoryview,
    max_frame_bytes: int = 1_048_576,
    max_items_per_frame: int = 100_000,
) -> object:
    """Decode one pickle frame (no length prefix) into lists, tuples, str, bytes, int, float,
    bool and None, without executing anything. Raises FrameError / FrameTooLarge."""
    data = frame if type(frame) is bytes else bytes(frame)
    return _loads(data, max_frame_bytes, max_items_per_frame)[0]


# --- numbers --------------------------------------------------------------------------------

# A number that is not usable: the drop reason is decided by the caller (value or timestamp).
_NAN = "nan"
_INF = "inf"
_BAD = "bad"
_VALUE_DROP = {_NAN: "nan", _INF: "inf", _BAD: "bad_value"}


def _number_from_text(s: bytes) -> int | float | str:
    """A string value/timestamp to int or float, or _NAN / _INF / _BAD.

    DECISION: an integer string outside int64 goes through float like an int does
    (correctly rounded); if that overflows it is _BAD (bad_value / bad_timestamp), while a
    float string that overflows ("1e999") is _INF, as the contract's two rules say.
    """
    s = s.strip(_ASCII_WS)
    if _STR_INT_RE.fullmatch(s):
        digits = s.lstrip(b"+-").lstrip(b"0")
        if len(digits) <= 19:
            v = int(digits or b"0")
            if s[:1] == b"-":
                v = -v
            if _INT64_MIN <= v <= _INT64_MAX:
                return v
            return float(v)
        f = float(s)  # correctly rounded from the decimal, same as float(int(s))
        return _BAD if f - f != 0.0 else f
    if _STR_FLOAT_RE.fullmatch(s):
        f = float(s)
        return f if f - f == 0.0 else _INF
    if _STR_NAN_RE.fullmatch(s):
        return _NAN
    if _STR_INF_RE.fullmatch(s):
        return _INF
    return _BAD


def _number(v: object) -> int | float | str:
    """Any decoded value to an int (inside int64) or a finite float, or _NAN / _INF / _BAD."""
    tv = type(v)
    if tv is float:
        if v - v == 0.0:  # type: ignore[operator]
            return v  # type: ignore[return-value]
        return _NAN if v != v else _INF
    if tv is int:
        if _INT64_MIN <= v <= _INT64_MAX:  # type: ignore[operator]
            return v  # type: ignore[return-value]
        try:
            return float(v)  # type: ignore[arg-type]
        except OverflowError:
            return _BAD
    if tv is bool:
        return 1 if v else 0
    if tv is bytes:
        return _number_from_text(v)  # type: ignore[arg-type]
    if tv is str:
        return _number_from_text(v.encode("utf-8", "surrogatepass"))  # type: ignore[attr-defined]
    return _BAD


def _name_bytes(name: object) -> bytes:
    """A name as raw bytes for a reject sample."""
    if type(name) is bytes:
        return name[:SAMPLE_BYTES]  # type: ignore[index]
    if type(name) is str:
        return name.encode("utf-8", "surrogatepass")[:SAMPLE_BYTES]  # type: ignore[union-attr]
    return b""


class Encoder:
    """Turns pickle frames and plaintext lines into Blueflood JSON bodies (see the contract)."""

    def __init__(
        self,
        *,
        prefix: str = "",
        ttl: int = 86400,
        overwrite_collection_time: bool = False,
        max_body_bytes: int = 1_000_000,
        max_body_datapoints: int = 5_000,
        max_frame_bytes: int = 1_048_576,
        max_items_per_frame: int = 100_000,
        max_past_ms: int = 259_200_000,
        max_future_ms: int = 600_000,
        max_name_bytes: int = 4096,
        max_line_bytes: int = 65_536,
    ) -> None:
        for label, value in (
            ("max_body_bytes", max_body_bytes),
            ("max_body_datapoints", max_body_datapoints),
            ("max_frame_bytes", max_frame_bytes),
            ("max_items_per_frame", max_items_per_frame),
            ("max_name_bytes", max_name_bytes),
            ("max_line_bytes", max_line_bytes),
        ):
            if type(value) is not int or value < 1:
                raise ValueError(f"{label} must be a positive integer, not {value!r}")
        if type(ttl) is not int:
            raise ValueError(f"ttl must be an integer, not {ttl!r}")
        self.prefix = prefix
        self.ttl = ttl
        self.overwrite_collection_time = bool(overwrite_collection_time)
        self.max_body_bytes = max_body_bytes
        self.max_body_datapoints = max_body_datapoints
        self.max_frame_bytes = max_frame_bytes
        self.max_items_per_frame = max_items_per_frame
        self.max_past_ms = max_past_ms
        self.max_future_ms = max_future_ms
        self.max_name_bytes = max_name_bytes
        self.max_line_bytes = max_line_bytes
        # The prefix and its dot count towards max_name_bytes.
        self._prefix_raw = (prefix + ".").encode("utf-8") if prefix else b""
        self._prefix_esc = _escape(self._prefix_raw)
        head = b'{"collectionTime":%d,"ttlInSeconds":' + str(ttl).encode() + b',"metricValue":'
        self._tmpl_int = head + b"%d%b"
        self._tmpl_float = head + b"%r%b"
        self._names: dict[object, bytes | None] = {}
        self._full: list[tuple[bytes, int]] = []
        self._full_bytes = 0
        self._full_datapoints = 0
        self._body = bytearray(b"[")
        self._body_count = 0
        self._counters = dict.fromkeys(("accepted", "frames", "lines", *DROP_REASONS), 0)
        self._rejects: deque[tuple[str, bytes]] = deque(maxlen=MAX_REJECTS)

    # --- public state ---------------------------------------------------------------------

    @property
    def ready_bodies(self) -> int:
        return len(self._full)

    @property
    def pending_bytes(self) -> int:
        open_bytes = len(self._body) + 1 if self._body_count else 0
        return self._full_bytes + open_bytes

    @property
    def pending_datapoints(self) -> int:
        return self._full_datapoints + self._body_count

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def take_rejects(self) -> list[tuple[str, bytes]]:
        """Recent (reason, sample) pairs, oldest first, at most 64; clears them.

        DECISION: the sample is at most 256 bytes: the raw metric name for a dropped pickle
        datapoint (b"" when the name is not a string, and for bad_item), the line without its
        line end for plaintext, and ``str(FrameError)`` for bad_frame.
        """
        out = list(self._rejects)
        self._rejects.clear()
        return out

    def take(self, partial: bool = True) -> list[bytes]:
        return [body for body, _ in self.take_counted(partial)]

    def take_counted(self, partial: bool = True) -> list[tuple[bytes, int]]:
        """Like `take`, with the number of datapoints of each body (the sender needs it)."""
        out = self._full
        self._full = []
        self._full_bytes = 0
        self._full_datapoints = 0
        if partial and self._body_count:
            self._body.append(0x5D)
            out.append((bytes(self._body), self._body_count))
            self._body = bytearray(b"[")
            self._body_count = 0
        return out

    # --- input ------------------------------------------------------------------------------

    def add_pickle(self, frame: bytes | bytearray | memoryview, now_ms: int | None = None) -> int:
        counters = self._counters
        counters["frames"] += 1
        data = frame if type(frame) is bytes else bytes(frame)
        try:
            top, stop = _loads(data, self.max_frame_bytes, self.max_items_per_frame)
            if type(top) is not list and type(top) is not tuple:
                raise FrameError(R_TOP, stop)
            if now_ms is None:
                now_ms = int(time.time() * 1000)
            objs, drops, rejects = self._encode_items(top, now_ms, stop)  # type: ignore[arg-type]
        except FrameError as exc:
            counters["bad_frame"] += 1
            self._rejects.append(("bad_frame", str(exc).encode()[:SAMPLE_BYTES]))
            raise
        for reason, k in drops.items():
            counters[reason] += k
        self._rejects.extend(rejects)
        self._append(objs)
        return len(objs)

    def add_lines(
        self, data: bytes | bytearray | memoryview, final: bool = False, now_ms: int | None = None
    ) -> int:
        """Consume complete lines; returns the bytes consumed (the caller keeps the rest).

        DECISION: a partial trailing line is never consumed unless ``final`` (even when it is
        already longer than max_line_bytes: the caller's framing must cap its own buffer).
        "lines" counts every non-blank line seen.
        """
        buf = data if type(data) is bytes else bytes(data)
        end = buf.rfind(b"\n") + 1
        consumed = len(buf) if final else end
        if consumed == 0:
            return 0
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        lines = buf[:consumed].split(b"\n")
        if not final or lines[-1] == b"":
            lines.pop()  # the empty piece after the last newline
        objs: list[bytes] = []
        drops: dict[str, int] = {}
        rejects: list[tuple[str, bytes]] = []
        max_line = self.max_line_bytes
        seen = 0
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            fields = line.split()
            if not fields:
                continue  # blank lines are skipped silently
            seen += 1
            if len(fields) != 3 or len(line) > max_line:
                drops["bad_line"] = drops.get("bad_line", 0) + 1
                rejects.append(("bad_line", line[:SAMPLE_BYTES]))
                continue
            r = self._datapoint(fields[0], fields[2], fields[1], now_ms, objs)
            if r is not None:
                drops[r] = drops.get(r, 0) + 1
                rejects.append((r, line[:SAMPLE_BYTES]))
        counters = self._counters
        counters["lines"] += seen
        for reason, k in drops.items():
            counters[reason] += k
        self._rejects.extend(rejects)
        self._append(objs)
        return consumed

    # --- internals --------------------------------------------------------------------------

    def _encode_items(
        self, top: list | tuple, now_ms: int, stop: int
    ) -> tuple[list[bytes], dict[str, int], list[tuple[str, bytes]]]:
        """Every datapoint of a decoded frame as JSON objects, plus drops; nothing is emitted.

        DECISION: an item is a list/tuple of at least 2 elements whose elements after the
        first are all lists/tuples of exactly 2; otherwise the whole item is one bad_item. A
        name that is not str/bytes is invalid_name (per datapoint). Each datapoint gets at most
        one drop reason, checked in this order: name, value, timestamp, window. More than
        max_items_per_frame datapoints in one frame (memo references can multiply them) makes
        the frame bad.
        """
        objs: list[bytes] = []
        drops: dict[str, int] = {}
        rejects: list[tuple[str, bytes]] = []
        max_dp = self.max_items_per_frame
        total = 0
        datapoint = self._datapoint
        names = self._names
        overwrite = self.overwrite_collection_time
        tmpl_float = self._tmpl_float
        objs_add = objs.append
        # Fast-path window as half-open float bounds that agree with the exact integer test
        # in _datapoint for every float/int timestamp (anything unsure takes the slow path).
        # With a bound disabled, +-9.2e18 keeps int(ms) inside int64.
        lo = float(now_ms - self.max_past_ms) if self.max_past_ms >= 0 else -9.2e18
        hi = float(now_ms + self.max_future_ms) if self.max_future_ms >= 0 else 9.2e18
        lo = max(lo, -9.2e18)
        hi = min(hi, 9.2e18)
        for item in top:
            ti = type(item)
            if (ti is not tuple and ti is not list) or len(item) < 2:
                drops["bad_item"] = drops.get("bad_item", 0) + 1
                rejects.append(("bad_item", b""))
                continue
            total += len(item) - 1
            if total > max_dp:
                raise FrameError(R_DATAPOINTS, stop)
            name = item[0]
            ok = True
            for pair in item[1:] if len(item) > 2 else (item[1],):
                tp = type(pair)
                if (tp is not tuple and tp is not list) or len(pair) != 2:
                    ok = False
                    break
            if not ok:
                drops["bad_item"] = drops.get("bad_item", 0) + 1
                rejects.append(("bad_item", _name_bytes(name)))
                continue
            tail = names.get(name) if type(name) is str or type(name) is bytes else None
            for pair in item[1:] if len(item) > 2 else (item[1],):
                # Fast path for the common case (known good name, finite float value, float or
                # int timestamp inside the window); everything else goes to _datapoint.
                if tail is not None and not overwrite:
                    ts, v = pair
                    if type(v) is float and v - v == 0.0:
                        tt = type(ts)
                        if tt is float and ts - ts == 0.0 and ts != -1.0:
                            tm = ts * 1000.0
                            if lo <= tm < hi:
                                objs_add(tmpl_float % (int(tm), v, tail))
                                continue
                        elif tt is int and ts != -1 and lo <= ts * 1000 < hi:
                            objs_add(tmpl_float % (ts * 1000, v, tail))
                            continue
                r = datapoint(name, pair[0], pair[1], now_ms, objs)
                if r is not None:
                    drops[r] = drops.get(r, 0) + 1
                    rejects.append((r, _name_bytes(name)))
        return objs, drops, rejects

    def _name_tail(self, name: object) -> bytes | None:
        """`,"metricName":"<escaped prefix.name>"}` for a valid name, None for an invalid one."""
        tn = type(name)
        if tn is str:
            try:
                raw = name.encode("utf-8")  # type: ignore[attr-defined]
            except UnicodeEncodeError:  # lone surrogates
                return None
        elif tn is bytes:
            raw = name  # type: ignore[assignment]
            try:
                raw.decode("utf-8")  # type: ignore[attr-defined]
            except UnicodeDecodeError:
                return None
        else:
            return None
        if not raw or _NAME_WS_RE.search(raw) is not None:
            return None
        if len(self._prefix_raw) + len(raw) > self.max_name_bytes:
            return None
        return b',"metricName":"' + self._prefix_esc + _escape(raw) + b'"}'

    def _datapoint(
        self, name: object, ts: object, value: object, now_ms: int, objs: list[bytes]
    ) -> str | None:
        """Append one datapoint's JSON object to objs; or return its drop reason."""
        names = self._names
        try:
            tail = names[name]
        except KeyError:
            tail = self._name_tail(name)
            if type(name) is str or type(name) is bytes:
                if len(names) >= _NAME_CACHE_SIZE:
                    names.clear()
                names[name] = tail
        except TypeError:  # unhashable (a list as a name)
            tail = None
        if tail is None:
            return "invalid_name"
        # value
        if type(value) is float and value - value == 0.0:
            v: int | float | str = value
        elif value is None:
            return "none"
        else:
            v = _number(value)
            if type(v) is str:
                return _VALUE_DROP[v]  # type: ignore[index]
        # timestamp, in ms
        if self.overwrite_collection_time:
            ms = now_ms
        else:
            if type(ts) is float and ts - ts == 0.0:
                t: int | float | str = ts
            else:
                t = _number(ts)
                if type(t) is str:
                    return "bad_timestamp"
            if t == -1:
                ms = now_ms
            elif type(t) is float:
                tm = t * 1000.0  # type: ignore[operator]
                if tm - tm != 0.0:  # overflowed to inf
                    return "bad_timestamp"
                ms = int(tm)
            else:
                ms = t * 1000  # type: ignore[operator,assignment]
            # DECISION: a time that does not fit int64 milliseconds is bad_timestamp (this
            # only matters when a window bound is disabled).
            if not _INT64_MIN <= ms <= _INT64_MAX:
                return "bad_timestamp"
            if self.max_past_ms >= 0 and ms < now_ms - self.max_past_ms:
                return "out_of_window"
            if self.max_future_ms >= 0 and ms > now_ms + self.max_future_ms:
                return "out_of_window"
        if type(v) is float:
            objs.append(self._tmpl_float % (ms, v, tail))
        else:
            objs.append(self._tmpl_int % (ms, v, tail))
        return None

    def _append(self, objs: list[bytes]) -> None:
        """Add encoded objects to the open body, closing bodies by size and count.

        DECISION: a body is closed (becomes "full") as soon as it holds max_body_datapoints,
        or when the next object would take it over max_body_bytes; an object alone over
        max_body_bytes still gets a body of its own.
        """
        if not objs:
            return
        body = self._body
        count = self._body_count
        k = len(objs)
        # Fast path: everything fits in the open body and does not fill it.
        if count + k < self.max_body_datapoints:
            size = sum(map(len, objs)) + k + (1 if count else 0)  # commas and "]"
            if len(body) + size <= self.max_body_bytes:
                if count:
                    body.append(0x2C)
                body += b",".join(objs)
                self._body_count = count + k
                self._counters["accepted"] += k
                return
        count = self._body_count
        max_bytes = self.max_body_bytes
        max_count = self.max_body_datapoints
        full = self._full
        accepted = 0
        for obj in objs:
            if count and len(body) + len(obj) + 2 > max_bytes:  # "," + obj + "]"
                body.append(0x5D)
                full.append((bytes(body), count))
                self._full_bytes += len(body)
                self._full_datapoints += count
                body = bytearray(b"[")
                count = 0
            if count:
                body.append(0x2C)
            body += obj
            count += 1
            accepted += 1
            if count >= max_count:
                body.append(0x5D)
                full.append((bytes(body), count))
                self._full_bytes += len(body)
                self._full_datapoints += count
                body = bytearray(b"[")
                count = 0
        self._body = body
        self._body_count = count
        self._counters["accepted"] += accepted


def _escape(raw: bytes) -> bytes:
    """JSON string escaping of a UTF-8 name: `"`, `\\` and bytes below 0x20 only."""
    if _JSON_ESC_RE.search(raw) is None:
        return raw
    return _JSON_ESC_RE.sub(lambda m: _JSON_ESC[m.group()[0]], raw)
