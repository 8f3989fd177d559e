"""``cbp bench``: a quick, side-by-side timing of one SGD training step,
cbp's ``Network.fit`` against the same step written in plain NumPy.

Both contenders train the same MLP (ReLU hidden layers, identity last
layer, softmax cross-entropy, SGD lr 0.01) from the same initial
parameters on the same random float32 batches.  They run interleaved in
rounds (the order alternating), so that a machine that slows down or
speeds up during the run affects both alike; each reports the median over
rounds of its time per step.  The fuller benchmark, with PyTorch, JAX and
scikit-learn when installed, is ``benchmarks/`` in the source tree.
"""
from __future__ import annotations

import contextlib
import statistics
import time

import numpy as np

LR = 0.01
BATCH = 32
N_CLASSES = 10
CONFIGS = (("S", (64, 32, 10)), ("M", (784, 256, 128, 10)))
_MAX_STEPS = 200     # steps per round and contender: bounds the data's memory
_MIN_ROUNDS = 3
_MAX_ROUNDS = 101


def numpy_train_step(params, X, y, lr):
    """One SGD step on the batch ``X`` (n, in), labels ``y`` (n,); updates
    ``params = [(W, b), …]`` in place and returns the loss before it.

    ``W`` is (out, in), ``b`` (out,); every array keeps the parameters'
    dtype (NumPy 2 treats the Python float ``lr`` as weak)."""
    n = X.shape[0]
    last = len(params) - 1

    # forward: z = a Wᵀ + b, a = relu(z) (identity on the last layer)
    activations = [X]
    a = X
    for l, (W, b) in enumerate(params):
        z = a @ W.T
        z += b
        a = np.maximum(z, 0, out=z) if l < last else z
        activations.append(a)

    # stable softmax cross-entropy: subtract the row max before exp
    logits = activations.pop()
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, y]))

    # ∂loss/∂logits = (softmax − onehot) / n
    delta = exp / total
    delta[rows, y] -= 1
    delta /= n

    # backward, updating each layer once its delta has passed through it
    for l in range(last, -1, -1):
        W, b = params[l]
        a_prev = activations[l]
        dW = delta.T @ a_prev          # (out, in)
        db = delta.sum(axis=0)         # (out,)
        if l > 0:
            delta = delta @ W          # uses W before its update
            delta *= a_prev > 0        # relu'(z) = [a > 0]
        W -= lr * dW
        b -= lr * db
    return loss


class _Contenders:
    """The two contenders on one configuration; ``run_*(steps)`` returns
    seconds per step over `steps` consecutive batches of the data."""

    def __init__(self, sizes, steps, seed=0):
        import cbp

        rng = np.random.default_rng(seed)
        n = BATCH * steps
        self.steps = steps
        self.X = rng.standard_normal((n, sizes[0])).astype(np.float32)
        self.y = rng.integers(0, N_CLASSES, n).astype(np.int64)
        self.net = cbp.Network.mlp(list(sizes), activation="relu",
                                   loss="softmax_cross_entropy", dtype="float32", seed=seed)
        self.params = [(layer.W.copy(), layer.b.copy()) for layer in self.net.layers]
        self.optimizer = cbp.SGD(lr=LR)
        self.batches = [(self.X[i * BATCH:(i + 1) * BATCH], self.y[i * BATCH:(i + 1) * BATCH])
                        for i in range(steps)]

    def run_cbp(self):
        t0 = time.perf_counter()
        self.net.fit(self.X, self.y, epochs=1, batch_size=BATCH, optimizer=self.optimizer,
                     shuffle=False, progress=False)
        return (time.perf_counter() - t0) / self.steps

    def run_numpy(self):
        params = self.params
        t0 = time.perf_counter()
        for X, y in self.batches:
            numpy_train_step(params, X, y, LR)
        return (time.perf_counter() - t0) / self.steps


def _max_difference(c) -> float:
    numpy_params = (a for pair in c.params for a in pair)
    return max(float(np.max(np.abs(p - q))) for p, q in zip(c.net.parameters(), numpy_params))


def time_config(sizes, seconds, seed=0):
    """``(cbp_s, numpy_s, rounds, steps, difference)``: median seconds per
    step of each contender, interleaved over rounds within about `seconds`,
    and the largest parameter difference after the first step of each from
    the same start on the same batch."""
    probe = _Contenders(sizes, 1, seed)
    probe.run_cbp(), probe.run_numpy()                    # same start, same batch
    difference = _max_difference(probe)
    per_step = probe.run_cbp() + probe.run_numpy()        # both, one step each
    # About 9 rounds in the budget; then as many rounds as the budget allows.
    steps = int(min(_MAX_STEPS, max(1, seconds / (9 * per_step))))
    c = _Contenders(sizes, steps, seed)
    c.run_cbp(), c.run_numpy()                            # warm up at this size
    cbp_times, numpy_times = [], []
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < _MIN_ROUNDS or (rounds < _MAX_ROUNDS and time.perf_counter() < deadline):
        if rounds % 2 == 0:
            cbp_times.append(c.run_cbp())
            numpy_times.append(c.run_numpy())
        else:
            numpy_times.append(c.run_numpy())
            cbp_times.append(c.run_cbp())
        rounds += 1
    return (statistics.median(cbp_times), statistics.median(numpy_times), rounds, steps,
            difference)


@contextlib.contextmanager
def _one_blas_thread():
    """Pin every BLAS library to one thread, when threadpoolctl is
    installed; yields a description of the thread setting.

    NumPy and SciPy (cbp's BLAS) each load their own OpenBLAS; two thread
    pools busy-waiting on a small machine slow each other down by large
    and erratic factors, and at these sizes one thread is the fast setting
    anyway."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield ("BLAS threads: the libraries' defaults (install threadpoolctl to pin one "
               "thread; NumPy and SciPy thread pools can slow each other down)")
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield "BLAS threads: 1 (pinned with threadpoolctl)"


def run(seconds, write) -> int:
    """Time every configuration within about `seconds` in all; `write`
    prints a line.  Returns the exit code (0)."""
    t_start = time.perf_counter()
    with _one_blas_thread() as threads:
        write(f"cbp bench: one SGD step (forward, softmax cross-entropy, backward, update), "
              f"float32, batch {BATCH}, ReLU, lr {LR}")
        write(f"median microseconds per step, the two contenders interleaved in rounds; "
              f"{threads}")
        write(f"{'config':<7}{'sizes':<17}{'rounds x steps':>15}{'cbp us':>11}"
              f"{'numpy us':>11}{'numpy/cbp':>11}")
        worst = 0.0
        for name, sizes in CONFIGS:
            t_cbp, t_np, rounds, steps, difference = time_config(sizes, 0.8 * seconds / len(CONFIGS))
            worst = max(worst, difference)
            label = "-".join(map(str, sizes))
            write(f"{name:<7}{label:<17}{f'{rounds} x {steps}':>15}{t_cbp * 1e6:>11.1f}"
                  f"{t_np * 1e6:>11.1f}{t_np / t_cbp:>10.2f}x")
    agree = "agree" if worst < 1e-4 else "DISAGREE"
    write(f"after one step from the same start, cbp and numpy parameters {agree} "
          f"(max |difference| {worst:.1e}); {time.perf_counter() - t_start:.1f} s in all")
    return 0
