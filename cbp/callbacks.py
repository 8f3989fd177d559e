"""Training history and callbacks.

A callback is any callable ``callback(epoch, logs)``; returning ``True``
stops training.  Before the first epoch ``fit`` calls
``callback.set_network(net)`` on each callback that has it, and when
training ends ``callback.on_train_end(logs)`` (as Keras' ``set_model`` and
``on_train_end``).
"""
from __future__ import annotations

import math

__all__ = ["History", "EarlyStopping"]


class History:
    """Per-epoch records of a ``fit``: ``history`` maps ``"loss"`` (and
    ``"val_loss"``, ``"val_accuracy"`` with validation data) to lists."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def _append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def plot(self, keys=None, ax=None):
        """Plot the training curves with matplotlib (an optional
        dependency); returns the axes."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from exc
        if ax is None:
            _, ax = plt.subplots()
        for key in keys or sorted(self.history):
            ax.plot(self.epoch, self.history[key], label=key)
        ax.set_xlabel("epoch")
        ax.legend()
        return ax

    def __repr__(self) -> str:
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


class EarlyStopping:
    """Stop training when a monitored quantity stops improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A key of the epoch logs.  Keys ending in ``loss`` are minimised,
        keys containing ``accuracy`` are maximised.
    patience : int, default 5
        Epochs in a row without an improvement larger than ``min_delta``
        after which training stops.
    min_delta : float, default 0.0
    restore_best : bool, default True
        When training ends (stopped early or not), put back the parameters
        of the best epoch.
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=True):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a string, got {type(monitor).__name__}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        min_delta = float(min_delta)
        if not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.restore_best = bool(restore_best)
        self.maximize = "accuracy" in monitor or monitor.endswith("acc")
        self._network = None
        self._reset()

    def _reset(self):
        self.best = -math.inf if self.maximize else math.inf
        self.best_epoch = None
        self.wait = 0
        self.stopped_epoch = None
        self._best_parameters = None

    def set_network(self, network) -> None:
        self._network = network
        self._reset()

    def _improved(self, value: float) -> bool:
        if self.maximize:
            return value - self.min_delta > self.best
        return value + self.min_delta < self.best

    def __call__(self, epoch: int, logs: dict) -> bool:
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which is not in the "
                             f"epoch logs (available: {', '.join(sorted(logs))}); pass "
                             f"validation_data to fit, or monitor='loss'")
        value = float(logs[self.monitor])
        self.wait += 1
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best and self._network is not None:
                self._best_parameters = [p.copy() for p in self._network.parameters()]
            return False
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, logs=None) -> None:
        if self.restore_best and self._best_parameters is not None and self._network is not None:
            for p, best in zip(self._network.parameters(), self._best_parameters):
                p[...] = best

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, restore_best={self.restore_best})")
