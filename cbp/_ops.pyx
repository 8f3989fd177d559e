# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin bindings of the C kernels: take C-contiguous arrays of one dtype,
release the GIL, call C.  cbp.ops validates and converts every argument
before calling these; the shape checks here are a second guard so that no
caller can make C read or write out of bounds."""
from libc.stdint cimport int64_t
from cbp._capi cimport *

import numpy as np

ctypedef fused real:
    float
    double

cdef cbp_blas BLAS
fill_blas_table(&BLAS)


cdef inline int _check(bint ok) except -1:
    if not ok:
        raise ValueError("cbp._ops: inconsistent shapes (cbp.ops validates these; "
                         "call the functions of cbp.ops)")
    return 0


cdef inline int _check_act(int act) except -1:
    if act < 0 or act >= CBP_NUM_ACTIVATIONS:
        raise ValueError(f"cbp._ops: activation code {act} out of range")
    return 0


def linear_forward_vec(const real[:, ::1] W, const real[::1] b, const real[::1] x,
                       real[::1] z):
    cdef int n_out = W.shape[0], n_in = W.shape[1]
    _check(b.shape[0] == n_out and x.shape[0] == n_in and z.shape[0] == n_out)
    with nogil:
        if real is float:
            cbp_linear_forward_vec_f32(&BLAS, n_out, n_in, &W[0, 0], &b[0], &x[0], &z[0])
        else:
            cbp_linear_forward_vec_f64(&BLAS, n_out, n_in, &W[0, 0], &b[0], &x[0], &z[0])


def linear_forward(const real[:, ::1] W, const real[::1] b, const real[:, ::1] X,
                   real[:, ::1] Z):
    cdef int n = X.shape[0], n_out = W.shape[0], n_in = W.shape[1]
    _check(b.shape[0] == n_out and X.shape[1] == n_in
           and Z.shape[0] == n and Z.shape[1] == n_out)
    with nogil:
        if real is float:
            cbp_linear_forward_f32(&BLAS, n, n_out, n_in, &W[0, 0], &b[0], &X[0, 0], &Z[0, 0])
        else:
            cbp_linear_forward_f64(&BLAS, n, n_out, n_in, &W[0, 0], &b[0], &X[0, 0], &Z[0, 0])


def linear_forward_nn(const real[:, ::1] W, const real[::1] b, const real[:, ::1] X,
                      real[:, ::1] Z):
    """Z = X Wᵀ + b by the engine's other form, Zᵀ = W Xᵀ between two
    transposes (workspace allocated here)."""
    cdef int n = X.shape[0], n_out = W.shape[0], n_in = W.shape[1]
    _check(b.shape[0] == n_out and X.shape[1] == n_in
           and Z.shape[0] == n and Z.shape[1] == n_out and n >= 1 and n_in >= 1 and n_out >= 1)
    dtype = np.float32 if real is float else np.float64
    cdef real[::1] XT = np.empty(<Py_ssize_t>n * n_in, dtype=dtype)
    cdef real[::1] ZT = np.empty(<Py_ssize_t>n * n_out, dtype=dtype)
    with nogil:
        if real is float:
            cbp_linear_forward_nn_f32(&BLAS, n, n_out, n_in, &W[0, 0], &b[0], &X[0, 0],
                                      &XT[0], &ZT[0], &Z[0, 0])
        else:
            cbp_linear_forward_nn_f64(&BLAS, n, n_out, n_in, &W[0, 0], &b[0], &X[0, 0],
                                      &XT[0], &ZT[0], &Z[0, 0])


def transpose_add(const real[:, ::1] src, add, real[:, ::1] dst):
    """dst = srcᵀ (+ add[i] on dst's column i when add is not None)."""
    cdef int rows = src.shape[0], cols = src.shape[1]
    _check(dst.shape[0] == cols and dst.shape[1] == rows and rows >= 1 and cols >= 1)
    cdef const real[::1] a
    cdef const real *pa = NULL
    if add is not None:
        a = add
        _check(a.shape[0] == rows)
        pa = &a[0]
    with nogil:
        if real is float:
            cbp_transpose_add_f32(rows, cols, &src[0, 0], pa, &dst[0, 0])
        else:
            cbp_transpose_add_f64(rows, cols, &src[0, 0], pa, &dst[0, 0])


def forward_nn_pays(int n, int n_out, int n_in):
    return bool(cbp_forward_nn_pays(n, n_out, n_in))


def outer_vec(const real[::1] delta, const real[::1] x, real[:, ::1] dW):
    cdef int n_out = delta.shape[0], n_in = x.shape[0]
    _check(dW.shape[0] == n_out and dW.shape[1] == n_in)
    with nogil:
        if real is float:
            cbp_outer_vec_f32(&BLAS, n_out, n_in, &delta[0], &x[0], 0, &dW[0, 0])
        else:
            cbp_outer_vec_f64(&BLAS, n_out, n_in, &delta[0], &x[0], 0, &dW[0, 0])


def outer(const real[:, ::1] Delta, const real[:, ::1] X, real[:, ::1] dW):
    cdef int n = Delta.shape[0], n_out = Delta.shape[1], n_in = X.shape[1]
    _check(X.shape[0] == n and dW.shape[0] == n_out and dW.shape[1] == n_in)
    with nogil:
        if real is float:
            cbp_outer_f32(&BLAS, n, n_out, n_in, &Delta[0, 0], &X[0, 0], 0, &dW[0, 0])
        else:
            cbp_outer_f64(&BLAS, n, n_out, n_in, &Delta[0, 0], &X[0, 0], 0, &dW[0, 0])


def bias_grad(const real[:, ::1] Delta, real[::1] db):
    cdef Py_ssize_t n = Delta.shape[0]
    cdef int n_out = Delta.shape[1]
    _check(db.shape[0] == n_out)
    with nogil:
        if real is float:
            cbp_bias_grad_f32(n, n_out, &Delta[0, 0], 0, &db[0])
        else:
            cbp_bias_grad_f64(n, n_out, &Delta[0, 0], 0, &db[0])


def matvec_t_vec(const real[:, ::1] W, const real[::1] delta, real[::1] dx):
    cdef int n_out = W.shape[0], n_in = W.shape[1]
    _check(delta.shape[0] == n_out and dx.shape[0] == n_in)
    with nogil:
        if real is float:
            cbp_matvec_t_vec_f32(&BLAS, n_out, n_in, &W[0, 0], &delta[0], &dx[0])
        else:
            cbp_matvec_t_vec_f64(&BLAS, n_out, n_in, &W[0, 0], &delta[0], &dx[0])


def matvec_t(const real[:, ::1] W, const real[:, ::1] Delta, real[:, ::1] dX):
    cdef int n = Delta.shape[0], n_out = W.shape[0], n_in = W.shape[1]
    _check(Delta.shape[1] == n_out and dX.shape[0] == n and dX.shape[1] == n_in)
    with nogil:
        if real is float:
            cbp_matvec_t_f32(&BLAS, n, n_out, n_in, &W[0, 0], &Delta[0, 0], &dX[0, 0])
        else:
            cbp_matvec_t_f64(&BLAS, n, n_out, n_in, &W[0, 0], &Delta[0, 0], &dX[0, 0])


def backprop_delta_vec(int act, const real[:, ::1] W_next, const real[::1] delta_next,
                       const real[::1] z, real[::1] delta):
    cdef int n_next = W_next.shape[0], n_hidden = W_next.shape[1]
    _check_act(act)
    _check(delta_next.shape[0] == n_next and z.shape[0] == n_hidden
           and delta.shape[0] == n_hidden)
    with nogil:
        if real is float:
            cbp_backprop_delta_vec_f32(&BLAS, act, n_next, n_hidden, &W_next[0, 0],
                                       &delta_next[0], &z[0], &delta[0])
        else:
            cbp_backprop_delta_vec_f64(&BLAS, act, n_next, n_hidden, &W_next[0, 0],
                                       &delta_next[0], &z[0], &delta[0])


def backprop_delta(int act, const real[:, ::1] W_next, const real[:, ::1] Delta_next,
                   const real[:, ::1] Z, real[:, ::1] Delta):
    cdef int n = Z.shape[0], n_next = W_next.shape[0], n_hidden = W_next.shape[1]
    _check_act(act)
    _check(Delta_next.shape[0] == n and Delta_next.shape[1] == n_next
           and Z.shape[1] == n_hidden and Delta.shape[0] == n and Delta.shape[1] == n_hidden)
    with nogil:
        if real is float:
            cbp_backprop_delta_f32(&BLAS, act, n, n_next, n_hidden, &W_next[0, 0],
                                   &Delta_next[0, 0], &Z[0, 0], &Delta[0, 0])
        else:
            cbp_backprop_delta_f64(&BLAS, act, n, n_next, n_hidden, &W_next[0, 0],
                                   &Delta_next[0, 0], &Z[0, 0], &Delta[0, 0])


# Element-wise routines take flat (1-D) views of contiguous arrays.

def activation_forward(int act, const real[::1] z, real[::1] a):
    _check_act(act)
    _check(a.shape[0] == z.shape[0])
    with nogil:
        if real is float:
            cbp_activation_forward_f32(act, z.shape[0], &z[0], &a[0])
        else:
            cbp_activation_forward_f64(act, z.shape[0], &z[0], &a[0])


def activation_derivative(int act, const real[::1] z, real[::1] d):
    _check_act(act)
    _check(d.shape[0] == z.shape[0])
    with nogil:
        if real is float:
            cbp_activation_derivative_f32(act, z.shape[0], &z[0], &d[0])
        else:
            cbp_activation_derivative_f64(act, z.shape[0], &z[0], &d[0])


def activation_forward_max(int act, const real[::1] z, real[::1] a):
    """a = σ(z) where z is finite, NaN where it is not; returns max |a|
    (inf if some a is not finite).  The network's activation pass
    (engine_impl.h)."""
    _check_act(act)
    _check(a.shape[0] == z.shape[0])
    cdef double m
    with nogil:
        if real is float:
            m = cbp_activation_forward_max_f32(act, z.shape[0], &z[0], &a[0])
        else:
            m = cbp_activation_forward_max_f64(act, z.shape[0], &z[0], &a[0])
    return m


def activation_backward_sum_max(int act, const real[:, ::1] Z, real[:, ::1] D,
                                real[::1] sums):
    """D ⊙= σ'(Z), sums = Σ_rows D; returns max |D| (inf if some entry is
    not finite).  The fused training step's Hadamard pass (engine_impl.h)."""
    _check_act(act)
    cdef Py_ssize_t n = Z.shape[0]
    cdef int width = Z.shape[1]
    _check(D.shape[0] == n and D.shape[1] == width and sums.shape[0] == width and n > 0)
    cdef double m
    with nogil:
        if real is float:
            m = cbp_activation_backward_sum_max_f32(act, n, width, &Z[0, 0], &D[0, 0], &sums[0])
        else:
            m = cbp_activation_backward_sum_max_f64(act, n, width, &Z[0, 0], &D[0, 0], &sums[0])
    return m


def add_gate_backward(const real[::1] dz, real[::1] dx, real[::1] dy):
    _check(dx.shape[0] == dz.shape[0] and dy.shape[0] == dz.shape[0])
    with nogil:
        if real is float:
            cbp_add_gate_backward_f32(dz.shape[0], &dz[0], &dx[0], &dy[0])
        else:
            cbp_add_gate_backward_f64(dz.shape[0], &dz[0], &dx[0], &dy[0])


def mul_gate_backward(const real[::1] dz, const real[::1] x, const real[::1] y,
                      real[::1] dx, real[::1] dy):
    cdef Py_ssize_t size = dz.shape[0]
    _check(x.shape[0] == size and y.shape[0] == size
           and dx.shape[0] == size and dy.shape[0] == size)
    with nogil:
        if real is float:
            cbp_mul_gate_backward_f32(size, &dz[0], &x[0], &y[0], &dx[0], &dy[0])
        else:
            cbp_mul_gate_backward_f64(size, &dz[0], &x[0], &y[0], &dx[0], &dy[0])


def relu_gate_backward(const real[::1] dz, const real[::1] x, real[::1] dx):
    cdef Py_ssize_t size = dz.shape[0]
    _check(x.shape[0] == size and dx.shape[0] == size)
    with nogil:
        if real is float:
            cbp_relu_gate_backward_f32(size, &dz[0], &x[0], &dx[0])
        else:
            cbp_relu_gate_backward_f64(size, &dz[0], &x[0], &dx[0])


def softmax_cross_entropy(const real[:, ::1] Z, const int64_t[::1] y, real[:, ::1] dZ):
    """Mean loss over rows; dZ = (softmax(Z) − onehot(y)) / n.  Labels must
    already be checked to lie in [0, n_classes)."""
    cdef Py_ssize_t n = Z.shape[0], i
    cdef int n_classes = Z.shape[1]
    cdef double loss
    _check(n >= 1 and n_classes >= 1 and y.shape[0] == n
           and dZ.shape[0] == n and dZ.shape[1] == n_classes)
    for i in range(n):
        if y[i] < 0 or y[i] >= n_classes:
            raise ValueError(f"label {y[i]} at row {i} is outside [0, {n_classes})")
    with nogil:
        if real is float:
            loss = cbp_softmax_cross_entropy_f32(n, n_classes, &Z[0, 0], &y[0], NULL, <double>n, &dZ[0, 0])
        else:
            loss = cbp_softmax_cross_entropy_f64(n, n_classes, &Z[0, 0], &y[0], NULL, <double>n, &dZ[0, 0])
    return loss
