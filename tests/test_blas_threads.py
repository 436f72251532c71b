"""The BLAS thread limit around the estimate entry points."""

import threading

import numpy as np
from threadpoolctl import threadpool_info

import jdeconv
from jdeconv import _blas_threads, _estimate


def _blas_threads_now():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_limit_inside_and_restored_after_nested_and_threaded_use():
    before = _blas_threads_now()
    seen = []
    with _blas_threads.one_blas_thread():
        seen.append(_blas_threads_now())
        with _blas_threads.one_blas_thread():  # nested: still one, not restored by the inner exit
            pass
        seen.append(_blas_threads_now())

        def other():  # a second caller leaving first must not restore the limit
            with _blas_threads.one_blas_thread():
                pass

        t = threading.Thread(target=other)
        t.start()
        t.join()
        seen.append(_blas_threads_now())
    assert all(v and set(v) == {1} for v in seen)
    assert _blas_threads_now()[: len(before)] == before


def test_estimate_kernel_runs_with_one_blas_thread(monkeypatch):
    seen = []
    real = _estimate._core_jit

    def spy(*a, **k):
        seen.append(_blas_threads_now())
        return real(*a, **k)

    monkeypatch.setattr(_estimate, "_core_jit", spy)
    x = jdeconv.data.shapes_image((32, 32), seed=1, n_shapes=4)
    h = np.asarray(jdeconv.data.gaussian_kernel(7, 1.0))
    est = jdeconv.estimate_kernel(x, jdeconv.conv2d(x, h), 7)
    assert bool(est.converged) and seen and set(seen[0]) == {1}


def test_opt_out_leaves_blas_alone(monkeypatch):
    monkeypatch.setenv("JDECONV_BLAS_THREADS", "keep")
    before = _blas_threads_now()
    with _blas_threads.one_blas_thread():
        assert _blas_threads_now() == before


def test_psf_field_sequential_tiles_run_with_one_blas_thread(monkeypatch):
    seen = []
    real = _estimate._core_batch

    def spy(*a, **k):
        seen.append(_blas_threads_now())
        return real(*a, **k)

    monkeypatch.setattr(_estimate, "_core_batch", spy)
    x = jdeconv.data.shapes_image((48, 48), seed=1, n_shapes=6)
    h = np.asarray(jdeconv.data.gaussian_kernel(5, 0.6))  # well inside its box
    field = jdeconv.estimate_psf_field(x, jdeconv.conv2d(x, h, "same"), 5, grid=(2, 2),
                                       mode="same")
    assert seen and set(seen[0]) == {1}
    assert np.asarray(field.kernels).shape[-2:] == (5, 5)
