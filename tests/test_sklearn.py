"""cbp.sklearn: scikit-learn's estimator checks, and behaviour against
scikit-learn's own MLPClassifier / MLPRegressor (the oracle: with
dtype="float64" and plain SGD the two give the same weights to rounding)."""
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network as sk_nn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import cbp  # noqa: E402
from cbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    X, y = cbp.datasets.load_digits()
    return X.astype(np.float64), y


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _params(est):
    return [np.array(p, copy=True) for p in est.coefs_ + est.intercepts_]


# ---------------------------------------------------------------- sklearn's checks
# max_iter=100 as scikit-learn's own test suite sets for its MLPs; float32 (the
# default) and float64.
CHECKED = [MLPClassifier(max_iter=100), MLPRegressor(max_iter=100),
           MLPClassifier(max_iter=100, dtype="float64"),
           MLPRegressor(max_iter=100, dtype="float64")]

_FLOAT32_RESOLUTION = (
    "float32 training: fitting with integer sample_weight and fitting on repeated rows "
    "agree to one float32 ulp (~6e-8), but the check compares predictions with "
    "rtol=1e-7, below float32's resolution; the float64 instance passes it")


def _expected_failed_checks(estimator):
    # Only the sample-weight equivalence checks, only in float32: the maths is
    # the same (the float64 instances pass), the rounding of summing w·g over
    # 15 weighted rows vs g over the repeated rows is not.
    if estimator.dtype == "float32":
        return {"check_sample_weight_equivalence_on_dense_data": _FLOAT32_RESOLUTION,
                "check_sample_weight_equivalence_on_sparse_data": _FLOAT32_RESOLUTION}
    return {}


@parametrize_with_checks(CHECKED, expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------- parity with sklearn
def test_digits_accuracy_matches_sklearn(digits):
    X, y = digits
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    kw = dict(hidden_layer_sizes=(64,), solver="adam", max_iter=50, random_state=0)
    ours = MLPClassifier(**kw).fit(Xtr, ytr).score(Xte, yte)
    theirs = sk_nn.MLPClassifier(**kw).fit(Xtr, ytr).score(Xte, yte)
    assert ours > 0.9
    assert abs(ours - theirs) <= 0.02


@pytest.mark.parametrize("kw", [
    dict(solver="sgd"),
    dict(solver="sgd", momentum=0.5, nesterovs_momentum=False, batch_size=64,
         activation="logistic"),
    dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.05, activation="tanh"),
    dict(solver="adam", epsilon=1e-30),
], ids=["sgd", "sgd-momentum-logistic", "sgd-invscaling", "adam"])
def test_float64_training_reproduces_sklearn(digits, kw):
    # Same initialisation, same shuffles, same batches, same update rules:
    # same weights (alpha=0: cbp's weight decay would reach the biases; Adam
    # with a negligible epsilon, whose placement differs).
    X, y = digits
    kw = dict(hidden_layer_sizes=(32, 16), alpha=0.0, max_iter=8, random_state=0, **kw)
    ours = MLPClassifier(dtype="float64", **kw).fit(X, y)
    theirs = sk_nn.MLPClassifier(**kw).fit(X, y)
    for a, b in zip(_params(ours), _params(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_


def test_default_adam_with_alpha_close_to_sklearn(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(32,), max_iter=20, random_state=0)
    ours = MLPClassifier(dtype="float64", **kw).fit(X, y)
    theirs = sk_nn.MLPClassifier(**kw).fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, atol=1e-3)
    assert np.mean(ours.predict(X) == theirs.predict(X)) > 0.99


def test_multilabel_and_regression_scaling_reproduce_sklearn(digits):
    # binary_cross_entropy and mse average over the outputs in cbp and sum in
    # sklearn: the wrappers rescale the step so the weights still agree.
    X, y = digits
    kw = dict(hidden_layer_sizes=(16,), solver="sgd", alpha=0.0, max_iter=5, random_state=0)
    Y = np.column_stack([y % 2, y > 4, np.isin(y, [0, 6, 8, 9])]).astype(int)
    a = MLPClassifier(dtype="float64", **kw).fit(X, Y)
    b = sk_nn.MLPClassifier(**kw).fit(X, Y)
    for p, q in zip(_params(a), _params(b)):
        np.testing.assert_allclose(p, q, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-10)
    R = X @ np.random.default_rng(0).normal(size=(64, 3)) / 8
    a = MLPRegressor(dtype="float64", **kw).fit(X, R)
    b = sk_nn.MLPRegressor(**kw).fit(X, R)
    for p, q in zip(_params(a), _params(b)):
        np.testing.assert_allclose(p, q, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-10)


def test_sample_weight_and_early_stopping_reproduce_sklearn(digits):
    X, y = digits
    w = np.random.default_rng(0).integers(0, 4, size=len(y)).astype(float)
    kw = dict(hidden_layer_sizes=(16,), solver="sgd", alpha=0.0, max_iter=6, random_state=0,
              early_stopping=True, n_iter_no_change=2, tol=0.05)
    a = MLPClassifier(dtype="float64", **kw).fit(X, y, sample_weight=w)
    b = sk_nn.MLPClassifier(**kw).fit(X, y, sample_weight=w)
    assert a.n_iter_ == b.n_iter_
    assert a.validation_scores_ == pytest.approx(b.validation_scores_)
    assert a.best_validation_score_ == pytest.approx(b.best_validation_score_)
    assert a.best_loss_ is None
    for p, q in zip(_params(a), _params(b)):
        np.testing.assert_allclose(p, q, rtol=1e-8, atol=1e-10)


def test_stopping_rule_matches_sklearn(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(16,), max_iter=50, random_state=0, tol=10.0, n_iter_no_change=3)
    ours = MLPClassifier(**kw).fit(X, y)
    theirs = sk_nn.MLPClassifier(**kw).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ == 5
    assert ours.best_loss_ == pytest.approx(min(ours.loss_curve_))


def test_convergence_warning_when_max_iter_reached(digits):
    X, y = digits
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(X[:300], y[:300])


def test_adaptive_learning_rate_divides_by_five(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(8,), solver="sgd", learning_rate="adaptive", tol=10.0,
              n_iter_no_change=1, max_iter=6, random_state=0, alpha=0.0)
    ours = MLPClassifier(dtype="float64", **kw).fit(X[:400], y[:400])
    theirs = sk_nn.MLPClassifier(**kw).fit(X[:400], y[:400])
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    assert ours._learning_rate == pytest.approx(theirs._optimizer.learning_rate)


# ---------------------------------------------------------------- behaviour
def test_string_labels_multiclass_and_binary(digits):
    X, y = digits
    names = np.array(["zero", "one", "two"])
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, random_state=0)
    clf.fit(X[y < 3], names[y[y < 3]])
    assert list(clf.classes_) == ["one", "two", "zero"]
    pred = clf.predict(X[y < 3])
    assert pred.dtype.kind == "U" and set(pred) <= set(names)
    assert clf.score(X[y < 3], names[y[y < 3]]) > 0.9
    assert clf.predict_proba(X[:5]).shape == (5, 3)
    assert clf.out_activation_ == "softmax" and clf.n_outputs_ == 3

    yes_no = np.where(y >= 5, "yes", "no")
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, random_state=0).fit(X, yes_no)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X, yes_no) > 0.85


