# The C routines of src_c/cbp.h, declared for Cython, and the one place
# that fills the BLAS table from scipy.linalg.cython_blas.
from libc.stdint cimport int64_t
from scipy.linalg cimport cython_blas

cdef extern from "cbp.h" nogil:
    ctypedef void (*cbp_sgemm_t)(char*, char*, int*, int*, int*, float*, float*, int*,
                                 float*, int*, float*, float*, int*) noexcept nogil
    ctypedef void (*cbp_dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*,
                                 double*, int*, double*, double*, int*) noexcept nogil
    ctypedef void (*cbp_sgemv_t)(char*, int*, int*, float*, float*, int*, float*, int*,
                                 float*, float*, int*) noexcept nogil
    ctypedef void (*cbp_dgemv_t)(char*, int*, int*, double*, double*, int*, double*, int*,
                                 double*, double*, int*) noexcept nogil
    ctypedef void (*cbp_sger_t)(int*, int*, float*, float*, int*, float*, int*, float*,
                                int*) noexcept nogil
    ctypedef void (*cbp_dger_t)(int*, int*, double*, double*, int*, double*, int*, double*,
                                int*) noexcept nogil
    ctypedef void (*cbp_saxpy_t)(int*, float*, float*, int*, float*, int*) noexcept nogil
    ctypedef void (*cbp_daxpy_t)(int*, double*, double*, int*, double*, int*) noexcept nogil

    ctypedef struct cbp_blas:
        cbp_sgemm_t sgemm
        cbp_dgemm_t dgemm
        cbp_sgemv_t sgemv
        cbp_dgemv_t dgemv
        cbp_sger_t sger
        cbp_dger_t dger
        cbp_saxpy_t saxpy
        cbp_daxpy_t daxpy

    int CBP_NUM_ACTIVATIONS

    void cbp_activation_forward_f32(int act, Py_ssize_t size, const float *z, float *a)
    void cbp_activation_forward_f64(int act, Py_ssize_t size, const double *z, double *a)
    void cbp_activation_derivative_f32(int act, Py_ssize_t size, const float *z, float *d)
    void cbp_activation_derivative_f64(int act, Py_ssize_t size, const double *z, double *d)
    void cbp_activation_backward_f32(int act, Py_ssize_t size, const float *z, float *g)
    void cbp_activation_backward_f64(int act, Py_ssize_t size, const double *z, double *g)

    void cbp_linear_forward_vec_f32(const cbp_blas *blas, int n_out, int n_in,
                                    const float *W, const float *b, const float *x, float *z)
    void cbp_linear_forward_vec_f64(const cbp_blas *blas, int n_out, int n_in,
                                    const double *W, const double *b, const double *x,
                                    double *z)
    void cbp_linear_forward_f32(const cbp_blas *blas, int n, int n_out, int n_in,
                                const float *W, const float *b, const float *X, float *Z)
    void cbp_linear_forward_f64(const cbp_blas *blas, int n, int n_out, int n_in,
                                const double *W, const double *b, const double *X,
                                double *Z)
    void cbp_outer_vec_f32(const cbp_blas *blas, int n_out, int n_in, const float *delta,
                           const float *x, float beta, float *dW)
    void cbp_outer_vec_f64(const cbp_blas *blas, int n_out, int n_in, const double *delta,
                           const double *x, double beta, double *dW)
    void cbp_outer_f32(const cbp_blas *blas, int n, int n_out, int n_in,
                       const float *Delta, const float *X, float beta, float *dW)
    void cbp_outer_f64(const cbp_blas *blas, int n, int n_out, int n_in,
                       const double *Delta, const double *X, double beta, double *dW)
    void cbp_bias_grad_f32(Py_ssize_t n, int n_out, const float *Delta, float beta,
                           float *db)
    void cbp_bias_grad_f64(Py_ssize_t n, int n_out, const double *Delta, double beta,
                           double *db)
    void cbp_matvec_t_vec_f32(const cbp_blas *blas, int n_out, int n_in, const float *W,
                              const float *delta, float *dx)
    void cbp_matvec_t_vec_f64(const cbp_blas *blas, int n_out, int n_in, const double *W,
                              const double *delta, double *dx)
    void cbp_matvec_t_f32(const cbp_blas *blas, int n, int n_out, int n_in, const float *W,
                          const float *Delta, float *dX)
    void cbp_matvec_t_f64(const cbp_blas *blas, int n, int n_out, int n_in,
                          const double *W, const double *Delta, double *dX)
    void cbp_backprop_delta_vec_f32(const cbp_blas *blas, int act, int n_next,
                                    int n_hidden, const float *W_next,
                                    const float *delta_next, const float *z, float *delta)
    void cbp_backprop_delta_vec_f64(const cbp_blas *blas, int act, int n_next,
                                    int n_hidden, const double *W_next,
                                    const double *delta_next, const double *z,
                                    double *delta)
    void cbp_backprop_delta_f32(const cbp_blas *blas, int act, int n, int n_next,
                                int n_hidden, const float *W_next, const float *Delta_next,
                                const float *Z, float *Delta)
    void cbp_backprop_delta_f64(const cbp_blas *blas, int act, int n, int n_next,
                                int n_hidden, const double *W_next,
                                const double *Delta_next, const double *Z, double *Delta)

    void cbp_add_gate_backward_f32(Py_ssize_t size, const float *dz, float *dx, float *dy)
    void cbp_add_gate_backward_f64(Py_ssize_t size, const double *dz, double *dx,
                                   double *dy)
    void cbp_mul_gate_backward_f32(Py_ssize_t size, const float *dz, const float *x,
                                   const float *y, float *dx, float *dy)
    void cbp_mul_gate_backward_f64(Py_ssize_t size, const double *dz, const double *x,
                                   const double *y, double *dx, double *dy)
    void cbp_relu_gate_backward_f32(Py_ssize_t size, const float *dz, const float *x,
                                    float *dx)
    void cbp_relu_gate_backward_f64(Py_ssize_t size, const double *dz, const double *x,
                                    double *dx)

    double cbp_softmax_cross_entropy_f32(Py_ssize_t n, int n_classes, const float *Z,
                                         const int64_t *y, const float *w, float *dZ)
    double cbp_softmax_cross_entropy_f64(Py_ssize_t n, int n_classes, const double *Z,
                                         const int64_t *y, const double *w, double *dZ)


cdef inline void fill_blas_table(cbp_blas *table) noexcept:
    """Point the C routines at SciPy's BLAS: the extension links none."""
    table.sgemm = cython_blas.sgemm
    table.dgemm = cython_blas.dgemm
    table.sgemv = cython_blas.sgemv
    table.dgemv = cython_blas.dgemv
    table.sger = cython_blas.sger
    table.dger = cython_blas.dger
    table.saxpy = cython_blas.saxpy
    table.daxpy = cython_blas.daxpy
