/*
 * optim_impl.h — optimizer updates over the flat parameter buffer, one
 * pass each, transcribing torch.optim's single-tensor implementations
 * (scalars computed in double, element arithmetic in REAL, as PyTorch
 * does for a tensor of that dtype).
 * Template: see instantiate.h.  Arguments are validated by the caller.
 *
 * Each rule is one loop body used twice: `commit = 0` only checks that
 * every new parameter and state value would be finite (a dry run, which
 * writes nothing), `commit = 1` writes them.  So a diverging step can be
 * refused before it touches the parameters.  Adam's dry run is the last
 * of three answers: a bound from the previous update's maxima, a bound
 * pass without square roots or divisions, then the exact pass (see
 * adam_pass and optim_step).
 */

/* SGD (torch.optim.SGD), over n elements of p and grad, and the state's
 * elements [off, off + n):
 *   g ← g + λ p                          (weight_decay λ)
 *   b ← g  at the first step with μ ≠ 0, else  b ← μ b + (1 − τ) g
 *                                        (momentum μ, dampening τ)
 *   g ← g + μ b  (Nesterov)  or  g ← b
 *   p ← p − lr g */
static inline int FN(sgd_pass)(const cbp_optim *opt, ptrdiff_t off, ptrdiff_t n, REAL *p,
                               const REAL *grad, const int commit)
{
    const REAL lr = (REAL)opt->lr, wd = (REAL)opt->weight_decay;
    const REAL mu = (REAL)opt->momentum, keep = (REAL)(1 - opt->dampening);
    REAL *buf = opt->buf1 == NULL ? NULL : (REAL *)opt->buf1 + off;
    /* For SGD, step counts the steps with momentum (see optim_update): 0
     * means no buffer yet, as torch's momentum_buffer None, even after
     * steps taken with momentum 0. */
    const int first = opt->step == 0, nesterov = opt->nesterov;
    int bad = 0;
    /* Momentum 0 as given, not as rounded: a momentum too small for REAL
     * (1e-300 in float) still keeps the buffer, as torch's does, so that
     * it holds the last gradient should the momentum be raised later. */
    if (opt->momentum == 0) {
        for (ptrdiff_t i = 0; i < n; i++) {
            REAL g = wd != 0 ? grad[i] + wd * p[i] : grad[i];
            REAL pi = p[i] + (-lr) * g;
            if (commit)
                p[i] = pi;
            else
                bad |= !(M(fabs)(pi) <= REAL_MAX);
        }
        return bad;
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL g = wd != 0 ? grad[i] + wd * p[i] : grad[i];
        REAL b = first ? g : mu * buf[i] + keep * g;
        g = nesterov ? g + mu * b : b;
        REAL pi = p[i] + (-lr) * g;
        if (commit) {
            buf[i] = b;
            p[i] = pi;
        } else {
            bad |= !(M(fabs)(pi) <= REAL_MAX) | !(M(fabs)(b) <= REAL_MAX);
        }
    }
    return bad;
}

/* Adam (torch.optim.Adam) and AdamW (decoupled weight decay), step t:
 *   AdamW: p ← p (1 − lr λ);   Adam: g ← g + λ p
 *   m ← m + (1 − β1)(g − m)              (lerp)
 *   v ← β2 v + (1 − β2) g²
 *   p ← p − (lr / (1 − β1ᵗ)) m / (√v / √(1 − β2ᵗ) + ε)
 *
 * `mode` ADAM_BOUND is a cheaper dry run: no square root or division.
 * Since √v / √(1 − β2ᵗ) ≥ 0, the denominator is at least ε, so the
 * quotient m / denom (formed first) is at most |m| / ε and
 * |new p| ≤ |p (1 − lr λ)| + (lr / (1 − β1ᵗ)) |m| / ε; when
 * |p (1 − lr λ)| + max(lr / (1 − β1ᵗ), 1) |m| / ε (and m, v) stay below
 * half the largest REAL, the exact update is finite — rounding adds a few
 * ulps, not a factor of two.  ε is the REAL one the update divides by.
 * It answers "finite" or "don't know" (ε = 0, huge values, non-finite
 * gradients); on "don't know" the exact dry run (ADAM_CHECK) decides.
 * Within one call into C, adam_maxima_bound (below) answers first. */
