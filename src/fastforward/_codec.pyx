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
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy, memmove

import codecs

from fastforward.errors import FrameError, FrameTooLarge

cdef extern from "_floatrepr.h":
    int ff_u64_to_dec(uint64_t v, char *out) nogil
    int ff_i64_to_dec(int64_t v, char *out) nogil
    int ff_double_repr(double v, char *out) nogil
    void ff_floatrepr_init() nogil

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *ptype) except NULL
    double PyOS_string_to_double(const char *s, char **endptr,
                                 object overflow_exception) except? -1.0
    void PyMem_Free_raw "PyMem_Free"(void *p)
    int Py_DTSF_ADD_DOT_0
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec *tp)
    int CLOCK_REALTIME

ff_floatrepr_init()

DROP_REASONS = ("none", "nan", "inf", "bad_value", "bad_timestamp", "out_of_window",
                "invalid_name", "bad_item", "bad_line", "bad_frame")

DEF MAX_DEPTH = 64
DEF MAX_TEXT_DIGITS = 100
DEF MAX_LONG_BYTES = 64
DEF MAX_REJECTS = 64

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
    int name_state   # 0 unknown, 1 valid name, 2 invalid name
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

    def __cinit__(self):
        self.big = []

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

    cdef int list_add(self, Py_ssize_t lst, Py_ssize_t item, Py_ssize_t off) except -1:
        cdef Val *v
        cdef Py_ssize_t c
        cdef int dep
        if self.ncons >= self.capcons:
            _grow(<void **>&self.cons, &self.capcons, self.ncons + 1, sizeof(Cons))
        c = self.ncons
        self.ncons += 1
        self.cons[c].val = item
        self.cons[c].next = -1
        dep = self.vals[item].depth + 1
        v = &self.vals[lst]
        if v.last < 0:
            v.off = c
        else:
            self.cons[v.last].next = c
        v.last = c
        v.n += 1
        if v.n > self.max_items:
            self.fail("more than %d items in a list" % self.max_items, off)
        if dep > v.depth:
            v.depth = dep
            if dep > MAX_DEPTH:
                self.fail("nesting deeper than %d" % MAX_DEPTH, off)
        return 0

    cdef Py_ssize_t make_tuple(self, Py_ssize_t first, Py_ssize_t off) except -1:
        """Tuple of stack[first:]; the items are popped."""
        cdef Py_ssize_t n = self.nstack - first
        cdef Py_ssize_t t = self.new_val(K_TUPLE)
        cdef Py_ssize_t j, it
        cdef int dep = 1
        if self.nkids + n > self.capkids:
            _grow(<void **>&self.kids, &self.capkids, self.nkids + n, sizeof(Py_ssize_t))
        for j in range(n):
            it = self.stack[first + j]
            self.kids[self.nkids + j] = it
            if self.vals[it].depth + 1 > dep:
                dep = self.vals[it].depth + 1
        if dep > MAX_DEPTH:
            self.fail("nesting deeper than %d" % MAX_DEPTH, off)
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
            self.fail("memo store from an empty stack", off)
        if idx < 0 or idx > self.nvals:
            self.fail("memo index %d out of range" % idx, off)
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
            self.fail("memo index %d not set" % idx, off)
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

    cdef Py_ssize_t text_int(self, Py_ssize_t s, Py_ssize_t e, bint is_long, Py_ssize_t off) except -1:
        """INT / LONG / PUT / GET argument: [+-]digits, LONG with an optional trailing L."""
        cdef const uint8_t *b = self.buf
        cdef Py_ssize_t p = s
        cdef bint neg = False
        cdef uint64_t acc = 0
        cdef Py_ssize_t nd
        cdef Py_ssize_t v
        if is_long and e > s and b[e - 1] == 76:  # 'L'
            e -= 1
        if p < e and (b[p] == 43 or b[p] == 45):
            neg = b[p] == 45
            p += 1
        nd = e - p
        if nd <= 0:
            self.fail("bad integer text", off)
        if nd > MAX_TEXT_DIGITS:
            self.fail("text integer longer than %d digits" % MAX_TEXT_DIGITS, off)
        while p < e:
            if not (48 <= b[p] <= 57):
                self.fail("bad integer text", off)
            if nd <= 18:
                acc = acc * 10 + (b[p] - 48)
            p += 1
        if nd <= 18:
            v = self.new_val(K_INT)
            self.vals[v].i = -<int64_t>acc if neg else <int64_t>acc
            return v
        return self.new_big(int(PyBytes_FromStringAndSize(<char *>b + s, e - s)))

    cdef Py_ssize_t decode(self, const uint8_t *b, Py_ssize_t n) except -1:
        """Walks one frame; returns the pool index of the result."""
        cdef Py_ssize_t pos = 0, start, ln, idx, v, j, t, first
        cdef uint8_t op
        cdef const uint8_t *nl
        cdef uint64_t u
        cdef int64_t sv
        cdef double d
        cdef int proto
        cdef Val *pv
        self.reset()
        self.buf = b
        while True:
            if pos >= n:
                self.fail("truncated frame (no STOP)", pos)
            start = pos
            op = b[pos]
            pos += 1
            if op == 0x47:  # BINFLOAT
                if pos + 8 > n:
                    self.fail("truncated frame", start)
                u = 0
                for j in range(8):
                    u = (u << 8) | b[pos + j]
                memcpy(&d, &u, 8)
                pos += 8
                v = self.new_val(K_FLOAT)
                self.vals[v].d = d
                self.push(v)
            elif op == 0x71:  # BINPUT
                if pos + 1 > n:
                    self.fail("truncated frame", start)
                self.set_memo(b[pos], start)
                pos += 1
            elif op == 0x72:  # LONG_BINPUT
                if pos + 4 > n:
                    self.fail("truncated frame", start)
                u = b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16) | (<uint64_t>b[pos + 3] << 24)
                self.set_memo(<Py_ssize_t>u, start)
                pos += 4
            elif op == 0x94:  # MEMOIZE
                self.set_memo(self.memo_count, start)
            elif op == 0x86 or op == 0x85 or op == 0x87:  # TUPLE2, TUPLE1, TUPLE3
                ln = 2 if op == 0x86 else (1 if op == 0x85 else 3)
                if self.nstack - self.base() < ln:
                    self.fail("stack underflow", start)
                t = self.make_tuple(self.nstack - ln, start)
                self.push(t)
            elif op == 0x58 or op == 0x8C or op == 0x8D or op == 0x55 or op == 0x54 \
                    or op == 0x43 or op == 0x42 or op == 0x8E:
                # BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, SHORT_BINSTRING, BINSTRING,
                # SHORT_BINBYTES, BINBYTES, BINBYTES8
                if op == 0x8C or op == 0x55 or op == 0x43:
                    if pos + 1 > n:
                        self.fail("truncated frame", start)
                    u = b[pos]
                    pos += 1
                elif op == 0x8D or op == 0x8E:
                    if pos + 8 > n:
                        self.fail("truncated frame", start)
                    u = 0
                    for j in range(7, -1, -1):
                        u = (u << 8) | b[pos + j]
                    pos += 8
                else:
                    if pos + 4 > n:
                        self.fail("truncated frame", start)
                    u = (b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16)
                         | (<uint64_t>b[pos + 3] << 24))
                    pos += 4
                    if op == 0x54 and u >= 0x80000000:
                        self.fail("negative BINSTRING length", start)
                if u > <uint64_t>(n - pos):
                    self.fail("truncated frame", start)
                v = self.new_val(K_STR if (op == 0x58 or op == 0x8C or op == 0x8D) else K_BYTES)
                self.vals[v].off = pos
                self.vals[v].n = <Py_ssize_t>u
                pos += <Py_ssize_t>u
                self.push(v)
            elif op == 0x28:  # MARK
                if self.nmarks >= MAX_DEPTH:
                    self.fail("MARK depth over %d" % MAX_DEPTH, start)
                self.marks[self.nmarks] = self.nstack
                self.nmarks += 1
            elif op == 0x65 or op == 0x61:  # APPENDS, APPEND
                if op == 0x65:
                    if self.nmarks == 0:
                        self.fail("APPENDS without MARK", start)
                    first = self.marks[self.nmarks - 1]
                    self.nmarks -= 1
                else:
                    first = self.nstack - 1
                    if first - 1 < self.base():
                        self.fail("stack underflow", start)
                if first - 1 < self.base():
                    self.fail("stack underflow", start)
                idx = self.stack[first - 1]
                if self.vals[idx].kind != K_LIST:
                    self.fail("append to a non-list", start)
                for j in range(first, self.nstack):
                    self.list_add(idx, self.stack[j], start)
                self.nstack = first
            elif op == 0x5D:  # EMPTY_LIST
                v = self.new_val(K_LIST)
                self.vals[v].depth = 1
                self.vals[v].off = -1
                self.push(v)
            elif op == 0x80:  # PROTO
                if pos + 1 > n:
                    self.fail("truncated frame", start)
                proto = b[pos]
                pos += 1
                if proto > 5:
                    self.fail("unsupported pickle protocol %d" % proto, start)
            elif op == 0x95:  # FRAME
                if pos + 8 > n:
                    self.fail("truncated frame", start)
                pos += 8
            elif op == 0x2E:  # STOP
                if pos != n:
                    self.fail("data after STOP", pos)
                if self.nmarks != 0 or self.nstack != 1:
                    self.fail("stack not exactly one value at STOP", start)
                return self.stack[0]
            elif op == 0x4A or op == 0x4B or op == 0x4D:  # BININT, BININT1, BININT2
                ln = 4 if op == 0x4A else (1 if op == 0x4B else 2)
                if pos + ln > n:
                    self.fail("truncated frame", start)
                if op == 0x4A:
                    sv = <int64_t>(<int>(<uint32_t>(b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16)
                                                     | (<uint32_t>b[pos + 3] << 24))))
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
                        self.fail("truncated frame", start)
                    ln = b[pos]
                    pos += 1
                else:
                    if pos + 4 > n:
                        self.fail("truncated frame", start)
                    ln = <int>(<uint32_t>(b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16)
                                          | (<uint32_t>b[pos + 3] << 24)))
                    pos += 4
                    if ln < 0:
                        self.fail("negative LONG4 length", start)
                if ln > MAX_LONG_BYTES:
                    self.fail("LONG longer than %d bytes" % MAX_LONG_BYTES, start)
                if pos + ln > n:
                    self.fail("truncated frame", start)
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
            elif op == 0x74:  # TUPLE
                if self.nmarks == 0:
                    self.fail("TUPLE without MARK", start)
                first = self.marks[self.nmarks - 1]
                self.nmarks -= 1
                t = self.make_tuple(first, start)
                self.push(t)
            elif op == 0x29:  # EMPTY_TUPLE
                t = self.make_tuple(self.nstack, start)
                self.push(t)
            elif op == 0x6C:  # LIST
                if self.nmarks == 0:
                    self.fail("LIST without MARK", start)
                first = self.marks[self.nmarks - 1]
                self.nmarks -= 1
                v = self.new_val(K_LIST)
                self.vals[v].depth = 1
                self.vals[v].off = -1
                for j in range(first, self.nstack):
                    self.list_add(v, self.stack[j], start)
                self.nstack = first
                self.push(v)
            elif op == 0x68 or op == 0x6A:  # BINGET, LONG_BINGET
                if op == 0x68:
                    if pos + 1 > n:
                        self.fail("truncated frame", start)
                    idx = b[pos]
                    pos += 1
                else:
                    if pos + 4 > n:
                        self.fail("truncated frame", start)
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
                    self.fail("stack underflow", start)
            elif op == 0x31:  # POP_MARK
                if self.nmarks == 0:
                    self.fail("POP_MARK without MARK", start)
                self.nstack = self.marks[self.nmarks - 1]
                self.nmarks -= 1
            elif op == 0x32:  # DUP
                if self.nstack <= self.base():
                    self.fail("stack underflow", start)
                self.push(self.stack[self.nstack - 1])
            elif op == 0x49 or op == 0x4C or op == 0x46 or op == 0x70 or op == 0x67 \
                    or op == 0x53 or op == 0x56:
                # text-line opcodes: INT, LONG, FLOAT, PUT, GET, STRING, UNICODE
                nl = <const uint8_t *>memchr(b + pos, 10, n - pos)
                if nl == NULL:
                    self.fail("truncated frame", start)
                ln = nl - (b + pos)
                if op == 0x49:
                    if ln == 2 and b[pos] == 48 and (b[pos + 1] == 48 or b[pos + 1] == 49):
                        v = self.new_val(K_BOOL)
                        self.vals[v].i = b[pos + 1] - 48
                    else:
                        v = self.text_int(pos, pos + ln, False, start)
                    self.push(v)
                elif op == 0x4C:
                    self.push(self.text_int(pos, pos + ln, True, start))
                elif op == 0x70 or op == 0x67:
                    v = self.text_int(pos, pos + ln, False, start)
                    idx = self.vals[v].i if self.vals[v].kind == K_INT else -1
                    self.nvals -= 1  # the index is not a value
                    if op == 0x70:
                        self.set_memo(idx, start)
                    else:
                        self.get_memo(idx, start)
                elif op == 0x46:
                    self.push(self.text_float(pos, ln, start))
                else:
                    self.push(self.text_string(op, pos, ln, start))
                pos += ln + 1
            else:
                self.bad_opcode(op, start)

    cdef Py_ssize_t text_float(self, Py_ssize_t s, Py_ssize_t ln, Py_ssize_t off) except -1:
        cdef Py_ssize_t v
        cdef double x = 0.0
        try:
            x = float(PyBytes_FromStringAndSize(<char *>self.buf + s, ln))
        except ValueError:
            self.fail("bad FLOAT text", off)
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
                self.fail("STRING argument not quoted", off)
            try:
                data = codecs.escape_decode(raw[1:ln - 1])[0]
            except ValueError:
                self.fail("bad STRING escape", off)
            v = self.new_val(K_BYTES)
        else:  # UNICODE: raw-unicode-escape
            try:
                data = raw.decode("raw-unicode-escape").encode("utf-8", "surrogatepass")
            except UnicodeError:
                self.fail("bad UNICODE escape", off)
            v = self.new_val(K_STR)
        self.vals[v].off = self.aux_store(data)
        self.vals[v].n = len(data)
        self.vals[v].aux = 1
        return v

    cdef int bad_opcode(self, uint8_t op, Py_ssize_t off) except -1:
        name = _FORBIDDEN.get(op)
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


