/*
 * activations_impl.h — σ and σ' of every activation, one line each.
 * Template: see instantiate.h.  Arguments are validated by the caller.
 *
 * Stability: sigmoid and softplus never evaluate exp of a positive
 * argument, so they stay finite for any finite z; gelu uses erfc (as
 * e^(−a²) erfcx(a)), which keeps its left tail accurate.  NaN propagates
 * through every σ.
 *
 * e^x, e^x − 1, log(1 + x) and Φ come from vmath_impl.h, not libm, so
 * that the loops below vectorize (every σ and σ').
 */
#include "vmath_impl.h"

/* Every σ and σ' is always inlined (VM_INLINE, see vmath_impl.h): GCC
 * left gelu's, large once vmath's code is inlined into it, as a call in
 * the float64 loops of some clones, which then stayed scalar.
 *
 *                     σ(z)                                     σ'(z) */
VM_INLINE REAL FN(identity)(REAL z) { return z; }
VM_INLINE REAL FN(identity_d)(REAL z) { (void)z; return 1; }

VM_INLINE REAL FN(relu)(REAL z) { return z < 0 ? 0 : z; }
VM_INLINE REAL FN(relu_d)(REAL z) { return z > 0 ? 1 : 0; } /* 0 at the kink */

VM_INLINE REAL FN(leaky_relu)(REAL z) { return z < 0 ? R(0.01) * z : z; }
VM_INLINE REAL FN(leaky_relu_d)(REAL z) { return z > 0 ? 1 : R(0.01); }

VM_INLINE REAL FN(sigmoid)(REAL z)
{
    REAL e = FN(vm_exp_nonpos)(-M(fabs)(z));
    return z >= 0 ? 1 / (1 + e) : e / (1 + e);
}
/* σ'(z) = σ(z)(1 − σ(z)) = e/(1 + e)² with e = e^−|z| (symmetric in z):
 * no cancellation, so it keeps full relative accuracy in the tails. */
VM_INLINE REAL FN(sigmoid_d)(REAL z)
{
    REAL e = FN(vm_exp_nonpos)(-M(fabs)(z)), d = 1 + e;
    return e / (d * d);
}

/* tanh(z) = −t/(2 + t) with t = e^−2|z| − 1, given the sign of z: no
 * cancellation (t keeps a tiny argument's relative accuracy), and −0 is
 * −0. */
VM_INLINE REAL FN(tanh)(REAL z)
{
    REAL t = FN(vm_expm1_nonpos)(R(-2) * M(fabs)(z));
    return M(copysign)(-t / (2 + t), z);
}
/* tanh'(z) = 1 − tanh²(z) = 4e/(1 + e)² with e = e^−2|z|: no cancellation. */
VM_INLINE REAL FN(tanh_d)(REAL z)
{
    REAL e = FN(vm_exp_nonpos)(R(-2) * M(fabs)(z)), d = 1 + e;
    return 4 * e / (d * d);
}

/* softplus(z) = log(1 + e^z) = max(z, 0) + log1p(e^-|z|) */
VM_INLINE REAL FN(softplus)(REAL z)
{
    return (z > 0 ? z : 0) + FN(vm_log1p_unit)(FN(vm_exp_nonpos)(-M(fabs)(z)));
}
VM_INLINE REAL FN(softplus_d)(REAL z) { return FN(sigmoid)(z); }

VM_INLINE REAL FN(elu)(REAL z) { return z > 0 ? z : FN(vm_expm1_nonpos)(z); }
VM_INLINE REAL FN(elu_d)(REAL z) { return z > 0 ? 1 : FN(vm_exp_nonpos)(z); }

/* gelu(z) = z Φ(z), Φ(z) = erfc(−z/√2) / 2;  gelu'(z) = Φ(z) + z φ(z) */
VM_INLINE REAL FN(gelu)(REAL z) { return FN(vm_gelu)(z); }
VM_INLINE REAL FN(gelu_d)(REAL z) { return FN(vm_gelu_d)(z); }

/* One loop per activation, so the switch runs once per call, not once
 * per element:  out[i] OP σ(z[i])  (or σ' with suffix _d). */
#define CBP_LOOP(fn, out, OP)                                                \
    for (ptrdiff_t i = 0; i < size; i++)                                     \
        out[i] OP fn(z[i]);                                                  \
    break;