#ifndef CBP_ADAM_MODES
#define CBP_ADAM_MODES
enum { ADAM_BOUND, ADAM_CHECK, ADAM_COMMIT };
#endif

/* The bias corrections of step t, as adam_pass uses them. */
static inline REAL FN(adam_step_size)(const cbp_optim *opt, int64_t t)
{
    return (REAL)(opt->lr / (1 - pow(opt->beta1, (double)t)));
}
static inline REAL FN(adam_bc2_sqrt)(const cbp_optim *opt, int64_t t)
{
    return (REAL)sqrt(1 - pow(opt->beta2, (double)t));
}

/* √v / √(1 − β2ᵗ), the REAL quotient s / c, with inv = 1 / (double)c.
 * In float, without the divider: (float)((double)s · inv) is the float
 * quotient bit for bit.  inv and the product each round to double (relative
 * error ≤ 2⁻⁵³ each), while s / c, for floats s and c, is never a rounding
 * midpoint of float (a midpoint has 25 significant bits, so m · c = s
 * would need s to have more than 24 unless c is a power of two, when s / c
 * is exact) and lies at least 2⁻⁴⁹ (relative) from every one: s − m·c is
 * a nonzero multiple of ulp(m)·ulp(c).  So both round to the same float
 * (tests/test_optimizers.py checks every significand for 20 steps' c).  The quotient of
 * Adam's two divisions by a constant; the other, m / denom, stays one.
 * In double there is no wider type, and it stays a division. */
static inline REAL FN(over_bc2)(REAL s, REAL c, double inv)
{
#if REAL_IS_FLOAT
    (void)c;
    return (REAL)((double)s * inv);
#else
    (void)inv;
    return s / c;
#endif
}

/* Over n elements of p, grad and the state m, v (which may be a slice of
 * opt's buffers).  ADAM_COMMIT raises max_bits[0..2] (the bits of max |p|,
 * max |m|, max v) to those of the values it writes. */
static inline int FN(adam_pass)(const cbp_optim *opt, const REAL step_size, const REAL bc2_sqrt,
                                ptrdiff_t n, REAL *p, const REAL *grad, REAL *m, REAL *v,
                                const int mode, IREAL *max_bits)
{
    const int decoupled = opt->kind == CBP_ADAMW;
    const REAL wd = (REAL)opt->weight_decay;
    const REAL decay = (REAL)(1 - opt->lr * opt->weight_decay);
    const REAL one_minus_b1 = (REAL)(1 - opt->beta1);
    const REAL b2 = (REAL)opt->beta2, one_minus_b2 = (REAL)(1 - opt->beta2);
    const REAL eps = (REAL)opt->eps;
    /* max(step, 1) / ε bounds both the quotient m / denom ≤ |m| / ε, which is
     * formed first, and the step times it (inf if ε = 0). */
    const REAL quot_scale = (REAL)(((double)step_size > 1 ? (double)step_size : 1) / (double)eps);
    const REAL half_max = REAL_MAX / 2;
    const double inv_bc2 = 1.0 / (double)bc2_sqrt; /* see FN(over_bc2) */
    int bad = 0;
    /* The commit's maxima, on the bits of finite non-negative values (they
     * order as the integers; see bits_impl.h). */
    IREAL max_p = 0, max_m = 0, max_v = 0;
    if (mode == ADAM_COMMIT)
        max_p = max_bits[0], max_m = max_bits[1], max_v = max_bits[2];
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL g = grad[i], pi = p[i];
        if (decoupled)
            pi = pi * decay;
        else if (wd != 0)
            g = g + wd * pi;
        REAL mi = m[i] + one_minus_b1 * (g - m[i]);
        REAL vi = v[i] * b2 + one_minus_b2 * g * g;
        if (mode == ADAM_BOUND) {
            REAL bound = M(fabs)(pi) + quot_scale * M(fabs)(mi);
            bad |= !(bound <= half_max) | !(M(fabs)(mi) <= half_max) | !(vi <= half_max);
            continue;
        }
        REAL denom = FN(over_bc2)(M(sqrt)(vi), bc2_sqrt, inv_bc2) + eps;
        pi = pi + (-step_size) * (mi / denom);
        if (mode == ADAM_COMMIT) {
            m[i] = mi;
            v[i] = vi;
            p[i] = pi;
            max_p = FN(max_bits)(max_p, pi);
            max_m = FN(max_bits)(max_m, mi);
            max_v = FN(max_bits)(max_v, vi);
        } else {
            bad |= !(M(fabs)(pi) <= REAL_MAX) | !(M(fabs)(mi) <= REAL_MAX) |
                   !(vi <= REAL_MAX);
        }
    }
    if (mode == ADAM_COMMIT)
        max_bits[0] = max_p, max_bits[1] = max_m, max_bits[2] = max_v;
    return bad;
}