_FORBIDDEN = {
    0x63: "GLOBAL", 0x93: "STACK_GLOBAL", 0x52: "REDUCE", 0x62: "BUILD", 0x69: "INST",
    0x6F: "OBJ", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX", 0x50: "PERSID", 0x51: "BINPERSID",
    0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x7D: "EMPTY_DICT", 0x64: "DICT",
    0x73: "SETITEM", 0x75: "SETITEMS", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET",
    0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
}


def safe_loads(frame, max_frame_bytes=1_048_576, max_items_per_frame=100_000):
    """Decode a carbon pickle frame into Python objects without running pickle."""
    cdef Py_buffer view
    cdef _Decoder dec = _Decoder()
    cdef Py_ssize_t root
    dec.max_items = max_items_per_frame
    PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
    try:
        if view.len > max_frame_bytes:
            raise FrameTooLarge("frame of %d bytes over the %d byte limit"
                                % (view.len, max_frame_bytes), 0)
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


def _float_repr_fast(double x):
    """The C fast path alone: repr(x), or None where it defers to CPython (test hook)."""
    cdef char out[40]
    cdef int n = ff_double_repr(x, out)
    return None if n < 0 else out[:n].decode("ascii")


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


cdef int _parse_text(const uint8_t *p, Py_ssize_t n, int64_t *iv, double *dv,
                     list big) except -1:
    """A string value or timestamp: N_INT / N_FLOAT / N_BIG (appended to big) / N_NAN /
    N_INF / N_BAD."""
    cdef Py_ssize_t s = 0, e = n, j, nd, intd, fracd
    cdef uint64_t acc = 0
    cdef bint neg = False
    cdef bytes text
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
    nd = j
    while j < e and 48 <= p[j] <= 57:
        j += 1
    intd = j - nd
    if j == e and intd > 0:
        if intd <= 18:
            for nd in range(nd, e):
                acc = acc * 10 + (p[nd] - 48)
            iv[0] = -<int64_t>acc if neg else <int64_t>acc
            return N_INT
        try:
            big.append(int(PyBytes_FromStringAndSize(<const char *>p + s, e - s)))
        except ValueError:  # over the interpreter's int digit limit
            return N_BAD
        return N_BIG
    fracd = 0
    if j < e and p[j] == 46:  # '.'
        j += 1
        nd = j
        while j < e and 48 <= p[j] <= 57:
            j += 1
        fracd = j - nd
    if intd == 0 and fracd == 0:
        if _lower_is(p + nd, e - nd, "nan", 3):
            return N_NAN
        if _lower_is(p + nd, e - nd, "inf", 3) or _lower_is(p + nd, e - nd, "infinity", 8):
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
    text = PyBytes_FromStringAndSize(<const char *>p + s, e - s)
    dv[0] = PyOS_string_to_double_raw(PyBytes_AS_STRING(text), NULL, NULL)
    if isinf(dv[0]):
        return N_INF
    return N_FLOAT


