"""Optimizers (API.md §2 train_step/fit, §3): 25-step float64 trajectories of
cbp.SGD / Adam / AdamW against

(a) a NumPy transcription of the torch.optim documentation's update rules
    (tests/reference_network.py: SGD, Adam, AdamW) driving the NumPy
    reference gradient, and
(b) torch.optim (foreach=False) on an equivalent nn.Sequential holding a
    copy of the cbp network's weights, when torch is installed,

to 1e-9 relative in float64; then state handling (one state per network,
kept between calls, fresh for a new network), hyperparameter changes
between steps, the loss returned by train_step, optimizer names in fit,
and validation of hyperparameters.

Errors are max-norm relative (max|a − e| / max|e|, see
reference_network.max_norm_rel_error) over each parameter array, and they
are measured twice: on the parameters and on their displacement from the
start (θ_T − θ_0).  The displacement is the part the optimizer wrote: with
lr = 1e-3 the parameters move by ~1e-2 of their size, so an error in the
update rule would be diluted 100-fold in the parameters but not in the
displacement.
"""
import copy
import pickle

import numpy as np
import pytest

import cbp
import reference_network as R
from random_data import random_xy

TOL = 1e-9
STEPS = 25
SIZES = [6, 10, 7, 4]
ACTS = ["tanh", "tanh", "identity"]

