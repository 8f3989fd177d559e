/*
 * losses_impl.h — losses fused with their gradient.
 * Template: see instantiate.h.  Arguments are validated by the caller.
 */

/* Softmax cross-entropy.  For one row z with label y:
 *   l  = −log softmax(z)[y] = logsumexp(z) − z[y]
 *   dl/dz = softmax(z) − onehot(y)
 * logsumexp subtracts the row maximum first, so no exp overflows.  With
 * weights the mean is Σ w_i l_i / Σ w_i and row i's gradient is scaled by
 * w_i / Σ w_i.  Sums run in double for both precisions. */
double FN(softmax_cross_entropy)(ptrdiff_t n, int n_classes, const REAL *Z,
                                 const int64_t *y, const REAL *w, REAL *dZ)
{
    double weight_sum = 0.0;
    if (w == NULL)
        weight_sum = (double)n;
    else
        for (ptrdiff_t i = 0; i < n; i++)
            weight_sum += w[i];

    double total = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const REAL *z = Z + i * n_classes;
        REAL *dz = dZ + i * n_classes;
        double wi = w == NULL ? 1.0 : (double)w[i];
        REAL zmax = z[0];
        for (int c = 1; c < n_classes; c++)
            zmax = z[c] > zmax ? z[c] : zmax;
        double z_label = z[y[i]]; /* read before dz (which may alias z) is written */
        double sum = 0.0;
        for (int c = 0; c < n_classes; c++) {
            REAL e = M(exp)(z[c] - zmax);
            dz[c] = e;
            sum += e;
        }
        double lse = (double)zmax + log(sum);
        double loss_i = lse - z_label;
        if (wi != 0)
            total += wi * loss_i;
        /* p_c = e_c / sum; gradient row = (p − onehot) w_i / Σ w */
        double scale = weight_sum > 0 ? wi / weight_sum : 0.0;
        double p_scale = scale / sum;
        for (int c = 0; c < n_classes; c++)
            dz[c] = (REAL)(dz[c] * p_scale);
        dz[y[i]] -= (REAL)scale;
    }
    return weight_sum > 0 ? total / weight_sum : 0.0;
}