# -- names ---------------------------------------------------------------------------------

cdef enum:
    NAME_OK = 1
    NAME_ESCAPE = 2
    NAME_BAD = 3


cdef int _check_name(const uint8_t *p, Py_ssize_t n) noexcept:
    """NAME_OK, NAME_ESCAPE (valid, has bytes JSON must escape) or NAME_BAD."""
    cdef Py_ssize_t j = 0
    cdef uint8_t c, c1
    cdef int res = NAME_OK
    if n == 0:
        return NAME_BAD
    while j < n:
        c = p[j]
        if 0x21 <= c < 0x80 and c != 34 and c != 92:
            j += 1
            continue
        if c < 0x80:
            if c == 32 or (9 <= c <= 13):
                return NAME_BAD
            res = NAME_ESCAPE
            j += 1
            continue
        if 0xC2 <= c <= 0xDF:
            if j + 1 >= n or (p[j + 1] & 0xC0) != 0x80:
                return NAME_BAD
            j += 2
        elif 0xE0 <= c <= 0xEF:
            if j + 2 >= n:
                return NAME_BAD
            c1 = p[j + 1]
            if (c1 & 0xC0) != 0x80 or (p[j + 2] & 0xC0) != 0x80:
                return NAME_BAD
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 >= 0xA0):
                return NAME_BAD  # overlong, or a surrogate
            j += 3
        elif 0xF0 <= c <= 0xF4:
            if j + 3 >= n:
                return NAME_BAD
            c1 = p[j + 1]
            if ((c1 & 0xC0) != 0x80 or (p[j + 2] & 0xC0) != 0x80
                    or (p[j + 3] & 0xC0) != 0x80):
                return NAME_BAD
            if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 >= 0x90):
                return NAME_BAD
            j += 4
        else:
            return NAME_BAD
    return res


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


