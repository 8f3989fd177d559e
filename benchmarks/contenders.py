"""The contenders of the step benchmark.

Each contender trains the same MLP (ReLU hidden layers, identity last
layer, softmax cross-entropy, SGD lr 0.01, momentum 0) from the same
initial parameters on the same batches.  ``run(k)`` trains about `k`
steps and returns ``(seconds, steps)``: the seconds cover only the
training calls (thread-count changes and data preparation happen outside
the timer), and steps is what was actually run (``fit``-like contenders
round `k` to whole epochs).

A factory raises ImportError when its library is not installed.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

import numpy_reference

LR = 0.01
N_CLASSES = 10


class Problem:
    """One configuration: layer sizes, batch, dtype, and the data — an
    epoch of `n_batches` random batches (standard normal inputs, labels
    spread evenly over the classes in random order) and cbp's initial
    parameters, which every contender copies."""

    def __init__(self, name, sizes, batch, dtype, n_batches, seed=0):
        import cbp

        self.name, self.sizes, self.batch = name, list(sizes), batch
        self.dtype = np.dtype(dtype)
        self.n_batches = n_batches
        rng = np.random.default_rng(seed)
        n = batch * n_batches
        self.X = rng.standard_normal((n, sizes[0]), dtype=self.dtype)
        # every class present (scikit-learn sizes its output layer from the labels)
        self.y = rng.permutation(np.arange(n) % N_CLASSES).astype(np.int64)
        # pre-sliced batches: contiguous row views of the epoch
        self.batches = [(self.X[i * batch:(i + 1) * batch], self.y[i * batch:(i + 1) * batch])
                        for i in range(n_batches)]
        reference = cbp.Network.mlp(self.sizes, dtype=self.dtype.name, seed=seed)
        self.init = [(layer.W.copy(), layer.b.copy()) for layer in reference.layers]

    def cbp_network(self):
        import cbp

        net = cbp.Network.mlp(self.sizes, dtype=self.dtype.name, seed=0)
        for layer, (W, b) in zip(net.layers, self.init):
            layer.W, layer.b = W, b
        return net

    def label(self):
        dt = "" if self.dtype == np.float32 else f" {self.dtype.name}"
        return f"{'-'.join(map(str, self.sizes))} b{self.batch}{dt}"


class Contender:
    """`name` is what the table shows, `group` the peer it belongs to
    (thread-count variants of one peer share a group), `threads` the BLAS /
    intra-op thread count it runs at (None: the library's default), `pool`
    the library whose worker threads it runs on."""

    group = ""
    pool = ""

    def __init__(self, problem, threads=None, tpc=None):
        self.problem, self.threads, self.tpc = problem, threads, tpc
        self.name = self.group if threads is None else f"{self.group}@{threads}"

    def run(self, k):
        if self.threads is None or self.tpc is None:
            return self._run(k)
        with self.tpc.limit(limits=self.threads, user_api="blas"):
            return self._run(k)

    def warm(self):
        """One untimed step right before a timed block, so that every
        contender starts it alike: its library's worker threads awake, its
        code and parameters in cache.  Without it the contender that follows
        another library (and the pause for that library's threads) starts
        cold while its neighbours in the same pool start warm."""
        self.run(1)

    def _run(self, k):
        raise NotImplementedError

    def parameters(self):
        """[(W, b), …] as NumPy arrays, W (out, in) — for the parity check."""
        return [(layer.W.copy(), layer.b.copy()) for layer in self.net.layers]


def _cycle(batches, k):
    """About `k` batches, cycling through the list: whole passes plus a
    prefix."""
    full, rest = divmod(k, len(batches))
    return [batches] * full + ([batches[:rest]] if rest else [])


# ---------------------------------------------------------------- cbp
def _cbp_threads(net, batch, threads):
    """The worker threads cbp's steps run on: its own pool where it takes
    plain-SGD steps of this size (docs/threads.md), else SciPy's OpenBLAS
    threads.  A contender on the pool is another library's threads to the
    floor's: the round-robin pauses between them."""
    import os

    from cbp import _engine, _threads

    cores = threads if threads is not None else (os.cpu_count() or 1)
    on_pool = (_threads.bind() and _engine.pool_active() and cores >= 2
               and _threads.pool_for(6 * batch * net.num_parameters))
    return "cbp-pool" if on_pool else "scipy-openblas"


class CbpFit(Contender):
    """``Network.fit`` over whole epochs, shuffled as a user would:
    per step = fit time / (epochs × batches)."""

    group = "cbp_fit"
    pool = "scipy-openblas"

    def __init__(self, problem, threads=None, tpc=None):
        import cbp

        super().__init__(problem, threads, tpc)
        self.net = problem.cbp_network()
        self.optimizer = cbp.SGD(lr=LR)
        self.pool = _cbp_threads(self.net, problem.batch, threads)

    def warm(self):
        p = self.problem  # one step: run(1) would be a whole epoch
        self.net.fit(p.X[:p.batch], p.y[:p.batch], epochs=1, batch_size=p.batch,
                     optimizer=self.optimizer, shuffle=True, progress=False)

    def _run(self, k):
        p = self.problem
        epochs = max(1, round(k / p.n_batches))
        t0 = time.perf_counter()
        self.net.fit(p.X, p.y, epochs=epochs, batch_size=p.batch, optimizer=self.optimizer,
                     shuffle=True, progress=False)
        return time.perf_counter() - t0, epochs * p.n_batches


class CbpTrainStep(Contender):
    """``Network.train_step``: one Python call per step on pre-sliced batches."""

    group = "cbp_train_step"
    pool = "scipy-openblas"

    def __init__(self, problem, threads=None, tpc=None):
        import cbp

        super().__init__(problem, threads, tpc)
        self.net = problem.cbp_network()
        self.optimizer = cbp.SGD(lr=LR)
        self.pool = _cbp_threads(self.net, problem.batch, threads)

    def _run(self, k):
        step, opt, steps = self.net.train_step, self.optimizer, 0
        t0 = time.perf_counter()
        for part in _cycle(self.problem.batches, k):
            for xb, yb in part:
                step(xb, yb, opt)
            steps += len(part)
        return time.perf_counter() - t0, steps


class BlasFloor(Contender):
    """The BLAS calls of one fused-SGD step, repeated in a C loop inside the
    extension (``Engine.blas_floor``).

    Each timed call runs `chunk` repetitions and follows, untimed, a reset
    of the parameters to their initial values and one real ``train_step``,
    so weights and workspace hold the values of a real step: the floor loop
    computes no loss, so over many repetitions its buffers drift — towards
    zero (subnormal numbers, far slower BLAS) or, as its updates repeat,
    away from any real network.  The time of an empty call (``reps = 0``),
    measured alongside, is subtracted, so `chunk` only amortizes the timer.
    """

    group = "blas_floor"
    pool = "scipy-openblas"
    target_chunk_seconds = 10e-6
    max_chunk = 16

    def __init__(self, problem, threads=None, tpc=None, chunk=None):
        import cbp

        super().__init__(problem, threads, tpc)
        self.net = problem.cbp_network()
        self.net._engine.reserve(problem.batch)
        if self.net._engine.capacity < problem.batch:
            raise RuntimeError("Engine.reserve did not make room for the batch")
        self.optimizer = cbp.SGD(lr=LR)
        self.initial = [p.copy() for p in self.net.parameters()]
        self.chunk = chunk or self._choose_chunk()

    def _real_step(self, xb, yb):
        for p, p0 in zip(self.net.parameters(), self.initial):
            p[...] = p0
        self.net.train_step(xb, yb, self.optimizer)

    def _choose_chunk(self):
        floor, (xb, yb) = self.net._engine.blas_floor, self.problem.batches[0]
        times = []
        while len(times) < 3 or (len(times) < 21 and sum(times) < 0.01):
            self._real_step(xb, yb)
            t0 = time.perf_counter()
            floor(xb, LR, 1)
            times.append(time.perf_counter() - t0)
        per_rep = float(np.median(times))
        return int(min(self.max_chunk, max(1, round(self.target_chunk_seconds / per_rep))))

    def _run(self, k):
        floor, chunk, clock = self.net._engine.blas_floor, self.chunk, time.perf_counter
        calls = max(1, round(k / chunk))
        busy = empty = 0.0
        batches = self.problem.batches
        for i in range(calls):
            xb, yb = batches[i % len(batches)]
            self._real_step(xb, yb)         # untimed
            t0 = clock()
            floor(xb, LR, chunk)
            t1 = clock()
            floor(xb, LR, 0)
            t2 = clock()
            busy += t1 - t0
            empty += t2 - t1
        return max(busy - empty, 0.0), calls * chunk


# ---------------------------------------------------------------- NumPy
class NumpyReference(Contender):
    group = "numpy"
    pool = "numpy-openblas"

    def __init__(self, problem, threads=None, tpc=None):
        super().__init__(problem, threads, tpc)
        self.params = [(W.copy(), b.copy()) for W, b in problem.init]

    def parameters(self):
        return [(W.copy(), b.copy()) for W, b in self.params]

    def _run(self, k):
        step, params, steps = numpy_reference.train_step, self.params, 0
        t0 = time.perf_counter()
        for part in _cycle(self.problem.batches, k):
            for xb, yb in part:
                step(params, xb, yb, LR)
            steps += len(part)
        return time.perf_counter() - t0, steps


# ---------------------------------------------------------------- PyTorch
class TorchEager(Contender):
    """``nn.Sequential`` of Linear/ReLU, ``CrossEntropyLoss``,
    ``torch.optim.SGD``; ``zero_grad``/``backward``/``step`` each step;
    ``torch.set_num_threads`` set explicitly before every block."""

    group = "torch"
    pool = "torch"

    def __init__(self, problem, threads=None, tpc=None):
        import torch

        super().__init__(problem, threads, tpc)
        self.torch = torch
        self.default_threads = TorchEager.default_threads()
        dtype = torch.float32 if problem.dtype == np.float32 else torch.float64
        layers = []
        for l, (W, b) in enumerate(problem.init):
            linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W))
                linear.bias.copy_(torch.from_numpy(b))
            layers.append(linear)
            if l < len(problem.init) - 1:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self.loss = torch.nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=0.0)
        self.batches = [(torch.from_numpy(xb), torch.from_numpy(yb)) for xb, yb in problem.batches]

    _default = None

    @staticmethod
    def default_threads():
        import torch

        if TorchEager._default is None:
            TorchEager._default = torch.get_num_threads()
        return TorchEager._default

    def run(self, k):
        self.torch.set_num_threads(self.threads or self.default_threads)
        try:
            return self._run(k)
        finally:
            self.torch.set_num_threads(self.default_threads)

    def parameters(self):
        linears = [m for m in self.model if isinstance(m, self.torch.nn.Linear)]
        return [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
                for m in linears]

    def _run(self, k):
        model, loss_fn, opt, steps = self.model, self.loss, self.optimizer, 0
        t0 = time.perf_counter()
        for part in _cycle(self.batches, k):
            for xb, yb in part:
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
            steps += len(part)
        return time.perf_counter() - t0, steps


