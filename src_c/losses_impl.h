/*
 * losses_impl.h — losses fused with their gradient (see cbp.h for the
 * weighting convention shared by all three).
 * Template: see instantiate.h.  Arguments are validated by the caller.
 *
 * Every exponential here has an argument <= 0 (a logit less its row's
 * maximum, −|z|), so it is vmath_impl.h's, which vectorizes: the
 * softmax's loop over the whole batch is vector code in both precisions.
 */
#include "vmath_impl.h"

/* Row i's share of the mean: w_i / weight_total (0 when the total is 0). */
static inline double FN(row_scale)(const REAL *w, ptrdiff_t i, double weight_total)
{
    if (!(weight_total > 0))
        return 0.0;
    return (w == NULL ? 1.0 : (double)w[i]) / weight_total;
}

/* Softmax cross-entropy.  For one row z with label y:
 *   l  = −log softmax(z)[y] = logsumexp(z) − z[y]
 *   ∂l/∂z = softmax(z) − onehot(y)
 * logsumexp subtracts the row maximum first, so no exp overflows.  Three
 * passes, so that the exponentials run as one vectorized loop over the
 * whole batch: shift each row by its maximum (adding the loss's
 * zmax − z_y term), exponentiate, then normalize each row (adding its
 * log Σ e term).  dZ may alias Z. */
CBP_VECTOR_CLONES
double FN(softmax_cross_entropy)(ptrdiff_t n, int n_classes, const REAL *Z,
                                 const int64_t *y, const REAL *w, double weight_total,
                                 REAL *dZ)
{
    double total = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const REAL *z = Z + i * n_classes;
        REAL *dz = dZ + i * n_classes;
        REAL zmax = z[0];
        for (int c = 1; c < n_classes; c++)
            zmax = z[c] > zmax ? z[c] : zmax;
        double scale = FN(row_scale)(w, i, weight_total);
        if (scale != 0)
            /* (zmax − z_y) on its own: zmax + log(sum) would absorb log(sum)
             * when |zmax| is huge (1e300 + log 3 == 1e300).  Read before
             * dz (which may alias z) is written. */
            total += scale * ((double)zmax - (double)z[y[i]]);
        for (int c = 0; c < n_classes; c++)
            dz[c] = z[c] - zmax;
    }
    ptrdiff_t size = n * n_classes;
    for (ptrdiff_t k = 0; k < size; k++)
        dZ[k] = FN(vm_exp_nonpos)(dZ[k]);
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL *dz = dZ + i * n_classes;
        double scale = FN(row_scale)(w, i, weight_total);
        double sum = 0.0;
        for (int c = 0; c < n_classes; c++)
            sum += dz[c];
        if (scale != 0)
            total += scale * log(sum);
        double p_scale = scale / sum; /* p_c = e_c / sum */
        for (int c = 0; c < n_classes; c++)
            dz[c] = (REAL)(dz[c] * p_scale);
        dz[y[i]] -= (REAL)scale;
    }
    return total;
}

/* Binary cross-entropy on logits, element (z, y):
 *   l = −[y log σ(z) + (1 − y) log(1 − σ(z))] = max(z, 0) − z y + log1p(e^−|z|)
 *   ∂l/∂z = σ(z) − y
 * Row i's loss is the mean over its n_out elements. */
double FN(binary_cross_entropy)(ptrdiff_t n, int n_out, const REAL *Z, const REAL *Y,
                                const REAL *w, double weight_total, REAL *dZ)
{
    double total = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double scale = FN(row_scale)(w, i, weight_total) / n_out;
        double row = 0.0;
        for (int j = 0; j < n_out; j++) {
            ptrdiff_t k = i * n_out + j;
            REAL z = Z[k], y = Y[k];
            REAL e = FN(vm_exp_nonpos)(-M(fabs)(z)); /* e^−|z| ∈ [0, 1] */
            REAL s = z >= 0 ? 1 / (1 + e) : e / (1 + e); /* σ(z) */
            row += (double)((z > 0 ? z : 0) - z * y) + (double)FN(vm_log1p_unit)(e);
            dZ[k] = (REAL)((s - y) * scale);
        }
        if (scale != 0) /* a row of weight 0 is absent, whatever its loss */
            total += scale * row;
    }
    return total;
}

/* Squared error, element (p, y):  l = (p − y)²,  ∂l/∂p = 2 (p − y).
 * Row i's loss is the mean over its n_out elements. */
double FN(mean_squared_error)(ptrdiff_t n, int n_out, const REAL *P, const REAL *Y,
                              const REAL *w, double weight_total, REAL *dP)
{
    double total = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double scale = FN(row_scale)(w, i, weight_total) / n_out;
        double row = 0.0;
        if (scale == 0) { /* a row of weight 0 is absent: (p − y)² may overflow, 0 · inf */
            for (int j = 0; j < n_out; j++)
                dP[i * n_out + j] = 0;
            continue;
        }
        for (int j = 0; j < n_out; j++) {
            ptrdiff_t k = i * n_out + j;
            double r = (double)P[k] - (double)Y[k];
            row += r * r;
            dP[k] = (REAL)(2 * r * scale);
        }
        total += scale * row;
    }
    return total;
}

/* softmax(z) = e^(z − max z) / Σ e^(z − max z), row by row, in place. */
CBP_VECTOR_CLONES
void FN(softmax_rows)(ptrdiff_t n, int n_classes, REAL *Z)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        REAL *z = Z + i * n_classes;
        REAL zmax = z[0];
        for (int c = 1; c < n_classes; c++)
            zmax = z[c] > zmax ? z[c] : zmax;
        for (int c = 0; c < n_classes; c++)
            z[c] = FN(vm_exp_nonpos)(z[c] - zmax);
        double sum = 0.0;
        for (int c = 0; c < n_classes; c++)
            sum += z[c];
        double inv = 1.0 / sum;
        for (int c = 0; c < n_classes; c++)
            z[c] = (REAL)(z[c] * inv);
    }
}
