"""cbp's pool against OpenBLAS's threads, per optimizer and batch size,
measured side by side in one process: what cbp/_threads.py's pool_for
decides from (docs/threads.md).

For each (optimizer, batch) two networks, identical, train by ``fit`` on
the same shuffled data, one epoch per call, alternately (the order
flipping every round, a pause before each call so that neither library's
worker threads are still spinning from the other's call): one with cbp's
pool off (its steps on OpenBLAS's threads), one with the pool forced on
at every size.  Printed: median µs per step of each, and the median over
rounds of the ratio pool ÷ OpenBLAS of the two calls of a round (adjacent
in time, so that the machine's slow drifts cancel).  Below 1 the pool is
faster.  Uses cbp's private switches; a diagnostic, not one of the
suite's targets.

    python benchmarks/pool.py                                  # Adam, SGD+momentum, SGD
    python benchmarks/pool.py --optimizers adam --batches 32,128 --dtype float64
    python benchmarks/pool.py --sizes 784,2048,2048,10 --batches 256 --rounds 11
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

OPTIMIZERS = {
    "adam": lambda cbp: cbp.Adam(lr=1e-3),
    "adamw": lambda cbp: cbp.AdamW(lr=1e-3),
    "momentum": lambda cbp: cbp.SGD(lr=0.01, momentum=0.9),
    "sgd": lambda cbp: cbp.SGD(lr=0.01),
}
PAUSE = 0.15  # s: OpenBLAS's workers spin ~0.1 s after a call; the pool waits 0.14 s


def measure(sizes, batch, dtype, make_optimizer, rounds, block):
    import cbp
    from cbp import _engine, _threads

    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    rng = np.random.default_rng(0)
    probe = cbp.Network.mlp(sizes, dtype=dtype, seed=0)
    xb = rng.standard_normal((batch, sizes[0])).astype(dtype)
    yb = rng.integers(0, sizes[-1], batch)
    opt = make_optimizer(cbp)
    probe.fit(xb, yb, epochs=1, batch_size=batch, optimizer=opt, progress=False)
    t0 = time.perf_counter()
    probe.fit(xb, yb, epochs=1, batch_size=batch, optimizer=opt, progress=False)
    steps = max(4, min(2000, int(block / max(time.perf_counter() - t0, 1e-7))))
    X = rng.standard_normal((batch * steps, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch * steps)

    runs = {}
    for mode in ("openblas", "pool"):
        net = cbp.Network.mlp(sizes, dtype=dtype, seed=0)
        runs[mode] = (net, make_optimizer(cbp), [])
    saved = _engine.set_pool(True), _threads.POOL_MAX_WORK
    try:
        for r in range(rounds):
            order = ["openblas", "pool"] if r % 2 == 0 else ["pool", "openblas"]
            for mode in order:
                net, optimizer, times = runs[mode]
                _engine.set_pool(mode == "pool")
                _threads.POOL_MAX_WORK = float("inf")
                net._threads_key = None  # decide the threads afresh
                time.sleep(PAUSE)
                before = _engine.pool_jobs()
                t0 = time.perf_counter()
                net.fit(X, y, epochs=1, batch_size=batch, optimizer=optimizer, progress=False)
                times.append((time.perf_counter() - t0) / steps * 1e6)
                took_pool = _engine.pool_jobs() > before
                if took_pool != (mode == "pool"):
                    raise RuntimeError(f"{mode}: the steps {'did' if took_pool else 'did not'} "
                                       "take the pool (one BLAS thread, or no thread control?)")
    finally:
        _engine.set_pool(saved[0])
        _threads.POOL_MAX_WORK = saved[1]
    blas, pool = runs["openblas"][2], runs["pool"][2]
    ratio = statistics.median(p / b for p, b in zip(pool, blas))
    return steps, 6 * batch * params, statistics.median(blas), statistics.median(pool), ratio


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--optimizers", default="adam,momentum,sgd",
                   help=f"comma-separated, of {','.join(OPTIMIZERS)}")
    p.add_argument("--batches", default="8,32,128")
    p.add_argument("--sizes", default="784,256,128,10")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--block-ms", type=float, default=50.0, help="about this long per fit call")
    args = p.parse_args(argv)

    import cbp
    from cbp import _engine, _threads

    if not (_threads.bind() and _engine.pool_active()):
        raise SystemExit("cbp's pool is not available here (no OpenBLAS thread control, "
                         "or CBP_POOL=0)")
    sizes = [int(s) for s in args.sizes.split(",")]
    names = args.optimizers.split(",")
    for name in names:
        if name not in OPTIMIZERS:
            raise SystemExit(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    print(f"cbp {cbp.__version__}, {'-'.join(map(str, sizes))} {args.dtype}, fit on shuffled "
          f"batches, {args.rounds} rounds, both on the default BLAS thread count")
    print(f"{'optimizer':10}{'batch':>7}{'flops/step':>12}{'steps':>7}"
          f"{'OpenBLAS µs':>13}{'pool µs':>10}{'pool ÷ OpenBLAS':>17}")
    for name in names:
        for batch in (int(b) for b in args.batches.split(",")):
            steps, work, blas, pool, ratio = measure(sizes, batch, np.dtype(args.dtype),
                                                     OPTIMIZERS[name], args.rounds,
                                                     args.block_ms / 1e3)
            print(f"{name:10}{batch:>7}{work:>12.2e}{steps:>7}{blas:>13.1f}{pool:>10.1f}"
                  f"{ratio:>17.3f}", flush=True)


if __name__ == "__main__":
    main()
