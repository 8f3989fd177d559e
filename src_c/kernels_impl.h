/*
 * kernels_impl.h — the fully connected layer's formulas, one routine each.
 * Template: see instantiate.h.  Arguments are validated by the caller.
 *
 * W is (n_out, n_in) row-major.  "_vec" routines take one sample and use
 * BLAS level 2 (gemv, ger), the derivation's own form; the batch routines
 * take one sample per row and use gemm.
 */

/* In-register transposes of one square block for transpose_add: 16 x 16
 * floats or 8 x 8 doubles, src and dst rows ld_src and ld_dst apart;
 * add[k] (if not NULL) joins dst's column k. */
#ifndef CBP_TRANSPOSE_BLOCKS
#if defined(__GNUC__) && defined(__x86_64__) && !defined(CBP_NO_CLONES)
#define CBP_TRANSPOSE_BLOCKS 1
#include <immintrin.h>
__attribute__((target("avx512f"))) static void cbp_transpose_block_f32(
    const float *src, ptrdiff_t ld_src, float *dst, ptrdiff_t ld_dst, const float *add)
{
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_ps(src + i * ld_src);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int i = 0; i < 8; i++) {
        int a = i / 4 * 8 + i % 4, b = a + 4;
        t[a] = _mm512_shuffle_f32x4(r[a], r[b], 0x88);
        t[b] = _mm512_shuffle_f32x4(r[a], r[b], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
    if (add != NULL) {
        const __m512 b = _mm512_loadu_ps(add);
        for (int k = 0; k < 16; k++)
            _mm512_storeu_ps(dst + k * ld_dst, _mm512_add_ps(r[k], b));
    } else {
        for (int k = 0; k < 16; k++)
            _mm512_storeu_ps(dst + k * ld_dst, r[k]);
    }
}
__attribute__((target("avx512f"))) static void cbp_transpose_block_f64(
    const double *src, ptrdiff_t ld_src, double *dst, ptrdiff_t ld_dst, const double *add)
{
    __m512d r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm512_loadu_pd(src + i * ld_src);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        int a = i / 2 * 4 + i % 2, b = a + 2;
        r[a] = _mm512_shuffle_f64x2(t[a], t[b], 0x88);
        r[b] = _mm512_shuffle_f64x2(t[a], t[b], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f64x2(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f64x2(r[i], r[i + 4], 0xdd);
    }
    if (add != NULL) {
        const __m512d b = _mm512_loadu_pd(add);
        for (int k = 0; k < 8; k++)
            _mm512_storeu_pd(dst + k * ld_dst, _mm512_add_pd(t[k], b));
    } else {
        for (int k = 0; k < 8; k++)
            _mm512_storeu_pd(dst + k * ld_dst, t[k]);
    }
}
#else
#define CBP_TRANSPOSE_BLOCKS 0
#endif
#endif

/* z = W x + b.  x (n_in), b (n_out), z (n_out). */
void FN(linear_forward_vec)(const cbp_blas *blas, int n_out, int n_in, const REAL *W,
                            const REAL *b, const REAL *x, REAL *z)
{
    for (int j = 0; j < n_out; j++)
        z[j] = b[j];
    FN(gemv_rm)(blas, 0, n_out, n_in, 1, W, x, 1, z);
}

/* Z = X Wᵀ + b.  X (n, n_in), Z (n, n_out): each row of Z starts as b. */
void FN(linear_forward)(const cbp_blas *blas, int n, int n_out, int n_in,
                        const REAL *W, const REAL *b, const REAL *X, REAL *Z)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n_out; j++)
            Z[(ptrdiff_t)i * n_out + j] = b[j];
    FN(gemm_rm)(blas, 0, 1, n, n_out, n_in, 1, X, n_in, W, n_in, 1, Z, n_out);
}

/* dst (cols, rows) = srcᵀ for src (rows, cols), both row-major; with `add`
 * (rows values, or NULL) added: dst[j][i] = src[i][j] + add[i].  Square
 * blocks of CBP_T lanes are transposed in registers where the CPU has
 * AVX-512 (transpose_block); the edges element by element.  The values
 * are moved, not computed: both ways give the same bits. */