def test_multilabel_indicator_targets(digits):
    X, y = digits
    Y = np.column_stack([y % 2, y > 4, np.isin(y, [0, 6, 8, 9])]).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=40, random_state=0).fit(X, Y)
    ref = sk_nn.MLPClassifier(hidden_layer_sizes=(32,), max_iter=40, random_state=0).fit(X, Y)
    pred = clf.predict(X)
    assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}
    assert pred.dtype == ref.predict(X).dtype
    proba = clf.predict_proba(X)
    assert proba.shape == Y.shape and ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 3
    assert clf.score(X, Y) > 0.8  # subset accuracy


def test_regressor_single_and_multi_output():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(400, 3))
    Y = np.column_stack([np.sin(2 * X[:, 0]), X[:, 1] * X[:, 2]])
    reg = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", learning_rate_init=0.01,
                       max_iter=300, random_state=0)
    reg.fit(X, Y)
    assert reg.predict(X).shape == (400, 2) and reg.predict(X).dtype == np.float64
    assert reg.predict(X.astype(np.float32)).dtype == np.float32
    assert reg.score(X, Y) > 0.9
    reg.fit(X, Y[:, 0])
    assert reg.predict(X).shape == (400,) and reg.out_activation_ == "identity"
    assert reg.score(X, Y[:, 0]) > 0.9


def test_pipeline_with_standard_scaler(digits):
    X, y = digits
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    pipe = make_pipeline(StandardScaler(),
                         MLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=0))
    assert pipe.fit(Xtr, ytr).score(Xte, yte) > 0.9


def test_grid_search_over_alpha(digits):
    X, y = digits
    grid = GridSearchCV(MLPClassifier(hidden_layer_sizes=(8,), max_iter=10, random_state=0),
                        {"alpha": [1e-4, 1.0]}, cv=2)
    grid.fit(X[:400], y[:400])
    assert grid.best_params_["alpha"] in (1e-4, 1.0)
    assert len(grid.cv_results_["mean_test_score"]) == 2
    assert grid.best_estimator_.n_features_in_ == 64


