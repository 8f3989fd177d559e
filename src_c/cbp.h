/*
 * cbp.h — every C routine of cbp, declared in one place.
 *
 * C99 (pool.c: C11 atomics and POSIX threads), no Python.h.  Each
 * routine is written once in a *_impl.h
 * template and instantiated for float (suffix _f32) and double (_f64) by
 * instantiate.h.  All matrices are row-major and contiguous: a matrix
 * "(rows, cols)" has element (i, j) at offset i * cols + j.
 *
 * Contract: callers (the Cython bindings) validate every argument first.
 * These routines assume consistent shapes, sizes that fit a BLAS int,
 * non-NULL buffers of the stated sizes, and outputs that do not alias
 * inputs unless a routine says it allows it.  They never allocate (the
 * pool's threads are made once, on first use) and never call back into
 * Python, so they may run with the GIL released.
 */
#ifndef CBP_H
#define CBP_H

#include <stddef.h>
#include <stdint.h>

/* CBP_VECTOR_CLONES marks an element-wise loop that GCC compiles three
 * times on x86-64 Linux: for AVX-512F, for AVX2 and for the baseline
 * (SSE2), picked at load time by the CPU (target_clones, an ifunc).  Only
 * vector width changes (AVX-512 also brings the 64-bit integer max that
 * the float64 max |x| loops use): setup.py passes -ffp-contract=off, so
 * no multiply-add is contracted, floating-point sums are not reassociated
 * into vector lanes, and every clone rounds every operation alike
 * (bit-identical results; a NaN's sign and payload aside, which IEEE 754
 * leaves open and the clones' instructions set differently).  Elsewhere (other compilers, platforms, musl, whose
 * loader has no ifunc, or CBP_NO_CLONES) it is empty. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    defined(__GLIBC__) && !defined(CBP_NO_CLONES)
#define CBP_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CBP_VECTOR_CLONES
#endif

/* ------------------------------------------------------------------ */
/* BLAS: the Fortran interface exported by scipy.linalg.cython_blas.   */
/* Column-major, every argument by pointer.  Cython fills the table.   */
/* ------------------------------------------------------------------ */

typedef void (*cbp_sgemm_t)(char *transa, char *transb, int *m, int *n, int *k,
                            float *alpha, float *a, int *lda, float *b, int *ldb,
                            float *beta, float *c, int *ldc);
typedef void (*cbp_dgemm_t)(char *transa, char *transb, int *m, int *n, int *k,
                            double *alpha, double *a, int *lda, double *b, int *ldb,
                            double *beta, double *c, int *ldc);
typedef void (*cbp_sgemv_t)(char *trans, int *m, int *n, float *alpha, float *a,
                            int *lda, float *x, int *incx, float *beta, float *y,
                            int *incy);
typedef void (*cbp_dgemv_t)(char *trans, int *m, int *n, double *alpha, double *a,
                            int *lda, double *x, int *incx, double *beta, double *y,
                            int *incy);
typedef void (*cbp_sger_t)(int *m, int *n, float *alpha, float *x, int *incx,
                           float *y, int *incy, float *a, int *lda);
typedef void (*cbp_dger_t)(int *m, int *n, double *alpha, double *x, int *incx,
                           double *y, int *incy, double *a, int *lda);
typedef void (*cbp_saxpy_t)(int *n, float *alpha, float *x, int *incx, float *y,
                            int *incy);
typedef void (*cbp_daxpy_t)(int *n, double *alpha, double *x, int *incx, double *y,
                            int *incy);

typedef struct cbp_blas {
    cbp_sgemm_t sgemm;
    cbp_dgemm_t dgemm;
    cbp_sgemv_t sgemv;
    cbp_dgemv_t dgemv;
    cbp_sger_t sger;
    cbp_dger_t dger;
    cbp_saxpy_t saxpy;
    cbp_daxpy_t daxpy;
} cbp_blas;

/* Row-major wrappers (blas_impl.h): no kernel thinks in Fortran order.
 * Dimensions of zero are handled here (no BLAS call is made with a zero
 * leading dimension).
 *
 * gemm_rm: C (m, n) = alpha op(A) op(B) + beta C, op(A) is (m, k),
 *          op(B) is (k, n); trans_a / trans_b are 0 or 1; lda, ldb, ldc
 *          are the row lengths of A, B, C as stored.
 * gemv_rm: y = alpha op(A) x + beta y with A (m, n) row-major;
 *          trans = 0: x is (n), y is (m); trans = 1: x is (m), y is (n).
 * ger_rm:  A (m, n) += alpha x yᵀ with x (m), y (n). */