void FN(transpose_add)(int rows, int cols, const REAL *src, const REAL *add, REAL *dst)
{
    int r_full = 0, c_full = 0;
#if CBP_TRANSPOSE_BLOCKS
    if (__builtin_cpu_supports("avx512f")) {
        enum { T = REAL_IS_FLOAT ? 16 : 8 };
        r_full = rows / T * T, c_full = cols / T * T;
        for (int i = 0; i < r_full; i += T)
            for (int j = 0; j < c_full; j += T)
                FN(transpose_block)(src + (ptrdiff_t)i * cols + j, cols,
                                    dst + (ptrdiff_t)j * rows + i, rows,
                                    add != NULL ? add + i : NULL);
    }
#endif
    for (int i = 0; i < rows; i++) {
        const REAL *row = src + (ptrdiff_t)i * cols;
        for (int j = i < r_full ? c_full : 0; j < cols; j++)
            dst[(ptrdiff_t)j * rows + i] = add != NULL ? row[j] + add[i] : row[j];
    }
}

/* Z = X Wᵀ + b as Zᵀ = W Xᵀ, the product OpenBLAS calls "NN", between two
 * transposes: XT (n_in, n) and ZT (n_out, n) are workspace.  The sums are
 * the same; see cbp_forward_nn_pays (cbp.h) for when it is faster. */
void FN(linear_forward_nn)(const cbp_blas *blas, int n, int n_out, int n_in, const REAL *W,
                           const REAL *b, const REAL *X, REAL *XT, REAL *ZT, REAL *Z)
{
    FN(transpose_add)(n, n_in, X, NULL, XT);
    FN(gemm_rm)(blas, 0, 0, n_out, n, n_in, 1, W, n_in, XT, n, 0, ZT, n);
    FN(transpose_add)(n_out, n, ZT, b, Z);
}

/* dW = beta dW + δ xᵀ.  δ (n_out), x (n_in), dW (n_out, n_in). */
void FN(outer_vec)(const cbp_blas *blas, int n_out, int n_in, const REAL *delta,
                   const REAL *x, REAL beta, REAL *dW)
{
    if (beta == 0) {
        ptrdiff_t size = (ptrdiff_t)n_out * n_in;
        for (ptrdiff_t i = 0; i < size; i++)
            dW[i] = 0;
    }
    FN(ger_rm)(blas, n_out, n_in, 1, delta, x, dW);
}

/* dW = beta dW + Δᵀ X = Σ_rows δ_i x_iᵀ.  Δ (n, n_out), X (n, n_in). */
void FN(outer)(const cbp_blas *blas, int n, int n_out, int n_in, const REAL *Delta,
               const REAL *X, REAL beta, REAL *dW)
{
    FN(gemm_rm)(blas, 1, 0, n_out, n_in, n, 1, Delta, n_out, X, n_in, beta, dW, n_in);
}

/* db = beta db + alpha Σ_rows Δ.  The add gate distributes: every sample's
 * δ flows unchanged into b, so db sums them.  Rows are read in order (Δ is
 * row-major) into a block of double accumulators, so the sum runs in
 * double for both precisions.  The bias update b ← b − lr Σ Δ is the
 * call with beta = 1, alpha = −lr. */
CBP_VECTOR_CLONES
void FN(bias_sum)(ptrdiff_t n, int n_out, const REAL *Delta, REAL beta, REAL alpha,
                  REAL *db)
{
    enum { BLOCK = 256 };
    double acc[BLOCK];
    for (int j0 = 0; j0 < n_out; j0 += BLOCK) {
        int width = n_out - j0 < BLOCK ? n_out - j0 : BLOCK;
        for (int j = 0; j < width; j++)
            acc[j] = 0.0;
        for (ptrdiff_t i = 0; i < n; i++) {
            const REAL *row = Delta + i * n_out + j0;
            for (int j = 0; j < width; j++)
                acc[j] += row[j];
        }
        for (int j = 0; j < width; j++) {
            REAL sum = (REAL)acc[j]; /* the gradient, rounded as stored */
            db[j0 + j] = beta == 0 ? alpha * sum : db[j0 + j] + alpha * sum;
        }
    }
}