/* Is Adam's next update certainly finite, given max |g| and the maxima the
 * previous update recorded (p, m, v unchanged since)?  Bounds, in double:
 *   |g + λ p| <= G + λ P  (Adam),   |p (1 − lr λ)| <= P |1 − lr λ|  (AdamW)
 *   |new m| <= M + |1 − β1| (G' + M),   new v <= β2 V + (1 − β2) G'²
 *   |new p| <= P' + max(lr / (1 − β1ᵗ), 1) |new m| / ε
 * (the max also bounds the quotient m / denom, which is formed first),
 * each below a quarter of the largest REAL (the REAL arithmetic rounds a
 * few ulps above the exact values, far less than that margin), with ε as
 * the REAL the update divides by (an ε below float's range is 0 there).
 * "No" only means "don't know": the four-array bound pass and the exact
 * dry run decide then. */
static int FN(adam_maxima_bound)(const cbp_optim *opt, int64_t t, double g_max)
{
    const double limit = (double)REAL_MAX / 4, wd = opt->weight_decay;
    double P = opt->max_p, G = g_max;
    if (opt->kind == CBP_ADAMW)
        P *= fabs(1 - opt->lr * wd);
    else
        G += wd * opt->max_p;
    double m_b = opt->max_m + fabs(1 - opt->beta1) * (G + opt->max_m);
    double v_b = opt->beta2 * opt->max_v + (1 - opt->beta2) * G * G;
    double step_size = opt->lr / (1 - pow(opt->beta1, (double)t));
    double eps = (double)(REAL)opt->eps;
    double p_b = P + (step_size > 1 ? step_size : 1) / eps * m_b; /* inf or NaN if ε = 0 */
    return m_b < limit && v_b < limit && p_b < limit; /* false for inf and NaN */
}

/* Plain Adam (no weight decay): the rule whose float32 commit sorts lanes
 * with a tiny m to the double-product path (adam_small_m). */
static inline int FN(adam_plain)(const cbp_optim *opt)
{
    return opt->kind == CBP_ADAM && (REAL)opt->weight_decay == 0;
}

/* One clone set per pass (CBP_VECTOR_CLONES), each with its mode fixed. */
/* Each over n elements of p and g, and the state's [off, off + n). */
CBP_VECTOR_CLONES
static int FN(adam_bound)(const cbp_optim *opt, int64_t t, ptrdiff_t off, ptrdiff_t n, REAL *p,
                          const REAL *g)
{
    return FN(adam_pass)(opt, FN(adam_step_size)(opt, t), FN(adam_bc2_sqrt)(opt, t), n, p, g,
                         (REAL *)opt->buf1 + off, (REAL *)opt->buf2 + off, ADAM_BOUND, NULL);
}
CBP_VECTOR_CLONES
static int FN(adam_check)(const cbp_optim *opt, int64_t t, ptrdiff_t off, ptrdiff_t n, REAL *p,
                          const REAL *g)
{
    return FN(adam_pass)(opt, FN(adam_step_size)(opt, t), FN(adam_bc2_sqrt)(opt, t), n, p, g,
                         (REAL *)opt->buf1 + off, (REAL *)opt->buf2 + off, ADAM_CHECK, NULL);
}
#if REAL_IS_FLOAT
/* Adam's commit in float, and subnormal numbers.
 *
 * An x86 core takes a microcode assist (~35 ns on the Xeon of
 * docs/benchmarks.md) when a multiplication, division or square root reads
 * a subnormal, or a multiplication or division yields one; additions,
 * comparisons and float <-> double conversions do not.  Adam's m drifts
 * there in ordinary training: where a weight's gradient stays 0 (a dead
 * unit, a pixel that is almost always 0) m ← 0.9 m is subnormal in float
 * after ~800 steps, and the update slows several-fold
 * (benchmarks/subnormal_adam.c).
 *
 * So, for plain Adam, a group of ADAM_GROUP lanes holding a small m (and no
 * small g or v, which the float loop below would also meet) goes through
 * adam_small_m; every other group through adam_pass. */
