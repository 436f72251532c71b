"""jdeconv._solvers.exact: the exact dense QP solver (solve_qp) and its histories."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.optimize as sopt
from hypothesis import given, settings
from hypothesis import strategies as st

import jdeconv
from jdeconv._solvers.exact import PRIORS, QPResult, default_tol, solve_qp

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")

INEQ = ("nonneg", "simplex")
EQ = ("sum_to_one", "simplex")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def rand_spd(rng, n, cond, scale=1.0):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    d = np.logspace(0, -np.log10(cond), n) if n > 1 else np.ones(1)
    g = (q * d) @ q.T
    return scale * 0.5 * (g + g.T)


def objective(G, b, h):
    return 0.5 * h @ G @ h - b @ h


def project_simplex_np(x):
    """Euclidean projection onto the probability simplex (sort algorithm)."""
    u = np.sort(x)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u - css / np.arange(1, len(x) + 1) > 0)[0][-1]
    return np.maximum(x - css[rho] / (rho + 1), 0.0)


def check_kkt(G, b, h, mask, prior, tol=1e-9):
    """Direct check of the KKT conditions (float64 numpy)."""
    G, b, h = (np.asarray(x, np.float64) for x in (G, b, h))
    mask = np.asarray(mask, bool)
    assert np.all(np.isfinite(h))
    assert np.all(h[~mask] == 0.0)
    if prior in INEQ:
        assert h.min() >= -1e-12
    if prior in EQ:
        assert abs(h.sum() - 1.0) < 1e-10
    g = G @ h - b
    scale = np.linalg.norm(G, 2) * np.abs(h).max() + np.abs(b[mask]).max(initial=0.0)
    scale = max(scale, 1e-300)
    free = mask & (h > 0) if prior in INEQ else mask
    mu = g[free].mean() if (prior in EQ and free.any()) else 0.0
    lam = g - mu
    assert np.abs(lam[free]).max(initial=0.0) <= tol * scale  # stationarity
    if prior in INEQ:  # dual feasibility of the bound multipliers
        assert lam[mask & ~free].min(initial=0.0) >= -tol * scale


def reference(G, b, mask, prior, h_solver=None):
    """Independent float64 reference solution.

    none / sum_to_one: dense (KKT) solve; nonneg / simplex with <= 9 free
    variables: brute force over all supports; larger nonneg: scipy NNLS via
    the Cholesky factor; larger simplex: the EQP on the solver's support,
    whose optimality is certified by ``check_kkt`` (KKT conditions are
    sufficient for a convex QP).  (SLSQP was tried as a cross-check but it
    is not reliable enough at this precision on kappa ~ 1e5 problems.)
    """
    n = len(b)
    S = np.flatnonzero(mask)
    GS, bS = G[np.ix_(S, S)], b[S]
    h = np.zeros(n)
    if prior == "none":
        h[S] = np.linalg.solve(GS, bS)
        return h
    if prior == "sum_to_one":
        m = len(S)
        K = np.block([[GS, np.ones((m, 1))], [np.ones((1, m)), np.zeros((1, 1))]])
        h[S] = np.linalg.solve(K, np.append(bS, 1.0))[:m]
        return h
    if len(S) <= 9:  # brute force over supports: min objective among feasible EQP solutions
        best, best_q = None, np.inf
        for r in range(0 if prior == "nonneg" else 1, len(S) + 1):
            for sub in itertools.combinations(S, r):
                sub = list(sub)
                x = np.zeros(n)
                if sub:
                    x[sub] = reference(G, b, np.isin(np.arange(n), sub),
                                       "none" if prior == "nonneg" else "sum_to_one")[sub]
                if x.min() < -1e-13 * max(1.0, np.abs(x).max()):
                    continue
                q = objective(G, b, x)
                if q < best_q:
                    best, best_q = x, q
        return best
    if prior == "simplex":
        supp = np.asarray(h_solver) > 0
        h = reference(G, b, supp, "sum_to_one")
        return h
    assert prior == "nonneg"  # scipy NNLS through the Cholesky factor
    R = np.linalg.cholesky(GS).T
    d = np.linalg.solve(R.T, bS)
    h[S] = sopt.nnls(R, d, maxiter=50 * len(S))[0]
    return h


def im2col(img, k):
    """A with A @ h.ravel() == valid convolution img * h (the kernel operator's dense matrix)."""
    return np.asarray(jdeconv.kernel_operator(np.asarray(img, np.float64), (k, k)).as_matrix())


def smooth_image(N, sigma, seed=0):
    x = np.random.default_rng(seed).standard_normal((N, N))
    return ndi.gaussian_filter(x, sigma) + 0.3


def kernel(name, k):
    x = np.arange(k) - (k - 1) / 2
    if name == "gauss":
        h = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (k / 6) ** 2))
    elif name == "motion":  # a slanted line: most taps exactly zero
        h = np.zeros((k, k))
        for t in range(k):
            h[t, min(k - 1, t // 2 + 1)] = 1.0 + 0.3 * t / k
    else:  # disk
        h = ((x[:, None] ** 2 + x[None, :] ** 2) <= (k / 3) ** 2).astype(float)
    return (h / h.sum()).ravel()


@functools.lru_cache(maxsize=None)
def conv_problem(sigma, kname, k=7, N=40, noise=0.0):
    img = smooth_image(N, sigma)
    A = im2col(img, k)
    h_true = kernel(kname, k)
    y = A @ h_true
    if noise:
        y = y + noise * y.std() * np.random.default_rng(1).standard_normal(y.shape)
    return A.T @ A, A.T @ y, h_true


# --------------------------------------------------------------------------
# random SPD problems (hypothesis)
# --------------------------------------------------------------------------


@settings(max_examples=15)
@given(
    n=st.sampled_from([1, 2, 5, 9, 25]),
    prior=st.sampled_from(PRIORS),
    seed=st.integers(0, 2**31 - 1),
    log_cond=st.sampled_from([1, 3, 5]),
    scale=st.sampled_from([1e-3, 1.0, 1e4]),
    density=st.sampled_from([0.5, 1.0]),
)
def test_random_spd_kkt_and_reference(n, prior, seed, log_cond, scale, density):
    rng = np.random.default_rng(seed)
    G = rand_spd(rng, n, 10.0**log_cond, scale)
    h0 = np.abs(rng.standard_normal(n)) * (rng.random(n) < 0.5)
    b = G @ h0 + rng.standard_normal(n) * scale * rng.choice([1e-3, 1.0])
    mask = rng.random(n) < density
    mask[rng.integers(n)] = True
    res = solve_qp(G, b, prior=prior, mask=mask)
    assert isinstance(res, QPResult)
    assert bool(res.converged)
    assert res.iterations.dtype == jnp.int32
    h = np.asarray(res.solution)
    check_kkt(G, b, h, mask, prior)
    ref = reference(G, b, mask, prior, h)
    np.testing.assert_allclose(h, ref, rtol=0, atol=1e-8 * max(np.abs(ref).max(), 1e-300))
    assert float(res.kkt_residual) <= 1e-9
    act = np.asarray(res.active_set)
    assert np.all(act[~mask]) and np.all(h[act] == 0)
    if prior in INEQ:  # force the primal active-set fallback: same optimum
        fb = solve_qp(G, b, prior=prior, mask=mask, max_iters=1)
        assert bool(fb.converged)
        assert int(fb.iterations) <= 1 + 2 * n + 1
        atol = 1e-8 * max(np.abs(ref).max(), 1e-300)
        np.testing.assert_allclose(fb.solution, h, rtol=0, atol=atol)


# --------------------------------------------------------------------------
# badly conditioned convolution Gram matrices
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kname", ["gauss", "motion", "disk"])
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("sigma", [0.7, 1.0])  # kappa(G) ~ 2.8e3 and ~ 2.5e6
def test_conv_gram_recovers_kernel_float64(sigma, prior, kname):
    G, b, h_true = conv_problem(sigma, kname)
    res = solve_qp(G, b, prior=prior)
    h = np.asarray(res.solution)
    assert bool(res.converged)
    assert int(res.iterations) <= 5
    err = np.linalg.norm(h - h_true) / np.linalg.norm(h_true)
    assert err <= 1e-8, err
    check_kkt(G, b, h, np.ones_like(h, bool), prior, tol=1e-9)


@pytest.mark.parametrize("kname", ["gauss", "motion", "disk"])
@pytest.mark.parametrize("prior", PRIORS)
def test_conv_gram_recovers_kernel_float32(prior, kname):
    # kappa ~ 2.8e3: float32 attains ~1e-5 (kappa * eps32 ~ 3e-4 bound).
    G, b, h_true = conv_problem(0.7, kname)
    res = solve_qp(jnp.asarray(G, jnp.float32), jnp.asarray(b, jnp.float32), prior=prior)
    h = np.asarray(res.solution, np.float64)
    assert res.solution.dtype == jnp.float32
    assert bool(res.converged)
    assert int(res.iterations) <= 20
    err = np.linalg.norm(h - h_true) / np.linalg.norm(h_true)
    assert err <= 1e-3, err
    if prior in INEQ:
        assert h.min() >= 0
    if prior in EQ:
        assert abs(h.sum() - 1) < 1e-6


@pytest.mark.parametrize("kname", ["gauss", "motion", "disk"])
def test_noisy_simplex(kname):
    G, b, h_true = conv_problem(1.0, kname, noise=0.02)
    res = solve_qp(G, b, prior="simplex")
    h = np.asarray(res.solution)
    assert bool(res.converged)
    assert int(res.iterations) <= 20  # measured 4-10
    check_kkt(G, b, h, np.ones_like(h, bool), "simplex")
    h_unc = np.linalg.solve(G, b)
    assert (h_unc < 0).sum() > 3  # the unconstrained solution really is infeasible
    h_proj = project_simplex_np(h_unc)
    assert objective(G, b, h) <= objective(G, b, h_proj)
    h_clip = np.maximum(h_unc, 0) / np.maximum(h_unc, 0).sum()
    assert objective(G, b, h) <= objective(G, b, h_clip)


# --------------------------------------------------------------------------
# vmap / jit / fallback / failure reporting
# --------------------------------------------------------------------------


def _batch(seed=3, B=6, n=25):
    rng = np.random.default_rng(seed)
    Gs, bs, ms = [], [], []
    for i in range(B):
        G = rand_spd(rng, n, 10.0 ** rng.uniform(1, 5))
        b = rng.standard_normal(n)
        G, b = (G * 1e6, b * 1e6) if i % 2 else (G, b)  # wildly different scales
        if i == 4:
            b = b * 1e-6
        m = rng.random(n) < 0.8
        m[0] = True
        Gs.append(G), bs.append(b), ms.append(m)
    return np.stack(Gs), np.stack(bs), np.stack(ms)


@pytest.mark.parametrize("prior", PRIORS)
def test_vmap_matches_loop(prior):
    Gs, bs, _ = _batch()
    batched = jax.vmap(lambda G, b: solve_qp(G, b, prior=prior))(Gs, bs)
    assert batched.solution.shape == bs.shape
    full = np.ones(bs.shape[1], bool)
    for i in range(len(bs)):
        single = solve_qp(Gs[i], bs[i], prior=prior)
        h = np.asarray(batched.solution[i])
        scale = np.abs(np.asarray(single.solution)).max()
        np.testing.assert_allclose(h, single.solution, rtol=0, atol=1e-10 * scale)
        assert bool(batched.converged[i]) and bool(single.converged)
        assert int(batched.iterations[i]) == int(single.iterations)
        check_kkt(Gs[i], bs[i], h, full, prior)  # each satisfies its own constraints


def test_vmap_with_shared_mask():
    # (a mask batched per problem works too, but costs one more compilation)
    Gs, bs, ms = _batch()
    m = ms[1]
    out = jax.vmap(lambda G, b: solve_qp(G, b, prior="simplex", mask=m))(Gs, bs)
    assert bool(jnp.all(out.converged))
    for i in range(len(bs)):
        check_kkt(Gs[i], bs[i], np.asarray(out.solution[i]), m, "simplex")
        single = solve_qp(Gs[i], bs[i], prior="simplex", mask=m)
        np.testing.assert_allclose(out.solution[i], single.solution, rtol=0, atol=1e-10)


def test_jit_equals_nojit():
    rng = np.random.default_rng(7)
    G = rand_spd(rng, 5, 1e4)
    b = rng.standard_normal(5)
    for prior in ("simplex",):
        jitted = solve_qp(G, b, prior=prior)
        with jax.disable_jit():
            eager = solve_qp(G, b, prior=prior)
        np.testing.assert_allclose(eager.solution, jitted.solution, rtol=1e-10, atol=1e-12)
        assert int(eager.iterations) == int(jitted.iterations)
        assert bool(eager.converged) == bool(jitted.converged)


@pytest.mark.parametrize("prior", INEQ)
def test_fallback_when_pdas_budget_is_exhausted(prior):
    """max_iters=1 forces the primal active-set fallback; still exact and bounded."""
    G, b, _ = conv_problem(1.0, "disk", noise=0.02)
    full = solve_qp(G, b, prior=prior)
    fb = solve_qp(G, b, prior=prior, max_iters=1)
    assert bool(fb.converged) and bool(full.converged)
    n = len(b)
    assert 1 < int(fb.iterations) <= 1 + 2 * n + 1
    np.testing.assert_allclose(fb.solution, full.solution, rtol=0, atol=1e-9)
    check_kkt(G, b, np.asarray(fb.solution), np.ones(n, bool), prior)
    # a budget too small for the fallback is reported honestly
    starved = solve_qp(G, b, prior=prior, max_iters=1, max_fallback_iters=1)
    assert not bool(starved.converged)
    assert int(starved.iterations) <= 2


def test_singular_gram_is_flagged():
    img = np.full((12, 12), 0.5)  # constant image: G = c * 11^T (rank one)
    A = im2col(img, 3)
    G = A.T @ A
    b = A.T @ (A @ kernel("gauss", 3))
    for prior in ("none", "simplex"):
        res = solve_qp(G, b, prior=prior)
        assert not bool(res.converged)


def test_trivial_sizes_and_errors():
    res = solve_qp(np.array([[2.0]]), np.array([-1.0]), prior="simplex")
    assert float(res.solution[0]) == 1.0 and bool(res.converged)
    res = solve_qp(np.array([[2.0]]), np.array([-1.0]), prior="nonneg")
    assert float(res.solution[0]) == 0.0 and bool(res.converged) and bool(res.active_set[0])
    with pytest.raises(ValueError):
        solve_qp(np.eye(2), np.ones(2), prior="l1")


# --------------------------------------------------------------------------
# histories (history=True): one entry per active-set iteration, plus the start
# --------------------------------------------------------------------------


@pytest.mark.parametrize("max_iters", [100, 1])  # 1: the primal active-set fallback does the work
def test_histories_have_iterations_plus_one_finite_entries(max_iters):
    G, b, _ = conv_problem(1.0, "disk", noise=0.02)
    n = len(b)
    for prior in PRIORS:
        res = solve_qp(G, b, prior=prior, max_iters=max_iters, history=True)
        it = int(res.iterations)
        obj, opt = np.asarray(res.objective_history), np.asarray(res.optimality_history)
        assert obj.shape == opt.shape == (max_iters + 2 * n + max_iters + 1,)
        for hist in (obj, opt):
            assert np.isfinite(hist[: it + 1]).all() and np.isnan(hist[it + 1:]).all()
        # the last entries are the returned solution's objective and optimality
        h = np.asarray(res.solution)
        assert obj[it] == pytest.approx(objective(G, b, h), rel=1e-12)
        assert opt[it] == float(res.kkt_residual) <= 1e-9
        assert opt[0] > 1e-3  # the start is far from optimal
        if prior in INEQ and max_iters == 1:
            assert it > 2
            # the fallback keeps its iterates feasible and decreases the objective monotonically
            assert np.all(np.diff(obj[: it + 1]) <= 1e-12 * abs(obj[it]))


def test_without_history_the_histories_are_one_nan():
    G, b, _ = conv_problem(1.0, "disk", noise=0.02)
    res = solve_qp(G, b, prior="simplex")
    assert res.objective_history.shape == res.optimality_history.shape == (1,)
    assert np.isnan(np.asarray(res.objective_history)).all()
    assert default_tol(jnp.float64, 49) == 1e-9 and default_tol(jnp.float32, 49) == 1e-4
    assert default_tol(jnp.float32, 10**4) == pytest.approx(40 * 100 * np.finfo(np.float32).eps)


def test_engine_reports_the_active_set_iterations_and_their_history():
    """The estimate's iterations, loss_history and optimality_history describe the same solve."""
    x = jdeconv.data.shapes_image((64, 64), seed=3, n_shapes=8)
    h = jdeconv.data.gaussian_kernel(7, 1.3)
    y = jdeconv.data.add_gaussian_noise(np.asarray(jdeconv.conv2d(x, h)), 0.05, seed=1)
    est = jdeconv.estimate_kernel(x, y, 7)
    it = int(est.iterations)
    assert it > 1 and bool(est.converged)
    loss = np.asarray(est.loss_history)
    opt = np.asarray(est.stats["optimality_history"])
    for hist in (loss, opt):
        assert np.isfinite(hist[: it + 1]).all() and np.isnan(hist[it + 1:]).all()
    assert opt[it] == float(est.optimality)
    assert loss[it] == pytest.approx(float(est.objective), rel=1e-10)
    assert loss[it] <= loss[0]
    assert 0 < int(est.stats["active_taps"]) < 49
    err = np.asarray(est.error_history)
    assert np.isnan(err).all()  # no reference given


@pytest.mark.parametrize("prior", ["simplex", "nonneg"])
def test_free_blocks_give_the_full_factorisation_answer(prior):
    """Blocks (and the first factor, taken outside the loop) change the cost, not the answer."""
    G, b, _ = conv_problem(0.7, "motion", noise=0.02)  # 7x7: the shape the other tests use
    n = b.shape[0]
    supports = (np.ones(n, bool),  # larger than every block: the first factor is precomputed
                np.arange(n) < 24)  # fits a block: the first iteration factors a block
    for mask in supports:
        full = solve_qp(G, b, prior=prior, mask=mask, warm_start=0)
        blocked = solve_qp(G, b, prior=prior, mask=mask, block_sizes=(16, 32))
        assert bool(full.converged) and bool(blocked.converged)
        np.testing.assert_allclose(blocked.solution, full.solution, rtol=1e-9, atol=1e-12)
        assert int(blocked.iterations) == int(full.iterations)
        assert not np.any(np.asarray(blocked.solution)[~mask])
        # the first iterate alone (a later one would correct a wrong first factor)
        one = dict(prior=prior, mask=mask, max_iters=1, max_fallback_iters=0)
        np.testing.assert_allclose(solve_qp(G, b, block_sizes=(16, 32), **one).solution,
                                   solve_qp(G, b, warm_start=0, **one).solution,
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("prior", ["simplex", "nonneg"])
def test_face_statistic_comes_from_the_final_face_factor(prior):
    """The statistic sees the factor of the face the solver returns, or says it did not."""
    from jdeconv._solvers.exact import solve_qp_with_face_statistic
    G, b, _ = conv_problem(0.7, "motion", noise=0.02)
    n = b.shape[0]

    def log_det(chol, idx, valid):  # log det G_FF: depends on the face and on the factor
        return 2 * jnp.sum(jnp.where(valid, jnp.log(jnp.diagonal(chol)), 0))

    def log_det_of(res):
        free = ~np.asarray(res.active_set)
        return np.linalg.slogdet(np.asarray(G)[np.ix_(free, free)])[1]

    for blocks in ((16, 32), ()):  # a block, then the full factorisation
        res, value, taken = solve_qp_with_face_statistic(G, b, log_det, prior=prior,
                                                         block_sizes=blocks)
        plain = solve_qp(G, b, prior=prior, block_sizes=blocks)
        assert bool(taken) and bool(res.converged)
        np.testing.assert_array_equal(res.solution, plain.solution)
        np.testing.assert_allclose(float(value), log_det_of(res), rtol=1e-10)
        assert 0 < int((~np.asarray(res.active_set)).sum()) < n
    # the primal fallback ends the solve: no statistic, and the caller is told so
    res, value, taken = solve_qp_with_face_statistic(G, b, log_det, prior=prior, max_iters=1,
                                                     block_sizes=(16, 32))
    assert bool(res.converged) and int(res.iterations) > 1
    assert not bool(taken) and float(value) == 0.0
    with pytest.raises(TypeError, match="unexpected options"):
        solve_qp_with_face_statistic(G, b, log_det, bogus=1)


def test_default_block_sizes_fine_and_coarse():
    from jdeconv._solvers.exact import default_block_sizes

    assert default_block_sizes(49) == ()
    # 31 x 31: steps of 64 between 256 and 512; 768 > 0.7 n
    assert default_block_sizes(961) == (64, 128, 256, 320, 384, 448, 512, 640)
    assert default_block_sizes(1521) == (64, 128, 256, 320, 384, 448, 512, 640, 768, 1024)
    assert default_block_sizes(4096)[-4:] == (768, 1024, 1536, 2048)
    assert default_block_sizes(961, fine=False) == (64, 128, 256, 512)
    assert default_block_sizes(1521, fine=False) == (64, 128, 256, 512, 768, 1024)
    assert default_block_sizes(4096, fine=False) == (64, 128, 256, 512, 768, 1024, 1536, 2048)
    for n in (49, 400, 961, 1521, 4096):
        fine, coarse = default_block_sizes(n), default_block_sizes(n, fine=False)
        assert set(coarse) <= set(fine) and all(s <= 0.7 * n for s in fine)
        assert list(fine) == sorted(fine)
