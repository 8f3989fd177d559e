"""cbp.ops on bad input: every mismatch is a ValueError naming the expected
and the actual shape, every wrong type a TypeError, never a crash or a
stray exception (API.md §1, §5, §8); and a hypothesis fuzz test throwing
random shapes, dtypes, layouts and ``out=`` arguments at every function."""
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cbp.ops as ops
import reference as ref

F32, F64 = np.float32, np.float64
RTOL = {np.dtype(F32): 1e-5, np.dtype(F64): 1e-12}


def z(*shape, dtype=F64):
    return np.zeros(shape, dtype)


def labels(*values):
    return np.array(values, dtype=np.int64)


# --------------------------------------------------------------------------
# Shape mismatches: (call, expected shape text, actual shape text)
# --------------------------------------------------------------------------

SHAPE_ERRORS = {
    # linear_forward(x, W, b): W (4, 3)
    "linear_forward b": (lambda: ops.linear_forward(z(5, 3), z(4, 3), z(5)), "(4,)", "(5,)"),
    "linear_forward b 2-D": (lambda: ops.linear_forward(z(5, 3), z(4, 3), z(1, 4)),
                             "(4,)", "(1, 4)"),
    "linear_forward x": (lambda: ops.linear_forward(z(5, 2), z(4, 3), z(4)),
                         "(5, 3)", "(5, 2)"),
    "linear_forward x vector": (lambda: ops.linear_forward(z(2), z(4, 3), z(4)),
                                "(3,)", "(2,)"),
    "linear_forward x 3-D": (lambda: ops.linear_forward(z(2, 5, 3), z(4, 3), z(4)),
                             "1-D or 2-D", "(2, 5, 3)"),
    "linear_forward x 0-D": (lambda: ops.linear_forward(z(), z(4, 3), z(4)),
                             "1-D or 2-D", "()"),
    "linear_forward W 1-D": (lambda: ops.linear_forward(z(5, 3), z(12), z(4)),
                             "2-D", "(12,)"),
    "linear_forward W 3-D": (lambda: ops.linear_forward(z(5, 3), z(1, 4, 3), z(4)),
                             "2-D", "(1, 4, 3)"),
    # outer(delta, x)
    "outer rows": (lambda: ops.outer(z(5, 4), z(6, 3)), "(5, 3)", "(6, 3)"),
    "outer rank": (lambda: ops.outer(z(5, 4), z(3)), "2-D", "(3,)"),
    "outer rank vector": (lambda: ops.outer(z(4), z(5, 3)), "1-D", "(5, 3)"),
    "outer 3-D": (lambda: ops.outer(z(2, 5, 4), z(2, 5, 3)), "1-D or 2-D", "(2, 5, 4)"),
    # matvec_t(W, delta): W (4, 3)
    "matvec_t": (lambda: ops.matvec_t(z(4, 3), z(5, 5)), "(5, 4)", "(5, 5)"),
    "matvec_t vector": (lambda: ops.matvec_t(z(4, 3), z(3)), "(4,)", "(3,)"),
    "matvec_t W 1-D": (lambda: ops.matvec_t(z(4), z(4)), "2-D", "(4,)"),
    "matvec_t delta 3-D": (lambda: ops.matvec_t(z(4, 3), z(1, 1, 4)), "1-D or 2-D",
                           "(1, 1, 4)"),
    # linear_backward(delta, x, W): W (4, 3)
    "linear_backward delta": (lambda: ops.linear_backward(z(5, 5), z(5, 3), z(4, 3)),
                              "(5, 4)", "(5, 5)"),
    "linear_backward x": (lambda: ops.linear_backward(z(5, 4), z(5, 2), z(4, 3)),
                          "(5, 3)", "(5, 2)"),
    "linear_backward x rows": (lambda: ops.linear_backward(z(5, 4), z(6, 3), z(4, 3)),
                               "(5, 3)", "(6, 3)"),
    "linear_backward vector": (lambda: ops.linear_backward(z(4), z(2), z(4, 3)),
                               "(3,)", "(2,)"),
    "linear_backward rank": (lambda: ops.linear_backward(z(5, 4), z(3), z(4, 3)),
                             "2-D", "(3,)"),
    "linear_backward W": (lambda: ops.linear_backward(z(5, 4), z(5, 3), z(12)),
                          "2-D", "(12,)"),
    # backprop_delta(W_next, delta_next, z, act): W_next (4, 3)
    "backprop_delta delta_next": (
        lambda: ops.backprop_delta(z(4, 3), z(5, 5), z(5, 3), "relu"), "(5, 4)", "(5, 5)"),
    "backprop_delta z": (
        lambda: ops.backprop_delta(z(4, 3), z(5, 4), z(5, 2), "relu"), "(5, 3)", "(5, 2)"),
    "backprop_delta z rows": (
        lambda: ops.backprop_delta(z(4, 3), z(5, 4), z(6, 3), "tanh"), "(5, 3)", "(6, 3)"),
    "backprop_delta vector": (
        lambda: ops.backprop_delta(z(4, 3), z(4), z(2), "gelu"), "(3,)", "(2,)"),
    "backprop_delta rank": (
        lambda: ops.backprop_delta(z(4, 3), z(5, 4), z(3), "relu"), "2-D", "(3,)"),
    "backprop_delta W": (
        lambda: ops.backprop_delta(z(3), z(5, 4), z(5, 3), "relu"), "2-D", "(3,)"),
    # softmax_cross_entropy(z, y)
    "softmax_cross_entropy y": (
        lambda: ops.softmax_cross_entropy(z(5, 3), labels(0, 1, 2, 0)), "(5,)", "(4,)"),
    "softmax_cross_entropy y 2-D": (
        lambda: ops.softmax_cross_entropy(z(5, 3), np.zeros((5, 1), np.int64)),
        "(5,)", "(5, 1)"),
    "softmax_cross_entropy z 3-D": (
        lambda: ops.softmax_cross_entropy(z(2, 5, 3), labels(0, 1)), "1-D or 2-D",
        "(2, 5, 3)"),
    "softmax_cross_entropy vector y": (
        lambda: ops.softmax_cross_entropy(z(3), labels(0, 1)), "single label", "(2,)"),
    "softmax_cross_entropy empty": (
        lambda: ops.softmax_cross_entropy(z(0, 3), labels()), "empty", "(0, 3)"),
    "softmax_cross_entropy no classes": (
        lambda: ops.softmax_cross_entropy(z(2, 0), labels(0, 0)), "at least one class",
        "(2, 0)"),
    # gates
    "mul_gate_backward x": (lambda: ops.mul_gate_backward(z(3, 4), z(4, 3), z(3, 4)),
                            "(3, 4)", "(4, 3)"),
    "mul_gate_backward y": (lambda: ops.mul_gate_backward(z(3, 4), z(3, 4), z(12)),
                            "(3, 4)", "(12,)"),
    "relu_gate_backward x": (lambda: ops.relu_gate_backward(z(3, 4), z(12)),
                             "(3, 4)", "(12,)"),
    "relu_gate_backward x 0-d": (lambda: ops.relu_gate_backward(z(1), z()), "(1,)", "()"),
    # out= of the wrong shape, one per single-array kernel
    "linear_forward out": (
        lambda: ops.linear_forward(z(5, 3), z(4, 3), z(4), out=z(4, 5)), "(5, 4)", "(4, 5)"),
    "outer out": (lambda: ops.outer(z(5, 4), z(5, 3), out=z(3, 4)), "(4, 3)", "(3, 4)"),
    "matvec_t out": (lambda: ops.matvec_t(z(4, 3), z(4), out=z(4)), "(3,)", "(4,)"),
    "backprop_delta out": (
        lambda: ops.backprop_delta(z(4, 3), z(5, 4), z(5, 3), "elu", out=z(5, 4)),
        "(5, 3)", "(5, 4)"),
    "activation_forward out": (
        lambda: ops.activation_forward("relu", z(3, 4), out=z(12)), "(3, 4)", "(12,)"),
    "activation_derivative out": (
        lambda: ops.activation_derivative("relu", z(3, 4), out=z(4, 3)), "(3, 4)", "(4, 3)"),
    "relu_gate_backward out": (
        lambda: ops.relu_gate_backward(z(3, 4), z(3, 4), out=z(3, 4, 1)),
        "(3, 4)", "(3, 4, 1)"),
}


