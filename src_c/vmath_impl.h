/*
 * vmath_impl.h — e^x, e^x − 1 and log(1 + x) on the ranges the
 * activations need, written so that GCC vectorizes the loops that call
 * them (activations_impl.h).  Template: see instantiate.h.
 *
 * Why not libm.  A loop calling expf or tanhf stays scalar (GCC would call
 * glibc's vector variants only under -ffast-math, which setup.py refuses),
 * and glibc's tanhf takes about 15 ns per element: a tanh pass over
 * 32,768 floats took 459 µs, against 7.5 µs for relu and 11 µs for
 * NumPy's np.tanh.  These are plain arithmetic, comparisons and bit
 * operations, so each activation loop compiles to vector code (one clone
 * per instruction set, CBP_VECTOR_CLONES) that rounds alike in every clone:
 * -ffp-contract=off keeps every multiply and add separate.
 *
 * Method.  x = n ln 2 + r with n = round(x / ln 2) and |r| <= ln 2 / 2
 * (Cody and Waite: ln 2 split into a head whose products with n are exact
 * and a tail); e^r − 1 by its Taylor polynomial, r + r (r (1/2! + r/3! +
 * …)), so that a tiny r keeps full relative accuracy;
 * then e^x = 2^n (1 + (e^r − 1)) and e^x − 1 = 2^n (e^r − 1) + (2^n − 1).
 * The terms run to 1/8! in float (the first omitted one is below 2^-30
 * of the sum) and to 1/13! in double (below 2^-56).  2^n is built from its
 * bits as a product of two powers, so results down to the subnormals
 * round once, as libm's do.
 *
 * Domain.  Only x <= 0 is needed (sigmoid and softplus take e^−|z|, tanh
 * e^−2|z| − 1, elu z <= 0): larger x count as 0, and x below LO (where
 * e^x is below half the least subnormal) as LO, so −inf gives 0 and
 * −1.  NaN passes through (the integer path sees 0 instead, so nothing
 * undefined happens to it).
 *
 * Accuracy of the activations built on these, against long double on 2.4
 * million points of each precision (tests/test_ops.py,
 * test_vector_math_accuracy, which bounds it by 4.5 ulp): at most 4.02
 * ulp, as the same formulas on glibc's functions measured; e^x alone
 * (elu's σ') within 0.95 ulp.
 */

#if REAL_IS_FLOAT
#define VM_INT int32_t
#define VM_UINT uint32_t
#define VM_MANT 23
#define VM_BIAS 127
#define VM_LO (-104.0f)              /* e^-104 < 2^-150: rounds to 0 */
#define VM_ROUND 12582912.0f         /* 1.5 · 2^23: adding it rounds to an integer */
#define VM_LN2_HI 0.693359375f       /* 355/512: n * VM_LN2_HI is exact */
#define VM_LN2_LO (-2.12194440e-4f)
#else
#define VM_INT int64_t
#define VM_UINT uint64_t
#define VM_MANT 52
#define VM_BIAS 1023
#define VM_LO (-746.0)               /* e^-746 < 2^-1075: rounds to 0 */
#define VM_ROUND 6755399441055744.0  /* 1.5 · 2^52 */
#define VM_LN2_HI 6.93145751953125e-1
#define VM_LN2_LO 1.42860682030941723212e-6
#endif

/* e^r − 1 for |r| <= ln 2 / 2. */
static inline REAL FN(vm_em1_reduced)(REAL r)
{
#if REAL_IS_FLOAT
    REAL p = R(1.0 / 40320);
    p = p * r + R(1.0 / 5040);
    p = p * r + R(1.0 / 720);
    p = p * r + R(1.0 / 120);
    p = p * r + R(1.0 / 24);
    p = p * r + R(1.0 / 6);
    p = p * r + R(0.5);
#else
    REAL p = 1.0 / 6227020800.0;     /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
#endif
    return r + r * (r * p);
}

/* 2^k for VM_LO / ln 2 - 1 <= k <= 0, as two factors each a normal number
 * (their product rounds once where 2^k is subnormal). */