def test_clone_gives_an_unfitted_copy_with_the_same_params(digits):
    X, y = digits
    clf = MLPClassifier(hidden_layer_sizes=(8,), alpha=0.5, dtype="float64", max_iter=3,
                        random_state=1).fit(X[:200], y[:200])
    new = clone(clf)
    assert new.get_params() == clf.get_params()
    assert not hasattr(new, "coefs_") and not hasattr(new, "n_iter_")
    new.fit(X[:200], y[:200])
    for a, b in zip(_params(new), _params(clf)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_pickle_round_trip(digits, solver):
    X, y = digits
    clf = MLPClassifier(hidden_layer_sizes=(16,), solver=solver, max_iter=5, random_state=0)
    clf.fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.loss_curve_ == clf.loss_curve_ and back.n_iter_ == clf.n_iter_
    # the optimizer state (Adam moments, momentum) travels too
    back.partial_fit(X, y)
    clf.partial_fit(X, y)
    for a, b in zip(_params(back), _params(clf)):
        np.testing.assert_array_equal(a, b)


def test_partial_fit(digits):
    X, y = digits
    clf = MLPClassifier(hidden_layer_sizes=(16,), dtype="float64", solver="sgd", alpha=0.0,
                        random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    ref = sk_nn.MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", alpha=0.0, random_state=0)
    classes = np.arange(10)
    for start in range(0, 1200, 400):
        clf.partial_fit(X[start:start + 400], y[start:start + 400], classes=classes)
        ref.partial_fit(X[start:start + 400], y[start:start + 400], classes=classes)
    assert clf.n_iter_ == 1 and clf.t_ == 1200 and len(clf.loss_curve_) == 3
    for a, b in zip(_params(clf), _params(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    # a batch with a subset of the classes is fine; an unknown class is not
    clf.partial_fit(X[y < 2], y[y < 2])
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X[:5], np.full(5, 11))

    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0)
    for _ in range(3):
        reg.partial_fit(X, y / 9.0)
    assert len(reg.loss_curve_) == 3 and reg.loss_curve_[-1] < reg.loss_curve_[0]


def test_partial_fit_refuses_early_stopping(digits):
    X, y = digits
    clf = MLPClassifier(early_stopping=True)
    with pytest.raises(ValueError, match="early_stopping"):
        clf.partial_fit(X, y, classes=np.arange(10))


def test_warm_start(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(16,), solver="sgd", alpha=0.0, max_iter=3, random_state=0,
              warm_start=True)
    ours = MLPClassifier(dtype="float64", **kw).fit(X, y)
    theirs = sk_nn.MLPClassifier(**kw).fit(X, y)
    before = _params(ours)
    ours.fit(X, y)
    theirs.fit(X, y)
    assert len(ours.loss_curve_) == 6
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    assert any(not np.array_equal(a, b) for a, b in zip(before, _params(ours)))
    with pytest.raises(ValueError, match="same classes"):
        ours.fit(X[y < 5], y[y < 5])
    # without warm_start, fit starts afresh
    cold = MLPClassifier(dtype="float64", **{**kw, "warm_start": False}).fit(X, y)
    cold.fit(X, y)
    assert len(cold.loss_curve_) == 3


def test_coefs_shapes_and_views(digits):
    X, y = digits
    clf = MLPClassifier(hidden_layer_sizes=(20, 12), max_iter=2, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(64, 20), (20, 12), (12, 10)]
    assert [b.shape for b in clf.intercepts_] == [(20,), (12,), (10,)]
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 10 and clf.n_features_in_ == 64
    assert clf.coefs_[0].dtype == np.float32
    ref = sk_nn.MLPClassifier(hidden_layer_sizes=(20, 12), max_iter=2, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [c.shape for c in ref.coefs_]
    # the arrays are the network's parameters: writing to them changes predictions
    clf.coefs_[-1][...] = 0
    clf.intercepts_[-1][...] = np.arange(10)
    assert (clf.predict(X) == 9).all()
    # and assigning whole lists copies into the network
    clf.coefs_ = [np.asarray(c) for c in ref.coefs_]
    clf.intercepts_ = ref.intercepts_
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    with pytest.raises(ValueError, match="shapes"):
        clf.coefs_ = [np.zeros((2, 2))] * 3


def test_invalid_parameters(digits):
    X, y = digits
    X, y = X[:50], y[:50]
    with pytest.raises(ValueError, match="lbfgs.*not supported"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="poisson"):
        MLPRegressor(loss="poisson").fit(X, y)
    with pytest.raises(ValueError, match="first positional argument is `loss`"):
        MLPRegressor((32,)).fit(X, y)
    for bad in [dict(alpha=-1.0), dict(activation="softmax"), dict(dtype="float16"),
                dict(batch_size=0), dict(max_iter=0), dict(validation_fraction=1.0),
                dict(learning_rate="cosine"), dict(hidden_layer_sizes=(10, 0))]:
        with pytest.raises(ValueError):
            MLPClassifier(**bad).fit(X, y)
    with pytest.raises(TypeError):
        MLPClassifier(shuffle="yes").fit(X, y)


def test_verbose_prints_the_loss(digits, capsys):
    X, y = digits
    MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, verbose=True, random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Iteration 2, loss = " in out


def test_import_cbp_does_not_import_sklearn():
    code = ("import sys, cbp; "
            "bad = [m for m in sys.modules if m == 'sklearn' or m.startswith('sklearn.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
