"""What the numbers were measured on: CPU, load, versions, BLAS libraries
and thread counts."""
from __future__ import annotations

import datetime
import importlib
import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module):
    try:
        return importlib.import_module(module).__version__
    except Exception:
        return None


def describe(threadpool_controller=None) -> dict:
    """A JSON-able record; call it after the contenders' libraries are
    imported, so threadpoolctl sees every BLAS / OpenMP library loaded."""
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {m: _version(m) for m in
                     ("cbp", "numpy", "scipy", "torch", "jax", "jaxlib", "sklearn",
                      "threadpoolctl", "matplotlib")},
        "environment": {k: os.environ[k] for k in sorted(os.environ)
                        if k.startswith(("OPENBLAS", "OMP_", "MKL_", "XLA_", "GOTO"))},
    }
    if threadpool_controller is not None:
        info["threadpools"] = [
            {k: lib.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                     "num_threads", "threading_layer", "architecture",
                                     "filepath")}
            for lib in threadpool_controller.info()]
    try:
        import torch

        info["torch_num_threads"] = torch.get_num_threads()
        info["torch_blas"] = next((line.strip() for line in torch.__config__.show().splitlines()
                                   if "Math Kernel Library" in line or "BLAS_INFO" in line),
                                  None)
    except ImportError:
        pass
    try:
        import jax

        info["jax_devices"] = [str(d) for d in jax.devices()]
    except ImportError:
        pass
    return info


def blas_summary(info) -> list[str]:
    """One line per BLAS/OpenMP library: which package ships it, threads."""
    lines = []
    for lib in info.get("threadpools", []):
        path = lib.get("filepath") or ""
        owners = {"numpy": "numpy", "scipy": "scipy", "torch": "torch", "jaxlib": "jaxlib",
                  "sklearn": "sklearn", "scikit_learn": "sklearn"}
        owner = next((name for p, name in owners.items()
                      if f"/{p}/" in path or f"/{p}.libs/" in path), "?")
        lines.append(f"{lib['user_api']:7s} {lib['internal_api']:9s} {lib.get('version') or '':14s}"
                     f" threads={lib['num_threads']}  ({owner}: {os.path.basename(path)})")
    return lines
