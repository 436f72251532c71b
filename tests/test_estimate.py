"""jdeconv._estimate: the engine (exact/auto paths, batches, sharding, geometry, settings, traces).

Every distinct (shape, dtype, solver, prior, max_iters) compiles once (seconds), so the
problems below reuse a few shapes, shared with the other test files.
"""

import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

import jdeconv
from jdeconv import _estimate, _host_memory
from _helpers import FIRST_ORDER_ITERS, batch_problem, blur, rel_err

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")

D = jdeconv.data


# Clean problems: (name, image, kernel). Images 64x64; kernels odd, even, rectangular.
def _clean_problems():
    shapes = D.shapes_image((64, 64), seed=3, n_shapes=8)
    natural = D.natural_image("camera", shape=(64, 64))
    return {
        "shapes-gauss7": (shapes, D.gaussian_kernel(7, 1.3)),
        "natural-motion8": (natural, D.motion_kernel(8, 6.0, angle=30)),
        "natural-disk7x9": (natural, D.disk_kernel((7, 9), 3.0)),
        "shapes-gauss6x4": (shapes, D.gaussian_kernel((6, 4), 1.0, sigma_y=1.5, angle=20)),
    }


CLEAN = _clean_problems()


# Every kernel shape under the default prior; the unconstrained path (one closed-form solve,
# the same geometry code) on an odd square and an even rectangular kernel. Each case is a
# compiled program of its own (seconds).
CLEAN_CASES = [(name, "simplex") for name in sorted(CLEAN)] + [
    ("shapes-gauss7", "none"), ("shapes-gauss6x4", "none")]


@pytest.mark.parametrize("name, prior", CLEAN_CASES)
def test_exact_solver_recovers_clean_kernels_float64(name, prior):
    x, h = CLEAN[name]
    est = jdeconv.estimate_kernel(x, blur(x, h), h.shape, prior=prior)
    assert est.solver == "exact" and est.solver_requested == "auto"
    assert bool(est.converged) and int(est.result) == 0
    assert int(est.iterations) <= 50
    assert float(est.optimality) <= 1e-9
    assert rel_err(est.kernel, h) <= 1e-6


def test_auto_resolves_by_kernel_size():
    weights = {"tikhonov": 0.0, "smooth": 0.0, "l1": 0.0}
    assert _estimate._resolve_solver("auto", "simplex", _estimate.EXACT_MAX_TAPS, weights) == "exact"
    assert _estimate._resolve_solver("auto", "simplex", _estimate.EXACT_MAX_TAPS + 1, weights) == "fista"
    assert _estimate._resolve_solver("auto", "none", 25, dict(weights, l1=0.1)) == "fista"
    with pytest.raises(ValueError, match="kernels above 4096 taps need solver='fista'"):
        _estimate._resolve_solver("exact", "simplex", 4097, weights)


# ----------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------

BATCH = batch_problem()  # the well-posed shape: shares programs with the solver tests


def test_a_cpu_batch_makes_no_batched_lapack_call(monkeypatch):
    # jaxlib runs a batched LAPACK call on the thread pool that runs the program and blocks
    # until it is done; two at once (the noise level's eigh, the solver's Cholesky) hung a
    # vmapped batch of 8 pairs (128², 15x15, "auto") on the 2-core CPU. On a CPU a batch runs
    # pair by pair (_estimate._sequential_batch): every LAPACK call is of one matrix.
    xs, ys, _ = BATCH
    core, texts = _estimate._core_batch, []

    class Lowered(Exception):
        pass

    def lower_only(*args, **static):
        texts.append(core.lower(*args, **static).as_text())
        raise Lowered

    monkeypatch.setattr(_estimate, "_core_batch", lower_only)
    for kw in ({}, {"solver": "fista", "max_iters": FIRST_ORDER_ITERS}, {"regularization": "auto"}):
        with pytest.raises(Lowered):
            jdeconv.estimate_kernels(xs, ys, 5, **kw)
    for text, kw in zip(texts, ("exact", "fista", "auto")):
        calls = re.findall(r"custom_call @(lapack_\w+)\(.*?num_batch_dims = \"(\d+)\"", text)
        assert {name for name, _ in calls} >= {"lapack_dsyevd_ffi"}, (kw, calls)  # the noise level
        assert all(dims == "0" for _, dims in calls), (kw, calls)


