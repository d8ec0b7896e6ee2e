# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False, cdivision=True
"""Compiled codec: carbon pickle frames and plaintext lines straight to Blueflood JSON bodies.

A frame is walked opcode by opcode into C structs (a value pool, tuple children, list cons
cells, a memo of pool indices), validated completely, and only then emitted as JSON into a C
body buffer. No Python object is made per datapoint; rare paths (big integers, text escapes,
string numbers) use Python objects. The pure-Python twin `_codec_py` is the reference.

One extension built from parts: `_codec.pxd` declares the C helpers, constants and structs;
the `_codec_*.pxi` files below hold, in order, byte helpers, number parsing and float
formatting, metric names, the pickle opcode walker, plaintext line splitting and the JSON
body encoder.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING

from fastforward import _codec_rules
from fastforward._codec_rules import (
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_ITEMS_PER_FRAME, DROP_REASONS, R_TOO_LARGE,
)
from fastforward.errors import FrameTooLarge

include "_codec_bytes.pxi"
include "_codec_numbers.pxi"
include "_codec_names.pxi"
include "_codec_pickle.pxi"
include "_codec_lines.pxi"
include "_codec_routes.pxi"
include "_codec_encoder.pxi"

ff_floatrepr_init()


# -- the C constants must say what _codec_rules says ----------------------------------------

cdef dict _C_DROP_CODES = {
    "none": C_NONE, "nan": C_NAN, "inf": C_INF, "bad_value": C_BAD_VALUE,
    "bad_timestamp": C_BAD_TS, "out_of_window": C_WINDOW, "invalid_name": C_NAME,
    "bad_item": C_ITEM, "bad_line": C_LINE, "bad_frame": C_FRAME,
    "rule": C_RULE, "series_budget": C_BUDGET, "bad_tags": C_BAD_TAGS,
    "empty_name": C_EMPTY_NAME,
}
cdef dict _C_LIMITS = {
    "MAX_DEPTH": MAX_DEPTH, "MAX_TEXT_DIGITS": MAX_TEXT_DIGITS,
    "MAX_LONG_BYTES": MAX_LONG_BYTES, "MAX_MEMO_DIGITS": MAX_MEMO_DIGITS,
    "MAX_REJECTS": MAX_REJECTS, "SAMPLE_BYTES": SAMPLE_BYTES,
}


def _check_against_rules():
    """Refuses to load (ImportError) when a C drop code or limit differs from _codec_rules:
    counters would be filed under the wrong names, or the twins would disagree."""
    codes = {name: j for j, name in enumerate(_codec_rules.DROP_REASONS)}
    if codes != _C_DROP_CODES or len(codes) != C_COUNT:
        raise ImportError(
            "fastforward._codec: its drop-reason codes "
            f"{sorted(_C_DROP_CODES, key=_C_DROP_CODES.get)} do not follow "
            f"_codec_rules.DROP_REASONS {list(_codec_rules.DROP_REASONS)}; "
            "update the C_* enum in _codec.pxd and rebuild"
        )
    for name, value in _C_LIMITS.items():
        if getattr(_codec_rules, name) != value:
            raise ImportError(
                f"fastforward._codec: {name} is {value} in _codec.pxd but "
                f"{getattr(_codec_rules, name)} in _codec_rules; make them equal and rebuild"
            )


_check_against_rules()


def safe_loads(frame, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES,
               max_items_per_frame=DEFAULT_MAX_ITEMS_PER_FRAME):
    """Decode a carbon pickle frame into Python objects without running pickle."""
    cdef Py_buffer view
    cdef _Decoder dec = _Decoder()
    cdef Py_ssize_t root
    dec.max_items = min(max_items_per_frame, 1 << 62)
    PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
    try:
        if view.len > max_frame_bytes:
            raise FrameTooLarge(R_TOO_LARGE, 0)
        root = dec.decode(<const uint8_t *>view.buf, view.len)
        return dec.to_object(root, {})
    finally:
        PyBuffer_Release(&view)


# -- test hooks: the float formatter and parser alone (tests/test_floatrepr.py) -------------

def _test_float_repr(double x):
    """repr(x) as the codec writes it."""
    cdef char out[40]
    return out[:_format_double(x, out)].decode("ascii")


def _test_float_repr_fast(double x):
    """The C fast path alone: repr(x), or None where it defers to CPython."""
    cdef char out[40]
    cdef int n = ff_double_repr(x, out)
    return None if n < 0 else out[:n].decode("ascii")


def _test_text_to_double(bytes text):
    """float(text) as the codec reads decimal strings (text must match the contract's float
    grammar)."""
    return _to_double(<const uint8_t *>PyBytes_AS_STRING(text), len(text))
