# The JSON body encoder: checks each datapoint (name, value, timestamp, window), routes it
# when a router is set, and writes it into its tenant's C body buffer, closing bodies by size
# and count (included by _codec.pyx).

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free
from cpython.unicode cimport PyUnicode_AsUTF8String
from libc.math cimport isinf, isnan
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset

import math
from collections import deque

from fastforward._codec_rules import (
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_BODY_DATAPOINTS, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_FUTURE_MS, DEFAULT_MAX_ITEMS_PER_FRAME, DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_NAME_BYTES, DEFAULT_MAX_PAST_MS, DEFAULT_PREFIX, DEFAULT_ROUTE_CACHE_SIZE,
    DEFAULT_TTL, DROP_REASONS,
    INT64_MAX, INT64_MIN, R_DATAPOINTS, R_TOO_LARGE, R_TOP, check_encoder_args,
    check_route_cache_size,
)
from fastforward.errors import FrameError, FrameTooLarge

cdef const char *_HEAD = b'{"collectionTime":'
DEF HEAD_LEN = 18
DEF NAME_KEY_LEN = 15  # len(',"metricName":"')

# drop reasons a router may give, and the names of the per-tenant counters
cdef dict _ROUTE_DROPS = {
    "rule": C_RULE, "series_budget": C_BUDGET, "bad_tags": C_BAD_TAGS,
    "empty_name": C_EMPTY_NAME,
}
cdef tuple _TENANT_COUNTERS = ("rule", "series_budget", "bad_tags", "empty_name")

# A closed body keeps the allocation it was filled in when at most an eighth of it is unused
# (a body full by bytes): its length is set, not reallocated. Shrinking it left a hole short
# of the next body of the same capacity (by 48 KiB at the default --limit), so after a
# backpressure episode new bodies took fresh pages while the holes stayed resident, and the
# RSS passed --max-buffer-bytes in the recovery (bench/manysenders.py). Kept whole, a
# delivered body's hole is one the next body fits.
cdef extern from *:
    """
    static inline void ff_bytes_end_at(PyObject *o, Py_ssize_t n) {
        Py_SET_SIZE((PyVarObject *)o, n);
        ((PyBytesObject *)o)->ob_sval[n] = 0;
    }
    """
    void _bytes_end_at "ff_bytes_end_at"(PyObject *o, Py_ssize_t n)
DEF KEEP_UNUSED_DIV = 8  # a closed body with at most 1/8 of its capacity unused keeps it

DEF BODY_START = 4096  # bytes a body starts with (it doubles as it fills)
DEF LINE_BATCH = 256  # plaintext lines whose cache lookups are prefetched together


cdef inline void _empty_body(Body *b, Py_ssize_t next_cap) noexcept:
    """Makes b an empty body '[' that holds no memory until its first write, then next_cap
    bytes (its counters stay): an empty body is never taken, so memory it held would stay
    counted against the cap with nothing to deliver. Its cap is -next_cap until then (no
    room: the first write takes _body_room's slow path)."""
    b.obj = NULL
    b.buf = NULL
    b.cap = -next_cap
    b.len = 1
    b.count = 0
    b.last_tslen = 0


cdef int _alloc_body(Body *b, Py_ssize_t cap) except -1:
    """Gives an empty body its bytes object of cap bytes, starting with '['."""
    b.obj = PyBytes_New(NULL, cap)
    b.buf = PyBytes_DATA(b.obj)
    b.cap = cap
    b.buf[0] = 91  # '['
    return 0


cdef int _first_write(Body *b, Py_ssize_t need) except -1:
    """Allocates an empty body at its first write: -cap bytes, doubled until need fits."""
    cdef Py_ssize_t c = max(-b.cap, BODY_START)
    while c < need:
        c *= 2
    return _alloc_body(b, c)