void cbp_gemm_rm_f32(const cbp_blas *blas, int trans_a, int trans_b, int m, int n,
                     int k, float alpha, const float *A, int lda, const float *B,
                     int ldb, float beta, float *C, int ldc);
void cbp_gemm_rm_f64(const cbp_blas *blas, int trans_a, int trans_b, int m, int n,
                     int k, double alpha, const double *A, int lda, const double *B,
                     int ldb, double beta, double *C, int ldc);
void cbp_gemv_rm_f32(const cbp_blas *blas, int trans, int m, int n, float alpha,
                     const float *A, const float *x, float beta, float *y);
void cbp_gemv_rm_f64(const cbp_blas *blas, int trans, int m, int n, double alpha,
                     const double *A, const double *x, double beta, double *y);
void cbp_ger_rm_f32(const cbp_blas *blas, int m, int n, float alpha, const float *x,
                    const float *y, float *A);
void cbp_ger_rm_f64(const cbp_blas *blas, int m, int n, double alpha,
                    const double *x, const double *y, double *A);

/* ------------------------------------------------------------------ */
/* Activations (activations_impl.h)                                    */
/* ------------------------------------------------------------------ */

/* The order is the order of cbp.ops.ACTIVATIONS. */
typedef enum cbp_activation {
    CBP_IDENTITY = 0,
    CBP_RELU = 1,
    CBP_LEAKY_RELU = 2, /* slope 0.01 for z <= 0; σ'(0) = 0.01 */
    CBP_SIGMOID = 3,
    CBP_TANH = 4,
    CBP_SOFTPLUS = 5,
    CBP_ELU = 6,        /* alpha 1 */
    CBP_GELU = 7,       /* exact: z Φ(z) */
    CBP_NUM_ACTIVATIONS = 8
} cbp_activation;

/* a = σ(z), element-wise over `size` elements; a may alias z. */
void cbp_activation_forward_f32(int act, ptrdiff_t size, const float *z, float *a);
void cbp_activation_forward_f64(int act, ptrdiff_t size, const double *z, double *a);
/* d = σ'(z), element-wise; d may alias z. */
void cbp_activation_derivative_f32(int act, ptrdiff_t size, const float *z, float *d);
void cbp_activation_derivative_f64(int act, ptrdiff_t size, const double *z,
                                   double *d);
/* g ⊙= σ'(z): the Hadamard step of the delta recurrence, in place. */
void cbp_activation_backward_f32(int act, ptrdiff_t size, const float *z, float *g);
void cbp_activation_backward_f64(int act, ptrdiff_t size, const double *z, double *g);
/* The network's activation pass (and the fused training step's): a = σ(z)
 * where z is finite, NaN where it is not (an overflow, which a saturating
 * σ would hide), a may alias z; returns max |a|, or +inf if some a is not
 * finite. */
double cbp_activation_forward_max_f32(int act, ptrdiff_t size, const float *z, float *a);
double cbp_activation_forward_max_f64(int act, ptrdiff_t size, const double *z,
                                      double *a);
/* Δ ⊙= σ'(Z) for Δ, Z (n, width), sums = Σ_rows Δ (width), returning
 * max |Δ| (+inf if some entry is not finite); bit-identical to
 * activation_backward followed by bias_grad with beta = 0. */
double cbp_activation_backward_sum_max_f32(int act, ptrdiff_t n, int width,
                                           const float *Z, float *D, float *sums);
double cbp_activation_backward_sum_max_f64(int act, ptrdiff_t n, int width,
                                           const double *Z, double *D, double *sums);
/* The same on a block of columns: Δ, Z (n, width) with row length ld. */
double cbp_activation_backward_sum_max_ld_f32(int act, ptrdiff_t n, int width, ptrdiff_t ld,
                                              const float *Z, float *D, float *sums);
double cbp_activation_backward_sum_max_ld_f64(int act, ptrdiff_t n, int width, ptrdiff_t ld,
                                              const double *Z, double *D, double *sums);

/* ------------------------------------------------------------------ */
/* Kernels: the formulas of the derivation (kernels_impl.h)            */
/* W is (n_out, n_in).  "_vec" is the one-sample form (BLAS level 2),  */
/* the plain name the batch form (rows are samples, BLAS level 3).     */
/* ------------------------------------------------------------------ */

