/*
 * vmath_impl.h — e^x, e^x − 1, log(1 + x) and the normal distribution
 * function Φ on the ranges the activations need, written so that GCC
 * vectorizes the loops that call them (activations_impl.h).  Template: see instantiate.h.
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
 * e^x, even times gelu's factors up to 8.4 in float and 22 in double, is
 * below half the least subnormal) as LO, so −inf gives 0 and −1.  NaN
 * passes through (the integer path sees 0 instead, so nothing undefined
 * happens to it).
 *
 * Accuracy of the activations built on these, against long double on 2.4
 * million points of each precision (tests/test_ops.py,
 * test_vector_math_accuracy, which bounds it by 4.5 ulp): at most 4.02
 * ulp, as the same formulas on glibc's functions measured; e^x alone
 * (elu's σ') within 0.95 ulp.  gelu and its σ', against mpmath
 * (test_vector_math_gelu_accuracy, bound 6.5 ulp): 3.74 and 3.28 ulp in
 * float, 5.85 and 4.27 in double (glibc's erfc gave 182 and 1,687 in the
 * left tail).
 */

/* Every operation must round to its type: the range reduction reads n
 * both from a rounded sum's bits and as that sum less its constant, and
 * Dekker's split and log1p's correction subtract rounded values.  x87
 * arithmetic (32-bit x86 without -mfpmath=sse) or reassociation breaks
 * them (tanh(0.5) came out 0.333 under -mfpmath=387). */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0 && FLT_EVAL_METHOD != -1
#error "cbp needs FLT_EVAL_METHOD 0 (on 32-bit x86: -msse2 -mfpmath=sse)"
#endif
#if defined(__FAST_MATH__) || defined(__ASSOCIATIVE_MATH__)
#error "cbp's vector math must not be built with -ffast-math or -fassociative-math"
#endif

/* Always inlined: a loop over elements vectorizes only if every call in
 * it is inlined, and GCC's heuristics stopped at the larger ones (gelu's
 * σ' stayed scalar). */
#ifndef VM_INLINE
#if defined(__GNUC__)
#define VM_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define VM_INLINE static __forceinline
#else
#define VM_INLINE static inline
#endif
#endif

#if REAL_IS_FLOAT
#define VM_UINT uint32_t
#define VM_MANT 23
#define VM_BIAS 127
#define VM_LO (-108.0f)              /* 8.4 e^-108 < 2^-150: rounds to 0 */
#define VM_ROUND 12582912.0f         /* 1.5 · 2^23: adding it rounds to an integer */
#define VM_LN2_HI 0.693359375f       /* 355/512: n * VM_LN2_HI is exact */
#define VM_LN2_LO (-2.12194440e-4f)
#else
#define VM_UINT uint64_t
#define VM_MANT 52
#define VM_BIAS 1023
#define VM_LO (-750.0)               /* 22 e^-750 < 2^-1075: rounds to 0 */
#define VM_ROUND 6755399441055744.0  /* 1.5 · 2^52 */
#define VM_LN2_HI 6.93145751953125e-1
#define VM_LN2_LO 1.42860682030941723212e-6
#endif

/* e^r − 1 for |r| <= ln 2 / 2. */
VM_INLINE REAL FN(vm_em1_reduced)(REAL r)
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

/* y 2^k for VM_LO / ln 2 − 1 <= k <= 0 (and |y| above 2^-40), as y 2^k1
 * 2^k2 with both factors normal numbers: the first product is exact, so
 * where y 2^k is subnormal it rounds once. */
VM_INLINE REAL FN(vm_scale)(REAL y, IREAL k)
{
    /* Logical shifts and adds only (AVX2 has no 64-bit arithmetic shift
     * or multiply): k1 = −⌊−k/2⌋, k2 = k − k1, both biased exponents > 0. */
    IREAL k1 = -(IREAL)((VM_UINT)-k >> 1), k2 = k - k1;
    VM_UINT b1 = (VM_UINT)(k1 + VM_BIAS) << VM_MANT;
    VM_UINT b2 = (VM_UINT)(k2 + VM_BIAS) << VM_MANT;
    REAL s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return y * s1 * s2;
}