# (id, kind, cbp keyword arguments).  The reference and torch get the same
# hyperparameters (torch's `betas` from cbp's beta1, beta2).
CONFIGS = [
    ("sgd-plain", "sgd", dict(lr=0.1)),
    ("sgd-momentum", "sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd-momentum-dampening", "sgd", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("sgd-nesterov", "sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd-weight-decay", "sgd", dict(lr=0.1, weight_decay=0.05)),
    ("sgd-weight-decay-momentum", "sgd", dict(lr=0.05, momentum=0.8, weight_decay=0.05)),
    ("sgd-nesterov-weight-decay", "sgd", dict(lr=0.05, momentum=0.7, nesterov=True,
                                              weight_decay=0.02)),
    ("adam-default", "adam", dict()),
    ("adam-weight-decay", "adam", dict(lr=0.01, weight_decay=0.1)),
    ("adam-custom", "adam", dict(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6)),
    # ε = 0 leaves Adam's cheap finiteness bound undecided (it divides by
    # ε), so every step goes through the exact dry run before the commit.
    ("adam-eps-zero", "adam", dict(lr=0.01, eps=0.0)),
    ("adamw-default", "adamw", dict()),
    ("adamw-custom", "adamw", dict(lr=0.01, beta1=0.85, beta2=0.95, eps=1e-7,
                                   weight_decay=0.2)),
]
CONFIG_IDS = [c[0] for c in CONFIGS]
CBP_CLASSES = {"sgd": cbp.SGD, "adam": cbp.Adam, "adamw": cbp.AdamW}
REF_CLASSES = {"sgd": R.SGD, "adam": R.Adam, "adamw": R.AdamW}


def cbp_optimizer(kind, kw):
    return CBP_CLASSES[kind](**kw)


def _split_betas(kw):
    kw = dict(kw)
    if "beta1" in kw or "beta2" in kw:
        kw["betas"] = (kw.pop("beta1", 0.9), kw.pop("beta2", 0.999))
    return kw


def reference_optimizer(kind, kw):
    return REF_CLASSES[kind](**_split_betas(kw))


def torch_optimizer(kind, kw, parameters):
    import torch

    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    kw = _split_betas(kw)
    if kind == "sgd":
        kw.setdefault("lr", 0.01)  # cbp's documented default (torch has one too)
    return cls(parameters, foreach=False, **kw)


# ---------------------------------------------------------------- helpers
def make_net(loss="softmax_cross_entropy", sizes=SIZES, acts=ACTS, dtype="float64", seed=0):
    layers = [cbp.Dense(sizes[i], sizes[i + 1], activation=a) for i, a in enumerate(acts)]
    net = cbp.Network(layers, loss=loss, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1000)
    for layer in net.layers:
        layer.b[...] = rng.normal(0.0, 0.3, layer.b.shape)  # non-zero biases
    return net


def make_batches(loss, n_out, n_in=SIZES[0], rows=16, count=5, steps=STEPS, seed=0):
    """`steps` batches cycling through `count` different batches of `rows`."""
    rng = np.random.default_rng(seed)
    distinct = []
    for _ in range(count):
        distinct.append(random_xy(loss, rows, n_in, n_out, rng))
    return [distinct[k % count] for k in range(steps)]


def params64(net):
    return [np.array(p, np.float64) for p in net.parameters()]


def activations_of(net):
    return [layer.activation for layer in net.layers]


def run_cbp(net, optimizer, batches, weights=None):
    losses = []
    for k, (X, y) in enumerate(batches):
        w = None if weights is None else weights[k]
        losses.append(net.train_step(X, y, optimizer, sample_weight=w))
    return params64(net), losses


def run_torch(params0, acts, loss, kind, kw, batches, weights=None, schedule=None):
    """torch.optim on the same network; `schedule(step, group)` may change
    the hyperparameters of the param group before each step."""
    model = R.torch_model(params0, acts)
    opt = torch_optimizer(kind, kw, model.parameters())
    losses = []
    for k, (X, y) in enumerate(batches):
        if schedule is not None:
            for group in opt.param_groups:
                schedule(k, group)
        opt.zero_grad()
        value = R.torch_loss(model, loss, X, y, None if weights is None else weights[k])
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    return R.torch_parameters(model), losses


def trajectory_errors(params0, actual, expected, actual_losses, expected_losses):
    """The largest max-norm relative error over the final parameters, the
    displacements θ_T − θ_0 and the per-step losses."""
    errors = []
    for p0, a, e in zip(params0, actual, expected):
        assert np.max(np.abs(e - p0)) > 1e-6, "the optimizer did not move this parameter"
        errors.append(R.max_norm_rel_error(a, e))
        errors.append(R.max_norm_rel_error(a - p0, e - p0))
    errors.append(R.max_norm_rel_error(actual_losses, expected_losses))
    return max(errors)


def assert_trajectory(params0, actual, expected, actual_losses, expected_losses, tol=TOL):
    err = trajectory_errors(params0, actual, expected, actual_losses, expected_losses)
    assert err <= tol, f"trajectory error {err:.3e}"
    return err


def assert_params_equal(a, b):
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


# ---------------------------------------------------------------- (a) reference
@pytest.mark.parametrize("name,kind,kw", CONFIGS, ids=CONFIG_IDS)
def test_trajectory_matches_reference(name, kind, kw):
    net = make_net(seed=1)
    params0 = params64(net)
    batches = make_batches(net.loss, SIZES[-1], seed=1)
    actual, losses = run_cbp(net, cbp_optimizer(kind, kw), batches)
    expected, ref_losses = R.train(params0, ACTS, net.loss, batches,
                                   reference_optimizer(kind, kw))
    assert_trajectory(params0, actual, expected, losses, ref_losses)


@pytest.mark.parametrize("name,kind,kw", CONFIGS, ids=CONFIG_IDS)
def test_trajectory_matches_torch(name, kind, kw):
    pytest.importorskip("torch")
    net = make_net(seed=2)
    params0 = params64(net)
    batches = make_batches(net.loss, SIZES[-1], seed=2)
    actual, losses = run_cbp(net, cbp_optimizer(kind, kw), batches)
    expected, torch_losses = run_torch(params0, ACTS, net.loss, kind, kw, batches)
    assert_trajectory(params0, actual, expected, losses, torch_losses)


# Other losses, sample weights and the engine's other step paths: plain SGD
# is fused into the weight products (ger for one row, gemm otherwise) when
# the batch fits the workspace, and takes the stored-gradient path on a
# batch larger than the 1024-row workspace (chunked accumulation).
PATH_CASES = [
    ("sgd-one-row", "softmax_cross_entropy", 4, 1, False, "sgd", dict(lr=0.1)),
    ("sgd-fused-bce", "binary_cross_entropy", 3, 40, False, "sgd", dict(lr=0.5)),
    ("sgd-chunked-mse", "mse", 1, 1500, False, "sgd", dict(lr=0.1)),
    ("sgd-weighted-bce1", "binary_cross_entropy", 1, 30, True, "sgd", dict(lr=0.5)),
    ("sgd-momentum-weighted-mse", "mse", 3, 30, True, "sgd",
     dict(lr=0.02, momentum=0.9, nesterov=True)),
    ("sgd-momentum-one-row", "mse", 2, 1, False, "sgd", dict(lr=0.02, momentum=0.9)),
    ("adam-chunked-softmax", "softmax_cross_entropy", 4, 1500, True, "adam", dict(lr=0.01)),
    ("adamw-weighted-mse", "mse", 3, 30, True, "adamw", dict(lr=0.01, weight_decay=0.1)),
    ("adam-bce3", "binary_cross_entropy", 3, 20, False, "adam",
     dict(lr=0.005, weight_decay=0.01)),
]


@pytest.mark.parametrize("name,loss,n_out,rows,weighted,kind,kw", PATH_CASES,
                         ids=[c[0] for c in PATH_CASES])
def test_losses_weights_and_step_paths(name, loss, n_out, rows, weighted, kind, kw):
    sizes = [5, 9, n_out]
    acts = ["softplus", "identity"]
    net = make_net(loss, sizes, acts, seed=3)
    params0 = params64(net)
    steps = 10 if rows > 1024 else STEPS
    batches = make_batches(loss, n_out, n_in=5, rows=rows, count=3, steps=steps, seed=3)
    weights = None
    if weighted:
        rng = np.random.default_rng(3)
        weights = [rng.uniform(0.0, 2.0, size=rows) for _ in range(steps)]
        for w in weights:
            w[::4] = 0.0
    actual, losses = run_cbp(net, cbp_optimizer(kind, kw), batches, weights)
    if rows > 1024:
        assert net._engine.capacity < rows  # the step really ran in chunks
    expected, ref_losses = R.train(params0, acts, loss, batches,
                                   reference_optimizer(kind, kw), weights)
    assert_trajectory(params0, actual, expected, losses, ref_losses)
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    t_params, t_losses = run_torch(params0, acts, loss, kind, kw, batches, weights)
    assert_trajectory(params0, actual, t_params, losses, t_losses)


@pytest.mark.parametrize("kind,kw,tol", [
    ("sgd", dict(lr=0.05, momentum=0.9), 2e-5),
    ("adamw", dict(lr=0.01, weight_decay=0.05), 1e-4),
])
def test_float32_trajectory_close_to_float64_reference(kind, kw, tol):
    # float32 rounding (6e-8 per operation) compounded over 10 steps; Adam's
    # normalised step m̂/√v̂ amplifies relative errors of small gradient
    # entries, hence its looser bound.  Observed: 1.0e-6 (SGD), 3.7e-6
    # (AdamW).  A wrong rule would be off by O(1e-2) or more.
    net = make_net(dtype="float32", seed=4)
    params0 = params64(net)
    batches = make_batches(net.loss, SIZES[-1], steps=10, seed=4)
    batches = [(X.astype(np.float32), y) for X, y in batches]
    actual, losses = run_cbp(net, cbp_optimizer(kind, kw), batches)
    expected, ref_losses = R.train(params0, ACTS, net.loss, batches,
                                   reference_optimizer(kind, kw))
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert_trajectory(params0, actual, expected, losses, ref_losses, tol=tol)


# ---------------------------------------------------------------- state
@pytest.mark.parametrize("kind,kw", [("sgd", dict(lr=0.05, momentum=0.9)),
                                     ("adam", dict(lr=0.01)),
                                     ("adamw", dict(lr=0.01))])
def test_state_is_kept_between_calls(kind, kw):
    net_one = make_net(seed=5)
    net_many = net_one.copy()
    params0 = params64(net_one)
    batches = make_batches(net_one.loss, SIZES[-1], steps=4, seed=5)
    one = cbp_optimizer(kind, kw)
    for X, y in batches:
        net_one.train_step(X, y, one)
        net_many.train_step(X, y, cbp_optimizer(kind, kw))  # a new object each step
    # One object: the reference with state carried over.
    expected, _ = R.train(params0, ACTS, net_one.loss, batches, reference_optimizer(kind, kw))
    for a, e in zip(params64(net_one), expected):
        assert R.max_norm_rel_error(a, e) <= TOL
    # A new object each step: every step is a first step.
    fresh = [p.copy() for p in params0]
    for X, y in batches:
        _, g = R.loss_and_gradients(fresh, ACTS, net_one.loss, X, y)
        reference_optimizer(kind, kw).step(fresh, g)
    for a, e in zip(params64(net_many), fresh):
        assert R.max_norm_rel_error(a, e) <= TOL
    # And the two differ by much more than rounding.
    assert max(R.max_norm_rel_error(a, b)
               for a, b in zip(params64(net_one), params64(net_many))) > 1e-4


@pytest.mark.parametrize("kind,kw", [("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
                                     ("adam", dict(lr=0.01))])
def test_a_new_network_gets_fresh_state(kind, kw):
    """One optimizer object driving two networks, interleaved, keeps a
    separate state for each: each trajectory is the one it would have
    alone.  A network of another size and dtype works too."""
    net_a = make_net(seed=6)
    net_b = make_net(seed=7)
    net_c = make_net(sizes=[6, 3, 4], acts=["gelu", "identity"], dtype="float32", seed=8)
    pa, pb, pc = params64(net_a), params64(net_b), params64(net_c)
    batches = make_batches(net_a.loss, SIZES[-1], steps=8, seed=6)
    opt = cbp_optimizer(kind, kw)
    # A alone first, then A and B (and C) interleaved: B starts with fresh state.
    for X, y in batches[:3]:
        net_a.train_step(X, y, opt)
    for X, y in batches[3:]:
        net_a.train_step(X, y, opt)
        net_b.train_step(X, y, opt)
        net_c.train_step(X.astype(np.float32), y, opt)
    exp_a, _ = R.train(pa, ACTS, net_a.loss, batches, reference_optimizer(kind, kw))
    exp_b, _ = R.train(pb, ACTS, net_b.loss, batches[3:], reference_optimizer(kind, kw))
    for a, e in zip(params64(net_a), exp_a):
        assert R.max_norm_rel_error(a, e) <= TOL
    for b, e in zip(params64(net_b), exp_b):
        assert R.max_norm_rel_error(b, e) <= TOL
    # C (float32, float32 rounding) also followed its own fresh trajectory.
    c_batches = [(X.astype(np.float32), y) for X, y in batches[3:]]
    exp_c, _ = R.train(pc, activations_of(net_c), net_c.loss, c_batches,
                       reference_optimizer(kind, kw))
    for c, e in zip(params64(net_c), exp_c):
        assert R.max_norm_rel_error(c, e) <= 1e-4


@pytest.mark.parametrize("kind,kw", [("sgd", dict(lr=0.05, momentum=0.9)),
                                     ("adam", dict(lr=0.01))])
def test_a_copied_network_starts_with_fresh_state(kind, kw):
    net = make_net(seed=9)
    batches = make_batches(net.loss, SIZES[-1], steps=6, seed=9)
    opt = cbp_optimizer(kind, kw)
    for X, y in batches[:3]:
        net.train_step(X, y, opt)
    clone = net.copy()
    start = params64(clone)
    for X, y in batches[3:]:
        clone.train_step(X, y, opt)
    expected, _ = R.train(start, ACTS, clone.loss, batches[3:], reference_optimizer(kind, kw))
    for a, e in zip(params64(clone), expected):
        assert R.max_norm_rel_error(a, e) <= TOL


def test_reset_forgets_the_state():
    net = make_net(seed=10)
    batches = make_batches(net.loss, SIZES[-1], steps=6, seed=10)
    opt = cbp.Adam(lr=0.01)
    for X, y in batches[:3]:
        net.train_step(X, y, opt)
    opt.reset(net)
    start = params64(net)
    for X, y in batches[3:]:
        net.train_step(X, y, opt)
    expected, _ = R.train(start, ACTS, net.loss, batches[3:], R.Adam(lr=0.01))
    for a, e in zip(params64(net), expected):
        assert R.max_norm_rel_error(a, e) <= TOL


# ---------------------------------------------------------------- hyperparameter changes
def _lr_schedule(k):
    return [0.1, 0.1, 0.1, 0.02, 0.02, 0.3, 0.05, 0.05][k % 8]


@pytest.mark.parametrize("kind,kw", [("sgd", dict(lr=0.1)),
                                     ("sgd", dict(lr=0.1, momentum=0.9)),
                                     ("adam", dict(lr=0.1)),
                                     ("adamw", dict(lr=0.1, weight_decay=0.1))],
                         ids=["sgd", "sgd-momentum", "adam", "adamw"])
def test_changing_lr_between_steps_takes_effect(kind, kw):
    net = make_net(seed=11)
    params0 = params64(net)
    batches = make_batches(net.loss, SIZES[-1], steps=16, seed=11)
    opt = cbp_optimizer(kind, kw)
    ref = reference_optimizer(kind, kw)
    ref_params = [p.copy() for p in params0]
    losses, ref_losses = [], []
    for k, (X, y) in enumerate(batches):
        opt.lr = ref.lr = _lr_schedule(k)
        losses.append(net.train_step(X, y, opt))
        value, g = R.loss_and_gradients(ref_params, ACTS, net.loss, X, y)
        ref_losses.append(value)
        ref.step(ref_params, g)
    assert_trajectory(params0, params64(net), ref_params, losses, ref_losses)
    # The same run at a constant lr ends elsewhere.
    const = make_net(seed=11)
    run_cbp(const, cbp_optimizer(kind, kw), batches)
    assert max(R.max_norm_rel_error(a, b)
               for a, b in zip(params64(net), params64(const))) > 1e-3
    try:
        import torch  # noqa: F401
    except ImportError:
        return

    def schedule(k, group):
        group["lr"] = _lr_schedule(k)

    t_params, t_losses = run_torch(params0, ACTS, net.loss, kind, kw, batches,
                                   schedule=schedule)
    assert_trajectory(params0, params64(net), t_params, losses, t_losses)


def test_changing_other_hyperparameters_between_steps_matches_torch():
    # Adam's betas, eps and weight decay, and SGD's weight decay and
    # Nesterov switch, changed mid-run as a param group would be.
    pytest.importorskip("torch")
    for kind, kw, changes in [
        ("adam", dict(lr=0.02), dict(beta1=0.7, beta2=0.9, eps=1e-4, weight_decay=0.05)),
        ("adamw", dict(lr=0.02), dict(beta1=0.5, weight_decay=0.3)),
        ("sgd", dict(lr=0.05, momentum=0.9), dict(weight_decay=0.1, nesterov=True)),
    ]:
        net = make_net(seed=12)
        params0 = params64(net)
        batches = make_batches(net.loss, SIZES[-1], steps=12, seed=12)
        opt = cbp_optimizer(kind, kw)
        losses = []
        for k, (X, y) in enumerate(batches):
            if k == 6:
                for key, value in changes.items():
                    setattr(opt, key, value)
            losses.append(net.train_step(X, y, opt))

        torch_changes = _split_betas(changes)  # kw sets no betas: the others stay default

        def schedule(k, group, torch_changes=torch_changes):
            if k == 6:
                group.update(torch_changes)

        t_params, t_losses = run_torch(params0, ACTS, net.loss, kind, kw, batches,
                                       schedule=schedule)
        assert_trajectory(params0, params64(net), t_params, losses, t_losses)


# Momentum per step: off (the fused SGD path), on, off again, on again.
_MOMENTUM = [0.0, 0.0, 0.0, 0.9, 0.9, 0.9, 0.0, 0.0, 0.8, 0.8, 0.8, 0.8]


def test_turning_momentum_on_mid_run_matches_torch():
    # torch keeps no momentum buffer while momentum has always been 0; the
    # first step with momentum starts the buffer at the gradient (b ← g, not
    # (1 − τ) g), however many steps came before.  Turned off, the buffer
    # is kept and used again when momentum comes back.
    pytest.importorskip("torch")
    net = make_net(seed=13)
    params0 = params64(net)
    batches = make_batches(net.loss, SIZES[-1], steps=len(_MOMENTUM), seed=13)
    opt = cbp.SGD(lr=0.05, dampening=0.5)
    losses = []
    for k, (X, y) in enumerate(batches):
        opt.momentum = _MOMENTUM[k]
        losses.append(net.train_step(X, y, opt))

    def schedule(k, group):
        group["momentum"] = _MOMENTUM[k]

    t_params, t_losses = run_torch(params0, ACTS, net.loss, "sgd",
                                   dict(lr=0.05, dampening=0.5), batches, schedule=schedule)
    assert_trajectory(params0, params64(net), t_params, losses, t_losses)


# ---------------------------------------------------------------- train_step's loss
@pytest.mark.parametrize("kind,kw", [("sgd", dict(lr=0.5)), ("sgd", dict(lr=0.1, momentum=0.9)),
                                     ("adam", dict(lr=0.05))])
def test_train_step_returns_the_loss_before_the_update(kind, kw):
    net = make_net(seed=14)
    X, y = make_batches(net.loss, SIZES[-1], rows=32, steps=1, seed=14)[0]
    before = net.copy().backward(X, y)
    loss = net.train_step(X, y, cbp_optimizer(kind, kw))
    assert isinstance(loss, float)
    assert loss == pytest.approx(before, rel=1e-13)
    assert loss == pytest.approx(R.loss_value(params64(make_net(seed=14)), ACTS, net.loss, X, y),
                                 rel=1e-12)
    after = net.copy().backward(X, y)
    assert after < loss - 1e-4  # a descent step on this batch lowered it


def test_all_zero_weights_change_nothing():
    # Neither the parameters nor the optimizer state: the run continues as
    # if that batch had not been there.
    net = make_net(seed=15)
    skip = net.copy()
    batches = make_batches(net.loss, SIZES[-1], steps=5, seed=15)
    for kind, kw in [("sgd", dict(lr=0.1)), ("sgd", dict(lr=0.05, momentum=0.9)),
                     ("adam", dict(lr=0.01))]:
        opt, opt_skip = cbp_optimizer(kind, kw), cbp_optimizer(kind, kw)
        for k, (X, y) in enumerate(batches):
            if k == 2:
                before = params64(net)
                net.train_step(X, y, opt, sample_weight=np.zeros(len(X)))
                assert_params_equal(before, params64(net))
            else:
                net.train_step(X, y, opt)
                skip.train_step(X, y, opt_skip)
        for a, b in zip(params64(net), params64(skip)):
            assert R.max_norm_rel_error(a, b) <= 1e-13


# ---------------------------------------------------------------- names in fit
@pytest.mark.parametrize("name,kind", [("sgd", "sgd"), ("adam", "adam"), ("adamw", "adamw"),
                                       (None, "adam")])
def test_optimizer_names_in_fit_mean_the_defaults(name, kind):
    # fit without shuffling on 3 batches of 16 rows, 2 epochs, is the same
    # 6 steps as train_step with the default optimizer, and the defaults are
    # torch's (SGD lr=0.01; Adam lr=1e-3, betas (0.9, 0.999), eps 1e-8;
    # AdamW weight_decay=0.01).
    net = make_net(seed=16)
    params0 = params64(net)
    stepped = net.copy()
    rng = np.random.default_rng(16)
    X = rng.normal(size=(48, SIZES[0]))
    y = rng.integers(0, SIZES[-1], size=48)
    history = net.fit(X, y, epochs=2, batch_size=16, optimizer=name, shuffle=False,
                      progress=False)
    batches = [(X[i:i + 16], y[i:i + 16]) for i in (0, 16, 32)] * 2
    opt = CBP_CLASSES[kind]()
    losses = [stepped.train_step(Xb, yb, opt) for Xb, yb in batches]
    for a, b in zip(params64(net), params64(stepped)):
        assert R.max_norm_rel_error(a, b) <= 1e-13
    assert history.history["loss"][0] == pytest.approx(np.mean(losses[:3]), rel=1e-12)
    expected, ref_losses = R.train(params0, ACTS, net.loss, batches, REF_CLASSES[kind]())
    assert_trajectory(params0, params64(net), expected, losses, ref_losses)


def test_optimizer_names_are_case_insensitive_and_unknown_names_fail():
    net = make_net(seed=17)
    X = np.random.default_rng(0).normal(size=(8, SIZES[0]))
    y = np.arange(8) % SIZES[-1]
    net.fit(X, y, epochs=1, optimizer="SGD", progress=False)
    with pytest.raises(ValueError, match="sgd"):
        net.fit(X, y, epochs=1, optimizer="rmsprop", progress=False)
    with pytest.raises(TypeError):
        net.fit(X, y, epochs=1, optimizer=3, progress=False)


def test_optimizer_defaults_and_attributes():
    sgd, adam, adamw = cbp.SGD(), cbp.Adam(), cbp.AdamW()
    assert (sgd.lr, sgd.momentum, sgd.nesterov, sgd.weight_decay) == (0.01, 0.0, False, 0.0)
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps, adam.weight_decay) == \
        (1e-3, 0.9, 0.999, 1e-8, 0.0)
    assert (adamw.lr, adamw.weight_decay) == (1e-3, 0.01)
    assert "SGD(" in repr(sgd) and "AdamW(" in repr(adamw)


# ---------------------------------------------------------------- validation
BAD = [
    (cbp.SGD, dict(lr=0), ValueError),
    (cbp.SGD, dict(lr=-0.1), ValueError),
    (cbp.SGD, dict(lr=float("nan")), ValueError),
    (cbp.SGD, dict(lr=float("inf")), ValueError),
    (cbp.SGD, dict(lr="0.1"), TypeError),
    (cbp.SGD, dict(lr=None), TypeError),
    (cbp.SGD, dict(lr=True), TypeError),
    (cbp.SGD, dict(momentum=-0.5), ValueError),
    (cbp.SGD, dict(momentum=float("nan")), ValueError),
    (cbp.SGD, dict(weight_decay=-1e-4), ValueError),
    (cbp.SGD, dict(nesterov=True), ValueError),                      # without momentum
    (cbp.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError),
    (cbp.SGD, dict(nesterov="yes", momentum=0.9), TypeError),
    (cbp.Adam, dict(lr=0), ValueError),
    (cbp.Adam, dict(lr=float("nan")), ValueError),
    (cbp.Adam, dict(beta1=1.0), ValueError),
    (cbp.Adam, dict(beta2=1.0), ValueError),
    (cbp.Adam, dict(beta2=1.5), ValueError),
    (cbp.Adam, dict(beta1=-0.1), ValueError),
    (cbp.Adam, dict(beta1=float("nan")), ValueError),
    (cbp.Adam, dict(eps=-1e-8), ValueError),
    (cbp.Adam, dict(weight_decay=-0.1), ValueError),
    (cbp.AdamW, dict(lr=-1), ValueError),
    (cbp.AdamW, dict(beta1=1.0), ValueError),
    (cbp.AdamW, dict(beta2=2), ValueError),
    (cbp.AdamW, dict(weight_decay=float("nan")), ValueError),
    (cbp.AdamW, dict(eps="small"), TypeError),
]


@pytest.mark.parametrize("cls,kw,exc", BAD,
                         ids=[f"{c.__name__}-{'-'.join(f'{k}={v!r}' for k, v in kw.items())}"
                              for c, kw, _ in BAD])
def test_invalid_hyperparameters_raise(cls, kw, exc):
    with pytest.raises(exc) as info:
        cls(**kw)
    # The message names the offending hyperparameter.
    assert any(k in str(info.value).lower() for k in kw)


@pytest.mark.parametrize("cls,kw,exc", BAD,
                         ids=[f"{c.__name__}-{'-'.join(f'{k}={v!r}' for k, v in kw.items())}"
                              for c, kw, _ in BAD])
def test_invalid_hyperparameters_set_later_raise_at_the_step(cls, kw, exc):
    # Set as attributes after construction (as a schedule would): the next
    # step refuses them and leaves the parameters as they were; a valid
    # value afterwards trains again.
    net = make_net(seed=18)
    X, y = make_batches(net.loss, SIZES[-1], steps=1, seed=18)[0]
    opt = cls()
    net.train_step(X, y, opt)  # a valid step first
    good = {k: getattr(opt, k) for k in ("lr", "momentum", "nesterov", "dampening",
                                         "weight_decay", "beta1", "beta2", "eps")
            if hasattr(opt, k)}
    before = params64(net)
    for k, v in kw.items():
        setattr(opt, k, v)
    with pytest.raises(exc):
        net.train_step(X, y, opt)
    assert_params_equal(before, params64(net))
    for k, v in good.items():
        setattr(opt, k, v)
    net.train_step(X, y, opt)
    assert not all(np.array_equal(a, b) for a, b in zip(before, params64(net)))


def test_deepcopy_of_an_optimizer_is_independent():
    # An independent optimizer with the same hyperparameters: the learning
    # rate of one does not leak into the other.
    opt = cbp.Adam(lr=0.01)
    twin = copy.deepcopy(opt)
    twin.lr = 0.5
    assert opt.lr == 0.01 and twin.lr == 0.5


@pytest.mark.parametrize("kind,kw", [("sgd", dict(lr=0.05, momentum=0.9)), ("adam", dict(lr=0.01))])
def test_copies_and_pickles_of_a_used_optimizer_carry_hyperparameters_not_state(kind, kw):
    # The per-network state is keyed by networks, which a copy or pickle of
    # the optimizer alone does not hold: the copy starts fresh, exactly like
    # a new optimizer with the same hyperparameters.
    net = make_net(seed=21)
    batches = make_batches(net.loss, SIZES[-1], steps=4, seed=21)
    opt = cbp_optimizer(kind, kw)
    net.train_step(*batches[0], opt)
    # Same trajectory as a fresh optimizer, step for step.
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt)), copy.copy(opt)):
        assert twin.get_config() == opt.get_config()
        a, b = net.copy(), net.copy()
        new = cbp_optimizer(kind, kw)
        for X, y in batches[1:]:
            a.train_step(X, y, twin)
            b.train_step(X, y, new)
        assert_params_equal(params64(a), params64(b))
    # The original keeps its own state.
    assert len(opt._states) == 1