# ---------------------------------------------------------------- JAX
def import_jax():
    """JAX with 64-bit floats enabled (before any array exists), so the
    float64 configuration really runs in float64."""
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


class JaxJit(Contender):
    """``jax.jit`` of a ``value_and_grad`` SGD step with donated parameters;
    steps are dispatched back to back and the block ends with
    ``block_until_ready`` (XLA's thread count is fixed at import)."""

    group = "jax"
    pool = "xla"

    def __init__(self, problem, threads=None, tpc=None):
        from functools import partial

        jax = import_jax()
        import jax.numpy as jnp

        super().__init__(problem, None, None)
        self.jax = jax

        def loss_fn(params, x, y):
            a = x
            for W, b in params[:-1]:
                a = jax.nn.relu(a @ W.T + b)
            W, b = params[-1]
            logp = jax.nn.log_softmax(a @ W.T + b)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

        @partial(jax.jit, donate_argnums=0)
        def step(params, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            return jax.tree.map(lambda p, g: p - LR * g, params, grads), loss

        self.step = step
        self.params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in problem.init]
        self.batches = [(jnp.asarray(xb), jnp.asarray(yb.astype(np.int32)))
                        for xb, yb in problem.batches]

    def parameters(self):
        return [(np.asarray(W).copy(), np.asarray(b).copy()) for W, b in self.params]

    def _run(self, k):
        step, params, steps = self.step, self.params, 0
        t0 = time.perf_counter()
        for part in _cycle(self.batches, k):
            for xb, yb in part:
                params, loss = step(params, xb, yb)
            steps += len(part)
        self.jax.block_until_ready(params)
        elapsed = time.perf_counter() - t0
        self.params = params
        return elapsed, steps


