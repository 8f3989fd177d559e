"""Where cbp ``fit``'s time above the BLAS floor goes, one configuration at
a time, measured side by side in one process.

Six contenders, interleaved over rounds (the order rotating), each timing
K consecutive steps of the same network (SGD lr 0.01, fused path):

  floor     the BLAS calls of a step alone (``Engine.blas_floor``), K reps
            on one batch, which stays in cache
  hot       the C training loop (``Engine.train_batches``) on that same
            batch K times (a data set of one batch, K epochs): the whole
            step, its data in cache as the floor's
  same      the C loop on K copies of that batch, one after another in
            memory: the same arithmetic, each batch read from memory
  seq       the C loop on K different batches in sequence (no shuffle)
  shuffled  the C loop gathering shuffled rows, as ``fit`` does
  fit       ``Network.fit(X, y, epochs=1, shuffle=True)`` on the same data:
            adds the per-call work (validating X, the permutation, the
            Python loop around the C calls)

So ``hot ÷ floor`` is the step's own element-wise work (bias rows,
activations, loss, σ', bias sums, the overflow guard), ``same − hot`` the
trip to memory for each batch's rows (which the floor, on one batch, never
makes), ``shuffled − seq`` the gather, ``fit − shuffled`` the per-call
work.  Uses the engine's
private entry points; a diagnostic, not part of the suite's targets.

    python benchmarks/breakdown.py M128            # also S1 S32 M1 M32 M128d L256
    python benchmarks/breakdown.py M32 --steps 200 --rounds 21
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from run import CONFIGS


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", choices=sorted(CONFIGS))
    p.add_argument("--steps", type=int, default=None,
                   help="K steps per block (default: about 40 ms of steps)")
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)

    import cbp

    sizes, batch, dtype = CONFIGS[args.config]
    rng = np.random.default_rng(0)
    net = cbp.Network.mlp(sizes, dtype=dtype, seed=0)
    opt = cbp.SGD(lr=0.01)
    xb = rng.standard_normal((batch, sizes[0])).astype(dtype)
    yb = rng.integers(0, sizes[-1], batch)
    net.fit(xb, yb, epochs=1, batch_size=batch, optimizer=opt, shuffle=False, progress=False)
    t0 = time.perf_counter()
    net.train_step(xb, yb, opt)
    k = args.steps or max(2, min(4096, int(0.04 / max(time.perf_counter() - t0, 1e-7))))

    X_same, y_same = np.tile(xb, (k, 1)), np.tile(yb, k)
    X = rng.standard_normal((batch * k, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch * k)
    order = rng.permutation(batch * k)
    engine, state = net._engine, opt._state_for(net)
    net._set_threads(batch)
    losses = np.empty(k)

    contenders = {
        "floor": lambda: engine.blas_floor(xb, 0.01, k),
        "hot": lambda: engine.train_batches(state, xb, yb, None, None, 0, batch, k, losses),
        "same": lambda: engine.train_batches(state, X_same, y_same, None, None, 0, batch, k,
                                             losses),
        "seq": lambda: engine.train_batches(state, X, y, None, None, 0, batch, k, losses),
        "shuffled": lambda: engine.train_batches(state, X, y, None, order, 0, batch, k,
                                                 losses),
        "fit": lambda: net.fit(X, y, epochs=1, batch_size=batch, optimizer=opt,
                               shuffle=True, progress=False),
    }
    times = {name: [] for name in contenders}
    names = list(contenders)
    # Steps of this size on cbp's pool (docs/threads.md): the floor runs on
    # OpenBLAS's threads, whose workers spin 0.1 s after it (fit and the C
    # loop take the pool all the same, slowed beside them) — so each
    # contender after the floor waits that out, as in run.py.
    from cbp import _engine
    on_pool = _engine.pool_active() and engine.pool
    for r in range(args.rounds):
        shift = r % len(names)
        sequence = names[shift:] + names[:shift]
        for i, name in enumerate(sequence):
            if on_pool and i > 0 and sequence[i - 1] == "floor":
                time.sleep(0.15)
            t0 = time.perf_counter()
            contenders[name]()
            times[name].append((time.perf_counter() - t0) / k * 1e6)
    us = {name: statistics.median(v) for name, v in times.items()}
    floor = us["floor"]
    print(f"{args.config} ({'-'.join(map(str, sizes))} b{batch} {dtype}), {k} steps per block, "
          f"{args.rounds} rounds, BLAS threads {engine.blas_threads or 'default'}"
          f"{', steps on cbp pool' if on_pool else ''}")
    print(f"{'':10}{'µs/step':>11}{'÷ floor':>9}{'+ µs':>11}")
    previous = floor
    for name in names:
        print(f"{name:10}{us[name]:>11.5g}{us[name] / floor:>9.3f}{us[name] - previous:>+11.4g}")
        previous = us[name]


if __name__ == "__main__":
    main()