/* x = n ln 2 + r: returns r and sets *k = n (x clamped to [VM_LO, 0]). */
VM_INLINE REAL FN(vm_reduce)(REAL x, IREAL *k)
{
    x = x > 0 ? 0 : x;
    x = x < VM_LO ? VM_LO : x;
    REAL xs = x == x ? x : 0;                   /* NaN: r stays NaN, n is 0 */
    REAL t = xs * R(1.44269504088896340736) + VM_ROUND;  /* log2(e) */
    REAL n = t - VM_ROUND;                      /* round(x / ln 2), exactly */
    IREAL bits, round_bits;
    const REAL round = VM_ROUND;
    memcpy(&bits, &t, sizeof bits);
    memcpy(&round_bits, &round, sizeof round_bits);
    *k = bits - round_bits;                     /* n as an integer */
    return (x - n * VM_LN2_HI) - n * VM_LN2_LO;
}

/* e^x = m 2^k for x <= 0: returns m (within [√2/2, √2]) and sets *k. */
VM_INLINE REAL FN(vm_exp_parts)(REAL x, IREAL *k)
{
    return 1 + FN(vm_em1_reduced)(FN(vm_reduce)(x, k));
}

/* e^x for x <= 0 (NaN gives NaN, −inf 0). */
VM_INLINE REAL FN(vm_exp_nonpos)(REAL x)
{
    IREAL k;
    REAL m = FN(vm_exp_parts)(x, &k);
    return FN(vm_scale)(m, k);
}

/* e^x − 1 for x <= 0 (NaN gives NaN, −inf −1, −0 −0). */
VM_INLINE REAL FN(vm_expm1_nonpos)(REAL x)
{
    IREAL k;
    REAL r = FN(vm_reduce)(x, &k);
    REAL p = FN(vm_em1_reduced)(r), s = FN(vm_scale)(1, k);
    return x == 0 ? x : k == 0 ? p : s * p + (s - 1);   /* ±0 keeps its sign */
}

/* log(1 + e) for 0 <= e <= 1 (NaN gives NaN).  u = 1 + e rounds; c, the
 * part of e that u lost, relative to u, restores it to first order (so a
 * tiny e gives e).  u = 2^j m with √2/2 <= m <= √2, and log m = 2 atanh(s)
 * = 2 (s + s³/3 + s⁵/5 + …) with s = (m − 1)/(m + 1), |s| <= 0.1716: the
 * terms run to s⁹ in float and to s²¹ in double (the first omitted one is
 * below 2^-28 and 2^-55 of the sum). */
VM_INLINE REAL FN(vm_log1p_unit)(REAL e)
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

/* erfcx(a) = e^(a²) erfc(a) for a >= 0 (NaN passes) as g(t) / (1 + 2a),
 * g's Chebyshev series in t = (a − 3.75)/(a + 3.75) summed by Clenshaw's
 * recurrence (b_k = c_k + 2t b_(k+1) − b_(k+2), g = c_0 + t b_1 − b_2).
 * tools/fit_erfcx.py computes the coefficients (mpmath, 40 digits): the
 * first omitted one is 2.7e-20 in float64 (degree 26), 2.9e-11 in
 * float32 (degree 15: the same series, begun lower; summed in double, so
 * that the float result rounds once). */
static const double FN(vm_erfcx_c)[27] = { /* c_0 .. c_26 */
    1.1775789345674017541, -4.5900545806464773309e-3, -8.4249133366517915584e-2,
    5.9209939998191890498e-2, -2.6658668435305752277e-2, 9.0749976707052650939e-3,
    -2.4131635404176081909e-3, 4.9077583652580863229e-4, -6.9169733025012063671e-5,
    4.1390279860730101675e-6, 7.7403830661984906686e-7, -2.1886401049234395661e-7,
    1.0764999465670910377e-8, 4.5219598112182868979e-9, -7.7544002088313511065e-10,
    -6.3180883408866844944e-11, 2.8687950109306698981e-11, 1.9455868545777347229e-13,
    -9.6546967484334389059e-13, 3.2525481481487398415e-14, 3.3478119482868053877e-14,
    -1.8645628804193131024e-15, -1.2507950530688647093e-15, 7.418235256624043382e-17,
    5.0681489047961112359e-17, -2.2370566594360004042e-18, -2.1873429443030184696e-18
};

VM_INLINE REAL FN(vm_erfcx)(REAL a)
{
    /* in double for both precisions: float32's result then rounds once */
    double ad = (double)a, t = (ad - 3.75) / (ad + 3.75), t2 = 2 * t;
    double b0 = 0, b1 = 0, b2;
    /* unrolled, so that the loop over elements around it vectorizes */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 32
#endif
    for (int j = REAL_IS_FLOAT ? 15 : 26; j >= 1; j--) {
        b2 = b1;
        b1 = b0;
        b0 = t2 * b1 - b2 + FN(vm_erfcx_c)[j];
    }
    double g = FN(vm_erfcx_c)[0] + t * b0 - b1;
    /* At t = −1 the recurrence's terms alternate and its rounding reaches
     * a few ulp (4.8 measured): below 1e-17, where erfcx(a) = 1 − 1.13 a
     * rounds to 1, it is 1 exactly (so Φ(0) is 0.5). */
    return (REAL)(ad < 1e-17 ? 1.0 : g / (1 + 2 * ad));
}

