"""Estimation engine: solvers, priors, regularisers, batching, errors.

Every distinct (shape, solver, prior) compiles once (seconds), so the
problems below reuse a few shapes.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.signal

import jdeconv


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def blur(x, h, mode="valid"):
    return np.asarray(jdeconv.conv2d(x, h, mode))


# Clean problems: (name, image, kernel). Images 64x64; kernels odd, even, rectangular.
def _clean_problems():
    shapes = jdeconv.shapes_image((64, 64), seed=3, n_shapes=8)
    natural = jdeconv.natural_image("camera", shape=(64, 64))
    return {
        "shapes-gauss7": (shapes, jdeconv.gaussian_kernel(7, 1.3)),
        "natural-motion8": (natural, jdeconv.motion_kernel(8, 6.0, angle=30)),
        "natural-disk7x9": (natural, jdeconv.disk_kernel((7, 9), 3.0)),
        "shapes-gauss6x4": (shapes, jdeconv.gaussian_kernel((6, 4), 1.0, sigma_y=1.5, angle=20)),
    }


CLEAN = _clean_problems()


@pytest.mark.parametrize("name", sorted(CLEAN))
@pytest.mark.parametrize("prior", ["simplex", "none"])
def test_exact_solver_recovers_clean_kernels_float64(name, prior):
    x, h = CLEAN[name]
    est = jdeconv.estimate_kernel(x, blur(x, h), h.shape, prior=prior)
    assert est.solver == "exact" and est.solver_requested == "auto"
    assert bool(est.converged) and int(est.status) == 0
    assert int(est.iterations) <= 50
    assert rel_err(est.kernel, h) <= 1e-6


@pytest.mark.parametrize("name", ["shapes-gauss7", "natural-motion8"])
def test_exact_solver_float32(name):
    x, h = CLEAN[name]
    est = jdeconv.estimate_kernel(x.astype(np.float32), blur(x, h).astype(np.float32), h.shape)
    assert est.kernel.dtype == np.float32
    assert rel_err(est.kernel, h) <= 1e-3


# First-order solvers on a well-conditioned problem (a noise calibration target):
# with enough iterations each reaches the kernel to 1e-6 (float64).
WELL = (jdeconv.noise_target((40, 40), seed=1), jdeconv.gaussian_kernel(5, 1.0))


@pytest.mark.parametrize("solver,iters", [("gd", 3000), ("fista", 3000), ("momentum", 3000),
                                          ("adam", 6000)])
@pytest.mark.parametrize("prior", ["simplex", "nonneg"])
def test_first_order_solvers_reach_1e6(solver, iters, prior):
    x, h = WELL
    est = jdeconv.estimate_kernel(x, blur(x, h), 5, solver=solver, prior=prior, max_iters=iters,
                                  tol=1e-13)
    assert est.solver == solver
    assert rel_err(est.kernel, h) <= 1e-6, est.summary()
    hist = np.asarray(est.loss_history)
    assert np.isfinite(hist[: int(est.iterations) + 1]).all()
    assert np.isnan(hist[int(est.iterations) + 1:]).all()


@pytest.mark.parametrize("solver", ["fista", "momentum"])
def test_first_order_float32(solver):
    x, h = WELL
    est = jdeconv.estimate_kernel(x.astype(np.float32), blur(x, h).astype(np.float32), 5,
                                  solver=solver, max_iters=2000)
    assert rel_err(est.kernel, h) <= 1e-3


def test_iteration_cap_reports_not_converged():
    x, h = CLEAN["shapes-gauss7"]
    est = jdeconv.estimate_kernel(x, blur(x, h), 7, solver="gd", max_iters=20)
    assert not bool(est.converged) and int(est.status) == 1 and int(est.iterations) == 20
    assert "max_iters" in est.message


def test_textbook_example_gd_converges_and_fista_is_5x_faster():
    """The original question's scene: shapes, 15x15 Gaussian sigma=2, valid mode."""
    x = jdeconv.shapes_image((128, 128), seed=0, n_shapes=10)
    h = jdeconv.gaussian_kernel(15, 2.0)
    y = blur(x, h)
    iters = 4000
    gd = jdeconv.estimate_kernel(x, y, 15, solver="gd", prior="none", max_iters=iters, tol=0,
                                 reference=h)
    fi = jdeconv.estimate_kernel(x, y, 15, solver="fista", prior="none", max_iters=iters, tol=0,
                                 reference=h)
    loss = np.asarray(gd.loss_history)
    # Gradient descent with step 1/L decreases the objective monotonically...
    assert np.all(np.diff(loss) <= 1e-12 * loss[0])
    # ...and converges (the error keeps falling), as in the reference answer.
    err_gd, err_fi = np.asarray(gd.error_history), np.asarray(fi.error_history)
    assert err_gd[-1] < 0.5 * err_gd[iters // 10] < err_gd[0]
    # FISTA reaches GD's final error in at least 5x fewer iterations.
    target = err_gd[-1]
    n_fista = int(np.argmax(err_fi <= target))
    assert err_fi[n_fista] <= target
    assert iters / n_fista >= 5, (iters, n_fista)


def test_step_from_operator_is_stable_where_the_scripts_fixed_step_is_not():
    # A brighter copy of the textbook scene: L grows with the image energy.
    x = 3.0 * jdeconv.shapes_image((128, 128), seed=0, n_shapes=10)
    h = jdeconv.gaussian_kernel(15, 2.0)
    y = blur(x, h)
    est = jdeconv.estimate_kernel(x, y, 15, solver="gd", prior="none", max_iters=4000, tol=0)
    L = float(est.lipschitz)
    assert 2e-6 > 2.0 / L  # the script's fixed step is beyond the stability limit here
    loss = np.asarray(est.loss_history)
    assert np.all(np.diff(loss) <= 1e-12 * loss[0])  # step 1/L: monotone
    # The script's fixed step diverges on this scene.
    hk = np.zeros((15, 15))
    losses = []
    for _ in range(30):
        hk = hk - 2e-6 * np.asarray(jdeconv.data_loss_grad(hk, x, y))
        losses.append(float(jdeconv.data_loss(hk, x, y)))
    assert losses[-1] > 10 * losses[0]


def test_noisy_natural_image_simplex_beats_ls_and_smoothness_helps():
    x = jdeconv.natural_image("camera", shape=(96, 96))
    h = jdeconv.gaussian_kernel(9, 1.6)
    y = jdeconv.quantize(jdeconv.add_gaussian_noise(blur(x, h), 0.01, seed=0), 8)
    err = {}
    err["ls"] = rel_err(jdeconv.estimate_kernel(x, y, 9, prior="none").kernel, h)
    err["simplex"] = rel_err(jdeconv.estimate_kernel(x, y, 9, prior="simplex").kernel, h)
    err["smooth"] = rel_err(jdeconv.estimate_kernel(
        x, y, 9, prior="simplex", regularization={"smooth": 3e-3}).kernel, h)
    assert err["simplex"] < err["ls"], err
    assert err["smooth"] < 0.8 * err["simplex"], err


@pytest.mark.parametrize("prior", ["none", "nonneg", "sum_to_one", "simplex"])
def test_every_prior_is_satisfied_with_support_mask(prior):
    x, h = WELL
    y = jdeconv.add_gaussian_noise(blur(x, h), 0.05, seed=1)
    support = np.zeros((5, 5), bool)
    support[1:4, 0:4] = True
    solvers = ["exact", "fista"] if prior == "simplex" else ["exact"]
    for solver in solvers:
        est = jdeconv.estimate_kernel(x, y, 5, prior=prior, solver=solver, support=support,
                                      max_iters=None if solver == "exact" else 500)
        k = np.asarray(est.kernel)
        assert np.all(k[~support] == 0)
        if prior in ("nonneg", "simplex"):
            assert k.min() >= 0
        if prior in ("sum_to_one", "simplex"):
            assert abs(k.sum() - 1) < 1e-9
    if prior == "simplex":  # the noisy, truncated fit has active bounds; both solvers agree
        exact = jdeconv.estimate_kernel(x, y, 5, support=support).kernel
        fista = jdeconv.estimate_kernel(x, y, 5, support=support, solver="fista", max_iters=500).kernel
        np.testing.assert_allclose(exact, fista, atol=1e-6)


def test_batch_equals_loop_and_each_kernel_satisfies_its_own_simplex():
    hs = [jdeconv.gaussian_kernel(5, s) for s in (0.8, 1.0, 1.4)] + [jdeconv.motion_kernel(5, 4.0)]
    xs = np.stack([jdeconv.noise_target((32, 32), seed=s) * 10.0 ** (3 * s - 4) for s in range(4)])
    ys = np.stack([jdeconv.add_gaussian_noise(blur(x, h), 1e-3 * x.max(), seed=i)
                   for i, (x, h) in enumerate(zip(xs, hs))])
    for solver in ["exact", "fista"]:
        batch = jdeconv.estimate_kernels(xs, ys, 5, solver=solver, max_iters=None if solver == "exact" else 300)
        assert batch.kernel.shape == (4, 5, 5)
        for i in range(4):
            single = jdeconv.estimate_kernel(xs[i], ys[i], 5, solver=solver,
                                             max_iters=None if solver == "exact" else 300)
            np.testing.assert_allclose(batch.kernel[i], single.kernel, atol=1e-9)
            assert abs(float(batch.kernel[i].sum()) - 1) < 1e-6
            assert float(batch.kernel[i].min()) >= 0


def test_sharded_batch_equals_unsharded(tmp_path):
    script = textwrap.dedent("""
        import jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        import jdeconv
        assert len(jax.devices()) == 4, jax.devices()
        h = jdeconv.gaussian_kernel(5, 1.0)
        xs = np.stack([jdeconv.noise_target((24, 24), seed=s) for s in range(6)])
        ys = np.stack([np.asarray(jdeconv.conv2d(x, h)) for x in xs])
        est = jdeconv.estimate_kernels(xs, ys, 5)
        np.save(r"%s", np.asarray(est.kernel))
    """ % (tmp_path / "sharded.npy"))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    h = jdeconv.gaussian_kernel(5, 1.0)
    xs = np.stack([jdeconv.noise_target((24, 24), seed=s) for s in range(6)])
    ys = np.stack([blur(x, h) for x in xs])
    local = np.asarray(jdeconv.estimate_kernels(xs, ys, 5).kernel)
    np.testing.assert_allclose(np.load(tmp_path / "sharded.npy"), local, atol=1e-12)


def test_same_mode_ignores_borders():
    x = jdeconv.natural_image("camera", shape=(64, 64))
    h = jdeconv.gaussian_kernel((7, 5), 1.2)
    y = scipy.signal.convolve2d(x, h, mode="same", boundary="symm")
    est = jdeconv.estimate_kernel(x, y, (7, 5), mode="same")
    assert rel_err(est.kernel, h) <= 1e-8
    # Treating the same-size image as circular would be biased by the borders.
    bad = jdeconv.estimate_kernel(x, y, (7, 5), mode="circular")
    assert rel_err(bad.kernel, h) > 1e-3


@pytest.mark.parametrize("mode", ["full", "circular"])
def test_full_and_circular_modes(mode):
    x = jdeconv.natural_image("camera", shape=(48, 48))
    h = jdeconv.disk_kernel(6, 2.5)
    y = blur(x, h, mode)
    for solver in ["exact", "fourier"]:
        est = jdeconv.estimate_kernel(x, y, 6, mode=mode, solver=solver)
        assert rel_err(est.kernel, h) <= 1e-6, (solver, rel_err(est.kernel, h))


def test_fourier_is_approximate_on_valid_data_but_reasonable():
    x = jdeconv.natural_image("camera", shape=(96, 96))
    h = jdeconv.gaussian_kernel(9, 1.6)
    est = jdeconv.estimate_kernel(x, blur(x, h), 9, solver="fourier")
    assert est.solver == "fourier" and int(est.iterations) == 1
    assert 1e-6 < rel_err(est.kernel, h) < 0.3


def test_regularization_weights_do_not_recompile():
    from jdeconv import _estimate
    x, h = WELL
    y = blur(x, h)
    jdeconv.estimate_kernel(x, y, 5, regularization={"smooth": 1e-3})
    before = _estimate._compiled.cache_info().currsize
    jdeconv.estimate_kernel(x, y, 5, regularization={"smooth": 1e-1, "tikhonov": 1e-4})
    assert _estimate._compiled.cache_info().currsize == before


def test_l1_with_nonneg_and_none():
    x = jdeconv.natural_image("camera", shape=(48, 48))
    h = jdeconv.motion_kernel(7, 5.0, angle=45)
    y = jdeconv.add_gaussian_noise(blur(x, h), 0.01, seed=2)
    dense = jdeconv.estimate_kernel(x, y, 7, prior="nonneg").kernel
    sparse = jdeconv.estimate_kernel(x, y, 7, prior="nonneg", regularization={"l1": 0.05}).kernel
    assert np.count_nonzero(np.asarray(sparse) > 1e-12) < np.count_nonzero(np.asarray(dense) > 1e-12)
    est = jdeconv.estimate_kernel(x, y, 7, prior="none", regularization={"l1": 0.05}, max_iters=300)
    assert est.solver == "fista"


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=np.ones((20, 20))), "constant"),
    (dict(x=np.zeros((20, 20))), "constant"),
    (dict(kernel_shape=30), "larger than the original"),
    (dict(kernel_shape=(0, 3)), "non-positive"),
    (dict(kernel_shape=(-1, 3)), "non-positive"),
    (dict(kernel_shape=20, y=np.ones((1, 1))), "underdetermined"),
    (dict(kernel_shape=12, y=np.ones((9, 9))), "underdetermined"),
    (dict(y=np.ones((20, 20))), "mode='same'"),
    (dict(y=np.ones((5, 5))), "has shape"),
    (dict(y=np.full((16, 16), np.nan)), "NaN"),
    (dict(x=np.full((20, 20), np.inf)), "NaN or infinite"),
    (dict(solver="fastest"), "unknown solver"),
    (dict(prior="simplx"), "Did you mean 'simplex'"),
    (dict(mode="vaild"), "Did you mean 'valid'"),
    (dict(regularization={"smoothness": 1.0}), "Did you mean 'smooth'"),
    (dict(regularization={"smooth": -1.0}), ">= 0"),
    (dict(max_iters=0), "at least 1"),
    (dict(tol=-1.0), "tol"),
    (dict(support=np.ones((3, 3), bool)), "support mask has shape"),
    (dict(support=np.zeros((5, 5), bool)), "all False"),
    (dict(prior="sum_to_one", regularization={"l1": 1.0}), "l1"),
])
def test_bad_input(kwargs, match):
    rng = np.random.default_rng(0)
    args = dict(x=rng.random((20, 20)), y=rng.random((16, 16)), kernel_shape=5)
    args.update(kwargs)
    x, y, ks = args.pop("x"), args.pop("y"), args.pop("kernel_shape")
    with pytest.raises((ValueError, TypeError), match=match):
        jdeconv.estimate_kernel(x, y, ks, **args)


