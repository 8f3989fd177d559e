/*
 * subnormal_adam.c — what subnormal numbers cost Adam's float32 update, and
 * whether an exact, assist-free way to compute it is fast enough.
 *
 *   gcc -O3 -ffp-contract=off -fno-math-errno -fno-trapping-math \
 *       benchmarks/subnormal_adam.c -o /tmp/subnormal_adam -lm && /tmp/subnormal_adam
 *
 * (cbp's own compile flags; see setup.py.)  Times three ways of computing
 * torch's Adam update over 4,810 float32 parameters (the digits network),
 * side by side, on normal state and on state where ~6 % of the lanes are
 * subnormal, as at the end of a digits fit:
 *
 *   float   the float loop cbp runs (optim_impl.h's adam_pass, without the
 *           weight-decay branches and maxima);
 *   exact   the same float operations done in double, each rounded to
 *           float.  Rounding to double and then to float gives the float
 *           operation's own result (53 >= 2 * 24 + 2; a product of two
 *           floats is exact in double), and the double of a float is never
 *           subnormal, so no operation takes an x86 microcode assist.
 *           `opaque` hides from GCC that a double came from a float: it
 *           would otherwise narrow (float)((double)a * (double)b) back to a
 *           float multiply, which does take the assist.
 *
 * It checks that `exact` writes the same bits as `float`.  cbp's float32
 * Adam (adam_commit) now sends groups of lanes holding a tiny m through a
 * path with only three of these operations in double (adam_small_m).  See
 * docs/benchmarks.md (digits) for what the figures mean.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 4810
#define REPS 5000

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default"), noinline))
#else
#define CLONES __attribute__((noinline))
#endif

typedef void update_fn(long, float *restrict, const float *restrict, float *restrict,
                       float *restrict, float, float, float, float, float, float);

CLONES static void update_float(long n, float *restrict p, const float *restrict grad,
                                float *restrict m, float *restrict v, float c1, float b2,
                                float c2, float step, float bc2, float eps)
{
    for (long i = 0; i < n; i++) {
        float g = grad[i];
        float mi = m[i] + c1 * (g - m[i]);
        float vi = v[i] * b2 + c2 * g * g;
        float denom = sqrtf(vi) / bc2 + eps;
        p[i] = p[i] + (-step) * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

volatile int64_t zero_bits = 0; /* 0, but GCC cannot know it */

static inline double opaque(double d, int64_t z)
{
    int64_t b;
    memcpy(&b, &d, sizeof b);
    b ^= z;
    memcpy(&d, &b, sizeof d);
    return d;
}

CLONES static void update_exact(long n, float *restrict p, const float *restrict grad,
                                float *restrict m, float *restrict v, float c1f, float b2f,
                                float c2f, float stepf, float bc2f, float epsf)
{
    const int64_t z = zero_bits;
    const double c1 = c1f, b2 = b2f, c2 = c2f, step = stepf, bc2 = bc2f, eps = epsf;
#define W(x) opaque((double)(x), z)
#define F(x) opaque((double)(float)(x), z)
    for (long i = 0; i < n; i++) {
        double pi = W(p[i]), m0 = W(m[i]), v0 = W(v[i]), g = W(grad[i]);
        double mi = F(m0 + F(c1 * F(g - m0)));
        double vi = F(F(v0 * b2) + F(F(c2 * g) * g));
        double denom = F(F(sqrt(vi) / bc2) + eps);
        pi = F(pi + F(-step * F(mi / denom)));
        p[i] = (float)pi, m[i] = (float)mi, v[i] = (float)vi;
    }
#undef W
#undef F
}

static float p0[N], g0[N], m0[N], v0[N], p[N], m[N], v[N], out[3][N];

/* Median-free but interleaved: REPS rounds, each timing both ways once. */
static void run(const char *label, int per_mille)
{
    srand(1);
    int n_sub = 0;
    for (int i = 0; i < N; i++) {
        p0[i] = rand() / (float)RAND_MAX;
        g0[i] = (rand() / (float)RAND_MAX - 0.5f) * 1e-2f;
        m0[i] = 0.5f * g0[i];
        v0[i] = g0[i] * g0[i];
        if (rand() % 1000 < per_mille) { /* a weight whose gradient stayed 0 */
            g0[i] = 0.0f;
            m0[i] = (float)(1 + rand() % 100) * 1e-41f;
            v0[i] = 1e-20f;
            n_sub++;
        }
    }
    update_fn *fns[2] = {update_float, update_exact};
    double t[2] = {0, 0};
    for (int r = 0; r < REPS; r++) {
        for (int k = 0; k < 2; k++) {
            memcpy(p, p0, sizeof p), memcpy(m, m0, sizeof m), memcpy(v, v0, sizeof v);
            double t0 = now();
            fns[k](N, p, g0, m, v, 0.1f, 0.999f, 0.001f, 1e-3f, 0.03f, 1e-8f);
            t[k] += now() - t0;
            if (r == 0 && k == 0)
                memcpy(out[0], p, sizeof p), memcpy(out[1], m, sizeof m),
                    memcpy(out[2], v, sizeof v);
            if (r == 0 && k == 1 &&
                (memcmp(out[0], p, sizeof p) || memcmp(out[1], m, sizeof m) ||
                 memcmp(out[2], v, sizeof v))) {
                printf("exact and float differ: the double-rounding argument failed\n");
                exit(1);
            }
        }
    }
    printf("%-24s %4d subnormal lanes   float %7.2f us   exact %7.2f us   exact / float %.2f\n",
           label, n_sub, t[0] / REPS * 1e6, t[1] / REPS * 1e6, t[1] / t[0]);
}

int main(void)
{
    run("normal state", 0);
    run("~6 % subnormal m", 64);
    run("~20 % subnormal m", 200);
    printf("exact wrote the same bits as float in every case\n");
    return 0;
}