/* z = W x + b.  x (n_in), b (n_out), z (n_out). */
void cbp_linear_forward_vec_f32(const cbp_blas *blas, int n_out, int n_in,
                                const float *W, const float *b, const float *x,
                                float *z);
void cbp_linear_forward_vec_f64(const cbp_blas *blas, int n_out, int n_in,
                                const double *W, const double *b, const double *x,
                                double *z);
/* Z = X Wᵀ + b.  X (n, n_in), Z (n, n_out). */
void cbp_linear_forward_f32(const cbp_blas *blas, int n, int n_out, int n_in,
                            const float *W, const float *b, const float *X, float *Z);
void cbp_linear_forward_f64(const cbp_blas *blas, int n, int n_out, int n_in,
                            const double *W, const double *b, const double *X,
                            double *Z);

/* dst (cols, rows) = srcᵀ (+ add[i] on dst's column i, if add is not NULL)
 * for src (rows, cols), both row-major and not overlapping. */
void cbp_transpose_add_f32(int rows, int cols, const float *src, const float *add, float *dst);
void cbp_transpose_add_f64(int rows, int cols, const double *src, const double *add,
                           double *dst);
/* Z = X Wᵀ + b computed as Zᵀ = W Xᵀ: XT (n_in, n) and ZT (n_out, n) are
 * workspace.  The engine takes it where cbp_forward_nn_pays. */
void cbp_linear_forward_nn_f32(const cbp_blas *blas, int n, int n_out, int n_in,
                               const float *W, const float *b, const float *X, float *XT,
                               float *ZT, float *Z);
void cbp_linear_forward_nn_f64(const cbp_blas *blas, int n, int n_out, int n_in,
                               const double *W, const double *b, const double *X,
                               double *XT, double *ZT, double *Z);

/* Does the forward product of a batch layer run faster as Zᵀ = W Xᵀ with
 * OpenBLAS's AVX-512 kernels (SkylakeX, Cooperlake, Sapphire Rapids)?
 * Their "small matrix" code skips packing for M N K <= 10⁶, except in
 * products with a transposed A ("TN") where M N > 1200 or K < 32
 * (kernel/x86_64/sgemm_small_kernel_permit_skylakex.c; dgemm behaves
 * alike).  The forward X Wᵀ is such a TN product, M = n_out, N = n,
 * K = n_in; W Xᵀ is "NN" and allowed.  64 -> 64 at batch 32 on the Xeon
 * of docs/benchmarks.md: 3.0 µs as TN, 1.4 µs as NN, 2.4 µs with both
 * transposes (float).  The engine asks only when net->forward_nn is set. */
static inline int cbp_forward_nn_pays(int n, int n_out, int n_in)
{
    const double mnk = (double)n * n_out * n_in;
    return n > 1 && mnk <= 1e6 && ((double)n * n_out > 1200 || n_in < 32);
}

/* dW = beta dW + δ xᵀ (ger).  δ (n_out), x (n_in), dW (n_out, n_in).
 * beta is 0 (overwrite) or 1 (accumulate). */
void cbp_outer_vec_f32(const cbp_blas *blas, int n_out, int n_in, const float *delta,
                       const float *x, float beta, float *dW);
void cbp_outer_vec_f64(const cbp_blas *blas, int n_out, int n_in,
                       const double *delta, const double *x, double beta, double *dW);
/* dW = beta dW + Δᵀ X (gemm): the outer products summed over the batch.
 * Δ (n, n_out), X (n, n_in), dW (n_out, n_in). */
void cbp_outer_f32(const cbp_blas *blas, int n, int n_out, int n_in,
                   const float *Delta, const float *X, float beta, float *dW);
void cbp_outer_f64(const cbp_blas *blas, int n, int n_out, int n_in,
                   const double *Delta, const double *X, double beta, double *dW);

/* db = beta db + Σ_rows Δ.  Δ (n, n_out), db (n_out); the sum runs in
 * double for both precisions. */
void cbp_bias_grad_f32(ptrdiff_t n, int n_out, const float *Delta, float beta,
                       float *db);
void cbp_bias_grad_f64(ptrdiff_t n, int n_out, const double *Delta, double beta,
                       double *db);