cdef inline int _body_room(Body *b, Py_ssize_t need) except -1:
    """Makes the body's bytes object at least need bytes long (allocating it at the first
    write, doubling after)."""
    cdef Py_ssize_t c = b.cap
    if need <= c:
        return 0
    if b.obj == NULL:
        return _first_write(b, need)
    while c < need:
        c *= 2
    try:
        _PyBytes_Resize(&b.obj, c)
    except MemoryError:
        _empty_body(b, BODY_START)  # the open body is lost with its object
        raise
    b.buf = PyBytes_DATA(b.obj)
    b.cap = c
    return 0


cdef inline Py_ssize_t _next_cap(Body *done, Py_ssize_t carry_len, bint full) noexcept:
    """The capacity of the body that follows a closed one: as large after one that filled up
    by bytes (the next will too); else what the closed one used and an eighth more, so the
    next flush's worth of a tenant fits without growing by doubling (a copy each time, and
    the old buffers left as holes in the heap), but no more than the closed one had. A
    partial body (an interval or burst-end flush) gives a power of two, from BODY_START."""
    cdef Py_ssize_t need = done.len + done.len // 8, c = BODY_START
    if carry_len:
        return max(done.cap, carry_len + 2)
    if full:
        return min(done.cap, need + BODY_START)
    while c < need and c < done.cap:
        c *= 2
    return c


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
    cdef char name_key_pad[64]  # ',"metricName":"' alone: routed names carry their prefix
    cdef const char *mid_p      # mid_pad, or mid's bytes when longer than 64
    cdef const char *ntail_p
    cdef Py_ssize_t mlen, ntlen
    cdef object ttl
    cdef bint overwrite
    cdef Py_ssize_t max_body_bytes, max_body_dps, max_frame_bytes, max_items
    cdef object max_past_ms, max_future_ms
    cdef Py_ssize_t max_name, max_line
    # open bodies, one per tenant slot; slot 0 is the default tenant (None)
    cdef Body *bodies
    cdef Py_ssize_t nbodies, bodies_cap
    cdef list tenants           # slot -> tenant
    cdef dict slot_of           # tenant -> slot
    cdef object router
    cdef _RouteCache routes
    cdef uint64_t *hashes       # per item of the frame being emitted: its name's hash
    cdef Py_ssize_t hashes_cap
    cdef uint64_t item_hash     # the hash of the current item's name, when has_item_hash
    cdef bint has_item_hash
    # the current item's record when its name was found in the route cache before the name's
    # check: a cached name passed it when it was decided, so a hit skips the byte scan
    cdef Route *item_route
    cdef list ready             # (body, datapoints), in the order they closed
    cdef list ready_tenants     # the tenant of each ready body
    cdef Py_ssize_t ready_bytes, ready_dps
    cdef int64_t drops[C_COUNT]
    cdef int64_t n_accepted, n_frames, n_lines
    cdef object rejects
    # per call
    cdef int64_t now, lo, hi
    cdef bint has_lo, has_hi

    def __cinit__(self, *args, **kwargs):
        self.dec = _Decoder()
        self.ready = []
        self.ready_tenants = []
        self.tenants = []
        self.slot_of = {}
        self.rejects = deque(maxlen=MAX_REJECTS)

    def __init__(self, *, prefix=DEFAULT_PREFIX, ttl=DEFAULT_TTL,
                 overwrite_collection_time=False,
                 max_body_bytes=DEFAULT_MAX_BODY_BYTES,
                 max_body_datapoints=DEFAULT_MAX_BODY_DATAPOINTS,
                 max_frame_bytes=DEFAULT_MAX_FRAME_BYTES,
                 max_items_per_frame=DEFAULT_MAX_ITEMS_PER_FRAME,
                 max_past_ms=DEFAULT_MAX_PAST_MS, max_future_ms=DEFAULT_MAX_FUTURE_MS,
                 max_name_bytes=DEFAULT_MAX_NAME_BYTES, max_line_bytes=DEFAULT_MAX_LINE_BYTES,
                 router=None, route_cache_size=DEFAULT_ROUTE_CACHE_SIZE):
        cdef bytes raw
        check_encoder_args(
            ttl=ttl, max_body_bytes=max_body_bytes, max_body_datapoints=max_body_datapoints,
            max_frame_bytes=max_frame_bytes, max_items_per_frame=max_items_per_frame,
            max_name_bytes=max_name_bytes, max_line_bytes=max_line_bytes,
        )
        check_route_cache_size(route_cache_size)
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
        memcpy(self.name_key_pad, b',"metricName":"', NAME_KEY_LEN)
        self.mid_p = &self.mid_pad[0] if self.mlen <= 64 else PyBytes_AS_STRING(self.mid)
        self.ntail_p = &self.ntail_pad[0] if self.ntlen <= 64 else PyBytes_AS_STRING(self.ntail)
        self.ttl = ttl
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
        self.routes = _RouteCache(min(route_cache_size, 1 << 30))
        self.use_router(router)
        if self.nbodies == 0:
            self.tenant_slot(None)

    def __dealloc__(self):
        cdef Py_ssize_t j
        for j in range(self.nbodies):
            Py_XDECREF_raw(self.bodies[j].obj)
        PyMem_Free(self.bodies)
        PyMem_Free(self.hashes)

    cdef int tenant_slot(self, object tenant) except -1:
        """The body slot of a tenant, opened on first sight."""
        cdef object known = self.slot_of.get(tenant)
        cdef Body *b
        if known is not None:
            return known
        _grow(<void **>&self.bodies, &self.bodies_cap, self.nbodies + 1, sizeof(Body))
        b = &self.bodies[self.nbodies]
        memset(b, 0, sizeof(Body))
        _empty_body(b, BODY_START)
        self.slot_of[tenant] = self.nbodies
        self.tenants.append(tenant)
        self.nbodies += 1
        return self.nbodies - 1

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
                lo = math.ceil(lo) if lo > -math.inf else INT64_MIN - 1
            if lo >= INT64_MIN:
                self.has_lo = True
                self.lo = min(lo, INT64_MAX)
        if self.max_future_ms >= 0:
            hi = self.now + self.max_future_ms
            if type(hi) is float:
                hi = math.floor(hi) if hi < math.inf else INT64_MAX + 1
            if hi <= INT64_MAX:
                self.has_hi = True
                self.hi = hi
        return 0

    # -- body assembly ----------------------------------------------------------------------

    cdef int close_body(self, Py_ssize_t slot, Py_ssize_t carry_from=0,
                        Py_ssize_t carry_len=0) except -1:
        """Hands the open body of a slot over as it is and opens the next one (sized by
        _next_cap, allocated at its first write), starting with the carry_len bytes at
        carry_from (the datapoint that did not fit)."""
        cdef Body *b = &self.bodies[slot]
        cdef Body done = b[0]
        cdef bint full = carry_len or done.count >= self.max_body_dps
        _empty_body(b, _next_cap(&done, carry_len, full))
        if carry_len:
            try:
                _alloc_body(b, -b.cap)
            except MemoryError:
                b[0] = done  # the full body stays open as it was, without the datapoint
                raise
            memcpy(b.buf + 1, done.buf + carry_from, carry_len)
        done.buf[done.len] = 93  # ']'
        try:
            if done.cap - (done.len + 1) <= done.cap // KEEP_UNUSED_DIV:
                _bytes_end_at(done.obj, done.len + 1)
            else:
                _PyBytes_Resize(&done.obj, done.len + 1)
            body = <object>done.obj
        finally:
            Py_XDECREF_raw(done.obj)
        self.ready_bytes += done.len + 1
        self.ready_dps += done.count
        self.ready.append((body, done.count))
        self.ready_tenants.append(self.tenants[slot])
        return 0

    cdef int emit(self, Py_ssize_t slot, const char *mid, Py_ssize_t mlen,
                  const char *ntail, Py_ssize_t ntlen, const uint8_t *name, Py_ssize_t nlen,
                  bint esc, int64_t ms, const char *val, Py_ssize_t vlen) except -1:
        """Appends one datapoint to the open body of a tenant slot: mid is the TTL piece,
        ntail the name key (with the prefix unless name has it); each of them points to at
        least 64 readable bytes when shorter than 64, and val to at least 32."""
        cdef Body *b = &self.bodies[slot]
        cdef Py_ssize_t start, dplen
        cdef int tl
        cdef char *w
        _body_room(b, b.len + 1 + HEAD_LEN + 21 + max(64, mlen) + 32 + max(64, ntlen)
                   + (6 * nlen if esc else nlen) + 4)
        start = b.len + 1 if b.count else b.len
        w = b.buf + start
        memcpy(w, _HEAD, HEAD_LEN)
        w += HEAD_LEN
        # datapoints of one flush mostly share a timestamp: copy its digits from the
        # previous datapoint (long written, so no store-forwarding stall) instead of
        # formatting them again
        if ms == b.last_ms and b.last_tslen:
            memcpy(w, b.buf + b.last_ts_off, 24)
            w += b.last_tslen
        else:
            b.last_ts_off = w - b.buf
            b.last_tslen = ff_i64_to_dec(ms, w)
            b.last_ms = ms
            w += b.last_tslen
        if mlen <= 64:
            memcpy(w, mid, 64)
        else:
            memcpy(w, mid, mlen)
        w += mlen
        memcpy(w, val, 32)
        w += vlen
        if ntlen <= 64:
            memcpy(w, ntail, 64)
        else:
            memcpy(w, ntail, ntlen)
        w += ntlen
        if esc:
            w = _escape(w, name, nlen)
        else:
            memcpy(w, name, nlen)
            w += nlen
        w[0] = 34  # '"'
        w[1] = 125  # '}'
        w += 2
        dplen = w - (b.buf + start)
        if b.count and start + dplen + 1 > self.max_body_bytes:
            tl = b.last_tslen
            self.close_body(slot, start, dplen)
            start = 1
            b.last_ts_off = 1 + HEAD_LEN
            b.last_tslen = tl
        elif b.count:
            b.buf[b.len] = 44  # ','
        b.len = start + dplen
        b.count += 1
        b.accepted += 1
        self.n_accepted += 1
        if b.count >= self.max_body_dps:
            self.close_body(slot)
        return 0

    # -- routing ----------------------------------------------------------------------------

    cdef int route(self, const uint8_t *name, Py_ssize_t nlen, int64_t ms,
                   const char *val, Py_ssize_t vlen) except -2:
        """Emits a checked datapoint where the router sends it; DP_OK or the C_* drop."""
        cdef uint64_t h
        cdef Route *r = self.item_route
        cdef Py_ssize_t at, slot
        cdef Body *b
        if r == NULL:
            h = self.item_hash if self.has_item_hash else _hash_name(name, nlen)
            r = self.routes.find(name, nlen, h)
        if r == NULL:
            at = self.route_miss(name, nlen, h)
            if at < 0:
                return C_BUDGET
            r = <Route *>(self.routes.arena + at)
        if r.drop != DP_OK:
            if r.drop >= C_RULE:
                self.bodies[r.tenant].drops[r.drop - C_RULE] += 1
            return r.drop
        slot = r.tenant
        self.emit(slot, self.routes.mids + r.mid * MID_BYTES, r.mid_len,
                  &self.name_key_pad[0], NAME_KEY_LEN,
                  <const uint8_t *>r + sizeof(Route) + nlen, r.out_len, False,
                  ms, val, vlen)
        # Many tenants' bodies are written in turn, too many write streams for the CPU's own
        # prefetcher: fetch the lines this tenant's next datapoint will write.
        b = &self.bodies[slot]
        ff_prefetch_w(b.buf + b.len + 64)
        ff_prefetch_w(b.buf + b.len + 128)
        return DP_OK

    cdef Py_ssize_t route_miss(self, const uint8_t *name, Py_ssize_t nlen,
                               uint64_t h) except -2:
        """Asks the router about a name not in the cache and caches the answer; its record's
        offset, or -1 for a series_budget drop (counted here, never cached)."""
        cdef object decision = self.router(PyUnicode_DecodeUTF8(<const char *>name, nlen, NULL))
        cdef object drop = decision.drop
        cdef int slot = self.tenant_slot(decision.tenant)
        cdef int code, ns, mid = 0
        cdef bytes final, out = None
        self.bodies[slot].decided = True
        if drop is not None:
            code = _ROUTE_DROPS[drop]
            if code == C_BUDGET:
                self.bodies[slot].drops[C_BUDGET - C_RULE] += 1
                return -1
        else:
            try:
                final = PyUnicode_AsUTF8String(decision.name)
            except UnicodeEncodeError:
                final = b""  # lone surrogates: not a valid name
            ns = _name_state(<const uint8_t *>PyBytes_AS_STRING(final), len(final),
                             self.max_name - self.pfx_raw)
            if ns == NAME_BAD:
                code = C_NAME
            else:
                code = DP_OK
                out = self.pfx + (_escape_bytes(final) if ns == NAME_ESCAPE else final)
        self.routes.make_room()
        if code == DP_OK:
            mid = self.routes.mid_for(self.ttl if decision.ttl is None else decision.ttl)
        return self.routes.insert(name, nlen, h, out, slot, code, mid)

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
        if nstate == NAME_BAD:
            return C_NAME
        if vk == N_INT:
            vlen = ff_i64_to_dec(vi, vbuf)
        elif vk == N_FLOAT:
            vlen = _format_double(vd, vbuf)
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
        if self.router is not None:
            return self.route(name, nlen, ms, vbuf, vlen)
        self.emit(0, self.mid_p, self.mlen, self.ntail_p, self.ntlen, name, nlen,
                  nstate == NAME_ESCAPE, ms, vbuf, vlen)
        return DP_OK

    cdef int name_state(self, Py_ssize_t idx) noexcept:
        cdef Val *v = &self.dec.vals[idx]
        if v.name_state == 0:
            if v.kind != K_STR and v.kind != K_BYTES:
                v.name_state = NAME_BAD
            else:
                v.name_state = _name_state(self.dec.sptr(v), v.n, self.dec.name_limit)
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
        nv = &dec.vals[nidx]
        self.item_route = NULL
        if self.has_item_hash and (nv.kind == K_STR or nv.kind == K_BYTES):
            self.item_route = self.routes.find(dec.sptr(nv), nv.n, self.item_hash)
        ns = NAME_OK if self.item_route != NULL else self.name_state(nidx)
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
        self.item_route = NULL
        return 0

    cdef Py_ssize_t prefetch_routes(self, Val *rv) except -1:
        """Hashes every item's name into self.hashes and asks the CPU to fetch their cache
        slots, then their records, ahead of use: a stream of many distinct names otherwise
        waits on memory at every lookup. Returns the number of items."""
        cdef _Decoder dec = self.dec
        cdef _RouteCache rc = self.routes
        cdef Py_ssize_t j, c = rv.off if rv.kind == K_LIST else -1
        cdef Py_ssize_t mask = rc.nslots - 1
        cdef uint64_t h, slot
        cdef Val *it
        cdef Val *nv
        _grow(<void **>&self.hashes, &self.hashes_cap, rv.n, sizeof(uint64_t))
        for j in range(rv.n):
            if rv.kind == K_TUPLE:
                it = &dec.vals[dec.kids[rv.off + j]]
            else:
                it = &dec.vals[dec.cons[c].val]
                c = dec.cons[c].next
            h = 0
            if (it.kind == K_TUPLE or it.kind == K_LIST) and it.n >= 2:
                nv = &dec.vals[self.child(it, 0)]
                if nv.kind == K_STR or nv.kind == K_BYTES:
                    h = _hash_name(dec.sptr(nv), nv.n)
                    ff_prefetch(&rc.slots[h & <uint64_t>mask])
            self.hashes[j] = h
        for j in range(rv.n):
            slot = rc.slots[self.hashes[j] & <uint64_t>mask]
            if slot and (slot >> TAG_SHIFT) == (self.hashes[j] >> TAG_SHIFT):
                ff_prefetch(rc.arena + <Py_ssize_t>((slot & _PLACE_MASK) - 1) * 8)
                ff_prefetch(rc.arena + <Py_ssize_t>((slot & _PLACE_MASK) - 1) * 8 + 64)
        return rv.n

    cdef Py_ssize_t prefetch_lines(self, const uint8_t *b, Py_ssize_t pos,
                                   Py_ssize_t n) except -1:
        """prefetch_routes for the next LINE_BATCH lines from pos: self.hashes[k] is the hash
        of line k's first field (found as _split_fields finds it); returns where the batch
        ends."""
        cdef _RouteCache rc = self.routes
        cdef Py_ssize_t j, s0, end, k = 0, mask = rc.nslots - 1
        cdef uint64_t h, slot
        _grow(<void **>&self.hashes, &self.hashes_cap, LINE_BATCH, sizeof(uint64_t))
        while pos < n and k < LINE_BATCH:
            end = _line_end(b, pos, n)
            j = pos
            while j < end and _is_space(b[j]):
                j += 1
            s0 = j
            while j < end and not _is_space(b[j]):
                j += 1
            h = _hash_name(b + s0, j - s0)
            ff_prefetch(&rc.slots[h & <uint64_t>mask])
            self.hashes[k] = h
            k += 1
            pos = end + 1
        for j in range(k):
            slot = rc.slots[self.hashes[j] & <uint64_t>mask]
            if slot and (slot >> TAG_SHIFT) == (self.hashes[j] >> TAG_SHIFT):
                ff_prefetch(rc.arena + <Py_ssize_t>((slot & _PLACE_MASK) - 1) * 8)
                ff_prefetch(rc.arena + <Py_ssize_t>((slot & _PLACE_MASK) - 1) * 8 + 64)
        return pos

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
            if self.router is not None and self.routes.nslots:
                self.prefetch_routes(rv)
                rv = &dec.vals[root]
                c = rv.off if rv.kind == K_LIST else -1
                for j in range(rv.n):
                    self.item_hash = self.hashes[j]
                    self.has_item_hash = True
                    if rv.kind == K_TUPLE:
                        self.item(dec.kids[dec.vals[root].off + j])
                    else:
                        self.item(dec.cons[c].val)
                        c = dec.cons[c].next
                    rv = &dec.vals[root]
            elif rv.kind == K_TUPLE:
                for j in range(rv.n):
                    self.item(dec.kids[dec.vals[root].off + j])
            else:
                c = rv.off
                while c >= 0:
                    self.item(dec.cons[c].val)
                    c = dec.cons[c].next
        finally:
            self.has_item_hash = False
            self.item_route = NULL
            PyBuffer_Release(&view)
        return self.n_accepted - before

    def add_lines(self, data, bint final=False, now_ms=None):
        cdef Py_buffer view
        cdef const uint8_t *b
        cdef Py_ssize_t n, pos = 0, end, ln, nf, batch_end = 0, k = 0
        cdef Py_ssize_t fs[4]
        cdef Py_ssize_t fe[4]
        cdef int ns, vk, tk, r
        cdef int64_t vi = 0, ti = 0
        cdef double vd = 0.0, td = 0.0
        cdef bint routed = self.router is not None and self.routes.nslots > 0
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            b = <const uint8_t *>view.buf
            n = view.len if final else _complete_lines(b, view.len)
            if n == 0:
                return 0
            self.set_now(now_ms)
            self.has_item_hash = routed
            while pos < n:
                if routed:
                    if pos >= batch_end:
                        batch_end = self.prefetch_lines(b, pos, n)
                        k = 0
                    self.item_hash = self.hashes[k]
                    k += 1
                end = _line_end(b, pos, n)
                ln = end - pos
                if ln and b[end - 1] == 13:
                    ln -= 1
                nf = _split_fields(b, pos, pos + ln, fs, fe)
                if nf == 0:
                    pos = end + 1
                    continue
                self.n_lines += 1
                if nf != 3 or ln > self.max_line:
                    r = C_LINE
                else:
                    if routed:
                        self.item_route = self.routes.find(b + fs[0], fe[0] - fs[0],
                                                           self.item_hash)
                    ns = (NAME_OK if self.item_route != NULL
                          else _name_state(b + fs[0], fe[0] - fs[0], self.dec.name_limit))
                    vk = tk = N_INT
                    if ns != NAME_BAD:
                        vk = _parse_text(b + fs[1], fe[1] - fs[1], &vi, &vd, False)
                        if not self.overwrite and (vk == N_INT or vk == N_FLOAT):
                            tk = _parse_text(b + fs[2], fe[2] - fs[2], &ti, &td, False)
                    r = self.datapoint(b + fs[0], fe[0] - fs[0], ns, vk, vi, vd, tk, ti, td)
                    self.item_route = NULL
                if r != DP_OK:
                    self.drops[r] += 1
                    self.rejects.append((DROP_REASONS[r], PyBytes_FromStringAndSize(
                        <const char *>b + pos, min(ln, SAMPLE_BYTES))))
                pos = end + 1
            return n
        finally:
            self.has_item_hash = False
            self.item_route = NULL
            PyBuffer_Release(&view)

    def take(self, bint partial=True):
        return [body for body, _ in self.take_counted(partial)]

    def take_counted(self, bint partial=True):
        cdef list out
        cdef Py_ssize_t j
        if partial:
            for j in range(self.nbodies):
                if self.bodies[j].count:
                    self.close_body(j)
        out = self.ready
        self.ready = []
        self.ready_tenants = []
        self.ready_bytes = 0
        self.ready_dps = 0
        return out

    def take_routed(self, bint partial=True):
        cdef list tenants, bodies
        cdef Py_ssize_t j
        if partial:
            for j in range(self.nbodies):
                if self.bodies[j].count:
                    self.close_body(j)
        tenants = self.ready_tenants
        bodies = self.take_counted(False)
        return [(t, body, n) for t, (body, n) in zip(tenants, bodies)]

    cdef int use_router(self, object router) except -1:
        self.router = router
        self.routes.clear()
        # a name as received must fit with the prefix; with a router only its final name
        self.dec.name_limit = self.max_name - (self.pfx_raw if router is None else 0)
        return 0

    def set_router(self, router):
        self.use_router(router)

    def counters_by_tenant(self):
        cdef Py_ssize_t j, k
        cdef Body *b
        out = {}
        for j in range(self.nbodies):
            b = &self.bodies[j]
            if b.decided:
                d = {"accepted": b.accepted}
                for k in range(4):
                    d[_TENANT_COUNTERS[k]] = b.drops[k]
                out[self.tenants[j]] = d
        return out

    @property
    def route_cache_names(self):
        return self.routes.count

    @property
    def route_cache_bytes(self):
        return self.routes.allocated()

    @property
    def ready_bodies(self):
        return len(self.ready)

    @property
    def pending_bytes(self):
        cdef Py_ssize_t j, n = self.ready_bytes
        for j in range(self.nbodies):
            if self.bodies[j].count:
                n += self.bodies[j].len + 1
        return n

    @property
    def held_bytes(self):
        cdef Py_ssize_t j, n = self.ready_bytes
        for j in range(self.nbodies):
            if self.bodies[j].obj != NULL:  # an open body not written to yet holds nothing
                n += self.bodies[j].cap
        return n

    @property
    def pending_datapoints(self):
        cdef Py_ssize_t j, n = self.ready_dps
        for j in range(self.nbodies):
            n += self.bodies[j].count
        return n

    def counters(self):
        d = {"accepted": self.n_accepted, "frames": self.n_frames, "lines": self.n_lines}
        for j, name in enumerate(DROP_REASONS):
            d[name] = self.drops[j]
        return d

    def take_rejects(self):
        out = list(self.rejects)
        self.rejects.clear()
        return out