void FN(bias_grad)(ptrdiff_t n, int n_out, const REAL *Delta, REAL beta, REAL *db)
{
    FN(bias_sum)(n, n_out, Delta, beta, 1, db);
}

/* dx = Wᵀ δ.  δ (n_out), dx (n_in). */
void FN(matvec_t_vec)(const cbp_blas *blas, int n_out, int n_in, const REAL *W,
                      const REAL *delta, REAL *dx)
{
    FN(gemv_rm)(blas, 1, n_out, n_in, 1, W, delta, 0, dx);
}

/* dX = Δ W.  Δ (n, n_out), dX (n, n_in). */
void FN(matvec_t)(const cbp_blas *blas, int n, int n_out, int n_in, const REAL *W,
                  const REAL *Delta, REAL *dX)
{
    FN(gemm_rm)(blas, 0, 0, n, n_in, n_out, 1, Delta, n_out, W, n_in, 0, dX, n_in);
}

/* δ = (W_nextᵀ δ_next) ⊙ σ'(z): BLAS writes W_nextᵀ δ_next into δ, then
 * one pass scales it by σ'(z) while it is still in cache.  The Jacobian
 * of an element-wise σ is diagonal, hence the Hadamard product. */
void FN(backprop_delta_vec)(const cbp_blas *blas, int act, int n_next, int n_hidden,
                            const REAL *W_next, const REAL *delta_next, const REAL *z,
                            REAL *delta)
{
    FN(matvec_t_vec)(blas, n_next, n_hidden, W_next, delta_next, delta);
    FN(activation_backward)(act, n_hidden, z, delta);
}

/* Δ = (Δ_next W_next) ⊙ σ'(Z), row by row. */
void FN(backprop_delta)(const cbp_blas *blas, int act, int n, int n_next, int n_hidden,
                        const REAL *W_next, const REAL *Delta_next, const REAL *Z,
                        REAL *Delta)
{
    FN(matvec_t)(blas, n, n_next, n_hidden, W_next, Delta_next, Delta);
    FN(activation_backward)(act, (ptrdiff_t)n * n_hidden, Z, Delta);
}

/* max |src_i|, or +inf if some src_i is not finite, and dst = src unless
 * dst is NULL: a copy and the reduction in one pass (the branch on dst is
 * hoisted out of the loop; the max runs on the bits, see bits_impl.h). */
CBP_VECTOR_CLONES
double FN(copy_max_abs)(ptrdiff_t size, const REAL *src, REAL *dst)
{
    IREAL m = 0;
    for (ptrdiff_t i = 0; i < size; i++) {
        if (dst != NULL)
            dst[i] = src[i];
        m = FN(max_bits)(m, src[i]);
    }
    return FN(bits_max)(m);
}

double FN(max_abs)(ptrdiff_t size, const REAL *x)
{
    return FN(copy_max_abs)(size, x, NULL);
}

/* 1 if every x_i is finite, else 0: the running max of |x|'s bits
 * (bits_impl.h), a load, a mask and an integer max per vector.  Measured
 * 2026-12-07 (Xeon, AVX-512 clone) against an OR of the comparisons
 * fabs(x) <= max, whose 64-bit masks the compiler packed to 32-bit lanes:
 * 46 MB of float64 from memory on two threads 1.6–1.7 ms against
 * 2.1–2.2, and fit's check at M128d (21 MB) 0.71 ms against 0.93–0.95;
 * float32 about the same either way. */
CBP_VECTOR_CLONES
int FN(all_finite)(ptrdiff_t size, const REAL *x)
{
    IREAL m = 0;
    for (ptrdiff_t i = 0; i < size; i++)
        m = FN(max_bits)(m, x[i]);
    return FN(bits_max)(m) <= REAL_MAX;
}