/* db = beta db + alpha Σ_rows Δ (the bias update is beta = 1, alpha = −lr). */
void cbp_bias_sum_f32(ptrdiff_t n, int n_out, const float *Delta, float beta, float alpha,
                      float *db);
void cbp_bias_sum_f64(ptrdiff_t n, int n_out, const double *Delta, double beta,
                      double alpha, double *db);

/* dx = Wᵀ δ (gemv).  δ (n_out), dx (n_in). */
void cbp_matvec_t_vec_f32(const cbp_blas *blas, int n_out, int n_in, const float *W,
                          const float *delta, float *dx);
void cbp_matvec_t_vec_f64(const cbp_blas *blas, int n_out, int n_in, const double *W,
                          const double *delta, double *dx);
/* dX = Δ W (gemm).  Δ (n, n_out), dX (n, n_in). */
void cbp_matvec_t_f32(const cbp_blas *blas, int n, int n_out, int n_in, const float *W,
                      const float *Delta, float *dX);
void cbp_matvec_t_f64(const cbp_blas *blas, int n, int n_out, int n_in,
                      const double *W, const double *Delta, double *dX);

/* 1 if every x_i is finite (no ±inf, no NaN), else 0. */
int cbp_all_finite_f32(ptrdiff_t size, const float *x);
int cbp_all_finite_f64(ptrdiff_t size, const double *x);
/* max |x_i|, or +inf if some x_i is not finite (0 for size 0). */
double cbp_max_abs_f32(ptrdiff_t size, const float *x);
double cbp_max_abs_f64(ptrdiff_t size, const double *x);
/* The same, copying src into dst on the way (dst may be NULL). */
double cbp_copy_max_abs_f32(ptrdiff_t size, const float *src, float *dst);
double cbp_copy_max_abs_f64(ptrdiff_t size, const double *src, double *dst);

/* The fused delta step δ = (W_nextᵀ δ_next) ⊙ σ'(z): BLAS writes
 * W_nextᵀ δ_next into delta, one pass multiplies by σ'(z) in place.
 * W_next (n_next, n_hidden), δ_next (n_next), z and δ (n_hidden). */
void cbp_backprop_delta_vec_f32(const cbp_blas *blas, int act, int n_next,
                                int n_hidden, const float *W_next,
                                const float *delta_next, const float *z,
                                float *delta);
void cbp_backprop_delta_vec_f64(const cbp_blas *blas, int act, int n_next,
                                int n_hidden, const double *W_next,
                                const double *delta_next, const double *z,
                                double *delta);
/* Batch form: Δ = (Δ_next W_next) ⊙ σ'(Z); Δ_next (n, n_next),
 * Z and Δ (n, n_hidden). */
void cbp_backprop_delta_f32(const cbp_blas *blas, int act, int n, int n_next,
                            int n_hidden, const float *W_next, const float *Delta_next,
                            const float *Z, float *Delta);
void cbp_backprop_delta_f64(const cbp_blas *blas, int act, int n, int n_next,
                            int n_hidden, const double *W_next,
                            const double *Delta_next, const double *Z, double *Delta);

/* ------------------------------------------------------------------ */
/* Gates of the local view (gates_impl.h), element-wise over `size`.   */
/* ------------------------------------------------------------------ */

/* add: z = x + y, so dx = dz, dy = dz (the distributor). */
void cbp_add_gate_backward_f32(ptrdiff_t size, const float *dz, float *dx, float *dy);
void cbp_add_gate_backward_f64(ptrdiff_t size, const double *dz, double *dx,
                               double *dy);
/* mul: z = x y, so dx = dz y, dy = dz x (the switcher). */
void cbp_mul_gate_backward_f32(ptrdiff_t size, const float *dz, const float *x,
                               const float *y, float *dx, float *dy);
void cbp_mul_gate_backward_f64(ptrdiff_t size, const double *dz, const double *x,
                               const double *y, double *dx, double *dy);
/* relu: z = max(x, 0), so dx = dz [x > 0] (the filter); dx may alias dz. */
void cbp_relu_gate_backward_f32(ptrdiff_t size, const float *dz, const float *x,
                                float *dx);
void cbp_relu_gate_backward_f64(ptrdiff_t size, const double *dz, const double *x,
                                double *dx);

/* ------------------------------------------------------------------ */
/* Losses (losses_impl.h)                                              */
/* ------------------------------------------------------------------ */

