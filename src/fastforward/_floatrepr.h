/* Decimal formatting for the codec's hot path: integers, and doubles in the exact form of
 * Python's repr(float) (shortest round-trip digits, ties to even, repr's layout rules).
 *
 * ff_double_repr() is exact for the doubles it accepts and returns -1 for the rest (NaN, inf,
 * |v| >= 1e16, tiny values and subnormals); the caller then falls back to
 * PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL), which is repr itself.
 *
 * Method: v = c * 2^q with q < 0. Pick k with 1 < 2^q * 10^-k < 10, so that the rounding
 * interval of v scaled by 10^-k is wider than 1 and narrower than 10: it contains at least one
 * integer and at most one multiple of 10. With -k <= 21 and c < 2^55 the scaled interval is
 * computed exactly in 128-bit integers, so every comparison below is exact (no error analysis
 * needed). A multiple of 10 inside the interval is the shortest output; otherwise the closer
 * of floor(vb) and floor(vb) + 1 that lies inside, ties to even.
 */
#ifndef FF_FLOATREPR_H
#define FF_FLOATREPR_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__SIZEOF_INT128__)
#define FF_HAVE_INT128 1
typedef unsigned __int128 ff_u128;
#else
/* No 128-bit integers (MSVC): the fast paths below are compiled out and every double goes
 * through CPython's own formatting and parsing. */
#define FF_HAVE_INT128 0
#endif

static const char ff_digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Exactly 8 digits of x < 10^8: two independent 4-digit halves, pairs from a table. */
static inline void ff_write8(uint32_t x, char *out)
{
    uint32_t a = x / 10000, b = x % 10000;
    memcpy(out, ff_digit_pairs + 2 * (a / 100), 2);
    memcpy(out + 2, ff_digit_pairs + 2 * (a % 100), 2);
    memcpy(out + 4, ff_digit_pairs + 2 * (b / 100), 2);
    memcpy(out + 6, ff_digit_pairs + 2 * (b % 100), 2);
}

/* The digits of x < 10^8 without leading zeros; returns the count (1..8). */
static inline int ff_write_small(uint32_t x, char *out)
{
    if (x >= 10000000) {
        ff_write8(x, out);
        return 8;
    }
    int n = x < 10000 ? (x < 100 ? (x < 10 ? 1 : 2) : (x < 1000 ? 3 : 4))
                      : (x < 1000000 ? (x < 100000 ? 5 : 6) : (x < 10000000 ? 7 : 8));
    char *p = out + n;
    while (x >= 100) {
        p -= 2;
        memcpy(p, ff_digit_pairs + 2 * (x % 100), 2);
        x /= 100;
    }
    if (x >= 10) {
        p -= 2;
        memcpy(p, ff_digit_pairs + 2 * x, 2);
    } else {
        *--p = (char)('0' + x);
    }
    return n;
}

/* Writes the decimal digits of v at out; returns the number of bytes (1..20). */
static inline int ff_u64_to_dec(uint64_t v, char *out)
{
    if (v < 100000000)
        return ff_write_small((uint32_t)v, out);
    if (v < 10000000000000000ULL) {
        int n = ff_write_small((uint32_t)(v / 100000000), out);
        ff_write8((uint32_t)(v % 100000000), out + n);
        return n + 8;
    }
    uint64_t top = v / 10000000000000000ULL, rest = v % 10000000000000000ULL;
    int n = ff_write_small((uint32_t)top, out);
    ff_write8((uint32_t)(rest / 100000000), out + n);
    ff_write8((uint32_t)(rest % 100000000), out + n + 8);
    return n + 16;
}

static inline int ff_i64_to_dec(int64_t v, char *out)
{
    if (v < 0) {
        out[0] = '-';
        return 1 + ff_u64_to_dec((uint64_t)0 - (uint64_t)v, out + 1);
    }
    return ff_u64_to_dec((uint64_t)v, out);
}

static int ff_pow10_ready = 0;
#if FF_HAVE_INT128
static ff_u128 ff_pow10_128[22];
#endif

static void ff_floatrepr_init(void)
{
#if FF_HAVE_INT128
    ff_u128 p = 1;
    for (int i = 0; i < 22; i++) {
        ff_pow10_128[i] = p;
        p *= 10;
    }
    ff_pow10_ready = 1;
#endif
}