#define ADAM_GROUP 16
#define ADAM_CHUNK 4096 /* lanes classified at a time (a multiple of ADAM_GROUP) */
_Static_assert(ADAM_GROUP == 16, "adam_group_small reads a group's classes as two 8-byte words");
_Static_assert(ADAM_CHUNK % ADAM_GROUP == 0, "a chunk's groups start at start / ADAM_GROUP");

/* d, which GCC cannot tell came from a float: else it narrows
 * (float)((double)a * (double)b) back to a float multiplication, the same
 * value but with the assist.  z is 0 at run time. */
static inline double FN(opaque)(double d, int64_t z)
{
    int64_t b;
    memcpy(&b, &d, sizeof b);
    b ^= z;
    memcpy(&d, &b, sizeof d);
    return d;
}
static volatile int64_t FN(zero_bits) = 0;

/* Plain Adam (no weight decay) over n lanes: adam_pass's float operations,
 * except that the three which can meet a small m — (1 − β1)(g − m),
 * m / denom and the step times the quotient — are done in double and
 * rounded to float.  Bit for bit the float result: a product of two floats
 * is exact in double, and a quotient rounded to double and then to float is
 * the float quotient (53 >= 2 · 24 + 2; S. Figueroa, "When is double
 * rounding innocuous?", 1995), subnormal or not; the double of a float is
 * never subnormal. */
static inline void FN(adam_small_m)(const cbp_optim *opt, const REAL step_size,
                                    const REAL bc2_sqrt, ptrdiff_t n, REAL *restrict p,
                                    const REAL *restrict grad, REAL *restrict m,
                                    REAL *restrict v, IREAL *max_bits, int64_t z)
{
    const REAL one_minus_b1 = (REAL)(1 - opt->beta1);
    const REAL b2 = (REAL)opt->beta2, one_minus_b2 = (REAL)(1 - opt->beta2);
    const REAL eps = (REAL)opt->eps;
    const double c1 = FN(opaque)(one_minus_b1, z), minus_step = FN(opaque)(-step_size, z);
    const double inv_bc2 = 1.0 / (double)bc2_sqrt;
    IREAL max_p = max_bits[0], max_m = max_bits[1], max_v = max_bits[2];
    for (ptrdiff_t i = 0; i < n; i++) {
        const REAL g = grad[i], m0 = m[i];
        const REAL mi = m0 + (REAL)(c1 * FN(opaque)(g - m0, z));
        const REAL vi = v[i] * b2 + one_minus_b2 * g * g;
        const REAL denom = FN(over_bc2)(M(sqrt)(vi), bc2_sqrt, inv_bc2) + eps;
        const REAL quot = (REAL)(FN(opaque)(mi, z) / FN(opaque)(denom, z));
        const REAL pi = p[i] + (REAL)(minus_step * FN(opaque)(quot, z));
        m[i] = mi, v[i] = vi, p[i] = pi;
        max_p = FN(max_bits)(max_p, pi);
        max_m = FN(max_bits)(max_m, mi);
        max_v = FN(max_bits)(max_v, vi);
    }
    max_bits[0] = max_p, max_bits[1] = max_m, max_bits[2] = max_v;
}

/* Any m below 2^-80 in magnitude, other than 0? */
static inline int FN(adam_any_small_m)(ptrdiff_t n, const REAL *restrict m)
{
    const REAL small = R(8.27180612553027674871e-25); /* 2^-80 */
    IREAL any = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        any |= (M(fabs)(m[i]) < small) & (m[i] != 0);
    return any != 0;
}

/* Which path each lane wants: 1 for a small m (adam_small_m), 2 for a small
 * g or v (then its group stays with adam_pass, whose float products would
 * meet it anyway), 0 for neither.  "Small" is a heuristic: both paths give
 * the same bits, so it only decides speed. */
