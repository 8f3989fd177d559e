"""The Network: build, train, predict, save.

A network is compiled once into a plan for the C engine (cbp/_engine.pyx,
src_c/engine_impl.h): every layer's ``W`` and ``b`` live in one flat
parameter buffer, every ``dW`` and ``db`` in one flat gradient buffer, and
the workspace is sized for the batch.  A training step is one call into C;
so is a run of mini-batches of an epoch.
"""
from __future__ import annotations

import copy as _copy
import sys
import threading
import time
from collections.abc import Iterable, Mapping

import numpy as np

from . import _engine, _threads
from ._data import (CLASSIFICATION_LOSSES, LOSSES, check_inputs, check_nonempty,
                    check_sample_weight, check_targets, positive_int)
from .callbacks import History
from .errors import DivergenceError
from .layers import Dense
from .ops import activation_code
from .optim import Optimizer, get_optimizer

__all__ = ["Network"]

_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
# Rows of the workspace used for inference and for backward/train_step on
# large inputs (which then run in chunks).
_CHUNK_ROWS = 1024
# fit trains in C calls of several batches each; between calls the
# progress bar moves, Ctrl-C is honoured and other threads' calls on the
# network get its lock.  The first call of a fit does about this much
# floating-point work (20–100 ms at 20–100 GFLOP/s), within the first
# epoch; every next one (across epochs, unless callbacks or validation
# run between them) as many batches as take about _SECONDS_PER_CALL at
# the pace of the call before (at most 4 times more or fewer; for a call
# across epochs, its shuffles and per-epoch records included), so calls
# last about that long on any machine, and the work around each call
# (the Python loop, ≈ 20 µs, and a call's start in C) stays well below
# 1 % of it.
_WORK_PER_CALL = 2e9
_SECONDS_PER_CALL = 0.1
# A call spanning epochs gets their shuffles as one array of at most this
# many bytes (one epoch's at least).
_ORDER_BYTES = 2**23


def _as_dtype(dtype) -> np.dtype:
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    # `d is None` first: np.dtype("float64") == None is True, so a bare
    # membership test would let an unparseable dtype through as None.
    if d is None or d not in _DTYPES.values():
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return d


def _is_true(value) -> bool:
    """A callback's "stop": True, NumPy's True too (a comparison's result),
    nothing else truthy (a callback that returns its logs does not stop)."""
    return value is True or (isinstance(value, np.bool_) and bool(value))


