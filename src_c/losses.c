/* losses.c — instantiates losses_impl.h for float and double. */
#include <math.h>
#include <string.h>
#include "cbp.h"

/* exp(x) for the shifted logits of a softmax (x <= 0), written so that a
 * loop of it vectorizes (libm's expf is a call per element).
 *   exp(x) = 2^k e^r,  k = round(x / ln 2),  r = x − k ln 2
 * with ln 2 in two parts (Cody–Waite: k·C1 is exact), and e^r on
 * |r| <= ln 2 / 2 by Cephes' expf polynomial.  Error against exp in
 * double: at most 1 ulp (tests/test_ops.py measures it on a dense grid).
 * Below −87, where exp(x) < 1.7e-38 is at or near the subnormal range,
 * it returns 0; NaN gives NaN; −inf gives 0.  2^k is built from the bits
 * of the rounding sum, never by converting a float to int, so NaN is
 * defined behaviour. */
static inline float cbp_exp_nonpositive_f32(float x)
{
    const float shifter = 12582912.0f; /* 1.5 · 2^23: t − shifter rounds to an integer */
    const float log2e = 1.44269504088896341f, c1 = 0.693359375f, c2 = -2.12194440e-4f;
    float xc = x < -87.0f ? -87.0f : x;
    float t = xc * log2e + shifter;
    float k = t - shifter;
    float r = (xc - k * c1) - k * c2;
    float z = r * r;
    float y = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
                 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * z + r + 1.0f;
    uint32_t tb, sb, pow_bits;
    memcpy(&tb, &t, sizeof tb);
    memcpy(&sb, &shifter, sizeof sb);
    pow_bits = (tb - sb + 127u) << 23; /* k + 127 in the exponent field: 2^k */
    float pow2k;
    memcpy(&pow2k, &pow_bits, sizeof pow2k);
    /* × 0 below −87 (a select would keep the loop from vectorizing); NaN
     * stays NaN through y. */
    return y * pow2k * (float)(x >= -87.0f);
}

static inline double cbp_exp_nonpositive_f64(double x)
{
    return exp(x);
}

#define CBP_TEMPLATE "losses_impl.h"
#include "instantiate.h"
