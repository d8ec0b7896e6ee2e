"""Pure-Python codec: carbon pickle frames and plaintext lines to Blueflood JSON bodies.

This is the reference twin of the compiled ``_codec``, written to be read first: same names,
same bytes out, same errors (docs/architecture.md, "The codec contract"). It walks the pickle
opcodes itself, one small function per group of opcodes; it never calls ``pickle.loads`` or
``pickle.Unpickler``, so nothing in a frame can import or call anything.

Decisions the contract leaves open are marked ``DECISION:`` below; the compiled codec matches
them, and the parity tests (tests/test_codec_parity.py) hold both to them. Limits, defaults and
the check of the Encoder's arguments come from ``_codec_rules``, shared with the compiled codec.

Two paths decode a frame. The reference is ``_Walker`` (``_loads``): it alone defines what a
frame means, including every error and its offset, and ``safe_loads`` uses only it. Beside it,
``_carbon_frame`` reads only the shapes carbon senders write, because the twin runs wherever no
compiled wheel exists and the reference walker alone costs about twice the CPU per datapoint
(figures at ``_carbon_frame``). The fast reader returns the same value or declines, and a
declined frame is decoded from its start by the reference walker; everything after decoding
is shared. Read the reference walker first.
"""

from __future__ import annotations

import re
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from ._codec_rules import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BODY_DATAPOINTS,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_FUTURE_MS,
    DEFAULT_MAX_ITEMS_PER_FRAME,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_NAME_BYTES,
    DEFAULT_MAX_PAST_MS,
    DEFAULT_PREFIX,
    DEFAULT_ROUTE_CACHE_SIZE,
    DEFAULT_TTL,
    DROP_REASONS,
    FORBIDDEN_OPCODES,
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    MAX_LONG_BYTES,
    MAX_MEMO_DIGITS,
    MAX_REJECTS,
    MAX_TEXT_DIGITS,
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
    SAMPLE_BYTES,
    check_encoder_args,
    check_route_cache_size,
    unescape_string,
)
from .errors import FrameError, FrameTooLarge

__all__ = ["DROP_REASONS", "Encoder", "safe_loads"]

_NAME_CACHE_SIZE = 65_536  # names remembered (escaped, or refused); cleared when full

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

_BIG_ENDIAN_DOUBLE = struct.Struct(">d")
_LITTLE_ENDIAN = {
    (2, False): struct.Struct("<H").unpack_from,
    (4, False): struct.Struct("<I").unpack_from,
    (4, True): struct.Struct("<i").unpack_from,
    (8, False): struct.Struct("<Q").unpack_from,
}


# =============================================================================================
# The pickle walker
# =============================================================================================


