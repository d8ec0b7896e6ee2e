# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False, cdivision=True
"""Compiled codec: carbon pickle frames and plaintext lines straight to Blueflood JSON bodies.

A frame is walked opcode by opcode into C structs (a value pool, tuple children, list cons
cells, a memo of pool indices), validated completely, and only then emitted as JSON into a C
body buffer. No Python object is made per datapoint; rare paths (big integers, text escapes,
string numbers) use Python objects. The pure-Python twin `_codec_py` is the reference.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.math cimport isinf, isnan
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy, memmove

import math
from collections import deque

from fastforward._codec_rules import (
    DROP_REASONS, FORBIDDEN_OPCODES, R_AFTER_STOP, R_DATAPOINTS, R_DEPTH, R_DIGITS, R_ITEMS,
    R_LONG_BYTES, R_MARKS, R_MEMO_INDEX, R_MEMO_UNSET, R_NO_MARK, R_NOT_LIST, R_PROTO,
    R_SEALED, R_STOP_STACK, R_TOO_LARGE, R_TOP, R_TRUNCATED, R_UNDERFLOW, unescape_string,
)
from fastforward.errors import FrameError, FrameTooLarge

cdef extern from "_floatrepr.h":
    int ff_u64_to_dec(uint64_t v, char *out) nogil
    int ff_i64_to_dec(int64_t v, char *out) nogil
    int ff_double_repr(double v, char *out) nogil
    void ff_floatrepr_init() nogil
    int64_t ff_now_ms() nogil
    int ff_decimal_to_double(const char *p, size_t n, double *out) nogil

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *ptype) except NULL
    double PyOS_string_to_double(const char *s, char **endptr,
                                 object overflow_exception) except? -1.0
    void PyMem_Free_raw "PyMem_Free"(void *p)
    int Py_DTSF_ADD_DOT_0
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)

ff_floatrepr_init()

DEF MAX_DEPTH = 64
DEF MAX_TEXT_DIGITS = 100
DEF MAX_LONG_BYTES = 64
DEF MAX_REJECTS = 64
DEF SAMPLE_BYTES = 256
_I64_MIN = -(2 ** 63)
_I64_MAX = 2 ** 63 - 1

cdef enum:
    K_NONE = 0
    K_BOOL = 1
    K_INT = 2
    K_BIG = 3      # Python int beyond int64, kept in _Decoder.big[i]
    K_FLOAT = 4
    K_STR = 5      # UTF-8 text (unicode opcodes)
    K_BYTES = 6    # byte string (STRING, BINSTRING, ..., BINBYTES)
    K_TUPLE = 7
    K_LIST = 8

# outcome of number parsing (values and timestamps)
cdef enum:
    N_INT = 0
    N_FLOAT = 1
    N_BIG = 2
    N_NONE = 3
    N_NAN = 4
    N_INF = 5
    N_BAD = 6

# drop counters, in DROP_REASONS order
cdef enum:
    C_NONE = 0
    C_NAN = 1
    C_INF = 2
    C_BAD_VALUE = 3
    C_BAD_TS = 4
    C_WINDOW = 5
    C_NAME = 6
    C_ITEM = 7
    C_LINE = 8
    C_FRAME = 9
    C_COUNT = 10

ctypedef struct Val:
    int kind
    int aux          # string bytes live in the aux buffer, not the frame
    int depth
    int name_state   # 0 unknown, else NAME_OK / NAME_ESCAPE / NAME_BAD
    int sealed       # a list already inside a container: no more appends
    int64_t i
    double d
    Py_ssize_t off   # string offset, tuple first child, list head cons
    Py_ssize_t n     # string length or item count
    Py_ssize_t last  # list tail cons

ctypedef struct Cons:
    Py_ssize_t val
    Py_ssize_t next

cdef inline int _grow(void **p, Py_ssize_t *cap, Py_ssize_t need, size_t size) except -1:
    cdef Py_ssize_t c = cap[0]
    cdef void *q
    if need <= c:
        return 0
    if c < 64:
        c = 64
    while c < need:
        c *= 2
    q = PyMem_Realloc(p[0], <size_t>c * size)
    if q == NULL:
        raise MemoryError()
    p[0] = q
    cap[0] = c
    return 0


cdef inline bint _is_space(uint8_t c) noexcept nogil:
    return c == 32 or (9 <= c <= 13)


# -- numbers -------------------------------------------------------------------------------

cdef extern from "Python.h":
    double PyOS_string_to_double_raw "PyOS_string_to_double"(
        const char *s, char **endptr, void *overflow_exception) except? -1.0


cdef inline bint _lower_is(const uint8_t *p, Py_ssize_t n, const char *word,
                           Py_ssize_t wn) noexcept:
    cdef Py_ssize_t j
    if n != wn:
        return False
    for j in range(n):
        if (p[j] | 0x20) != <uint8_t>word[j]:
            return False
    return True


cdef double _to_double(const uint8_t *p, Py_ssize_t n) except? -1.0:
    """Correctly rounded decimal text to double (CPython's own dtoa; overflow gives inf)."""
    cdef char buf[64]
    cdef bytes text
    cdef double d
    if ff_decimal_to_double(<const char *>p, n, &d):
        return d
    if n < 63:
        memcpy(buf, p, n)
        buf[n] = 0
        return PyOS_string_to_double_raw(buf, NULL, NULL)
    text = PyBytes_FromStringAndSize(<const char *>p, n)
    return PyOS_string_to_double_raw(PyBytes_AS_STRING(text), NULL, NULL)


cdef int _parse_text(const uint8_t *p, Py_ssize_t n, int64_t *iv, double *dv,
                     bint float_arg) except -1:
    """A string value or timestamp (ASCII whitespace stripped): N_INT, N_FLOAT (finite),
    N_NAN, N_INF or N_BAD. With float_arg (the FLOAT opcode) nan/inf are N_FLOAT values."""
    cdef Py_ssize_t s = 0, e = n, j, sign_end, nd, intd, fracd, z
    cdef uint64_t acc = 0
    cdef bint neg = False
    cdef double d
    while s < e and _is_space(p[s]):
        s += 1
    while e > s and _is_space(p[e - 1]):
        e -= 1
    if s == e:
        return N_BAD
    j = s
    if p[j] == 43 or p[j] == 45:
        neg = p[j] == 45
        j += 1
    sign_end = j
    while j < e and 48 <= p[j] <= 57:
        j += 1
    intd = j - sign_end
    if j == e and intd > 0 and not float_arg:
        z = sign_end
        while z < e - 1 and p[z] == 48:  # leading zeros are not significant
            z += 1
        if e - z <= 19:
            for j in range(z, e):
                acc = acc * 10 + (p[j] - 48)
            if neg and acc <= 0x8000000000000000:
                iv[0] = <int64_t>(0 - acc)
                return N_INT
            if not neg and acc <= 0x7FFFFFFFFFFFFFFF:
                iv[0] = <int64_t>acc
                return N_INT
            d = <double>acc  # correctly rounded, like float(int)
            dv[0] = -d if neg else d
            return N_FLOAT
        d = _to_double(p + s, e - s)
        if isinf(d):
            return N_BAD  # an integer too large for a float
        dv[0] = d
        return N_FLOAT
    fracd = 0
    if j < e and p[j] == 46:  # '.'
        j += 1
        nd = j
        while j < e and 48 <= p[j] <= 57:
            j += 1
        fracd = j - nd
    if intd == 0 and fracd == 0:
        if _lower_is(p + sign_end, e - sign_end, "nan", 3):
            if float_arg:
                dv[0] = -_NAN_VALUE if neg else _NAN_VALUE
                return N_FLOAT
            return N_NAN
        if (_lower_is(p + sign_end, e - sign_end, "inf", 3)
                or _lower_is(p + sign_end, e - sign_end, "infinity", 8)):
            if float_arg:
                dv[0] = -_INF_VALUE if neg else _INF_VALUE
                return N_FLOAT
            return N_INF
        return N_BAD
    if j < e and (p[j] | 0x20) == 101:  # 'e'
        j += 1
        if j < e and (p[j] == 43 or p[j] == 45):
            j += 1
        nd = j
        while j < e and 48 <= p[j] <= 57:
            j += 1
        if j == nd:
            return N_BAD
    if j != e:
        return N_BAD
    d = _to_double(p + s, e - s)
    dv[0] = d
    if isinf(d) and not float_arg:
        return N_INF
    return N_FLOAT


cdef double _NAN_VALUE = float("nan")
cdef double _INF_VALUE = float("inf")


# -- names ---------------------------------------------------------------------------------

cdef enum:
    NAME_OK = 1
    NAME_ESCAPE = 2
    NAME_BAD = 3


cdef enum:
    F_BAD = 1    # not UTF-8, even with surrogates allowed
    F_SURR = 2   # contains an encoded surrogate (valid for "surrogatepass" only)
    F_WS = 4     # contains ASCII whitespace
    F_ESC = 8    # contains a byte JSON must escape


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


cdef class _Decoder:
    """Pickle opcode walker into C structs (one per Encoder, reused across frames)."""

    cdef Val *vals
    cdef Py_ssize_t nvals, capvals
    cdef Py_ssize_t *kids
    cdef Py_ssize_t nkids, capkids
    cdef Cons *cons
    cdef Py_ssize_t ncons, capcons
    cdef Py_ssize_t *stack
    cdef Py_ssize_t nstack, capstack
    cdef Py_ssize_t marks[MAX_DEPTH + 1]
    cdef int nmarks
    cdef Py_ssize_t *memo
    cdef Py_ssize_t capmemo, memo_hi, memo_count
    cdef char *auxbuf
    cdef Py_ssize_t naux, capaux
    cdef list big
    cdef const uint8_t *buf
    cdef Py_ssize_t max_items
    cdef Py_ssize_t stop
    cdef Py_ssize_t name_limit  # max name bytes without the prefix

    def __cinit__(self):
        self.big = []
        self.name_limit = 1 << 62

    def __dealloc__(self):
        PyMem_Free(self.vals)
        PyMem_Free(self.kids)
        PyMem_Free(self.cons)
        PyMem_Free(self.stack)
        PyMem_Free(self.memo)
        PyMem_Free(self.auxbuf)

    cdef int fail(self, str reason, Py_ssize_t off) except -1:
        raise FrameError(reason, off)

    cdef inline Py_ssize_t new_val(self, int kind) except -1:
        cdef Val *v
        if self.nvals >= self.capvals:
            _grow(<void **>&self.vals, &self.capvals, self.nvals + 1, sizeof(Val))
        v = &self.vals[self.nvals]
        v.kind = kind
        v.aux = 0
        v.depth = 0
        v.name_state = 0
        v.sealed = 0
        v.i = 0
        v.d = 0.0
        v.off = 0
        v.n = 0
        v.last = -1
        self.nvals += 1
        return self.nvals - 1

    cdef inline int push(self, Py_ssize_t idx) except -1:
        if self.nstack >= self.capstack:
            _grow(<void **>&self.stack, &self.capstack, self.nstack + 1, sizeof(Py_ssize_t))
        self.stack[self.nstack] = idx
        self.nstack += 1
        return 0

    cdef inline Py_ssize_t base(self) noexcept:
        return self.marks[self.nmarks - 1] if self.nmarks else 0

    cdef inline int seal_depth(self, Py_ssize_t first, Py_ssize_t last) noexcept:
        """Depth of a container of stack[first:last]; lists among them become sealed."""
        cdef int d = 1
        cdef Py_ssize_t j
        cdef Val *x
        for j in range(first, last):
            x = &self.vals[self.stack[j]]
            if x.kind == K_LIST:
                x.sealed = 1
            if x.depth + 1 > d:
                d = x.depth + 1
        return d

    cdef int list_extend(self, Py_ssize_t lst, Py_ssize_t first, Py_ssize_t off) except -1:
        """Appends stack[first:] to list lst and pops them (APPEND, APPENDS, LIST)."""
        cdef Py_ssize_t j, c, cnt = self.nstack - first
        cdef int d = self.seal_depth(first, self.nstack)
        cdef Val *v = &self.vals[lst]
        if v.sealed:
            self.fail(R_SEALED, off)
        if d > MAX_DEPTH:
            self.fail(R_DEPTH, off)
        if v.n + cnt > self.max_items:
            self.fail(R_ITEMS, off)
        if self.ncons + cnt > self.capcons:
            _grow(<void **>&self.cons, &self.capcons, self.ncons + cnt, sizeof(Cons))
        v = &self.vals[lst]
        for j in range(first, self.nstack):
            c = self.ncons
            self.ncons += 1
            self.cons[c].val = self.stack[j]
            self.cons[c].next = -1
            if v.last < 0:
                v.off = c
            else:
                self.cons[v.last].next = c
            v.last = c
        v.n += cnt
        if d > v.depth:
            v.depth = d
        self.nstack = first
        return 0

    cdef Py_ssize_t make_tuple(self, Py_ssize_t first, Py_ssize_t off, bint check) except -1:
        """Tuple of stack[first:]; the items are popped."""
        cdef Py_ssize_t n = self.nstack - first
        cdef Py_ssize_t t, j
        cdef int dep = self.seal_depth(first, self.nstack)
        if dep > MAX_DEPTH:
            self.fail(R_DEPTH, off)
        if check and n > self.max_items:
            self.fail(R_ITEMS, off)
        t = self.new_val(K_TUPLE)
        if self.nkids + n > self.capkids:
            _grow(<void **>&self.kids, &self.capkids, self.nkids + n, sizeof(Py_ssize_t))
        for j in range(n):
            self.kids[self.nkids + j] = self.stack[first + j]
        self.vals[t].off = self.nkids
        self.vals[t].n = n
        self.vals[t].depth = dep
        self.nkids += n
        self.nstack = first
        return t

    cdef Py_ssize_t aux_store(self, bytes data) except -1:
        cdef Py_ssize_t n = len(data)
        cdef Py_ssize_t off = self.naux
        _grow(<void **>&self.auxbuf, &self.capaux, self.naux + n + 1, 1)
        memcpy(self.auxbuf + off, PyBytes_AS_STRING(data), n)
        self.naux += n
        return off

    cdef Py_ssize_t new_big(self, object value) except -1:
        cdef Py_ssize_t v
        if -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
            v = self.new_val(K_INT)
            self.vals[v].i = value
        else:
            v = self.new_val(K_BIG)
            self.vals[v].i = len(self.big)
            self.big.append(value)
        return v

    cdef int set_memo(self, Py_ssize_t idx, Py_ssize_t off) except -1:
        cdef Py_ssize_t j
        if self.nstack <= self.base():
            self.fail(R_UNDERFLOW, off)
        if idx < 0 or idx > self.nvals:
            self.fail(R_MEMO_INDEX, off)
        if idx >= self.capmemo:
            j = self.capmemo
            _grow(<void **>&self.memo, &self.capmemo, idx + 1, sizeof(Py_ssize_t))
            while j < self.capmemo:
                self.memo[j] = -1
                j += 1
        if self.memo[idx] < 0:
            self.memo_count += 1
        self.memo[idx] = self.stack[self.nstack - 1]
        if idx >= self.memo_hi:
            self.memo_hi = idx + 1
        return 0

    cdef int get_memo(self, Py_ssize_t idx, Py_ssize_t off) except -1:
        if idx < 0 or idx >= self.capmemo or self.memo[idx] < 0:
            self.fail(R_MEMO_UNSET, off)
        self.push(self.memo[idx])
        return 0

    cdef int reset(self) except -1:
        cdef Py_ssize_t j
        for j in range(self.memo_hi):
            self.memo[j] = -1
        self.memo_hi = 0
        self.memo_count = 0
        self.nvals = 0
        self.nkids = 0
        self.ncons = 0
        self.nstack = 0
        self.nmarks = 0
        self.naux = 0
        if self.big:
            self.big = []
        return 0

    cdef Py_ssize_t text_int(self, Py_ssize_t s, Py_ssize_t e, str opname,
                             Py_ssize_t off) except -1:
        """INT / LONG argument: [+-]?(0|[1-9][0-9]*) (LONG's trailing L already cut)."""
        cdef const uint8_t *b = self.buf
        cdef Py_ssize_t p = s, q
        cdef bint neg = False
        cdef uint64_t acc = 0
        cdef Py_ssize_t nd, v
        if p < e and (b[p] == 43 or b[p] == 45):
            neg = b[p] == 45
            p += 1
        nd = e - p
        if nd <= 0:
            self.fail("bad %s argument" % opname, off)
        for q in range(p, e):
            if not (48 <= b[q] <= 57):
                self.fail("bad %s argument" % opname, off)
        if nd > 1 and b[p] == 48:  # leading zeros: octal to C pickle, decimal to Python 2
            self.fail("bad %s argument" % opname, off)
        if nd > MAX_TEXT_DIGITS:
            self.fail(R_DIGITS, off)
        if nd <= 18:
            for q in range(p, e):
                acc = acc * 10 + (b[q] - 48)
            v = self.new_val(K_INT)
            self.vals[v].i = -<int64_t>acc if neg else <int64_t>acc
            return v
        return self.new_big(int(PyBytes_FromStringAndSize(<char *>b + s, e - s)))

    cdef Py_ssize_t memo_text_index(self, Py_ssize_t s, Py_ssize_t e, bint put,
                                    Py_ssize_t off) except -2:
        """PUT / GET argument: ASCII digits only."""
        cdef Py_ssize_t q
        cdef Py_ssize_t acc = 0
        if e <= s:
            self.fail("bad PUT argument" if put else "bad GET argument", off)
        for q in range(s, e):
            if not (48 <= self.buf[q] <= 57):
                self.fail("bad PUT argument" if put else "bad GET argument", off)
        if e - s > 18:
            self.fail(R_MEMO_INDEX if put else R_MEMO_UNSET, off)
        for q in range(s, e):
            acc = acc * 10 + (self.buf[q] - 48)
        return acc

    cdef Py_ssize_t decode(self, const uint8_t *b, Py_ssize_t n) except -1:
        """Walks one frame; returns the pool index of the result (self.stop: STOP's offset)."""
        cdef Py_ssize_t pos = 0, start, ln, idx, v, j, t, first
        cdef uint8_t op
        cdef const uint8_t *nl
        cdef uint64_t u
        cdef int64_t sv
        cdef double d
        cdef Val *pv
        cdef Val *pw
        self.reset()
        self.buf = b
        while True:
            if pos >= n:
                self.fail(R_TRUNCATED, pos)
            start = pos
            op = b[pos]
            pos += 1
            if op == 0x47:  # BINFLOAT
                if pos + 8 > n:
                    self.fail(R_TRUNCATED, start)
                u = 0
                for j in range(8):
                    u = (u << 8) | b[pos + j]
                memcpy(&d, &u, 8)
                pos += 8
                v = self.new_val(K_FLOAT)
                self.vals[v].d = d
                self.push(v)
            elif op == 0x71 or op == 0x72:  # BINPUT, LONG_BINPUT
                if op == 0x71:
                    if pos + 1 > n:
                        self.fail(R_TRUNCATED, start)
                    idx = b[pos]
                    pos += 1
                else:
                    if pos + 4 > n:
                        self.fail(R_TRUNCATED, start)
                    idx = <Py_ssize_t>(b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16)
                                       | (<uint64_t>b[pos + 3] << 24))
                    pos += 4
                if idx < self.capmemo and idx <= self.nvals and self.nstack > self.base():
                    if self.memo[idx] < 0:
                        self.memo_count += 1
                    self.memo[idx] = self.stack[self.nstack - 1]
                    if idx >= self.memo_hi:
                        self.memo_hi = idx + 1
                else:
                    self.set_memo(idx, start)
            elif op == 0x94:  # MEMOIZE
                self.set_memo(self.memo_count, start)
            elif op == 0x86 and self.nstack - self.base() >= 2 \
                    and self.nkids + 2 <= self.capkids:
                # TUPLE2 of two scalars (every carbon datapoint) or of scalars and tuples
                t = self.nstack - 2
                pv = &self.vals[self.stack[t]]
                pw = &self.vals[self.stack[t + 1]]
                if pv.kind == K_LIST or pw.kind == K_LIST:
                    t = self.make_tuple(self.nstack - 2, start, False)
                else:
                    j = (pv.depth if pv.depth > pw.depth else pw.depth) + 1
                    if j > MAX_DEPTH:
                        self.fail(R_DEPTH, start)
                    self.kids[self.nkids] = self.stack[t]
                    self.kids[self.nkids + 1] = self.stack[t + 1]
                    self.nstack = t
                    t = self.new_val(K_TUPLE)
                    pv = &self.vals[t]
                    pv.off = self.nkids
                    pv.n = 2
                    pv.depth = <int>j
                    self.nkids += 2
                self.push(t)
            elif op == 0x86 or op == 0x85 or op == 0x87:  # TUPLE2, TUPLE1, TUPLE3
                ln = op - 0x84
                if self.nstack - self.base() < ln:
                    self.fail(R_UNDERFLOW, start)
                t = self.make_tuple(self.nstack - ln, start, False)
                self.push(t)
            elif op == 0x58 or op == 0x8C or op == 0x8D or op == 0x55 or op == 0x54 \
                    or op == 0x43 or op == 0x42 or op == 0x8E:
                # BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, SHORT_BINSTRING, BINSTRING,
                # SHORT_BINBYTES, BINBYTES, BINBYTES8
                if op == 0x8C or op == 0x55 or op == 0x43:
                    if pos + 1 > n:
                        self.fail(R_TRUNCATED, start)
                    u = b[pos]
                    pos += 1
                elif op == 0x8D or op == 0x8E:
                    if pos + 8 > n:
                        self.fail(R_TRUNCATED, start)
                    u = 0
                    for j in range(7, -1, -1):
                        u = (u << 8) | b[pos + j]
                    pos += 8
                else:
                    if pos + 4 > n:
                        self.fail(R_TRUNCATED, start)
                    u = (b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16)
                         | (<uint64_t>b[pos + 3] << 24))
                    pos += 4
                    if op == 0x54 and u >= 0x80000000:
                        self.fail("bad BINSTRING argument", start)
                if u > <uint64_t>(n - pos):
                    self.fail(R_TRUNCATED, start)
                if op == 0x58 or op == 0x8C or op == 0x8D:
                    j = _classify(b + pos, <Py_ssize_t>u)
                    if j & F_BAD:
                        self.fail("bad %s argument" % (
                            "BINUNICODE" if op == 0x58 else
                            "SHORT_BINUNICODE" if op == 0x8C else "BINUNICODE8"), start)
                    v = self.new_val(K_STR)
                    # the name verdict comes for free with the validation
                    if u == 0 or <Py_ssize_t>u > self.name_limit or j & (F_SURR | F_WS):
                        self.vals[v].name_state = NAME_BAD
                    else:
                        self.vals[v].name_state = NAME_ESCAPE if j & F_ESC else NAME_OK
                else:
                    v = self.new_val(K_BYTES)
                self.vals[v].off = pos
                self.vals[v].n = <Py_ssize_t>u
                pos += <Py_ssize_t>u
                self.push(v)
            elif op == 0x28:  # MARK
                if self.nmarks >= MAX_DEPTH:
                    self.fail(R_MARKS, start)
                self.marks[self.nmarks] = self.nstack
                self.nmarks += 1
            elif op == 0x65 or op == 0x61:  # APPENDS, APPEND
                if op == 0x65:
                    if self.nmarks == 0:
                        self.fail(R_NO_MARK, start)
                    first = self.marks[self.nmarks - 1]
                    self.nmarks -= 1
                else:
                    if self.nstack - self.base() < 1:
                        self.fail(R_UNDERFLOW, start)
                    first = self.nstack - 1
                if first <= self.base():
                    self.fail(R_UNDERFLOW, start)
                idx = self.stack[first - 1]
                if self.vals[idx].kind != K_LIST:
                    self.fail(R_NOT_LIST, start)
                self.list_extend(idx, first, start)
            elif op == 0x5D:  # EMPTY_LIST
                v = self.new_val(K_LIST)
                self.vals[v].depth = 1
                self.vals[v].off = -1
                self.push(v)
            elif op == 0x80:  # PROTO
                if pos + 1 > n:
                    self.fail(R_TRUNCATED, start)
                if b[pos] > 5:
                    self.fail(R_PROTO, start)
                pos += 1
            elif op == 0x95:  # FRAME
                if pos + 8 > n:
                    self.fail(R_TRUNCATED, start)
                u = 0
                for j in range(7, -1, -1):
                    u = (u << 8) | b[pos + j]
                pos += 8
                if u > <uint64_t>(n - pos):
                    self.fail(R_TRUNCATED, start)
            elif op == 0x2E:  # STOP
                if pos != n:
                    self.fail(R_AFTER_STOP, start)
                if self.nmarks != 0 or self.nstack != 1:
                    self.fail(R_STOP_STACK, start)
                self.stop = start
                return self.stack[0]
            elif op == 0x4A or op == 0x4B or op == 0x4D:  # BININT, BININT1, BININT2
                ln = 4 if op == 0x4A else (1 if op == 0x4B else 2)
                if pos + ln > n:
                    self.fail(R_TRUNCATED, start)
                if op == 0x4A:
                    u = (b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16)
                         | (<uint64_t>b[pos + 3] << 24))
                    sv = <int64_t>(<int>(<uint32_t>u))
                elif op == 0x4B:
                    sv = b[pos]
                else:
                    sv = b[pos] | (b[pos + 1] << 8)
                pos += ln
                v = self.new_val(K_INT)
                self.vals[v].i = sv
                self.push(v)
            elif op == 0x8A or op == 0x8B:  # LONG1, LONG4
                if op == 0x8A:
                    if pos + 1 > n:
                        self.fail(R_TRUNCATED, start)
                    ln = b[pos]
                    pos += 1
                else:
                    if pos + 4 > n:
                        self.fail(R_TRUNCATED, start)
                    ln = <int>(<uint32_t>(b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16)
                                          | (<uint32_t>b[pos + 3] << 24)))
                    pos += 4
                    if ln < 0:
                        self.fail("bad LONG4 argument", start)
                if ln > MAX_LONG_BYTES:
                    self.fail(R_LONG_BYTES, start)
                if pos + ln > n:
                    self.fail(R_TRUNCATED, start)
                if ln <= 8:
                    u = 0
                    for j in range(ln - 1, -1, -1):
                        u = (u << 8) | b[pos + j]
                    if 0 < ln < 8 and (b[pos + ln - 1] & 0x80):
                        u |= (~<uint64_t>0) << (8 * ln)  # sign-extend
                    v = self.new_val(K_INT)
                    self.vals[v].i = <int64_t>u
                else:
                    v = self.new_big(int.from_bytes(
                        PyBytes_FromStringAndSize(<char *>b + pos, ln), "little", signed=True))
                pos += ln
                self.push(v)
            elif op == 0x74 or op == 0x6C:  # TUPLE, LIST
                if self.nmarks == 0:
                    self.fail(R_NO_MARK, start)
                first = self.marks[self.nmarks - 1]
                self.nmarks -= 1
                if op == 0x74:
                    t = self.make_tuple(first, start, True)
                else:
                    j = self.seal_depth(first, self.nstack)
                    if j > MAX_DEPTH:
                        self.fail(R_DEPTH, start)
                    if self.nstack - first > self.max_items:
                        self.fail(R_ITEMS, start)
                    t = self.new_val(K_LIST)
                    self.vals[t].depth = 1
                    self.vals[t].off = -1
                    self.list_extend(t, first, start)
                self.push(t)
            elif op == 0x29:  # EMPTY_TUPLE
                t = self.make_tuple(self.nstack, start, False)
                self.push(t)
            elif op == 0x68 or op == 0x6A:  # BINGET, LONG_BINGET
                if op == 0x68:
                    if pos + 1 > n:
                        self.fail(R_TRUNCATED, start)
                    idx = b[pos]
                    pos += 1
                else:
                    if pos + 4 > n:
                        self.fail(R_TRUNCATED, start)
                    idx = <Py_ssize_t>(b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16)
                                       | (<uint64_t>b[pos + 3] << 24))
                    pos += 4
                self.get_memo(idx, start)
            elif op == 0x4E:  # NONE
                self.push(self.new_val(K_NONE))
            elif op == 0x88 or op == 0x89:  # NEWTRUE, NEWFALSE
                v = self.new_val(K_BOOL)
                self.vals[v].i = 1 if op == 0x88 else 0
                self.push(v)
            elif op == 0x30:  # POP
                if self.nstack > self.base():
                    self.nstack -= 1
                elif self.nmarks:
                    self.nmarks -= 1
                else:
                    self.fail(R_UNDERFLOW, start)
            elif op == 0x31:  # POP_MARK
                if self.nmarks == 0:
                    self.fail(R_NO_MARK, start)
                self.nstack = self.marks[self.nmarks - 1]
                self.nmarks -= 1
            elif op == 0x32:  # DUP
                if self.nstack <= self.base():
                    self.fail(R_UNDERFLOW, start)
                self.push(self.stack[self.nstack - 1])
            elif op == 0x49 or op == 0x4C or op == 0x46 or op == 0x70 or op == 0x67 \
                    or op == 0x53 or op == 0x56:
                # text-line opcodes: INT, LONG, FLOAT, PUT, GET, STRING, UNICODE
                nl = <const uint8_t *>memchr(b + pos, 10, n - pos)
                if nl == NULL:
                    self.fail(R_TRUNCATED, start)
                ln = nl - (b + pos)
                if op == 0x49:
                    if ln == 2 and b[pos] == 48 and (b[pos + 1] == 48 or b[pos + 1] == 49):
                        v = self.new_val(K_BOOL)
                        self.vals[v].i = b[pos + 1] - 48
                    else:
                        v = self.text_int(pos, pos + ln, "INT", start)
                    self.push(v)
                elif op == 0x4C:
                    self.push(self.text_int(pos, pos + ln - (1 if ln and b[pos + ln - 1] == 76
                                                             else 0), "LONG", start))
                elif op == 0x70:
                    idx = self.memo_text_index(pos, pos + ln, True, start)
                    self.set_memo(idx, start)
                elif op == 0x67:
                    idx = self.memo_text_index(pos, pos + ln, False, start)
                    self.get_memo(idx, start)
                elif op == 0x46:
                    self.push(self.text_float(pos, ln, start))
                else:
                    self.push(self.text_string(op, pos, ln, start))
                pos += ln + 1
            else:
                self.bad_opcode(op, start)

    cdef Py_ssize_t text_float(self, Py_ssize_t s, Py_ssize_t ln, Py_ssize_t off) except -1:
        """FLOAT argument: the contract's float grammar, or nan/inf/infinity (unstripped)."""
        cdef Py_ssize_t v
        cdef int64_t iv = 0
        cdef double x = 0.0
        cdef int k
        if ln == 0 or _is_space(self.buf[s]) or _is_space(self.buf[s + ln - 1]):
            self.fail("bad FLOAT argument", off)
        k = _parse_text(self.buf + s, ln, &iv, &x, True)
        if k == N_BAD:
            self.fail("bad FLOAT argument", off)
        v = self.new_val(K_FLOAT)
        self.vals[v].d = x
        return v

    cdef Py_ssize_t text_string(self, uint8_t op, Py_ssize_t s, Py_ssize_t ln,
                                Py_ssize_t off) except -1:
        cdef bytes raw = PyBytes_FromStringAndSize(<char *>self.buf + s, ln)
        cdef bytes data
        cdef Py_ssize_t v
        if op == 0x53:  # STRING: quoted, Python escapes
            if ln < 2 or raw[0] != raw[ln - 1] or raw[0] not in b"'\"":
                self.fail("bad STRING argument", off)
            try:
                data = unescape_string(raw[1:ln - 1])
            except ValueError:
                self.fail("bad STRING argument", off)
            v = self.new_val(K_BYTES)
        else:  # UNICODE: raw-unicode-escape
            try:
                data = raw.decode("raw-unicode-escape").encode("utf-8", "surrogatepass")
            except UnicodeError:
                self.fail("bad UNICODE argument", off)
            v = self.new_val(K_STR)
        self.vals[v].off = self.aux_store(data)
        self.vals[v].n = len(data)
        self.vals[v].aux = 1
        return v

    cdef int bad_opcode(self, uint8_t op, Py_ssize_t off) except -1:
        name = FORBIDDEN_OPCODES.get(op)
        if name is not None:
            self.fail("forbidden opcode " + name, off)
        self.fail("unknown opcode 0x%02x" % op, off)

    cdef inline const uint8_t *sptr(self, Val *v) noexcept:
        return <const uint8_t *>self.auxbuf + v.off if v.aux else self.buf + v.off

    # -- safe_loads: the decoded pool as Python objects -----------------------------------

    cdef object to_object(self, Py_ssize_t idx, dict made):
        cdef Val *v = &self.vals[idx]
        cdef Py_ssize_t j, c
        cdef const uint8_t *p
        if v.kind == K_NONE:
            return None
        if v.kind == K_BOOL:
            return v.i != 0
        if v.kind == K_INT:
            return v.i
        if v.kind == K_BIG:
            return self.big[v.i]
        if v.kind == K_FLOAT:
            return v.d
        if v.kind == K_STR or v.kind == K_BYTES:
            p = self.sptr(v)
            if v.kind == K_STR:
                return PyUnicode_DecodeUTF8(<const char *>p, v.n, "surrogatepass")
            return PyBytes_FromStringAndSize(<const char *>p, v.n)
        o = made.get(idx)
        if o is not None:
            return o
        if v.kind == K_TUPLE:
            o = tuple([self.to_object(self.kids[v.off + j], made) for j in range(v.n)])
            made[idx] = o
            return o
        o = []
        made[idx] = o
        c = v.off
        while c >= 0:
            o.append(self.to_object(self.cons[c].val, made))
            c = self.cons[c].next
        return o


