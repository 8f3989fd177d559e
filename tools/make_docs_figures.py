"""Draw the figures of docs/ that come from training runs.

    python tools/make_docs_figures.py      # writes docs/training-curve.png

Needs matplotlib (``pip install matplotlib``).  The training curve is
drawn by ``History.plot`` itself, so the figure shows what a user gets.
The benchmark chart (docs/benchmarks.png) is drawn by benchmarks/run.py.
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

try:
    import cbp
except ImportError:  # not installed: use the (built) source tree
    sys.path.insert(0, str(ROOT))
    import cbp


def training_curve(path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X, y = cbp.datasets.load_digits()
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:1437], order[1437:]          # the README's 80/20 split
    net = cbp.Network.mlp([64, 64, 10], activation="relu", seed=0)
    history = net.fit(X[train], y[train], epochs=40, batch_size=32,
                      optimizer=cbp.Adam(lr=1e-3), validation_data=(X[test], y[test]),
                      progress=False)

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    history.plot(keys=["loss", "val_loss"], ax=left)
    left.set_ylabel("softmax cross-entropy")
    left.set_yscale("log")
    left.set_title("loss")
    history.plot(keys=["val_accuracy"], ax=right)
    right.set_ylabel("accuracy on the held-out 20%")
    right.set_title("validation accuracy")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    fig.suptitle("cbp.Network.mlp([64, 64, 10]) on the bundled digits, Adam(lr=1e-3), "
                 "batch 32", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    final = {k: round(v[-1], 4) for k, v in history.history.items()}
    print(f"wrote {path.relative_to(ROOT)}; last epoch: {final}")


def main() -> int:
    training_curve(ROOT / "docs" / "training-curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
