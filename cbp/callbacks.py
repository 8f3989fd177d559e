"""Training history and callbacks.

A callback is any callable ``callback(epoch, logs)``; returning ``True``
stops training.  Before the first epoch ``fit`` calls
``callback.set_network(net)`` on each callback that has it, and when
training ends ``callback.on_train_end(logs)`` (as Keras' ``set_model`` and
``on_train_end``).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["History", "EarlyStopping"]


class History:
    """Per-epoch records of a ``fit``, returned by it.

    Attributes
    ----------
    history : dict of str to list of float
        ``"loss"`` (the mean training loss of each epoch), and with
        validation data ``"val_loss"`` (and ``"val_accuracy"`` for
        classification losses): one value per epoch.
    epoch : list of int
        The epoch numbers, from 0.
    """

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def _truncate(self, epochs: int) -> None:
        """Keep the first `epochs` entries of every record."""
        del self.epoch[epochs:]
        for values in self.history.values():
            del values[epochs:]

    def _append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def plot(self, keys=None, ax=None):
        """Plot the training curves with matplotlib (an optional
        dependency).

        Parameters
        ----------
        keys : list of str, optional
            Keys of ``history`` to plot; default all, sorted.
        ax : matplotlib.axes.Axes, optional
            Axes to draw on; default a new figure's.

        Returns
        -------
        matplotlib.axes.Axes
        """
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
        When training ends (stopped early or not, or by a
        :class:`DivergenceError`), put back the parameters of the best
        epoch.

    Attributes
    ----------
    best : float
        The best value of the monitored quantity so far.
    best_epoch : int or None
        The epoch that reached it.
    wait : int
        Epochs since the last improvement.
    stopped_epoch : int or None
        The epoch at which training was stopped, ``None`` if it was not.

    Examples
    --------
    >>> import cbp
    >>> X, y = cbp.datasets.load_digits()
    >>> net = cbp.Network.mlp([64, 32, 10], seed=0)
    >>> stop = cbp.EarlyStopping(monitor="val_loss", patience=3)
    >>> history = net.fit(X[:1000], y[:1000], epochs=100, optimizer=cbp.Adam(lr=0.01),
    ...                   validation_data=(X[1000:], y[1000:]), callbacks=[stop],
    ...                   progress=False)
    >>> stop.stopped_epoch == stop.best_epoch + 3     # 3 epochs without improvement
    True
    >>> abs(net.evaluate(X[1000:], y[1000:])["loss"] - stop.best) < 1e-6  # best restored
    True
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=True):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a string, got {type(monitor).__name__}")
        if isinstance(patience, (bool, np.bool_)) or not isinstance(patience, (int, np.integer)):
            raise TypeError(f"patience must be a non-negative integer, got "
                            f"{type(patience).__name__} {patience!r}")
        if patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        patience = int(patience)
        if isinstance(min_delta, (bool, np.bool_)) or not isinstance(min_delta, numbers.Real):
            raise TypeError(f"min_delta must be a finite number >= 0, got "
                            f"{type(min_delta).__name__} {min_delta!r}")
        min_delta = float(min_delta)
        if not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        if not isinstance(restore_best, (bool, np.bool_)):
            raise TypeError(f"restore_best must be True or False, got "
                            f"{type(restore_best).__name__} {restore_best!r}")
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
        """Called by ``fit`` before the first epoch: remember the network
        (to save and restore its parameters) and reset the counters.

        Parameters
        ----------
        network : Network
        """
        self._network = network
        self._reset()

    def _improved(self, value: float) -> bool:
        if self.maximize:
            return value - self.min_delta > self.best
        return value + self.min_delta < self.best

    def __call__(self, epoch: int, logs: dict) -> bool:
        """Called by ``fit`` after each epoch.

        Parameters
        ----------
        epoch : int
            The epoch number, from 0.
        logs : dict
            The epoch's ``"loss"`` (and ``"val_*"``) values.

        Returns
        -------
        bool
            ``True`` to stop training.

        Raises
        ------
        ValueError
            When ``monitor`` is not a key of `logs`.
        """
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
        """Called by ``fit`` when training ends: with ``restore_best``, put
        back the parameters of the best epoch.

        Parameters
        ----------
        logs : dict, optional
            The last epoch's logs.
        """
        if self.restore_best and self._best_parameters is not None and self._network is not None:
            for p, best in zip(self._network.parameters(), self._best_parameters):
                p[...] = best

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, restore_best={self.restore_best})")