# ---------------------------------------------------------------- scikit-learn
def _mlp_classifier(problem, max_iter, warm_start):
    from sklearn.neural_network import MLPClassifier

    hidden = tuple(problem.sizes[1:-1])
    return MLPClassifier(hidden_layer_sizes=hidden, activation="relu", solver="sgd",
                         learning_rate="constant", learning_rate_init=LR, momentum=0.0,
                         nesterovs_momentum=False, alpha=0.0, batch_size=problem.batch,
                         max_iter=max_iter, shuffle=True, tol=0.0, n_iter_no_change=10**9,
                         early_stopping=False, warm_start=warm_start, random_state=0)


def _load_init(clf, problem):
    """cbp's initial parameters into a fitted MLPClassifier ((in, out) layout)."""
    clf.coefs_ = [np.ascontiguousarray(W.T) for W, _ in problem.init]
    clf.intercepts_ = [b.copy() for _, b in problem.init]


class SklearnPartialFit(Contender):
    """``MLPClassifier.partial_fit`` on one batch per call."""

    group = "sklearn_partial_fit"
    pool = "numpy-openblas"

    def parameters(self):
        return [(W.T.copy(), b.copy()) for W, b in zip(self.clf.coefs_, self.clf.intercepts_)]

    def __init__(self, problem, threads=None, tpc=None):
        super().__init__(problem, threads, tpc)
        self.clf = _mlp_classifier(problem, max_iter=1, warm_start=False)
        xb, yb = problem.batches[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.clf.partial_fit(xb, yb, classes=np.arange(N_CLASSES))
        _load_init(self.clf, problem)

    def _run(self, k):
        partial_fit, steps = self.clf.partial_fit, 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            for part in _cycle(self.problem.batches, k):
                for xb, yb in part:
                    partial_fit(xb, yb)
                steps += len(part)
            elapsed = time.perf_counter() - t0
        return elapsed, steps


class SklearnFit(Contender):
    """``MLPClassifier.fit`` (``warm_start=True``, so repeated blocks continue
    training rather than re-initialising): per batch = fit time /
    (max_iter × batches)."""

    group = "sklearn_fit"
    pool = "numpy-openblas"

    def __init__(self, problem, threads=None, tpc=None):
        super().__init__(problem, threads, tpc)
        self.clf = _mlp_classifier(problem, max_iter=1, warm_start=True)
        # warm_start keeps the classes of the first fit: give it every class
        rows = max(problem.batch, int(np.unique(problem.y, return_index=True)[1].max()) + 1)
        self.warm_rows = rows
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.clf.fit(problem.X[:rows], problem.y[:rows])
        _load_init(self.clf, problem)

    def warm(self):
        # One epoch of the first rows that hold every class (warm_start
        # refuses fewer classes): run(1) would be a whole epoch of all rows.
        p = self.problem
        self.clf.max_iter = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.clf.fit(p.X[:self.warm_rows], p.y[:self.warm_rows])

    def _run(self, k):
        p = self.problem
        epochs = max(1, round(k / p.n_batches))
        self.clf.max_iter = epochs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            self.clf.fit(p.X, p.y)
            elapsed = time.perf_counter() - t0
        return elapsed, epochs * p.n_batches


def check_parity(problem, groups, steps=3):
    """Every per-step contender, fresh from the common initial parameters,
    trains `steps` steps on the first batches; returns {name: largest
    relative difference of its parameters from the NumPy reference's}."""
    per_step = [g for g in ("cbp_train_step", "torch", "jax", "sklearn_partial_fit")
                if g in groups]
    reference = NumpyReference(problem)
    reference.run(steps)
    expected = reference.parameters()
    scale = max(float(np.abs(W).max()) for W, _ in expected)
    out = {}
    for g in per_step:
        c = FACTORIES[g](problem)
        c.run(steps)
        got = c.parameters()
        out[g] = max(float(np.abs(a - e).max()) / scale
                     for pair, pair_e in zip(got, expected) for a, e in zip(pair, pair_e))
    return out


# In this order, contenders sharing a thread pool are neighbours, so a round
# crosses from one library's worker threads to another's only four times.
FACTORIES = {
    "cbp_fit": CbpFit,
    "cbp_train_step": CbpTrainStep,
    "blas_floor": BlasFloor,
    "numpy": NumpyReference,
    "sklearn_partial_fit": SklearnPartialFit,
    "sklearn_fit": SklearnFit,
    "torch": TorchEager,
    "jax": JaxJit,
}
# Contenders whose thread count --threads varies (JAX cannot change after import;
# cbp chooses its own).
THREADED = ("blas_floor", "numpy", "torch", "sklearn_partial_fit", "sklearn_fit")
PEERS = ("numpy", "torch", "jax", "sklearn_partial_fit", "sklearn_fit")