@pytest.mark.parametrize("case", list(SHAPE_ERRORS))
def test_shape_mismatch_names_expected_and_actual(case):
    call, expected, actual = SHAPE_ERRORS[case]
    with pytest.raises(ValueError) as info:
        call()
    msg = str(info.value)
    assert expected in msg, msg
    assert actual in msg, msg
    fn = case.split()[0]
    assert msg.startswith(fn + ":"), f"message does not name {fn}: {msg}"


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------

# name → (callable of the arrays, the arrays), all float64 and valid.
def _valid_calls():
    W = np.ones((4, 3))
    return {
        "linear_forward": (ops.linear_forward, [np.ones((5, 3)), W, np.ones(4)]),
        "linear_forward vec": (ops.linear_forward, [np.ones(3), W, np.ones(4)]),
        "outer": (ops.outer, [np.ones((5, 4)), np.ones((5, 3))]),
        "matvec_t": (ops.matvec_t, [W, np.ones((5, 4))]),
        "linear_backward": (ops.linear_backward, [np.ones((5, 4)), np.ones((5, 3)), W]),
        "backprop_delta": (lambda *a: ops.backprop_delta(*a, "relu"),
                           [W, np.ones((5, 4)), np.ones((5, 3))]),
        "activation_forward": (lambda a: ops.activation_forward("tanh", a), [np.ones((2, 3))]),
        "activation_derivative": (lambda a: ops.activation_derivative("gelu", a),
                                  [np.ones((2, 3))]),
        "softmax_cross_entropy": (lambda a: ops.softmax_cross_entropy(a, labels(0, 1)),
                                  [np.ones((2, 3))]),
        "add_gate_backward": (ops.add_gate_backward, [np.ones((2, 3))]),
        "mul_gate_backward": (ops.mul_gate_backward, [np.ones((2, 3))] * 3),
        "relu_gate_backward": (ops.relu_gate_backward, [np.ones((2, 3))] * 2),
    }


