"""cbp.ops against the plain NumPy reference (tests/reference.py) and
finite differences: every routine, vector and batch forms, both dtypes,
every memory layout, ``out=``, empty batches, numerical stability
(API.md §1 and §8)."""
import zlib

import numpy as np
import pytest

import cbp.ops as ops
import reference as ref

DTYPES = (np.float32, np.float64)
ACTS = ref.ACTIVATIONS
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def assert_close(got, expected, dtype=None, rtol=None):
    """Parity criterion: |got − ref| ≤ rtol·|ref| + rtol·max(1, max|ref|).

    A pure element-wise relative tolerance is not meaningful for matrix
    products: an entry Σ_k a_k b_k whose terms cancel may be arbitrarily
    close to 0 while its rounding error is of order ε·Σ_k |a_k b_k|, and
    BLAS and NumPy sum in different orders (and blockings), so that entry
    can differ by 100 % relative while both are correct to ε of the
    result's scale.  The absolute part therefore scales with the largest
    magnitude of the whole result (at least 1: the inputs are O(1)), which
    is the norm-wise error bound of a product.  1e-12 in float64 leaves
    room for ~1e4 ε of accumulated rounding; 1e-5 in float32 ~100 ε.
    """
    got = np.asarray(got)
    expected = np.asarray(expected, dtype=np.float64)
    dtype = np.dtype(dtype if dtype is not None else got.dtype)
    assert got.dtype == dtype, f"result dtype {got.dtype}, expected {dtype}"
    assert got.shape == expected.shape, f"shape {got.shape}, expected {expected.shape}"
    rtol = RTOL[dtype] if rtol is None else rtol
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=rtol,
                               atol=rtol * scale)


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------
# Every routine as one table: name → (call cbp, call the reference, shapes).
# Shapes are written with n (rows), i (in), o (out / n_next), so the same
# entry serves the vector form (n absent) and the batch form.
# --------------------------------------------------------------------------

def _kernel_table():
    table = {
        "linear_forward": (lambda x, W, b: ops.linear_forward(x, W, b),
                           ref.linear_forward, [("n", "i"), ("o", "i"), ("o",)]),
        "outer": (lambda d, x: ops.outer(d, x), ref.outer, [("n", "o"), ("n", "i")]),
        "matvec_t": (lambda W, d: ops.matvec_t(W, d), ref.matvec_t,
                     [("o", "i"), ("n", "o")]),
        "linear_backward": (lambda d, x, W: ops.linear_backward(d, x, W),
                            ref.linear_backward, [("n", "o"), ("n", "i"), ("o", "i")]),
        "softmax_cross_entropy": (None, None, None),  # labels: tested separately
        "add_gate_backward": (ops.add_gate_backward, ref.add_gate_backward,
                              [("n", "i")]),
        "mul_gate_backward": (ops.mul_gate_backward, ref.mul_gate_backward,
                              [("n", "i")] * 3),
        "relu_gate_backward": (lambda dz, x: ops.relu_gate_backward(dz, x),
                               ref.relu_gate_backward, [("n", "i")] * 2),
    }
    del table["softmax_cross_entropy"]
    for act in ACTS:
        table[f"backprop_delta[{act}]"] = (
            lambda W, d, z, act=act: ops.backprop_delta(W, d, z, act),
            lambda W, d, z, act=act: ref.backprop_delta(W, d, z, act),
            [("o", "i"), ("n", "o"), ("n", "i")])
        table[f"activation_forward[{act}]"] = (
            lambda z, act=act: ops.activation_forward(act, z),
            lambda z, act=act: ref.sigma(act, z), [("n", "i")])
        table[f"activation_derivative[{act}]"] = (
            lambda z, act=act: ops.activation_derivative(act, z),
            lambda z, act=act: ref.sigma_prime(act, z), [("n", "i")])
    return table


KERNELS = _kernel_table()


def make_args(name, dtype, dims, rng, vector=False):
    """Random arguments of kernel `name`; dims maps n, i, o to sizes.  With
    vector=True the row dimension n is dropped (the one-sample form)."""
    shapes = KERNELS[name][2]
    args = []
    for shape in shapes:
        shape = tuple(dims[d] for d in shape if not (vector and d == "n"))
        a = rand(rng, shape, dtype)
        if name.startswith("backprop_delta[") or name.startswith("activation_"):
            a[..., :1] = 0  # exercise each kink z = 0
        args.append(a)
    return args


def check_kernel(name, args, dtype):
    call, reference = KERNELS[name][:2]
    originals = [a.copy() for a in args]
    got = call(*args)
    expected = reference(*args)
    for a, o in zip(args, originals):  # inputs are never written
        np.testing.assert_array_equal(a, o)
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_close(g, e, dtype)
            for a in args:
                assert not np.shares_memory(g, a), "result aliases an input"
    else:
        assert isinstance(got, np.ndarray)
        assert_close(got, expected, dtype)
        for a in args:
            assert not np.shares_memory(got, a), "result aliases an input"
    return got


BATCH_DIMS = [dict(n=1, i=1, o=1), dict(n=2, i=3, o=4), dict(n=17, i=33, o=9),
              dict(n=64, i=100, o=50), dict(n=3, i=300, o=257)]
VECTOR_DIMS = [dict(n=1, i=1, o=1), dict(n=1, i=3, o=4), dict(n=1, i=33, o=17),
               dict(n=1, i=300, o=200)]