/* Every loss returns  Σ_i w_i l_i / weight_total  over its n rows and
 * writes the gradient of that quantity with respect to its input,
 * dZ_i = (w_i / weight_total) ∂l_i/∂z_i.  w (n) are non-negative sample
 * weights, or NULL for all ones.  The caller passes weight_total (Σ w over
 * the whole batch, or n unweighted) so that a batch may be processed in
 * chunks.  weight_total = 0 gives loss 0 and dZ = 0.  A row of weight 0
 * is absent: no share of the loss (even where l_i overflows) and dZ_i = 0.
 * dZ may alias Z.
 * Sums run in double for both precisions. */

/* Softmax cross-entropy with log-sum-exp, loss and gradient together.
 * Z (n, n_classes) logits, y (n) labels in [0, n_classes), n_classes >= 1.
 * l_i = logsumexp(z_i) − z_i[y_i],  ∂l_i/∂z_i = softmax(z_i) − onehot(y_i). */
double cbp_softmax_cross_entropy_f32(ptrdiff_t n, int n_classes, const float *Z,
                                     const int64_t *y, const float *w,
                                     double weight_total, float *dZ);
double cbp_softmax_cross_entropy_f64(ptrdiff_t n, int n_classes, const double *Z,
                                     const int64_t *y, const double *w,
                                     double weight_total, double *dZ);
/* Binary cross-entropy with logits (sigmoid fused), as PyTorch's
 * BCEWithLogitsLoss: Z, Y (n, n_out), Y in [0, 1];
 * l_i = mean_j [max(z, 0) − z y + log1p(e^−|z|)],  ∂l_i/∂z_ij = (σ(z) − y) / n_out. */
double cbp_binary_cross_entropy_f32(ptrdiff_t n, int n_out, const float *Z,
                                    const float *Y, const float *w,
                                    double weight_total, float *dZ);
double cbp_binary_cross_entropy_f64(ptrdiff_t n, int n_out, const double *Z,
                                    const double *Y, const double *w,
                                    double weight_total, double *dZ);
/* Mean squared error, as PyTorch's MSELoss: P, Y (n, n_out);
 * l_i = mean_j (p − y)²,  ∂l_i/∂p_ij = 2 (p − y) / n_out. */
double cbp_mean_squared_error_f32(ptrdiff_t n, int n_out, const float *P,
                                  const float *Y, const float *w, double weight_total,
                                  float *dP);
double cbp_mean_squared_error_f64(ptrdiff_t n, int n_out, const double *P,
                                  const double *Y, const double *w,
                                  double weight_total, double *dP);

/* Row-wise softmax in place: Z (n, n_classes). */
void cbp_softmax_rows_f32(ptrdiff_t n, int n_classes, float *Z);
void cbp_softmax_rows_f64(ptrdiff_t n, int n_classes, double *Z);

/* ------------------------------------------------------------------ */
/* Optimizers (optim_impl.h): one pass over the flat parameter buffer, */
/* PyTorch's update rules (torch.optim, single-tensor implementation). */
/* ------------------------------------------------------------------ */

enum { CBP_SGD = 0, CBP_ADAM = 1, CBP_ADAMW = 2 };

/* Status of an update or a training step. */
enum { CBP_OK = 0, CBP_NONFINITE_LOSS = 1, CBP_NONFINITE_GRADIENT = 2,
       CBP_NONFINITE_UPDATE = 3 };

typedef struct cbp_optim {
    int kind;             /* CBP_SGD, CBP_ADAM or CBP_ADAMW */
    double lr;
    double momentum;      /* SGD */
    double dampening;     /* SGD */
    int nesterov;         /* SGD */
    double weight_decay;  /* SGD, Adam: L2 added to the gradient; AdamW: decoupled */
    double beta1, beta2, eps; /* Adam, AdamW */
    int64_t step;         /* updates made so far (SGD: those with momentum ≠ 0, so
                             0 means the momentum buffer is not started yet, as
                             torch's momentum_buffer None) */
    void *buf1;           /* SGD: momentum buffer; Adam(W): exp_avg    (n_params) */
    void *buf2;           /* Adam(W): exp_avg_sq                       (n_params) */
    /* Adam(W): max |p|, max |m|, max v as the last update wrote them, and
     * whether that update happened within the current call into C: every
     * entry point clears `maxima_fresh` (the caller may have changed p or
     * the state since), Adam's update sets it.  While set, the next update
     * decides finiteness from max |g| and these maxima alone, reading g
     * once instead of p, g, m and v. */
    double max_p, max_m, max_v;
    int maxima_fresh;
    /* float32 Adam (optim_impl.h's adam_commit_range): one byte per group of 16
     * lanes, 1 where the last sorting of the lanes sent the group through
     * the path for tiny m, and the step t of that sorting (0: none yet).
     * A speed hint only — both paths write the same bits — redone every
     * few steps; NULL (or n_hints short of the groups) sorts every step. */
    unsigned char *hints;
    ptrdiff_t n_hints;
    int64_t hints_step;
} cbp_optim;