def test_batch_equals_loop_and_each_kernel_satisfies_its_own_simplex():
    xs, ys, _ = BATCH
    for solver in ["exact", "fista"]:
        iters = None if solver == "exact" else FIRST_ORDER_ITERS
        batch = jdeconv.estimate_kernels(xs, ys, 5, solver=solver, max_iters=iters)
        assert batch.kernel.shape == (4, 5, 5) and batch.result.shape == (4,)
        for i in range(4):
            single = jdeconv.estimate_kernel(xs[i], ys[i], 5, solver=solver, max_iters=iters,
                                             throw=False)
            np.testing.assert_allclose(batch.kernel[i], single.kernel, atol=1e-9)
            assert int(batch.result[i]) == int(single.result)
            assert int(batch.iterations[i]) == int(single.iterations)
            assert abs(float(batch.kernel[i].sum()) - 1) < 1e-6
            assert float(batch.kernel[i].min()) >= 0


def test_large_images_load_the_program_and_release_memory_before_the_run(monkeypatch):
    # From RELEASE_FROM_PIXELS on (here: every size), the estimate compiles or loads its
    # program, releases the freed memory, then runs it; the results are the same.
    xs, ys, _ = BATCH
    want = (jdeconv.estimate_kernel(xs[1], ys[1], 5, solver="exact"),
            jdeconv.estimate_kernels(xs, ys, 5, solver="exact"))
    calls, real = [], _host_memory.compile_then_release

    def spy(jitted, *args, **static):
        calls.append(jitted)
        real(jitted, *args, **static)

    monkeypatch.setattr(_estimate._host_memory, "RELEASE_FROM_PIXELS", 0)
    monkeypatch.setattr(_estimate._host_memory, "compile_then_release", spy)
    got = (jdeconv.estimate_kernel(xs[1], ys[1], 5, solver="exact"),
           jdeconv.estimate_kernels(xs, ys, 5, solver="exact"))
    assert calls == [_estimate._core_jit, _estimate._core_batch]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.kernel, w.kernel)
        np.testing.assert_array_equal(g.result, w.result)


def test_one_shared_original_with_many_blurred_images_equals_separate_calls():
    xs, _, hs = BATCH
    x = xs[1]
    ys = np.stack([blur(x, h) for h in hs])
    shared = jdeconv.estimate_kernels(x, ys, 5)
    assert shared.kernel.shape == (4, 5, 5)
    for i, h in enumerate(hs):
        single = jdeconv.estimate_kernel(x, ys[i], 5)
        np.testing.assert_allclose(shared.kernel[i], single.kernel, atol=1e-9)
        assert rel_err(shared.kernel[i], h) <= 1e-6
    ref = jdeconv.estimate_kernels(np.stack([x] * 4), ys, 5)  # the same, with x repeated
    np.testing.assert_allclose(shared.kernel, ref.kernel, atol=1e-9)


