"""The bar chart of docs/benchmarks.png: µs per step (log scale) for each
configuration, one bar per contender."""
from __future__ import annotations

COLORS = {"cbp_fit": "#1f5fbf", "cbp_train_step": "#6f9fe0", "blas_floor": "#222222",
          "numpy": "#8c8c8c", "torch": "#e0622a", "jax": "#3a9a4a",
          "sklearn_partial_fit": "#b07cc6", "sklearn_fit": "#7b3f99"}

LABELS = {"cbp_fit": "cbp fit", "cbp_train_step": "cbp train_step",
          "blas_floor": "BLAS floor", "numpy": "NumPy", "torch": "PyTorch", "jax": "JAX",
          "sklearn_partial_fit": "sklearn partial_fit", "sklearn_fit": "sklearn fit"}


def draw(results, path):
    """Returns None when done, else why no chart was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no chart"
    configs = list(results["configs"])
    groups = [g for g in COLORS if any(g in results["configs"][c]["best"] for c in configs)]
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(max(7, 1.5 * len(configs)), 4.8), dpi=110)
    for i, group in enumerate(groups):
        xs, heights = [], []
        for j, c in enumerate(configs):
            best = results["configs"][c]["best"].get(group)
            if best is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                heights.append(best["median_us"])
        ax.bar(xs, heights, width, label=LABELS[group], color=COLORS[group])
    ax.set_yscale("log")
    ax.set_xticks(range(len(configs)))
    ticks = []
    for c in configs:
        r = results["configs"][c]
        dt = "" if r["dtype"] == "float32" else " f64"
        ticks.append(f"{c}\n{'-'.join(map(str, r['sizes']))}\nbatch {r['batch']}{dt}")
    ax.set_xticklabels(ticks, fontsize=7)
    ax.set_ylabel("median µs per training step (log)")
    m = results["machine"]
    threads = "best of threads " + ",".join(map(str, results["threads"])) \
        if results["threads"] else "default threads"
    ax.set_title(f"cbp benchmark, {results['mode']} mode, {m['date'][:10]}, {m['cpu']}, "
                 f"{m['logical_cpus']} CPUs; median of rounds, {threads}", fontsize=9)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None