/* Plain SGD (no momentum, no weight decay): the optimizer whose update the
 * engine folds into the weight products (engine_impl.h, can_fuse), and so
 * whose steps may run on cbp's pool. */
static inline int cbp_optim_fuses(const cbp_optim *opt)
{
    return opt->kind == CBP_SGD && opt->momentum == 0 && opt->weight_decay == 0;
}

/* p ← update(p, g) over n elements and opt->step += 1 (for SGD only
 * when momentum ≠ 0), unless a new parameter or state value would not be
 * finite: then nothing is written and the result is CBP_NONFINITE_UPDATE
 * (else CBP_OK). */
int cbp_optim_update_f32(cbp_optim *opt, ptrdiff_t n, float *p, const float *g);
int cbp_optim_update_f64(cbp_optim *opt, ptrdiff_t n, double *p, const double *g);
/* cbp_optim_update for the engine's steps within one call: it keeps
 * opt->maxima_fresh (cbp_optim_update clears it first). */
int cbp_optim_step_f32(cbp_optim *opt, ptrdiff_t n, float *p, const float *g);
int cbp_optim_step_f64(cbp_optim *opt, ptrdiff_t n, double *p, const double *g);

/* ------------------------------------------------------------------ */
/* cbp's worker threads (pool.c)                                       */
/* ------------------------------------------------------------------ */

enum { CBP_POOL_MAX_PARTS = 8, CBP_POOL_MAX_LAYERS = 32 };
typedef void (*cbp_pool_fn)(void *arg, int part, int parts);
/* Take the pool for up to `parts` threads (the caller included) for a
 * call of about cost_ns of work: returns the parts granted (>= 2), or 0
 * when it is in use, threads cannot be made (then run serially), or,
 * unless `steady`, the call stands aside for OpenBLAS's workers (see
 * cbp_pool_note_blas_threads). */
int cbp_pool_acquire(int parts, int steady, long long cost_ns);
void cbp_pool_release(void);
/* fn(arg, p, parts) on parts threads, p = 0 on the caller; returns when
 * every part has returned.  Only between acquire and release. */
void cbp_pool_run(cbp_pool_fn fn, void *arg, int parts);
/* Inside fn: wait until every part of the job has arrived. */
void cbp_pool_barrier(void);
/* The caller is about to run BLAS on 2+ OpenBLAS threads, whose workers
 * then spin for about 0.1 s: acquire answers 0 unless steady, until the
 * calls asking for the pool since have brought about 0.14 s of
 * estimated work (counted, not timed: the path never depends on timing).
 * cbp_pool_settle: nothing to stand aside for (tests, benchmarks). */
void cbp_pool_note_blas_threads(void);
void cbp_pool_settle(void);
/* Jobs run so far (tests use it to see that a step took the pool). */
long long cbp_pool_jobs(void);
/* A call changes OpenBLAS's thread count from `old` / has put it back;
 * in a forked child: the count to put back (0: none), see pool.c. */
void cbp_threads_changed(int old);
void cbp_threads_restored(void);
int cbp_threads_after_fork(void);

/* OpenBLAS's own worker threads for the work between the products of
 * steps whose products run on them: the batch gather, a large layer's
 * passes (pool.c).  bind: OpenBLAS's exported blas_level1_thread
 * (returns whether it is taken).  parts: with BLAS on `threads` >= 2
 * threads, the parts that work may be split into (the first call tests
 * the entry), or 0: it stays on the caller.  run: fn(arg,
 * p, parts) for every p, on OpenBLAS's threads and the caller; returns
 * when all have returned.  A part must not call BLAS. */
