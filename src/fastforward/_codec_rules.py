"""What both codec implementations share: drop reasons, frame error reasons, refused opcodes.

`_codec.pyx` and `_codec_py.py` import these, so the two name the same drops and raise the
same messages by construction (the parity tests check the behaviour; this keeps the words in
one place). Numeric bounds live in each implementation, where the compiled one needs them as
C constants, and are documented in docs/architecture.md.
"""

from __future__ import annotations

DROP_REASONS: tuple[str, ...] = (
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
)

# Every FrameError reason is one of these exact strings, or f"forbidden opcode {NAME}",
# f"unknown opcode 0x{op:02x}", f"bad {NAME} argument". The offset is the position of the
# opcode being decoded when the error was found (``len(frame)`` when the frame ends between
# opcodes, 0 for FrameTooLarge, the STOP opcode for errors found after decoding).
R_TOO_LARGE = "frame longer than max_frame_bytes"
R_TRUNCATED = "truncated frame"
R_AFTER_STOP = "data after STOP"
R_STOP_STACK = "stack not exactly one value at STOP"
R_PROTO = "pickle protocol over 5"
R_MEMO_INDEX = "memo index over values created"
R_MEMO_UNSET = "GET of unset memo slot"
R_DIGITS = "text integer longer than 100 digits"
R_LONG_BYTES = "binary long longer than 64 bytes"
R_DEPTH = "nesting deeper than 64"
R_MARKS = "MARK depth over 64"
R_ITEMS = "more than max_items_per_frame items in a list"
R_DATAPOINTS = "more than max_items_per_frame datapoints"
R_UNDERFLOW = "stack underflow"
R_NO_MARK = "MARK missing"
R_NOT_LIST = "APPEND to a non-list"
R_SEALED = "APPEND to a list already inside a container"
R_TOP = "top level not a list or tuple"

# Opcodes that import, call, build objects or make dicts, sets and buffers: never executed.
FORBIDDEN_OPCODES: dict[int, str] = {
    0x63: "GLOBAL",
    0x93: "STACK_GLOBAL",
    0x52: "REDUCE",
    0x62: "BUILD",
    0x69: "INST",
    0x6F: "OBJ",
    0x81: "NEWOBJ",
    0x92: "NEWOBJ_EX",
    0x50: "PERSID",
    0x51: "BINPERSID",
    0x82: "EXT1",
    0x83: "EXT2",
    0x84: "EXT4",
    0x7D: "EMPTY_DICT",
    0x64: "DICT",
    0x73: "SETITEM",
    0x75: "SETITEMS",
    0x8F: "EMPTY_SET",
    0x90: "ADDITEMS",
    0x91: "FROZENSET",
    0x96: "BYTEARRAY8",
    0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
}
