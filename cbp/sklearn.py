"""scikit-learn estimators on the cbp engine: :class:`MLPClassifier` and
:class:`MLPRegressor`.

They take the constructor arguments of ``sklearn.neural_network``'s
estimators of the same names and behave as those (``fit``,
``partial_fit``, ``predict``, ``predict_proba``, ``score``, ``coefs_``,
``loss_curve_``, …), so switching is a one-line import change::

    from cbp.sklearn import MLPClassifier   # was: from sklearn.neural_network import …

    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
    clf.fit(X_train, y_train).score(X_test, y_test)

scikit-learn is an optional dependency (``pip install cbp[sklearn]``);
``import cbp`` never imports it, this module does.

How scikit-learn's training maps onto cbp
-----------------------------------------
Each epoch is one or two calls of :meth:`cbp.Network.fit` (the full
mini-batches, then the last, smaller one), so the mini-batches run in C.
The rest follows scikit-learn's code step by step: the same Glorot-uniform
initialisation drawn from the same ``random_state`` (weights *and* biases),
the same per-epoch shuffle of the sample order (hence the same
mini-batches), the same early-stopping split, the same stopping rule on
``tol`` / ``n_iter_no_change``, the same ``loss_curve_`` values.

scikit-learn minimises, per mini-batch ``B``,
``L = Σ_{i∈B} wᵢ lᵢ / Σ_{i∈B} wᵢ + α/(2 Σ_{i∈B} wᵢ) · Σ‖W‖²``
with ``lᵢ`` the cross-entropy (summed over the outputs for binary and multi-label targets)
or half the squared error summed over the outputs.  cbp's losses average
over the outputs instead (``binary_cross_entropy``, ``mse``), which scales
the gradient by a constant ``c`` (``1`` for softmax, ``1/k`` for ``k``
sigmoid outputs, ``2/k`` for ``k`` regression outputs); the wrappers
compensate exactly: the optimizer's L2 term is ``weight_decay = c·α/|B|``,
SGD's learning rate is divided by ``c`` and Adam's ``ε`` is multiplied by
``c``.  scikit-learn's SGD velocity holds learning-rate-scaled steps,
PyTorch's momentum buffer raw gradients: when an ``invscaling`` or
``adaptive`` schedule changes the learning rate, the wrappers rescale the
buffer so that both carry the same momentum.  With ``dtype="float64"``,
``alpha=0`` and SGD, the weights equal scikit-learn's to rounding.

Differences from scikit-learn that remain (all small):

* ``alpha`` is applied through the optimizer's ``weight_decay``, which
  decays the biases (``intercepts_``) as well as the weights; scikit-learn
  penalises the weights only.  With ``sample_weight`` the decay uses the
  mean weight of the rows of a call rather than each batch's own sum.
* Adam's ``ε``: scikit-learn adds it to ``√v``, PyTorch (and cbp) to the
  bias-corrected ``√v / √(1 − β₂ᵗ)``.  The two agree for
  ``ε_cbp = ε / √(1 − β₂ᵗ)``, which changes every step; the wrappers set,
  per call, the mean of that over the call's steps.  Matters only for
  weights whose gradients are of the order of ``ε`` (e.g. of inputs that
  are almost always zero).
* The ``loss_curve_`` term ``α/2·‖W‖²/|B|`` uses ``‖W‖²`` interpolated
  between the start and the end of each call (exact when an epoch is one
  batch, e.g. ``n_samples ≤ 200`` with ``batch_size="auto"``).
* Computation is in ``dtype`` (``float32`` by default; ``dtype="float64"``
  computes as scikit-learn does on float64 input).  ``coefs_`` and
  ``intercepts_`` have that dtype; ``predict_proba`` and regression
  predictions are float32 for float32 input and float64 otherwise, as in
  scikit-learn.  Sparse input is accepted and densified.
* ``solver="lbfgs"`` and ``MLPRegressor(loss="poisson")`` are not
  supported (``ValueError``); ``max_fun`` (an L-BFGS setting) is accepted
  and unused.
* A non-finite loss stops training at once with a ``ValueError`` (the
  network keeps its last finite parameters) instead of finishing the
  remaining epochs on NaN.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .errors import DivergenceError
from .network import Network
from .optim import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names → cbp's.
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_LEARNING_RATES = ("constant", "invscaling", "adaptive")
_DTYPES = ("float32", "float64")


# ---------------------------------------------------------------- validation
def _is_bool(v):
    return isinstance(v, (bool, np.bool_))


def _check_int(name, v, low):
    if _is_bool(v) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {low}, got {type(v).__name__} {v!r}")
    if v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")


def _check_real(name, v, low=None, high=None, low_open=False, high_open=False):
    if _is_bool(v) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        hi = "inf)" if high is None else f"{high}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo or '(-inf, '}{hi}, got {v!r}")


def _check_bool(name, v):
    if not _is_bool(v):
        raise TypeError(f"{name} must be True or False, got {type(v).__name__} {v!r}")


def _check_choice(name, v, choices):
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {v!r}")


def _hidden_sizes(value):
    sizes = [value] if not hasattr(value, "__iter__") or isinstance(value, str) else list(value)
    for s in sizes:
        if _is_bool(s) or not isinstance(s, numbers.Integral):
            raise TypeError(f"hidden_layer_sizes must hold integers, got {value!r}")
        if s <= 0:
            raise ValueError(f"hidden_layer_sizes must be > 0, got {value!r}")
    return [int(s) for s in sizes]


def _squared_weights(net):
    """Σ‖W‖² over the layers' weights (not the biases), in float64."""
    total = 0.0
    for layer in net.layers:
        w = layer.W.ravel().astype(np.float64, copy=False)
        total += float(w @ w)
    return total


