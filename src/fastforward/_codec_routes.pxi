# The routing decision cache: metric name bytes to a Route, in C (included by _codec.pyx).
#
# Open addressing with linear probing over a power-of-two table of entry numbers (load at most
# one half); a hit compares the hash, the length and the bytes, so it makes no Python object.
# Entries live in one array and their bytes in one arena; when `limit` names are stored the
# whole cache is forgotten at once (the bound is what matters, and a full reload of a hot set
# costs one router call per name). Memory per name: the Route (56 bytes), 8-16 bytes of table,
# the name's bytes and the escaped final name with the prefix.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, uint8_t, uint64_t
from libc.string cimport memcmp, memcpy, memset, strlen

import os

DEF MIN_SLOTS = 1024
DEF MID_BYTES = 64

# Hash seed drawn at import: senders choose the names, so the table positions must not be
# predictable from them alone (a flood of colliding names would make every lookup a scan).
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
    cdef Route *entries
    cdef Py_ssize_t count, ecap, limit
    cdef int32_t *slots      # entry index + 1; 0: empty
    cdef Py_ssize_t nslots   # a power of two, or 0 before the first insert
    cdef char *arena
    cdef Py_ssize_t alen, acap
    cdef char *mids          # MID_BYTES per piece, zero-padded (copied with a fixed-size memcpy)
    cdef Py_ssize_t nmids, mcap
    cdef dict mid_of         # ttl -> index in mids

    def __cinit__(self, Py_ssize_t limit):
        self.limit = limit
        self.mid_of = {}

    def __dealloc__(self):
        PyMem_Free(self.entries)
        PyMem_Free(self.slots)
        PyMem_Free(self.arena)
        PyMem_Free(self.mids)

    cdef inline Route *find(self, const uint8_t *key, Py_ssize_t n, uint64_t h) noexcept:
        cdef Py_ssize_t i, mask = self.nslots - 1
        cdef int32_t e
        cdef Route *r
        if self.nslots == 0:
            return NULL
        i = <Py_ssize_t>(h & <uint64_t>mask)
        while True:
            e = self.slots[i]
            if e == 0:
                return NULL
            r = &self.entries[e - 1]
            if (r.hash == h and r.key_len == n
                    and memcmp(self.arena + r.key_off, key, n) == 0):
                return r
            i = (i + 1) & mask

    cdef void clear(self) noexcept:
        self.count = 0
        self.alen = 0
        self.nmids = 0
        self.mid_of.clear()
        if self.nslots:
            memset(self.slots, 0, self.nslots * sizeof(int32_t))

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

    cdef int rehash(self, Py_ssize_t nslots) except -1:
        cdef int32_t *s = <int32_t *>PyMem_Malloc(nslots * sizeof(int32_t))
        cdef Py_ssize_t j, i, mask = nslots - 1
        if s == NULL:
            raise MemoryError()
        memset(s, 0, nslots * sizeof(int32_t))
        for j in range(self.count):
            i = <Py_ssize_t>(self.entries[j].hash & <uint64_t>mask)
            while s[i]:
                i = (i + 1) & mask
            s[i] = <int32_t>(j + 1)
        PyMem_Free(self.slots)
        self.slots = s
        self.nslots = nslots
        return 0

    cdef Py_ssize_t insert(self, const uint8_t *key, Py_ssize_t n, uint64_t h, bytes out,
                           int tenant, int drop, int mid) except -1:
        """Stores a decision for a name not in the cache (make_room first); its index."""
        cdef Py_ssize_t i, olen = len(out) if out is not None else 0
        cdef Route *r
        if 2 * (self.count + 1) > self.nslots:
            self.rehash(max(MIN_SLOTS, 2 * self.nslots))
        _grow(<void **>&self.entries, &self.ecap, self.count + 1, sizeof(Route))
        _grow(<void **>&self.arena, &self.acap, self.alen + n + olen, 1)
        r = &self.entries[self.count]
        r.hash = h
        r.key_off = self.alen
        r.key_len = n
        memcpy(self.arena + self.alen, key, n)
        self.alen += n
        r.out_off = self.alen
        r.out_len = olen
        if olen:
            memcpy(self.arena + self.alen, PyBytes_AS_STRING(out), olen)
            self.alen += olen
        r.tenant = tenant
        r.drop = drop
        r.mid = mid
        r.mid_len = 0
        if drop == DP_OK:
            r.mid_len = <int32_t>strlen(self.mids + mid * MID_BYTES)
        i = <Py_ssize_t>(h & <uint64_t>(self.nslots - 1))
        while self.slots[i]:
            i = (i + 1) & (self.nslots - 1)
        self.count += 1
        self.slots[i] = <int32_t>self.count
        return self.count - 1
