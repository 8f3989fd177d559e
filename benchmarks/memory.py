"""No allocation on the hot path: Python-heap growth across steps
(tracemalloc) and the peak RSS of a fit, measured in a fresh process that
imports only cbp and NumPy.

The RSS bound of issue 4: peak RSS − RSS after the imports ≤ data +
parameters × (2 + optimizer state) + workspace + 30 MB, where the
workspace is estimated from the layer sizes (pre-activations and
activations of every layer, two delta buffers, a gathered batch).
"""
from __future__ import annotations

import json
import subprocess
import sys

SLACK_BYTES = 30 * 2**20
# Growth measured after a warm-up; any per-step leak over `steps` steps would
# be far above this (an object is at least 16 bytes).
HEAP_TOLERANCE = 1024


def _rss_bytes(field="VmRSS"):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _child(sizes, batch, dtype, n_batches, steps):
    import gc
    import tracemalloc

    import numpy as np

    import cbp

    base = _rss_bytes()
    rng = np.random.default_rng(0)
    n = batch * n_batches
    X = rng.standard_normal((n, sizes[0]), dtype=dtype)  # no float64 temporary
    y = rng.integers(0, 10, n).astype(np.int64)
    net = cbp.Network.mlp(sizes, dtype=dtype, seed=0)
    opt = cbp.SGD(lr=0.01)
    fit = lambda: net.fit(X, y, epochs=1, batch_size=batch, optimizer=opt, shuffle=True,
                          progress=False)
    fit()
    fit()
    peak_rss = _rss_bytes("VmHWM")   # before tracemalloc, which costs memory itself

    xb, yb = X[:batch], y[:batch]
    tracemalloc.start()
    for _ in range(100):             # first-time allocations (free lists, caches)
        net.train_step(xb, yb, opt)
    fit()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(steps):
        net.train_step(xb, yb, opt)
    gc.collect()
    step_growth = tracemalloc.get_traced_memory()[0] - before
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    fit()
    gc.collect()
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    item = np.dtype(dtype).itemsize
    widths = sizes[1:]
    workspace = batch * (2 * sum(widths) + 2 * max(widths) + sizes[0] + 2) * item
    # parameters, gradients and SGD's one state buffer (allocated even at momentum 0)
    bound = X.nbytes + y.nbytes + net.num_parameters * item * 3 + workspace + SLACK_BYTES
    return {"config": {"sizes": sizes, "batch": batch, "dtype": dtype,
                       "n_batches": n_batches, "optimizer": "SGD(lr=0.01)"},
            "train_step_heap_growth_bytes": step_growth, "train_step_steps": steps,
            "fit_heap_growth_bytes": after - before,
            "fit_heap_peak_bytes": peak - before,
            "rss_base_bytes": base, "rss_peak_bytes": peak_rss,
            "rss_excess_bytes": peak_rss - base, "rss_bound_bytes": bound}


def run(sizes=(784, 256, 128, 10), batch=128, dtype="float32", n_batches=50, steps=500):
    """Run the measurement in a fresh interpreter; returns its record."""
    args = json.dumps([list(sizes), batch, dtype, n_batches, steps])
    out = subprocess.run([sys.executable, __file__, args], capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:]}
    result = json.loads(out.stdout)
    result["heap_tolerance_bytes"] = HEAP_TOLERANCE
    result["heap_ok"] = (result["train_step_heap_growth_bytes"] <= HEAP_TOLERANCE and
                         result["fit_heap_growth_bytes"] <= HEAP_TOLERANCE)
    result["rss_ok"] = result["rss_excess_bytes"] <= result["rss_bound_bytes"]
    return result


if __name__ == "__main__":
    print(json.dumps(_child(*json.loads(sys.argv[1]))))
