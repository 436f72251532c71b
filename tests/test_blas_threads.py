"""The BLAS thread limit around the estimate entry points."""

import threading
import warnings

import jax
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import jdeconv
from jdeconv import _blas_threads, _diagnostics, _estimate


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


def test_host_work_runs_after_the_dispatch_inside_the_limit():
    calls = []

    def fn(a):
        calls.append("dispatch")
        return jax.jit(lambda v: 2 * v)(a)

    def host_work():
        calls.append("host")
        return _blas_threads_now()

    out, seen = _blas_threads.run_beside_host_work(host_work, fn, np.arange(3.0))
    assert calls == ["dispatch", "host"] and seen and set(seen) == {1}
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])
    before = _blas_threads_now()

    def fails():
        raise RuntimeError("host check failed")

    with pytest.raises(RuntimeError, match="host check failed"):
        _blas_threads.run_beside_host_work(fails, fn, np.arange(3.0))
    assert _blas_threads_now() == before and _blas_threads._state["depth"] == 0


def test_estimate_kernel_checks_its_inputs_while_the_program_runs(monkeypatch):
    # the input warnings and the swapped-images sums are taken once, inside the BLAS
    # limit that lasts while the compiled program runs, not after it
    seen = []
    for name in ("input_messages", "sharpening_terms"):
        real = getattr(_diagnostics, name)

        def spy(*a, _real=real, _name=name, **k):
            seen.append((_name, _blas_threads._state["depth"] > 0))
            return _real(*a, **k)

        monkeypatch.setattr(_diagnostics, name, spy)
    x = jdeconv.data.shapes_image((32, 32), seed=1, n_shapes=4)
    y = jdeconv.conv2d(x, jdeconv.data.gaussian_kernel(7, 1.0), mode="same")
    jdeconv.estimate_kernel(x, y, 7, mode="same")
    assert seen == [("input_messages", True), ("sharpening_terms", True)]
    seen.clear()
    with warnings.catch_warnings(record=True) as swapped:
        warnings.simplefilter("always")
        jdeconv.estimate_kernel(y, x, 7, mode="same", throw=False)
    assert any("sharper than the original" in str(w.message) for w in swapped)
    assert seen == [("input_messages", True), ("sharpening_terms", True)]


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


def test_host_checks_of_large_images_wait_for_the_program():
    # from 2^20 pixels their image-size temporaries would add to the estimate's peak
    import types

    def problem(*shape):
        return types.SimpleNamespace(x=np.zeros(shape, np.float32))

    assert _estimate._host_work_beside(problem(512, 512))
    assert _estimate._host_work_beside(problem(4, 1000, 1000))  # a batch: per image
    assert not _estimate._host_work_beside(problem(1024, 1024))
    assert not _estimate._host_work_beside(problem(2, 2048, 2048))