def test_sharded_batch_equals_unsharded(tmp_path):
    xs, ys, _ = BATCH
    np.save(tmp_path / "xs.npy", xs)
    np.save(tmp_path / "ys.npy", ys)
    script = textwrap.dedent(f"""
        import jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        import jdeconv
        assert len(jax.devices()) == 2, jax.devices()
        xs, ys = np.load(r"{tmp_path / 'xs.npy'}"), np.load(r"{tmp_path / 'ys.npy'}")
        # 3 pairs on 2 devices: padded to 4 (two pairs a device, which deadlocked while
        # each device vmapped its pairs), then cut back
        est = jdeconv.estimate_kernels(xs[:3], ys[:3], 5)
        assert est.kernel.shape == (3, 5, 5), est.kernel.shape
        assert (np.asarray(est.result) == 0).all(), est.result
        np.save(r"{tmp_path / 'sharded.npy'}", np.asarray(est.kernel))
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu",  # the suite's compile options stay
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    local = np.asarray(jdeconv.estimate_kernels(xs, ys, 5).kernel)[:3]
    np.testing.assert_allclose(np.load(tmp_path / "sharded.npy"), local, atol=1e-12)


# ----------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------

def test_same_mode_ignores_borders():
    x, h = CLEAN["natural-disk7x9"][0], D.gaussian_kernel((7, 9), 1.2)
    y = scipy.signal.convolve2d(x, h, mode="same", boundary="symm")
    est = jdeconv.estimate_kernel(x, y, (7, 9), mode="same")
    assert est.mode == "same"
    assert rel_err(est.kernel, h) <= 1e-8
    # Treating the same-size image as circular would be biased by the borders.
    bad = jdeconv.estimate_kernel(x, y, (7, 9), mode="circular")
    assert rel_err(bad.kernel, h) > 1e-3


@pytest.mark.parametrize("mode", ["full", "circular"])
def test_full_and_circular_modes(mode):
    x = D.natural_image("camera", shape=(48, 48))
    h = D.disk_kernel(6, 2.5)
    est = jdeconv.estimate_kernel(x, blur(x, h, mode), 6, mode=mode)
    assert rel_err(est.kernel, h) <= 1e-6


# ----------------------------------------------------------------------------
# Settings: solver options, limits, errors
# ----------------------------------------------------------------------------

def test_solver_options_are_validated_with_did_you_mean():
    x, h = CLEAN["shapes-gauss7"]
    y = blur(x, h)
    with pytest.raises(ValueError, match="solver 'fista' has no option 'restrat'; its options are: "
                                         "restart, matrix_free. Did you mean 'restart'"):
        jdeconv.estimate_kernel(x, y, 7, solver="fista", solver_options={"restrat": False})
    with pytest.raises(ValueError, match="solver 'gd' has no option 'momentum'; its options are: "
                                         "matrix_free[.]"):
        jdeconv.estimate_kernel(x, y, 7, solver="gd", solver_options={"momentum": 0.5})
    # "auto" resolves first: its options are the exact solver's
    with pytest.raises(ValueError, match="solver 'exact' has no option 'restart'"):
        jdeconv.estimate_kernel(x, y, 7, solver_options={"restart": True})
    with pytest.raises(TypeError, match="'restart' must be true or false"):
        jdeconv.estimate_kernel(x, y, 7, solver="fista", solver_options={"restart": "no"})
    with pytest.raises(TypeError, match="solver_options must be a mapping"):
        jdeconv.estimate_kernel(x, y, 7, solver_options=[("max_fallback_iters", 3)])
    with pytest.raises(ValueError, match="momentum is 1.0; it must be in"):
        jdeconv.estimate_kernel(x, y, 7, solver="momentum", solver_options={"momentum": 1.0})
    with pytest.raises(ValueError, match="learning_rate is -1.0; it must be > 0"):
        jdeconv.estimate_kernel(x, y, 7, solver="adam", solver_options={"learning_rate": -1.0})
    with pytest.raises(ValueError, match="eps is 0.0; it must be > 0"):
        jdeconv.estimate_kernel(x, y, 7, solver="fourier", solver_options={"eps": 0.0})
    with pytest.raises(ValueError, match="max_fallback_iters is 1e\\+23"):
        jdeconv.estimate_kernel(x, y, 7, solver_options={"max_fallback_iters": 1e23})
    assert set(_estimate.SOLVER_OPTIONS) == set(jdeconv.SOLVERS) - {"auto"}


def test_exact_solver_options_are_reachable():
    """No fallback budget and one PDAS iteration leave a noisy simplex fit unfinished (with the
    default fallback budget the same solve converges: tests/solvers/test_exact.py)."""
    x, h = CLEAN["shapes-gauss7"]
    y = D.add_gaussian_noise(blur(x, h), 0.05, seed=1)
    starved = jdeconv.estimate_kernel(x, y, 7, max_iters=1, throw=False,
                                      solver_options={"max_fallback_iters": 0})
    assert dict(starved.solver_options) == {"max_fallback_iters": 0}
    assert not bool(starved.converged) and int(starved.iterations) <= 1
    assert int(starved.result) == jdeconv.RESULTS.max_steps_reached


@pytest.mark.parametrize("max_iters", [1e23, 10**23, 10_000_001])
def test_huge_max_iters_is_a_clear_error(max_iters):
    x, h = CLEAN["shapes-gauss7"]
    with pytest.raises(ValueError, match="max_iters is .*; it must be at most 10000000"):
        jdeconv.estimate_kernel(x, blur(x, h), 7, max_iters=max_iters)


def test_whole_float_max_iters_is_accepted():
    x, h = CLEAN["shapes-gauss7"]
    est = jdeconv.estimate_kernel(x, blur(x, h), 7, max_iters=100.0)
    assert est.max_iters == 100 and type(est.max_iters) is int


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(solver="fastest"), ValueError, "unknown solver"),
    (dict(prior="simplx"), ValueError, "Did you mean 'simplex'"),
    (dict(regularization={"smoothness": 1.0}), ValueError, "Did you mean 'smooth'"),
    (dict(regularization={"smooth": -1.0}), ValueError, ">= 0"),
    (dict(regularization="gcv"), ValueError, "None, 'auto' or a mapping"),
    (dict(regularization="auto", solver="fista"), ValueError, "needs the exact solver"),
    (dict(max_iters=0), ValueError, "at least 1"),
    (dict(max_iters=2.5), TypeError, "max_iters must be an integer"),
    (dict(tol=-1.0), ValueError, "tol"),
    (dict(prior="sum_to_one", regularization={"l1": 1.0}), ValueError, "l1"),
    (dict(reference=np.ones((3, 3))), ValueError, "reference kernel has shape"),
    (dict(reference=np.zeros((5, 5))), ValueError, "all zeros"),
])
def test_bad_settings(kwargs, err, match):
    rng = np.random.default_rng(0)
    with pytest.raises(err, match=match):
        jdeconv.estimate_kernel(rng.random((20, 20)), rng.random((16, 16)), 5, **kwargs)


# ----------------------------------------------------------------------------
# Compilation: counted as real traces of the jitted engine
# ----------------------------------------------------------------------------

_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


class _TraceCounter:
    """Counts traces of the engine's jitted function (jax re-traces only on a cache miss)."""

    def __init__(self, names=("_core", "_core_batch")):
        self.names, self.count = names, 0

    def __call__(self, event, duration, **kwargs):
        if event == _TRACE_EVENT and kwargs.get("fun_name") in self.names:
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


def test_weights_tol_and_data_do_not_retrace_but_dtype_does():
    """Also the float32 accuracy of the exact solver (float32 of this shape: only here)."""
    x1, h = CLEAN["shapes-gauss7"]  # float64: compiled by the clean-kernel test, or here
    x2 = CLEAN["natural-motion8"][0]
    y1, y2 = blur(x1, h), blur(x2, h)
    jdeconv.estimate_kernel(x1, y1, 7, regularization={"smooth": 1e-3})
    with _TraceCounter() as again:
        jdeconv.estimate_kernel(x1, y1, 7, regularization={"smooth": 1e-1, "tikhonov": 1e-4})
        jdeconv.estimate_kernel(x1, y1, 7)  # no regularisation: the same program
        jdeconv.estimate_kernel(x1, y1, 7, tol=1e-6)
        jdeconv.estimate_kernel(x2, y2, 7)  # other data of the same shape
    assert again.count == 0
    with _TraceCounter() as f32:  # another dtype: exactly one new trace
        est = jdeconv.estimate_kernel(x1.astype(np.float32), y1.astype(np.float32), 7)
    assert f32.count == 1  # (the counter sees real traces)
    assert est.kernel.dtype == jnp.float32
    assert rel_err(est.kernel, h) <= 1e-3
    with _TraceCounter() as again32:
        jdeconv.estimate_kernel(x2.astype(np.float32), y2.astype(np.float32), 7, tol=1e-3)
    assert again32.count == 0


def test_residual_norm_from_the_normal_equations_equals_the_direct_norm():
    # float64 plain least squares: ||r||² = hᵀGh − 2bᵀh + ||y||² (no image-size convolution)
    xs, ys, hs = BATCH  # 0.1 % noise, image scales 1e-4 to 1e5
    for x, y in zip(xs, ys):
        est = jdeconv.estimate_kernel(x, y, 5)
        direct = np.linalg.norm(np.asarray(jdeconv.conv2d(x, est.kernel)) - y)
        assert float(est.residual_norm) == pytest.approx(direct, rel=1e-8)
    # Regularised: the data part of G h is the solver's product less R h (from R's stencil)
    x, y = xs[2], ys[2]
    for reg in ({"smooth": 1e-1, "tikhonov": 1e-2}, "auto"):
        est = jdeconv.estimate_kernel(x, y, 5, regularization=reg)
        assert float(est.regularization["smooth"]) > 0
        direct = np.linalg.norm(np.asarray(jdeconv.conv2d(x, est.kernel)) - y)
        assert float(est.residual_norm) == pytest.approx(direct, rel=1e-8)
    # A nearly exact fit, where the expansion would be rounding error: computed directly.
    x = xs[1]
    y = np.asarray(jdeconv.conv2d(x, hs[1]))
    est = jdeconv.estimate_kernel(x, y, 5)
    direct = np.linalg.norm(np.asarray(jdeconv.conv2d(x, est.kernel)) - y)
    assert direct < 1e-9 * np.linalg.norm(y)
    assert float(est.residual_norm) == pytest.approx(direct, rel=1e-3, abs=0)


def test_block_sizes_are_coarse_for_large_images_and_absent_under_vmap():
    """Fine steps below 2^20 padded pixels, the coarse ladder from there (program memory)."""
    from jdeconv import _schedule
    from jdeconv._solvers import exact

    big = _schedule.LARGE_PIXELS
    assert _estimate._block_sizes(961, 285 * 285, False) == exact.default_block_sizes(961)
    assert 384 in _estimate._block_sizes(961, big - 1, False)
    assert _estimate._block_sizes(961, big, False) == exact.default_block_sizes(961, fine=False)
    assert 384 not in _estimate._block_sizes(961, 2078 * 2078, False)
    assert _estimate._block_sizes(961, 285 * 285, True) == ()


def test_large_kernels_start_the_exact_solver_from_the_fourier_guess(monkeypatch):
    """From 400 taps the first active set is the Fourier guess's; the answer is the same."""
    from jdeconv import _implicit
    from jdeconv._solvers import exact

    calls = []
    real = _implicit.solve_qp_differentiable
    monkeypatch.setattr(_implicit, "solve_qp_differentiable",
                        lambda *a, **k: calls.append(k) or real(*a, **k))

    x = jnp.asarray(jdeconv.data.natural_image("camera", shape=(44, 44)))
    h = np.zeros((20, 20))
    h[4:7, 3:15] = 1.0  # an off-centre streak in a generous box
    h /= h.sum()
    y = jnp.asarray(blur(x, h) + 1e-3 * np.random.default_rng(0).standard_normal((25, 25)))
    mask = jnp.ones(400, bool)
    args = dict(x=x, y=y, kernel_shape=(20, 20), mode="valid", prior="simplex", mask=mask,
                general=False)
    assert _estimate._first_active_set(**args).shape == (400,)
    for change in (dict(kernel_shape=(19, 21)), dict(mode="full"), dict(mode="circular"),
                   dict(prior="none"), dict(prior="sum_to_one"), dict(general=True)):
        assert _estimate._first_active_set(**{**args, **change}) is None, change
    est = jdeconv.estimate_kernel(x, y, 20, throw=False)  # a shape no other test compiles
    assert len(calls) == 1 and calls[0]["initial_active"].shape == (400,)  # the solve starts from it
    assert calls[0]["block_sizes"] == _estimate._block_sizes(400, 44 * 44, False) == (64, 128, 256)
    ne = jdeconv.normal_equations(x, y, 20)
    cold = exact.solve_qp(ne.gram, ne.rhs, prior="simplex")  # from the full support
    assert bool(est.converged) and bool(cold.converged)
    np.testing.assert_allclose(np.asarray(est.kernel).ravel(), cold.solution, rtol=0, atol=1e-8)