#define CBP_DISPATCH(suffix, out, OP)                                        \
    switch (act) {                                                           \
    case CBP_IDENTITY:   CBP_LOOP(FN(identity##suffix), out, OP)             \
    case CBP_RELU:       CBP_LOOP(FN(relu##suffix), out, OP)                 \
    case CBP_LEAKY_RELU: CBP_LOOP(FN(leaky_relu##suffix), out, OP)           \
    case CBP_SIGMOID:    CBP_LOOP(FN(sigmoid##suffix), out, OP)              \
    case CBP_TANH:       CBP_LOOP(FN(tanh##suffix), out, OP)                 \
    case CBP_SOFTPLUS:   CBP_LOOP(FN(softplus##suffix), out, OP)             \
    case CBP_ELU:        CBP_LOOP(FN(elu##suffix), out, OP)                  \
    case CBP_GELU:       CBP_LOOP(FN(gelu##suffix), out, OP)                 \
    default: break;                                                          \
    }

CBP_VECTOR_CLONES
void FN(activation_forward)(int act, ptrdiff_t size, const REAL *z, REAL *a)
{
    CBP_DISPATCH(, a, =)
}

CBP_VECTOR_CLONES
void FN(activation_derivative)(int act, ptrdiff_t size, const REAL *z, REAL *d)
{
    CBP_DISPATCH(_d, d, =)
}

CBP_VECTOR_CLONES
void FN(activation_backward)(int act, ptrdiff_t size, const REAL *z, REAL *g)
{
    if (act == CBP_IDENTITY)
        return; /* σ' = 1 */
    CBP_DISPATCH(_d, g, *=)
}

#undef CBP_LOOP
#undef CBP_DISPATCH

/* The fused training step's passes (engine_impl.h): each does a step's
 * element-wise work and, in the same read, measures what the step's
 * overflow guard needs, so the guard reads nothing again. */

/* A layer's activation inside the network: a = σ(z) (a may be z) where z
 * is finite and NaN where it is not, and returns max |a| (+inf if some a
 * is not finite): the largest input the next layer's weight update sees.
 * A non-finite z is an overflow of the layer's product on finite data,
 * whose sign need not be the exact sum's (3e38 + 3e38 − 3e38 − 3e38 −
 * 3e38 is +inf in float, −3e38 exactly); tanh, sigmoid, relu and the other
 * saturating σ would turn it into a finite, possibly wrong, value, so it
 * becomes NaN and reaches the outputs and the loss, which report it. */
#define CBP_LOOP(fn)                                                         \
    for (ptrdiff_t i = 0; i < size; i++) {                                   \
        REAL v = fn(z[i]);                                                   \
        v *= z[i] - z[i] + 1; /* 1 where z is finite (v stays v), else NaN */ \
        a[i] = v;                                                            \
        m = FN(max_bits)(m, v);                                              \
    }                                                                        \
    break;
CBP_VECTOR_CLONES
double FN(activation_forward_max)(int act, ptrdiff_t size, const REAL *z, REAL *a)
{
    IREAL m = 0;
    switch (act) {
    case CBP_IDENTITY:   CBP_LOOP(FN(identity))
    case CBP_RELU:       CBP_LOOP(FN(relu))
    case CBP_LEAKY_RELU: CBP_LOOP(FN(leaky_relu))
    case CBP_SIGMOID:    CBP_LOOP(FN(sigmoid))
    case CBP_TANH:       CBP_LOOP(FN(tanh))
    case CBP_SOFTPLUS:   CBP_LOOP(FN(softplus))
    case CBP_ELU:        CBP_LOOP(FN(elu))
    case CBP_GELU:       CBP_LOOP(FN(gelu))
    default: break;
    }
    return FN(bits_max)(m);
}
#undef CBP_LOOP

/* Δ ⊙= σ'(Z) for Δ, Z (n, width) stored with row length ld (the pool's
 * step passes a block of columns of a wider matrix), with the column sums Σ_rows Δ into
 * sums (width) and max |Δ| returned (+inf if some entry is not finite):
 * the Hadamard step, the bias gradient and the guard's bound in one read
 * of Δ.  Each product is rounded as activation_backward rounds it, and
 * each sum runs in double over the rows in order, as bias_sum's does, so
 * the results are bit-identical to those two calls.  Columns go in blocks
 * of double accumulators that stay in L1. */
#define CBP_LOOP(fn)                                                         \
    for (ptrdiff_t i = 0; i < n; i++) {                                      \
        REAL *row = D + i * ld + j0;                                         \
        const REAL *zrow = Z + i * ld + j0;                                  \
        for (int j = 0; j < cols; j++) {                                     \
            REAL d = row[j] * fn(zrow[j]);                                   \
            row[j] = d;                                                      \
            acc[j] += d;                                                     \
            m = FN(max_bits)(m, d);                                          \
        }                                                                    \
    }                                                                        \
    break;
CBP_VECTOR_CLONES
double FN(activation_backward_sum_max_ld)(int act, ptrdiff_t n, int width, ptrdiff_t ld,
                                          const REAL *Z, REAL *D, REAL *sums)
{
    enum { BLOCK = 256 };
    double acc[BLOCK];
    IREAL m = 0;
    for (int j0 = 0; j0 < width; j0 += BLOCK) {
        int cols = width - j0 < BLOCK ? width - j0 : BLOCK;
        for (int j = 0; j < cols; j++)
            acc[j] = 0.0;
        switch (act) {
        case CBP_IDENTITY:   CBP_LOOP(FN(identity_d))
        case CBP_RELU:       CBP_LOOP(FN(relu_d))
        case CBP_LEAKY_RELU: CBP_LOOP(FN(leaky_relu_d))
        case CBP_SIGMOID:    CBP_LOOP(FN(sigmoid_d))
        case CBP_TANH:       CBP_LOOP(FN(tanh_d))
        case CBP_SOFTPLUS:   CBP_LOOP(FN(softplus_d))
        case CBP_ELU:        CBP_LOOP(FN(elu_d))
        case CBP_GELU:       CBP_LOOP(FN(gelu_d))
        default: break;
        }
        for (int j = 0; j < cols; j++)
            sums[j0 + j] = (REAL)acc[j];
    }
    return FN(bits_max)(m);
}
#undef CBP_LOOP

double FN(activation_backward_sum_max)(int act, ptrdiff_t n, int width, const REAL *Z,
                                       REAL *D, REAL *sums)
{
    return FN(activation_backward_sum_max_ld)(act, n, width, width, Z, D, sums);
}
