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
suite's targets.  With PyTorch installed, also PyTorch eager with the
same optimizer (torch.optim, its defaults otherwise; ``nn.Sequential``,
``CrossEntropyLoss``, one Python step per batch, on batches sliced once
in shuffled order) in the same rounds, and the ratio PyTorch ÷ cbp's
pool; ``--no-torch`` leaves it out.

    python benchmarks/pool.py                                  # Adam, SGD+momentum, SGD
    python benchmarks/pool.py --optimizers adam --batches 32,128 --dtype float64
    python benchmarks/pool.py --sizes 784,2048,2048,10 --batches 256 --rounds 11
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

TORCH_OPTIMIZERS = {
    "adam": lambda torch, params: torch.optim.Adam(params, lr=1e-3),
    "adamw": lambda torch, params: torch.optim.AdamW(params, lr=1e-3),
    "momentum": lambda torch, params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    "sgd": lambda torch, params: torch.optim.SGD(params, lr=0.01),
}
OPTIMIZERS = {
    "adam": lambda cbp: cbp.Adam(lr=1e-3),
    "adamw": lambda cbp: cbp.AdamW(lr=1e-3),
    "momentum": lambda cbp: cbp.SGD(lr=0.01, momentum=0.9),
    "sgd": lambda cbp: cbp.SGD(lr=0.01),
}
PAUSE = 0.15  # s: OpenBLAS's workers spin ~0.1 s after a call and slow the pool meanwhile


def torch_run(torch, sizes, dtype, name, X, y, batch, seed=0):
    """A function running one epoch of PyTorch steps on the batches of X, y
    in one shuffled order (sliced once), and returning nothing."""
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=tdtype))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = TORCH_OPTIMIZERS[name](torch, model.parameters())
    order = np.random.default_rng(seed).permutation(len(X))
    batches = [(torch.from_numpy(np.ascontiguousarray(X[order[i:i + batch]])),
                torch.from_numpy(y[order[i:i + batch]])) for i in range(0, len(X), batch)]

    def epoch():
        for xb, yb in batches:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
    return epoch


def measure(sizes, batch, dtype, name, rounds, block, torch=None):
    make_optimizer = OPTIMIZERS[name]
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
    modes = ["openblas", "pool"]
    if torch is not None:
        epoch = torch_run(torch, sizes, dtype, name, X, y, batch)
        epoch()  # warm
        runs["torch"] = (epoch, None, [])
        modes.append("torch")
    saved = _engine.set_pool(True), _threads.POOL_MAX_WORK
    try:
        for r in range(rounds):
            order = modes[r % len(modes):] + modes[:r % len(modes)]
            for mode in order:
                net, optimizer, times = runs[mode]
                if mode == "torch":
                    time.sleep(PAUSE)
                    t0 = time.perf_counter()
                    net()
                    times.append((time.perf_counter() - t0) / steps * 1e6)
                    continue
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
    result = dict(steps=steps, work=6 * batch * params, blas=statistics.median(blas),
                  pool=statistics.median(pool), ratio=ratio)
    if "torch" in runs:
        t = runs["torch"][2]
        result["torch"] = statistics.median(t)
        result["torch_ratio"] = statistics.median(a / p for a, p in zip(t, pool))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--optimizers", default="adam,momentum,sgd",
                   help=f"comma-separated, of {','.join(OPTIMIZERS)}")
    p.add_argument("--batches", default="8,32,128")
    p.add_argument("--sizes", default="784,256,128,10")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--block-ms", type=float, default=50.0, help="about this long per fit call")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    args = p.parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None

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
          f"batches, {args.rounds} rounds, both on the default BLAS thread count"
          + (f"; torch {torch.__version__} on {torch.get_num_threads()} threads" if torch else
             "; PyTorch not installed" if not args.no_torch else ""))
    print(f"{'optimizer':10}{'batch':>7}{'flops/step':>12}{'steps':>7}"
          f"{'OpenBLAS µs':>13}{'pool µs':>10}{'pool ÷ OpenBLAS':>17}"
          + (f"{'PyTorch µs':>12}{'PyTorch ÷ pool':>16}" if torch else ""))
    for name in names:
        for batch in (int(b) for b in args.batches.split(",")):
            r = measure(sizes, batch, np.dtype(args.dtype), name, args.rounds,
                        args.block_ms / 1e3, torch)
            print(f"{name:10}{batch:>7}{r['work']:>12.2e}{r['steps']:>7}{r['blas']:>13.1f}"
                  f"{r['pool']:>10.1f}{r['ratio']:>17.3f}"
                  + (f"{r['torch']:>12.1f}{r['torch_ratio']:>16.2f}" if torch else ""),
                  flush=True)


if __name__ == "__main__":
    main()