/* Lays out digits d * 10^e10 the way repr does; returns the length. */
static int ff_layout(uint64_t d, int e10, char *p)
{
    char dig[24];
    int n, x, i;
    while (d % 10 == 0 && d != 0) {
        d /= 10;
        e10++;
    }
    n = ff_u64_to_dec(d, dig);
    x = n - 1 + e10; /* decimal exponent of the first digit */
    char *start = p;
    if (x < -4 || x >= 16) {
        *p++ = dig[0];
        if (n > 1) {
            *p++ = '.';
            memcpy(p, dig + 1, (size_t)(n - 1));
            p += n - 1;
        }
        *p++ = 'e';
        if (x < 0) {
            *p++ = '-';
            x = -x;
        } else {
            *p++ = '+';
        }
        if (x < 10)
            *p++ = '0';
        p += ff_u64_to_dec((uint64_t)x, p);
    } else if (e10 >= 0) {
        memcpy(p, dig, (size_t)n);
        p += n;
        for (i = 0; i < e10; i++)
            *p++ = '0';
        *p++ = '.';
        *p++ = '0';
    } else if (x >= 0) {
        memcpy(p, dig, (size_t)(x + 1));
        p += x + 1;
        *p++ = '.';
        memcpy(p, dig + x + 1, (size_t)(n - x - 1));
        p += n - x - 1;
    } else {
        *p++ = '0';
        *p++ = '.';
        for (i = 0; i < -x - 1; i++)
            *p++ = '0';
        memcpy(p, dig, (size_t)n);
        p += n;
    }
    return (int)(p - start);
}

/* repr(v) into out (at least 32 bytes); returns the length, or -1 when the caller must fall
 * back to PyOS_double_to_string. */
static int ff_double_repr(double v, char *out)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    int bexp = (int)((bits >> 52) & 0x7ff);
    if (bexp == 0x7ff)
        return -1;
    char *p = out;
    if (bits >> 63) {
        *p++ = '-';
        v = -v;
    }
    if (v < 1e16 && v == (double)(int64_t)v) {
        /* integral: below 1e16 repr prints every digit of the integer, plus ".0" */
        p += ff_u64_to_dec((uint64_t)(int64_t)v, p);
        *p++ = '.';
        *p++ = '0';
        return (int)(p - out);
    }
#if !FF_HAVE_INT128
    return -1;
#else
    if (bexp == 0 || !ff_pow10_ready)
        return -1;
    uint64_t c = (bits & ((1ULL << 52) - 1)) | (1ULL << 52);
    int q = bexp - 1075;
    if (q >= 0 || q < -69)
        return -1;
    int irregular = (c == (1ULL << 52)) && bexp > 1;
    /* k = floor(log10(2^q)) (or of 3/4 * 2^q); the width test below catches any slip */
    int k = irregular ? (int)floor(q * 0.30102999566398120 - 0.12493873660829995)
                      : (q * 78913) >> 18;
    if (k > 0 || -k > 21)
        return -1;
    ff_u128 P = ff_pow10_128[-k];
    int S = 2 - q; /* scaled value = X * P / 2^S */
    ff_u128 N = (ff_u128)(c << 2) * P;
    ff_u128 L = N - (irregular ? P : P << 1); /* (4c - 1 or 2) * P */
    ff_u128 R = N + (P << 1);                 /* (4c + 2) * P */
    ff_u128 one = (ff_u128)1 << S;
    /* the interval must be wider than 1 and narrower than 10 (else the k estimate was off) */
    if (R - L <= one || R - L >= 10 * one)
        return -1;
    int incl = (c & 1) == 0; /* round-half-even: the bounds belong to v when c is even */
    uint64_t s = (uint64_t)(N >> S);
    uint64_t sp = s - s % 10;
    ff_u128 T;
    uint64_t d;
    int lo_ok, hi_ok;
    T = (ff_u128)sp << S;
    lo_ok = T > L || (incl && T == L);
    T = (ff_u128)(sp + 10) << S;
    hi_ok = T < R || (incl && T == R);
    if (lo_ok || hi_ok) {
        if (lo_ok && hi_ok) {
            ff_u128 mid = (ff_u128)(2 * sp + 10) << S;
            d = (2 * N < mid) ? sp : (2 * N > mid) ? sp + 10 : ((sp / 10) % 2 == 0 ? sp : sp + 10);
        } else {
            d = lo_ok ? sp : sp + 10;
        }
    } else {
        T = (ff_u128)s << S;
        lo_ok = T > L || (incl && T == L);
        T = (ff_u128)(s + 1) << S;
        hi_ok = T < R || (incl && T == R);
        if (lo_ok && hi_ok) {
            ff_u128 mid = (ff_u128)(2 * s + 1) << S;
            d = (2 * N < mid) ? s : (2 * N > mid) ? s + 1 : ((s % 2 == 0) ? s : s + 1);
        } else if (lo_ok) {
            d = s;
        } else if (hi_ok) {
            d = s + 1;
        } else {
            return -1;
        }
    }
    p += ff_layout(d, k, p);
    return (int)(p - out);