VALID_CALLS = _valid_calls()
BAD_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128,
              np.float16, np.longdouble, np.dtype(">f8"), np.dtype(">f4"), object, "U3",
              "datetime64[s]"]


@pytest.mark.parametrize("name", list(VALID_CALLS))
def test_valid_calls_work(name):
    call, arrays = VALID_CALLS[name]
    call(*arrays)
    call(*[a.astype(F32) for a in arrays])


@pytest.mark.parametrize("name", [k for k, v in VALID_CALLS.items() if len(v[1]) > 1])
def test_mixed_dtypes_are_a_type_error(name):
    call, arrays = VALID_CALLS[name]
    for k in range(len(arrays)):
        for base, odd in ((F64, F32), (F32, F64)):
            args = [a.astype(odd if j == k else base) for j, a in enumerate(arrays)]
            with pytest.raises(TypeError, match="one dtype") as info:
                call(*args)
            assert "float32" in str(info.value) and "float64" in str(info.value)


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
@pytest.mark.parametrize("name", list(VALID_CALLS))
def test_non_float_dtypes_are_a_type_error(name, dtype):
    call, arrays = VALID_CALLS[name]
    for k in range(len(arrays)):
        bad = np.zeros(arrays[k].shape, dtype=dtype)
        for base in (F64, F32):
            args = [bad if j == k else a.astype(base) for j, a in enumerate(arrays)]
            with pytest.raises(TypeError) as info:
                call(*args)
            msg = str(info.value)
            assert "float32" in msg and "float64" in msg, msg
            assert str(np.dtype(dtype)) in msg, msg


def test_out_of_the_wrong_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="float64.*float32|dtype"):
        ops.activation_forward("relu", z(3), out=z(3, dtype=F32))
    with pytest.raises(TypeError, match="dtype"):
        ops.linear_forward(z(3), z(2, 3), z(2), out=np.zeros(2, np.int64))


@pytest.mark.parametrize("call", [
    lambda: ops.linear_backward(z(4), z(3), z(4, 3), out=z(4, 3)),
    lambda: ops.softmax_cross_entropy(z(2, 3), labels(0, 1), out=z(2, 3)),
    lambda: ops.add_gate_backward(z(3), out=z(3)),
    lambda: ops.mul_gate_backward(z(3), z(3), z(3), out=z(3)),
], ids=["linear_backward", "softmax_cross_entropy", "add_gate_backward",
        "mul_gate_backward"])
