# Metric names: UTF-8 validation and the JSON escaping of names (included by _codec.pyx).

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

DEF ONES = 0x0101010101010101
DEF HIGHS = 0x8080808080808080


cdef inline bint _plain8(uint64_t x) noexcept nogil:
    """No byte of x is non-ASCII, below 0x21, '"' or '\\' (exact, SWAR)."""
    cdef uint64_t q = x ^ (0x22 * <uint64_t>ONES)
    cdef uint64_t b = x ^ (0x5C * <uint64_t>ONES)
    cdef uint64_t t = (((x - 0x21 * <uint64_t>ONES) & ~x)
                       | ((q - <uint64_t>ONES) & ~q)
                       | ((b - <uint64_t>ONES) & ~b)
                       | x)
    return (t & <uint64_t>HIGHS) == 0


cdef int _classify(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """F_* flags of a byte string (F_BAD stops the scan)."""
    cdef Py_ssize_t j = 0
    cdef uint8_t c, c1
    cdef uint64_t x
    cdef int res = 0
    while j < n:
        if j + 8 <= n:
            memcpy(&x, p + j, 8)
            if _plain8(x):
                j += 8
                continue
        c = p[j]
        if c < 0x80:
            if c == 32 or (9 <= c <= 13):
                res |= F_WS
            if c < 0x20 or c == 34 or c == 92:
                res |= F_ESC
            j += 1
        elif 0xC2 <= c <= 0xDF:
            if j + 1 >= n or (p[j + 1] & 0xC0) != 0x80:
                return res | F_BAD
            j += 2
        elif 0xE0 <= c <= 0xEF:
            if j + 2 >= n:
                return res | F_BAD
            c1 = p[j + 1]
            if (c1 & 0xC0) != 0x80 or (p[j + 2] & 0xC0) != 0x80 or (c == 0xE0 and c1 < 0xA0):
                return res | F_BAD  # not a continuation, or overlong
            if c == 0xED and c1 >= 0xA0:
                res |= F_SURR
            j += 3
        elif 0xF0 <= c <= 0xF4:
            if j + 3 >= n:
                return res | F_BAD
            c1 = p[j + 1]
            if ((c1 & 0xC0) != 0x80 or (p[j + 2] & 0xC0) != 0x80
                    or (p[j + 3] & 0xC0) != 0x80
                    or (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 >= 0x90)):
                return res | F_BAD
            j += 4
        else:
            return res | F_BAD
    return res


cdef inline int _name_state(const uint8_t *p, Py_ssize_t n, Py_ssize_t limit) noexcept:
    """NAME_OK, NAME_ESCAPE or NAME_BAD for a metric name of n bytes (limit: max bytes)."""
    cdef int f
    if n == 0 or n > limit:
        return NAME_BAD
    f = _classify(p, n)
    if f & (F_BAD | F_SURR | F_WS):
        return NAME_BAD
    return NAME_ESCAPE if f & F_ESC else NAME_OK


cdef char *_HEX = b"0123456789abcdef"


cdef inline char *_escape(char *w, const uint8_t *p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t j
    cdef uint8_t c
    for j in range(n):
        c = p[j]
        if c == 34 or c == 92:
            w[0] = 92
            w[1] = c
            w += 2
        elif c < 0x20:
            memcpy(w, b"\\u00", 4)
            w[4] = _HEX[c >> 4]
            w[5] = _HEX[c & 15]
            w += 6
        else:
            w[0] = c
            w += 1
    return w


cdef bytes _escape_bytes(bytes raw):
    cdef Py_ssize_t n = len(raw)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 6 * n + 1)
    cdef char *w = _escape(PyBytes_AS_STRING(out), <const uint8_t *>PyBytes_AS_STRING(raw), n)
    return out[:w - PyBytes_AS_STRING(out)]