static inline void FN(adam_classify)(ptrdiff_t n, const REAL *restrict grad,
                                     const REAL *restrict m, const REAL *restrict v,
                                     unsigned char *restrict cls)
{
    const REAL small_mv = R(8.27180612553027674871e-25); /* 2^-80 */
    const REAL small_g = R(9.09494701772928237915e-13);  /* 2^-40 */
    for (ptrdiff_t i = 0; i < n; i++) {
        const REAL am = M(fabs)(m[i]), av = M(fabs)(v[i]), ag = M(fabs)(grad[i]);
        const int small_m = (am < small_mv) & (am != 0);
        const int other = ((av < small_mv) & (av != 0)) | ((ag < small_g) & (ag != 0));
        cls[i] = (unsigned char)(small_m | (other << 1));
    }
}

/* Does the group of ADAM_GROUP classes at c (adam_classify's) go through
 * adam_small_m: some lane with a small m and none with a small g or v? */
static inline unsigned char FN(adam_group_small)(const unsigned char *c)
{
    uint64_t lo, hi;
    memcpy(&lo, c, 8);
    memcpy(&hi, c + 8, 8);
    const uint64_t any = lo | hi, ones = 0x0101010101010101u;
    return (any & ones) != 0 && (any & (ones << 1)) == 0;
}

/* Sort the lanes every ADAM_RESORT steps, not every step: which m are tiny
 * changes slowly (m ← 0.9 m takes hundreds of steps to get there), and the
 * sorting passes (adam_any_small_m, adam_classify) cost a quarter of the
 * update on the digits network. */
#define ADAM_RESORT 16

/* Whether Adam's commit keeps its sorting of the lanes in opt->hints (the
 * buffer covers the n_total elements) and whether it reuses the last one. */
static void FN(adam_hints_plan)(const cbp_optim *opt, int64_t t, ptrdiff_t n_total, int *keep,
                                int *reuse)
{
    *keep = opt->hints != NULL && opt->n_hints >= (n_total + ADAM_GROUP - 1) / ADAM_GROUP;
    *reuse = *keep && opt->hints_step > 0 && t >= opt->hints_step &&
             t - opt->hints_step < ADAM_RESORT;
}

/* Adam's commit over n elements of p and g, and of the state and the hints
 * from element `off` (a multiple of ADAM_CHUNK, so that its chunks are
 * those of a commit over the whole buffer); raises max_bits[0..2]. */
CBP_VECTOR_CLONES
static void FN(adam_commit_range)(const cbp_optim *opt, int64_t t, ptrdiff_t off, ptrdiff_t n,
                                  REAL *p, const REAL *g, int keep, int reuse, IREAL *max_bits)
{
    const REAL step_size = FN(adam_step_size)(opt, t), bc2_sqrt = FN(adam_bc2_sqrt)(opt, t);
    REAL *m = (REAL *)opt->buf1 + off, *v = (REAL *)opt->buf2 + off;
    const int plain = FN(adam_plain)(opt);
    const int64_t z = FN(zero_bits);
    unsigned char cls[ADAM_CHUNK], local[ADAM_CHUNK / ADAM_GROUP];
    for (ptrdiff_t start = 0; start < n; start += ADAM_CHUNK) {
        const ptrdiff_t len = n - start < ADAM_CHUNK ? n - start : ADAM_CHUNK;
        const ptrdiff_t groups = (len + ADAM_GROUP - 1) / ADAM_GROUP;
        REAL *pc = p + start, *mc = m + start, *vc = v + start;
        const REAL *gc = g + start;
        if (!plain) {
            FN(adam_pass)(opt, step_size, bc2_sqrt, len, pc, gc, mc, vc, ADAM_COMMIT, max_bits);
            continue;
        }
        unsigned char *hint = keep ? opt->hints + (off + start) / ADAM_GROUP : local;
        if (!reuse) {
            if (!FN(adam_any_small_m)(len, mc)) {
                memset(hint, 0, (size_t)groups);
            } else {
                FN(adam_classify)(len, gc, mc, vc, cls);
                memset(cls + len, 0, (size_t)(groups * ADAM_GROUP - len));
                for (ptrdiff_t k = 0; k < groups; k++)
                    hint[k] = FN(adam_group_small)(cls + k * ADAM_GROUP);
            }
        }
        /* Runs of groups [run, k) taking the same path. */
        ptrdiff_t run = 0;
        for (ptrdiff_t k = 1; k <= groups; k++) {
            if (k < groups && hint[k] == hint[run])
                continue;
            const ptrdiff_t a = run * ADAM_GROUP, b = k < groups ? k * ADAM_GROUP : len;
            if (hint[run])
                FN(adam_small_m)(opt, step_size, bc2_sqrt, b - a, pc + a, gc + a, mc + a, vc + a,
                                 max_bits, z);
            else
                FN(adam_pass)(opt, step_size, bc2_sqrt, b - a, pc + a, gc + a, mc + a, vc + a,
                              ADAM_COMMIT, max_bits);
            run = k;
        }
    }
}
#else
static void FN(adam_hints_plan)(const cbp_optim *opt, int64_t t, ptrdiff_t n_total, int *keep,
                                int *reuse)
{
    (void)opt, (void)t, (void)n_total;
    *keep = *reuse = 0; /* float only (subnormal m) */
}

