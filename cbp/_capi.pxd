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
    double cbp_activation_forward_max_f32(int act, Py_ssize_t size, const float *z, float *a)
    double cbp_activation_forward_max_f64(int act, Py_ssize_t size, const double *z, double *a)
    double cbp_activation_backward_sum_max_f32(int act, Py_ssize_t n, int width, const float *Z,
                                               float *D, float *sums)
    double cbp_activation_backward_sum_max_f64(int act, Py_ssize_t n, int width, const double *Z,
                                               double *D, double *sums)

    void cbp_linear_forward_vec_f32(const cbp_blas *blas, int n_out, int n_in,
                                    const float *W, const float *b, const float *x, float *z)
    void cbp_linear_forward_vec_f64(const cbp_blas *blas, int n_out, int n_in,
                                    const double *W, const double *b, const double *x,
                                    double *z)
    void cbp_transpose_add_f32(int rows, int cols, const float *src, const float *add,
                               float *dst)
    void cbp_transpose_add_f64(int rows, int cols, const double *src, const double *add,
                               double *dst)
    void cbp_linear_forward_nn_f32(const cbp_blas *blas, int n, int n_out, int n_in,
                                   const float *W, const float *b, const float *X, float *XT,
                                   float *ZT, float *Z)
    void cbp_linear_forward_nn_f64(const cbp_blas *blas, int n, int n_out, int n_in,
                                   const double *W, const double *b, const double *X,
                                   double *XT, double *ZT, double *Z)
    int cbp_forward_nn_pays(int n, int n_out, int n_in)
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
    int cbp_all_finite_f32(Py_ssize_t size, const float *x)
    int cbp_all_finite_f64(Py_ssize_t size, const double *x)
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
                                         const int64_t *y, const float *w,
                                         double weight_total, float *dZ)
    double cbp_softmax_cross_entropy_f64(Py_ssize_t n, int n_classes, const double *Z,
                                         const int64_t *y, const double *w,
                                         double weight_total, double *dZ)

    enum:
        CBP_IDENTITY
        CBP_RELU
        CBP_LEAKY_RELU
        CBP_SGD
        CBP_ADAM
        CBP_ADAMW
        CBP_LOSS_SOFTMAX_CE
        CBP_LOSS_BCE
        CBP_LOSS_MSE
        CBP_OUTPUT_RAW
        CBP_OUTPUT_SOFTMAX
        CBP_OUTPUT_SIGMOID
        CBP_OK
        CBP_NONFINITE_LOSS
        CBP_NONFINITE_GRADIENT
        CBP_NONFINITE_UPDATE

    ctypedef struct cbp_optim:
        int kind
        double lr, momentum, dampening
        int nesterov
        double weight_decay, beta1, beta2, eps
        int64_t step
        void *buf1
        void *buf2
        unsigned char *hints
        Py_ssize_t n_hints
        int64_t hints_step

    ctypedef struct cbp_layer:
        int n_in, n_out, activation
        Py_ssize_t w_offset, b_offset
        void *Z
        void *A
        void *D
        void *S

    ctypedef struct cbp_net:
        const cbp_blas *blas
        int n_layers
        cbp_layer *layers
        int loss
        Py_ssize_t n_params
        void *params
        void *grads
        int capacity
        void *batch_x
        void *batch_target
        void *batch_weight
        int forward_nn
        void *batch_xt
        int pool_parts
        int ob_parts

    enum: CBP_POOL_MAX_LAYERS
    enum: CBP_POOL_MAX_PARTS
    int cbp_pool_acquire(int parts, int steady, long long cost_ns)
    void cbp_pool_settle()
    void cbp_pool_release()
    long long cbp_pool_jobs()
    void cbp_threads_changed(int old)
    void cbp_threads_restored()
    int cbp_threads_after_fork()
    void cbp_pool_note_blas_threads()
    int cbp_obx_bind(void *level1_thread)
    int cbp_obx_parts(int threads)
    long long cbp_obx_jobs()
    int cbp_obx_fpenv_mismatches(int parts)
    int cbp_pool_fpenv_mismatches(int parts)

    int cbp_optim_fuses(const cbp_optim *opt)
    int cbp_optim_update_f32(cbp_optim *opt, Py_ssize_t n, float *p, const float *g)
    int cbp_optim_update_f64(cbp_optim *opt, Py_ssize_t n, double *p, const double *g)

    void cbp_net_forward_f32(const cbp_net *net, Py_ssize_t n_rows, const float *X,
                             float *outputs, int transform)
    void cbp_net_forward_f64(const cbp_net *net, Py_ssize_t n_rows, const double *X,
                             double *outputs, int transform)
    double cbp_net_loss_f32(const cbp_net *net, Py_ssize_t n_rows, const float *X,
                            const void *target, const float *w, int want_grads,
                            float *outputs, double *weight_total)
    double cbp_net_loss_f64(const cbp_net *net, Py_ssize_t n_rows, const double *X,
                            const void *target, const double *w, int want_grads,
                            double *outputs, double *weight_total)
    int cbp_net_train_step_f32(const cbp_net *net, cbp_optim *opt, Py_ssize_t n,
                               const float *X, const void *target, const float *w,
                               double *loss)
    int cbp_net_train_step_f64(const cbp_net *net, cbp_optim *opt, Py_ssize_t n,
                               const double *X, const void *target, const double *w,
                               double *loss)
    Py_ssize_t cbp_net_train_batches_f32(const cbp_net *net, cbp_optim *opt,
                                         Py_ssize_t n_rows, const float *X,
                                         const void *target, const float *w,
                                         const int64_t *order, Py_ssize_t first_batch,
                                         int batch_size, Py_ssize_t n_batches,
                                         double *losses, int *status)
    Py_ssize_t cbp_net_train_batches_f64(const cbp_net *net, cbp_optim *opt,
                                         Py_ssize_t n_rows, const double *X,
                                         const void *target, const double *w,
                                         const int64_t *order, Py_ssize_t first_batch,
                                         int batch_size, Py_ssize_t n_batches,
                                         double *losses, int *status)

    int cbp_all_finite_parts_f32(Py_ssize_t size, const float *x, int parts, int on_pool)
    int cbp_all_finite_parts_f64(Py_ssize_t size, const double *x, int parts, int on_pool)

    void cbp_net_blas_floor_f32(const cbp_net *net, int n, const float *X, float lr,
                                int64_t reps)
    void cbp_net_blas_floor_f64(const cbp_net *net, int n, const double *X, double lr,
                                int64_t reps)


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
