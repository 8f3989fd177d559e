"""Write a fixed set of cbp results to an .npz file, to compare builds.

The element-wise loops are compiled in several clones (AVX-512F, AVX2,
baseline; see CBP_VECTOR_CLONES in src_c/cbp.h) that must round alike.
Run this against two builds and compare the files:

    python tools/clone_probe.py /tmp/a.npz                 # the usual build
    # in a second checkout built with CFLAGS=-DCBP_NO_CLONES (baseline only):
    PYTHONPATH=/path/to/that/checkout python tools/clone_probe.py /tmp/b.npz
    python -c "import numpy as np; a, b = np.load('/tmp/a.npz'), np.load('/tmp/b.npz'); \\
               print([k for k in a.files if not np.array_equal(a[k], b[k])])"

It trains 24 small networks (float32 and float64; ReLU, tanh, GELU; SGD,
SGD with momentum, Adam, AdamW; shuffled mini-batches) and keeps every
parameter and the predicted probabilities, plus softmax cross-entropy
gradients of large logits: 172 arrays.
"""
import sys

import numpy as np

import cbp
import cbp.ops as ops


def main(path):
    out = {}
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 20))
    y = rng.integers(0, 4, 300)
    optimizers = {"sgd": lambda: cbp.SGD(lr=0.05),
                  "mom": lambda: cbp.SGD(lr=0.05, momentum=0.9),
                  "adam": lambda: cbp.Adam(lr=0.01),
                  "adamw": lambda: cbp.AdamW(lr=0.01)}
    for dtype in ("float32", "float64"):
        for act in ("relu", "tanh", "gelu"):
            for name, make in optimizers.items():
                net = cbp.Network.mlp([20, 300, 33, 4], activation=act, dtype=dtype, seed=1)
                net.fit(X, y, epochs=3, batch_size=37, optimizer=make(), progress=False)
                for i, p in enumerate(net.parameters()):
                    out[f"{dtype}-{act}-{name}-{i}"] = p.copy()
                out[f"{dtype}-{act}-{name}-proba"] = net.predict_proba(X)
        z = rng.standard_normal((50, 7)).astype(dtype) * 30
        loss, dz = ops.softmax_cross_entropy(z, rng.integers(0, 7, 50))
        out[f"{dtype}-sce"] = dz
        out[f"{dtype}-sceloss"] = np.array(loss)
    np.savez(path, **out)
    print(f"{len(out)} arrays written to {path} by cbp at {cbp.__file__}")


if __name__ == "__main__":
    main(sys.argv[1])