def safe_loads(frame, max_frame_bytes=1_048_576, max_items_per_frame=100_000):
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


def _float_repr(double x):
    """repr(x) computed by the codec's float formatter (test hook)."""
    cdef char out[40]
    cdef int n = ff_double_repr(x, out)
    cdef char *s
    if n < 0:
        s = PyOS_double_to_string(x, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
        try:
            return (<bytes>s).decode("ascii")
        finally:
            PyMem_Free_raw(s)
    return out[:n].decode("ascii")


def _text_to_double(bytes text):
    """float(text) as the codec reads decimal strings (test hook; text must match the
    contract's float grammar)."""
    return _to_double(<const uint8_t *>PyBytes_AS_STRING(text), len(text))


def _float_repr_fast(double x):
    """The C fast path alone: repr(x), or None where it defers to CPython (test hook)."""
    cdef char out[40]
    cdef int n = ff_double_repr(x, out)
    return None if n < 0 else out[:n].decode("ascii")


# -- the encoder -----------------------------------------------------------------------------

cdef const char *_HEAD = b'{"collectionTime":'
DEF HEAD_LEN = 18
cdef const char *_NAMEKEY = b',"metricName":"'
DEF NAMEKEY_LEN = 15
DEF DP_OK = -1


cdef class Encoder:
    """Accumulates datapoints from pickle frames and plaintext lines into Blueflood bodies."""

    cdef _Decoder dec
    cdef bytes pfx          # escaped prefix plus "." (empty without a prefix)
    cdef Py_ssize_t pfx_raw  # UTF-8 length of prefix plus "."
    cdef bytes mid          # ',"ttlInSeconds":<ttl>,"metricValue":'
    cdef bytes ntail        # ',"metricName":"' + escaped prefix and "."
    # short constants padded to 64 bytes, copied with fixed-size (inlined) memcpy
    cdef char mid_pad[64]
    cdef char ntail_pad[64]
    cdef Py_ssize_t mlen, ntlen
    cdef int64_t last_ms
    cdef Py_ssize_t last_ts_off
    cdef int last_tslen
    cdef bint overwrite
    cdef Py_ssize_t max_body_bytes, max_body_dps, max_frame_bytes, max_items
    cdef object max_past_ms, max_future_ms
    cdef Py_ssize_t max_name, max_line
    cdef char *body
    cdef Py_ssize_t blen, bcap, bcount
    cdef list ready
    cdef Py_ssize_t ready_bytes, ready_dps
    cdef int64_t drops[C_COUNT]
    cdef int64_t n_accepted, n_frames, n_lines
    cdef object rejects
    # per call
    cdef int64_t now, lo, hi
    cdef bint has_lo, has_hi

    def __cinit__(self):
        self.dec = _Decoder()
        self.ready = []
        self.rejects = deque(maxlen=MAX_REJECTS)

    def __init__(self, *, prefix="", ttl=86400, overwrite_collection_time=False,
                 max_body_bytes=1_000_000, max_body_datapoints=5_000,
                 max_frame_bytes=1_048_576, max_items_per_frame=100_000,
                 max_past_ms=259_200_000, max_future_ms=600_000,
                 max_name_bytes=4096, max_line_bytes=65_536):
        cdef bytes raw
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
        if prefix:
            raw = (prefix + ".").encode("utf-8")
            self.pfx = _escape_bytes(raw)
            self.pfx_raw = len(raw)
        else:
            self.pfx = b""
            self.pfx_raw = 0
        self.mid = b',"ttlInSeconds":' + str(ttl).encode() + b',"metricValue":'
        self.ntail = b',"metricName":"' + self.pfx
        self.mlen = len(self.mid)
        self.ntlen = len(self.ntail)
        memcpy(self.mid_pad, PyBytes_AS_STRING(self.mid), min(self.mlen, 64))
        memcpy(self.ntail_pad, PyBytes_AS_STRING(self.ntail), min(self.ntlen, 64))
        self.overwrite = bool(overwrite_collection_time)
        self.max_body_bytes = min(max_body_bytes, 1 << 62)
        self.max_body_dps = min(max_body_datapoints, 1 << 62)
        self.max_frame_bytes = min(max_frame_bytes, 1 << 62)
        self.max_items = min(max_items_per_frame, 1 << 62)
        self.dec.max_items = self.max_items
        self.max_past_ms = max_past_ms
        self.max_future_ms = max_future_ms
        self.max_name = min(max_name_bytes, 1 << 62)
        self.max_line = min(max_line_bytes, 1 << 62)
        self.dec.name_limit = self.max_name - self.pfx_raw
        _grow(<void **>&self.body, &self.bcap, 4096, 1)
        self.body[0] = 91  # '['
        self.blen = 1
        self.bcount = 0

    def __dealloc__(self):
        PyMem_Free(self.body)

    # -- clock and window -------------------------------------------------------------------

    cdef int set_now(self, object now_ms) except -1:
        if now_ms is None:
            self.now = ff_now_ms()  # clock_gettime(CLOCK_REALTIME)
        else:
            self.now = now_ms
        # Bounds may be floats (compared exactly, like the twin's int/float comparison: an
        # int ms is >= L iff it is >= ceil(L)); a bound beyond int64 ms is no bound for
        # int64 times.
        self.has_lo = self.has_hi = False
        if self.max_past_ms >= 0:
            lo = self.now - self.max_past_ms
            if type(lo) is float:
                lo = math.ceil(lo) if lo > -math.inf else _I64_MIN - 1
            if lo >= _I64_MIN:
                self.has_lo = True
                self.lo = min(lo, _I64_MAX)
        if self.max_future_ms >= 0:
            hi = self.now + self.max_future_ms
            if type(hi) is float:
                hi = math.floor(hi) if hi < math.inf else _I64_MAX + 1
            if hi <= _I64_MAX:
                self.has_hi = True
                self.hi = hi
        return 0

    # -- body assembly ----------------------------------------------------------------------

    cdef int close_body(self) except -1:
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self.blen + 1)
        cdef char *w = PyBytes_AS_STRING(out)
        memcpy(w, self.body, self.blen)
        w[self.blen] = 93  # ']'
        self.ready.append((out, self.bcount))
        self.ready_bytes += self.blen + 1
        self.ready_dps += self.bcount
        self.blen = 1
        self.bcount = 0
        self.last_tslen = 0
        return 0

    cdef int emit(self, const uint8_t *name, Py_ssize_t nlen, bint esc, int64_t ms,
                  const char *val, Py_ssize_t vlen) except -1:
        """Appends one datapoint; val points to at least 32 readable bytes."""
        cdef Py_ssize_t start, dplen
        cdef int tl
        cdef char *w
        _grow(<void **>&self.body, &self.bcap,
              self.blen + 1 + HEAD_LEN + 21 + 64 + 32 + max(64, self.ntlen)
              + (6 * nlen if esc else nlen) + 4, 1)
        start = self.blen + 1 if self.bcount else self.blen
        w = self.body + start
        memcpy(w, _HEAD, HEAD_LEN)
        w += HEAD_LEN
        # datapoints of one flush mostly share a timestamp: copy its digits from the
        # previous datapoint (long written, so no store-forwarding stall) instead of
        # formatting them again
        if ms == self.last_ms and self.last_tslen:
            memcpy(w, self.body + self.last_ts_off, 24)
            w += self.last_tslen
        else:
            self.last_ts_off = w - self.body
            self.last_tslen = ff_i64_to_dec(ms, w)
            self.last_ms = ms
            w += self.last_tslen
        if self.mlen <= 64:
            memcpy(w, self.mid_pad, 64)
        else:
            memcpy(w, PyBytes_AS_STRING(self.mid), self.mlen)
        w += self.mlen
        memcpy(w, val, 32)
        w += vlen
        if self.ntlen <= 64:
            memcpy(w, self.ntail_pad, 64)
        else:
            memcpy(w, PyBytes_AS_STRING(self.ntail), self.ntlen)
        w += self.ntlen
        if esc:
            w = _escape(w, name, nlen)
        else:
            memcpy(w, name, nlen)
            w += nlen
        w[0] = 34  # '"'
        w[1] = 125  # '}'
        w += 2
        dplen = w - (self.body + start)
        if self.bcount and start + dplen + 1 > self.max_body_bytes:
            tl = self.last_tslen
            self.close_body()
            memmove(self.body + 1, self.body + start, dplen)
            start = 1
            self.last_ts_off = 1 + HEAD_LEN
            self.last_tslen = tl
        elif self.bcount:
            self.body[self.blen] = 44  # ','
        self.blen = start + dplen
        self.bcount += 1
        self.n_accepted += 1
        if self.bcount >= self.max_body_dps:
            self.close_body()
        return 0

    # -- one datapoint ----------------------------------------------------------------------

    cdef int num_of(self, Py_ssize_t idx, int64_t *iv, double *dv) except -1:
        """Classifies pool value idx as a number: N_INT, N_FLOAT (finite), N_NONE, N_NAN,
        N_INF or N_BAD."""
        cdef Val *v = &self.dec.vals[idx]
        if v.kind == K_FLOAT:
            dv[0] = v.d
            if isnan(v.d):
                return N_NAN
            if isinf(v.d):
                return N_INF
            return N_FLOAT
        if v.kind == K_INT or v.kind == K_BOOL:
            iv[0] = v.i
            return N_INT
        if v.kind == K_NONE:
            return N_NONE
        if v.kind == K_BIG:
            try:
                dv[0] = float(self.dec.big[v.i])
            except OverflowError:
                return N_BAD
            return N_FLOAT
        if v.kind == K_STR or v.kind == K_BYTES:
            return _parse_text(self.dec.sptr(v), v.n, iv, dv, False)
        return N_BAD

    cdef int datapoint(self, const uint8_t *name, Py_ssize_t nlen, int nstate,
                       int vk, int64_t vi, double vd, int tk, int64_t ti, double td) except -2:
        """Checks and emits one datapoint; returns DP_OK or the C_* drop reason."""
        cdef char vbuf[40]
        cdef Py_ssize_t vlen
        cdef int64_t ms
        cdef double x
        cdef char *s
        if nstate == NAME_BAD:
            return C_NAME
        if vk == N_INT:
            vlen = ff_i64_to_dec(vi, vbuf)
        elif vk == N_FLOAT:
            vlen = ff_double_repr(vd, vbuf)
            if vlen < 0:
                s = PyOS_double_to_string(vd, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
                vlen = len(<bytes>s)
                memcpy(vbuf, s, vlen)
                PyMem_Free_raw(s)
        else:
            return (C_NONE if vk == N_NONE else C_NAN if vk == N_NAN
                    else C_INF if vk == N_INF else C_BAD_VALUE)
        if self.overwrite:
            ms = self.now
        elif tk == N_INT:
            if ti == -1:
                ms = self.now
            elif -9223372036854775 <= ti <= 9223372036854775:
                ms = ti * 1000
            else:
                return C_BAD_TS  # beyond int64 milliseconds
        elif tk == N_FLOAT:
            if td == -1.0:
                ms = self.now
            else:
                x = td * 1000.0
                if not (-9223372036854775808.0 <= x < 9223372036854775808.0):
                    return C_BAD_TS  # inf, or beyond int64 milliseconds
                ms = <int64_t>x  # truncation toward zero, as int()
        else:
            return C_BAD_TS
        if not self.overwrite and ((self.has_lo and ms < self.lo)
                                   or (self.has_hi and ms > self.hi)):
            return C_WINDOW
        self.emit(name, nlen, nstate == NAME_ESCAPE, ms, vbuf, vlen)
        return DP_OK

    cdef int name_state(self, Py_ssize_t idx) noexcept:
        cdef Val *v = &self.dec.vals[idx]
        if v.name_state == 0:
            if v.kind != K_STR and v.kind != K_BYTES:
                v.name_state = NAME_BAD
            else:
                v.name_state = _name_state(self.dec.sptr(v), v.n, self.max_name - self.pfx_raw)
        return v.name_state

    cdef inline Py_ssize_t child(self, Val *v, Py_ssize_t j) noexcept:
        cdef Py_ssize_t c
        if v.kind == K_TUPLE:
            return self.dec.kids[v.off + j]
        c = v.off
        while j:
            c = self.dec.cons[c].next
            j -= 1
        return self.dec.cons[c].val

    cdef bytes name_sample(self, Py_ssize_t nidx):
        cdef Val *nv = &self.dec.vals[nidx]
        if nv.kind != K_STR and nv.kind != K_BYTES:
            return b""
        return PyBytes_FromStringAndSize(<const char *>self.dec.sptr(nv),
                                         min(nv.n, SAMPLE_BYTES))

    cdef int item(self, Py_ssize_t idx) except -1:
        cdef _Decoder dec = self.dec
        cdef Val *it = &dec.vals[idx]
        cdef Val *nv
        cdef Val *dp
        cdef Py_ssize_t j, nidx, cnt, c, k0, k1
        cdef int ns, vk, tk, r
        cdef int64_t vi = 0, ti = 0
        cdef double vd = 0.0, td = 0.0
        if (it.kind != K_TUPLE and it.kind != K_LIST) or it.n < 2:
            self.drops[C_ITEM] += 1
            self.rejects.append(("bad_item", b""))
            return 0
        nidx = self.child(it, 0)
        cnt = it.n
        # every datapoint must be a pair, else the whole item is skipped
        if it.kind == K_TUPLE:
            for j in range(1, cnt):
                dp = &dec.vals[dec.kids[it.off + j]]
                if (dp.kind != K_TUPLE and dp.kind != K_LIST) or dp.n != 2:
                    break
            else:
                j = cnt
        else:
            c = dec.cons[it.off].next
            j = 1
            while c >= 0:
                dp = &dec.vals[dec.cons[c].val]
                if (dp.kind != K_TUPLE and dp.kind != K_LIST) or dp.n != 2:
                    break
                c = dec.cons[c].next
                j += 1
        if j != cnt:
            self.drops[C_ITEM] += 1
            self.rejects.append(("bad_item", self.name_sample(nidx)))
            return 0
        ns = self.name_state(nidx)
        c = dec.cons[it.off].next if it.kind == K_LIST else -1
        for j in range(1, cnt):
            it = &dec.vals[idx]
            if it.kind == K_TUPLE:
                dp = &dec.vals[dec.kids[it.off + j]]
            else:
                dp = &dec.vals[dec.cons[c].val]
                c = dec.cons[c].next
            if dp.kind == K_TUPLE:
                k0 = dec.kids[dp.off]
                k1 = dec.kids[dp.off + 1]
            else:
                k0 = dec.cons[dp.off].val
                k1 = dec.cons[dec.cons[dp.off].next].val
            vk = tk = N_INT
            if ns != NAME_BAD:
                vk = self.num_of(k1, &vi, &vd)
                if not self.overwrite and (vk == N_INT or vk == N_FLOAT):
                    tk = self.num_of(k0, &ti, &td)
            nv = &dec.vals[nidx]
            r = self.datapoint(dec.sptr(nv), nv.n, ns, vk, vi, vd, tk, ti, td)
            if r != DP_OK:
                self.drops[r] += 1
                self.rejects.append((DROP_REASONS[r], self.name_sample(nidx)))
        return 0

    # -- public API -------------------------------------------------------------------------

    def add_pickle(self, frame, now_ms=None):
        cdef Py_buffer view
        cdef Py_ssize_t root, c, j, total
        cdef int64_t before = self.n_accepted
        cdef Val *rv
        cdef Val *it
        cdef _Decoder dec = self.dec
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            self.n_frames += 1
            try:
                if view.len > self.max_frame_bytes:
                    raise FrameTooLarge(R_TOO_LARGE, 0)
                root = dec.decode(<const uint8_t *>view.buf, view.len)
                rv = &dec.vals[root]
                if rv.kind != K_LIST and rv.kind != K_TUPLE:
                    dec.fail(R_TOP, dec.stop)
                # memo references can multiply datapoints: bound them before emitting any
                total = 0
                c = rv.off if rv.kind == K_LIST else -1
                for j in range(rv.n):
                    if rv.kind == K_TUPLE:
                        it = &dec.vals[dec.kids[rv.off + j]]
                    else:
                        it = &dec.vals[dec.cons[c].val]
                        c = dec.cons[c].next
                    if (it.kind == K_TUPLE or it.kind == K_LIST) and it.n >= 2:
                        total += it.n - 1
                        if total > self.max_items:
                            dec.fail(R_DATAPOINTS, dec.stop)
            except FrameError as exc:
                self.drops[C_FRAME] += 1
                self.rejects.append(("bad_frame", str(exc).encode()[:SAMPLE_BYTES]))
                raise
            self.set_now(now_ms)
            rv = &dec.vals[root]
            if rv.kind == K_TUPLE:
                for j in range(rv.n):
                    self.item(dec.kids[dec.vals[root].off + j])
            else:
                c = rv.off
                while c >= 0:
                    self.item(dec.cons[c].val)
                    c = dec.cons[c].next
        finally:
            PyBuffer_Release(&view)
        return self.n_accepted - before

    def add_lines(self, data, bint final=False, now_ms=None):
        cdef Py_buffer view
        cdef const uint8_t *b
        cdef const uint8_t *nl
        cdef Py_ssize_t n, pos = 0, end, ln, j, nf, last_nl
        cdef Py_ssize_t fs[4]
        cdef Py_ssize_t fe[4]
        cdef int ns, vk, tk, r
        cdef int64_t vi = 0, ti = 0
        cdef double vd = 0.0, td = 0.0
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            b = <const uint8_t *>view.buf
            n = view.len
            last_nl = n
            while last_nl > 0 and b[last_nl - 1] != 10:
                last_nl -= 1
            if not final:
                n = last_nl
            if n == 0:
                return 0
            self.set_now(now_ms)
            while pos < n:
                nl = <const uint8_t *>memchr(b + pos, 10, n - pos)
                end = n if nl == NULL else nl - b
                ln = end - pos
                if ln and b[end - 1] == 13:
                    ln -= 1
                nf = 0
                j = pos
                while True:
                    while j < pos + ln and _is_space(b[j]):
                        j += 1
                    if j >= pos + ln:
                        break
                    if nf < 4:
                        fs[nf] = j
                    while j < pos + ln and not _is_space(b[j]):
                        j += 1
                    if nf < 4:
                        fe[nf] = j
                    nf += 1
                if nf == 0:
                    pos = end + 1
                    continue
                self.n_lines += 1
                if nf != 3 or ln > self.max_line:
                    r = C_LINE
                else:
                    ns = _name_state(b + fs[0], fe[0] - fs[0], self.max_name - self.pfx_raw)
                    vk = tk = N_INT
                    if ns != NAME_BAD:
                        vk = _parse_text(b + fs[1], fe[1] - fs[1], &vi, &vd, False)
                        if not self.overwrite and (vk == N_INT or vk == N_FLOAT):
                            tk = _parse_text(b + fs[2], fe[2] - fs[2], &ti, &td, False)
                    r = self.datapoint(b + fs[0], fe[0] - fs[0], ns, vk, vi, vd, tk, ti, td)
                if r != DP_OK:
                    self.drops[r] += 1
                    self.rejects.append((DROP_REASONS[r], PyBytes_FromStringAndSize(
                        <const char *>b + pos, min(ln, SAMPLE_BYTES))))
                pos = end + 1
            return n
        finally:
            PyBuffer_Release(&view)

    def take(self, bint partial=True):
        return [body for body, _ in self.take_counted(partial)]

    def take_counted(self, bint partial=True):
        cdef list out
        if partial and self.bcount:
            self.close_body()
        out = self.ready
        self.ready = []
        self.ready_bytes = 0
        self.ready_dps = 0
        return out

    @property
    def ready_bodies(self):
        return len(self.ready)

    @property
    def pending_bytes(self):
        return self.ready_bytes + (self.blen + 1 if self.bcount else 0)

    @property
    def pending_datapoints(self):
        return self.ready_dps + self.bcount

    def counters(self):
        d = {"accepted": self.n_accepted, "frames": self.n_frames, "lines": self.n_lines}
        for j, name in enumerate(DROP_REASONS):
            d[name] = self.drops[j]
        return d

    def take_rejects(self):
        out = list(self.rejects)
        self.rejects.clear()
        return out