class _Walker:
    """The state of one frame being decoded: the position, the stack and its MARKs, the memo,
    and what the depth rule needs (docs/architecture.md, "The codec contract").

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

    def __init__(self, data: bytes, max_items: int) -> None:
        self.data = data
        self.max_items = max_items
        self.pos = 0  # next byte to read
        self.start = 0  # offset of the opcode being decoded: every error names it
        self.stack: list[object] = []
        self.marks: list[int] = []  # stack lengths at each open MARK
        self.floor = 0  # stack values below this belong to an outer MARK and cannot be taken
        self.memo: dict[int, object] = {}
        self.created = 0
        self.depth: dict[int, int] = {}  # id(container) -> depth
        self.containers: list[object] = []  # keeps every container alive, so ids stay unique
        self.sealed: set[int] = set()  # id() of lists that are inside a container

    def fail(self, reason: str) -> NoReturn:
        raise FrameError(reason, self.start)

    # --- reading arguments ----------------------------------------------------------------

    def take(self, size: int) -> bytes:
        """The next `size` bytes of the frame (a truncated frame is an error)."""
        if size > len(self.data) - self.pos:
            self.fail(R_TRUNCATED)
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def take_le(self, width: int, signed: bool = False) -> int:
        """A little-endian integer of `width` bytes (2, 4 or 8): every binary length, index
        and int."""
        if width > len(self.data) - self.pos:
            self.fail(R_TRUNCATED)
        value: int = _LITTLE_ENDIAN[width, signed](self.data, self.pos)[0]
        self.pos += width
        return value

    def take_byte(self) -> int:
        """A one-byte argument (the commonest: BINPUT's index, short lengths)."""
        if self.pos >= len(self.data):
            self.fail(R_TRUNCATED)
        self.pos += 1
        return self.data[self.pos - 1]

    def take_line(self) -> bytes:
        """A text opcode's argument: the bytes up to the next newline, which is skipped."""
        nl = self.data.find(b"\n", self.pos)
        if nl < 0:
            self.fail(R_TRUNCATED)
        out = self.data[self.pos : nl]
        self.pos = nl + 1
        return out

    # --- the stack ------------------------------------------------------------------------

    def push_new(self, value: object) -> None:
        """Pushes a value the frame created (GET and DUP push existing ones)."""
        self.stack.append(value)
        self.created += 1

    def top(self) -> object:
        if len(self.stack) <= self.floor:
            self.fail(R_UNDERFLOW)
        return self.stack[-1]

    def open_mark(self) -> None:
        if len(self.marks) >= MAX_DEPTH:
            self.fail(R_MARKS)
        self.marks.append(len(self.stack))
        self.floor = len(self.stack)

    def close_mark(self) -> int:
        """Removes the topmost MARK; returns the stack length it was set at."""
        if not self.marks:
            self.fail(R_NO_MARK)
        first = self.marks.pop()
        self.floor = self.marks[-1] if self.marks else 0
        return first

    def pop_to_mark(self) -> list[object]:
        """The values above the topmost MARK, removed with the MARK."""
        first = self.close_mark()
        items = self.stack[first:]
        del self.stack[first:]
        return items

    # --- containers -----------------------------------------------------------------------

    def nest(self, items: list[object]) -> int:
        """Depth of a container holding `items`; the lists among them become sealed."""
        d = 1
        for x in items:
            if type(x) is tuple or type(x) is list:
                if type(x) is list:
                    self.sealed.add(id(x))
                d = max(d, self.depth[id(x)] + 1)
        return d

    def push_container(self, container: list[object] | tuple[object, ...], depth: int) -> None:
        if depth > MAX_DEPTH:
            self.fail(R_DEPTH)
        self.depth[id(container)] = depth
        self.containers.append(container)
        self.push_new(container)

    def set_memo(self, idx: int) -> None:
        value = self.top()
        if idx > self.created:
            self.fail(R_MEMO_INDEX)
        self.memo[idx] = value

    def get_memo(self, idx: int) -> None:
        if idx not in self.memo:
            self.fail(R_MEMO_UNSET)
        self.stack.append(self.memo[idx])


# --- one function per group of opcodes, each given the walker and the opcode ----------------


def _op_framing(w: _Walker, op: int) -> None:
    """PROTO (argument 0..5) and FRAME (a length that must fit; otherwise only a hint)."""
    if op == 0x80:  # PROTO
        if w.take_byte() > 5:
            w.fail(R_PROTO)
    else:  # FRAME
        size = w.take_le(8)
        if size > len(w.data) - w.pos:
            w.fail(R_TRUNCATED)


def _op_constant(w: _Walker, op: int) -> None:
    """NONE, NEWTRUE, NEWFALSE."""
    w.push_new(None if op == 0x4E else op == 0x88)


def _op_binary_int(w: _Walker, op: int) -> None:
    """BININT (signed 4 bytes), BININT1 (1), BININT2 (2); LONG1 and LONG4 (sized, signed)."""
    if op == 0x4A:
        w.push_new(w.take_le(4, signed=True))
    elif op == 0x4B:
        w.push_new(w.take_byte())
    elif op == 0x4D:
        w.push_new(w.take_le(2))
    else:
        size = w.take_byte() if op == 0x8A else w.take_le(4, signed=True)
        if size < 0:
            w.fail("bad LONG4 argument")
        if size > MAX_LONG_BYTES:
            w.fail(R_LONG_BYTES)
        w.push_new(int.from_bytes(w.take(size), "little", signed=True))


def _op_binary_float(w: _Walker, op: int) -> None:
    """BINFLOAT: the one big-endian argument."""
    if w.pos + 8 > len(w.data):
        w.fail(R_TRUNCATED)
    w.push_new(_BIG_ENDIAN_DOUBLE.unpack_from(w.data, w.pos)[0])
    w.pos += 8


# Length-prefixed strings: opcode -> (width of the length, its name for "bad ... argument").
_SIZED_STRINGS: dict[int, tuple[int, str]] = {
    0x55: (1, "SHORT_BINSTRING"),
    0x43: (1, "SHORT_BINBYTES"),
    0x8C: (1, "SHORT_BINUNICODE"),
    0x54: (4, "BINSTRING"),
    0x42: (4, "BINBYTES"),
    0x58: (4, "BINUNICODE"),
    0x8E: (8, "BINBYTES8"),
    0x8D: (8, "BINUNICODE8"),
}
_UNICODE_OPS = frozenset((0x58, 0x8C, 0x8D))


def _op_sized_string(w: _Walker, op: int) -> None:
    """The BIN*STRING, BIN*BYTES (to bytes) and BIN*UNICODE (UTF-8 text) opcodes."""
    width, name = _SIZED_STRINGS[op]
    if width == 1:
        size = w.take_byte()
    else:
        size = w.take_le(width, signed=op == 0x54)  # only BINSTRING's length is signed
    if size < 0:
        w.fail(f"bad {name} argument")
    raw = w.take(size)
    if op in _UNICODE_OPS:
        try:
            w.push_new(raw.decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            w.fail(f"bad {name} argument")
    else:
        w.push_new(raw)


def _op_text_string(w: _Walker, op: int) -> None:
    """STRING (quoted, Python escapes, to bytes) and UNICODE (raw-unicode-escape)."""
    arg = w.take_line()
    if op == 0x53:
        if len(arg) < 2 or arg[0] != arg[-1] or arg[0] not in b"'\"":
            w.fail("bad STRING argument")
        try:
            w.push_new(unescape_string(arg[1:-1]))
        except ValueError:
            w.fail("bad STRING argument")
    else:
        try:
            w.push_new(arg.decode("raw_unicode_escape"))
        except UnicodeDecodeError:
            w.fail("bad UNICODE argument")


def _op_text_number(w: _Walker, op: int) -> None:
    """INT ("00"/"01" are False/True), LONG (trailing "L" optional) and FLOAT."""
    arg = w.take_line()
    if op == 0x49:
        w.push_new(arg == b"01" if arg in (b"00", b"01") else _text_int(w, arg, "INT"))
    elif op == 0x4C:
        w.push_new(_text_int(w, arg.removesuffix(b"L"), "LONG"))
    else:
        value = _parse_text_float(arg)
        if value is None:
            w.fail("bad FLOAT argument")
        w.push_new(value)


def _text_int(w: _Walker, arg: bytes, opname: str) -> int:
    # DECISION: text INT/LONG arguments are plain decimal, `[+-]?(0|[1-9][0-9]*)`: no spaces,
    # underscores, 0x prefixes, nor leading zeros (C pickle reads "010" as octal 8, Python 2
    # as 10: no sender writes them, so refuse rather than guess).
    m = _TEXT_INT_RE.fullmatch(arg)
    if m is None:
        w.fail(f"bad {opname} argument")
    if m.end(1) - m.start(1) > MAX_TEXT_DIGITS:
        w.fail(R_DIGITS)
    return int(arg)


def _parse_text_float(arg: bytes) -> float | None:
    """FLOAT's argument: the contract's float grammar, or nan/inf/infinity (any case, signed)."""
    if _STR_FLOAT_RE.fullmatch(arg) or _STR_NAN_RE.fullmatch(arg) or _STR_INF_RE.fullmatch(arg):
        return float(arg)
    return None


def _op_stack(w: _Walker, op: int) -> None:
    """MARK, POP, POP_MARK, DUP."""
    if op == 0x28:  # MARK
        w.open_mark()
    elif op == 0x30:  # POP
        if len(w.stack) > w.floor:
            w.stack.pop()
        elif w.marks:
            w.close_mark()
        else:
            w.fail(R_UNDERFLOW)
    elif op == 0x31:  # POP_MARK
        w.pop_to_mark()
    else:  # DUP
        w.stack.append(w.top())


def _op_memo(w: _Walker, op: int) -> None:
    """BINPUT, LONG_BINPUT, PUT, MEMOIZE store the top of the stack; BINGET, LONG_BINGET, GET
    push a stored value."""
    if op == 0x71:
        w.set_memo(w.take_byte())
    elif op == 0x72:
        w.set_memo(w.take_le(4))
    elif op == 0x70:
        w.set_memo(_memo_text_index(w, "PUT"))
    elif op == 0x94:  # MEMOIZE: the next index
        w.set_memo(len(w.memo))
    elif op == 0x68:
        w.get_memo(w.take_byte())
    elif op == 0x6A:
        w.get_memo(w.take_le(4))
    else:  # GET
        w.get_memo(_memo_text_index(w, "GET"))


def _memo_text_index(w: _Walker, opname: str) -> int:
    # DECISION: PUT/GET arguments are ASCII digits only; more than 18 digits is over any
    # possible number of values created (for GET it cannot name a set slot either).
    arg = w.take_line()
    if _DIGITS_RE.fullmatch(arg) is None:
        w.fail(f"bad {opname} argument")
    if len(arg) > MAX_MEMO_DIGITS:
        w.fail(R_MEMO_INDEX if opname == "PUT" else R_MEMO_UNSET)
    return int(arg)


def _op_tuple(w: _Walker, op: int) -> None:
    """EMPTY_TUPLE, TUPLE1, TUPLE2, TUPLE3 (from the stack's top), TUPLE (from the MARK)."""
    if op == 0x74:  # TUPLE
        items = w.pop_to_mark()
        depth = w.nest(items)
        if depth > MAX_DEPTH:
            w.fail(R_DEPTH)
        if len(items) > w.max_items:
            w.fail(R_ITEMS)
    else:
        k = op - 0x84 if op != 0x29 else 0
        if len(w.stack) - w.floor < k:
            w.fail(R_UNDERFLOW)
        items = w.stack[len(w.stack) - k :]
        del w.stack[len(w.stack) - k :]
        depth = w.nest(items)
    w.push_container(tuple(items), depth)


def _op_list(w: _Walker, op: int) -> None:
    """EMPTY_LIST, LIST (from the MARK), and APPEND, APPENDS into the list below."""
    if op == 0x5D:  # EMPTY_LIST
        w.push_container([], 1)
        return
    if op == 0x6C:  # LIST
        items = w.pop_to_mark()
        depth = w.nest(items)
        if depth > MAX_DEPTH:
            w.fail(R_DEPTH)
        if len(items) > w.max_items:
            w.fail(R_ITEMS)
        w.push_container(items, depth)
        return
    if op == 0x65:  # APPENDS
        items = w.pop_to_mark()
    else:  # APPEND
        if len(w.stack) - w.floor < 1:
            w.fail(R_UNDERFLOW)
        items = [w.stack.pop()]
    target = w.top()
    if type(target) is not list:
        w.fail(R_NOT_LIST)
    depth = w.nest(items)  # seals the items first: a list appended to itself is refused
    if id(target) in w.sealed:
        w.fail(R_SEALED)
    if depth > MAX_DEPTH:
        w.fail(R_DEPTH)
    if len(target) + len(items) > w.max_items:
        w.fail(R_ITEMS)
    target.extend(items)
    w.depth[id(target)] = max(w.depth[id(target)], depth)


_OPCODES: dict[int, Callable[[_Walker, int], None]] = {
    **dict.fromkeys((0x80, 0x95), _op_framing),
    **dict.fromkeys((0x4E, 0x88, 0x89), _op_constant),
    **dict.fromkeys((0x4A, 0x4B, 0x4D, 0x8A, 0x8B), _op_binary_int),
    0x47: _op_binary_float,
    **dict.fromkeys(_SIZED_STRINGS, _op_sized_string),
    **dict.fromkeys(b"SV", _op_text_string),
    **dict.fromkeys(b"ILF", _op_text_number),
    **dict.fromkeys((0x28, 0x30, 0x31, 0x32), _op_stack),
    **dict.fromkeys((0x71, 0x72, 0x70, 0x94, 0x68, 0x6A, 0x67), _op_memo),
    **dict.fromkeys((0x29, 0x85, 0x86, 0x87, 0x74), _op_tuple),
    **dict.fromkeys((0x5D, 0x6C, 0x61, 0x65), _op_list),
}
_STOP = 0x2E


def _loads(data: bytes, max_frame_bytes: int, max_items: int) -> tuple[object, int]:
    """Decode one frame; returns (value, offset of STOP). Raises FrameError."""
    if len(data) > max_frame_bytes:
        raise FrameTooLarge(R_TOO_LARGE, 0)
    w = _Walker(data, max_items)
    handler_of = _OPCODES.get
    while True:
        if w.pos >= len(data):
            raise FrameError(R_TRUNCATED, w.pos)
        w.start = w.pos
        op = data[w.pos]
        w.pos += 1
        if op == _STOP:
            if w.pos != len(data):
                w.fail(R_AFTER_STOP)
            if w.marks or len(w.stack) != 1:
                w.fail(R_STOP_STACK)
            return w.stack[0], w.start
        handler = handler_of(op)
        if handler is None:
            if op in FORBIDDEN_OPCODES:
                w.fail(f"forbidden opcode {FORBIDDEN_OPCODES[op]}")
            w.fail(f"unknown opcode 0x{op:02x}")
        handler(w, op)


# =============================================================================================
# The fast path: carbon-shaped frames only, apart from the reference walker
# =============================================================================================
#
# Why it exists: the reference walker above pays a table look-up, a call and the general stack
# rules per opcode. On carbon-relay's frames (bench/codec.py --cpu --cases twin: frames of 500,
# CPU time, interleaved runs) the twin cost 5.9-6.1 us per datapoint with the reference walker
# alone and 2.9 us with this reader in front; the earlier speed-tuned twin took 3.4-3.7 us.
# The twin is what runs without a compiled wheel, so that measurement decides. This reader
# knows only the shapes real senders write (docs/carbon-protocol.md, section 1.4):
#
#     PROTO? FRAME? EMPTY_LIST put? (MARK item* APPENDS | item APPEND)* STOP    (carbon-relay)
#     PROTO? FRAME? MARK item* LIST put? STOP                                   (carbon-relay-ng)
#     item   := name (number number TUPLE2 put?) TUPLE2 put?
#     name   := (BINUNICODE | SHORT_BINUNICODE | SHORT_BINSTRING | BINSTRING) put?
#               | BINGET | LONG_BINGET (of a name)
#     number := BINFLOAT | BININT | BININT1 | BININT2 | LONG1
#     put    := BINPUT | LONG_BINPUT | MEMOIZE, numbering the memo 0, 1, 2, ... in order
#
# (Protocol 4 and 5 pickles larger than 64 KiB carry FRAME opcodes between values: those go to
# the reference walker; carbon-relay writes protocol 2.)
#
# It returns the very value the reference walker builds for such a frame, and None for
# anything else: another opcode or order, a memo index out of sequence, text that is not
# UTF-8, a length past the end, more items than allowed, a frame over the byte limit. The
# caller then decodes the whole frame again with the reference walker, which alone decides
# errors and their offsets; everything after decoding (names, numbers, drops, bodies) is the
# same code for both. tests/test_codec_twin_paths.py holds the two paths to one output.

_BINUNICODE_LEN = _LITTLE_ENDIAN[4, False]
_BININT = _LITTLE_ENDIAN[4, True]
_BININT2 = _LITTLE_ENDIAN[2, False]
_LONG_BINPUT = _LITTLE_ENDIAN[4, False]
_FRAME_LEN = _LITTLE_ENDIAN[8, False]
_BINFLOAT = _BIG_ENDIAN_DOUBLE.unpack_from
_UNKNOWN = object()  # a memo slot that holds something other than a name


class _NotCarbon(Exception):
    """Raised inside the fast reader at the first byte it does not expect."""


def _carbon_frame(data: bytes, max_frame_bytes: int, max_items: int) -> tuple[object, int] | None:
    """(value, offset of STOP) of a carbon-shaped frame, as `_loads` returns it; else None."""
    end = len(data) - 1  # where STOP must be
    if end > max_frame_bytes - 1 or end < 1 or data[end] != _STOP:
        return None
    try:
        return _carbon_walk(data, end, max_items)
    except (_NotCarbon, IndexError, struct.error, UnicodeDecodeError):
        return None  # another shape, a read past the end, text that is not UTF-8: not ours


def _carbon_walk(data: bytes, end: int, max_items: int) -> tuple[object, int] | None:
    memo: list[object] = []  # slot i holds the name put there, or _UNKNOWN

    def put(pos: int, value: object) -> int:
        """Reads a put at pos if there is one (in sequence); returns the position after it."""
        op = data[pos]
        if op == 0x71:  # BINPUT
            idx, pos = data[pos + 1], pos + 2
        elif op == 0x72:  # LONG_BINPUT
            idx, pos = _LONG_BINPUT(data, pos + 1)[0], pos + 5
        elif op == 0x94:  # MEMOIZE
            idx, pos = len(memo), pos + 1
        else:
            return pos
        if idx != len(memo):
            raise _NotCarbon  # out of sequence: the reference walker decides
        memo.append(value)
        return pos

    def number(pos: int) -> tuple[float | int, int]:
        op = data[pos]
        if op == 0x47:  # BINFLOAT
            if pos + 9 > end:
                raise _NotCarbon
            return _BINFLOAT(data, pos + 1)[0], pos + 9
        if op == 0x4A:  # BININT
            return _BININT(data, pos + 1)[0], pos + 5
        if op == 0x4B:  # BININT1
            return data[pos + 1], pos + 2
        if op == 0x4D:  # BININT2
            return _BININT2(data, pos + 1)[0], pos + 3
        if op == 0x8A:  # LONG1
            size = data[pos + 1]
            if size > MAX_LONG_BYTES or pos + 2 + size > end:
                raise _NotCarbon
            return int.from_bytes(data[pos + 2 : pos + 2 + size], "little", signed=True), (
                pos + 2 + size
            )
        raise _NotCarbon

    def item(pos: int) -> tuple[tuple[object, object], int]:
        op = data[pos]
        name: object
        if op == 0x58 or op == 0x54:  # BINUNICODE, BINSTRING
            size, pos = _BINUNICODE_LEN(data, pos + 1)[0], pos + 5
        elif op == 0x8C or op == 0x55:  # SHORT_BINUNICODE, SHORT_BINSTRING
            size, pos = data[pos + 1], pos + 2
        elif op == 0x68 or op == 0x6A:  # BINGET, LONG_BINGET
            if op == 0x68:
                idx, pos = data[pos + 1], pos + 2
            else:
                idx, pos = _LONG_BINPUT(data, pos + 1)[0], pos + 5
            name = memo[idx]
            if name is _UNKNOWN:
                raise _NotCarbon
            size = -1
        else:
            raise _NotCarbon
        if size >= 0:  # a string here, not a GET
            if pos + size > end or (op == 0x54 and size >= 2**31):  # BINSTRING's is signed
                raise _NotCarbon
            raw = data[pos : pos + size]
            name = raw.decode("utf-8", "surrogatepass") if op == 0x58 or op == 0x8C else raw
            pos = put(pos + size, name)
        ts, pos = number(pos)
        value, pos = number(pos)
        if data[pos] != 0x86:  # TUPLE2
            raise _NotCarbon
        pair = (ts, value)
        pos = put(pos + 1, _UNKNOWN)
        if data[pos] != 0x86:
            raise _NotCarbon
        return (name, pair), put(pos + 1, _UNKNOWN)

    pos = 0
    if data[pos] == 0x80:  # PROTO
        if data[pos + 1] > 5:
            return None
        pos += 2
    if data[pos] == 0x95:  # FRAME: its length must fit, as the reference walker checks
        if _FRAME_LEN(data, pos + 1)[0] > len(data) - pos - 9:
            return None
        pos += 9
    top: list[object] = []
    if data[pos] == 0x28:  # MARK item* LIST
        pos += 1
        while data[pos] != 0x6C:
            it, pos = item(pos)
            top.append(it)
        pos = put(pos + 1, _UNKNOWN)
    elif data[pos] == 0x5D:  # EMPTY_LIST, then APPENDS / APPEND
        pos = put(pos + 1, _UNKNOWN)
        while pos < end:
            if data[pos] == 0x28:  # MARK
                pos += 1
                while data[pos] != 0x65:  # APPENDS
                    it, pos = item(pos)
                    top.append(it)
                pos += 1
            else:
                it, pos = item(pos)
                top.append(it)
                if data[pos] != 0x61:  # APPEND
                    return None
                pos += 1
    else:
        return None
    if pos != end or len(top) > max_items:
        return None
    return top, end


def safe_loads(
    frame: bytes | bytearray | memoryview,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_items_per_frame: int = DEFAULT_MAX_ITEMS_PER_FRAME,
) -> object:
    """Decode one pickle frame (no length prefix) into lists, tuples, str, bytes, int, float,
    bool and None, without executing anything. Raises FrameError / FrameTooLarge."""
    return _loads(bytes(frame), max_frame_bytes, max_items_per_frame)[0]


# =============================================================================================
# Numbers and names
# =============================================================================================

# A number that is not usable is one of these strings, named as the value's drop reason (a
# timestamp that is not usable is always "bad_timestamp").
_NAN = "nan"
_INF = "inf"
_BAD = "bad_value"


def _number_from_text(s: bytes) -> int | float | str:
    """A string value/timestamp to int or float, or _NAN / _INF / _BAD.

    DECISION: an integer string outside int64 goes through float like an int does
    (correctly rounded); if that overflows it is _BAD (bad_value / bad_timestamp), while a
    float string that overflows ("1e999") is _INF, as the contract's two rules say.
    """
    s = s.strip(_ASCII_WS)
    if _STR_INT_RE.fullmatch(s):
        if len(s.lstrip(b"+-").lstrip(b"0")) <= 19:  # int() is slow on long ones, refuses 4,301+
            v = int(s)
            if INT64_MIN <= v <= INT64_MAX:
                return v
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
    if isinstance(v, float):
        if v - v == 0.0:
            return v
        return _NAN if v != v else _INF
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        if INT64_MIN <= v <= INT64_MAX:
            return v
        try:
            return float(v)
        except OverflowError:
            return _BAD
    if isinstance(v, bytes):
        return _number_from_text(v)
    if isinstance(v, str):
        return _number_from_text(v.encode("utf-8", "surrogatepass"))
    return _BAD


def _name_bytes(name: object) -> bytes:
    """A name as raw bytes for a reject sample."""
    if isinstance(name, bytes):
        return name[:SAMPLE_BYTES]
    if isinstance(name, str):
        return name.encode("utf-8", "surrogatepass")[:SAMPLE_BYTES]
    return b""


def _name_utf8(name: object) -> bytes | None:
    """A metric name's UTF-8 bytes, or None when it is not valid text."""
    if isinstance(name, str):
        try:
            return name.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            return None
    if isinstance(name, bytes):
        try:
            name.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return name
    return None


def _escape(raw: bytes) -> bytes:
    """JSON string escaping of a UTF-8 name: `"`, `\\` and bytes below 0x20 only."""
    if _JSON_ESC_RE.search(raw) is None:
        return raw
    return _JSON_ESC_RE.sub(lambda m: _JSON_ESC[m.group()[0]], raw)


# =============================================================================================
# The encoder
# =============================================================================================


class RouteDecision(Protocol):
    """What a router returns for a name (``routing.Decision`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def ttl(self) -> int | None: ...
    @property
    def drop(self) -> str | None: ...


class _DatapointFn(Protocol):
    def __call__(
        self, name: object, ts: object, value: object, now_ms: int, objs: list[Any]
    ) -> str | None: ...


class _Tenant:
    """One tenant's open body, and what was decided for it (counters_by_tenant)."""

    __slots__ = ("body", "count", "counts", "name", "routed")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.body = bytearray(b"[")
        self.count = 0
        self.routed = False  # has the router named this tenant (shown in counters_by_tenant)
        self.counts = dict.fromkeys(_TENANT_COUNTERS, 0)


_TENANT_COUNTERS = ("accepted", "rule", "series_budget", "bad_tags", "empty_name")


class _Route:
    """What the encoder remembers of one routing decision: where and how a name is written,
    or why its datapoints are dropped."""

    __slots__ = ("drop", "tail", "tenant", "tmpl_float", "tmpl_int")

    def __init__(
        self, tenant: _Tenant, drop: str | None, head: bytes = b"", tail: bytes = b""
    ) -> None:
        self.tenant = tenant
        self.drop = drop
        self.tmpl_int = head + b"%d%b"
        self.tmpl_float = head + b"%r%b"
        self.tail = tail

    def size(self) -> int:
        """Bytes of this object and of the bytes it holds alone (for route_cache_bytes)."""
        parts = (self, self.tmpl_int, self.tmpl_float, self.tail)
        return sum(map(sys.getsizeof, parts))


def _head(ttl: int) -> bytes:
    """The start of a datapoint's JSON object, up to its value."""
    return b'{"collectionTime":%d,"ttlInSeconds":' + b"%d" % ttl + b',"metricValue":'


class Encoder:
    """Turns pickle frames and plaintext lines into Blueflood JSON bodies (see the contract).

    Without a router every datapoint goes to one open body (the default tenant's). With one,
    each name is routed once (docs/architecture.md, "Routing in the codec") and its datapoints
    go to their tenant's open body; ``_datapoint`` and ``_append`` are bound to the routed or
    the plain variant by `set_router`, so the plain path pays nothing for routing.
    """

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl: int = DEFAULT_TTL,
        overwrite_collection_time: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_body_datapoints: int = DEFAULT_MAX_BODY_DATAPOINTS,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_items_per_frame: int = DEFAULT_MAX_ITEMS_PER_FRAME,
        max_past_ms: int = DEFAULT_MAX_PAST_MS,
        max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
        max_name_bytes: int = DEFAULT_MAX_NAME_BYTES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        router: Callable[[str], RouteDecision] | None = None,
        route_cache_size: int = DEFAULT_ROUTE_CACHE_SIZE,
    ) -> None:
        check_encoder_args(
            ttl=ttl,
            max_body_bytes=max_body_bytes,
            max_body_datapoints=max_body_datapoints,
            max_frame_bytes=max_frame_bytes,
            max_items_per_frame=max_items_per_frame,
            max_name_bytes=max_name_bytes,
            max_line_bytes=max_line_bytes,
        )
        check_route_cache_size(route_cache_size)
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
        self.route_cache_size = route_cache_size
        # The prefix and its dot count towards max_name_bytes.
        self._prefix_raw = (prefix + ".").encode("utf-8") if prefix else b""
        self._prefix_esc = _escape(self._prefix_raw)
        head = _head(ttl)
        self._tmpl_int = head + b"%d%b"
        self._tmpl_float = head + b"%r%b"
        # name -> its JSON tail, or None when it is invalid: a name repeats in every flush
        self._names: dict[object, bytes | None] = {}
        # Bodies: the full ones of every tenant in the order they closed, one open per tenant.
        self._full: list[tuple[str | None, bytes, int]] = []
        self._full_bytes = 0
        self._full_datapoints = 0
        self._default = _Tenant(None)
        self._tenants: dict[str | None, _Tenant] = {None: self._default}
        self._counters = dict.fromkeys(("accepted", "frames", "lines", *DROP_REASONS), 0)
        self._rejects: deque[tuple[str, bytes]] = deque(maxlen=MAX_REJECTS)
        # name (as received) -> its routing decision; bounded, emptied by set_router
        self._routes: dict[object, _Route] = {}
        self._route_bytes = 0  # the entries' objects, estimated as they are stored
        self._router: Callable[[str], RouteDecision] | None = None
        self._datapoint: _DatapointFn = self._datapoint_plain
        self._append: Callable[[list[Any]], None] = self._append_plain
        self.set_router(router)

    # --- public state ---------------------------------------------------------------------

    @property
    def route_cache_names(self) -> int:
        return len(self._routes)

    @property
    def route_cache_bytes(self) -> int:
        return sys.getsizeof(self._routes) + self._route_bytes

    @property
    def ready_bodies(self) -> int:
        return len(self._full)

    @property
    def pending_bytes(self) -> int:
        open_bytes = sum(len(t.body) + 1 for t in self._tenants.values() if t.count)
        return self._full_bytes + open_bytes

    @property
    def held_bytes(self) -> int:
        """Memory held for data: every full body not taken yet, and the allocation (not only
        the bytes written) of every open body that holds a datapoint.

        DECISION: an open body without a datapoint holds 0 (here a two-byte bytearray, in
        the compiled codec nothing until its first write), so an encoder whose bodies were
        all taken holds 0."""
        open_bytes = sum(t.body.__alloc__() for t in self._tenants.values() if t.count)
        return self._full_bytes + open_bytes

    @property
    def pending_datapoints(self) -> int:
        return self._full_datapoints + sum(t.count for t in self._tenants.values())

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def counters_by_tenant(self) -> dict[str | None, dict[str, int]]:
        """Per tenant the router named (None: the default), accepted and the routing drops.

        DECISION: only datapoints that went through the router count here; without a router
        this is empty (everything is in `counters`). A final name refused after routing counts
        invalid_name in `counters` only.
        """
        return {t.name: dict(t.counts) for t in self._tenants.values() if t.routed}

    def take_rejects(self) -> list[tuple[str, bytes]]:
        """Recent (reason, sample) pairs, oldest first, at most 64; clears them.

        DECISION: the sample is at most 256 bytes: the raw metric name for a dropped pickle
        datapoint (b"" when the name is not a string, and for bad_item), the line without its
        line end for plaintext, and ``str(FrameError)`` for bad_frame. Routing drops too.
        """
        out = list(self._rejects)
        self._rejects.clear()
        return out

    def take(self, partial: bool = True) -> list[bytes]:
        return [body for _, body, _ in self.take_routed(partial)]

    def take_counted(self, partial: bool = True) -> list[tuple[bytes, int]]:
        """Like `take`, with the number of datapoints of each body (the sender needs it)."""
        return [(body, count) for _, body, count in self.take_routed(partial)]

    def take_routed(self, partial: bool = True) -> list[tuple[str | None, bytes, int]]:
        """Every full body, and with ``partial`` every open one, as (tenant, body, count).

        DECISION: full bodies in the order they closed, then the open ones in the order their
        tenants first appeared (the default tenant first).
        """
        out = self._full
        self._full = []
        self._full_bytes = 0
        self._full_datapoints = 0
        if partial:
            for tenant in self._tenants.values():
                if tenant.count:
                    tenant.body.append(0x5D)
                    out.append((tenant.name, bytes(tenant.body), tenant.count))
                    tenant.body = bytearray(b"[")
                    tenant.count = 0
        return out

    # --- routing ----------------------------------------------------------------------------

    def set_router(self, router: Callable[[str], RouteDecision] | None) -> None:
        """Route with this callable from now on (None: no routing); forgets the decisions
        made by the previous one. Bodies already open or full stay as they are."""
        self._router = router
        self._routes = {}
        self._route_bytes = 0
        if router is None:
            self._datapoint = self._datapoint_plain
            self._append = self._append_plain
        else:
            self._datapoint = self._datapoint_routed
            self._append = self._append_routed

    def _route(self, name: str | bytes) -> _Route:
        """Ask the router about a name (valid as received) and remember the answer.

        DECISION: the final-name check (valid UTF-8, not empty, no whitespace, prefix + name
        within max_name_bytes) gives invalid_name, remembered like any decision; a
        series_budget drop is never remembered (the router must see the next datapoint).
        """
        assert self._router is not None
        text = name if isinstance(name, str) else name.decode("utf-8")
        decision = self._router(text)
        tenant = self._tenants.get(decision.tenant)
        if tenant is None:
            tenant = self._tenants[decision.tenant] = _Tenant(decision.tenant)
        tenant.routed = True
        if decision.drop is not None:
            route = _Route(tenant, decision.drop)
            if decision.drop == "series_budget":
                return route
        else:
            raw = _name_utf8(decision.name)
            if (
                not raw
                or _NAME_WS_RE.search(raw) is not None
                or len(self._prefix_raw) + len(raw) > self.max_name_bytes
            ):
                route = _Route(tenant, "invalid_name")
            else:
                ttl = self.ttl if decision.ttl is None else decision.ttl
                tail = b',"metricName":"' + self._prefix_esc + _escape(raw) + b'"}'
                route = _Route(tenant, None, _head(ttl), tail)
        if len(self._routes) >= self.route_cache_size:
            self._routes.clear()
            self._route_bytes = 0
        self._routes[name] = route
        self._route_bytes += sys.getsizeof(name) + route.size()
        return route

    # --- input ------------------------------------------------------------------------------

    def add_pickle(self, frame: bytes | bytearray | memoryview, now_ms: int | None = None) -> int:
        self._counters["frames"] += 1
        try:
            data = bytes(frame)
            decoded = _carbon_frame(data, self.max_frame_bytes, self.max_items_per_frame)
            if decoded is None:  # not carbon-shaped: the reference walker decides everything
                decoded = _loads(data, self.max_frame_bytes, self.max_items_per_frame)
            top, stop = decoded
            if not isinstance(top, (list, tuple)):
                raise FrameError(R_TOP, stop)
            _check_datapoint_count(top, self.max_items_per_frame, stop)
        except FrameError as exc:
            self._counters["bad_frame"] += 1
            self._rejects.append(("bad_frame", str(exc).encode()[:SAMPLE_BYTES]))
            raise
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        objs: list[Any] = []
        for item in top:
            self._add_item(item, now_ms, objs)
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
        buf = bytes(data)
        consumed = len(buf) if final else buf.rfind(b"\n") + 1
        if consumed == 0:
            return 0
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        lines = buf[:consumed].split(b"\n")
        if not final or lines[-1] == b"":
            lines.pop()  # the empty piece after the last newline
        objs: list[Any] = []
        for line in lines:
            line = line.removesuffix(b"\r")
            fields = line.split()
            if not fields:
                continue  # blank lines are skipped silently
            self._counters["lines"] += 1
            if len(fields) != 3 or len(line) > self.max_line_bytes:
                reason: str | None = "bad_line"
            else:
                name, value, ts = fields
                reason = self._datapoint(name, ts, value, now_ms, objs)
            if reason is not None:
                self._drop(reason, line)
        self._append(objs)
        return consumed

    # --- one item, one datapoint ------------------------------------------------------------

    def _drop(self, reason: str, sample: bytes) -> None:
        self._counters[reason] += 1
        self._rejects.append((reason, sample[:SAMPLE_BYTES]))

    def _add_item(self, item: object, now_ms: int, objs: list[Any]) -> None:
        """One `(name, (ts, value), ...)` item of a frame.

        DECISION: an item is a list/tuple of at least 2 elements whose elements after the
        first are all lists/tuples of exactly 2; otherwise the whole item is one bad_item. A
        name that is not str/bytes is invalid_name (per datapoint). Each datapoint gets at most
        one drop reason, checked in this order: name, value, timestamp, window, then routing.
        """
        if not isinstance(item, (list, tuple)) or len(item) < 2:
            self._drop("bad_item", b"")
            return
        name, pairs = item[0], item[1:]
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
            self._drop("bad_item", _name_bytes(name))
            return
        for ts, value in pairs:
            reason = self._datapoint(name, ts, value, now_ms, objs)
            if reason is not None:
                self._drop(reason, _name_bytes(name))

    def _name_tail(self, name: object) -> bytes | None:
        """`,"metricName":"<escaped prefix.name>"}` for a valid name, None for an invalid one
        (remembered: a sender repeats its names)."""
        try:
            return self._names[name]
        except KeyError:
            pass
        except TypeError:  # unhashable (a list as a name)
            return None
        raw = _name_utf8(name)
        tail = None
        if raw and _NAME_WS_RE.search(raw) is None:
            if len(self._prefix_raw) + len(raw) <= self.max_name_bytes:
                tail = b',"metricName":"' + self._prefix_esc + _escape(raw) + b'"}'
        if isinstance(name, (str, bytes)):
            if len(self._names) >= _NAME_CACHE_SIZE:
                self._names.clear()
            self._names[name] = tail
        return tail

    def _datapoint_plain(
        self, name: object, ts: object, value: object, now_ms: int, objs: list[bytes]
    ) -> str | None:
        """Append one datapoint's JSON object to objs; or return its drop reason."""
        tail = self._name_tail(name)
        if tail is None:
            return "invalid_name"
        if value is None:
            return "none"
        v = _number(value)
        if isinstance(v, str):
            return v
        ms = now_ms if self.overwrite_collection_time else self._collection_ms(ts, now_ms)
        if isinstance(ms, str):
            return ms
        template = self._tmpl_float if isinstance(v, float) else self._tmpl_int
        objs.append(template % (ms, v, tail))
        return None

    def _datapoint_routed(
        self, name: object, ts: object, value: object, now_ms: int, objs: list[Any]
    ) -> str | None:
        """Append (tenant, JSON object) to objs; or return the drop reason.

        DECISION: with a router the name as received is checked alone (valid UTF-8, not
        empty, no whitespace, within max_name_bytes without the prefix: the prefix counts in
        the final-name check). The router is asked only for a datapoint whose value and
        timestamp are good.
        """
        try:
            route = self._routes.get(name)
        except TypeError:  # unhashable (a list as a name)
            return "invalid_name"
        if route is None:
            raw = _name_utf8(name)
            if not raw or _NAME_WS_RE.search(raw) is not None or len(raw) > self.max_name_bytes:
                return "invalid_name"
        if value is None:
            return "none"
        v = _number(value)
        if isinstance(v, str):
            return v
        ms = now_ms if self.overwrite_collection_time else self._collection_ms(ts, now_ms)
        if isinstance(ms, str):
            return ms
        if route is None:
            route = self._route(name)  # type: ignore[arg-type]  # str or bytes: checked above
        if route.drop is not None:
            counts = route.tenant.counts
            if route.drop in counts:
                counts[route.drop] += 1
            return route.drop
        template = route.tmpl_float if isinstance(v, float) else route.tmpl_int
        objs.append((route.tenant, template % (ms, v, route.tail)))
        return None

    def _collection_ms(self, ts: object, now_ms: int) -> int | str:
        """A timestamp (seconds; -1 means now) in ms, or its drop reason."""
        t = _number(ts)
        if isinstance(t, str):
            return "bad_timestamp"
        if t == -1:
            return now_ms
        if isinstance(t, float):
            tm = t * 1000.0
            if tm - tm != 0.0:  # overflowed to inf
                return "bad_timestamp"
            ms = int(tm)
        else:
            ms = t * 1000
        # DECISION: a time that does not fit int64 milliseconds is bad_timestamp (this
        # only matters when a window bound is disabled).
        if not INT64_MIN <= ms <= INT64_MAX:
            return "bad_timestamp"
        if self.max_past_ms >= 0 and ms < now_ms - self.max_past_ms:
            return "out_of_window"
        if self.max_future_ms >= 0 and ms > now_ms + self.max_future_ms:
            return "out_of_window"
        return ms

    # --- bodies -----------------------------------------------------------------------------

    def _append_plain(self, objs: list[bytes]) -> None:
        """Add encoded objects to the default tenant's open body (no router)."""
        self._fill(self._default, objs)

    def _append_routed(self, objs: list[tuple[_Tenant, bytes]]) -> None:
        """Add (tenant, encoded object) pairs to their tenants' open bodies, in order."""
        for tenant, obj in objs:
            self._fill(tenant, (obj,))
            tenant.counts["accepted"] += 1

    def _fill(self, tenant: _Tenant, objs: list[bytes] | tuple[bytes]) -> None:
        """Add encoded objects to a tenant's open body, closing bodies by size and count.

        DECISION: a body is closed (becomes "full") as soon as it holds max_body_datapoints,
        or when the next object would take it over max_body_bytes; an object alone over
        max_body_bytes still gets a body of its own.
        """
        max_bytes = self.max_body_bytes
        max_datapoints = self.max_body_datapoints
        for obj in objs:
            if tenant.count and len(tenant.body) + len(obj) + 2 > max_bytes:
                self._close_body(tenant)  # "," + obj + "]" would not fit
            if tenant.count:
                tenant.body.append(0x2C)
            tenant.body += obj
            tenant.count += 1
            if tenant.count >= max_datapoints:
                self._close_body(tenant)
        self._counters["accepted"] += len(objs)

    def _close_body(self, tenant: _Tenant) -> None:
        tenant.body.append(0x5D)
        self._full.append((tenant.name, bytes(tenant.body), tenant.count))
        self._full_bytes += len(tenant.body)
        self._full_datapoints += tenant.count
        tenant.body = bytearray(b"[")
        tenant.count = 0


def _check_datapoint_count(top: list[object] | tuple[object, ...], limit: int, stop: int) -> None:
    """Memo references can multiply datapoints: bound them before emitting any."""
    total = 0
    for item in top:
        if isinstance(item, (list, tuple)) and len(item) >= 2:
            total += len(item) - 1
            if total > limit:
                raise FrameError(R_DATAPOINTS, stop)