def _adam_eps_factor(beta_2, t0, steps):
    """Mean of 1/√(1 − β₂ᵗ) over the steps t0+1 … t0+steps: PyTorch's ε that
    matches scikit-learn's, averaged over one call (see the module docstring)."""
    if beta_2 == 0:
        return 1.0
    t = np.arange(t0 + 1, t0 + steps + 1, dtype=np.float64)
    return float(np.mean(1.0 / np.sqrt(-np.expm1(t * np.log(beta_2)))))


# ---------------------------------------------------------------- base
class _BaseMLP(BaseEstimator):
    """The shared machinery; use :class:`MLPClassifier` or :class:`MLPRegressor`."""

    # ------------------------------------------------------------ fitted state
    def __sklearn_is_fitted__(self):
        return "_net" in self.__dict__

    def _fitted_net(self, name):
        net = self.__dict__.get("_net")
        if net is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}' "
                                 "(it exists once the estimator is fitted)")
        return net

    @property
    def coefs_(self):
        """Weight matrices in scikit-learn's ``(n_in, n_out)`` orientation:
        writable transposed views of the network's ``W``."""
        return [layer.W.T for layer in self._fitted_net("coefs_").layers]

    @coefs_.setter
    def coefs_(self, coefs):
        layers = self._fitted_net("coefs_").layers
        coefs = list(coefs)
        if len(coefs) != len(layers):
            raise ValueError(f"coefs_ must hold {len(layers)} matrices, got {len(coefs)}")
        for layer, c in zip(layers, coefs):
            c = np.asarray(c)
            if c.shape != layer.W.T.shape:
                raise ValueError(f"coefs_ shapes must be {[l.W.T.shape for l in layers]}, "
                                 f"got {c.shape}")
            layer.W.T[...] = c

    @property
    def intercepts_(self):
        """Bias vectors: writable views of the network's ``b``."""
        return [layer.b for layer in self._fitted_net("intercepts_").layers]

    @intercepts_.setter
    def intercepts_(self, intercepts):
        layers = self._fitted_net("intercepts_").layers
        intercepts = list(intercepts)
        if len(intercepts) != len(layers):
            raise ValueError(f"intercepts_ must hold {len(layers)} vectors, got {len(intercepts)}")
        for layer, b in zip(layers, intercepts):
            b = np.asarray(b)
            if b.shape != layer.b.shape:
                raise ValueError(f"intercepts_ shapes must be {[l.b.shape for l in layers]}, "
                                 f"got {b.shape}")
            layer.b[...] = b

    # ------------------------------------------------------------ parameters
    def _validate_params(self):
        _hidden_sizes(self.hidden_layer_sizes)
        _check_choice("activation", self.activation, tuple(_ACTIVATIONS))
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not supported by cbp.sklearn (cbp trains by "
                             "mini-batch gradient descent); use solver='adam' or 'sgd', or "
                             "sklearn.neural_network for L-BFGS")
        _check_choice("solver", self.solver, ("sgd", "adam"))
        _check_real("alpha", self.alpha, low=0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            if isinstance(self.batch_size, str):
                raise ValueError(f"batch_size must be 'auto' or a positive integer, "
                                 f"got {self.batch_size!r}")
            _check_int("batch_size", self.batch_size, 1)
        _check_choice("learning_rate", self.learning_rate, _LEARNING_RATES)
        _check_real("learning_rate_init", self.learning_rate_init, low=0, low_open=True)
        _check_real("power_t", self.power_t, low=0)
        _check_int("max_iter", self.max_iter, 1)
        _check_bool("shuffle", self.shuffle)
        _check_real("tol", self.tol, low=0)
        if not (_is_bool(self.verbose) or isinstance(self.verbose, numbers.Integral)):
            raise TypeError(f"verbose must be a bool or an integer, got {self.verbose!r}")
        _check_bool("warm_start", self.warm_start)
        _check_real("momentum", self.momentum, low=0, high=1)
        _check_bool("nesterovs_momentum", self.nesterovs_momentum)
        _check_bool("early_stopping", self.early_stopping)
        _check_real("validation_fraction", self.validation_fraction, low=0, high=1,
                    high_open=True)
        _check_real("beta_1", self.beta_1, low=0, high=1, high_open=True)
        _check_real("beta_2", self.beta_2, low=0, high=1, high_open=True)
        _check_real("epsilon", self.epsilon, low=0, low_open=True)
        if not (isinstance(self.n_iter_no_change, float) and self.n_iter_no_change == np.inf):
            _check_int("n_iter_no_change", self.n_iter_no_change, 1)
        _check_int("max_fun", self.max_fun, 1)
        self._dtype_name()

    def _dtype_name(self):
        try:
            name = np.dtype(self.dtype).name
        except TypeError:
            name = None
        if name not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return name

    # ------------------------------------------------------------ data
    def _check_X(self, X):
        """X for prediction (dense, C-contiguous, the network's dtype) and the
        dtype predictions are returned in (float32 input stays float32)."""
        X = validate_data(self, X, accept_sparse=["csr", "csc"],
                          dtype=(np.float64, np.float32), reset=False)
        out_dtype = X.dtype
        if sp.issparse(X):
            X = X.toarray()
        return np.ascontiguousarray(X, dtype=self._net.dtype), out_dtype

    def _check_sample_weight(self, sample_weight, X):
        if sample_weight is None:
            return None
        w = _check_sample_weight(sample_weight, X)
        if np.any(w < 0):
            row = int(np.flatnonzero(w < 0)[0])
            raise ValueError(f"sample_weight must be non-negative; row {row} holds "
                             f"{w[row].item()!r}")
        if not w.sum() > 0:
            raise ValueError("sample_weight must contain at least one positive weight, got "
                             "all zeros")
        return np.asarray(w, dtype=np.float64)

    # ------------------------------------------------------------ fit
    def _fit(self, X, y, sample_weight=None, incremental=False):
        self._validate_params()
        hidden = _hidden_sizes(self.hidden_layer_sizes)
        first_pass = not self.__sklearn_is_fitted__() or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = self._check_sample_weight(sample_weight, X)
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        n_features = X.shape[1]
        layer_units = [n_features] + hidden + [Y.shape[1]]
        if not first_pass:
            net = self._net
            current = [net.in_features] + [l.out_features for l in net.layers]
            if current != layer_units or net.dtype.name != self._dtype_name():
                raise ValueError(
                    f"the fitted network has layer sizes {current} ({net.dtype.name}), but "
                    f"hidden_layer_sizes, dtype and the data now ask for {layer_units} "
                    f"({self._dtype_name()}); refit without warm_start")
        self.n_outputs_ = Y.shape[1]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(Y, layer_units)
        self._fit_stochastic(X, Y, sample_weight, incremental)
        return self

    def _initialize(self, Y, layer_units):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = Y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        loss = {"softmax": "softmax_cross_entropy", "logistic": "binary_cross_entropy",
                "identity": "mse"}[self.out_activation_]
        net = Network.mlp(layer_units, activation=_ACTIVATIONS[self.activation], loss=loss,
                          dtype=self._dtype_name(), seed=0)
        # scikit-learn's initialisation (Glorot uniform, weights and biases),
        # drawn from the same random state in the same order.
        factor = 2.0 if self.activation == "logistic" else 6.0
        for layer, fan_in, fan_out in zip(net.layers, layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            layer.W.T[...] = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            layer.b[...] = self._random_state.uniform(-bound, bound, fan_out)
        self._net = net
        self.__dict__.pop("_optimizer", None)
        self._best_params = [p.copy() for p in net.parameters()]
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _loss_scales(self):
        """(c, r): cbp's loss gradient is c × scikit-learn's; scikit-learn's
        reported loss is r × cbp's (see the module docstring)."""
        k = self.n_outputs_
        if self._net.loss == "softmax_cross_entropy":
            return 1.0, 1.0
        if self._net.loss == "binary_cross_entropy":
            return 1.0 / k, float(k)
        return 2.0 / k, 0.5

    def _targets(self, Y):
        """scikit-learn's target matrix → the network's targets."""
        if self._net.loss == "softmax_cross_entropy":
            return Y.argmax(axis=1).astype(np.int64)
        return np.ascontiguousarray(Y, dtype=self._net.dtype)

    def _make_optimizer(self):
        c, _ = self._loss_scales()
        if self.solver == "sgd":
            return SGD(lr=self.learning_rate_init / c, momentum=float(self.momentum),
                       nesterov=bool(self.nesterovs_momentum) and self.momentum > 0)
        return Adam(lr=self.learning_rate_init, beta1=float(self.beta_1),
                    beta2=float(self.beta_2), eps=c * float(self.epsilon))

    def _fit_stochastic(self, X, Y, sample_weight, incremental):
        if not incremental or "_optimizer" not in self.__dict__:
            self._optimizer = self._make_optimizer()
            self._learning_rate = float(self.learning_rate_init)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            # don't stratify in multilabel classification (as scikit-learn)
            stratify = Y if (self._is_classifier() and self.n_outputs_ == 1) else None
            arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
            split = train_test_split(*arrays, random_state=self._random_state,
                                     test_size=self.validation_fraction, stratify=stratify)
            X_train, X_val, Y_train, Y_val = split[:4]
            w_train, w_val = (None, None) if sample_weight is None else split[4:]
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            y_val = self._decode(Y_val)
        else:
            X_train, Y_train, w_train = X, Y, sample_weight
            X_val = y_val = w_val = None

        T_train = self._targets(Y_train)
        n = X_train.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n))
        sample_idx = np.arange(n)

        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    # = sklearn.utils.shuffle(sample_idx, random_state=…), which
                    # scikit-learn calls here, without its per-call validation cost
                    perm = np.arange(n)
                    self._random_state.shuffle(perm)
                    sample_idx = sample_idx[perm]
                    Xe, Te = X_train[sample_idx], T_train[sample_idx]
                    we = None if w_train is None else w_train[sample_idx]
                else:
                    Xe, Te, we = X_train, T_train, w_train
                self.loss_ = self._epoch(Xe, Te, we, batch_size)
                self.n_iter_ += 1
                self.t_ += n
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))

                self._update_no_improvement_count(early_stopping, X_val, y_val, w_val)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._learning_rate = (float(self.learning_rate_init)
                                           / (self.t_ + 1) ** self.power_t)

                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = ("Validation score did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    if self._trigger_stopping(msg):
                        break
                    self._no_improvement_count = 0

                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and "
                                  "the optimization hasn't converged yet." % self.max_iter,
                                  ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")

        if early_stopping:
            for p, best in zip(self._net.parameters(), self._best_params):
                p[...] = best

    def _trigger_stopping(self, msg):
        """scikit-learn's optimizers: stop, or (SGD, adaptive) divide the
        learning rate by 5 until it falls to 1e-6."""
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._learning_rate <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._learning_rate /= 5.0
        if self.verbose:
            print(msg + " Setting learning rate to %f" % self._learning_rate)
        return False

    def _epoch(self, X, T, w, batch_size):
        """One epoch over the rows in order, in at most two calls of
        Network.fit (full batches, then the smaller last batch, each with
        its own L2 strength); returns scikit-learn's loss of the epoch."""
        net, opt = self._net, self._optimizer
        c, r = self._loss_scales()
        alpha = float(self.alpha)
        n = X.shape[0]
        n_full = (n // batch_size) * batch_size
        parts = [(0, n_full, batch_size)] if n_full else []
        if n_full < n:
            parts.append((n_full, n, n - n_full))
        state = opt._states.get(net)
        if isinstance(opt, SGD):
            lr = self._learning_rate / c
            if state is not None and lr != opt.lr:
                # scikit-learn's velocity holds lr-scaled steps, PyTorch's buffer
                # raw gradients: rescale it so the momentum carries over unchanged.
                momentum = state.buf1
                momentum *= opt.lr / lr
            opt.lr = lr
        data_loss = penalty = 0.0
        squared = _squared_weights(net) if alpha else 0.0
        for start, stop, size in parts:
            wpart = None if w is None else w[start:stop]
            mean_w = 1.0 if wpart is None else float(wpart.mean())
            opt.weight_decay = c * alpha / (size * mean_w) if mean_w > 0 else 0.0
            if isinstance(opt, Adam):
                # scikit-learn adds ε to √v, PyTorch to √v / √(1 − β₂ᵗ): use the
                # mean over the call's steps of the ε that makes them agree.
                steps = (stop - start) // size
                opt.eps = c * float(self.epsilon) * _adam_eps_factor(
                    float(self.beta_2), 0 if state is None else state.step, steps)
            try:
                history = net.fit(X[start:stop], T[start:stop], epochs=1, batch_size=size,
                                  optimizer=opt, shuffle=False, progress=False,
                                  sample_weight=wpart)
            except DivergenceError as exc:
                raise ValueError("Solver produced non-finite parameter weights. The input "
                                 "data may contain large values and need to be "
                                 "preprocessed.") from exc
            state = opt._states.get(net)
            data_loss += history.history["loss"][0] * (stop - start)
            if alpha:
                # Σ_b (|B|/n)·α/2·‖W_b‖²/Σ_{i∈B} wᵢ with ‖W_b‖² (before batch b)
                # interpolated linearly between the start and the end of the call.
                after = _squared_weights(net)
                n_batches = (stop - start) // size
                sums = (np.full(n_batches, float(size)) if wpart is None
                        else wpart.reshape(n_batches, size).sum(axis=1))
                before_each = squared + (after - squared) * np.arange(n_batches) / n_batches
                live = sums > 0  # a batch of zero weight changes nothing
                penalty += float(np.sum(size * 0.5 * alpha * before_each[live] / sums[live]))
                squared = after
        return r * data_loss / n + penalty / n

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, w_val):
        if early_stopping:
            score = self._score_val(X_val, y_val, w_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = [p.copy() for p in self._net.parameters()]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _score_val(self, X, y, sample_weight):
        y_pred = self._predict_dense(X, X.dtype)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return self._score_function(y, y_pred, sample_weight=sample_weight)

    # ------------------------------------------------------------ API
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classification) or real numbers (regression).
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    # ------------------------------------------------------------ pickling
    def __getstate__(self):
        state = dict(super().__getstate__())
        opt = state.pop("_optimizer", None)
        net = state.get("_net")
        if opt is not None and net is not None:
            # The optimizer's C state (momentum, Adam moments, step) travels
            # as arrays, so partial_fit continues where it stopped.
            saved = opt._states.get(net)
            state["_optimizer"] = (type(opt), opt.get_config(), None if saved is None else
                                   (saved.buf1.copy(), saved.buf2.copy(), int(saved.step)))
        return state

    def __setstate__(self, state):
        state = dict(state)
        packed = state.pop("_optimizer", None)
        super().__setstate__(state)
        if packed is not None:
            cls, config, saved = packed
            config = {k: v for k, v in config.items() if k != "name"}
            opt = cls(**config)
            if saved is not None:
                buf1, buf2, step = saved
                s = opt._state_for(self._net)
                s.buf1[...] = buf1
                s.buf2[...] = buf2
                s.step = step
            self._optimizer = opt

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


# ---------------------------------------------------------------- classifier
class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by cbp's compiled engine;
    a drop-in for :class:`sklearn.neural_network.MLPClassifier`.

    Optimises the log-loss with stochastic gradient descent or Adam.
    Multiclass targets use a softmax output; binary and multi-label
    (indicator matrix) targets one sigmoid output per label.

    Parameters
    ----------
    hidden_layer_sizes : array-like of int, default=(100,)
        The number of neurons of each hidden layer.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Activation of the hidden layers.
    solver : {'adam', 'sgd'}, default='adam'
        ``'lbfgs'`` is not supported (``ValueError``).
    alpha : float, default=1e-4
        Strength of the L2 penalty (see the module docstring: cbp's
        weight decay also reaches the biases).
    batch_size : int or 'auto', default='auto'
        ``'auto'`` means ``min(200, n_samples)``.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Learning-rate schedule of ``solver='sgd'``.
    learning_rate_init : float, default=1e-3
    power_t : float, default=0.5
        Exponent of ``'invscaling'``.
    max_iter : int, default=200
        Maximum number of epochs.
    shuffle : bool, default=True
        Shuffle the samples every epoch.
    random_state : int, RandomState instance or None, default=None
        Initialisation, shuffling and the early-stopping split.
    tol : float, default=1e-4
    verbose : bool or int, default=False
    warm_start : bool, default=False
        Start ``fit`` from the previous solution.
    momentum : float, default=0.9
        SGD momentum.
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data and stop when its
        accuracy stops improving.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's parameters.
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` before stopping.
    max_fun : int, default=15000
        Accepted for compatibility (an L-BFGS setting); unused.
    dtype : {'float32', 'float64'}, default='float32'
        Precision of the network.

    Attributes
    ----------
    classes_ : ndarray or list of ndarray
    loss_ : float
    best_loss_ : float or None
    loss_curve_ : list of float
    validation_scores_ : list of float or None
    best_validation_score_ : float or None
    t_ : int
    coefs_ : list of ndarray, the ith of shape (n_units[i], n_units[i+1])
    intercepts_ : list of ndarray, the ith of shape (n_units[i+1],)
    n_features_in_ : int
    feature_names_in_ : ndarray
    n_iter_ : int
    n_layers_ : int
    n_outputs_ : int
    out_activation_ : str

    Examples
    --------
    >>> import cbp
    >>> from cbp.sklearn import MLPClassifier
    >>> X, y = cbp.datasets.load_digits()
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), learning_rate_init=0.01, max_iter=20,
    ...                     random_state=0)
    >>> clf.fit(X[:1500], y[:1500]).score(X[1500:], y[1500:]) > 0.9
    True
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype

    @staticmethod
    def _is_classifier():
        return True

    def _output_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if sp.issparse(X):
            X = X.toarray()
        X = np.ascontiguousarray(X, dtype=self._dtype_name())
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    def _decode(self, Y):
        return self._label_binarizer.inverse_transform(Y)

    def _score_function(self, y, y_pred, sample_weight=None):
        return accuracy_score(y, y_pred, sample_weight=sample_weight)

    def _proba_dense(self, X, out_dtype):
        proba = self._net.predict_proba(X)
        return proba.astype(out_dtype, copy=False)

    def _predict_dense(self, X, out_dtype):
        y_pred = self._proba_dense(X, out_dtype)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def predict(self, X) -> np.ndarray:
        """Predicted classes.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray
            Shape (n_samples,), or (n_samples, n_classes) for multi-label
            targets.
        """
        check_is_fitted(self)
        X, out_dtype = self._check_X(X)
        return self._predict_dense(X, out_dtype)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        check_is_fitted(self)
        X, out_dtype = self._check_X(X)
        y_pred = self._proba_dense(X, out_dtype)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X) -> np.ndarray:
        """``log(predict_proba(X))``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def partial_fit(self, X, y, sample_weight=None, classes=None) -> MLPClassifier:
        """One epoch over the given data, continuing from the current state.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array-like of shape (n_classes,), default=None
            All the labels of all calls; required on the first call.

        Returns
        -------
        self
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


# ---------------------------------------------------------------- regressor
class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by cbp's compiled engine;
    a drop-in for :class:`sklearn.neural_network.MLPRegressor`.

    Optimises the squared error with stochastic gradient descent or Adam;
    the output layer is linear, one output per target column.

    Parameters
    ----------
    loss : {'squared_error'}, default='squared_error'
        ``'poisson'`` is not supported (``ValueError``).  As in
        scikit-learn (since 1.7) this is the first positional argument:
        pass ``hidden_layer_sizes`` by keyword.
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose,
    warm_start, momentum, nesterovs_momentum, early_stopping,
    validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun, dtype
        As :class:`MLPClassifier`; with ``early_stopping`` the validation
        score is R².

    Attributes
    ----------
    As :class:`MLPClassifier`, without ``classes_``.

    Examples
    --------
    >>> import numpy as np
    >>> from cbp.sklearn import MLPRegressor
    >>> X = np.linspace(-1, 1, 200).reshape(-1, 1)
    >>> reg = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh",
    ...                    learning_rate_init=0.01, max_iter=500, random_state=0)
    >>> reg = reg.fit(X, X[:, 0] ** 2)
    >>> reg.score(X, X[:, 0] ** 2) > 0.9
    True
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype="float32"):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype

    def _validate_params(self):
        if self.loss == "poisson":
            raise ValueError("loss='poisson' is not supported by cbp.sklearn; "
                             "use loss='squared_error'")
        if not isinstance(self.loss, str):
            raise ValueError(f"loss must be 'squared_error', got {self.loss!r}; MLPRegressor's "
                             "first positional argument is `loss` (as in scikit-learn), pass "
                             "hidden_layer_sizes by keyword")
        _check_choice("loss", self.loss, ("squared_error",))
        super()._validate_params()

    @staticmethod
    def _is_classifier():
        return False

    def _output_activation(self):
        return "identity"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if sp.issparse(X):
            X = X.toarray()
        X = np.ascontiguousarray(X, dtype=self._dtype_name())
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _decode(self, Y):
        return Y

    def _score_function(self, y, y_pred, sample_weight=None):
        return r2_score(y, y_pred, sample_weight=sample_weight)

    def _predict_dense(self, X, out_dtype):
        y_pred = self._net.forward(X).astype(out_dtype, copy=False)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    def predict(self, X) -> np.ndarray:
        """Predicted values.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        check_is_fitted(self)
        X, out_dtype = self._check_X(X)
        return self._predict_dense(X, out_dtype)

    def partial_fit(self, X, y, sample_weight=None) -> MLPRegressor:
        """One epoch over the given data, continuing from the current state.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