def test_tuple_returning_kernels_take_no_out(call):
    with pytest.raises(TypeError, match="out"):
        call()


def test_dimensions_beyond_the_blas_int_are_refused_before_any_copy():
    huge = np.broadcast_to(np.zeros((1, 1)), (2**31, 1))   # no memory behind it
    with pytest.raises(ValueError, match="2147483648"):
        ops.linear_forward(huge, z(2, 1), z(2))
    with pytest.raises(ValueError, match="2147483648"):
        ops.activation_forward("relu", np.broadcast_to(np.zeros(1), (2**31,)))


# --------------------------------------------------------------------------
# Activation names
# --------------------------------------------------------------------------

ACT_CALLS = {
    "activation_forward": lambda act: ops.activation_forward(act, z(3)),
    "activation_derivative": lambda act: ops.activation_derivative(act, z(3)),
    "backprop_delta": lambda act: ops.backprop_delta(z(2, 3), z(2), z(3), act),
}


@pytest.mark.parametrize("bad", ["swish", "ReLU", "", " relu", "softmax", "logistic"])
@pytest.mark.parametrize("name", list(ACT_CALLS))
def test_unknown_activation_lists_the_known_ones(name, bad):
    with pytest.raises(ValueError) as info:
        ACT_CALLS[name](bad)
    msg = str(info.value)
    assert repr(bad) in msg
    for known in ops.ACTIVATIONS:
        assert known in msg, msg


@pytest.mark.parametrize("bad", [None, 3, 1.5, b"relu", ["relu"], object()],
                         ids=lambda b: type(b).__name__)
@pytest.mark.parametrize("name", list(ACT_CALLS))
def test_non_string_activation_is_a_type_error(name, bad):
    with pytest.raises(TypeError) as info:
        ACT_CALLS[name](bad)
    msg = str(info.value)
    assert type(bad).__name__ in msg
    for known in ops.ACTIVATIONS:
        assert known in msg


def test_activations_constant_matches_the_api():
    assert ops.ACTIVATIONS == ("identity", "relu", "leaky_relu", "sigmoid", "tanh",
                               "softplus", "elu", "gelu")
    assert set(ops.ACTIVATIONS) == set(ref.ACTIVATIONS)


# --------------------------------------------------------------------------
# Non-array junk
# --------------------------------------------------------------------------

class Junk:
    pass


JUNK = ["abc", None, [1.0, 2.0], [[1.0, 2.0]], (1.0, 2.0), Junk(), 3.0, 2, {"a": 1},
        b"\x00" * 16, memoryview(b"\x00" * 16), range(3)]


@pytest.mark.parametrize("junk", JUNK, ids=lambda j: type(j).__name__)
@pytest.mark.parametrize("name", list(VALID_CALLS))
def test_non_array_arguments_get_a_clear_error(name, junk):
    call, arrays = VALID_CALLS[name]
    for k in range(len(arrays)):
        args = [junk if j == k else a for j, a in enumerate(arrays)]
        with pytest.raises((TypeError, ValueError)) as info:
            call(*args)
        msg = str(info.value)
        assert type(info.value) in (TypeError, ValueError)
        assert "numpy.ndarray" in msg and type(junk).__name__ in msg, msg


@pytest.mark.parametrize("junk", [j for j in JUNK if j is not None],  # None: the default
                         ids=lambda j: type(j).__name__)
def test_non_array_out_gets_a_clear_error(junk):
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        ops.activation_forward("relu", z(2), out=junk)


# --------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------

@pytest.mark.parametrize("y, error, words", [
    (labels(0, 3), ValueError, r"\[0, 3\).*3"),
    (labels(-1, 0), ValueError, r"\[0, 3\).*-1"),
    (labels(0, 2**62), ValueError, r"\[0, 3\)"),
    (np.array([0, 2**64 - 1], np.uint64), ValueError, r"\[0, 3\)"),
    (np.array([0.0, 1.0]), TypeError, "integer.*float64"),
    (np.array([0.5, 1.0], F32), TypeError, "integer"),
    (np.array([True, False]), TypeError, "integer"),
    (np.array([0, 1], dtype=object), TypeError, "integer"),
    (np.array(["0", "1"]), TypeError, "integer"),
    ([0, 1], TypeError, "numpy.ndarray"),
    (None, TypeError, "numpy.ndarray"),
    (1, TypeError, "numpy.ndarray"),
    (labels(0, 1, 2), ValueError, r"\(2,\).*\(3,\)"),
])
def test_bad_labels_batch(y, error, words):
    with pytest.raises(error, match=words):
        ops.softmax_cross_entropy(z(2, 3), y)