VECTOR_FORM = [k for k in KERNELS if not k.startswith(("add_", "mul_", "relu_gate",
                                                       "activation_"))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", BATCH_DIMS, ids=lambda d: "n{n}_i{i}_o{o}".format(**d))
@pytest.mark.parametrize("name", list(KERNELS))
def test_batch_form_matches_reference(name, dims, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{name}{dims}".encode()))
    check_kernel(name, make_args(name, dtype, dims, rng), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", VECTOR_DIMS, ids=lambda d: "i{i}_o{o}".format(**d))
@pytest.mark.parametrize("name", VECTOR_FORM)
def test_vector_form_matches_reference(name, dims, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{name}{dims}v".encode()))
    args = make_args(name, dtype, dims, rng, vector=True)
    got = check_kernel(name, args, dtype)
    first = got[0] if isinstance(got, tuple) else got
    if name == "outer":
        assert first.shape == (dims["o"], dims["i"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_form_equals_batch_of_one_row(dtype):
    rng = np.random.default_rng(1)
    x, W, b = rand(rng, 7, dtype), rand(rng, (5, 7), dtype), rand(rng, 5, dtype)
    d, z = rand(rng, 5, dtype), rand(rng, 7, dtype)
    assert_close(ops.linear_forward(x, W, b), ops.linear_forward(x[None], W, b)[0])
    assert_close(ops.outer(d, x), ops.outer(d[None], x[None]))
    assert_close(ops.matvec_t(W, d), ops.matvec_t(W, d[None])[0])
    for a, c in zip(ops.linear_backward(d, x, W), ops.linear_backward(d[None], x[None], W)):
        assert_close(a, c[0] if a.ndim == 1 and c.ndim == 2 else c)
    for act in ACTS:
        assert_close(ops.backprop_delta(W, d, z, act),
                     ops.backprop_delta(W, d[None], z[None], act)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [f"activation_forward[{a}]" for a in ACTS]
                         + [f"activation_derivative[{a}]" for a in ACTS]
                         + ["add_gate_backward", "mul_gate_backward", "relu_gate_backward"])
@pytest.mark.parametrize("shape", [(), (1,), (7,), (2, 3, 4), (3, 1, 2, 5)], ids=str)
def test_elementwise_any_shape(name, shape, dtype):
    """Element-wise routines take any shape, including 0-d, and keep it."""
    rng = np.random.default_rng(len(shape))
    n_args = len(KERNELS[name][2])
    args = [np.asarray(rand(rng, shape, dtype)) for _ in range(n_args)]
    check_kernel(name, args, dtype)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_d_and_subclass_inputs_keep_their_shape(dtype):
    """Regression: inputs were converted with np.ascontiguousarray, which
    turns a 0-d array into shape (1,); σ of a 0-d array must stay 0-d."""
    z = np.array(-1.5, dtype)
    for act in ACTS:
        got = ops.activation_forward(act, z)
        assert got.shape == () and got.dtype == dtype
        assert_close(got, ref.sigma(act, z))
        assert ops.activation_derivative(act, z).shape == ()
    out = np.zeros((), dtype)
    assert ops.activation_forward("relu", np.array(2.0, dtype), out=out) is out
    assert out == 2.0
    assert ops.relu_gate_backward(z, z).shape == ()
    assert [a.shape for a in ops.mul_gate_backward(z, z, z)] == [(), ()]
    # ndarray subclasses are read as plain arrays of their values
    m = np.asmatrix(np.array([[1.0, -2.0, 3.0]], dtype))
    got = ops.activation_forward("relu", m)
    assert type(got) is np.ndarray and got.shape == (1, 3)
    np.testing.assert_array_equal(got, [[1.0, 0.0, 3.0]])
    W = np.asmatrix(np.eye(3, dtype=dtype))
    assert_close(ops.linear_forward(np.asarray(m), W, np.zeros(3, dtype)), [[1, -2, 3]])


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_subclass_out_is_written_and_returned(dtype):
    """An np.matrix ``out`` of the right shape and dtype is written and
    returned by every kernel that takes ``out`` (the element-wise ones
    raised Cython's "Buffer has wrong number of dimensions": a matrix
    stays 2-D when flattened)."""
    rng = np.random.default_rng(0)
    z, dz = rng.standard_normal((2, 4)).astype(dtype), rng.standard_normal((2, 4)).astype(dtype)
    W, b = rng.standard_normal((4, 4)).astype(dtype), rng.standard_normal(4).astype(dtype)
    calls = {
        "activation_forward": (lambda o: ops.activation_forward("tanh", z, out=o),
                               ref.sigma("tanh", z)),
        "activation_derivative": (lambda o: ops.activation_derivative("tanh", z, out=o),
                                  ref.sigma_prime("tanh", z)),
        "relu_gate_backward": (lambda o: ops.relu_gate_backward(dz, z, out=o),
                               ref.relu_gate_backward(dz, z)),
        "linear_forward": (lambda o: ops.linear_forward(z, W, b, out=o),
                           ref.linear_forward(z, W, b)),
        "backprop_delta": (lambda o: ops.backprop_delta(W, dz, z, "tanh", out=o),
                           ref.backprop_delta(W, dz, z, "tanh")),
    }
    for name, (call, expected) in calls.items():
        out = np.asmatrix(np.full((2, 4), 7.0, dtype))
        assert call(out) is out, name
        assert_close(np.asarray(out), expected)


def test_linear_backward_bias_is_delta_and_its_row_sum():
    rng = np.random.default_rng(2)
    d, x, W = rng.normal(size=4), rng.normal(size=3), rng.normal(size=(4, 3))
    dW, db, dx = ops.linear_backward(d, x, W)
    np.testing.assert_array_equal(db, d)              # the add gate distributes
    D, X = rng.normal(size=(1000, 4)), rng.normal(size=(1000, 3))
    _, db, _ = ops.linear_backward(D, X, W)
    assert_close(db, D.sum(axis=0))


# --------------------------------------------------------------------------
# Softmax cross-entropy
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c", [(1, 1), (1, 2), (5, 3), (64, 10), (7, 1000)])
def test_softmax_cross_entropy_batch(n, c, dtype):
    rng = np.random.default_rng(n * c)
    Z = (3 * rng.standard_normal((n, c))).astype(dtype)
    y = rng.integers(0, c, size=n)
    loss, dZ = ops.softmax_cross_entropy(Z, y)
    ref_loss, ref_dZ = ref.softmax_cross_entropy(Z, y)
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref_loss, rel=RTOL[np.dtype(dtype)], abs=RTOL[np.dtype(dtype)])
    # dZ ≈ (p − onehot)/n: entries up to 1/n, so scale the check by 1/n.
    assert_close(dZ * n, ref_dZ * n, dtype)
    assert_close(dZ, ref_dZ, dtype)
    # rows of softmax − onehot sum to 0
    np.testing.assert_allclose(dZ.astype(np.float64).sum(axis=1), 0,
                               atol=10 * c * np.finfo(dtype).eps / n)


def test_softmax_float32_exponential_is_accurate_elementwise():
    # The softmax uses cbp's own vectorizable exp (src_c/vmath_impl.h).
    # A row (x, 0) with label 1 gives dz₀ = eˣ / (1 + eˣ): check it entry
    # by entry, relative to the exact value, on 200,001 points of [−87, 0]
    # (not relative to the row's scale, as the norm-wise checks do).
    x = np.linspace(-87.0, 0.0, 200_001).astype(np.float32)
    Z = np.stack([x, np.zeros_like(x)], axis=1)
    _, dZ = ops.softmax_cross_entropy(Z, np.ones(len(x), dtype=np.int64))
    x64 = x.astype(np.float64)
    exact = np.exp(x64) / (1.0 + np.exp(x64)) / len(x)
    ulps = np.abs(dZ[:, 0] - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 2.0, f"max error {ulps.max():.2f} ulp at x = {x[ulps.argmax()]}"
    # Below −87 the probability is subnormal, rounded once as libm's would
    # be, down to 0 below −104; −inf gives 0.
    x = np.array([-90.0, -100.0, -103.0, -104.0, -200.0, -np.inf], np.float32)
    Z = np.stack([x, np.zeros_like(x)], axis=1)
    _, dz = ops.softmax_cross_entropy(Z, np.ones(len(x), dtype=np.int64))
    exact = np.exp(x.astype(np.float64)) / len(x)
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    assert np.all(np.abs(dz[:, 0] - exact) <= tiny), dz[:, 0]
    assert dz[0, 0] > 0 and dz[-2, 0] == 0 and dz[-1, 0] == 0 and np.all(np.isfinite(dz))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1, 2, 10])
def test_softmax_cross_entropy_vector_form_is_not_divided(c, dtype):
    rng = np.random.default_rng(c)
    z = rand(rng, c, dtype)
    for label in (0, c - 1, np.int64(c - 1), np.array(c - 1), np.uint8(0)):
        loss, dz = ops.softmax_cross_entropy(z, label)
        ref_loss, ref_dz = ref.softmax_cross_entropy(z, int(label))
        assert loss == pytest.approx(ref_loss, rel=RTOL[np.dtype(dtype)],
                                     abs=RTOL[np.dtype(dtype)])
        assert_close(dz, ref_dz, dtype)
        assert dz.shape == (c,)
        assert dz[int(label)] <= 0  # p_y − 1
    # the vector form equals the batch form of one row (n = 1: nothing divided)
    loss1, dz1 = ops.softmax_cross_entropy(z[None], np.array([c - 1]))
    loss, dz = ops.softmax_cross_entropy(z, c - 1)
    assert loss == loss1
    np.testing.assert_array_equal(dz, dz1[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_labels_of_any_integer_dtype(dtype):
    rng = np.random.default_rng(3)
    Z = rand(rng, (6, 4), dtype)
    y = rng.integers(0, 4, size=6)
    loss, dZ = ops.softmax_cross_entropy(Z, y)
    for t in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.uint64):
        l2, d2 = ops.softmax_cross_entropy(Z, y.astype(t))
        assert l2 == loss
        np.testing.assert_array_equal(d2, dZ)
    # strided labels
    y2 = np.repeat(y, 2)[::2]
    l2, d2 = ops.softmax_cross_entropy(Z, y2)
    assert l2 == loss
    np.testing.assert_array_equal(d2, dZ)


# --------------------------------------------------------------------------
# Memory layouts: C, F, strided, transposed views, negative strides,
# unaligned and read-only buffers all give the C-ordered result.
# --------------------------------------------------------------------------

def as_layout(a, layout):
    """An array equal to `a` stored with the named layout."""
    a = np.asarray(a)
    everything = (slice(None),) * a.ndim
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "transposed":  # a transposed view of a C array
        return np.ascontiguousarray(a.T).T
    if layout == "strided":     # every other element in every dimension: a[::2]
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[everything] = a
        return view
    if layout == "negative":    # negative strides in every dimension
        flip = tuple(slice(None, None, -1) for _ in a.shape)
        return np.ascontiguousarray(a[flip])[flip]
    if layout == "unaligned":   # C-contiguous, data pointer off by one byte
        buf = np.zeros(a.nbytes + 1, np.uint8)
        view = buf[1:].view(a.dtype).reshape(a.shape)
        view[everything] = a
        return view
    if layout == "readonly":
        view = a.copy()
        view.flags.writeable = False
        return view
    raise AssertionError(layout)


LAYOUTS = ("C", "F", "transposed", "strided", "negative", "unaligned", "readonly")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(KERNELS))
def test_layouts_give_the_same_result(name, layout, dtype):
    rng = np.random.default_rng(4)
    dims = dict(n=6, i=5, o=4)
    for vector in (False, True) if name in VECTOR_FORM else (False,):
        args = make_args(name, dtype, dims, rng, vector=vector)
        views = [as_layout(a, layout) for a in args]
        # the layout is really what it says (so the test tests something)
        if layout in ("strided", "negative"):
            assert not any(v.flags.c_contiguous for v in views)
        if layout in ("F", "transposed") and any(v.ndim == 2 for v in views):
            assert not all(v.flags.c_contiguous for v in views)
        if layout == "unaligned":
            assert not any(v.flags.aligned for v in views)
        expected = KERNELS[name][0](*args)
        got = check_kernel(name, views, dtype)
        # Same values in, same result out: the layout is only a copy away.
        for g, e in zip(got if isinstance(got, tuple) else (got,),
                        expected if isinstance(expected, tuple) else (expected,)):
            assert_close(g, e, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(KERNELS))
def test_mixed_layouts_in_one_call(name, dtype):
    rng = np.random.default_rng(5)
    args = make_args(name, dtype, dict(n=7, i=6, o=5), rng)
    for shift in range(len(LAYOUTS)):
        views = [as_layout(a, LAYOUTS[(k + shift) % len(LAYOUTS)])
                 for k, a in enumerate(args)]
        check_kernel(name, views, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_softmax_cross_entropy_layouts(layout, dtype):
    rng = np.random.default_rng(6)
    Z = rand(rng, (6, 5), dtype)
    y = rng.integers(0, 5, size=6)
    loss, dZ = ops.softmax_cross_entropy(Z, y)
    l2, d2 = ops.softmax_cross_entropy(as_layout(Z, layout), as_layout(y, layout))
    assert l2 == pytest.approx(loss, rel=RTOL[np.dtype(dtype)])
    assert_close(d2, dZ, dtype)
    assert d2.flags.c_contiguous
    l3, d3 = ops.softmax_cross_entropy(as_layout(Z[0], layout), 2)
    r3, rd3 = ref.softmax_cross_entropy(Z[0], 2)
    assert l3 == pytest.approx(r3, rel=RTOL[np.dtype(dtype)])
    assert_close(d3, rd3, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_weight_view_is_read_as_its_values(dtype):
    """W.T of a C array is F-ordered: it must be read as the matrix it is,
    not as its memory (which would be W itself)."""
    rng = np.random.default_rng(7)
    Wt = rand(rng, (4, 6), dtype)          # stored (in, out)
    W = Wt.T                               # the (out, in) = (6, 4) view
    x, b, d = rand(rng, (3, 4), dtype), rand(rng, 6, dtype), rand(rng, (3, 6), dtype)
    assert_close(ops.linear_forward(x, W, b), ref.linear_forward(x, W, b))
    assert_close(ops.matvec_t(W, d), ref.matvec_t(W, d))
    assert_close(ops.backprop_delta(W, d, x, "tanh"), ref.backprop_delta(W, d, x, "tanh"))


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------

# name → (call with out, reference, argument shapes with n rows and k
# features, chosen square so that out may alias an input).
OUT_KERNELS = {
    "linear_forward": (lambda a, out: ops.linear_forward(*a, out=out), ref.linear_forward,
                       [("n", "k"), ("k", "k"), ("k",)]),
    "linear_forward_vec": (lambda a, out: ops.linear_forward(*a, out=out),
                           ref.linear_forward, [("k",), ("k", "k"), ("k",)]),
    "outer": (lambda a, out: ops.outer(*a, out=out), ref.outer, [("k", "k"), ("k", "k")]),
    "outer_vec": (lambda a, out: ops.outer(*a, out=out), ref.outer, [("k",), ("k",)]),
    "matvec_t": (lambda a, out: ops.matvec_t(*a, out=out), ref.matvec_t,
                 [("k", "k"), ("n", "k")]),
    "matvec_t_vec": (lambda a, out: ops.matvec_t(*a, out=out), ref.matvec_t,
                     [("k", "k"), ("k",)]),
    "relu_gate_backward": (lambda a, out: ops.relu_gate_backward(*a, out=out),
                           ref.relu_gate_backward, [("n", "k"), ("n", "k")]),
}
for _act in ACTS:
    OUT_KERNELS[f"backprop_delta[{_act}]"] = (
        lambda a, out, act=_act: ops.backprop_delta(*a, act, out=out),
        lambda *a, act=_act: ref.backprop_delta(*a, act), [("k", "k"), ("n", "k"), ("n", "k")])
    OUT_KERNELS[f"backprop_delta_vec[{_act}]"] = (
        lambda a, out, act=_act: ops.backprop_delta(*a, act, out=out),
        lambda *a, act=_act: ref.backprop_delta(*a, act), [("k", "k"), ("k",), ("k",)])
    OUT_KERNELS[f"activation_forward[{_act}]"] = (
        lambda a, out, act=_act: ops.activation_forward(act, *a, out=out),
        lambda z, act=_act: ref.sigma(act, z), [("n", "k")])
    OUT_KERNELS[f"activation_derivative[{_act}]"] = (
        lambda a, out, act=_act: ops.activation_derivative(act, *a, out=out),
        lambda z, act=_act: ref.sigma_prime(act, z), [("n", "k")])


def out_args(name, dtype, n=5, k=4, seed=8):
    rng = np.random.default_rng(seed)
    sizes = dict(n=n, k=k)
    return [rand(rng, tuple(sizes[d] for d in s), dtype) for s in OUT_KERNELS[name][2]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OUT_KERNELS))
def test_out_is_written_and_returned(name, dtype):
    call, reference, _ = OUT_KERNELS[name]
    args = out_args(name, dtype)
    expected = reference(*args)
    out = np.full(expected.shape, np.nan, dtype=dtype)
    got = call(args, out)
    assert got is out
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OUT_KERNELS))
def test_bad_out_is_refused_and_left_alone(name, dtype):
    call, reference, _ = OUT_KERNELS[name]
    args = out_args(name, dtype)
    shape = reference(*args).shape
    other = np.float32 if dtype == np.float64 else np.float64
    cases = [
        (np.zeros(shape + (1,), dtype), ValueError, "shape"),
        (np.zeros(shape[:-1] + (shape[-1] + 1,), dtype), ValueError, "shape"),
        (np.zeros(shape, other), TypeError, "dtype"),
        (np.zeros(shape, np.int64), TypeError, "dtype"),
        (np.zeros(shape + (2,), dtype)[..., 0], ValueError, "contiguous"),
        (np.zeros(shape, dtype).tolist(), TypeError, "ndarray"),
    ]
    if len(shape) == 2:
        cases.append((np.zeros(shape, dtype, order="F"), ValueError, "contiguous"))
    readonly = np.zeros(shape, dtype)
    readonly.flags.writeable = False
    cases.append((readonly, ValueError, "read-only"))
    for out, error, word in cases:
        before = np.array(out, copy=True)
        with pytest.raises(error, match=word):
            call(args, out)
        np.testing.assert_array_equal(np.asarray(out), before)  # nothing written


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OUT_KERNELS))
def test_out_aliasing_an_input(name, dtype):
    """out may be one of the inputs (same buffer) or overlap one: the result
    is still the function of the inputs as they were before the call."""
    call, reference, _ = OUT_KERNELS[name]
    probe = out_args(name, dtype)
    shape = reference(*probe).shape
    tried = 0
    for j in range(len(probe)):
        if probe[j].shape != shape:
            continue
        args = out_args(name, dtype)
        expected = reference(*[a.copy() for a in args])
        got = call(args, args[j])
        assert got is args[j]
        assert_close(got, expected, dtype)
        tried += 1
    # out overlapping the first input, shifted by one element
    args = out_args(name, dtype)
    size = int(np.prod(shape))
    first = args[0]
    buf = np.zeros(max(size, first.size) + 1, dtype)
    view = buf[1:1 + first.size].reshape(first.shape)
    view[...] = first
    args[0] = view
    expected = reference(*[a.copy() for a in args])
    out = buf[:size].reshape(shape)
    assert np.shares_memory(out, view)
    got = call(args, out)
    assert got is out
    assert_close(got, expected, dtype)
    assert tried >= (0 if name.startswith("outer_vec") else 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_over_a_strided_input_s_memory(dtype):
    """out is contiguous memory under a strided input: the input is copied
    before anything is written."""
    buf = np.linspace(-2, 2, 20).astype(dtype)
    z = buf[::2]                       # 10 elements, stride 2
    expected = ref.sigma("tanh", z.copy())
    out = buf[:10]                     # overlaps z
    got = ops.activation_forward("tanh", z, out=out)
    assert got is out
    assert_close(out, expected, dtype)


def test_tuple_kernels_return_new_arrays_each_call():
    rng = np.random.default_rng(9)
    dz = rng.normal(size=(3, 4))
    dx, dy = ops.add_gate_backward(dz)
    assert not np.shares_memory(dx, dy) and not np.shares_memory(dx, dz)
    dx[...] = 0
    np.testing.assert_array_equal(dy, dz)


# --------------------------------------------------------------------------
# Empty batches and empty dimensions
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", [dict(n=0, i=3, o=4), dict(n=0, i=0, o=0),
                                  dict(n=3, i=0, o=4), dict(n=3, i=4, o=0),
                                  dict(n=0, i=5, o=0)],
                         ids=lambda d: "n{n}_i{i}_o{o}".format(**d))
