# cython: language_level=3
"""C declarations of the compiled codec: the C helpers it calls, its constants and its structs.

`_codec.pyx` and the `_codec_*.pxi` parts it includes see everything declared here. The limits
and the drop-reason codes repeat numbers that `_codec_rules` defines for both implementations;
`_codec.pyx` compares them at import and refuses to load if they differ.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

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
    double PyOS_string_to_double_raw "PyOS_string_to_double"(
        const char *s, char **endptr, void *overflow_exception) except? -1.0
    void PyMem_Free_raw "PyMem_Free"(void *p)
    int Py_DTSF_ADD_DOT_0
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    # bodies are written straight into bytes objects the encoder owns until they close
    ctypedef struct PyObject
    PyObject *PyBytes_New "PyBytes_FromStringAndSize"(const char *s, Py_ssize_t n) except NULL
    int _PyBytes_Resize(PyObject **b, Py_ssize_t n) except -1
    char *PyBytes_DATA "PyBytes_AS_STRING"(PyObject *b)
    void Py_XDECREF_raw "Py_XDECREF"(PyObject *o)

# Limits; the same numbers as _codec_rules (checked at import).
cdef enum:
    MAX_DEPTH = 64
    MAX_TEXT_DIGITS = 100
    MAX_LONG_BYTES = 64
    MAX_MEMO_DIGITS = 18
    MAX_REJECTS = 64
    SAMPLE_BYTES = 256

# Kind of a decoded pickle value.
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

# Outcome of number parsing (values and timestamps).
cdef enum:
    N_INT = 0
    N_FLOAT = 1
    N_BIG = 2
    N_NONE = 3
    N_NAN = 4
    N_INF = 5
    N_BAD = 6

# Drop counters, indices into _codec_rules.DROP_REASONS (checked at import). DP_OK: no drop.
cdef enum:
    DP_OK = -1
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
    C_RULE = 10
    C_BUDGET = 11
    C_BAD_TAGS = 12
    C_EMPTY_NAME = 13
    C_COUNT = 14

# Verdict on a metric name (0 in Val.name_state: not looked at yet).
cdef enum:
    NAME_OK = 1
    NAME_ESCAPE = 2
    NAME_BAD = 3

# Flags of a byte string scanned by _classify.
cdef enum:
    F_BAD = 1    # not UTF-8, even with surrogates allowed
    F_SURR = 2   # contains an encoded surrogate (valid for "surrogatepass" only)
    F_WS = 4     # contains ASCII whitespace
    F_ESC = 8    # contains a byte JSON must escape

# One decoded pickle value in the decoder's pool.
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

# A list cell: pool index of the item, index of the next cell (-1 at the end).
ctypedef struct Cons:
    Py_ssize_t val
    Py_ssize_t next

# One tenant's open body: the JSON array being filled in place in a bytes object (handed over
# as it is when the body closes, so no copy), the timestamp digits last written in it
# (copied for the next datapoint with the same time), and that tenant's counters.
ctypedef struct Body:
    PyObject *obj       # the bytes object being filled (owned), NULL until the first write
    char *buf           # obj's data (NULL with it)
    # cap: obj's size; while obj is NULL, minus the size it gets at the first write
    Py_ssize_t len, cap, count
    int64_t last_ms
    Py_ssize_t last_ts_off
    int last_tslen
    bint decided        # the router named this tenant at least once (counters_by_tenant)
    int64_t accepted
    int64_t drops[4]    # rule, series_budget, bad_tags, empty_name (index: C_* - C_RULE)

# A cached routing decision, a record in the route cache's arena followed by the name's bytes
# (the key) and, unless the decision drops, the escaped prefix + final name; mid indexes the
# cache's table of ',"ttlInSeconds":N,"metricValue":' pieces.
ctypedef struct Route:
    uint64_t hash
    Py_ssize_t key_len
    Py_ssize_t out_len
    int32_t tenant      # body slot
    int32_t drop        # DP_OK or a C_* reason
    int32_t mid
    int32_t mid_len
