"""The setting of the tests of work on OpenBLAS's own threads
(test_ob_threads.py, test_finite_check.py): every training step on two
OpenBLAS threads, none on one thread, none on cbp's pool, that work
switched on; skipped where it cannot happen."""
from __future__ import annotations

import contextlib

import pytest

import cbp._threads as cbp_threads
from cbp import _engine


def level1_exported():
    return cbp_threads.bind() and bool(cbp_threads._bound[4])


@contextlib.contextmanager
def steps_on_openblas_threads(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not cbp_threads.bind():
        pytest.skip("no OpenBLAS thread control: no work runs on OpenBLAS's threads")
    if not level1_exported():
        pytest.skip("this OpenBLAS does not export blas_level1_thread")
    monkeypatch.setattr(cbp_threads, "SINGLE_THREAD_WORK", 0.0)
    monkeypatch.setattr(cbp_threads, "POOL_MAX_WORK", 0.0)
    old, old_pool = _engine.set_ob_gather(True), _engine.set_pool(False)
    try:
        with threadpoolctl.threadpool_limits(2, user_api="blas"):
            yield
    finally:
        _engine.set_ob_gather(old)
        _engine.set_pool(old_pool)