/* min(|z|, top), NaN kept: past top, Φ(−|z|) and φ(z) |z| are 0. */
VM_INLINE REAL FN(vm_tail_abs)(REAL z)
{
#if REAL_IS_FLOAT
    const REAL top = 21.0f;                     /* Φ(−21) < 2^-150 */
#else
    const REAL top = 56.0;                      /* Φ(−56) < 2^-1075 */
#endif
    REAL w = M(fabs)(z);
    return w > top ? top : w;
}

/* gelu(z) = z Φ(z) and gelu'(z) = Φ(z) + z φ(z), with Φ(z) = erfc(−z/√2)/2
 * the normal distribution function and φ(z) = e^(−z²/2)/√(2π).  With
 * a = |z|/√2: erfc(a) = e^(−a²) erfcx(a), and erfc(−a) = 2 − erfc(a) (no
 * cancellation: erfc(a) <= 1).  e^(−a²) = e^(−z²/2) is taken from z, not
 * from the rounded a: z² = hi + lo exactly (Dekker's product: |z| split
 * into halves whose products are exact; no FMA), then e^(−hi/2) (1 −
 * lo/2); a rounding of a or of a² would cost up to a² ulp in the left
 * tail (a² = 700 at Φ(−37.4) in float64), while erfcx varies slowly
 * enough not to mind a's.  vm_gauss_parts returns m and sets *k and
 * *h = erfcx(a)/2, with e^(−z²/2) = m 2^k: Φ(z) = h m 2^k for z < 0,
 * 1 − h m 2^k otherwise.  In the left tail gelu and gelu' are assembled
 * at m's scale and multiplied by 2^k last, so that a subnormal result
 * rounds once (z times a subnormal Φ would multiply its rounding error
 * by |z|: 19 ulp at z = −38 in float64). */
VM_INLINE REAL FN(vm_gauss_parts)(REAL z, IREAL *k, REAL *h)
{
#if REAL_IS_FLOAT
    const REAL split = 4097.0f;                 /* 2^12 + 1 */
#else
    const REAL split = 134217729.0;             /* 2^27 + 1 */
#endif
    REAL w = FN(vm_tail_abs)(z);
    REAL big = w * split, wh = big - (big - w), wl = w - wh;
    REAL hi = w * w, lo = ((wh * wh - hi) + 2 * wh * wl) + wl * wl;
    *h = R(0.5) * FN(vm_erfcx)(w * R(0.70710678118654752440));
    REAL m = FN(vm_exp_parts)(R(-0.5) * hi, k) * (1 - R(0.5) * lo);
    /* Beyond vm_exp_parts' range e^(−z²/2) |z|/√(2π) is below half the
     * least subnormal: exactly 0 (its m 2^k stands for e^VM_LO there). */
    return R(-0.5) * hi < VM_LO ? 0 : m;
}

/* The products of the left tail take w = min(|z|, top) for −z, so that
 * z = −inf gives −0 and gelu'(±inf) 0 and 1, not inf · 0; and gelu' there
 * is −(w φ − Φ), a negative value that underflows to −0, not +0. */
VM_INLINE REAL FN(vm_gelu)(REAL z)
{
    IREAL k;
    REAL h, m = FN(vm_gauss_parts)(z, &k, &h), w = FN(vm_tail_abs)(z);
    return z < 0 ? -FN(vm_scale)(w * (h * m), k) : z * (1 - FN(vm_scale)(h * m, k));
}

VM_INLINE REAL FN(vm_gelu_d)(REAL z)
{
    const REAL c = R(0.39894228040143267794);  /* 1/√(2π) */
    IREAL k;
    REAL h, m = FN(vm_gauss_parts)(z, &k, &h), w = FN(vm_tail_abs)(z);
    return z < 0 ? -FN(vm_scale)(w * (m * c) - h * m, k)
                 : (1 - FN(vm_scale)(h * m, k)) + w * FN(vm_scale)(m * c, k);
}

#undef VM_UINT
#undef VM_MANT
#undef VM_BIAS
#undef VM_LO
#undef VM_ROUND
#undef VM_LN2_HI
#undef VM_LN2_LO