@pytest.mark.parametrize("y, error", [
    (3, ValueError), (-1, ValueError), (2**63 - 1, ValueError), (10**30, TypeError),
    (1.0, TypeError), (np.float64(1.0), TypeError), (True, TypeError),
    (np.bool_(False), TypeError), ("1", TypeError), (None, TypeError), ([1], TypeError),
    (np.array(1.0), TypeError), (np.array([1]), ValueError), (labels(0, 1), ValueError),
], ids=repr)
def test_bad_labels_vector(y, error):
    with pytest.raises(error):
        ops.softmax_cross_entropy(z(3), y)


# --------------------------------------------------------------------------
# Fuzz: random shapes (with 0-size dims), dtypes, layouts, out= at every
# function.  A valid call must return the reference's result; an invalid
# one must raise ValueError or TypeError; nothing else may happen.
# --------------------------------------------------------------------------

FLOATS = (np.dtype(F32), np.dtype(F64))
OTHER_DTYPES = (np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.bool_),
                np.dtype(np.complex128), np.dtype(np.float16), np.dtype(object))

# name → (argument templates over dims n, i, o; vector form allowed;
#         takes an activation; takes out=)
SPECS = {
    "linear_forward": ([("n", "i"), ("o", "i"), ("o",)], True, False, True),
    "outer": ([("n", "o"), ("n", "i")], True, False, True),
    "matvec_t": ([("o", "i"), ("n", "o")], True, False, True),
    "linear_backward": ([("n", "o"), ("n", "i"), ("o", "i")], True, False, False),
    "backprop_delta": ([("o", "i"), ("n", "o"), ("n", "i")], True, True, True),
    "activation_forward": ([("n", "i", "o")], True, True, True),
    "activation_derivative": ([("n", "i", "o")], True, True, True),
    "softmax_cross_entropy": ([("n", "o")], True, False, False),
    "add_gate_backward": ([("n", "i")], True, False, False),
    "mul_gate_backward": ([("n", "i")] * 3, True, False, False),
    "relu_gate_backward": ([("n", "i")] * 2, True, False, True),
}


def is_real(arrays):
    return (all(isinstance(a, np.ndarray) and a.dtype in FLOATS for a in arrays)
            and len({a.dtype for a in arrays}) == 1)


def reference_result(name, arrays, act, y):
    """The reference result of a valid call, or None when the call is invalid."""
    known = act in ref.ACTIVATIONS
    if not is_real(arrays):
        return None
    a = arrays
    if name == "linear_forward":
        x, W, b = a
        ok = (W.ndim == 2 and x.ndim in (1, 2) and b.shape == (W.shape[0],)
              and x.shape[-1] == W.shape[1])
        return ref.linear_forward(x, W, b) if ok else None
    if name == "outer":
        d, x = a
        ok = d.ndim in (1, 2) and x.ndim == d.ndim and (d.ndim == 1 or
                                                         d.shape[0] == x.shape[0])
        return ref.outer(d, x) if ok else None
    if name == "matvec_t":
        W, d = a
        ok = W.ndim == 2 and d.ndim in (1, 2) and d.shape[-1] == W.shape[0]
        return ref.matvec_t(W, d) if ok else None
    if name == "linear_backward":
        d, x, W = a
        ok = (W.ndim == 2 and d.ndim in (1, 2) and x.ndim == d.ndim
              and d.shape == d.shape[:-1] + (W.shape[0],)
              and x.shape == d.shape[:-1] + (W.shape[1],))
        return ref.linear_backward(d, x, W) if ok else None
    if name == "backprop_delta":
        W, d, zz = a
        ok = (known and W.ndim == 2 and d.ndim in (1, 2) and zz.ndim == d.ndim
              and d.shape[-1] == W.shape[0] and zz.shape == d.shape[:-1] + (W.shape[1],))
        return ref.backprop_delta(W, d, zz, act) if ok else None
    if name == "activation_forward":
        return ref.sigma(act, a[0]) if known else None
    if name == "activation_derivative":
        return ref.sigma_prime(act, a[0]) if known else None
    if name == "softmax_cross_entropy":
        (zz,) = a
        if zz.ndim not in (1, 2) or zz.size == 0:
            return None
        c = zz.shape[-1]
        if zz.ndim == 1:
            ok = (isinstance(y, (int, np.integer)) and not isinstance(y, (bool, np.bool_))
                  and 0 <= y < c)
        else:
            ok = (isinstance(y, np.ndarray) and y.dtype.kind in "iu"
                  and y.shape == (zz.shape[0],) and bool(np.all((y >= 0) & (y < c))))
        return ref.softmax_cross_entropy(zz, y) if ok else None
    if name == "add_gate_backward":
        return ref.add_gate_backward(a[0])
    if name == "mul_gate_backward":
        ok = a[1].shape == a[0].shape and a[2].shape == a[0].shape
        return ref.mul_gate_backward(*a) if ok else None
    if name == "relu_gate_backward":
        return ref.relu_gate_backward(*a) if a[1].shape == a[0].shape else None
    raise AssertionError(name)