def test_a_hyperparameter_array_changed_in_place_does_not_reach_the_step():
    # A hyperparameter is validated into a plain float at the next step, so
    # the array assigned to it is not kept: changing that array in place
    # afterwards changes nothing, at every later step alike.  (Found in
    # review: an equal array skipped validation and stayed, so whether its
    # in-place change took effect depended on the state cache.)
    net = make_net(seed=22)
    twin = net.copy()
    X, y = make_batches(net.loss, SIZES[-1], steps=1, seed=22)[0]
    opt = cbp.SGD(lr=0.01)
    net.train_step(X, y, opt)
    lr = np.array(0.01)
    opt.lr = lr
    net.train_step(X, y, opt)
    assert type(opt.lr) is float and opt.lr == 0.01
    lr[...] = 1e6
    net.train_step(X, y, opt)
    ref = cbp.SGD(lr=0.01)
    for _ in range(3):
        twin.train_step(X, y, ref)
    assert_params_equal(params64(net), params64(twin))


# ------------------------------------------------- float32 Adam, bit for bit
# Adam's float32 commit sends groups of lanes whose m is tiny (subnormal, as
# where a weight's gradient stays 0) through a path that does three of the
# float operations in double (to avoid x86's slow subnormal arithmetic);
# both paths must give exactly the float result.  The reference is NumPy's
# float32 arithmetic (IEEE, subnormals kept) in the same order of operations.
def _adam_float32_reference(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    f = np.float32
    step_size = f(lr / (1 - beta1 ** t))
    bc2_sqrt = f(np.sqrt(1 - beta2 ** t))
    if decoupled:
        p = p * f(1 - lr * weight_decay)
    elif weight_decay != 0:
        g = g + f(weight_decay) * p
    m = m + f(1 - beta1) * (g - m)
    v = v * f(beta2) + f(1 - beta2) * g * g
    denom = np.sqrt(v) / bc2_sqrt + f(eps)
    p = p + (-step_size) * (m / denom)
    return p, m, v


def _wide_float32(rng, n):
    """Values over float32's whole range: 0, subnormal, tiny, ordinary."""
    scale = np.exp2(-rng.integers(0, 150, n).astype(np.float64))
    x = (rng.uniform(-1, 1, n) * scale).astype(np.float32)
    x[rng.random(n) < 0.1] = 0
    return x


def _adam_case(pattern, n, rng):
    p = rng.normal(0, 0.5, n).astype(np.float32)
    g = (rng.normal(0, 1e-2, n)).astype(np.float32)
    m = (0.5 * g).astype(np.float32)
    v = (g.astype(np.float64) ** 2 + 1e-12).astype(np.float32)
    groups = np.arange(n) // 16
    if pattern == "dead-groups":  # as in a digits fit: whole rows with g = 0
        dead = groups % 3 != 2
        m[dead] = rng.integers(1, 100, dead.sum()) * np.float32(1e-41)
        g[dead] = 0
        v[dead] = np.float32(1e-20)
    elif pattern == "tiny-m-ordinary-g":  # tiny m, but g and v of every size
        tiny = groups % 2 == 0
        m[tiny] = (_wide_float32(rng, tiny.sum()) * np.float32(1e-30)).astype(np.float32)
        g[tiny] = (rng.uniform(-1, 1, tiny.sum()) * np.exp2(-rng.integers(0, 30, tiny.sum()))
                   ).astype(np.float32)
        v[tiny] = np.exp2(-rng.integers(0, 60, tiny.sum())).astype(np.float32)
    elif pattern == "trained":  # a well-trained network: g ~ 1e-12..1e-45, g² underflows
        tiny = groups % 3 != 1
        k = tiny.sum()
        g[tiny] = (rng.uniform(-1, 1, k) * np.exp2(-rng.integers(40, 150, k))).astype(np.float32)
        m[tiny] = (rng.uniform(-1, 1, k) * np.exp2(-rng.integers(30, 150, k))).astype(np.float32)
        v[tiny] = np.exp2(-rng.integers(70, 150, k)).astype(np.float32)
    elif pattern == "wide":  # everything anywhere in float32's range
        p, g, m = (_wide_float32(rng, n) for _ in range(3))
        v = np.abs(_wide_float32(rng, n))
    return p, g, m, v


@pytest.mark.parametrize("pattern", ["normal", "dead-groups", "tiny-m-ordinary-g", "trained",
                                     "wide"])
@pytest.mark.parametrize("n", [1, 15, 16, 37, 4810, 9000])
@pytest.mark.parametrize("kind,kw", [
    ("adam", dict(lr=1e-3)),
    ("adam", dict(lr=0.05, beta1=0.8, beta2=0.99, eps=1e-6)),
    ("adam", dict(lr=1e-3, weight_decay=0.01)),
    ("adamw", dict(lr=1e-3, weight_decay=0.01)),
], ids=["adam", "adam-custom", "adam-l2", "adamw"])
def test_float32_adam_update_is_bit_exact_on_subnormal_state(pattern, n, kind, kw):
    from cbp import _engine

    rng = np.random.default_rng(n + len(pattern))
    opt = CBP_CLASSES[kind](**kw)
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    hyper.update(kw)
    state = _engine.OptimizerState(kind, n, np.float32)
    state.set_hyperparameters(**opt._hyperparameters())
    p, g, m, v = _adam_case(pattern, n, rng)
    if pattern == "dead-groups" or (pattern != "normal" and n >= 16):
        assert np.any((m != 0) & (np.abs(m) < np.finfo(np.float32).tiny))
    for t in (1, 7, 1000):
        state.step = t - 1
        state.buf1[...] = m
        state.buf2[...] = v
        params = p.copy()
        status = state.update(params, g)
        expected = _adam_float32_reference(p, g, m, v, t, decoupled=kind == "adamw", **hyper)
        if not all(np.all(np.isfinite(e)) for e in expected):
            assert status == _engine.NONFINITE_UPDATE
            continue
        assert status == _engine.OK
        for actual, want, name in zip((params, state.buf1, state.buf2), expected, "pmv"):
            mismatch = np.flatnonzero(actual.view(np.uint32) != want.view(np.uint32))
            assert mismatch.size == 0, (
                f"{name}[{mismatch[0]}] = {actual[mismatch[0]]!r}, float32 gives "
                f"{want[mismatch[0]]!r} ({mismatch.size} lanes differ)")


def _assert_adam_bits(state, p, g, m, v, t, hyper, decoupled=False):
    """One update of `state` from (p, g, m, v) at step t, bit for bit the
    float32 reference's; returns the reference's new (p, m, v)."""
    from cbp import _engine

    state.step = t - 1
    state.buf1[...] = m
    state.buf2[...] = v
    params = p.copy()
    assert state.update(params, g) == _engine.OK
    expected = _adam_float32_reference(p, g, m, v, t, decoupled=decoupled, **hyper)
    for actual, want, name in zip((params, state.buf1, state.buf2), expected, "pmv"):
        mismatch = np.flatnonzero(actual.view(np.uint32) != want.view(np.uint32))
        assert mismatch.size == 0, (
            f"step {t}: {name}[{mismatch[0]}] = {actual[mismatch[0]]!r}, float32 gives "
            f"{want[mismatch[0]]!r} ({mismatch.size} lanes differ)")
    return expected


@pytest.mark.parametrize("first,then", [("normal", "dead-groups"), ("dead-groups", "normal"),
                                        ("trained", "wide"), ("wide", "trained")])
def test_float32_adam_is_bit_exact_when_its_path_hints_are_stale(first, then):
    # adam_commit sorts the lanes into its two paths only every few steps and
    # reuses the sorting in between: with state that changed meanwhile,
    # ordinary lanes take the path for tiny m and tiny ones the float loop.
    # Both must still give the float32 result.
    from cbp import _engine

    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    n = 4810
    state = _engine.OptimizerState("adam", n, np.float32)
    state.set_hyperparameters(lr=1e-3)
    rng = np.random.default_rng(len(first) + 7 * len(then))
    _assert_adam_bits(state, *_adam_case(first, n, rng), 1, hyper)   # sorts
    for t in (2, 3, 16):                                             # reuse that sorting
        _assert_adam_bits(state, *_adam_case(then, n, rng), t, hyper)


def test_float32_adam_many_steps_bit_exact_across_resorting():
    # 40 consecutive steps on a digits-like state (dead groups whose m decays
    # into subnormal numbers while the others train), each checked: the
    # sorting is redone along the way and m crosses into tiny values between
    # two sortings.
    from cbp import _engine

    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    n = 9000
    rng = np.random.default_rng(40)
    p, g, m, v = _adam_case("dead-groups", n, rng)
    m[np.arange(n) // 16 % 3 == 0] = np.float32(3e-23)   # reaches 2^-80 within ~20 steps
    state = _engine.OptimizerState("adam", n, np.float32)
    state.set_hyperparameters(lr=1e-3)
    for t in range(1, 41):
        p, m, v = _assert_adam_bits(state, p, g, m, v, t, hyper)
        g = (g * np.float32(0.97)).astype(np.float32)


def test_float32_quotient_by_a_constant_through_double_reciprocal():
    # Adam divides √v by c = √(1 − β2ᵗ), a constant of the step: in float32
    # cbp multiplies by 1 / c in double and rounds to float instead
    # (optim_impl.h, over_bc2), claiming the float quotient bit for bit.
    # Every normal s = √v is some significand in [1, 2) times a power of two,
    # which scales quotient and product alike, so all 2^23 significands for
    # each c settle the claim for that c; here the c of steps 1..16 and later.
    s = (np.arange(2**23, dtype=np.uint32) | np.uint32(0x3F800000)).view(np.float32)
    s64 = s.astype(np.float64)
    for t in [*range(1, 17), 100, 1000, 10**4, 10**5]:
        c = np.float32(np.sqrt(1 - 0.999 ** t))
        by_reciprocal = (s64 * (1.0 / np.float64(c))).astype(np.float32)
        mismatch = np.flatnonzero(by_reciprocal.view(np.uint32) != (s / c).view(np.uint32))
        assert mismatch.size == 0, f"t={t}: {s[mismatch[0]]!r} / {c!r}"


def test_float32_adam_update_bit_exact_over_many_denominators():
    # The same claim through the C update: sqrt(v) over 2^18 lanes of
    # random significands and exponents, at several steps.
    from cbp import _engine

    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    n = 2**18
    rng = np.random.default_rng(18)
    p = rng.normal(0, 0.5, n).astype(np.float32)
    g = rng.normal(0, 1e-2, n).astype(np.float32)
    m = (0.5 * g).astype(np.float32)
    state = _engine.OptimizerState("adam", n, np.float32)
    state.set_hyperparameters(lr=1e-3)
    for t in (1, 2, 5, 30, 1000):
        v = (rng.uniform(1, 4, n) * np.exp2(rng.integers(-60, 20, n))).astype(np.float32)
        _assert_adam_bits(state, p, g, m, v, t, hyper)


def test_optimizer_state_update_rejects_bad_buffers():
    from cbp import _engine

    state = _engine.OptimizerState("adam", 8, np.float32)
    state.set_hyperparameters(lr=1e-3)
    g = np.zeros(8, np.float32)
    with pytest.raises(TypeError, match="float32"):
        state.update(np.zeros(8), g)
    with pytest.raises(ValueError, match="8 elements"):
        state.update(np.zeros(7, np.float32), g[:7])
    with pytest.raises(ValueError, match="overlap"):
        state.update(state.buf1, g)
