"""Helpers for the tests that run training concurrently: in several
Python threads at once, or in a child process after fork."""
from __future__ import annotations

import multiprocessing
import threading

import pytest

needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="no fork")


def in_threads(fn, args, timeout=120):
    """fn(a) for every a of args, each in its own thread, all at once; the
    results in order.  Fails if a thread is still running after timeout."""
    results = [None] * len(args)

    def run(i):
        results[i] = fn(args[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a training thread hung"
    return results


def _child(queue, fn):
    try:
        queue.put(fn())
    except BaseException as exc:  # pragma: no cover - reported by the parent
        queue.put(("error", repr(exc)))


def in_forked_child(fn, timeout=120):
    """fn() in a child process made by fork (fn must return something
    picklable); its result.  Fails if the child raised or died."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue, fn))
    child.start()
    result = queue.get(timeout=timeout)
    child.join(timeout=30)
    assert child.exitcode == 0, result
    assert not (isinstance(result, tuple) and result[:1] == ("error",)), result
    return result
