"""cbp's pool (src_c/pool.c; docs/threads.md): training steps that get two
BLAS threads run model-parallel on cbp's own threads, each part owning a
share of every layer's units; with plain SGD the update is folded into the
products, with any other optimizer each part stores its rows of the
gradient and updates a slice of the parameters.

* Every test first makes sure the step really took the pool (the pool's
  job counter moves), so none can pass by running the serial path.
* A pool step is the derivation's step: it matches the float64 NumPy
  reference (forward, loss, gradients, SGD update) for several
  architectures, activations, losses, sample weights and layer widths
  that do not split evenly into cache lines; and it matches the serial
  step it replaces to rounding.
* Its special cases take the serial step's decisions: a non-finite loss
  leaves the parameters and says so; a batch of weight 0 changes nothing;
  the overflow guard's fallback gives the serial result.
* It is deterministic, gives the caller's CPU affinity back, lets two
  networks train at once in two threads (one takes the pool, the other
  runs serially), and works in a child process after fork.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

import cbp
import cbp._threads as cbp_threads
import reference_network as refnet
from cbp import _engine
from concurrency import in_forked_child, in_threads, needs_fork
from random_data import training_data as data

threadpoolctl = pytest.importorskip("threadpoolctl")

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-4, np.float64: 1e-11}


@pytest.fixture(autouse=True)
def pool_on(monkeypatch):
    """The pool for every step that gets two BLAS threads, whatever its
    size (the default takes it only below POOL_MAX_WORK), and two BLAS
    threads for every step."""
    if not cbp_threads.bind():
        pytest.skip("no OpenBLAS thread control: the pool is never used")
    monkeypatch.setattr(cbp_threads, "SINGLE_THREAD_WORK", 0.0)
    monkeypatch.setattr(cbp_threads, "POOL_MAX_WORK", float("inf"))
    old = _engine.set_pool(True)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        yield
    _engine.set_pool(old)


def net_of(sizes, activation="relu", loss="softmax_cross_entropy", dtype=np.float32, seed=0):
    return cbp.Network.mlp(sizes, activation=activation, loss=loss, dtype=dtype, seed=seed)


# After cbp runs BLAS on OpenBLAS's threads, calls that may stand aside do,
# until the calls asking for the pool have brought about 0.14 s of
# estimated work (src_c/pool.c, CBP_POOL_ASIDE_NS; cbp/_engine.pyx, _work_ns).
ASIDE_NS = 140e6


def step_ns(net, rows, steps=1, flops_per_row_param=6):
    """_work_ns: a call's estimated work, as the pool counts it."""
    per_ns = 100.0 if net.dtype == np.float32 else 50.0
    return int(steps * (20000.0 + flops_per_row_param * rows * net.num_parameters / per_ns))


def settle():
    """Nothing for the next calls to stand aside for (as after a pause)."""
    _engine.pool_settle()


def pooled(fn):
    """Run fn() with nothing to stand aside for; assert that it ran at
    least one step on the pool."""
    settle()
    before = _engine.pool_jobs()
    result = fn()
    assert _engine.pool_jobs() > before, "the step did not take the pool"
    return result