def make_array(shape, dtype, layout, rng):
    if dtype == np.dtype(object):
        return np.array(rng.standard_normal(shape).tolist() if shape else 0.5, dtype=object)
    if dtype.kind == "b":
        a = rng.random(shape) < 0.5
    elif dtype.kind in "iu":
        a = rng.integers(-3, 4, size=shape)
    elif dtype.kind == "c":
        a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    else:
        a = rng.standard_normal(shape)
    a = np.asarray(a).astype(dtype)
    if a.ndim == 0:             # a 0-d array has one layout
        return a
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "negative":
        flip = tuple(slice(None, None, -1) for _ in a.shape)
        return np.ascontiguousarray(a[flip])[flip]
    if layout == "transposed":
        return np.ascontiguousarray(a.T).T
    return a


@st.composite
def calls(draw, name):
    templates, vector_ok, takes_act, takes_out = SPECS[name]
    dims = {d: draw(st.integers(0, 4)) for d in "nio"}
    drop_n = vector_ok and draw(st.booleans())
    base = draw(st.sampled_from(FLOATS)) if draw(st.integers(0, 7)) else \
        draw(st.sampled_from(OTHER_DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    arrays = []
    for template in templates:
        shape = [dims[d] for d in template if not (drop_n and d == "n")]
        mutation = draw(st.integers(0, 29))
        if mutation == 0 and shape:                 # one dimension off
            shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(0, 5))
        elif mutation == 1:                         # one dimension more
            shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(0, 3)))
        elif mutation == 2 and shape:               # one dimension less
            shape.pop(draw(st.integers(0, len(shape) - 1)))
        dtype = base
        if draw(st.integers(0, 19)) == 0:           # a mixed dtype
            dtype = draw(st.sampled_from(FLOATS + OTHER_DTYPES))
        layout = "C" if dtype == np.dtype(object) else \
            draw(st.sampled_from(["C", "F", "strided", "negative", "transposed"]))
        if draw(st.integers(0, 49)) == 0:
            arrays.append(draw(st.sampled_from([None, "x", [1.0], 1.0])))
        else:
            arrays.append(make_array(tuple(shape), dtype, layout, rng))
    act = None
    if takes_act:
        act = draw(st.sampled_from(ref.ACTIVATIONS + ("nope",)))
        if draw(st.integers(0, 19)) == 0:
            act = draw(st.sampled_from([None, 0, b"relu"]))
    y = None
    if name == "softmax_cross_entropy":
        first = arrays[0]
        n = first.shape[0] if isinstance(first, np.ndarray) and first.ndim >= 1 else 1
        c = first.shape[-1] if isinstance(first, np.ndarray) and first.ndim >= 1 else 1
        kind = draw(st.sampled_from(["valid"] * 6 + ["array", "scalar", "bad_range",
                                                  "float", "wrong_length", "list", "bool"]))
        if kind == "valid":
            kind = "scalar" if isinstance(first, np.ndarray) and first.ndim == 1 else "array"
        if kind == "array":
            y = rng.integers(0, max(c, 1), size=n).astype(
                draw(st.sampled_from([np.int64, np.int32, np.uint8])))
        elif kind == "scalar":
            y = int(rng.integers(0, max(c, 1)))
        elif kind == "bad_range":
            y = rng.integers(0, max(c, 1), size=n)
            if n:
                y[rng.integers(0, n)] = draw(st.sampled_from([-1, c, c + 7, 2**40]))
        elif kind == "float":
            y = rng.integers(0, max(c, 1), size=n).astype(np.float64)
        elif kind == "wrong_length":
            y = rng.integers(0, max(c, 1), size=n + 1)
        elif kind == "list":
            y = [0] * n
        else:
            y = np.zeros(n, bool)
    out = None
    out_kind = "none"
    if takes_out:
        out_kind = draw(st.sampled_from(["none", "none", "good", "good", "shape", "dtype",
                                         "noncontig", "alias"]))
    return dict(arrays=arrays, act=act, y=y, out_kind=out_kind, seed=seed)