CBP_VECTOR_CLONES
static void FN(adam_commit_range)(const cbp_optim *opt, int64_t t, ptrdiff_t off, ptrdiff_t n,
                                  REAL *p, const REAL *g, int keep, int reuse, IREAL *max_bits)
{
    (void)keep, (void)reuse;
    FN(adam_pass)(opt, FN(adam_step_size)(opt, t), FN(adam_bc2_sqrt)(opt, t), n, p, g,
                  (REAL *)opt->buf1 + off, (REAL *)opt->buf2 + off, ADAM_COMMIT, max_bits);
}
#endif

/* After Adam's commit of step t (its maxima's bits in max_bits): the
 * maxima it wrote, the sorting's step, the step count. */
static void FN(adam_committed)(cbp_optim *opt, int64_t t, const IREAL *max_bits, int keep,
                               int reuse)
{
    REAL r;
    memcpy(&r, &max_bits[0], sizeof r), opt->max_p = r;
    memcpy(&r, &max_bits[1], sizeof r), opt->max_m = r;
    memcpy(&r, &max_bits[2], sizeof r), opt->max_v = r;
    if (keep && !reuse && FN(adam_plain)(opt))
        opt->hints_step = t; /* adam_commit_range sorted the lanes (float, plain Adam) */
    opt->maxima_fresh = 1;
    opt->step = t;
}

CBP_VECTOR_CLONES
static int FN(sgd_check)(const cbp_optim *opt, ptrdiff_t off, ptrdiff_t n, REAL *p,
                         const REAL *g)
{
    return FN(sgd_pass)(opt, off, n, p, g, 0);
}
CBP_VECTOR_CLONES
static int FN(sgd_commit)(const cbp_optim *opt, ptrdiff_t off, ptrdiff_t n, REAL *p,
                          const REAL *g)
{
    return FN(sgd_pass)(opt, off, n, p, g, 1);
}

int FN(optim_step)(cbp_optim *opt, ptrdiff_t n, REAL *p, const REAL *g)
{
    if (opt->kind == CBP_SGD) {
        if (FN(sgd_check)(opt, 0, n, p, g))
            return CBP_NONFINITE_UPDATE;
        FN(sgd_commit)(opt, 0, n, p, g);
        if (opt->momentum != 0) /* the momentum buffer now holds a value */
            opt->step += 1;
        return CBP_OK;
    }
    int64_t t = opt->step + 1;
    int known_finite = opt->maxima_fresh && FN(adam_maxima_bound)(opt, t, FN(max_abs)(n, g));
    if (!known_finite && FN(adam_bound)(opt, t, 0, n, p, g) && FN(adam_check)(opt, t, 0, n, p, g))
        return CBP_NONFINITE_UPDATE;
    int keep, reuse;
    FN(adam_hints_plan)(opt, t, n, &keep, &reuse);
    IREAL max_bits[3] = {0, 0, 0};
    FN(adam_commit_range)(opt, t, 0, n, p, g, keep, reuse, max_bits);
    FN(adam_committed)(opt, t, max_bits, keep, reuse);
    return CBP_OK;
}