int cbp_obx_bind(void *level1_thread);
int cbp_obx_parts(int threads);
void cbp_obx_run(cbp_pool_fn fn, void *arg, int parts);
long long cbp_obx_jobs(void);
int cbp_obx_fpenv_mismatches(int parts); /* tests (pool.c) */
int cbp_pool_fpenv_mismatches(int parts); /* tests (pool.c) */

/* An optimizer update on the pool (optim_impl.h): every part of a job
 * calls cbp_optim_step_part on the whole buffers and takes its slice; the
 * parts' answers meet in `sh`.  The result, CBP_OK or CBP_NONFINITE_UPDATE,
 * is every part's alike.  After an OK job the caller, alone, calls
 * cbp_optim_step_done (step count, Adam's maxima).  Together they are
 * cbp_optim_step, bit for bit. */
typedef struct cbp_optim_share {
    int bad[3][CBP_POOL_MAX_PARTS];        /* per dry run: SGD or Adam's bound, Adam's check */
    double g_max[CBP_POOL_MAX_PARTS];      /* max |g| over each part's slice */
    int64_t max_bits[CBP_POOL_MAX_PARTS][3]; /* Adam's commit: bits of max |p|, |m|, v */
} cbp_optim_share;
int cbp_optim_step_part_f32(const cbp_optim *opt, ptrdiff_t n, float *p, const float *g,
                            int part, int parts, cbp_optim_share *sh);
int cbp_optim_step_part_f64(const cbp_optim *opt, ptrdiff_t n, double *p, const double *g,
                            int part, int parts, cbp_optim_share *sh);
void cbp_optim_step_done_f32(cbp_optim *opt, ptrdiff_t n, const cbp_optim_share *sh, int parts);
void cbp_optim_step_done_f64(cbp_optim *opt, ptrdiff_t n, const cbp_optim_share *sh, int parts);

/* ------------------------------------------------------------------ */
/* The engine (engine_impl.h): a network compiled into a plan.         */
/* Every buffer is owned by the caller (NumPy); nothing here allocates.*/
/* ------------------------------------------------------------------ */

enum { CBP_LOSS_SOFTMAX_CE = 0, CBP_LOSS_BCE = 1, CBP_LOSS_MSE = 2 };
enum { CBP_OUTPUT_RAW = 0, CBP_OUTPUT_SOFTMAX = 1, CBP_OUTPUT_SIGMOID = 2 };

typedef struct cbp_layer {
    int n_in, n_out;
    int activation;          /* cbp_activation */
    ptrdiff_t w_offset;      /* W (n_out, n_in) at params + w_offset, dW at grads + w_offset */
    ptrdiff_t b_offset;      /* b (n_out) likewise */
    void *Z;                 /* workspace (capacity, n_out): pre-activations */
    void *A;                 /* workspace (capacity, n_out): σ(Z); == Z for identity, and
                              * for relu and leaky_relu, whose σ is applied in place:
                              * σ(z) keeps z's sign, so σ'(σ(z)) is σ'(z) bit for bit
                              * and the backward pass reads A where it reads Z */
    void *D;                 /* workspace (capacity, n_out): Δ = ∂loss/∂Z */
    void *S;                 /* workspace (n_out): Σ_rows Δ of the fused or pool step */
    double a_max, d_max;     /* the fused step's max |A| and max |Δ| (engine_impl.h) */
} cbp_layer;

typedef struct cbp_net {
    const cbp_blas *blas;
    int n_layers;
    cbp_layer *layers;
    int loss;                /* CBP_LOSS_* */
    ptrdiff_t n_params;
    void *params;            /* REAL[n_params]: W1, b1, W2, b2, … */
    void *grads;             /* REAL[n_params], aligned with params */
    int capacity;            /* rows every workspace buffer holds */
    void *batch_x;           /* (capacity, n_in of layer 1): a gathered batch */
    void *batch_target;      /* (capacity) int64 labels or (capacity, n_out) REAL */
    void *batch_weight;      /* (capacity) REAL */
    int forward_nn;          /* take linear_forward_nn where cbp_forward_nn_pays */
    void *batch_xt;          /* (n_in of layer 1, capacity), or NULL: its XT */
    int pool_parts;          /* > 1: training steps run on cbp's pool in this many
                              * parts (set by the caller around a call that holds
                              * the pool, with BLAS single-threaded); else 0 */
    int ob_parts;            /* > 1: shuffled batches are gathered, and a fused
                              * step's large passes made, on OpenBLAS's threads in
                              * this many parts (cbp_obx_run; set by the caller
                              * around a call with BLAS on 2+ threads) */
} cbp_net;

