/*
 * bits_impl.h — a running max |x| on IEEE bits, for every template (see
 * instantiate.h; static, so each translation unit has its own copy).
 *
 * With the sign cleared, the bits of |x| read as a signed integer order
 * as |x| does, and every non-finite value is >= the bits of +inf.  An
 * integer max-reduction vectorizes where a NaN-aware float one would not,
 * so a loop that already touches x measures max |x| almost for free:
 *     IREAL m = 0;  for (…) m = FN(max_bits)(m, x[i]);  return FN(bits_max)(m);
 */

static inline IREAL FN(max_bits)(IREAL m, REAL x)
{
    const IREAL abs_mask = (IREAL)(~(uint64_t)0 >> (65 - 8 * sizeof(REAL)));
    IREAL b;
    memcpy(&b, &x, sizeof b);
    b &= abs_mask;
    return b > m ? b : m;
}

/* The running max as a double: +inf if some x was not finite. */
static inline double FN(bits_max)(IREAL m)
{
    if (m >= INF_BITS)
        return INFINITY;
    REAL r;
    memcpy(&r, &m, sizeof r);
    return (double)r;
}