def invoke(name, arrays, act, y, out):
    kw = {} if out is None else {"out": out}
    if name in ("backprop_delta",):
        return getattr(ops, name)(*arrays, act, **kw)
    if name in ("activation_forward", "activation_derivative"):
        return getattr(ops, name)(act, *arrays, **kw)
    if name == "softmax_cross_entropy":
        return ops.softmax_cross_entropy(arrays[0], y)
    return getattr(ops, name)(*arrays, **kw)


def build_out(kind, expected, arrays, dtype):
    """An out= argument of the given kind; returns (out, valid)."""
    if kind == "none" or expected is None:
        return None, True
    shape = np.shape(expected)
    if kind == "good":
        return np.full(shape, np.nan, dtype), True
    if kind == "shape":
        return np.zeros(shape + (1,), dtype), False
    if kind == "dtype":
        other = F32 if dtype == np.dtype(F64) else F64
        return np.zeros(shape, other), False
    if kind == "noncontig":
        out = np.zeros(shape + (2,), dtype)[..., 0]
        return out, out.flags.c_contiguous   # size ≤ 1 is still contiguous
    if kind == "alias":  # an input of the right shape, when there is one
        for a in arrays:
            if (a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
                    and a.flags.writeable):
                return a, True
        return np.empty(shape, dtype), True
    raise AssertionError(kind)


def check_call(name, case):
    arrays, act, y = case["arrays"], case["act"], case["y"]
    inputs = [a.copy() if isinstance(a, np.ndarray) else a for a in arrays]
    expected = reference_result(name, inputs, act, y)
    dtype = arrays[0].dtype if expected is not None else None
    out, out_ok = build_out(case["out_kind"], expected, arrays, dtype)
    valid = expected is not None and out_ok
    try:
        got = invoke(name, arrays, act, y, out)
    except (ValueError, TypeError) as e:
        assert not valid, f"valid call refused: {type(e).__name__}: {e}"
        assert str(e), "empty error message"
        return
    assert valid, "invalid call accepted"
    if out is not None:
        assert got is out
    pairs = zip(got, expected) if isinstance(expected, tuple) else [(got, expected)]
    for g, e in pairs:
        if isinstance(e, float):
            assert g == pytest.approx(e, rel=RTOL[dtype], abs=RTOL[dtype])
            continue
        assert isinstance(g, np.ndarray) and g.dtype == dtype and g.shape == e.shape
        scale = max(1.0, float(np.abs(e).max())) if e.size else 1.0
        np.testing.assert_allclose(g.astype(F64), e, rtol=RTOL[dtype],
                                   atol=RTOL[dtype] * scale)
    for a, before in zip(arrays, inputs):     # inputs untouched (unless out aliases)
        if isinstance(a, np.ndarray) and a is not out:
            np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("name", list(SPECS))
@settings(max_examples=200, deadline=None, database=None,
          derandomize=os.environ.get("CI", "").lower() in ("1", "true", "yes"),  # see test_fuzz
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_every_function(name, data):
    check_call(name, data.draw(calls(name)))


def test_error_messages_are_plain_sentences():
    """No internal names (Cython buffer errors, memoryview jargon) leak out."""
    for call, _, _ in SHAPE_ERRORS.values():
        with pytest.raises(ValueError) as info:
            call()
        assert not re.search(r"Buffer|memoryview|cbp\._ops", str(info.value))
