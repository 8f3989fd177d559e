"""cbp ``fit`` against scikit-learn's ``MLPClassifier`` on the bundled digits.

Same network (64-64-10, ReLU hidden), same optimizer and hyperparameters,
batch 32, the same number of epochs, both shuffling every epoch, on the
same 80/20 split.  The default optimizer is Adam (lr 1e-3, betas
0.9/0.999, eps 1e-8: the defaults of both libraries, and cbp ``fit``'s
default); ``optimizer="sgd"`` uses plain SGD (lr 0.1, momentum 0).  No
weight decay in either.  Each round trains a fresh
model with each library (initialisation included, as a user's fit is);
the epoch time is fit time / epochs (cbp's includes building the
network, which initialises it as scikit-learn's ``fit`` does).
"""
from __future__ import annotations

import time
import warnings

import numpy as np

HIDDEN = 64
BATCH = 32
LR = {"adam": 1e-3, "sgd": 0.1}


def split(seed=0):
    import cbp

    X, y = cbp.datasets.load_digits()
    order = np.random.default_rng(seed).permutation(len(y))
    n_train = int(round(0.8 * len(y)))
    train, test = order[:n_train], order[n_train:]
    return X[train], y[train], X[test], y[test]


def _cbp(data, epochs, optimizer):
    import cbp

    Xtr, ytr, Xte, yte = data
    t0 = time.perf_counter()   # building the network initialises it, as sklearn's fit does
    net = cbp.Network.mlp([Xtr.shape[1], HIDDEN, 10], activation="relu", seed=0)
    opt = (cbp.Adam(lr=LR["adam"]) if optimizer == "adam" else
           cbp.SGD(lr=LR["sgd"], momentum=0.0))
    net.fit(Xtr, ytr, epochs=epochs, batch_size=BATCH, optimizer=opt,
            shuffle=True, progress=False)
    elapsed = time.perf_counter() - t0
    return elapsed / epochs, net.evaluate(Xte, yte)["accuracy"]


def _sklearn(data, epochs, optimizer):
    from sklearn.neural_network import MLPClassifier

    Xtr, ytr, Xte, yte = data
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), activation="relu", solver=optimizer,
                        learning_rate_init=LR[optimizer], learning_rate="constant",
                        momentum=0.0, nesterovs_momentum=False,
                        beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                        alpha=0.0, batch_size=BATCH, max_iter=epochs, shuffle=True,
                        tol=0.0, n_iter_no_change=10**9, early_stopping=False,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        clf.fit(Xtr, ytr)
        elapsed = time.perf_counter() - t0
    return elapsed / epochs, float(clf.score(Xte, yte))


def run(rounds=5, epochs=30, optimizer="adam", gap=0.2):
    """Median epoch seconds and test accuracy of each library, interleaved."""
    data = split()
    contenders = {"cbp_fit": _cbp}
    try:
        import sklearn  # noqa: F401

        contenders["sklearn_fit"] = _sklearn
    except ImportError:
        print("digits: scikit-learn not installed, cbp only")
    for fn in contenders.values():   # warm-up: imports, first-call costs
        fn(data, 1, optimizer)
    times = {k: [] for k in contenders}
    accuracy = {}
    for _ in range(rounds):
        for name, fn in contenders.items():
            time.sleep(gap)   # let the other library's BLAS threads stop spinning
            t, acc = fn(data, epochs, optimizer)
            times[name].append(t)
            accuracy[name] = acc
    result = {
        "setup": {"sizes": [data[0].shape[1], HIDDEN, 10],
                  "optimizer": {"adam": "Adam", "sgd": "SGD"}[optimizer],
                  "lr": LR[optimizer], "batch_size": BATCH, "epochs": epochs, "rounds": rounds,
                  "n_train": len(data[1]), "n_test": len(data[3])},
        "epoch_ms": {k: float(np.median(v)) * 1e3 for k, v in times.items()},
        "epoch_ms_all": {k: [t * 1e3 for t in v] for k, v in times.items()},
        "test_accuracy": accuracy,
    }
    if "sklearn_fit" in times:
        result["speedup"] = result["epoch_ms"]["sklearn_fit"] / result["epoch_ms"]["cbp_fit"]
    return result
