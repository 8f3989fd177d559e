"""Regenerate ``cbp/datasets/digits.npz`` from scikit-learn's copy of the digits.

One-off maintenance script: scikit-learn is needed here, never at run time.
Run from the repository root::

    python tools/make_digits.py

The archive holds ``X`` (uint8, shape (1797, 64), values 0..16) and ``y``
(uint8, shape (1797,), values 0..9). It is written with
``np.savez_compressed`` and then re-packed with fixed zip timestamps, so that
running the script again produces the same bytes (given the same zlib).
"""
from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "cbp" / "datasets" / "digits.npz"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # earliest date the zip format can store


def load_from_sklearn() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    if X.shape != (1797, 64) or y.shape != (1797,):
        raise ValueError(f"unexpected shapes {X.shape}, {y.shape}")
    # The values are small non-negative integers stored as float64: check
    # that the uint8 cast is lossless before doing it.
    if not (np.all(X == np.round(X)) and X.min() >= 0 and X.max() <= 16):
        raise ValueError("X is not integer-valued in 0..16")
    if not (np.all(y == np.round(y)) and y.min() >= 0 and y.max() <= 9):
        raise ValueError("y is not integer-valued in 0..9")
    return X.astype(np.uint8), y.astype(np.uint8)


def reproducible_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez_compressed`` output, re-packed with fixed metadata."""
    raw = io.BytesIO()
    np.savez_compressed(raw, **arrays)
    raw.seek(0)
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(
        out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9
    ) as dst:
        for name in sorted(src.namelist()):
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix, regardless of the host
            dst.writestr(info, src.read(name), compresslevel=9)
    return out.getvalue()


def main() -> int:
    X, y = load_from_sklearn()
    data = reproducible_npz({"X": X, "y": y})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(data)

    # Round-trip check.
    with np.load(OUT, allow_pickle=False) as f:
        assert np.array_equal(f["X"], X) and f["X"].dtype == np.uint8
        assert np.array_equal(f["y"], y) and f["y"].dtype == np.uint8
    print(f"wrote {OUT} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