CASES = [
    # sizes, activation, loss, batch
    ([784, 256, 128, 10], "relu", "softmax_cross_entropy", 32),
    ([37, 100, 23, 5], "tanh", "softmax_cross_entropy", 9),       # shares off cache lines
    ([20, 64, 3], "gelu", "binary_cross_entropy", 16),
    ([30, 50, 40, 4], "sigmoid", "mse", 7),
    ([16, 17, 2], "elu", "softmax_cross_entropy", 2),               # the smallest batch
    ([12, 8], "identity", "mse", 5),                                # one layer
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, activation, loss, n", CASES, ids=str)
@pytest.mark.parametrize("weighted", [False, True])
def test_pool_step_matches_the_reference(sizes, activation, loss, n, dtype, weighted):
    net = net_of(sizes, activation, loss, dtype)
    X, y = data(sizes, n, loss, dtype)
    w = np.random.default_rng(2).random(n).astype(dtype) if weighted else None
    acts = [layer.activation for layer in net.layers]
    params = [p.astype(np.float64) for p in net.parameters()]
    ref_loss, ref_grads = refnet.loss_and_gradients(params, acts, loss, X, y, w)
    lr = 0.05
    loss_value = pooled(lambda: net.train_step(X, y, cbp.SGD(lr=lr), sample_weight=w))
    rtol = RTOL[dtype]
    assert loss_value == pytest.approx(ref_loss, rel=rtol)
    for p, p0, g in zip(net.parameters(), params, ref_grads):
        expected = p0 - lr * g
        np.testing.assert_allclose(p, expected, rtol=rtol, atol=rtol * max(1.0, np.abs(p0).max()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, activation, loss, n", CASES, ids=str)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shuffle", [True, False])
def test_pool_fit_matches_the_serial_fit(sizes, activation, loss, n, dtype, weighted, shuffle):
    """Shuffled, the pool's parts gather their rows of each batch
    themselves (targets and weights with them)."""
    X, y = data(sizes, 5 * n + 1, loss, dtype)     # a last batch of one row: serial
    w = np.random.default_rng(4).random(len(X)).astype(dtype) if weighted else None
    nets = [net_of(sizes, activation, loss, dtype) for _ in range(2)]
    kwargs = dict(epochs=3, batch_size=n, shuffle=shuffle, sample_weight=w, progress=False)
    _engine.set_pool(False)
    h_serial = nets[0].fit(X, y, optimizer=cbp.SGD(lr=0.02), **kwargs)
    _engine.set_pool(True)
    h_pool = pooled(lambda: nets[1].fit(X, y, optimizer=cbp.SGD(lr=0.02), **kwargs))
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(h_pool.history["loss"], h_serial.history["loss"], rtol=rtol)
    for a, b in zip(nets[1].parameters(), nets[0].parameters()):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("parts", [3, 4, 8])
def test_more_parts_than_two(parts):
    """As many parts as BLAS threads (here more threads than this machine
    may have cores: slow, but the arithmetic is what is checked)."""
    sizes = [37, 100, 23, 5]
    X, y = data(sizes, 9, "softmax_cross_entropy", np.float64)
    net = net_of(sizes, activation="tanh", dtype=np.float64)
    params = [p.copy() for p in net.parameters()]
    acts = [layer.activation for layer in net.layers]
    ref_loss, ref_grads = refnet.loss_and_gradients(params, acts, "softmax_cross_entropy", X, y)
    with threadpoolctl.threadpool_limits(parts, user_api="blas"):
        loss = pooled(lambda: net.train_step(X, y, cbp.SGD(lr=0.05)))
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for p, p0, g in zip(net.parameters(), params, ref_grads):
        np.testing.assert_allclose(p, p0 - 0.05 * g, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_is_deterministic(dtype):
    sizes = [50, 70, 30, 4]
    X, y = data(sizes, 400, "softmax_cross_entropy", dtype)
    results = []
    for _ in range(3):
        net = net_of(sizes, dtype=dtype)
        pooled(lambda: net.fit(X, y, epochs=2, batch_size=20, optimizer=cbp.SGD(lr=0.1),
                               progress=False))
        results.append(b"".join(p.tobytes() for p in net.parameters()))
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_loss_leaves_the_parameters(dtype):
    sizes = [10, 20, 3]
    net = net_of(sizes, dtype=dtype)
    X, y = data(sizes, 8, "softmax_cross_entropy", dtype)
    X[:] = np.finfo(dtype).max / 2
    net.layers[0].W[:] = 1          # Z = 10 · max/2 overflows: the loss is not finite
    before = [p.copy() for p in net.parameters()]
    with pytest.raises(cbp.DivergenceError, match="loss is not finite"):
        pooled(lambda: net.train_step(X, y, cbp.SGD(lr=0.1)))
    for a, b in zip(net.parameters(), before):
        assert a.tobytes() == b.tobytes()


def test_zero_weight_batch_changes_nothing():
    sizes = [10, 20, 3]
    net = net_of(sizes)
    X, y = data(sizes, 8, "softmax_cross_entropy", np.float32)
    before = [p.copy() for p in net.parameters()]
    pooled(lambda: net.train_step(X, y, cbp.SGD(lr=0.1), sample_weight=np.zeros(8)))
    for a, b in zip(net.parameters(), before):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lr", [1e-30, 1e5])
def test_guard_fallback_gives_the_serial_result(dtype, lr):
    """Inputs so large (yet finite through the network) that the fused
    update's bound n·max|Δ|·max|A| trips: the pool hands the step to the
    checked path, as the serial step does.  With a tiny lr the update is
    finite and the same; with a large one it would overflow, and both
    refuse it and leave the parameters (the fused update would have
    written infinities)."""
    sizes = [6, 8, 3]
    X, _ = data(sizes, 4, "softmax_cross_entropy", dtype)
    X = X * dtype(np.finfo(dtype).max / 1e5)
    nets = [net_of(sizes, dtype=dtype) for _ in range(2)]
    y = np.argmin(nets[0].forward(X), axis=1)     # the loss is large: deltas are not 0
    initial = [p.copy() for p in nets[0].parameters()]
    outcomes = []
    for net, pool in zip(nets, (False, True)):
        _engine.set_pool(pool)
        step = lambda: net.train_step(X, y, cbp.SGD(lr=lr))   # noqa: E731
        try:
            outcomes.append(pooled(step) if pool else step())
        except cbp.DivergenceError as exc:
            outcomes.append(str(exc))
    if lr < 1:
        serial, pool = outcomes
        assert np.isfinite(serial) and serial > 1e20      # the loss is huge but finite
        assert pool == pytest.approx(serial, rel=RTOL[dtype])
        for a, b, p0 in zip(nets[1].parameters(), nets[0].parameters(), initial):
            assert np.isfinite(a).all()
            np.testing.assert_allclose(a, b, rtol=RTOL[dtype])
        assert any(not np.array_equal(a, p0) for a, p0 in zip(nets[1].parameters(), initial))
    else:
        assert outcomes[0] == outcomes[1]
        assert "update would make a parameter non-finite" in outcomes[1]
        for net in nets:
            for a, p0 in zip(net.parameters(), initial):
                assert a.tobytes() == p0.tobytes()


def test_one_row_and_chunked_steps_never_take_the_pool():
    sizes = [10, 20, 3]
    X, y = data(sizes, 8, "softmax_cross_entropy", np.float32)
    net = net_of(sizes)
    settle()
    before = _engine.pool_jobs()
    for opt in (cbp.SGD(lr=0.1), cbp.Adam(lr=1e-3)):
        net.train_step(X[:1], y[:1], opt)
        Xb, yb = data(sizes, 1500, "softmax_cross_entropy", np.float32)
        net.train_step(Xb, yb, opt)   # more rows than a chunk (1,024)
    assert _engine.pool_jobs() == before
    pooled(lambda: net.train_step(X, y, cbp.Adam(lr=1e-3)))   # while 8 rows do


def test_only_plain_sgd_stays_off_the_pool_above_its_limit(monkeypatch):
    """Above POOL_MAX_WORK plain SGD's steps keep OpenBLAS's threads; every
    other optimizer's take the pool at any size (see cbp/_threads.py)."""
    sizes = [30, 40, 3]
    monkeypatch.setattr(cbp_threads, "POOL_MAX_WORK", 1e4)   # below 6 · 10 rows · 1,363
    X, y = data(sizes, 40, "softmax_cross_entropy", np.float32)
    jobs = {}
    for name, opt in [("sgd", cbp.SGD(lr=0.1)), ("sgd-momentum", cbp.SGD(lr=0.1, momentum=0.9)),
                      ("adam", cbp.Adam()), ("adamw", cbp.AdamW())]:
        net = net_of(sizes)
        settle()
        before = _engine.pool_jobs()
        net.fit(X, y, epochs=1, batch_size=10, optimizer=opt, progress=False)
        net.train_step(X[:10], y[:10], opt)
        jobs[name] = _engine.pool_jobs() - before
    assert jobs == {"sgd": 0, "sgd-momentum": 5, "adam": 5, "adamw": 5}


def test_above_the_limit_other_optimizers_take_the_pool_only_with_all_blas_threads(monkeypatch):
    """Above POOL_MAX_WORK (where only two cores were measured) a step
    with a stored gradient takes the pool only if the pool can have as
    many threads as BLAS would use (CBP_POOL_MAX_PARTS = 8); below the
    limit, the pool takes up to 8 whatever BLAS's count."""
    sizes = [30, 40, 3]
    X, y = data(sizes, 20, "softmax_cross_entropy", np.float32)
    jobs = {}
    for limit, blas_threads in [(1e4, 4), (1e4, 16), (float("inf"), 16)]:
        monkeypatch.setattr(cbp_threads, "POOL_MAX_WORK", limit)
        net = net_of(sizes)
        with threadpoolctl.threadpool_limits(blas_threads, user_api="blas"):
            settle()
            before = _engine.pool_jobs()
            net.fit(X, y, epochs=1, batch_size=10, optimizer=cbp.Adam(), progress=False)
            jobs[limit, blas_threads] = _engine.pool_jobs() - before
    assert jobs == {(1e4, 4): 2, (1e4, 16): 0, (float("inf"), 16): 2}


# Optimizers that store the gradient: the parts write their rows of dW and
# db, then each updates its slice of the flat parameters (whole blocks of
# 4,096), meeting the others at each of the update's finiteness checks.
OPTIMIZERS = [
    ("sgd-momentum", "sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd-nesterov-weight-decay", "sgd", dict(lr=0.05, momentum=0.7, nesterov=True,
                                              weight_decay=0.02)),
    ("sgd-weight-decay", "sgd", dict(lr=0.1, weight_decay=0.05)),
    ("adam-default", "adam", dict()),
    ("adam-weight-decay", "adam", dict(lr=0.01, weight_decay=0.1)),
    # ε = 0: every step through Adam's exact dry run (its bound divides by ε)
    ("adam-eps-zero", "adam", dict(lr=0.01, eps=0.0)),
    ("adamw-custom", "adamw", dict(lr=0.01, beta1=0.85, beta2=0.95, eps=1e-7,
                                   weight_decay=0.2)),
]
CBP_OPTIMIZERS = {"sgd": cbp.SGD, "adam": cbp.Adam, "adamw": cbp.AdamW}
REF_OPTIMIZERS = {"sgd": refnet.SGD, "adam": refnet.Adam, "adamw": refnet.AdamW}


def reference_optimizer(kind, kw):
    kw = dict(kw)
    if "beta1" in kw or "beta2" in kw:
        kw["betas"] = (kw.pop("beta1", 0.9), kw.pop("beta2", 0.999))
    return REF_OPTIMIZERS[kind](**kw)


@pytest.mark.parametrize("parts", [2, 3, 8])
@pytest.mark.parametrize("sizes", [[60, 90, 50, 4], [6, 10, 7, 4]], ids=["10244", "179"])
@pytest.mark.parametrize("name, kind, kw", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_pool_steps_with_a_stored_gradient_match_the_reference(name, kind, kw, sizes, parts):
    """15 float64 steps against the NumPy transcription of torch.optim's
    rules on the NumPy reference gradient (tests/reference_network.py), to
    1e-9 — on 10,244 parameters, whose update's slices span the parts, and
    on 179, where one part updates them all.  Every step takes the pool."""
    acts = ["tanh", "tanh", "identity"]
    layers = [cbp.Dense(a, b, activation=f) for a, b, f in zip(sizes, sizes[1:], acts)]
    net = cbp.Network(layers, dtype=np.float64, seed=1)
    params0 = [p.copy() for p in net.parameters()]
    rng = np.random.default_rng(3)
    distinct = [(rng.standard_normal((16, sizes[0])), rng.integers(0, sizes[-1], 16))
                for _ in range(4)]
    batches = [distinct[k % 4] for k in range(15)]
    opt = CBP_OPTIMIZERS[kind](**kw)
    with threadpoolctl.threadpool_limits(parts, user_api="blas"):
        settle()
        before = _engine.pool_jobs()
        losses = [net.train_step(X, y, opt) for X, y in batches]
        assert _engine.pool_jobs() - before == len(batches)
    expected, ref_losses = refnet.train(params0, acts, net.loss, batches,
                                        reference_optimizer(kind, kw))
    for p0, a, e in zip(params0, net.parameters(), expected):
        assert np.max(np.abs(e - p0)) > 1e-6
        assert refnet.max_norm_rel_error(a, e) <= 1e-9
        assert refnet.max_norm_rel_error(a - p0, e - p0) <= 1e-9
    assert refnet.max_norm_rel_error(np.array(losses), np.array(ref_losses)) <= 1e-9


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, activation, loss, n", CASES, ids=str)
@pytest.mark.parametrize("name, kind, kw", [OPTIMIZERS[1], OPTIMIZERS[3], OPTIMIZERS[6]],
                         ids=[OPTIMIZERS[i][0] for i in (1, 3, 6)])
def test_pool_fit_with_a_stored_gradient_matches_the_serial_fit(sizes, activation, loss, n,
                                                                dtype, name, kind, kw):
    """Shuffled and weighted, several steps per call into C (Adam then
    decides finiteness from its last update's maxima), a last batch of one
    row (serial, between pool steps), the state carried over two calls."""
    X, y = data(sizes, 5 * n + 1, loss, dtype)
    w = np.random.default_rng(4).random(len(X)).astype(dtype)
    nets = [net_of(sizes, activation, loss, dtype) for _ in range(2)]
    opts = [CBP_OPTIMIZERS[kind](**kw) for _ in range(2)]
    kwargs = dict(epochs=2, batch_size=n, sample_weight=w, progress=False)
    histories = []
    for pool, net, opt in zip((False, True), nets, opts):
        _engine.set_pool(pool)
        run = lambda: [net.fit(X, y, optimizer=opt, **kwargs) for _ in range(2)]  # noqa: E731
        histories.append(pooled(run) if pool else run())
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for h_serial, h_pool in zip(*histories):
        np.testing.assert_allclose(h_pool.history["loss"], h_serial.history["loss"], rtol=rtol)
    for a, b in zip(nets[1].parameters(), nets[0].parameters()):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    steps = [opt._state_for(net).step for opt, net in zip(opts, nets)]
    assert steps[0] == steps[1] == 2 * 2 * 6


def _diverging_step(net, X, y, opt, pool):
    _engine.set_pool(pool)
    step = lambda: net.train_step(X, y, opt)   # noqa: E731
    try:
        return pooled(step) if pool else step()
    except cbp.DivergenceError as exc:
        return str(exc)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["sgd-momentum", "adam"])
def test_a_refused_update_on_the_pool_leaves_parameters_and_state(dtype, kind):
    """A finite gradient whose update would overflow (SGD with momentum and
    an lr of 1e10 on inputs of max/1e5), or a gradient that overflows
    (Adam on inputs of max/4): the pool refuses the step as the serial step
    does, with the same message, and leaves the parameters and the
    optimizer's state (its step count among them) as they were."""
    sizes = [6, 8, 3]
    X, _ = data(sizes, 8, "softmax_cross_entropy", dtype)
    nets = [net_of(sizes, dtype=dtype) for _ in range(2)]
    if kind == "adam":
        X = np.full_like(X, np.finfo(dtype).max / 4)
        X[::2] *= -1
        for net in nets:                  # Z finite; Δ1 = (Δ2 W2) ⊙ σ' is large
            net.layers[0].W[:] *= dtype(1e-6)   # and dW1 = Δ1ᵀ X overflows
            net.layers[1].W[:] *= dtype(100)
        make = lambda: cbp.Adam(lr=1e-3)   # noqa: E731
        expected = "a gradient is not finite"
    else:
        X = X * dtype(np.finfo(dtype).max / 1e5)
        make = lambda: cbp.SGD(lr=1e-3, momentum=0.9)   # noqa: E731
        expected = "the update would make a parameter non-finite"
    outcomes = []
    for net, pool in zip(nets, (False, True)):
        opt = make()
        Xw, yw = data(sizes, 8, "softmax_cross_entropy", dtype, seed=9)
        _engine.set_pool(False)
        net.train_step(Xw, yw, opt)                    # a state to keep
        if kind != "adam":
            opt.lr = 1e10
        y = np.argmin(net.forward(X), axis=1)          # a large loss: deltas are not 0
        state = opt._state_for(net)
        before = [p.copy() for p in net.parameters()] + [state.buf1.copy()]
        if state.buf2 is not None:
            before.append(state.buf2.copy())
        step = state.step
        outcomes.append(_diverging_step(net, X, y, opt, pool))
        after = list(net.parameters()) + [state.buf1] + ([state.buf2] if len(before) > 5 else [])
        for a, b in zip(after, before, strict=True):
            assert a.tobytes() == b.tobytes()
        assert state.step == step > 0
    assert outcomes[0] == outcomes[1]
    assert expected in outcomes[1]


def _engine_outputs(net, X, y, pool):
    """The engine's forward and forward-with-loss of X, on the pool or not
    (outside fit, inference never asks for the pool: set it by hand)."""
    n = len(X)
    with net._lock:
        net._reserve(n)
        net._set_threads(n, 2)
        net._engine.pool = pool
        net._threads_key = None
        out = np.empty((n, net.out_features), net.dtype)
        net._engine.forward(X, out)
        out2 = np.empty_like(out)
        target = net._targets(y, n)
        loss, _ = net._engine.loss(X, target, None, False, out2)
    return out, out2, loss


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, activation, loss, n", CASES, ids=str)
def test_inference_on_the_pool_matches_the_serial_one(sizes, activation, loss, n, dtype):
    net = net_of(sizes, activation, loss, dtype)
    X, y = data(sizes, 2500, loss, dtype)          # three chunks of up to 1024 rows
    f0, g0, l0 = _engine_outputs(net, X, y, False)
    f1, g1, l1 = pooled(lambda: _engine_outputs(net, X, y, True))
    rtol = RTOL[dtype]
    reference = refnet.output([q.astype(np.float64) for q in net.parameters()],
                              [layer.activation for layer in net.layers], X)
    for got in (f1, g1):
        np.testing.assert_allclose(got, f0, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(got, reference, rtol=rtol, atol=rtol)
    assert l1 == pytest.approx(l0, rel=rtol)


def test_inference_outside_fit_does_not_take_the_pool():
    sizes = [30, 40, 3]
    net = net_of(sizes)
    X, y = data(sizes, 300, "softmax_cross_entropy", np.float32)
    settle()
    before = _engine.pool_jobs()
    net.forward(X), net.predict(X), net.predict_proba(X), net.evaluate(X, y)
    assert _engine.pool_jobs() == before


def test_fit_validates_on_the_pool_when_it_trains_on_it(monkeypatch):
    """The validation forward runs on the pool too, so OpenBLAS's workers
    are not woken between epochs (they would spin into the next epoch
    and the pool would stand aside): every step of every epoch takes it,
    though an evaluation of that size alone would run on OpenBLAS's
    threads."""
    sizes = [30, 40, 3]
    # 6 · 10 rows · 1,363 parameters per step: the pool; 2 · 300 rows · 1,363
    # per validation: above the limit, OpenBLAS's threads when alone.
    monkeypatch.setattr(cbp_threads, "POOL_MAX_WORK", 2e5)
    X, y = data(sizes, 200, "softmax_cross_entropy", np.float32)
    Xv, yv = data(sizes, 300, "softmax_cross_entropy", np.float32, seed=5)
    histories = {}
    for pool in (False, True):
        _engine.set_pool(pool)
        net = net_of(sizes)
        fit = lambda: net.fit(X, y, epochs=4, batch_size=10, optimizer=cbp.SGD(lr=0.1),  # noqa: E731
                              validation_data=(Xv, yv), progress=False)
        before = _engine.pool_jobs()
        histories[pool] = pooled(fit) if pool else fit()
        if pool:
            assert _engine.pool_jobs() - before >= 4 * 20 + 4    # steps + validations
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(histories[True].history[key], histories[False].history[key],
                                   rtol=1e-4)


def _step_right_after_a_threaded_step():
    """A small network and a step of it, called once on OpenBLAS's threads
    (the pool off), so that their workers spin now."""
    sizes = [10, 20, 3]
    X, y = data(sizes, 8, "softmax_cross_entropy", np.float32)
    net = net_of(sizes)
    step = lambda: net.train_step(X, y, cbp.SGD(lr=0.1))  # noqa: E731
    _engine.set_pool(False)
    step()                                      # threaded OpenBLAS
    _engine.set_pool(True)
    return step


def test_steps_right_after_a_threaded_call_stand_aside_for_a_count_of_work():
    """Right after cbp ran BLAS on OpenBLAS's threads, whose workers then
    spin for about 0.1 s, train_steps run on those threads, not on the
    pool beside them, until their estimated work reaches 0.14 s; the next
    takes the pool.  The count is of work, not of time: the same steps
    stand aside however long they take, so the path (and the rounding)
    of a sequence of calls never depends on timing."""
    step = _step_right_after_a_threaded_step()
    aside = int(np.ceil(ASIDE_NS / step_ns(net_of([10, 20, 3]), 8)))
    before = _engine.pool_jobs()
    for _ in range(aside - 1):
        step()
    time.sleep(0.15)                       # OpenBLAS's workers sleep: no matter
    step()
    assert _engine.pool_jobs() == before   # `aside` steps stood aside
    step()
    assert _engine.pool_jobs() == before + 1


def test_a_train_step_loop_reaches_the_pool_after_a_threaded_call():
    """The steps that stand aside (on OpenBLAS's threads, right after a
    threaded call) do not renew the wait themselves: a train_step loop
    begun right after one reaches the pool.  (They renewed it, and such a
    loop never took the pool.)"""
    step = _step_right_after_a_threaded_step()
    before = _engine.pool_jobs()
    for _ in range(int(ASIDE_NS / 20000) + 10):
        step()
    assert _engine.pool_jobs() > before


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_train_step_loop_repeats_bit_for_bit_whatever_its_timing(dtype):
    """A loop of train_steps with evaluations between them (threaded
    OpenBLAS calls) ends with the same parameters whether or not it
    pauses: the pauses let OpenBLAS's workers sleep, which once moved the
    steps after them onto the pool, whose blocks of the products BLAS
    rounds otherwise than the whole products."""
    sizes, rows = [64, 96, 48, 5], 16      # here the pool's rounding differs (checked)
    X, y = data(sizes, rows * 40, "softmax_cross_entropy", dtype)
    Xv, yv = data(sizes, 600, "softmax_cross_entropy", dtype, seed=5)

    def run(pauses):
        net = net_of(sizes, dtype=dtype, seed=3)
        opt = cbp.Adam(lr=1e-2)
        settle()                             # as in a new process
        before = _engine.pool_jobs()
        for k in range(40):
            if pauses and k % 10 == 5:
                time.sleep(0.15)             # OpenBLAS's workers go to sleep
            net.train_step(X[rows * k:rows * (k + 1)], y[rows * k:rows * (k + 1)], opt)
            if k % 20 == 19:
                _engine.set_pool(False)
                net.evaluate(Xv, yv)
                _engine.set_pool(True)
        return net, _engine.pool_jobs() - before

    straight, straight_jobs = run(False)
    paused, paused_jobs = run(True)
    assert straight_jobs == paused_jobs == 20   # the steps before the first evaluation
    for a, b in zip(straight.parameters(), paused.parameters()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_takes_the_pool_right_after_a_threaded_call(dtype):
    """fit does not stand aside for OpenBLAS's spinning workers: every
    call of a fit takes the pool when its steps belong there, so a fit
    started right after a threaded OpenBLAS call (a predict, say) is the
    fit started once they sleep, bit for bit.  (Standing aside, each of
    its own calls on OpenBLAS's threads renewed the wait: such a fit
    never took the pool, and its result depended on timing.)"""
    sizes = [30, 40, 3]
    X, y = data(sizes, 200, "softmax_cross_entropy", dtype)
    Xv, yv = data(sizes, 50, "softmax_cross_entropy", dtype, seed=5)

    def fit(after_threaded_call):
        net = net_of(sizes, dtype=dtype, seed=3)
        if after_threaded_call:
            _engine.set_pool(False)
            net.predict(Xv)                     # threaded OpenBLAS: its workers spin
            _engine.set_pool(True)
        else:
            settle()
        before = _engine.pool_jobs()
        history = net.fit(X, y, epochs=3, batch_size=10, optimizer=cbp.Adam(lr=0.01),
                          validation_data=(Xv, yv), progress=False)
        assert _engine.pool_jobs() - before == 3 * 20 + 3    # every step and validation
        return net, history

    right_after, history = fit(True)
    quiet, quiet_history = fit(False)
    for a, b in zip(right_after.parameters(), quiet.parameters()):
        np.testing.assert_array_equal(a, b)
    assert history.history == quiet_history.history


def test_set_pool_false_runs_serially():
    sizes = [10, 20, 3]
    X, y = data(sizes, 8, "softmax_cross_entropy", np.float32)
    net = net_of(sizes)
    _engine.set_pool(False)
    before = _engine.pool_jobs()
    net.train_step(X, y, cbp.SGD(lr=0.1))
    assert _engine.pool_jobs() == before
    assert not _engine.pool_active()


def test_one_blas_thread_means_no_pool():
    sizes = [10, 20, 3]
    X, y = data(sizes, 8, "softmax_cross_entropy", np.float32)
    net = net_of(sizes)
    before = _engine.pool_jobs()
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        net.train_step(X, y, cbp.SGD(lr=0.1))
    assert _engine.pool_jobs() == before


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux CPU affinity")
def test_the_callers_cpu_affinity_is_given_back():
    sizes = [30, 40, 3]
    X, y = data(sizes, 200, "softmax_cross_entropy", np.float32)
    net = net_of(sizes)
    mask = os.sched_getaffinity(0)
    pooled(lambda: net.fit(X, y, epochs=2, batch_size=10, optimizer=cbp.SGD(lr=0.1),
                           progress=False))
    assert os.sched_getaffinity(0) == mask


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux /proc")
def test_pool_threads_block_signals():
    """Ctrl-C and other signals go to the application's threads, never to
    a pool thread (which could not run Python's handler)."""
    import signal

    sizes = [30, 40, 3]
    X, y = data(sizes, 100, "softmax_cross_entropy", np.float32)
    pooled(lambda: net_of(sizes).train_step(X[:10], y[:10], cbp.SGD(lr=0.1)))
    helpers = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:     # the thread ended meanwhile
            continue
        if name == "cbp-pool":
            helpers.append(int(status["SigBlk"].strip(), 16))
    assert helpers, "no pool thread found"
    for blocked in helpers:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM, signal.SIGCHLD):
            assert blocked & (1 << (sig - 1)), f"a pool thread does not block {sig!r}"


def test_two_networks_in_two_threads():
    """Both train at once; whichever finds the pool taken runs serially.
    Each ends as when trained alone on the same path, to rounding."""
    sizes = [40, 60, 30, 5]
    X, y = data(sizes, 600, "softmax_cross_entropy", np.float32)

    def train(seed):
        net = net_of(sizes, seed=seed)
        net.fit(X, y, epochs=4, batch_size=12, optimizer=cbp.SGD(lr=0.05), progress=False)
        return net.parameters()

    alone = [train(0), train(1)]
    before = _engine.pool_jobs()
    results = in_threads(train, [0, 1])
    assert _engine.pool_jobs() > before
    for got, expected in zip(results, alone):
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _child_fit():
    sizes = [30, 40, 3]
    X, y = data(sizes, 120, "softmax_cross_entropy", np.float32)
    net = net_of(sizes)
    before = _engine.pool_jobs()
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        net.fit(X, y, epochs=2, batch_size=10, optimizer=cbp.SGD(lr=0.1), progress=False)
    return _engine.pool_jobs() > before, [p.tolist() for p in net.parameters()]


@needs_fork
def test_pool_works_in_a_forked_child(monkeypatch):
    sizes = [30, 40, 3]
    X, y = data(sizes, 120, "softmax_cross_entropy", np.float32)
    net = net_of(sizes)
    pooled(lambda: net.fit(X, y, epochs=2, batch_size=10, optimizer=cbp.SGD(lr=0.1),
                           progress=False))   # the parent's helpers exist
    took_pool, params = in_forked_child(_child_fit)
    assert took_pool
    for a, b in zip(params, net.parameters()):
        np.testing.assert_array_equal(np.asarray(a, np.float32), b)


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_an_update_refused_in_one_slice_is_written_in_none(kind, parts):
    """The update overflows in the last part's slice only (a bias of 1e300
    under weight decay 1e9, so g + λ p is not finite there): every part
    writes nothing, not only the part that found it.  Adam runs both of
    its dry runs (train_step starts without fresh maxima)."""
    sizes = [60, 90, 50, 4]     # 10,244 parameters: b1 at [9990, 10040), the last slice
    layers = [cbp.Dense(a, b, activation="tanh") for a, b in zip(sizes, sizes[1:])]
    net = cbp.Network(layers, dtype=np.float64, seed=1)
    net.layers[1].b[10] = 1e300   # tanh keeps the forward finite
    X, y = data(sizes, 16, "softmax_cross_entropy", np.float64)
    opt = (cbp.SGD(lr=0.1, momentum=0.9, weight_decay=1e9) if kind == "sgd"
           else cbp.Adam(lr=1e-3, weight_decay=1e9))
    before = [p.copy() for p in net.parameters()]
    with threadpoolctl.threadpool_limits(parts, user_api="blas"):
        with pytest.raises(cbp.DivergenceError, match="update would make a parameter non-finite"):
            pooled(lambda: net.train_step(X, y, opt))
    for a, b in zip(net.parameters(), before):
        assert a.tobytes() == b.tobytes()
    state = opt._state_for(net)
    assert state.step == 0 and not state.buf1.any()


@pytest.mark.parametrize("case", ["zero-weight", "nonfinite-loss"])
def test_pool_steps_store_the_gradient_as_serial_ones(case):
    """Every train_step replaces dW and db, also when it changes nothing (a
    batch of weight 0: zero) or is refused (a non-finite loss: the
    gradient computed), on the pool as serially."""
    sizes = [10, 20, 3]
    X, y = data(sizes, 8, "softmax_cross_entropy", np.float64)
    w = None
    if case == "zero-weight":
        w = np.zeros(8)
    else:
        X[:] = np.finfo(np.float64).max / 2
    grads = []
    for pool in (False, True):
        net = net_of(sizes, dtype=np.float64)
        net.train_step(*data(sizes, 8, "softmax_cross_entropy", np.float64, seed=7),
                       cbp.Adam())                      # some earlier gradient
        if case == "nonfinite-loss":
            net.layers[0].W[:] = 1
        _engine.set_pool(pool)
        step = lambda: net.train_step(X, y, cbp.Adam(), sample_weight=w)   # noqa: E731
        try:
            pooled(step) if pool else step()
        except cbp.DivergenceError as exc:
            assert case == "nonfinite-loss" and "loss is not finite" in str(exc)
        grads.append([g.copy() for g in net.gradients()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
    if case == "zero-weight":
        assert not any(g.any() for g in grads[1])


def test_helpers_run_under_the_callers_floating_point_control():
    """A helper thread keeps the floating-point control it was created
    with; each job runs under the caller's instead, so a caller that
    flushes subnormals (PyTorch's set_flush_denormal sets MXCSR's FTZ and
    DAZ on its own thread) has its steps flushed on every part."""
    torch = pytest.importorskip("torch")
    settle()
    assert _engine.pool_fpenv_mismatches(2) == 0       # the helpers exist now
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        settle()
        mismatches = _engine.pool_fpenv_mismatches(2)
    finally:
        torch.set_flush_denormal(False)
    assert mismatches == 0
    settle()
    assert _engine.pool_fpenv_mismatches(2) == 0