@pytest.mark.parametrize("name", list(KERNELS))
def test_zero_size(name, dims, dtype):
    rng = np.random.default_rng(10)
    check_kernel(name, make_args(name, dtype, dims, rng), dtype)
    if name in VECTOR_FORM:
        check_kernel(name, make_args(name, dtype, dims, rng, vector=True), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_outer_over_zero_rows_is_zeros(dtype):
    dW = ops.outer(np.zeros((0, 3), dtype), np.zeros((0, 5), dtype))
    assert dW.shape == (3, 5) and dW.dtype == dtype
    np.testing.assert_array_equal(dW, 0)
    out = np.full((3, 5), np.nan, dtype)
    assert ops.outer(np.zeros((0, 3), dtype), np.zeros((0, 5), dtype), out=out) is out
    np.testing.assert_array_equal(out, 0)
    dW, db, dx = ops.linear_backward(np.zeros((0, 3), dtype), np.zeros((0, 5), dtype),
                                     np.ones((3, 5), dtype))
    np.testing.assert_array_equal(dW, 0)
    np.testing.assert_array_equal(db, np.zeros(3))
    assert dx.shape == (0, 5) and dx.dtype == dtype
    # an empty inner dimension: z = b, and Wᵀ δ over zero outputs is 0
    b = np.arange(3, dtype=dtype)
    np.testing.assert_array_equal(ops.linear_forward(np.zeros((4, 0), dtype),
                                                     np.zeros((3, 0), dtype), b),
                                  np.tile(b, (4, 1)))
    np.testing.assert_array_equal(ops.matvec_t(np.zeros((0, 3), dtype),
                                               np.zeros(0, dtype)), np.zeros(3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_refuses_empty(dtype):
    with pytest.raises(ValueError, match=r"\(0, 3\)"):
        ops.softmax_cross_entropy(np.zeros((0, 3), dtype), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="class"):
        ops.softmax_cross_entropy(np.zeros((2, 0), dtype), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        ops.softmax_cross_entropy(np.zeros(0, dtype), 0)


# --------------------------------------------------------------------------
# Finite differences (float64): every σ', the softmax-CE gradient, and the
# layer gradients themselves.
# --------------------------------------------------------------------------

def central_difference(f, x, h=1e-3):
    """∂f/∂x_k for scalar f by the fourth-order central difference
    (−f(x+2h) + 8f(x+h) − 8f(x−h) + f(x−2h)) / 12h: truncation error
    O(h⁴ f⁽⁵⁾) ≈ 1e-12, rounding ≈ ε|f|/h ≈ 1e-13."""
    x = np.array(x, dtype=np.float64)
    grad = np.empty_like(x)
    for k in np.ndindex(x.shape):
        def at(t):
            y = x.copy()
            y[k] = t
            return f(y)
        t = x[k]
        grad[k] = (-at(t + 2 * h) + 8 * at(t + h) - 8 * at(t - h) + at(t - 2 * h)) / (12 * h)
    return grad


def elementwise_difference(f, z, h=1e-3):
    """σ' of an element-wise σ by the same formula, all elements at once."""
    return (-f(z + 2 * h) + 8 * f(z + h) - 8 * f(z - h) + f(z - 2 * h)) / (12 * h)


FD_TOL = 1e-8


@pytest.mark.parametrize("act", ACTS)
def test_activation_derivative_matches_finite_differences(act):
    rng = np.random.default_rng(11)
    z = np.concatenate([rng.uniform(-6, 6, 200), [-20, -3, -0.5, 0.25, 1, 3, 20]])
    if act in ("relu", "leaky_relu", "elu"):
        z = z[np.abs(z) > 0.01]  # the stencil must not straddle the kink
    numeric = elementwise_difference(lambda t: ops.activation_forward(act, t), z)
    np.testing.assert_allclose(ops.activation_derivative(act, z), numeric,
                               rtol=FD_TOL, atol=FD_TOL)
    # the reference's σ' agrees with its own σ by the same test
    np.testing.assert_allclose(ref.sigma_prime(act, z),
                               elementwise_difference(lambda t: ref.sigma(act, t), z),
                               rtol=FD_TOL, atol=FD_TOL)


@pytest.mark.parametrize("dtype", DTYPES)
def test_derivatives_at_the_kink(dtype):
    zero = np.array([0.0, -0.0], dtype)
    d = ops.activation_derivative("relu", zero)
    assert d.tolist() == [0.0, 0.0]
    assert ops.activation_derivative("leaky_relu", zero).tolist() == \
        [pytest.approx(0.01, rel=1e-7)] * 2
    assert ops.activation_derivative("leaky_relu", zero)[0] == dtype(0.01)
    assert ops.activation_forward("relu", zero).tolist() == [0.0, 0.0]
    assert ops.relu_gate_backward(np.ones(2, dtype), zero).tolist() == [0.0, 0.0]
    # backprop_delta uses the same convention
    W = np.ones((1, 2), dtype)
    assert ops.backprop_delta(W, np.ones(1, dtype), zero, "relu").tolist() == [0.0, 0.0]
    np.testing.assert_array_equal(
        ops.backprop_delta(W, np.ones(1, dtype), zero, "leaky_relu"), dtype(0.01))
    # the smooth ones at 0: σ'(0) exactly
    expected = {"identity": 1, "sigmoid": 0.25, "tanh": 1, "softplus": 0.5, "elu": 1,
                "gelu": 0.5}
    for act, value in expected.items():
        np.testing.assert_allclose(ops.activation_derivative(act, zero), value,
                                   rtol=RTOL[np.dtype(dtype)])


def test_softmax_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(12)
    Z = 2 * rng.normal(size=(5, 4))
    y = rng.integers(0, 4, size=5)
    _, dZ = ops.softmax_cross_entropy(Z, y)
    numeric = central_difference(lambda t: ops.softmax_cross_entropy(t, y)[0], Z)
    np.testing.assert_allclose(dZ, numeric, rtol=FD_TOL, atol=FD_TOL)
    z = Z[0]
    _, dz = ops.softmax_cross_entropy(z, int(y[0]))
    numeric = central_difference(lambda t: ops.softmax_cross_entropy(t, int(y[0]))[0], z)
    np.testing.assert_allclose(dz, numeric, rtol=FD_TOL, atol=FD_TOL)


@pytest.mark.parametrize("vector", [False, True], ids=["batch", "vector"])
def test_linear_backward_matches_finite_differences(vector):
    """(dW, db, dx) are the gradients of L = ⟨Δ, linear_forward(x, W, b)⟩."""
    rng = np.random.default_rng(13)
    W, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    x = rng.normal(size=4) if vector else rng.normal(size=(5, 4))
    D = rng.normal(size=3) if vector else rng.normal(size=(5, 3))

    def loss(x, W, b):
        return float(np.sum(D * ops.linear_forward(x, W, b)))

    dW, db, dx = ops.linear_backward(D, x, W)
    np.testing.assert_allclose(dW, central_difference(lambda t: loss(x, t, b), W),
                               rtol=FD_TOL, atol=FD_TOL)
    np.testing.assert_allclose(db, central_difference(lambda t: loss(x, W, t), b),
                               rtol=FD_TOL, atol=FD_TOL)
    np.testing.assert_allclose(dx, central_difference(lambda t: loss(t, W, b), x),
                               rtol=FD_TOL, atol=FD_TOL)


@pytest.mark.parametrize("act", ACTS)
def test_backprop_delta_matches_finite_differences(act):
    """δ = (W_nextᵀ δ_next) ⊙ σ'(z) is ∂L/∂z of L = Σ δ_next ⊙ (σ(z) W_nextᵀ)."""
    rng = np.random.default_rng(14)
    W = rng.normal(size=(3, 4))
    Dn = rng.normal(size=(2, 3))
    z = rng.uniform(-3, 3, size=(2, 4))
    z[np.abs(z) < 0.01] = 0.5

    def loss(t):
        return float(np.sum(Dn * ops.linear_forward(ops.activation_forward(act, t), W,
                                                    np.zeros(3))))

    np.testing.assert_allclose(ops.backprop_delta(W, Dn, z, act),
                               central_difference(loss, z), rtol=FD_TOL, atol=FD_TOL)


# --------------------------------------------------------------------------
# Numerical stability
# --------------------------------------------------------------------------

STABLE = ("sigmoid", "softplus", "elu", "gelu", "tanh")
MAGNITUDES_32 = [0, 1e-30, 1e-8, 0.5, 1, 5, 10, 20, 30, 50, 88, 89, 100, 104, 1e3, 1e4]
MAGNITUDES_64 = MAGNITUDES_32 + [37, 38, 39, 700, 710, 750, 1e5, 1e100, 1e300, 1.7e308]
# Values below these are denormal: their relative precision is gone in any
# implementation, so the forward check has this absolute floor.
TINY = {np.dtype(np.float32): 1e-37, np.dtype(np.float64): 1e-300}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_activations_are_finite_and_accurate_for_extreme_inputs(act, dtype):
    mags = np.array(MAGNITUDES_32 if dtype == np.float32 else MAGNITUDES_64)
    z = np.concatenate([-mags[::-1], mags]).astype(dtype)
    a = ops.activation_forward(act, z)
    d = ops.activation_derivative(act, z)
    assert np.isfinite(a).all(), z[~np.isfinite(a)]
    assert np.isfinite(d).all(), z[~np.isfinite(d)]
    # σ: element-wise relative accuracy (the reference is float64, from the
    # same float32 values), also in the tails where σ is tiny.
    np.testing.assert_allclose(a.astype(np.float64), ref.sigma(act, z),
                               rtol=RTOL[np.dtype(dtype)], atol=TINY[np.dtype(dtype)])
    # σ': absolute accuracy rtol (σ' ≤ 1.13 for every activation here).  In
    # the saturated tails the usual formulas σ(1 − σ) and 1 − tanh² (also
    # PyTorch's) cancel, so tiny derivatives such as σ'(40) ≈ 4e-18 come out
    # as 0: correct to ε absolutely, not relatively.
    assert_close(d, ref.sigma_prime(act, z), dtype)
    # and the saturation values themselves
    big = np.array([-1e4, 1e4], dtype)
    if act in ("sigmoid", "tanh"):
        lo = 0.0 if act == "sigmoid" else -1.0
        assert ops.activation_forward(act, big).tolist() == [lo, 1.0]
        assert ops.activation_derivative(act, big).tolist() == [0.0, 0.0]
    if act in ("softplus", "gelu", "elu"):
        expected_lo = -1.0 if act == "elu" else 0.0
        got = ops.activation_forward(act, big)
        assert got[0] == expected_lo and got[1] == dtype(1e4)


def _long_reference(act, derivative, z):
    """σ or σ' of z in long double (64-bit significand on x86-64), by
    NumPy's long-double ufuncs (libm's expl, tanhl, log1pl)."""
    zl = z.astype(np.longdouble)
    e1, e2 = np.exp(-np.abs(zl)), np.exp(-2 * np.abs(zl))
    sigmoid = np.where(zl >= 0, 1 / (1 + e1), e1 / (1 + e1))
    table = {
        ("sigmoid", False): sigmoid,
        ("sigmoid", True): e1 / (1 + e1) ** 2,
        ("tanh", False): np.tanh(zl),
        ("tanh", True): 4 * e2 / (1 + e2) ** 2,
        ("softplus", False): np.maximum(zl, 0) + np.log1p(e1),
        ("softplus", True): sigmoid,
        ("elu", False): np.where(zl > 0, zl, np.expm1(np.minimum(zl, 0))),
        ("elu", True): np.where(zl > 0, 1, np.exp(np.minimum(zl, 0))),
    }
    return table[act, derivative]


# The vectorized activations (src_c/vmath_impl.h: their own e^x, e^x − 1 and
# log(1 + x), no libm) on 2.4 million points of each dtype, measured
# 2026-12-07: at most 4.02 units in the last place (σ' of tanh, float64),
# where the same formulas on glibc's exp, expm1, tanh and log1p measured
# 4.02 too; per function the largest, new (libm): sigmoid 2.29 (2.29), σ'
# 3.91 (3.78); tanh 2.48 (2.08), σ' 4.02 (4.02); softplus 3.07 (1.49); elu
# 1.10 (0.76), σ' 0.95 (0.51).
VMATH_MAX_ULP = 4.5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("derivative", [False, True], ids=["sigma", "sigma_prime"])
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "softplus", "elu"])
def test_vector_math_accuracy(act, derivative, dtype):
    """Element-wise error in units of the last place of the result (the
    spacing of the rounded exact value; the least subnormal's below it),
    against long double, on a dense sweep of the whole range where σ or σ'
    is neither 0 nor saturated (into the subnormal results), a dense one
    of [−3, 3] and magnitudes from the least subnormal up, both signs."""
    if dtype == np.float64 and np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps:
        pytest.skip("long double is double here: no finer reference")
    info = np.finfo(dtype)
    top = 110 if dtype == np.float32 else 760
    low = np.log10(float(info.smallest_subnormal))
    mags = np.logspace(low, np.log10(top), 100_001)
    z = np.concatenate([np.linspace(-top, top, 400_001), np.linspace(-3, 3, 200_001),
                        -mags, mags]).astype(dtype)
    call = ops.activation_derivative if derivative else ops.activation_forward
    got = call(act, z).astype(np.longdouble)
    exact = _long_reference(act, derivative, z)
    spacing = np.spacing(np.abs(exact.astype(dtype))).astype(np.longdouble)
    spacing = np.maximum(spacing, np.longdouble(info.smallest_subnormal))
    ulps = np.abs(got - exact) / spacing
    worst = int(np.argmax(ulps))
    assert ulps[worst] <= VMATH_MAX_ULP, (z[worst], got[worst], exact[worst])


GELU_MAX_ULP = 6.5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("derivative", [False, True], ids=["sigma", "sigma_prime"])
def test_vector_math_gelu_accuracy(derivative, dtype):
    """gelu's Φ is cbp's own too (e^(−a²) erfcx(a), vmath_impl.h).  Against
    mpmath at 30 digits on 20,001 points of [−40, 10] (float32: [−16, 10],
    the left tail through the subnormals to 0) and magnitudes from the
    least subnormal up, in ulp of the result; for σ' = Φ + zφ, of its
    larger term: near its zero (z ≈ −0.7518) the terms cancel, so there
    its relative error is unbounded, as in any evaluation of that sum.
    Measured 2026-12-07, cbp's against the former glibc erfc(−z/√2), whose
    rounded argument cost up to a² ulp in the left tail: float32 gelu 3.74
    (182), σ' 3.28 (63); float64 gelu 5.85 (1687), σ' 4.27 (506)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    info = np.finfo(dtype)
    lo = -16 if dtype == np.float32 else -40
    mags = np.logspace(np.log10(float(info.smallest_subnormal)), 0, 2_001)
    z = np.unique(np.concatenate([np.linspace(lo, 10, 20_001), -mags, mags]).astype(dtype))
    got = (ops.activation_derivative if derivative else ops.activation_forward)("gelu", z)

    def exact(v):
        """The value, and the magnitude its error is measured against: σ'
        = Φ + zφ crosses 0 (z ≈ −0.75), where its terms cancel in any
        implementation, so there the larger term's."""
        v = mpmath.mpf(float(v))
        cdf = mpmath.erfc(-v / mpmath.sqrt(2)) / 2
        if derivative:
            slope = v * mpmath.exp(-v * v / 2) / mpmath.sqrt(2 * mpmath.pi)
            return cdf + slope, max(abs(cdf), abs(slope))
        return v * cdf, abs(v * cdf)

    ulps = []
    for v, g in zip(z, got):
        e, scale = exact(v)
        spacing = max(float(np.spacing(dtype(float(scale)))), float(info.smallest_subnormal))
        ulps.append(float(abs(mpmath.mpf(float(g)) - e) / spacing))
    worst = int(np.argmax(ulps))
    assert ulps[worst] <= GELU_MAX_ULP, (z[worst], got[worst], ulps[worst])


@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_math_special_values(dtype):
    """±0 keep their sign where σ does (tanh, elu), ±inf saturate, NaN
    propagates, and a subnormal z is still z's value to tanh and elu;
    gelu saturates too (not inf · 0), and its σ' far in the left tail,
    negative, underflows to −0."""
    tiny = np.finfo(dtype).smallest_subnormal
    z = np.array([-0.0, 0.0, -np.inf, np.inf, np.nan, -tiny, tiny], dtype)
    expected = {
        "tanh": ([-0.0, 0.0, -1, 1, np.nan, -tiny, tiny], [1, 1, 0, 0, np.nan, 1, 1]),
        "elu": ([-0.0, 0.0, -1, np.inf, np.nan, -tiny, tiny], [1, 1, 0, 1, np.nan, 1, 1]),
        "sigmoid": ([0.5, 0.5, 0, 1, np.nan, 0.5, 0.5],
                    [0.25, 0.25, 0, 0, np.nan, 0.25, 0.25]),
        "softplus": ([np.log(2), np.log(2), 0, np.inf, np.nan, np.log(2), np.log(2)],
                     [0.5, 0.5, 0, 1, np.nan, 0.5, 0.5]),
    }
    expected["gelu"] = ([-0.0, 0.0, -0.0, np.inf, np.nan, -0.0, 0.0],
                        [0.5, 0.5, -0.0, 1, np.nan, 0.5, 0.5])
    for act, (forward, derivative) in expected.items():
        a = ops.activation_forward(act, z)
        np.testing.assert_array_equal(a, np.array(forward, dtype))
        np.testing.assert_array_equal(np.signbit(a[:2]), np.signbit(np.array(forward[:2])))
        d = ops.activation_derivative(act, z)
        np.testing.assert_array_equal(d, np.array(derivative, dtype))
        np.testing.assert_array_equal(np.signbit(d[:3]), np.signbit(np.array(derivative[:3])))
    far = np.array([-30, -1e30] if dtype == np.float32 else [-60, -1e300], dtype)
    assert np.signbit(ops.activation_forward("gelu", far)).all()
    assert np.signbit(ops.activation_derivative("gelu", far)).all()


def test_reference_gelu_erfc_form_equals_erf_form():
    """The oracle's Φ (erfc form, accurate in the left tail) is the textbook
    (1 + erf(z/√2)) / 2 where the latter does not cancel."""
    z = np.linspace(-5, 8, 1001)
    np.testing.assert_allclose(ref.normal_cdf(z), ref.normal_cdf_erf(z), rtol=1e-14,
                               atol=1e-16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backprop_delta_is_finite_for_extreme_z(dtype):
    big = 1e4 if dtype == np.float32 else 1e300
    z = np.array([[-big, -50, 0, 50, big]], dtype)
    W = np.ones((2, 5), dtype)
    Dn = np.ones((1, 2), dtype)
    for act in ACTS:
        got = ops.backprop_delta(W, Dn, z, act)
        assert np.isfinite(got).all(), act
        assert_close(got, ref.backprop_delta(W, Dn, z, act), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_is_stable_for_huge_logits(dtype):
    big = 1e4 if dtype == np.float32 else 1e300
    Z = np.array([[big, -big, 0.0], [-big, -big, -big], [big, big, -big],
                  [0.0, 0.0, big]], dtype)
    y = np.array([1, 0, 2, 2])
    loss, dZ = ops.softmax_cross_entropy(Z, y)
    assert np.isfinite(loss) and np.isfinite(dZ).all()
    ref_loss, ref_dZ = ref.softmax_cross_entropy(Z, y)
    assert loss == pytest.approx(ref_loss, rel=RTOL[np.dtype(dtype)])
    assert_close(dZ, ref_dZ, dtype)
    # row by row: the exact values
    for i, expected in enumerate([2 * big, np.log(3), 2 * big + np.log(2), 0.0]):
        li, dzi = ops.softmax_cross_entropy(Z[i], int(y[i]))
        assert li == pytest.approx(expected, rel=RTOL[np.dtype(dtype)], abs=1e-6)
        assert np.isfinite(dzi).all()


# --------------------------------------------------------------------------
# The fused training step's passes (cbp._ops; the engine calls the C
# routines): each must give exactly what the separate kernels give, plus
# the maxima its overflow guard reads, with non-finite entries as inf.
# --------------------------------------------------------------------------

def _max_or_inf(a):
    a = np.asarray(a, dtype=np.float64)
    return float(np.abs(a).max()) if np.isfinite(a).all() else np.inf


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special", [None, np.inf, -np.inf, np.nan])
def test_activation_forward_max(act, dtype, special):
    from cbp import _ops
    rng = np.random.default_rng(17)
    z = (4 * rng.standard_normal(1000)).astype(dtype)
    if special is not None:
        z[371] = special
    a = np.empty_like(z)
    got = _ops.activation_forward_max(ops.activation_code(act), z, a)
    expected = ops.activation_forward(act, z)
    expected[~np.isfinite(z)] = np.nan   # an overflowed z is not saturated away
    np.testing.assert_array_equal(a, expected)   # the same σ, bit for bit
    assert got == _max_or_inf(expected)
    with np.errstate(invalid="ignore", over="ignore"):
        assert_close(a[np.isfinite(z)], ref.sigma(act, z[np.isfinite(z)].astype(np.float64)),
                     rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,width", [(1, 7), (33, 10), (5, 256), (4, 600)])
def test_activation_backward_sum_max(act, dtype, n, width):
    # widths past the 256-column block of accumulators, and one row
    from cbp import _ops
    rng = np.random.default_rng(n * width)
    Z, D = rand(rng, (n, width), dtype), rand(rng, (n, width), dtype)
    D_out, sums = D.copy(), np.empty(width, dtype)
    got = _ops.activation_backward_sum_max(ops.activation_code(act), Z, D_out, sums)
    # the separate kernels: D ⊙ σ'(Z) (one rounding per entry), then db
    expected_D = D * ops.activation_derivative(act, Z.ravel()).reshape(n, width)
    np.testing.assert_array_equal(D_out, expected_D)
    db = np.empty(width, dtype)
    _ops.bias_grad(expected_D, db)
    np.testing.assert_array_equal(sums, db)
    assert got == _max_or_inf(expected_D)
    # and against the formula in float64
    full = D.astype(np.float64) * ref.sigma_prime(act, Z.astype(np.float64))
    assert_close(D_out, full)
    assert_close(sums, full.sum(axis=0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_activation_backward_sum_max_reports_nonfinite(dtype, special):
    from cbp import _ops
    rng = np.random.default_rng(5)
    Z, D = rand(rng, (6, 300), dtype), rand(rng, (6, 300), dtype)
    Z[:, 280] = 1.0                      # σ' = 1 there for ReLU
    D[4, 280] = special
    sums = np.empty(300, dtype)
    got = _ops.activation_backward_sum_max(ops.activation_code("relu"), Z, D, sums)
    assert got == np.inf
    assert not np.isfinite(sums[280]) and np.isfinite(np.delete(sums, 280)).all()


def test_fused_sgd_step_matches_backward_then_update():
    # The fused step (forward, loss, one pass per delta, the update folded
    # into gemm) against backward() and the SGD rule applied in NumPy:
    # biases exactly (the same sums, rounded and applied alike), weights to
    # rounding (gemm with alpha = −lr rounds differently from −lr · dW).
    import cbp
    rng = np.random.default_rng(8)
    X = rng.standard_normal((40, 12)).astype(np.float32)
    y = rng.integers(0, 5, 40)
    a = cbp.Network.mlp([12, 300, 20, 5], activation="tanh", dtype="float32", seed=8)
    b = cbp.Network.mlp([12, 300, 20, 5], activation="tanh", dtype="float32", seed=8)
    lr = np.float32(0.1)
    loss_a = a.train_step(X, y, cbp.SGD(lr=float(lr)))
    loss_b = b.backward(X, y)
    assert loss_a == loss_b
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.b, lb.b + (-lr) * lb.db)
        assert_close(la.W, lb.W - lr * lb.dW)