# -- the encoder -----------------------------------------------------------------------------

cdef const char *_HEAD = b'{"collectionTime":'
DEF HEAD_LEN = 18
cdef const char *_NAMEKEY = b',"metricName":"'
DEF NAMEKEY_LEN = 15


cdef class Encoder:
    """Accumulates datapoints from pickle frames and plaintext lines into Blueflood bodies."""

    cdef _Decoder dec
    cdef bytes pfx          # escaped prefix plus "." (empty without a prefix)
    cdef Py_ssize_t pfx_raw  # UTF-8 length of prefix plus "."
    cdef bytes mid          # ',"ttlInSeconds":<ttl>,"metricValue":'
    cdef bint overwrite
    cdef Py_ssize_t max_body_bytes, max_body_dps, max_frame_bytes, max_items
    cdef int64_t max_past, max_future
    cdef Py_ssize_t max_name, max_line
    cdef char *body
    cdef Py_ssize_t blen, bcap, bcount
    cdef list ready
    cdef Py_ssize_t ready_bytes, ready_dps
    cdef int64_t drops[C_COUNT]
    cdef int64_t n_accepted, n_frames, n_lines
    cdef list rejects
    cdef list bigv, bigt  # rare path: the big int value / timestamp of this datapoint
    # per call
    cdef int64_t now, lo, hi
    cdef bint has_lo, has_hi

    def __cinit__(self):
        self.dec = _Decoder()
        self.ready = []
        self.rejects = []
        self.bigv = []
        self.bigt = []

    def __init__(self, *, str prefix="", int ttl=86400, bint overwrite_collection_time=False,
                 Py_ssize_t max_body_bytes=1_000_000, Py_ssize_t max_body_datapoints=5_000,
                 Py_ssize_t max_frame_bytes=1_048_576, Py_ssize_t max_items_per_frame=100_000,
                 int64_t max_past_ms=259_200_000, int64_t max_future_ms=600_000,
                 Py_ssize_t max_name_bytes=4096, Py_ssize_t max_line_bytes=65_536):
        cdef bytes raw
        if prefix:
            raw = prefix.encode("utf-8") + b"."
            self.pfx = _escape_bytes(raw)
            self.pfx_raw = len(raw)
        else:
            self.pfx = b""
            self.pfx_raw = 0
        self.mid = (',"ttlInSeconds":%d,"metricValue":' % ttl).encode()
        self.overwrite = overwrite_collection_time
        self.max_body_bytes = max_body_bytes
        self.max_body_dps = max(1, max_body_datapoints)
        self.max_frame_bytes = max_frame_bytes
        self.max_items = max_items_per_frame
        self.dec.max_items = max_items_per_frame
        self.max_past = max_past_ms
        self.max_future = max_future_ms
        self.max_name = max_name_bytes
        self.max_line = max_line_bytes
        _grow(<void **>&self.body, &self.bcap, 4096, 1)
        self.body[0] = 91  # '['
        self.blen = 1
        self.bcount = 0

    def __dealloc__(self):
        PyMem_Free(self.body)

    # -- clock and window -------------------------------------------------------------------

    cdef int set_now(self, object now_ms) except -1:
        cdef timespec ts
        if now_ms is None:
            clock_gettime(CLOCK_REALTIME, &ts)
            self.now = <int64_t>ts.tv_sec * 1000 + ts.tv_nsec // 1000000
        else:
            self.now = now_ms
        self.has_lo = self.max_past >= 0
        self.has_hi = self.max_future >= 0
        self.lo = self.now - self.max_past
        self.hi = self.now + self.max_future
        return 0

    cdef int reject(self, str reason, object sample) except -1:
        self.rejects.append((reason, bytes(sample[:256])))
        if len(self.rejects) > MAX_REJECTS:
            del self.rejects[0]
        return 0

    # -- body assembly ----------------------------------------------------------------------

    cdef int close_body(self) except -1:
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self.blen + 1)
        cdef char *w = PyBytes_AS_STRING(out)
        memcpy(w, self.body, self.blen)
        w[self.blen] = 93  # ']'
        self.ready.append(out)
        self.ready_bytes += self.blen + 1
        self.ready_dps += self.bcount
        self.blen = 1
        self.bcount = 0
        return 0

    cdef int emit(self, const uint8_t *name, Py_ssize_t nlen, bint esc, const char *ts,
                  Py_ssize_t tslen, const char *val, Py_ssize_t vlen) except -1:
        cdef Py_ssize_t start, dplen
        cdef Py_ssize_t plen = len(self.pfx)
        cdef Py_ssize_t mlen = len(self.mid)
        cdef char *w
        _grow(<void **>&self.body, &self.bcap,
              self.blen + 1 + HEAD_LEN + tslen + mlen + vlen + NAMEKEY_LEN + plen
              + (6 * nlen if esc else nlen) + 4, 1)
        start = self.blen + 1 if self.bcount else self.blen
        w = self.body + start
        memcpy(w, _HEAD, HEAD_LEN)
        w += HEAD_LEN
        memcpy(w, ts, tslen)
        w += tslen
        memcpy(w, PyBytes_AS_STRING(self.mid), mlen)
        w += mlen
        memcpy(w, val, vlen)
        w += vlen
        memcpy(w, _NAMEKEY, NAMEKEY_LEN)
        w += NAMEKEY_LEN
        if plen:
            memcpy(w, PyBytes_AS_STRING(self.pfx), plen)
            w += plen
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
            self.close_body()
            memmove(self.body + 1, self.body + start, dplen)
            start = 1
        elif self.bcount:
            self.body[self.blen] = 44  # ','
        self.blen = start + dplen
        self.bcount += 1
        self.n_accepted += 1
        if self.bcount >= self.max_body_dps:
            self.close_body()
        return 0

    # -- one datapoint ----------------------------------------------------------------------

    cdef int num_of(self, Py_ssize_t idx, int64_t *iv, double *dv, list big) except -1:
        """Classifies pool value idx as a number (N_*); N_BIG appends the int to big."""
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
            big.append(self.dec.big[v.i])
            return N_BIG
        if v.kind == K_STR or v.kind == K_BYTES:
            return _parse_text(self.dec.sptr(v), v.n, iv, dv, big)
        return N_BAD

    cdef int datapoint(self, const uint8_t *name, Py_ssize_t nlen, int nstate,
                       int vk, int64_t vi, double vd, int tk, int64_t ti, double td) except -1:
        """Checks and emits one datapoint; vk/tk are the N_* kinds of value and timestamp."""
        cdef char vbuf[40]
        cdef char tbuf[24]
        cdef Py_ssize_t vlen, tlen
        cdef int64_t ms
        cdef double x
        cdef char *s
        cdef bytes tsbig = None
        if nstate == NAME_BAD:
            self.drops[C_NAME] += 1
            self.reject("invalid_name", PyBytes_FromStringAndSize(<const char *>name, nlen))
            return 0
        # value
        if vk == N_INT:
            vlen = ff_i64_to_dec(vi, vbuf)
        elif vk == N_FLOAT or vk == N_BIG:
            if vk == N_BIG:
                try:
                    vd = float(self.bigv[0])
                except OverflowError:
                    self.drops[C_BAD_VALUE] += 1
                    return 0
            vlen = ff_double_repr(vd, vbuf)
            if vlen < 0:
                s = PyOS_double_to_string(vd, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
                vlen = len(<bytes>s)
                memcpy(vbuf, s, vlen)
                PyMem_Free_raw(s)
        else:
            self.drops[C_NONE if vk == N_NONE else C_NAN if vk == N_NAN
                       else C_INF if vk == N_INF else C_BAD_VALUE] += 1
            return 0
        # timestamp
        if self.overwrite:
            ms = self.now
        elif tk == N_INT:
            if ti == -1:
                ms = self.now
            elif -9223372036854775 <= ti <= 9223372036854775:
                ms = ti * 1000
            else:
                return self.big_ts(ti, name, nlen, nstate, vbuf, vlen)
        elif tk == N_FLOAT:
            if td == -1.0:
                ms = self.now
            else:
                x = td * 1000.0
                if -9.2e18 < x < 9.2e18:
                    ms = <int64_t>x
                elif isinf(x):
                    self.drops[C_BAD_TS] += 1
                    return 0
                else:
                    return self.big_ts(int(x), name, nlen, nstate, vbuf, vlen)
        elif tk == N_BIG:
            return self.big_ts(self.bigt[0] * 1000, name, nlen, nstate, vbuf, vlen)
        else:
            self.drops[C_BAD_TS] += 1
            return 0
        if (self.has_lo and ms < self.lo) or (self.has_hi and ms > self.hi):
            self.drops[C_WINDOW] += 1
            return 0
        tlen = ff_i64_to_dec(ms, tbuf)
        self.emit(name, nlen, nstate == NAME_ESCAPE, tbuf, tlen, vbuf, vlen)
        return 0

    cdef int big_ts(self, object ms, const uint8_t *name, Py_ssize_t nlen, int nstate,
                    char *vbuf, Py_ssize_t vlen) except -1:
        """Rare path: a collection time beyond int64 milliseconds."""
        cdef bytes t
        if isinstance(ms, int) and ms == -1000:
            ms = self.now
        if (self.has_lo and ms < self.lo) or (self.has_hi and ms > self.hi):
            self.drops[C_WINDOW] += 1
            return 0
        t = str(ms).encode()
        self.emit(name, nlen, nstate == NAME_ESCAPE, PyBytes_AS_STRING(t), len(t), vbuf, vlen)
        return 0

    cdef int name_state(self, Py_ssize_t idx) noexcept:
        cdef Val *v = &self.dec.vals[idx]
        if v.name_state == 0:
            if v.n + self.pfx_raw > self.max_name:
                v.name_state = NAME_BAD
            else:
                v.name_state = _check_name(self.dec.sptr(v), v.n)
        return v.name_state

    cdef int item(self, Py_ssize_t idx) except -1:
        cdef _Decoder dec = self.dec
        cdef Val *it = &dec.vals[idx]
        cdef Val *nv
        cdef Val *dp
        cdef Py_ssize_t j, nidx, didx, cnt
        cdef int ns, vk, tk
        cdef int64_t vi = 0, ti = 0
        cdef double vd = 0.0, td = 0.0
        cdef Py_ssize_t kid[2]
        cdef Py_ssize_t c
        if it.kind != K_TUPLE and it.kind != K_LIST or it.n < 2:
            return self.bad_item()
        nidx = self.child(it, 0)
        nv = &dec.vals[nidx]
        if nv.kind != K_STR and nv.kind != K_BYTES:
            return self.bad_item()
        # every datapoint must be a pair, else the whole item is skipped
        cnt = it.n
        for j in range(1, cnt):
            dp = &dec.vals[self.child(it, j)]
            if (dp.kind != K_TUPLE and dp.kind != K_LIST) or dp.n != 2:
                return self.bad_item()
        ns = self.name_state(nidx)
        nv = &dec.vals[nidx]
        for j in range(1, cnt):
            didx = self.child(&dec.vals[idx], j)
            dp = &dec.vals[didx]
            if dp.kind == K_TUPLE:
                kid[0] = dec.kids[dp.off]
                kid[1] = dec.kids[dp.off + 1]
            else:
                c = dp.off
                kid[0] = dec.cons[c].val
                kid[1] = dec.cons[dec.cons[c].next].val
            if self.bigv or self.bigt:
                self.bigv.clear()
                self.bigt.clear()
            if ns == NAME_BAD:
                vk = N_INT
                tk = N_INT
            else:
                vk = self.num_of(kid[1], &vi, &vd, self.bigv)
                tk = N_INT if self.overwrite else self.num_of(kid[0], &ti, &td, self.bigt)
            nv = &dec.vals[nidx]
            self.datapoint(dec.sptr(nv), nv.n, ns, vk, vi, vd, tk, ti, td)
        return 0

    cdef inline Py_ssize_t child(self, Val *v, Py_ssize_t j) noexcept:
        cdef Py_ssize_t c
        if v.kind == K_TUPLE:
            return self.dec.kids[v.off + j]
        c = v.off
        while j:
            c = self.dec.cons[c].next
            j -= 1
        return self.dec.cons[c].val

    cdef int bad_item(self) except -1:
        self.drops[C_ITEM] += 1
        return 0

    # -- public API -------------------------------------------------------------------------

    def add_pickle(self, frame, now_ms=None):
        cdef Py_buffer view
        cdef Py_ssize_t root, c, j
        cdef int64_t before = self.n_accepted
        cdef Val *rv
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            self.n_frames += 1
            if view.len > self.max_frame_bytes:
                self.drops[C_FRAME] += 1
                self.reject("bad_frame", PyBytes_FromStringAndSize(<char *>view.buf,
                                                                   min(view.len, 256)))
                raise FrameTooLarge("frame of %d bytes over the %d byte limit"
                                    % (view.len, self.max_frame_bytes), 0)
            try:
                root = self.dec.decode(<const uint8_t *>view.buf, view.len)
                rv = &self.dec.vals[root]
                if rv.kind != K_LIST and rv.kind != K_TUPLE:
                    self.dec.fail("top level is not a list or tuple", 0)
            except FrameError:
                self.drops[C_FRAME] += 1
                self.reject("bad_frame", PyBytes_FromStringAndSize(<char *>view.buf,
                                                                   min(view.len, 256)))
                raise
            self.set_now(now_ms)
            rv = &self.dec.vals[root]
            if rv.kind == K_TUPLE:
                for j in range(rv.n):
                    self.item(self.dec.kids[self.dec.vals[root].off + j])
            else:
                c = rv.off
                while c >= 0:
                    self.item(self.dec.cons[c].val)
                    c = self.dec.cons[c].next
        finally:
            PyBuffer_Release(&view)
        return self.n_accepted - before

    def add_lines(self, data, bint final=False, now_ms=None):
        cdef Py_buffer view
        cdef const uint8_t *b
        cdef const uint8_t *nl
        cdef Py_ssize_t n, pos = 0, end, ln, j, nf
        cdef Py_ssize_t fs[4]
        cdef Py_ssize_t fe[4]
        cdef int ns, vk, tk
        cdef int64_t vi = 0, ti = 0
        cdef double vd = 0.0, td = 0.0
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            b = <const uint8_t *>view.buf
            n = view.len
            self.set_now(now_ms)
            while pos < n:
                nl = <const uint8_t *>memchr(b + pos, 10, n - pos)
                if nl == NULL:
                    if not final:
                        break
                    end = n
                else:
                    end = nl - b
                ln = end - pos
                # fields
                nf = 0
                j = pos
                while True:
                    while j < end and _is_space(b[j]):
                        j += 1
                    if j >= end:
                        break
                    if nf < 4:
                        fs[nf] = j
                    while j < end and not _is_space(b[j]):
                        j += 1
                    if nf < 4:
                        fe[nf] = j
                    nf += 1
                if nf == 0:
                    pos = end + 1
                    continue
                self.n_lines += 1
                if nf != 3 or ln > self.max_line:
                    self.drops[C_LINE] += 1
                    self.reject("bad_line", PyBytes_FromStringAndSize(<char *>b + pos, ln))
                    pos = end + 1
                    continue
                if fe[0] - fs[0] + self.pfx_raw > self.max_name:
                    ns = NAME_BAD
                else:
                    ns = _check_name(b + fs[0], fe[0] - fs[0])
                if self.bigv or self.bigt:
                    self.bigv.clear()
                    self.bigt.clear()
                if ns == NAME_BAD:
                    vk = tk = N_INT
                else:
                    vk = _parse_text(b + fs[1], fe[1] - fs[1], &vi, &vd, self.bigv)
                    tk = N_INT if self.overwrite else _parse_text(b + fs[2], fe[2] - fs[2],
                                                                  &ti, &td, self.bigt)
                self.datapoint(b + fs[0], fe[0] - fs[0], ns, vk, vi, vd, tk, ti, td)
                pos = end + 1
            return min(pos, n)
        finally:
            PyBuffer_Release(&view)

    def take(self, bint partial=True):
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
        out = self.rejects
        self.rejects = []
        return out
