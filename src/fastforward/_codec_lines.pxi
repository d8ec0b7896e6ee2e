# Plaintext lines: where a line ends and where its fields are (included by _codec.pyx; the
# Encoder checks and emits the fields).

from libc.stdint cimport uint8_t
from libc.string cimport memchr


cdef inline Py_ssize_t _complete_lines(const uint8_t *b, Py_ssize_t n) noexcept nogil:
    """Bytes up to and including the last newline of b[0:n] (0 when there is none)."""
    while n > 0 and b[n - 1] != 10:
        n -= 1
    return n


cdef inline Py_ssize_t _line_end(const uint8_t *b, Py_ssize_t pos, Py_ssize_t n) noexcept nogil:
    """Offset of the newline ending the line at pos, or n for a last line without one."""
    cdef const uint8_t *nl = <const uint8_t *>memchr(b + pos, 10, n - pos)
    return n if nl == NULL else nl - b


cdef inline int _split_fields(const uint8_t *b, Py_ssize_t s, Py_ssize_t e,
                              Py_ssize_t *fs, Py_ssize_t *fe) noexcept nogil:
    """Splits b[s:e] at ASCII whitespace like bytes.split(): returns the number of fields and
    stores the start and end of the first four in fs and fe."""
    cdef int nf = 0
    cdef Py_ssize_t j = s
    while True:
        while j < e and _is_space(b[j]):
            j += 1
        if j >= e:
            return nf
        if nf < 4:
            fs[nf] = j
        while j < e and not _is_space(b[j]):
            j += 1
        if nf < 4:
            fe[nf] = j
        nf += 1
