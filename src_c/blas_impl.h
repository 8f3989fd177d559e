/*
 * blas_impl.h — row-major wrappers over the Fortran BLAS in the table.
 * Template: see instantiate.h.  Arguments are validated by the caller.
 *
 * A row-major (r, c) matrix with row length ld is, to column-major BLAS,
 * its transpose: a (c, r) matrix with leading dimension ld.  So the
 * row-major C = op(A) op(B) is the column-major Cᵀ = op(B)ᵀ op(A)ᵀ:
 * swap the operands and m/n, keep each trans flag.  No copies.
 */

void FN(gemm_rm)(const cbp_blas *blas, int trans_a, int trans_b, int m, int n, int k,
                 REAL alpha, const REAL *A, int lda, const REAL *B, int ldb,
                 REAL beta, REAL *C, int ldc)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) { /* op(A) op(B) is the zero matrix: C = beta C */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                C[(ptrdiff_t)i * ldc + j] = beta == 0 ? 0 : beta * C[(ptrdiff_t)i * ldc + j];
        return;
    }
    char ta = trans_a ? 'T' : 'N';
    char tb = trans_b ? 'T' : 'N';
    BLAS(gemm)(&tb, &ta, &n, &m, &k, &alpha, (REAL *)B, &ldb, (REAL *)A, &lda, &beta,
               C, &ldc);
}

void FN(gemv_rm)(const cbp_blas *blas, int trans, int m, int n, REAL alpha,
                 const REAL *A, const REAL *x, REAL beta, REAL *y)
{
    int len_y = trans ? n : m;
    if (len_y == 0)
        return;
    if (m == 0 || n == 0) { /* empty product: y = beta y */
        for (int i = 0; i < len_y; i++)
            y[i] = beta == 0 ? 0 : beta * y[i];
        return;
    }
    /* Row-major A (m, n) is column-major Aᵀ (n, m), lda = n. */
    char t = trans ? 'N' : 'T';
    int one = 1;
    BLAS(gemv)(&t, &n, &m, &alpha, (REAL *)A, &n, (REAL *)x, &one, &beta, y, &one);
}

void FN(ger_rm)(const cbp_blas *blas, int m, int n, REAL alpha, const REAL *x,
                const REAL *y, REAL *A)
{
    if (m == 0 || n == 0)
        return;
    /* Column-major Aᵀ (n, m) += alpha y xᵀ. */
    int one = 1;
    BLAS(ger)(&n, &m, &alpha, (REAL *)y, &one, (REAL *)x, &one, A, &n);
}
