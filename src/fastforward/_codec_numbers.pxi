# Numbers: decimal text to int64 or double (string values, timestamps, plaintext fields, the
# FLOAT opcode), and the glue to the float formatter of _floatrepr.h (included by _codec.pyx).

from libc.math cimport isinf
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, strlen

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

cdef double _NAN_VALUE = float("nan")
cdef double _INF_VALUE = float("inf")


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


cdef inline int _format_double(double x, char *out) except -1:
    """repr(x) into out (at least 32 bytes), returns its length: the fast formatter of
    _floatrepr.h, or CPython's own where that one defers."""
    cdef int n = ff_double_repr(x, out)
    cdef char *s
    if n >= 0:
        return n
    s = PyOS_double_to_string(x, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    n = <int>strlen(s)
    memcpy(out, s, n)
    PyMem_Free_raw(s)
    return n
