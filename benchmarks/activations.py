"""What each activation costs, measured side by side in one run: a pass of
σ and of σ' over 32,768 elements (``cbp.ops``, Python call included), and
``fit`` per step of 784-256-128-10 with plain SGD on 8,192 rows of random
float32 data, as a ratio to relu's.  The contenders are interleaved
round-robin (one one-epoch fit each per round, after a 0.15 s pause so
that no OpenBLAS worker is still spinning); medians over the rounds.
The suite (run.py) measures relu only; see docs/derivation.md for how
the smooth activations are computed.

    python benchmarks/activations.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import cbp
from cbp import ops

ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "elu", "softplus", "gelu"]


def pass_us(fn, act, z, reps=200):
    fn(act, z)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(act, z)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    z = rng.standard_normal(32768) * 3
    print("pass over 32,768 elements, µs (σ / σ')")
    for dtype in (np.float32, np.float64):
        zz = z.astype(dtype)
        cells = [f"{act} {pass_us(ops.activation_forward, act, zz):.0f}/"
                 f"{pass_us(ops.activation_derivative, act, zz):.0f}" for act in ACTIVATIONS]
        print(f"  {np.dtype(dtype).name}: " + ", ".join(cells))

    X = rng.standard_normal((8192, 784)).astype(np.float32)
    y = rng.integers(0, 10, 8192)
    times = {}
    for _ in range(args.rounds):
        for batch in (32, 128):
            for act in ACTIVATIONS:
                net = cbp.Network.mlp([784, 256, 128, 10], activation=act, seed=0)
                net.fit(X[:1024], y[:1024], epochs=1, batch_size=batch, progress=False)
                time.sleep(0.15)
                start = time.perf_counter()
                net.fit(X, y, epochs=1, batch_size=batch, optimizer=cbp.SGD(lr=0.01),
                        progress=False)
                steps = -(-len(X) // batch)
                times.setdefault((act, batch), []).append(
                    (time.perf_counter() - start) / steps * 1e6)
    print("fit of 784-256-128-10 (float32, SGD), µs per step (÷ relu)")
    for batch in (32, 128):
        relu = float(np.median(times["relu", batch]))
        cells = [f"{act} {float(np.median(times[act, batch])):.0f} "
                 f"({float(np.median(times[act, batch])) / relu:.2f})" for act in ACTIVATIONS]
        print(f"  batch {batch}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
