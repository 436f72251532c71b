"""One BLAS thread while jdeconv's compiled programs run on the CPU.

JAX runs LAPACK (Cholesky, triangular solves) on the CPU through SciPy's
OpenBLAS. After each call OpenBLAS's worker threads busy-wait, and they take the
cores XLA's own threads need: on 2 cores the FFT normal equations of a 255²
pair (60 ms alone) took 105 ms in one program with a 961² Cholesky (9 ms alone),
67 ms with one BLAS thread; a multi-threaded Cholesky was no faster there.

:func:`one_blas_thread` limits every BLAS library of the process to one thread
(``threadpoolctl``) for its duration. Calls from several Python threads share
one limit: the first sets it and the last restores the previous setting. Set
the environment variable ``JDECONV_BLAS_THREADS=keep`` to leave BLAS alone.
Inside a user's own ``jax.jit`` the limit applies only while tracing.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading

import jax

from jdeconv import _validation

__all__ = ["one_blas_thread", "run_beside_host_work", "run_with_one_blas_thread"]

_lock = threading.Lock()
_state = {"depth": 0, "limiter": None, "controller": None}


def _enabled() -> bool:
    return os.environ.get("JDECONV_BLAS_THREADS", "1").strip().lower() != "keep"


def _controller():
    """The process's BLAS libraries, found once (scanning them costs ~1 ms a call)."""
    if _state["controller"] is None:
        from threadpoolctl import ThreadpoolController

        importlib.import_module("scipy.linalg")  # loads the OpenBLAS JAX's LAPACK uses
        _state["controller"] = ThreadpoolController()
    return _state["controller"]


@contextlib.contextmanager
def one_blas_thread():
    """Context manager: BLAS limited to one thread inside (see the module docstring).

    Example:
      >>> from jdeconv._blas_threads import one_blas_thread
      >>> with one_blas_thread():
      ...     pass
    """
    if not _enabled():
        yield
        return
    with _lock:
        if _state["depth"] == 0:
            _state["limiter"] = _controller().limit(limits=1, user_api="blas")
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _state["limiter"].restore_original_limits()
                _state["limiter"] = None


def run_with_one_blas_thread(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` inside :func:`one_blas_thread`, waiting for its arrays.

    JAX dispatches asynchronously; the limit must last until the compiled
    program has run, so every concrete array of the result is waited for
    (tracers, under a user's ``jax.jit``, pass through).
    """
    return run_beside_host_work(None, fn, *args, **kwargs)[0]


def run_beside_host_work(host_work, fn, *args, **kwargs):
    """``(fn(*args, **kwargs), host_work())``, the host work done while the program runs.

    As :func:`run_with_one_blas_thread`; ``host_work`` (a function of no
    arguments, or None) is called once ``fn`` has dispatched its compiled
    program and before its arrays are waited for, so that host-side checks
    (NumPy, no JAX) take the core the program leaves idle instead of adding to
    the call's time. An exception from ``host_work`` propagates (the program's
    results are dropped).
    """
    def wait(a):
        if isinstance(a, jax.Array) and _validation.is_concrete(a):
            a.block_until_ready()
        return a

    with one_blas_thread():
        out = fn(*args, **kwargs)
        extra = None if host_work is None else host_work()
        return jax.tree_util.tree_map(wait, out), extra