def _check_flag(name, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def _as_loss(loss) -> str:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known losses: {', '.join(LOSSES)}")
    return loss


def _next_call_batches(per_call, count, seconds, most):
    """Batches for fit's next C call: as many as take _SECONDS_PER_CALL at
    the pace of the last call (`count` batches in `seconds`), within 4
    times the current `per_call` either way, and within [1, most]."""
    want = _SECONDS_PER_CALL * count / seconds if seconds > 0 else 4.0 * per_call
    return int(max(1, min(most, 4 * per_call, max(want, per_call / 4))))


class _Shuffles:
    """fit's shuffles: a permutation of the n rows per epoch, drawn from the
    network's generator in epoch order as the C calls reach the epochs.
    A call that spans epochs draws theirs up front; if training stops
    early (divergence, Ctrl-C), rewind puts the generator back as if only
    the epochs begun had been drawn, as per-epoch draws would leave it."""

    def __init__(self, rng, n):
        self._rng, self._n = rng, n
        self._drawn = 0                 # epochs drawn so far
        self._block, self._first = None, 0   # the last call's permutations, from epoch _first
        self._saved = None              # (generator state, epochs drawn) before a spanning call drew

    def cover(self, e0, e1):
        """The permutations of epochs e0 .. e1 as one (epochs, n) array, and
        the epoch of its first row."""
        block, first = self._block, self._first
        if block is not None and first <= e0 and e1 < first + len(block):
            return block, first
        order = np.empty((e1 - e0 + 1, self._n), dtype=np.int64)
        if self._drawn > e0:            # the last call began epoch e0
            order[0] = block[-1]
        self._saved = (self._rng.bit_generator.state, self._drawn) if e1 > e0 else None
        for e in range(self._drawn, e1 + 1):
            order[e - e0] = self._rng.permutation(self._n)
            self._drawn = e + 1
        self._block, self._first = order, e0
        return order, e0

    def rewind(self, begun):
        """Training stopped with `begun` epochs begun: undraw the rest."""
        if self._saved is None:
            return
        state, drawn = self._saved
        begun = min(begun, self._drawn)
        if begun < drawn:
            return
        self._rng.bit_generator.state = state
        for _ in range(drawn, begun):
            self._rng.permutation(self._n)
        self._drawn = begun


class _EpochLosses:
    """fit's record of the batches run: their losses gathered by epoch,
    and each epoch's mean loss (its batches weighted by their rows) once
    its last batch has run."""

    def __init__(self, n, batch_size, n_batches):
        self.n, self.n_batches = n, n_batches
        self.rows = np.full(n_batches, batch_size, dtype=np.float64)
        self.rows[-1] = n - batch_size * (n_batches - 1)
        self.batches = 0                # batches recorded, over the whole fit
        self._pieces = []               # the current epoch's losses so far

    def _restart(self, batches, pieces):
        """Back to a state recorded before: `batches` recorded, `pieces`
        of the current epoch's losses."""
        self.batches, self._pieces = batches, list(pieces)

    def add(self, losses):
        """Record the next len(losses) batches; yields (epoch, mean loss)
        for each epoch they complete."""
        k = 0
        while k < len(losses):
            j = self.batches % self.n_batches
            take = min(len(losses) - k, self.n_batches - j)
            self._pieces.append(losses[k:k + take])
            k += take
            self.batches += take
            if j + take == self.n_batches:
                pieces, self._pieces = self._pieces, []
                epoch_loss = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
                # Not `epoch_loss @ rows`: that is a BLAS call, which wakes NumPy's
                # own OpenBLAS threads, and they spin on the cores cbp's BLAS uses.
                yield (self.batches // self.n_batches - 1,
                       float(np.sum(epoch_loss * self.rows) / self.n))


class Network:
    """A fully connected network trained by backpropagation in C.

    Parameters
    ----------
    layers : list of Dense
        Consecutive layers: each layer's ``in_features`` equals the
        previous layer's ``out_features``.  Each ``Dense`` belongs to one
        network only.
    loss : {"softmax_cross_entropy", "binary_cross_entropy", "mse"}, default "softmax_cross_entropy"
        The loss applies softmax or sigmoid itself, so the last layer
        outputs logits (or the prediction, for ``mse``).
    dtype : {"float32", "float64"}, default "float32"
    seed : int, optional
        Seeds initialisation (He normal for ReLU-family layers, Glorot
        uniform otherwise; zero biases) and the shuffling of ``fit``.

    Attributes
    ----------
    layers : list of Dense
        The layers; their ``W``, ``b``, ``dW``, ``db`` are views of the
        network's flat parameter and gradient buffers.
    loss : str
    dtype : numpy.dtype
        ``float32`` or ``float64``.
    seed : int or None
    history : History or None
        The :class:`History` of the last :meth:`fit`.

    Examples
    --------
    >>> import cbp
    >>> net = cbp.Network([cbp.Dense(64, 32, activation="relu"), cbp.Dense(32, 10)],
    ...                   loss="softmax_cross_entropy", dtype="float32", seed=0)
    >>> net.num_parameters
    2410
    """

    def __init__(self, layers, loss="softmax_cross_entropy", dtype="float32", seed=None):
        if isinstance(layers, Dense):
            layers = [layers]
        elif isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise TypeError(f"layers must be a list of cbp.Dense layers, got "
                            f"{type(layers).__name__}")
        layers = list(layers)
        if not layers:
            raise ValueError("a Network needs at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Dense):
                raise TypeError(f"layer {i} must be a cbp.Dense, got {type(layer).__name__}")
            if layer._views is not None:
                raise ValueError(f"layer {i} ({layer!r}) already belongs to a Network; "
                                 "create a new layer (or use net.copy())")
            if any(layer is other for other in layers[:i]):
                raise ValueError(f"layer {i} ({layer!r}) appears twice in the list; "
                                 "each position needs its own Dense")
            if i and layer.in_features != layers[i - 1].out_features:
                raise ValueError(f"layer {i} ({layer!r}) takes {layer.in_features} inputs "
                                 f"but layer {i - 1} ({layers[i - 1]!r}) gives "
                                 f"{layers[i - 1].out_features}")
        self._layers = layers
        self._loss = _as_loss(loss)
        self._dtype = _as_dtype(dtype)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self._seed = None if seed is None else int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._lock = threading.RLock()
        self.history = None

        n_params = sum(layer.num_parameters for layer in layers)
        # 64-byte aligned: BLAS reads the weights faster from there.
        self._params = _engine.aligned_zeros(n_params, self.dtype)
        self._grads = _engine.aligned_zeros(n_params, self.dtype)
        offset = 0
        for layer in layers:
            offset = layer._bind(self._params, self._grads, offset)
            layer._init_parameters(self._rng)
        sizes = [layers[0].in_features] + [layer.out_features for layer in layers]
        codes = [activation_code(layer.activation) for layer in layers]
        self._engine = _engine.Engine(sizes, codes, self.loss, self._params, self._grads)
        self._engine.reserve(64)
        self._threads_key = None
        self._named_optimizers = {}
        _threads.bind()
        self._engine.forward_nn = _threads.forward_nn_default()

    @classmethod
    def mlp(cls, sizes, activation="relu", loss="softmax_cross_entropy", dtype="float32",
            seed=None) -> Network:
        """A multilayer perceptron: ``sizes = [in, hidden…, out]``, every
        hidden layer with `activation`, the last layer ``identity``.

        Parameters
        ----------
        sizes : sequence of int
            The input size, the hidden layer sizes, the output size (at
            least two numbers).
        activation : str, default "relu"
            Activation of the hidden layers, one of ``cbp.ops.ACTIVATIONS``.
        loss, dtype, seed
            As for :class:`Network`.

        Returns
        -------
        Network

        Examples
        --------
        >>> net = Network.mlp([64, 32, 10], activation="relu", seed=0)
        >>> net.layers
        [Dense(64, 32, activation='relu'), Dense(32, 10)]
        """
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"sizes must be a list of layer sizes such as [64, 32, 10], got "
                            f"{type(sizes).__name__}")
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least the input and output sizes, got {sizes}")
        activation_code(activation)
        layers = [Dense(sizes[i], sizes[i + 1],
                        activation=activation if i < len(sizes) - 2 else "identity")
                  for i in range(len(sizes) - 1)]
        return cls(layers, loss=loss, dtype=dtype, seed=seed)

    # ------------------------------------------------------------ shape
    # The architecture is fixed when the network is built (compiled into
    # its plan): these are read-only, so that what is saved, copied and
    # summarised is always what the plan computes.
    @property
    def layers(self) -> list:
        """The layers, in order (a new list each time; the layers are the
        network's own, their ``W`` and ``b`` views into its parameters)."""
        return list(self._layers)

    @property
    def loss(self) -> str:
        """The loss's name."""
        return self._loss

    @property
    def dtype(self) -> np.dtype:
        """The parameters' dtype, ``float32`` or ``float64``."""
        return self._dtype

    @property
    def seed(self):
        """The seed the network was built with (``None``: unseeded)."""
        return self._seed

    @property
    def in_features(self) -> int:
        """Size of each input sample (the first layer's ``in_features``)."""
        return self._layers[0].in_features

    @property
    def out_features(self) -> int:
        """Size of each output (the last layer's ``out_features``)."""
        return self._layers[-1].out_features

    @property
    def num_parameters(self) -> int:
        """Number of parameters: every layer's weights and biases."""
        return self._params.size

    def parameters(self) -> list:
        """``[W1, b1, W2, b2, …]``: writable views of the parameters."""
        return [p for layer in self._layers for p in (layer.W, layer.b)]

    def gradients(self) -> list:
        """``[dW1, db1, …]``, aligned with :meth:`parameters`: the
        gradients written by the last :meth:`backward` (plain-SGD steps of
        :meth:`train_step` and :meth:`fit` do not store theirs)."""
        return [g for layer in self._layers for g in (layer.dW, layer.db)]

    # ------------------------------------------------------------ data
    def _inputs(self, X, what="X", inference=False):
        """X checked; for inference, a large X's finiteness check runs on
        the BLAS threads its forward pass will use (Engine.all_finite)."""
        return check_inputs(X, self.in_features, self.dtype, what,
                            self._inference_all_finite if inference else _engine.all_finite)

    def _inference_all_finite(self, a):
        rows = min(a.shape[0], max(_CHUNK_ROWS, self._engine.capacity))
        with self._lock:   # inference outside fit never takes the pool
            return self._engine.all_finite(a, _threads.threads_for(2 * rows * self.num_parameters), 0,
                                           rows)

    def _targets(self, y, n, what="y"):
        return check_targets(y, self.loss, n, self.out_features, self.dtype, what)

    def _reserve(self, rows):
        self._engine.reserve(max(1, min(rows, _CHUNK_ROWS)))

    def _set_threads(self, rows, flops_per_row_param=6, fused=True):
        """BLAS threads for calls on `rows`-row batches (see cbp._threads);
        `fused`: training steps with plain SGD (OptimizerState.fuses)."""
        key = (rows, flops_per_row_param, self._engine.capacity, fused)
        if key != self._threads_key:
            work = flops_per_row_param * min(rows, self._engine.capacity) * self.num_parameters
            self._engine.blas_threads = _threads.threads_for(work)
            # Training steps (6 flops per row and parameter) may take cbp's
            # pool; inference only inside fit (see _evaluate).
            self._engine.pool = _threads.pool_for(work, fused) if flops_per_row_param == 6 else 0
            self._threads_key = key

    # ------------------------------------------------------------ compute
    def forward(self, X) -> np.ndarray:
        """The last layer's output: logits for the classification losses
        (no softmax or sigmoid applied), the prediction for ``mse``.

        Parameters
        ----------
        X : array-like, shape (n, in_features)

        Returns
        -------
        ndarray, shape (n, out_features), of the network's dtype

        Raises
        ------
        FloatingPointError
            When the computation overflows the network's dtype on these
            inputs, at any layer (an overflowed hidden layer is reported,
            not saturated away by its activation).
        """
        return self._forward(self._inputs(X, inference=True), _engine.OUTPUT_RAW)

    def _forward(self, X, transform):
        out = np.empty((X.shape[0], self.out_features), dtype=self.dtype)
        with self._lock:
            self._reserve(X.shape[0])
            self._set_threads(X.shape[0], 2)
            self._engine.forward(X, out, transform)
        self._check_outputs(out)
        return out

    def _check_outputs(self, out):
        """Finite inputs can still overflow the dtype inside the network
        (float32 beyond 3.4e38): a FloatingPointError, not inf/NaN outputs,
        a NaN softmax or an argmax taken over NaN."""
        if not _engine.all_finite(out):
            row = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            raise FloatingPointError(f"the network's output for row {row} of X is not "
                                     f"finite: {self._overflow_cause()}")

    def _overflow_cause(self):
        """Why finite data gave a non-finite result: the parameters, or an
        overflow of the dtype."""
        if not _engine.all_finite(self._params):
            return ("the network's parameters hold NaN or infinity (set by hand, or loaded "
                    "from such a file)")
        remedy = "scale the inputs, or use dtype='float64'" if self.dtype == np.float32 else \
            "scale the inputs, or the weights"
        return (f"the computation overflowed {self.dtype} (largest finite "
                f"{np.finfo(self.dtype).max:.3g}) on finite inputs; {remedy}")

    def backward(self, X, y, sample_weight=None) -> float:
        """Loss of the batch and its gradient into every layer's ``dW``,
        ``db`` (no update).

        Parameters
        ----------
        X : array-like, shape (n, in_features)
        y : array-like
            Targets, as for :meth:`fit`.
        sample_weight : array-like, shape (n,), optional
            Non-negative weights.

        Returns
        -------
        float
            The loss ``Σ wᵢ lᵢ / Σ wᵢ`` (the mean over the rows without
            weights).

        Raises
        ------
        FloatingPointError
            When the loss or a gradient is not finite: the computation
            overflowed the network's dtype on these inputs (or its
            parameters are not finite).
        """
        X = self._inputs(X)
        check_nonempty(X.shape[0])
        y = self._targets(y, X.shape[0])
        w = check_sample_weight(sample_weight, X.shape[0], self.dtype)
        with self._lock:
            self._reserve(X.shape[0])
            self._set_threads(X.shape[0])
            loss, _ = self._engine.loss(X, y, w, True)
        if not (np.isfinite(loss) and _engine.all_finite(self._grads)):
            raise FloatingPointError(
                f"the {'loss' if not np.isfinite(loss) else 'gradient'} of this batch is not "
                f"finite: {self._overflow_cause()}")
        return float(loss)

    def train_step(self, X, y, optimizer, sample_weight=None) -> float:
        """One optimizer step on the batch.

        Parameters
        ----------
        X : array-like, shape (n, in_features)
        y : array-like
            Targets, as for :meth:`fit`.
        optimizer : Optimizer or str
            Pass the same :class:`Optimizer` object at every step: it
            holds the state (momentum buffer, Adam's moments and step
            count).  A name (``"sgd"``, ``"adam"``, ``"adamw"``) means that
            optimizer with its defaults, one per network and name, kept
            between calls to ``train_step`` (so its state carries over
            too; :meth:`fit` with a name starts a new one).
        sample_weight : array-like, shape (n,), optional
            Non-negative weights; the loss is ``Σ wᵢ lᵢ / Σ wᵢ``.

        Returns
        -------
        float
            The loss of the batch before the update.

        Notes
        -----
        With plain SGD (no momentum, no weight decay) the update is folded
        into the weight products (``W ← W − lr Δᵀ A``, one BLAS call per
        layer), so the gradient is never stored: ``dW``/``db`` keep what
        the last :meth:`backward` (or non-fused step) wrote.  Call
        :meth:`backward` to inspect gradients.

        Raises
        ------
        DivergenceError
            When the loss or a gradient is not finite; the parameters are
            left unchanged.
        """
        w = sample_weight
        if not self._engine.ready(X, y, w):  # else: exact arrays, checked in C
            X = self._inputs(X)
            check_nonempty(X.shape[0])
            y = self._targets(y, X.shape[0])
            w = check_sample_weight(w, X.shape[0], self.dtype)
        optimizer = self._optimizer(optimizer)
        with self._lock:
            state = optimizer._state_for(self)
            if X.shape[0] > self._engine.capacity:
                self._reserve(X.shape[0])
            self._set_threads(X.shape[0], fused=state.fuses)
            loss, status = self._engine.train_step(state, X, y, w)
        if status != _engine.OK:
            raise DivergenceError(self._divergence_message(status, loss))
        return float(loss)

    def _optimizer(self, spec) -> Optimizer:
        """train_step's optimizer: an Optimizer is itself; a name, or None
        (Adam), means the network's optimizer of that name with its
        defaults, created on first use and kept for later calls, so its
        state (momentum, Adam's moments and step count) carries over."""
        if isinstance(spec, Optimizer):
            return spec
        if not (spec is None or isinstance(spec, str)):
            get_optimizer(spec)  # raises the TypeError
        key = "adam" if spec is None else spec.lower()
        with self._lock:   # threads' first steps share one optimizer, not one each
            if key not in self._named_optimizers:
                self._named_optimizers[key] = get_optimizer(spec)  # unknown names raise here
            return self._named_optimizers[key]

    @staticmethod
    def _divergence_message(status, loss, where=""):
        what = {_engine.NONFINITE_LOSS: "the loss is not finite",
                _engine.NONFINITE_GRADIENT: "a gradient is not finite",
                _engine.NONFINITE_UPDATE: "the update would make a parameter non-finite",
                }.get(status, f"status {status}")
        return (f"training diverged{where}: {what} (loss {loss}); the parameters of the "
                "last finite step are kept. Lower the learning rate or scale the inputs.")

    # ------------------------------------------------------------ fit
    def fit(self, X, y, *, epochs=10, batch_size=32, optimizer=None, shuffle=True,
            validation_data=None, progress=None, callbacks=None, sample_weight=None) -> History:
        """Train with mini-batch gradient descent.

        Parameters
        ----------
        X : array-like, shape (n, in_features)
        y : array-like
            Class labels ``(n,)`` for softmax cross-entropy; ``(n, out)``
            (or ``(n,)`` when ``out == 1``) for the other losses.
        epochs : int, default 10
        batch_size : int, default 32
            The last batch of an epoch may be smaller.
        optimizer : Optimizer or str, optional
            ``None`` means ``Adam(lr=1e-3)``; a name that optimizer with its
            defaults.  Either is a new optimizer for this call, so Adam's
            moments and step count start afresh at every ``fit``; to carry
            them from one call to the next, pass the same
            :class:`Optimizer` object each time.
        shuffle : bool, default True
            Reshuffle the rows every epoch (seeded by the network's seed).
        validation_data : tuple (X_val, y_val), optional
            Adds ``val_loss`` (and ``val_accuracy``) to the logs.
        progress : bool, optional
            Show a progress bar; ``None`` shows one when stderr is a terminal.
        callbacks : list of callables ``callback(epoch, logs)``, optional
            A callback returning ``True`` (or NumPy's ``True``) stops
            training.
        sample_weight : array-like, shape (n,), optional
            Non-negative weights; each batch's loss is ``Σ wᵢ lᵢ / Σ wᵢ``, so
            their scale does not matter (weights too small or too large for
            the dtype are scaled by a power of two, which changes nothing
            else); they are held in the network's dtype, so a weight more
            than its range (float32: about 1e38) below the largest counts
            as 0.

        Returns
        -------
        History
            Also kept as ``net.history``.

        Raises
        ------
        DivergenceError
            When a batch's loss or gradient is not finite; the network
            keeps the parameters of the last finite step, unless a callback's
            ``on_train_end`` (which runs first) puts back others, as
            :class:`EarlyStopping` with ``restore_best`` does.
        FloatingPointError
            When the network's outputs on ``validation_data`` overflow its
            dtype (see :meth:`evaluate`).
        """
        epochs = positive_int("epochs", epochs)
        batch_size = positive_int("batch_size", batch_size)
        _check_flag("shuffle", shuffle)
        if progress is not None:
            _check_flag("progress", progress)
        X = check_inputs(X, self.in_features, self.dtype, "X", self._steps_all_finite(batch_size))
        n = X.shape[0]
        check_nonempty(n)
        y = self._targets(y, n)   # labels: fit's own copy, read in place by its C calls
        w = check_sample_weight(sample_weight, n, self.dtype)
        val = self._validation(validation_data)
        optimizer = get_optimizer(optimizer)
        callbacks = self._callbacks(callbacks)
        batch_size = min(batch_size, n)
        n_batches = -(-n // batch_size)
        total = epochs * n_batches
        # Without callbacks or validation nothing runs between epochs, and
        # a C call may span them: a small data set's epochs (the digits'
        # take half a millisecond) then go by without the Python around
        # each.  The first call stays within the first epoch; the next are
        # sized by the pace of the one before, Python work included, and
        # hold at most _ORDER_BYTES of shuffles.
        spans = not callbacks and val is None
        most = total if spans else n_batches
        per_call = max(1, min(n_batches, int(_WORK_PER_CALL // (6 * batch_size * self.num_parameters))))
        span_epochs = max(1, _ORDER_BYTES // (8 * n)) if shuffle else total
        bar = self._progress_bar(progress, total)

        history = History()
        self.history = history
        logs = {}
        try:
            for cb in callbacks:
                if hasattr(cb, "set_network"):
                    cb.set_network(self)
            with self._lock:
                self._engine.reserve(batch_size)
            shuffles = _Shuffles(self._rng, n) if shuffle else None
            log = _EpochLosses(n, batch_size, n_batches)
            progress = np.zeros(1, dtype=np.int64)   # batches each call completed
            stop = False
            while log.batches < total and not stop:
                begun = time.perf_counter()
                g = log.batches     # batch g is batch g % n_batches of epoch g // n_batches
                e0 = g // n_batches
                count = min(per_call, (total if spans else (e0 + 1) * n_batches) - g,
                            (e0 + span_epochs) * n_batches - g)
                # The History and the record as the call begins, for Ctrl-C.
                kept_epochs, kept_pieces = len(history.epoch), list(log._pieces)
                progress[0], losses = 0, None
                try:
                    order, first = (shuffles.cover(e0, (g + count - 1) // n_batches)
                                    if shuffle else (None, 0))
                    losses = np.empty(count)
                    with self._lock:
                        state = optimizer._state_for(self)
                        self._set_threads(batch_size, fused=state.fuses)
                        # Steps may run on cbp's pool: then so does the
                        # validation (see _evaluate).
                        steps_on_pool = self._engine.pool
                        start = time.perf_counter()
                        done, status = self._engine.train_batches(
                            state, X, y, w, order, g - first * n_batches, batch_size, count,
                            losses, True, progress)
                        seconds = time.perf_counter() - start
                    for epoch, loss in log.add(losses[:done]):
                        logs = {"loss": loss}
                        if val is not None:
                            logs.update({f"val_{key}": v for key, v in
                                         self._evaluate(*val, pool=steps_on_pool).items()})
                        history._append(epoch, dict(logs))
                        for cb in callbacks:
                            stop = _is_true(cb(epoch, logs)) or stop
                except BaseException:
                    # Ctrl-C (or an error) around a call: the epochs it
                    # finished still reach the History when they need
                    # nothing else, and the generator is rewound (also
                    # when the call's shuffles were being drawn).
                    # Rebuilt from the call's start: the interrupt may fall
                    # between an epoch's record and its History entry (an
                    # epoch went missing from the middle of the History),
                    # and the call's own count (progress), not the engine's,
                    # which another thread's fit of this network also
                    # moves, says how many batches it completed.
                    if spans and losses is not None:
                        finished = min(int(progress[0]), count)
                        history._truncate(kept_epochs)
                        log._restart(g, kept_pieces)
                        for epoch, loss in log.add(losses[:finished]):
                            history._append(epoch, {"loss": loss})
                    if shuffle:
                        shuffles.rewind(log.batches // n_batches + 1)
                    raise
                if bar is not None and done:
                    bar.update(done)
                    bar.set_postfix(epoch=(g + done - 1) // n_batches,
                                    loss=f"{losses[done - 1]:.4g}")
                if status != _engine.OK:
                    g += done
                    if shuffle:
                        shuffles.rewind(g // n_batches + 1)
                    message = self._divergence_message(
                        status, losses[done],
                        f" at epoch {g // n_batches}, batch {g % n_batches}")
                    # Training ends here too: EarlyStopping(restore_best)
                    # puts back its best epoch's parameters.
                    if any(hasattr(cb, "on_train_end") for cb in callbacks):
                        message += (" Then the callbacks' on_train_end ran (EarlyStopping "
                                    "with restore_best puts back its best epoch).")
                    self._train_end(callbacks, logs)
                    raise DivergenceError(message)
                if spans:
                    seconds = time.perf_counter() - begun
                per_call = _next_call_batches(per_call, count, seconds, most)
        finally:
            if bar is not None:
                bar.close()
        self._train_end(callbacks, logs)
        return history

    def _steps_all_finite(self, batch_size):
        """fit's check that X is finite, made on the threads of its steps
        of `batch_size` rows (Engine.all_finite: a large X is read by two
        or more cores instead of one).  Before the optimizer is known, as
        for one that stores its gradient: the pool wherever the steps may
        take it (if it is free), else OpenBLAS's threads."""
        def all_finite(a):
            rows = max(1, min(batch_size, a.shape[0]))
            work = 6 * rows * self.num_parameters
            with self._lock:
                return self._engine.all_finite(a, _threads.threads_for(work),
                                               _threads.pool_for(work, False), rows, True)

        return all_finite

    @staticmethod
    def _train_end(callbacks, logs):
        for cb in callbacks:
            if hasattr(cb, "on_train_end"):
                cb.on_train_end(logs)

    def _validation(self, validation_data):
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)):
            raise ValueError(f"validation_data must be a pair (X_val, y_val), got "
                             f"{type(validation_data).__name__}")
        if len(validation_data) != 2:
            raise ValueError(f"validation_data must be a pair (X_val, y_val), got a "
                             f"{type(validation_data).__name__} of length {len(validation_data)}")
        Xv = self._inputs(validation_data[0], "validation X")
        check_nonempty(Xv.shape[0], "validation X")
        return Xv, self._targets(validation_data[1], Xv.shape[0], "validation y")

    @staticmethod
    def _callbacks(callbacks):
        if callbacks is None:
            return []
        if callable(callbacks):
            callbacks = [callbacks]
        if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
            raise TypeError(f"callbacks must be a callable or a list of callables, got "
                            f"{type(callbacks).__name__}")
        callbacks = list(callbacks)
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"a callback must be callable(epoch, logs), got "
                                f"{type(cb).__name__}")
        return callbacks

    @staticmethod
    def _progress_bar(progress, total):
        if progress is None:
            progress = sys.stderr is not None and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        if not progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="batch", leave=True, dynamic_ncols=True)

    # ------------------------------------------------------------ inference
    def predict(self, X) -> np.ndarray:
        """Predictions: class labels for classification losses, values for
        ``mse``.

        Parameters
        ----------
        X : array-like, shape (n, in_features)

        Returns
        -------
        ndarray
            Softmax cross-entropy: the argmax, ``int64`` of shape ``(n,)``.
            Binary cross-entropy: ``sigmoid > 0.5`` per output, ``int64``
            of shape ``(n, out)``.  ``mse``: the outputs, shape
            ``(n, out)``.  With one output, binary cross-entropy and
            ``mse`` give shape ``(n,)``.

        Raises
        ------
        FloatingPointError
            When the computation overflows the network's dtype on these
            inputs, at any layer (an overflowed hidden layer is reported,
            not saturated away by its activation).
        """
        X = self._inputs(X, inference=True)
        if self.loss == "softmax_cross_entropy":
            return self._forward(X, _engine.OUTPUT_RAW).argmax(axis=1).astype(np.int64)
        out = self._forward(X, _engine.OUTPUT_RAW)
        if self.loss == "binary_cross_entropy":
            out = (out > 0).astype(np.int64)  # sigmoid(z) > 0.5  ⇔  z > 0
        return out[:, 0] if self.out_features == 1 else out

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        X : array-like, shape (n, in_features)

        Returns
        -------
        ndarray, shape (n, out)
            Softmax rows (summing to 1) for softmax cross-entropy,
            element-wise sigmoid for binary cross-entropy.

        Raises
        ------
        ValueError
            When the network's loss is ``mse``.
        FloatingPointError
            When the computation overflows the network's dtype on these
            inputs, at any layer (an overflowed hidden layer is reported,
            not saturated away by its activation).
        """
        if self.loss not in CLASSIFICATION_LOSSES:
            raise ValueError(f"predict_proba needs a classification loss, this network's "
                             f"loss is {self.loss!r}")
        transform = (_engine.OUTPUT_SOFTMAX if self.loss == "softmax_cross_entropy"
                     else _engine.OUTPUT_SIGMOID)
        return self._forward(self._inputs(X, inference=True), transform)

    def evaluate(self, X, y, sample_weight=None) -> dict:
        """Loss (and accuracy) on a data set.

        Parameters
        ----------
        X : array-like, shape (n, in_features)
        y : array-like
            Targets, as for :meth:`fit`.
        sample_weight : array-like, shape (n,), optional
            Weights of the loss and of the accuracy.

        Returns
        -------
        dict
            ``{"loss": …, "accuracy": …}``; accuracy for classification
            losses only (for binary cross-entropy over all elements).

        Raises
        ------
        ValueError
            Bad X, y or sample_weight, or weights that sum to 0.
        FloatingPointError
            When the network's outputs, or the loss, overflow its dtype on
            these inputs (or its parameters are not finite).
        """
        X = self._inputs(X, inference=True)
        check_nonempty(X.shape[0])
        y = self._targets(y, X.shape[0])
        w = check_sample_weight(sample_weight, X.shape[0], self.dtype)
        return self._evaluate(X, y, w)

    def _evaluate(self, X, y, w=None, pool=False):
        """pool: fit's validation, run on cbp's pool when its training
        steps are (so that OpenBLAS's threads, whose workers would spin
        into the next epoch, stay asleep; see docs/threads.md)."""
        outputs = np.empty((X.shape[0], self.out_features), dtype=self.dtype)
        if w is not None and not np.sum(w, dtype=np.float64) > 0:
            raise ValueError("sample_weight sums to 0: the weighted loss and accuracy "
                             "(Σ wᵢ lᵢ / Σ wᵢ) are undefined; give some row a positive weight")
        with self._lock:
            self._reserve(X.shape[0])
            self._set_threads(X.shape[0], 2)
            if pool:
                self._engine.pool = pool  # the steps' rule (see _set_threads)
                self._threads_key = None  # the next call decides afresh
            loss, _ = self._engine.loss(X, y, w, False, outputs, bool(pool))
        self._check_outputs(outputs)
        if not np.isfinite(loss):
            raise FloatingPointError(f"the loss on these data is not finite: "
                                     f"{self._overflow_cause()}")
        result = {"loss": float(loss)}
        if self.loss == "softmax_cross_entropy":
            correct = outputs.argmax(axis=1) == y
        elif self.loss == "binary_cross_entropy":
            correct = (outputs > 0) == (y > 0.5)
        else:
            return result
        if w is not None:
            rows = correct.reshape(len(y), -1).mean(axis=1)
            w64 = w.astype(np.float64)  # float32 sums could round past 1
            total = float(w64.sum())
            result["accuracy"] = min(1.0, float(np.sum(rows * w64)) / total)
        else:
            result["accuracy"] = float(correct.mean())
        return result

    # ------------------------------------------------------------ persistence
    def get_config(self) -> dict:
        """The architecture as JSON-compatible data."""
        return {"layers": [layer.get_config() for layer in self._layers],
                "loss": self.loss, "dtype": self.dtype.name, "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict) -> "Network":
        """A new network with the architecture of :meth:`get_config`'s
        output; its parameters are freshly initialised from the seed.

        Parameters
        ----------
        config : dict

        Returns
        -------
        Network
        """
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict (as get_config returns), got "
                            f"{type(config).__name__}")
        missing = [key for key in ("layers", "loss", "dtype") if key not in config]
        if missing:
            raise ValueError(f"config lacks {', '.join(map(repr, missing))}: expected the keys "
                             f"of get_config() (layers, loss, dtype, seed), got {sorted(config)}")
        specs = config["layers"]
        if isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, Iterable):
            raise ValueError(f"config['layers'] must be a non-empty list of layer configs, "
                             f"got {specs!r}")
        specs = list(specs)
        if not specs:
            raise ValueError("config['layers'] must be a non-empty list of layer configs, "
                             "got an empty one")
        keys = ("in_features", "out_features", "activation")
        for i, c in enumerate(specs):
            if not isinstance(c, Mapping):
                raise ValueError(f"config['layers'][{i}] must be a dict (as Dense.get_config "
                                 f"returns), got {type(c).__name__} {c!r}")
            missing = [key for key in keys if key not in c]
            if missing:
                raise ValueError(f"config['layers'][{i}] lacks {', '.join(map(repr, missing))}; "
                                 f"expected in_features, out_features and activation")
        layers = [Dense(c["in_features"], c["out_features"], activation=c["activation"])
                  for c in specs]
        return cls(layers, loss=config["loss"], dtype=config["dtype"], seed=config.get("seed"))

    def save(self, path) -> None:
        """Write the network to `path` (a ``.npz`` file: the architecture
        as JSON and the parameters); the target is replaced atomically.

        Parameters
        ----------
        path : str or os.PathLike
            Written exactly there (no extension is added).
        """
        from .io import save

        save(self, path)

    @staticmethod
    def load(path) -> "Network":
        """Read a network written by :meth:`save` (never unpickles); the
        same as :func:`cbp.load`.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        Network

        Raises
        ------
        FileNotFoundError
            When `path` does not exist.
        ModelFormatError
            When the file is truncated, altered, of another version, or not
            a cbp model.
        """
        from .io import load

        return load(path)

    def copy(self) -> "Network":
        """An independent copy: same architecture, parameters and RNG state."""
        with self._lock:
            clone = Network.from_config(self.get_config())
            clone._params[...] = self._params
            clone._rng = _copy.deepcopy(self._rng)
        return clone

    # ------------------------------------------------------------ display
    def summary(self) -> str:
        """A table of the layers, their shapes and parameter counts."""
        rows = [("#", "layer", "activation", "W shape", "b shape", "params")]
        for i, layer in enumerate(self._layers):
            rows.append((str(i + 1), "Dense", layer.activation,
                         f"({layer.out_features}, {layer.in_features})",
                         f"({layer.out_features},)", f"{layer.num_parameters:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        fmt = lambda r: "  ".join(v.rjust(w) if c in (0, 5) else v.ljust(w)
                                  for c, (v, w) in enumerate(zip(r, widths)))
        rule = "-" * len(fmt(rows[0]))
        lines = [f"Network: {self.in_features} inputs -> {self.out_features} outputs, "
                 f"loss {self.loss}, {self.dtype.name}", rule, fmt(rows[0]), rule]
        lines += [fmt(r) for r in rows[1:]]
        lines += [rule, f"Total parameters: {self.num_parameters:,}"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Network({self.layers!r}, loss={self.loss!r}, dtype={self.dtype.name!r}, "
                f"seed={self.seed!r})")

    def __reduce__(self):
        # Pickling (copy.deepcopy, multiprocessing, the scikit-learn
        # wrappers) rebuilds from the architecture and the parameters.
        with self._lock:
            return (_rebuild, (self.get_config(), self._params.copy(),
                               self._rng.bit_generator.state))


def _rebuild(config, params, rng_state):
    net = Network.from_config(config)
    net._params[...] = params
    net._rng.bit_generator.state = rng_state
    return net
