/*
 * optim_impl.h — optimizer updates over the flat parameter buffer, one
 * pass each, transcribing torch.optim's single-tensor implementations
 * (scalars computed in double, element arithmetic in REAL, as PyTorch
 * does for a tensor of that dtype).
 * Template: see instantiate.h.  Arguments are validated by the caller.
 */

/* SGD (torch.optim.SGD):
 *   g ← g + λ p                          (weight_decay λ)
 *   b ← g  at the first step, else  b ← μ b + (1 − τ) g     (momentum μ, dampening τ)
 *   g ← g + μ b  (Nesterov)  or  g ← b
 *   p ← p − lr g */
static void FN(sgd_update)(cbp_optim *opt, ptrdiff_t n, REAL *p, const REAL *grad)
{
    const REAL lr = (REAL)opt->lr, wd = (REAL)opt->weight_decay;
    const REAL mu = (REAL)opt->momentum, keep = (REAL)(1 - opt->dampening);
    REAL *buf = opt->buf1;
    const int first = opt->step == 0, nesterov = opt->nesterov;
    if (mu == 0) {
        for (ptrdiff_t i = 0; i < n; i++) {
            REAL g = wd != 0 ? grad[i] + wd * p[i] : grad[i];
            p[i] = p[i] + (-lr) * g;
        }
        return;
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL g = wd != 0 ? grad[i] + wd * p[i] : grad[i];
        REAL b = first ? g : mu * buf[i] + keep * g;
        buf[i] = b;
        g = nesterov ? g + mu * b : b;
        p[i] = p[i] + (-lr) * g;
    }
}

/* Adam (torch.optim.Adam) and AdamW (decoupled weight decay), step t:
 *   AdamW: p ← p (1 − lr λ);   Adam: g ← g + λ p
 *   m ← m + (1 − β1)(g − m)              (lerp)
 *   v ← β2 v + (1 − β2) g²
 *   p ← p − (lr / (1 − β1ᵗ)) m / (√v / √(1 − β2ᵗ) + ε) */
static void FN(adam_update)(cbp_optim *opt, ptrdiff_t n, REAL *p, const REAL *grad)
{
    const double t = (double)opt->step; /* already incremented */
    const int decoupled = opt->kind == CBP_ADAMW;
    const REAL wd = (REAL)opt->weight_decay;
    const REAL decay = (REAL)(1 - opt->lr * opt->weight_decay);
    const REAL one_minus_b1 = (REAL)(1 - opt->beta1);
    const REAL b2 = (REAL)opt->beta2, one_minus_b2 = (REAL)(1 - opt->beta2);
    const REAL step_size = (REAL)(opt->lr / (1 - pow(opt->beta1, t)));
    const REAL bc2_sqrt = (REAL)sqrt(1 - pow(opt->beta2, t));
    const REAL eps = (REAL)opt->eps;
    REAL *m = opt->buf1, *v = opt->buf2;
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL g = grad[i], pi = p[i];
        if (decoupled)
            pi = pi * decay;
        else if (wd != 0)
            g = g + wd * pi;
        REAL mi = m[i] + one_minus_b1 * (g - m[i]);
        REAL vi = v[i] * b2 + one_minus_b2 * g * g;
        m[i] = mi;
        v[i] = vi;
        REAL denom = M(sqrt)(vi) / bc2_sqrt + eps;
        p[i] = pi + (-step_size) * (mi / denom);
    }
}

void FN(optim_update)(cbp_optim *opt, ptrdiff_t n, REAL *p, const REAL *g)
{
    if (opt->kind == CBP_SGD) {
        FN(sgd_update)(opt, n, p, g);
        opt->step += 1;
    } else {
        opt->step += 1;
        FN(adam_update)(opt, n, p, g);
    }
}
