# The routing decision cache: metric name bytes to a Route, in C (included by _codec.pyx).
#
# Open addressing with linear probing over a power-of-two table (load at most one half) whose
# slots hold a record's place in one arena and 24 bits of its hash, so a probe past another
# name rarely touches memory elsewhere; a record is a Route followed by the name's bytes and
# the escaped prefix + final name, so a hit reads one contiguous run and makes no Python
# object. When `limit` names are stored the whole cache is forgotten at once (the bound is what
# matters; a hot set then costs one router call per name again). Memory per name: 40 bytes of
# Route, 16-32 bytes of table, the name's bytes and the escaped final name with the prefix,
# rounded up to 8.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, uint8_t, uint64_t
from libc.string cimport memcmp, memcpy, memset, strlen

import os

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define ff_prefetch(p) __builtin_prefetch(p)
    #define ff_prefetch_w(p) __builtin_prefetch((p), 1)
    #else
    #define ff_prefetch(p) ((void)(p))
    #define ff_prefetch_w(p) ((void)(p))
    #endif
    """
    void ff_prefetch(const void *p) noexcept nogil
    void ff_prefetch_w(const void *p) noexcept nogil

DEF MIN_SLOTS = 1024
DEF TAG_SHIFT = 40  # slot: hash >> 40 above, (record offset / 8) + 1 below
DEF MID_BYTES = 64

# Hash seed drawn at import: senders choose the names, so the table positions must not be
# predictable from them alone (a flood of colliding names would make every lookup a scan).
cdef uint64_t _PLACE_MASK = (<uint64_t>1 << TAG_SHIFT) - 1
cdef uint64_t _HASH_SEED = int.from_bytes(os.urandom(8), "little")


cdef inline uint64_t _mix(uint64_t h, uint64_t x) noexcept nogil:
    h = (h ^ x) * <uint64_t>0xBF58476D1CE4E5B9
    return h ^ (h >> 31)


cdef inline uint64_t _hash_name(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = _HASH_SEED ^ (<uint64_t>n * <uint64_t>0x9E3779B97F4A7C15)
    cdef uint64_t x
    while n >= 8:
        memcpy(&x, p, 8)
        h = _mix(h, x)
        p += 8
        n -= 8
    if n:
        x = 0
        memcpy(&x, p, n)
        h = _mix(h, x)
    h ^= h >> 29
    h *= <uint64_t>0x94D049BB133111EB
    return h ^ (h >> 32)


@cython.final
cdef class _RouteCache:
    cdef uint64_t *slots     # 0: empty
    cdef Py_ssize_t nslots   # a power of two, or 0 before the first insert
    cdef Py_ssize_t count, limit
    cdef char *arena         # records, each 8-byte aligned
    cdef Py_ssize_t alen, acap
    cdef char *mids          # MID_BYTES per piece, zero-padded (copied with a fixed-size memcpy)
    cdef Py_ssize_t nmids, mcap
    cdef dict mid_of         # ttl -> index in mids

    def __cinit__(self, Py_ssize_t limit):
        self.limit = limit
        self.mid_of = {}

    def __dealloc__(self):
        PyMem_Free(self.slots)
        PyMem_Free(self.arena)
        PyMem_Free(self.mids)

    cdef inline Route *find(self, const uint8_t *key, Py_ssize_t n, uint64_t h) noexcept:
        cdef Py_ssize_t i, mask = self.nslots - 1
        cdef uint64_t s, tag = h >> TAG_SHIFT
        cdef Route *r
        if self.nslots == 0:
            return NULL
        i = <Py_ssize_t>(h & <uint64_t>mask)
        while True:
            s = self.slots[i]
            if s == 0:
                return NULL
            if (s >> TAG_SHIFT) == tag:
                r = <Route *>(self.arena + <Py_ssize_t>((s & _PLACE_MASK) - 1) * 8)
                if (r.hash == h and r.key_len == n
                        and memcmp(<char *>r + sizeof(Route), key, n) == 0):
                    return r
            i = (i + 1) & mask

    cdef Py_ssize_t allocated(self) noexcept:
        """Bytes the cache holds from the heap (a cleared cache keeps them for the next names)."""
        return self.nslots * <Py_ssize_t>sizeof(uint64_t) + self.acap + self.mcap * MID_BYTES

    cdef void clear(self) noexcept:
        self.count = 0
        self.alen = 0
        self.nmids = 0
        self.mid_of.clear()
        if self.nslots:
            memset(self.slots, 0, self.nslots * sizeof(uint64_t))

    cdef int make_room(self) except -1:
        """Forgets every entry when the cache holds `limit` names (call before mid_for)."""
        if self.count >= self.limit:
            self.clear()
        return 0

    cdef int mid_for(self, object ttl) except -1:
        """Index of the ',"ttlInSeconds":<ttl>,"metricValue":' piece for ttl."""
        cdef bytes piece
        cdef object known = self.mid_of.get(ttl)
        if known is not None:
            return known
        if type(ttl) is not int:
            raise TypeError(f"router returned ttl {ttl!r}, not an int")
        piece = b',"ttlInSeconds":' + str(ttl).encode() + b',"metricValue":'
        if len(piece) > MID_BYTES:
            raise ValueError(f"router returned ttl {ttl!r}, too long to write")
        _grow(<void **>&self.mids, &self.mcap, self.nmids + 1, MID_BYTES)
        memset(self.mids + self.nmids * MID_BYTES, 0, MID_BYTES)
        memcpy(self.mids + self.nmids * MID_BYTES, PyBytes_AS_STRING(piece), len(piece))
        self.mid_of[ttl] = self.nmids
        self.nmids += 1
        return self.nmids - 1

    cdef inline void place(self, Route *r) noexcept:
        cdef Py_ssize_t mask = self.nslots - 1
        cdef Py_ssize_t i = <Py_ssize_t>(r.hash & <uint64_t>mask)
        while self.slots[i]:
            i = (i + 1) & mask
        self.slots[i] = ((r.hash >> TAG_SHIFT) << TAG_SHIFT) | <uint64_t>(
            (<char *>r - self.arena) // 8 + 1)

    cdef int rehash(self, Py_ssize_t nslots) except -1:
        cdef uint64_t *s = <uint64_t *>PyMem_Malloc(nslots * sizeof(uint64_t))
        cdef Py_ssize_t pos = 0
        cdef Route *r
        if s == NULL:
            raise MemoryError()
        memset(s, 0, nslots * sizeof(uint64_t))
        PyMem_Free(self.slots)
        self.slots = s
        self.nslots = nslots
        while pos < self.alen:
            r = <Route *>(self.arena + pos)
            self.place(r)
            pos += _record_size(r.key_len, r.out_len)
        return 0

    cdef Py_ssize_t insert(self, const uint8_t *key, Py_ssize_t n, uint64_t h, bytes out,
                           int tenant, int drop, int mid) except -1:
        """Stores a decision for a name not in the cache (make_room first); its record's
        offset in the arena."""
        cdef Py_ssize_t olen = len(out) if out is not None else 0
        cdef Py_ssize_t at = self.alen, size = _record_size(n, olen)
        cdef Route *r
        if <uint64_t>(at + size) > _PLACE_MASK * 8:
            raise MemoryError("route cache arena full")
        _grow(<void **>&self.arena, &self.acap, at + size, 1)
        r = <Route *>(self.arena + at)
        r.hash = h
        r.key_len = n
        r.out_len = olen
        r.tenant = tenant
        r.drop = drop
        r.mid = mid
        r.mid_len = 0
        if drop == DP_OK:
            r.mid_len = <int32_t>strlen(self.mids + mid * MID_BYTES)
        memcpy(<char *>r + sizeof(Route), key, n)
        if olen:
            memcpy(<char *>r + sizeof(Route) + n, PyBytes_AS_STRING(out), olen)
        self.alen = at + size
        self.count += 1
        if 2 * self.count > self.nslots:
            self.rehash(max(MIN_SLOTS, 2 * self.nslots))  # places every record, r included
        else:
            self.place(r)
        return at


cdef inline Py_ssize_t _record_size(Py_ssize_t key_len, Py_ssize_t out_len) noexcept nogil:
    return (<Py_ssize_t>sizeof(Route) + key_len + out_len + 7) & ~(<Py_ssize_t>7)