/* Forward n_rows rows of X (n_rows, n_in) in chunks of net->capacity and
 * write the last layer's outputs (n_rows, n_out), transformed by
 * `transform` (CBP_OUTPUT_*). */
void cbp_net_forward_f32(const cbp_net *net, ptrdiff_t n_rows, const float *X,
                         float *outputs, int transform);
void cbp_net_forward_f64(const cbp_net *net, ptrdiff_t n_rows, const double *X,
                         double *outputs, int transform);

/* The loss  Σ_i w_i l_i / Σ_i w_i  of n_rows rows (w NULL: the mean), in
 * chunks of net->capacity.  want_grads: its gradient into net->grads
 * (zero when Σ w = 0).  outputs, if not NULL: the raw outputs
 * (n_rows, n_out).  target: int64 labels (n_rows) for softmax
 * cross-entropy, else REAL (n_rows, n_out).  *weight_total, if not NULL,
 * receives Σ w. */
double cbp_net_loss_f32(const cbp_net *net, ptrdiff_t n_rows, const float *X,
                        const void *target, const float *w, int want_grads,
                        float *outputs, double *weight_total);
double cbp_net_loss_f64(const cbp_net *net, ptrdiff_t n_rows, const double *X,
                        const void *target, const double *w, int want_grads,
                        double *outputs, double *weight_total);

/* One training step on a batch: loss and gradients, then one optimizer
 * update — unless the loss, a gradient or an updated value would not be
 * finite (the parameters are left as they were and the status says why),
 * or every weight is zero (no update: such a batch changes nothing).
 * *loss is the loss before the update.  Returns a CBP_* status. */
int cbp_net_train_step_f32(const cbp_net *net, cbp_optim *opt, ptrdiff_t n,
                           const float *X, const void *target, const float *w,
                           double *loss);
int cbp_net_train_step_f64(const cbp_net *net, cbp_optim *opt, ptrdiff_t n,
                           const double *X, const void *target, const double *w,
                           double *loss);

/* n_batches consecutive mini-batches, each one training step, from
 * batch first_batch on.  Batch g is batch g mod B of epoch g / B, where
 * an epoch is B = ceil(n_rows / batch_size) batches of batch_size rows
 * and its last batch holds the rest: a run may span epochs.  Batch j of
 * epoch e holds rows order[e·n_rows + j·batch_size …] (order holds one
 * permutation of the n_rows rows per epoch, from epoch 0 on; NULL: rows
 * in sequence, read in place); shuffled rows are gathered into
 * net->batch_* first.  batch_size <= net->capacity.  losses[k] receives
 * batch first_batch + k's loss.  Returns the number of batches completed;
 * if fewer than n_batches, *status tells why the next one stopped. */
ptrdiff_t cbp_net_train_batches_f32(const cbp_net *net, cbp_optim *opt,
                                    ptrdiff_t n_rows, const float *X,
                                    const void *target, const float *w,
                                    const int64_t *order, ptrdiff_t first_batch,
                                    int batch_size, ptrdiff_t n_batches,
                                    double *losses, int *status);
ptrdiff_t cbp_net_train_batches_f64(const cbp_net *net, cbp_optim *opt,
                                    ptrdiff_t n_rows, const double *X,
                                    const void *target, const double *w,
                                    const int64_t *order, ptrdiff_t first_batch,
                                    int batch_size, ptrdiff_t n_batches,
                                    double *losses, int *status);

/* all_finite read by `parts` threads (parts < 2: the caller alone), each
 * a block of whole cache lines: cbp's pool (on_pool; the caller holds it,
 * cbp_pool_acquire) or OpenBLAS's threads (parts from cbp_obx_parts). */
int cbp_all_finite_parts_f32(ptrdiff_t size, const float *x, int parts, int on_pool);
int cbp_all_finite_parts_f64(ptrdiff_t size, const double *x, int parts, int on_pool);

/* Benchmark only: the bare BLAS calls of `reps` fused-SGD steps on the
 * plan's buffers (see engine_impl.h). */
void cbp_net_blas_floor_f32(const cbp_net *net, int n, const float *X, float lr,
                            int64_t reps);
void cbp_net_blas_floor_f64(const cbp_net *net, int n, const double *X, double lr,
                            int64_t reps);

#endif /* CBP_H */
