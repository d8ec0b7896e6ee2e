# Small byte-level helpers every part of the compiled codec uses (included by _codec.pyx).

from cpython.mem cimport PyMem_Realloc
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy


cdef inline int _grow(void **p, Py_ssize_t *cap, Py_ssize_t need, size_t size) except -1:
    """Makes room for `need` items of `size` bytes at *p (capacity doubles, from 64)."""
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
    """ASCII whitespace, as bytes.split() and bytes.strip() see it."""
    return c == 32 or (9 <= c <= 13)


cdef inline uint64_t _le(const uint8_t *p, Py_ssize_t width) noexcept nogil:
    """The unsigned little-endian integer in p[0:width] (width 0 to 8); the pickle format's
    every binary length, index and integer. Inlined with a constant width, the compiler
    unrolls the loop."""
    cdef uint64_t u = 0
    cdef Py_ssize_t j
    for j in range(width - 1, -1, -1):
        u = (u << 8) | p[j]
    return u


cdef inline double _be_double(const uint8_t *p) noexcept nogil:
    """The big-endian IEEE 754 double in p[0:8] (BINFLOAT, the one big-endian argument)."""
    cdef uint64_t u = 0
    cdef Py_ssize_t j
    cdef double d
    for j in range(8):
        u = (u << 8) | p[j]
    memcpy(&d, &u, 8)
    return d
