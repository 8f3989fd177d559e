#!/usr/bin/env python
"""Time one training step of the same MLP with cbp and its peers.

    python benchmarks/run.py                  # quick mode (< 2 minutes)
    python benchmarks/run.py --full           # more rounds, longer blocks
    python benchmarks/run.py --configs S1,M32 --threads 1,2

For each configuration every contender trains the same network (ReLU
hidden layers, identity last layer, softmax cross-entropy, SGD lr 0.01,
momentum 0) from the same initial parameters on the same random batches.
The contenders are interleaved round-robin — in round r each times one
block of steps, the starting contender rotating — so machine noise hits
all alike; the table reports the median µs per step over the rounds.
Results go to benchmarks/results/latest.json (and latest.md, and the chart
latest.png), which git ignores; docs/benchmarks.png is the chart of the
full run that docs/benchmarks.md quotes.  See docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
import traceback

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import contenders as C  # noqa: E402

M_SIZES = [784, 256, 128, 10]
CONFIGS = {
    "S1": ([64, 32, 10], 1, "float32"),
    "S32": ([64, 32, 10], 32, "float32"),
    "M1": (M_SIZES, 1, "float32"),
    "M32": (M_SIZES, 32, "float32"),
    "M128": (M_SIZES, 128, "float32"),
    "M128d": (M_SIZES, 128, "float64"),
    "L256": ([784, 2048, 2048, 10], 256, "float32"),
}
MODES = {
    # rounds per configuration (past `budget` seconds of rounds a
    # configuration stops after `min_rounds`), seconds per timed block,
    # fewest batches in an epoch, digits rounds and epochs, and `gap`:
    # seconds of idling before a contender whose library's worker threads
    # differ from the previous one's.  OpenBLAS (NumPy and SciPy each bring
    # their own), OpenMP and XLA workers spin for a while after a call; on
    # two cores that slowed the next library's step by half (L256: cbp
    # 53 ms → 80 ms right after scikit-learn, 53 ms after a 0.3 s pause).
    "quick": dict(rounds=5, min_rounds=3, budget=7.0, block=0.025, min_batches=2,
                  digits_rounds=3, digits_epochs=20, gap=0.15),
    "full": dict(rounds=21, min_rounds=21, budget=None, block=0.08, min_batches=4,
                 digits_rounds=7, digits_epochs=30, gap=0.2),
}
MAX_BATCHES = 4096
MIN_SHORT_BATCHES = 64   # fewest batches in an epoch when a step takes < 1 ms
MAX_EPOCH_BYTES = 256 * 2**20

# Targets of issue 4, measured on cbp fit.  Peers: numpy, torch, jax,
# sklearn (partial_fit and fit); "fastest" is the fastest of them.
TARGETS = {
    "S1": dict(jax=20, torch=200, step_gap_us=3),
    "S32": dict(jax=3, torch=20, step_gap_us=3),
    "M1": dict(jax=5, torch=8, step_gap_us=3),
    "M32": dict(floor=1.10, torch=1.5, fastest=1.0),
    "M128": dict(floor=1.10, torch=1.1, fastest=1.0),
    "M128d": dict(floor=1.10, torch=1.3, fastest=1.0),
    "L256": dict(floor=1.05, fastest=1 / 1.05),
}
DIGITS_SPEEDUP = 15
DIGITS_ACCURACY_TOLERANCE = 0.01

CBP = ("cbp_fit", "cbp_train_step")
SHORT = {"cbp_fit": "cbp fit", "cbp_train_step": "train_step", "blas_floor": "BLAS floor",
         "numpy": "NumPy", "torch": "PyTorch", "jax": "JAX",
         "sklearn_partial_fit": "sk partial_fit", "sklearn_fit": "sk fit"}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ setup
def available_groups():
    """Which contender groups can run here; prints 'not installed' for the
    others."""
    groups = ["cbp_fit", "cbp_train_step", "blas_floor", "numpy"]
    checks = {"torch": "torch", "jax": "jax", "sklearn_partial_fit": "sklearn",
              "sklearn_fit": "sklearn"}
    for group, module in checks.items():
        try:
            if module == "jax":
                C.import_jax()
            else:
                __import__(module)
            groups.append(group)
        except ImportError:
            print(f"{SHORT[group]}: not installed ({module})")
    return groups


def estimate_step_seconds(sizes, batch, dtype):
    """A rough cbp train_step time, to size the epoch."""
    import cbp

    rng = np.random.default_rng(1)
    X = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, 10, batch)
    net = cbp.Network.mlp(sizes, dtype=dtype, seed=1)
    opt = cbp.SGD(lr=C.LR)
    net.train_step(X, y, opt)
    reps, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            net.train_step(X, y, opt)
        t = time.perf_counter() - t0
        if t > 0.005 or reps >= 4096:
            return t / reps
        reps *= 4


def make_contenders(problem, groups, threads, tpc, floor_chunk, cbp_threads=False):
    made = []
    for group in [g for g in C.FACTORIES if g in groups]:
        variants = threads if (threads and group in C.THREADED) else [None]
        if threads and cbp_threads and group in CBP:
            variants = [None] + threads
        for t in variants:
            try:
                kwargs = {"chunk": floor_chunk} if group == "blas_floor" else {}
                made.append(C.FACTORIES[group](problem, t, tpc, **kwargs))
            except ImportError as exc:
                print(f"{SHORT[group]}: not installed ({exc})")
            except Exception:
                log(f"{problem.name}: {group} failed to set up:\n{traceback.format_exc()}")
    return made


def pause(seconds):
    """Idle so that the last library's worker threads stop spinning.  cbp's
    train_step stands aside from its pool after cbp's own threaded calls
    for a count of work, not of time (docs/threads.md: so that its path
    never depends on timing); the pause is what it stands aside for, so
    cbp is told, and a train_step block starts as a loop in a fresh
    process does."""
    time.sleep(seconds)
    try:
        from cbp import _engine
        _engine.pool_settle()
    except (ImportError, AttributeError):
        pass


def calibrate(contender, block):
    """Warm up, then the number of steps that takes about `block` seconds."""
    contender.run(1)
    k = 1
    while True:
        # the faster of two runs, so one hiccup cannot shrink the block
        t, steps = min((contender.run(k) for _ in range(2)), key=lambda r: r[0] / r[1])
        if t >= block / 5 or steps >= 10**6:
            break
        k = steps * 10
    return max(1, round(steps * block / max(t, 1e-9)))


# ------------------------------------------------------------------ one config
def bench_config(name, mode, groups, threads, tpc, floor_chunk, check=False,
                 cbp_threads=False):
    sizes, batch, dtype = CONFIGS[name]
    step = estimate_step_seconds(sizes, batch, dtype)
    row_bytes = batch * sizes[0] * np.dtype(dtype).itemsize
    # enough batches that fit's per-epoch work is spread thin, and every
    # class appears in the epoch
    fewest = max(mode["min_batches"], MIN_SHORT_BATCHES if step < 1e-3 else 0,
                 math.ceil(C.N_CLASSES / batch))
    n_batches = int(min(max(fewest, math.ceil(mode["block"] / step)),
                        MAX_BATCHES, max(fewest, MAX_EPOCH_BYTES // row_bytes)))
    problem = C.Problem(name, sizes, batch, dtype, n_batches)
    parity = None
    if check:
        parity = C.check_parity(problem, groups)
        print(f"{name} parity after 3 steps (max |Δparam| / max |param| vs NumPy): " +
              ", ".join(f"{SHORT[g]} {v:.1e}" for g, v in parity.items()))
    contenders = make_contenders(problem, groups, threads, tpc, floor_chunk, cbp_threads)
    gap = mode["gap"]
    steps = {}
    for c in contenders:
        try:
            pause(gap)
            steps[c.name] = calibrate(c, mode["block"])
        except Exception:
            log(f"{name}: {c.name} failed:\n{traceback.format_exc()}")
    contenders = [c for c in contenders if c.name in steps]
    times = {c.name: [] for c in contenders}
    actual = {c.name: 0 for c in contenders}
    t_rounds, last_pool = time.perf_counter(), None
    for r in range(mode["rounds"]):
        if (mode["budget"] and r >= mode["min_rounds"]
                and time.perf_counter() - t_rounds > mode["budget"]):
            break
        shift = r % max(1, len(contenders))
        for c in contenders[shift:] + contenders[:shift]:
            if c.pool != last_pool:
                pause(gap)   # let the last library's worker threads stop spinning
            last_pool = c.pool
            c.warm()
            t, s = c.run(steps[c.name])
            times[c.name].append(t / s * 1e6)
            actual[c.name] = s
    record = {"label": problem.label(), "sizes": sizes, "batch": batch, "dtype": dtype,
              "epoch_batches": n_batches, "parity": parity, "rounds": len(next(iter(times.values()), [])),
              "contenders": {}, "best": {}}
    for c in contenders:
        v = np.array(times[c.name])
        record["contenders"][c.name] = {
            "group": c.group, "threads": c.threads, "steps_per_block": actual[c.name],
            "median_us": float(np.median(v)), "min_us": float(v.min()),
            "q25_us": float(np.percentile(v, 25)), "q75_us": float(np.percentile(v, 75)),
            "rounds_us": [float(x) for x in v]}
        if isinstance(c, C.BlasFloor):
            record["contenders"][c.name]["chunk"] = c.chunk
    for cname, rec in record["contenders"].items():
        if rec["group"] in CBP and rec["threads"] is not None:
            continue    # informational (--cbp-threads): ratios use cbp as it runs
        best = record["best"].get(rec["group"])
        if best is None or rec["median_us"] < best["median_us"]:
            record["best"][rec["group"]] = {"name": cname, "median_us": rec["median_us"],
                                            "threads": rec["threads"]}
    record["ratios"] = ratios(record["best"])
    record["targets"] = check_targets(name, record["ratios"])
    return record


def ratios(best):
    us = {g: b["median_us"] for g, b in best.items()}
    out = {}
    fit = us.get("cbp_fit")
    if fit is None:
        return out
    if "blas_floor" in us:
        out["fit_over_floor"] = fit / us["blas_floor"]
    if "cbp_train_step" in us:
        out["train_step_minus_fit_us"] = us["cbp_train_step"] - fit
    for g in C.PEERS:
        if g in us:
            out[f"{g}_over_fit"] = us[g] / fit
    peers = [g for g in C.PEERS if g in us]
    if peers:
        fastest = min(peers, key=us.get)
        out["fastest_peer"] = fastest
        out["fastest_peer_over_fit"] = us[fastest] / fit
    return out


def check_targets(name, r):
    goals = TARGETS.get(name, {})
    out = []

    def add(text, measured, met):
        out.append({"target": text, "measured": measured, "met": bool(met)})

    for peer in ("jax", "torch"):
        if peer in goals:
            key = f"{peer}_over_fit"
            if key in r:
                add(f"fit >= {goals[peer]}x faster than {SHORT[peer]}", r[key],
                    r[key] >= goals[peer])
            else:
                out.append({"target": f"fit >= {goals[peer]}x faster than {SHORT[peer]}",
                            "measured": None, "met": None})
    if "step_gap_us" in goals and "train_step_minus_fit_us" in r:
        g = r["train_step_minus_fit_us"]
        add(f"train_step within {goals['step_gap_us']} us of fit", g, g <= goals["step_gap_us"])
    if "floor" in goals and "fit_over_floor" in r:
        f = r["fit_over_floor"]
        add(f"fit within {goals['floor']:.2f}x of the BLAS floor", f, f <= goals["floor"])
    if "fastest" in goals and "fastest_peer_over_fit" in r:
        f = r["fastest_peer_over_fit"]
        text = ("fit never slower than the fastest peer" if goals["fastest"] >= 1 else
                "fit within 5% of the fastest peer")
        add(f"{text} ({SHORT[r['fastest_peer']]})", f, f >= goals["fastest"] - 1e-12)
    return out


# ------------------------------------------------------------------ printing
def fmt_us(x):
    if x is None:
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def tables(results):
    """(plain text, markdown) of the three tables."""
    configs = results["configs"]
    groups = [g for g in C.FACTORIES if any(g in c["best"] for c in configs.values())]
    threaded = bool(results["threads"])

    def cell(best):
        if best is None:
            return "—"
        t = f" @{best['threads']}" if threaded and best["threads"] is not None else ""
        return fmt_us(best["median_us"]) + t

    t1 = [["config"] + [SHORT[g] for g in groups]]
    for name, c in configs.items():
        t1.append([f"{name} ({c['label']})"] + [cell(c["best"].get(g)) for g in groups])

    peers = [g for g in C.PEERS if g in groups]
    t2 = [["config", "fit ÷ floor", "train_step − fit (µs)"] +
          [f"{SHORT[g]} ÷ fit" for g in peers]]
    for name, c in configs.items():
        r = c["ratios"]
        row = [name, f"{r['fit_over_floor']:.2f}" if "fit_over_floor" in r else "—",
               f"{r['train_step_minus_fit_us']:+.2f}" if "train_step_minus_fit_us" in r else "—"]
        row += [f"{r[f'{g}_over_fit']:.2f}" if f"{g}_over_fit" in r else "—" for g in peers]
        t2.append(row)

    t3 = [["config", "target (issue 4)", "measured", "status"]]
    for name, c in configs.items():
        for t in c["targets"]:
            t3.append([name, t["target"], "—" if t["measured"] is None else f"{t['measured']:.2f}",
                       "n/a" if t["met"] is None else ("met" if t["met"] else "NOT MET")])
    d = results.get("digits")
    if d and "speedup" in d:
        for t in d["targets"]:
            t3.append(["digits", t["target"], t.get("shown", f"{t['measured']:.3g}"),
                       "met" if t["met"] else "NOT MET"])
    m = results.get("memory")
    if m and "heap_ok" in m:
        t3.append(["memory", "zero Python-heap growth across steps (tracemalloc, "
                   f"≤ {m['heap_tolerance_bytes']} B after warm-up)",
                   f"{m['train_step_heap_growth_bytes']} B / {m['fit_heap_growth_bytes']} B",
                   "met" if m["heap_ok"] else "NOT MET"])
        t3.append(["memory", "peak RSS of a fit within data + params×(2+state) + workspace + 30 MB",
                   f"{m['rss_excess_bytes'] / 2**20:.1f} MB ≤ {m['rss_bound_bytes'] / 2**20:.1f} MB",
                   "met" if m["rss_ok"] else "NOT MET"])

    def text(rows):
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.rjust(w[i]) if i else v.ljust(w[i]) for i, v in enumerate(r))
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)

    def markdown(rows):
        lines = ["| " + " | ".join(rows[0]) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(rows[0]))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)

    titles = ["Median µs per training step", "Ratios (best thread count of each peer)",
              "Targets"]
    parts = [t1, t2, t3]
    if threaded:   # every thread-count variant
        names = []
        for c in configs.values():
            names += [n for n in c["contenders"] if n not in names]
        t4 = [["config"] + names]
        for name, c in configs.items():
            t4.append([name] + [fmt_us(c["contenders"][n]["median_us"])
                                if n in c["contenders"] else "—" for n in names])
        titles.append("Every thread-count variant (median µs per step; @t = t threads)")
        parts.append(t4)
    plain = "\n\n".join(f"{ti}\n{text(t)}" for ti, t in zip(titles, parts))
    md = "\n\n".join(f"**{ti}**\n\n{markdown(t)}" for ti, t in zip(titles, parts))
    return plain, md


def extras_text(results):
    lines = []
    d = results.get("digits")
    if d:
        s = d["setup"]
        lines.append(f"Digits ({s['n_train']} train / {s['n_test']} test, 64-{s['sizes'][1]}-10 "
                     f"ReLU, {s['optimizer']} lr {s['lr']}, batch {s['batch_size']}, "
                     f"{s['epochs']} epochs, median of {s['rounds']} fits):")
        for k, ms in d["epoch_ms"].items():
            lines.append(f"  {SHORT[k]:8s} {ms:8.2f} ms/epoch  test accuracy "
                         f"{d['test_accuracy'][k]:.4f}")
        if "speedup" in d:
            lines.append(f"  sklearn ÷ cbp epoch time: {d['speedup']:.1f}x")
    m = results.get("memory")
    if m:
        if "error" in m:
            lines.append(f"Memory check failed: {m['error']}")
        else:
            lines.append(
                f"Memory ({'-'.join(map(str, m['config']['sizes']))} b{m['config']['batch']}, "
                f"fresh process): Python-heap growth over {m['train_step_steps']} train_steps "
                f"{m['train_step_heap_growth_bytes']} B, across a fit epoch "
                f"{m['fit_heap_growth_bytes']} B (per-epoch temporaries peak "
                f"{m['fit_heap_peak_bytes'] / 1024:.0f} KiB); peak RSS − RSS after import "
                f"{m['rss_excess_bytes'] / 2**20:.1f} MB (bound {m['rss_bound_bytes'] / 2**20:.1f} MB)")
    return "\n".join(lines)


def header_markdown(results):
    import machine

    m = results["machine"]
    load = lambda xs: ", ".join(f"{x:.2f}" for x in xs or [])
    threads = (f"each peer and the floor at {', '.join(map(str, results['threads']))} "
               "threads, best shown" if results["threads"] else "each library's default")
    lines = [f"- {results['mode']} mode, {m['date']}, {results['elapsed_s']:.0f} s; "
             f"rounds per config: " + ", ".join(f"{k} {c['rounds']}"
                                                for k, c in results["configs"].items()),
             f"- {m['cpu']}, {m['logical_cpus']} logical CPUs; load average "
             f"{load(m['load_average'])} at the start, {load(m.get('load_average_end'))} at the end",
             "- " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
             f"- threads: {threads}; torch.get_num_threads() = {m.get('torch_num_threads')}"]
    lines += [f"- `{line}`" for line in machine.blas_summary(m)]
    if m["environment"]:
        lines.append("- environment: " + ", ".join(f"{k}={v}" for k, v in m["environment"].items()))
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="quick mode (the default)")
    mode.add_argument("--full", action="store_true", help="more rounds and longer blocks")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--threads", default="",
                   help="e.g. 1,2: run every peer (and the floor) at each thread count; "
                        "default: each library's own default")
    p.add_argument("--cbp-threads", action="store_true",
                   help="with --threads: also time cbp at each BLAS thread count (shown "
                        "apart; ratios and targets use cbp at its own default)")
    p.add_argument("--rounds", type=int, help="override the mode's rounds")
    p.add_argument("--block-ms", type=float, help="override the mode's block length")
    p.add_argument("--gap-ms", type=float, default=None,
                   help="idle ms before a contender on another library's threads "
                        "(default 150 quick, 200 full)")
    p.add_argument("--floor-chunk", type=int, default=None,
                   help="BLAS-floor repetitions per timed call (default: chosen by size)")
    p.add_argument("--check", action="store_true",
                   help="first check that the per-step contenders compute the same step")
    p.add_argument("--digits-optimizer", choices=("adam", "sgd"), default="adam",
                   help="optimizer of the digits comparison (default adam, both libraries' "
                        "default)")
    p.add_argument("--no-digits", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    p.add_argument("--chart", default=str(HERE / "results" / "latest.png"))
    args = p.parse_args(argv)
    args.mode = "full" if args.full else "quick"
    args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.config_list if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {','.join(CONFIGS)}")
    args.thread_list = [int(t) for t in args.threads.split(",") if t.strip()]
    return args


def main(argv=None):
    args = parse_args(argv)
    mode = dict(MODES[args.mode])
    if args.rounds:
        mode["rounds"] = args.rounds
    if args.block_ms:
        mode["block"] = args.block_ms / 1e3
    if args.gap_ms is not None:
        mode["gap"] = args.gap_ms / 1e3
    started = time.perf_counter()

    import cbp
    import machine

    groups = available_groups()
    try:
        from threadpoolctl import ThreadpoolController

        tpc = ThreadpoolController()
    except ImportError:
        tpc = None
        print("threadpoolctl: not installed (BLAS thread counts not recorded or set)")
        if args.thread_list:
            print("--threads needs threadpoolctl for NumPy/SciPy BLAS; only PyTorch varies")
    if "torch" in groups:
        C.TorchEager.default_threads()
    info = machine.describe(tpc)
    print(f"cbp {cbp.__version__} benchmark, {args.mode} mode, {info['date']}")
    print(f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs), load average "
          f"{', '.join(f'{x:.2f}' for x in info['load_average'] or [])}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v))
    for line in machine.blas_summary(info):
        print("  " + line)
    if "torch_num_threads" in info:
        print(f"  torch.get_num_threads() = {info['torch_num_threads']}  ({info.get('torch_blas')})")
    if "jax" in groups:
        print("  JAX/XLA: intra-op threads are fixed when XLA starts (XLA_FLAGS must be set "
              "before import); JAX runs at its default in every mode")
    if info["environment"]:
        print("  env: " + ", ".join(f"{k}={v}" for k, v in info["environment"].items()))

    results = {"mode": args.mode, "settings": mode, "threads": args.thread_list,
               "machine": info, "configs": {}}
    for name in args.config_list:
        t0 = time.perf_counter()
        log(f"[{time.perf_counter() - started:6.1f}s] {name} ...")
        results["configs"][name] = bench_config(name, mode, groups, args.thread_list, tpc,
                                                args.floor_chunk, args.check, args.cbp_threads)
        log(f"          {name} done in {time.perf_counter() - t0:.1f}s")

    if not args.no_digits:
        import digits

        log(f"[{time.perf_counter() - started:6.1f}s] digits ...")
        d = digits.run(rounds=mode["digits_rounds"], epochs=mode["digits_epochs"],
                       optimizer=args.digits_optimizer, gap=mode["gap"])
        if "speedup" in d:
            acc = d["test_accuracy"]
            d["targets"] = [
                {"target": f"fit epoch >= {DIGITS_SPEEDUP}x faster than sklearn MLPClassifier",
                 "measured": d["speedup"], "met": d["speedup"] >= DIGITS_SPEEDUP},
                {"target": f"at the same accuracy (cbp >= sklearn − {DIGITS_ACCURACY_TOLERANCE})",
                 "measured": acc["cbp_fit"] - acc["sklearn_fit"],
                 "shown": f"{acc['cbp_fit']:.4f} vs {acc['sklearn_fit']:.4f}",
                 "met": acc["cbp_fit"] >= acc["sklearn_fit"] - DIGITS_ACCURACY_TOLERANCE}]
        results["digits"] = d
    if not args.no_memory:
        import memory

        log(f"[{time.perf_counter() - started:6.1f}s] memory ...")
        results["memory"] = memory.run()

    results["machine"]["load_average_end"] = list(__import__("os").getloadavg())
    results["elapsed_s"] = time.perf_counter() - started
    plain, md = tables(results)
    print()
    print(plain)
    extra = extras_text(results)
    print("\n" + extra)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(header_markdown(results) + "\n\n" + md + "\n\n```text\n"
                                      + extra + "\n```\n")
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    import chart

    why = chart.draw(results, args.chart)
    print(why or f"wrote {args.chart}")
    print(f"total {results['elapsed_s']:.0f}s")


if __name__ == "__main__":
    main()