def test_bad_batch_input():
    xs = np.random.default_rng(0).random((3, 20, 20))
    with pytest.raises(ValueError, match="3-D"):
        jdeconv.estimate_kernels(xs[0], xs[0][:16, :16], 5)
    with pytest.raises(ValueError, match="one blurred image per original"):
        jdeconv.estimate_kernels(xs, xs[:2, :16, :16], 5)
    bad = xs.copy()
    bad[1] = 0.5
    with pytest.raises(ValueError, match=r"pair 1\) is constant"):
        jdeconv.estimate_kernels(bad, xs[:, :16, :16], 5)


def test_float64_without_x64_is_a_clear_error():
    script = ("import jdeconv, numpy as np\n"
              "try:\n"
              "    jdeconv.estimate_kernel(np.random.rand(20, 20), np.random.rand(16, 16), 5, dtype='float64')\n"
              "except ValueError as e:\n"
              "    print('OK', e)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, JAX_ENABLE_X64="0"), timeout=120)
    assert out.stdout.startswith("OK") and "jax_enable_x64" in out.stdout


def test_auto_regularization_reports_weight_noise_and_fit():
    x = jdeconv.natural_image("camera", shape=(96, 96))
    h = jdeconv.gaussian_kernel(9, 1.6)
    y = jdeconv.quantize(jdeconv.add_gaussian_noise(blur(x, h), 0.01, seed=0), 8)
    est = jdeconv.estimate_kernel(x, y, 9, regularization="auto")
    assert float(est.regularization["smooth"]) > 0
    assert abs(float(est.noise_sigma) - 0.01) < 0.002
    assert 0.8 < float(est.fit_statistic) < 1.3
    plain = jdeconv.estimate_kernel(x, y, 9)
    assert rel_err(est.kernel, h) < rel_err(plain.kernel, h)
    # A clean pair: the weight goes to ~0 and the kernel is recovered.
    clean = jdeconv.estimate_kernel(x, blur(x, h), 9, regularization="auto")
    assert rel_err(clean.kernel, h) <= 1e-4
    # A batch gets one weight per pair.
    batch = jdeconv.estimate_kernels(np.stack([x, x]), np.stack([y, blur(x, h)]), 9,
                                     regularization="auto")
    np.testing.assert_allclose(batch.regularization["smooth"],
                               [float(est.regularization["smooth"]), float(clean.regularization["smooth"])])
    np.testing.assert_allclose(batch.kernel[0], est.kernel, atol=1e-9)
