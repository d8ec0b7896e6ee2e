# The pickle opcode walker: one frame into C structs, validated completely before anything is
# emitted (included by _codec.pyx; the twin's _loads is the readable reference).

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy

from fastforward._codec_rules import (
    FORBIDDEN_OPCODES, R_AFTER_STOP, R_DEPTH, R_DIGITS, R_ITEMS, R_LONG_BYTES, R_MARKS,
    R_MEMO_INDEX, R_MEMO_UNSET, R_NO_MARK, R_NOT_LIST, R_PROTO, R_SEALED, R_STOP_STACK,
    R_TRUNCATED, R_UNDERFLOW, unescape_string,
)
from fastforward.errors import FrameError


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
        if nd <= 18:  # always inside int64
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
        if e - s > MAX_MEMO_DIGITS:
            self.fail(R_MEMO_INDEX if put else R_MEMO_UNSET, off)
        for q in range(s, e):
            acc = acc * 10 + (self.buf[q] - 48)
        return acc

    cdef Py_ssize_t decode(self, const uint8_t *b, Py_ssize_t n) except -1:
        """Walks one frame; returns the pool index of the result (self.stop: STOP's offset)."""
        cdef Py_ssize_t pos = 0, start, ln, idx, v, j, t, first
        cdef uint8_t op
        cdef uint64_t u
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
                v = self.new_val(K_FLOAT)
                self.vals[v].d = _be_double(b + pos)
                pos += 8
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
                    idx = <Py_ssize_t>_le(b + pos, 4)
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
                    u = _le(b + pos, 8)
                    pos += 8
                else:
                    if pos + 4 > n:
                        self.fail(R_TRUNCATED, start)
                    u = _le(b + pos, 4)
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
                u = _le(b + pos, 8)
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
            elif op == 0x4A or op == 0x4B or op == 0x4D or op == 0x8A or op == 0x8B:
                # BININT, BININT1, BININT2, LONG1, LONG4
                pos = self.binary_int(op, pos, n, start)
            elif op == 0x74 or op == 0x6C:  # TUPLE, LIST
                self.from_mark(op, start)
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
                    idx = <Py_ssize_t>_le(b + pos, 4)
                    pos += 4
                self.get_memo(idx, start)
            elif op == 0x4E:  # NONE
                self.push(self.new_val(K_NONE))
            elif op == 0x88 or op == 0x89:  # NEWTRUE, NEWFALSE
                v = self.new_val(K_BOOL)
                self.vals[v].i = 1 if op == 0x88 else 0
                self.push(v)
            elif op == 0x30 or op == 0x31 or op == 0x32:  # POP, POP_MARK, DUP
                self.stack_op(op, start)
            elif op == 0x49 or op == 0x4C or op == 0x46 or op == 0x70 or op == 0x67 \
                    or op == 0x53 or op == 0x56:
                # text-line opcodes: INT, LONG, FLOAT, PUT, GET, STRING, UNICODE
                pos = self.text_op(op, pos, n, start)
            else:
                self.bad_opcode(op, start)

    # -- the rarer opcode groups (the frequent ones stay in decode's loop) ------------------

    cdef Py_ssize_t binary_int(self, uint8_t op, Py_ssize_t pos, Py_ssize_t n,
                               Py_ssize_t start) except -1:
        """BININT, BININT1, BININT2, LONG1, LONG4 at pos; returns the position after them."""
        cdef const uint8_t *b = self.buf
        cdef Py_ssize_t ln, v
        cdef uint64_t u
        if op == 0x4A or op == 0x4B or op == 0x4D:
            ln = 4 if op == 0x4A else (1 if op == 0x4B else 2)
            if pos + ln > n:
                self.fail(R_TRUNCATED, start)
            if op == 0x4A:  # the one signed 32-bit argument
                sv = <int64_t>(<int>(<uint32_t>_le(b + pos, 4)))
            else:
                sv = <int64_t>_le(b + pos, ln)
            v = self.new_val(K_INT)
            self.vals[v].i = sv
            self.push(v)
            return pos + ln
        if op == 0x8A:
            if pos + 1 > n:
                self.fail(R_TRUNCATED, start)
            ln = b[pos]
            pos += 1
        else:
            if pos + 4 > n:
                self.fail(R_TRUNCATED, start)
            ln = <int>(<uint32_t>_le(b + pos, 4))
            pos += 4
            if ln < 0:
                self.fail("bad LONG4 argument", start)
        if ln > MAX_LONG_BYTES:
            self.fail(R_LONG_BYTES, start)
        if pos + ln > n:
            self.fail(R_TRUNCATED, start)
        if ln <= 8:
            u = _le(b + pos, ln)
            if 0 < ln < 8 and (b[pos + ln - 1] & 0x80):
                u |= (~<uint64_t>0) << (8 * ln)  # sign-extend
            v = self.new_val(K_INT)
            self.vals[v].i = <int64_t>u
        else:
            v = self.new_big(int.from_bytes(
                PyBytes_FromStringAndSize(<char *>b + pos, ln), "little", signed=True))
        self.push(v)
        return pos + ln

    cdef int from_mark(self, uint8_t op, Py_ssize_t start) except -1:
        """TUPLE, LIST: a container of the values above the topmost MARK."""
        cdef Py_ssize_t first, t
        cdef int d
        if self.nmarks == 0:
            self.fail(R_NO_MARK, start)
        first = self.marks[self.nmarks - 1]
        self.nmarks -= 1
        if op == 0x74:
            t = self.make_tuple(first, start, True)
        else:
            d = self.seal_depth(first, self.nstack)
            if d > MAX_DEPTH:
                self.fail(R_DEPTH, start)
            if self.nstack - first > self.max_items:
                self.fail(R_ITEMS, start)
            t = self.new_val(K_LIST)
            self.vals[t].depth = 1
            self.vals[t].off = -1
            self.list_extend(t, first, start)
        return self.push(t)

    cdef int stack_op(self, uint8_t op, Py_ssize_t start) except -1:
        """POP (the MARK itself when nothing is above it), POP_MARK, DUP."""
        if op == 0x30:
            if self.nstack > self.base():
                self.nstack -= 1
            elif self.nmarks:
                self.nmarks -= 1
            else:
                self.fail(R_UNDERFLOW, start)
        elif op == 0x31:
            if self.nmarks == 0:
                self.fail(R_NO_MARK, start)
            self.nstack = self.marks[self.nmarks - 1]
            self.nmarks -= 1
        else:
            if self.nstack <= self.base():
                self.fail(R_UNDERFLOW, start)
            self.push(self.stack[self.nstack - 1])
        return 0

    cdef Py_ssize_t text_op(self, uint8_t op, Py_ssize_t pos, Py_ssize_t n,
                            Py_ssize_t start) except -1:
        """INT, LONG, FLOAT, PUT, GET, STRING, UNICODE: the argument runs to the next newline;
        returns the position after it."""
        cdef const uint8_t *b = self.buf
        cdef const uint8_t *nl = <const uint8_t *>memchr(b + pos, 10, n - pos)
        cdef Py_ssize_t ln, v, idx
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
        return pos + ln + 1

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