/* optim_step on cbp's pool: called by every part of a pool job, part
 * `part` of `parts` takes the elements [s0, s1) (whole ADAM_CHUNKs, so that
 * each chunk is the one optim_step would make).  The parts meet at a
 * barrier after each dry run, combine their answers in `sh` alike and take
 * the same decision; the passes are element-wise, so the result is
 * optim_step's bit for bit.  Only the parameters and the state are
 * written here: cbp_optim_step_done, on the caller after the job, then
 * updates opt itself (the parts read it throughout). */
static void FN(optim_slice)(ptrdiff_t n, int part, int parts, ptrdiff_t *s0, ptrdiff_t *s1)
{
    const ptrdiff_t unit = 4096, units = (n + unit - 1) / unit;
    ptrdiff_t a = units * part / parts * unit, b = units * (part + 1) / parts * unit;
    *s0 = a < n ? a : n;
    *s1 = b < n ? b : n;
}

static int FN(any_part)(const int *flags, int parts)
{
    int any = 0;
    for (int q = 0; q < parts; q++)
        any |= flags[q];
    return any;
}

int FN(optim_step_part)(const cbp_optim *opt, ptrdiff_t n, REAL *p, const REAL *g, int part,
                        int parts, cbp_optim_share *sh)
{
    ptrdiff_t s0, s1;
    FN(optim_slice)(n, part, parts, &s0, &s1);
    const ptrdiff_t len = s1 - s0;
    REAL *ps = p + s0;
    const REAL *gs = g + s0;
    if (opt->kind == CBP_SGD) {
        sh->bad[0][part] = FN(sgd_check)(opt, s0, len, ps, gs);
        cbp_pool_barrier();
        if (FN(any_part)(sh->bad[0], parts))
            return CBP_NONFINITE_UPDATE;
        FN(sgd_commit)(opt, s0, len, ps, gs);
        return CBP_OK;
    }
    const int64_t t = opt->step + 1;
    int known_finite = 0;
    if (opt->maxima_fresh) {
        sh->g_max[part] = FN(max_abs)(len, gs); /* inf if some g is not finite */
        cbp_pool_barrier();
        double g_max = 0;
        for (int q = 0; q < parts; q++)
            g_max = sh->g_max[q] > g_max ? sh->g_max[q] : g_max;
        known_finite = FN(adam_maxima_bound)(opt, t, g_max);
    }
    if (!known_finite) {
        sh->bad[1][part] = FN(adam_bound)(opt, t, s0, len, ps, gs);
        cbp_pool_barrier();
        if (FN(any_part)(sh->bad[1], parts)) {
            sh->bad[2][part] = FN(adam_check)(opt, t, s0, len, ps, gs);
            cbp_pool_barrier();
            if (FN(any_part)(sh->bad[2], parts))
                return CBP_NONFINITE_UPDATE;
        }
    }
    int keep, reuse;
    FN(adam_hints_plan)(opt, t, n, &keep, &reuse);
    IREAL max_bits[3] = {0, 0, 0};
    FN(adam_commit_range)(opt, t, s0, len, ps, gs, keep, reuse, max_bits);
    for (int k = 0; k < 3; k++)
        sh->max_bits[part][k] = max_bits[k];
    return CBP_OK;
}

void FN(optim_step_done)(cbp_optim *opt, ptrdiff_t n, const cbp_optim_share *sh, int parts)
{
    if (opt->kind == CBP_SGD) {
        if (opt->momentum != 0)
            opt->step += 1;
        return;
    }
    const int64_t t = opt->step + 1;
    int keep, reuse;
    FN(adam_hints_plan)(opt, t, n, &keep, &reuse);
    IREAL max_bits[3] = {0, 0, 0};
    for (int q = 0; q < parts; q++)
        for (int k = 0; k < 3; k++)
            max_bits[k] = (IREAL)sh->max_bits[q][k] > max_bits[k] ? (IREAL)sh->max_bits[q][k]
                                                                   : max_bits[k];
    FN(adam_committed)(opt, t, max_bits, keep, reuse);
}

int FN(optim_update)(cbp_optim *opt, ptrdiff_t n, REAL *p, const REAL *g)
{
    opt->maxima_fresh = 0;
    return FN(optim_step)(opt, n, p, g);
}
