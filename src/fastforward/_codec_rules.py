"""What both codec implementations share: drop reasons, frame error reasons, refused opcodes,
the decoder of STRING's escapes (a rare path, plain Python in both), the wrong-protocol
hints the daemon and `fastforward decode` give, the decoder's fixed limits, and the `Encoder`
defaults with the check of its arguments.

`_codec.pyx` and `_codec_py.py` import these, so the two name the same drops, raise the same
messages and refuse the same arguments by construction (the parity tests check the behaviour;
this keeps the words and numbers in one place). The compiled codec also holds the limits and
the drop reasons as C constants; it compares them with these at import and refuses to load if
they differ.
"""

from __future__ import annotations

from typing import Final

# Routing (--rules, issue 13): dropped by a rule, over a series budget, tags carbon would
# refuse, or a name left empty by a rewrite. The router returns these (routing/router.py), the
# daemon labels its per-tenant series with them (routes.py): all from this one tuple.
ROUTING_DROP_REASONS: tuple[str, ...] = ("rule", "series_budget", "bad_tags", "empty_name")

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
    *ROUTING_DROP_REASONS,
)

# Fixed limits of the decoder and of the reject log (docs/architecture.md, "The codec contract").
MAX_DEPTH: Final = 64  # containers nested, and MARKs open at once
MAX_TEXT_DIGITS: Final = 100  # digits of a text INT / LONG argument
MAX_LONG_BYTES: Final = 64  # payload of LONG1 / LONG4
MAX_MEMO_DIGITS: Final = 18  # digits of a PUT / GET argument (more is over any index)
MAX_REJECTS: Final = 64  # (reason, sample) pairs kept for take_rejects()
SAMPLE_BYTES: Final = 256  # a reject sample is cut to this many bytes
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# Encoder and safe_loads defaults; both implementations take their signatures' defaults here.
DEFAULT_PREFIX: Final = ""
DEFAULT_TTL: Final = 86400
DEFAULT_MAX_BODY_BYTES: Final = 1_000_000
DEFAULT_MAX_BODY_DATAPOINTS: Final = 5_000
DEFAULT_MAX_FRAME_BYTES: Final = 1_048_576
DEFAULT_MAX_ITEMS_PER_FRAME: Final = 100_000
DEFAULT_MAX_PAST_MS: Final = 259_200_000  # 3 days; negative: no bound
DEFAULT_MAX_FUTURE_MS: Final = 600_000  # 10 minutes; negative: no bound
DEFAULT_MAX_NAME_BYTES: Final = 4096
DEFAULT_MAX_LINE_BYTES: Final = 65_536
DEFAULT_ROUTE_CACHE_SIZE: Final = 262_144  # names whose routing decision the encoder keeps


def check_encoder_args(
    *,
    ttl: object,
    max_body_bytes: object,
    max_body_datapoints: object,
    max_frame_bytes: object,
    max_items_per_frame: object,
    max_name_bytes: object,
    max_line_bytes: object,
) -> None:
    """Raises ValueError naming the first `Encoder` argument that is not usable."""
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


def check_route_cache_size(route_cache_size: object) -> None:
    """Raises ValueError unless the encoder's routing cache bound is a positive integer."""
    if type(route_cache_size) is not int or route_cache_size < 1:
        raise ValueError(f"route_cache_size must be a positive integer, not {route_cache_size!r}")


# Hints for a sender talking the wrong protocol to a port. A pickle frame's 4-byte length made
# of printable ASCII is the start of a plaintext line ("a.b.c 1 17..." reads as ~1.6 GB), and a
# plaintext "line" starting with a NUL byte or holding a PROTO opcode (0x80, then 1-5) is a
# pickle frame split at its newline bytes.
LOOKS_LIKE_PLAINTEXT = "looks like plaintext"
LOOKS_LIKE_PICKLE = "looks like pickle"


def looks_like_plaintext(length_prefix: bytes) -> bool:
    """True when a pickle frame's length prefix is printable ASCII text."""
    head = bytes(length_prefix[:4])
    return len(head) == 4 and all(0x20 <= b < 0x7F or b == 0x09 for b in head)


def looks_like_pickle(line: bytes) -> bool:
    """True when a bad plaintext line is most likely part of a pickle frame."""
    head = bytes(line[:64])
    if head[:1] == b"\x00":
        return True
    at = head.find(b"\x80")
    return 0 <= at < len(head) - 1 and 1 <= head[at + 1] <= 5


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


# STRING (protocol 0) escapes. DECISION: Python's string-escape rules, written out here so
# they do not depend on codecs.escape_decode: \\ \' \" \a \b \f \n \r \t \v, \xHH (exactly two
# hex digits, else the argument is bad), \ooo (1-3 octal digits, value & 0xFF); any other
# backslash pair is kept as is; a lone trailing backslash makes the argument bad.
_SIMPLE_ESC = {
    0x5C: 0x5C,
    0x27: 0x27,
    0x22: 0x22,
    0x61: 0x07,
    0x62: 0x08,
    0x66: 0x0C,
    0x6E: 0x0A,
    0x72: 0x0D,
    0x74: 0x09,
    0x76: 0x0B,
}
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")


def unescape_string(s: bytes) -> bytes:
    """The STRING opcode's Python-escaped argument (quotes removed) to its bytes."""
    if b"\\" not in s:
        return s
    out = bytearray()
    i = 0
    n = len(s)
    while i < n:
        j = s.find(b"\\", i)
        if j < 0:
            out += s[i:]
            break
        out += s[i:j]
        if j + 1 >= n:
            raise ValueError("trailing backslash")
        c = s[j + 1]
        i = j + 2
        if c in _SIMPLE_ESC:
            out.append(_SIMPLE_ESC[c])
        elif c == 0x78:  # \xHH
            h = s[i : i + 2]
            if len(h) != 2 or h[0] not in _HEXDIGITS or h[1] not in _HEXDIGITS:
                raise ValueError("bad \\x escape")
            out.append(int(h, 16))
            i += 2
        elif 0x30 <= c <= 0x37:  # \o, \oo, \ooo
            v = c - 0x30
            k = 0
            while k < 2 and i < n and 0x30 <= s[i] <= 0x37:
                v = v * 8 + s[i] - 0x30
                i += 1
                k += 1
            out.append(v & 0xFF)
        else:
            out.append(0x5C)
            out.append(c)
    return bytes(out)