#endif
}

/* Decimal text (already matched to [+-]?(digits[.digits]|.digits)([eE][+-]?digits)?) to the
 * correctly rounded double, for up to 19 significant digits and a decimal exponent in
 * [-21, 19]: m * 10^e is computed as an exact 128-bit quotient plus a sticky remainder, then
 * rounded once to 53 bits (ties to even). Returns 0 where the caller must use CPython's strtod.
 */
#if !FF_HAVE_INT128
static int ff_decimal_to_double(const char *p, size_t n, double *out)
{
    (void)p;
    (void)n;
    (void)out;
    return 0;
}
#else
static inline int ff_bitlen128(ff_u128 x)
{
    uint64_t hi = (uint64_t)(x >> 64);
    if (hi)
        return 128 - __builtin_clzll(hi);
    uint64_t lo = (uint64_t)x;
    return lo ? 64 - __builtin_clzll(lo) : 0;
}

static int ff_decimal_to_double(const char *p, size_t n, double *out)
{
    size_t i = 0;
    int neg = 0, nd = 0, e10 = 0;
    uint64_t m = 0;
    if (!ff_pow10_ready || n == 0)
        return 0;
    if (p[0] == '+' || p[0] == '-') {
        neg = p[0] == '-';
        i++;
    }
    for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
        if (m == 0 && p[i] == '0')
            continue;
        if (nd >= 19)
            return 0;
        m = m * 10 + (uint64_t)(p[i] - '0');
        nd++;
    }
    if (i < n && p[i] == '.') {
        for (i++; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
            e10--;
            if (m == 0 && p[i] == '0')
                continue;
            if (nd >= 19)
                return 0;
            m = m * 10 + (uint64_t)(p[i] - '0');
            nd++;
        }
    }
    if (i < n && (p[i] | 0x20) == 'e') {
        int eneg = 0, ex = 0;
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) {
            eneg = p[i] == '-';
            i++;
        }
        for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
            if (ex > 100000)
                return 0;
            ex = ex * 10 + (p[i] - '0');
        }
        e10 += eneg ? -ex : ex;
    }
    if (i != n)
        return 0;
    if (m == 0) {
        *out = neg ? -0.0 : 0.0;
        return 1;
    }
    if (e10 < -21 || e10 > 19)
        return 0;
    ff_u128 q, r = 0;
    int s = 0;
    if (e10 >= 0) {
        q = (ff_u128)m * ff_pow10_128[e10];
    } else {
        ff_u128 P = ff_pow10_128[-e10];
        s = 127 - (64 - __builtin_clzll(m));
        ff_u128 N = (ff_u128)m << s;
        q = N / P;
        r = N - q * P;
    }
    int qb = ff_bitlen128(q);
    uint64_t mant;
    int drop = 0;
    if (qb <= 53) {
        mant = (uint64_t)q;
    } else {
        drop = qb - 53;
        mant = (uint64_t)(q >> drop);
        ff_u128 rest = q & (((ff_u128)1 << drop) - 1);
        ff_u128 half = (ff_u128)1 << (drop - 1);
        if (rest > half || (rest == half && (r != 0 || (mant & 1))))
            mant++;
    }
    int x = drop - s; /* result = mant * 2^x, a normal double here */
    uint64_t scale_bits = (uint64_t)(1023 + x) << 52;
    double scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    double v = (double)mant * scale;
    *out = neg ? -v : v;
    return 1;
}

#endif /* FF_HAVE_INT128 */

/* Wall clock in milliseconds (the codec's "now"), read once per call. */
#include <time.h>
static inline int64_t ff_now_ms(void)
{
    struct timespec ts;
#if defined(_WIN32)
    timespec_get(&ts, TIME_UTC);
#else
    clock_gettime(CLOCK_REALTIME, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