static inline REAL FN(vm_pow2)(VM_INT k)
{
    /* Logical shifts and adds only (AVX2 has no 64-bit arithmetic shift
     * or multiply): k1 = −⌊−k/2⌋, k2 = k − k1, both biased exponents > 0. */
    VM_INT k1 = -(VM_INT)((VM_UINT)-k >> 1), k2 = k - k1;
    VM_UINT b1 = (VM_UINT)(k1 + VM_BIAS) << VM_MANT;
    VM_UINT b2 = (VM_UINT)(k2 + VM_BIAS) << VM_MANT;
    REAL s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return s1 * s2;
}

/* x = n ln 2 + r: returns r and sets *k = n (x clamped to [VM_LO, 0]). */
static inline REAL FN(vm_reduce)(REAL x, VM_INT *k)
{
    x = x > 0 ? 0 : x;
    x = x < VM_LO ? VM_LO : x;
    REAL xs = x == x ? x : 0;                   /* NaN: r stays NaN, n is 0 */
    REAL t = xs * R(1.44269504088896340736) + VM_ROUND;  /* log2(e) */
    REAL n = t - VM_ROUND;                      /* round(x / ln 2), exactly */
    VM_INT bits, round_bits;
    const REAL round = VM_ROUND;
    memcpy(&bits, &t, sizeof bits);
    memcpy(&round_bits, &round, sizeof round_bits);
    *k = bits - round_bits;                     /* n as an integer */
    return (x - n * VM_LN2_HI) - n * VM_LN2_LO;
}

/* e^x for x <= 0 (NaN gives NaN, −inf 0). */
static inline REAL FN(vm_exp_nonpos)(REAL x)
{
    VM_INT k;
    REAL r = FN(vm_reduce)(x, &k);
    return (1 + FN(vm_em1_reduced)(r)) * FN(vm_pow2)(k);
}

/* e^x − 1 for x <= 0 (NaN gives NaN, −inf −1, −0 −0). */
static inline REAL FN(vm_expm1_nonpos)(REAL x)
{
    VM_INT k;
    REAL r = FN(vm_reduce)(x, &k);
    REAL p = FN(vm_em1_reduced)(r), s = FN(vm_pow2)(k);
    return x == 0 ? x : k == 0 ? p : s * p + (s - 1);   /* ±0 keeps its sign */
}

/* log(1 + e) for 0 <= e <= 1 (NaN gives NaN).  u = 1 + e rounds; c, the
 * part of e that u lost, relative to u, restores it to first order (so a
 * tiny e gives e).  u = 2^j m with √2/2 <= m <= √2, and log m = 2 atanh(s)
 * = 2 (s + s³/3 + s⁵/5 + …) with s = (m − 1)/(m + 1), |s| <= 0.1716: the
 * terms run to s⁹ in float and to s²¹ in double (the first omitted one is
 * below 2^-28 and 2^-55 of the sum). */
static inline REAL FN(vm_log1p_unit)(REAL e)
{
    REAL u = 1 + e;
    REAL c = (e - (u - 1)) / u;
    int above = u > R(1.41421356237309504880);
    REAL m = above ? u * R(0.5) : u;
    REAL f = m - 1;                             /* exact: m is within 2x of 1 */
    REAL s = f / (2 + f), s2 = s * s;
#if REAL_IS_FLOAT
    REAL p = R(1.0 / 9);
    p = p * s2 + R(1.0 / 7);
    p = p * s2 + R(1.0 / 5);
    p = p * s2 + R(1.0 / 3);
#else
    REAL p = 1.0 / 21;
    p = p * s2 + 1.0 / 19;
    p = p * s2 + 1.0 / 17;
    p = p * s2 + 1.0 / 15;
    p = p * s2 + 1.0 / 13;
    p = p * s2 + 1.0 / 11;
    p = p * s2 + 1.0 / 9;
    p = p * s2 + 1.0 / 7;
    p = p * s2 + 1.0 / 5;
    p = p * s2 + 1.0 / 3;
#endif
    REAL log_m = 2 * s + 2 * s * (s2 * p);
    return (above ? R(0.69314718055994530942) : 0) + (log_m + c);
}

#undef VM_INT
#undef VM_UINT
#undef VM_MANT
#undef VM_BIAS
#undef VM_LO
#undef VM_ROUND
#undef VM_LN2_HI
#undef VM_LN2_LO
