"""choose_regularization: accuracy against the oracle weight, clean data, no recompiles, errors."""

import jax
import numpy as np
import pytest

import jdeconv
from jdeconv import _autoreg, _regularizers
from jdeconv._autoreg import AutoRegularization, choose_regularization
from _helpers import blur, rel_err

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")

K = 9  # one kernel size for all tests: one compilation


def _pair(image, h, sigma, bits, size=96):
    xt = jdeconv.data.natural_image(image, shape=size)
    y = np.asarray(jdeconv.conv2d(xt, h))
    if sigma:
        y = jdeconv.data.add_gaussian_noise(y, sigma, seed=1)
    return jdeconv.data.quantize(xt, bits), jdeconv.data.quantize(y, bits)


def _errors(auto, h):
    H = np.asarray(auto.kernels).reshape(len(auto.candidates), -1)
    return np.linalg.norm(H - h.ravel(), axis=1) / np.linalg.norm(h)


SETTINGS = [  # (image, kernel, sigma, bits)
    ("camera", jdeconv.data.gaussian_kernel(K, 1.5), 0.005, 8),
    ("camera", jdeconv.data.gaussian_kernel(K, 1.5), 0.02, 16),
    ("camera", jdeconv.data.motion_kernel(K, 6, 30), 0.005, 8),
    ("astronaut", jdeconv.data.disk_kernel(K, 3.5), 0.005, 8),
]


@pytest.fixture(scope="module")
def results():
    out = []
    for image, h, sigma, bits in SETTINGS:
        x, y = _pair(image, h, sigma, bits)
        auto = choose_regularization(x, y, K)
        out.append((auto, _errors(auto, h), h, x, y))
    return out


def test_result_fields(results):
    auto, _, _, _, y = results[0]
    assert isinstance(auto, AutoRegularization)
    c = len(auto.candidates)
    assert auto.method == "gcv"
    assert float(auto.candidates[0]) == 0.0 and np.all(np.diff(np.asarray(auto.candidates)) > 0)
    for field in ("criterion", "rss", "dof", "penalty"):
        assert getattr(auto, field).shape == (c,)
    assert auto.kernels.shape == (c, K, K) and auto.kernel.shape == (K, K)
    assert auto.weights == {"tikhonov": 0.0, "smooth": auto.weight, "l1": 0.0}
    assert auto.weight == float(auto.candidates[auto.index])
    assert auto.n_pixels == y.size
    dof = np.asarray(auto.dof)
    assert np.all(dof <= K * K + 1e-6) and np.all(dof > 0)
    assert np.all(np.diff(dof) <= 1e-6)  # more smoothing, fewer degrees of freedom
    # the penalty (computed on the kernel grid) is hᵀ R h with the dense matrix
    H = np.asarray(auto.kernels).reshape(c, -1)
    R = _regularizers.laplacian((K, K))
    np.testing.assert_allclose(auto.penalty, np.einsum("ci,ij,cj->c", H, R, H),
                               rtol=1e-9, atol=1e-15)


def test_within_factor_of_oracle(results):
    ratios = []
    for auto, err, *_ in results:
        ratio = err[auto.index] / err.min()
        assert ratio <= 3.0, ratio
        ratios.append(ratio)
    assert np.median(ratios) <= 1.5, ratios


def test_never_much_worse_than_prior_alone(results):
    for auto, err, *_ in results:
        assert err[auto.index] <= 1.1 * err[0], (err[auto.index], err[0])


def test_noise_sigma_and_fit_statistic(results):
    for (auto, *_), (_, _, sigma, _) in zip(results, SETTINGS):
        assert abs(float(auto.noise_sigma) / sigma - 1) < 0.1
        assert 0.8 < float(auto.fit_statistic) < 1.25


def test_engine_reproduces_kernel(results):
    auto, _, _, x, y = results[0]
    est = jdeconv.estimate_kernel(x, y, K, regularization=auto.weights)
    np.testing.assert_allclose(np.asarray(est.kernel), np.asarray(auto.kernel), atol=1e-8)


@pytest.mark.parametrize("image, h", [("coffee", jdeconv.data.gaussian_kernel(K, 1.5)),
                                      ("camera", jdeconv.data.motion_kernel(K, 6, 30))])
def test_clean_16bit_pair(image, h):
    x, y = _pair(image, h, 0.0, 16)
    auto = choose_regularization(x, y, K)
    assert auto.weight <= 1e-6
    assert _errors(auto, h)[auto.index] <= 1e-4


def test_fit_statistic_flags_model_errors():
    xt = jdeconv.data.natural_image("camera", shape=100)
    x = xt[2:-2, 2:-2]  # 96x96 like the other tests: no recompilation
    y = jdeconv.data.add_gaussian_noise(np.asarray(jdeconv.conv2d(x, jdeconv.data.gaussian_kernel(K, 1.5))),
                                   0.002, seed=1)
    ok = choose_regularization(x, y, K)
    assert 0.8 < float(ok.fit_statistic) < 1.25
    # a 13x13 blur (sigma 3) estimated in a 9x9 window
    y13 = jdeconv.data.add_gaussian_noise(np.asarray(jdeconv.conv2d(xt, jdeconv.data.gaussian_kernel(13, 3.0))),
                                     0.002, seed=1)
    assert float(choose_regularization(x, y13, K).fit_statistic) > 2.0
    # a non-linear tone curve (gamma) applied to the blurred image
    gamma = np.clip(y, 0, 1) ** (1 / 2.2)
    assert float(choose_regularization(x, gamma, K).fit_statistic) > 10.0


class _TraceCounter:
    """Counts real traces of the jitted weight choice (jax re-traces only on a cache miss)."""

    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_trace_duration" and kwargs.get("fun_name") == "_choose_jit":
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


def test_no_recompile_per_weight(results):
    _, _, _, x, y = results[0]
    n = len(_autoreg.DEFAULT_CANDIDATES)
    with _TraceCounter() as traces:
        a = choose_regularization(x, y, K, candidates=np.logspace(-6, -1, n))
        b = choose_regularization(x, y, K, candidates=np.concatenate([[0.0], np.logspace(-3, 2, n - 1)]))
        choose_regularization(x, y, K, terms=("tikhonov",))  # another term: the same program
    assert traces.count == 0
    assert a.weight != b.weight


def test_methods_and_terms(results):
    auto, err, h, x, y = results[0]
    args = (auto.rss, auto.dof, auto.penalty, auto.candidates, auto.n_pixels, auto.noise_sigma)
    for method in _autoreg.METHODS:
        crit, idx = _autoreg.select(method, *args)
        assert crit.shape == auto.candidates.shape and 0 <= idx < len(auto.candidates)
    crit, idx = _autoreg.select("gcv", *args)
    assert idx == auto.index and np.allclose(crit, np.asarray(auto.criterion))
    upre = choose_regularization(x, y, K, method="upre")
    assert upre.method == "upre" and upre.index == _autoreg.select("upre", *args)[1]
    both = choose_regularization(x, y, K, terms=("tikhonov", "smooth"))
    assert both.weights["smooth"] == both.weights["tikhonov"] == both.weight


def test_same_mode_uses_valid_part():
    h = jdeconv.data.gaussian_kernel(K, 1.5)
    xt = jdeconv.data.natural_image("camera", shape=96)
    y = jdeconv.data.add_gaussian_noise(np.asarray(jdeconv.conv2d(xt, h, mode="same")), 0.01, seed=2)
    auto = choose_regularization(xt, y, K, mode="same")
    assert auto.n_pixels == (96 - K + 1) ** 2
    assert _errors(auto, h)[auto.index] < 0.1


@pytest.mark.parametrize("kwargs, err, match", [
    ({"method": "aic"}, ValueError, "method"),
    ({"terms": ("l1",)}, ValueError, "l1"),
    ({"terms": ()}, ValueError, "empty"),
    ({"terms": ("smoth",)}, ValueError, "smooth"),
    ({"candidates": [-1.0, 0.1]}, ValueError, ">= 0"),
    ({"candidates": [np.nan]}, ValueError, "finite"),
    ({"candidates": []}, ValueError, "non-empty"),
    ({"candidates": "abc"}, TypeError, "numbers"),
    ({"prior": "positive"}, ValueError, "prior"),
    ({"mode": "wrap"}, ValueError, "mode"),
])
def test_bad_arguments(kwargs, err, match):
    x = jdeconv.data.natural_image("camera", shape=48)
    y = np.asarray(jdeconv.conv2d(x, jdeconv.data.gaussian_kernel(5, 1.0)))
    with pytest.raises(err, match=match):
        choose_regularization(x, y, 5, **kwargs)


def test_bad_images():
    x = jdeconv.data.natural_image("camera", shape=48)
    y = np.asarray(jdeconv.conv2d(x, jdeconv.data.gaussian_kernel(5, 1.0)))
    with pytest.raises(ValueError, match="shape"):
        choose_regularization(x, y[:-1], 5)
    with pytest.raises(ValueError, match="NaN"):
        choose_regularization(x, np.where(y > 0.5, np.nan, y), 5)
    with pytest.raises(ValueError, match="2-D"):
        choose_regularization(x[None], y, 5)
    with pytest.raises(ValueError, match="constant"):
        choose_regularization(np.ones_like(x), y, 5)


def test_engine_auto_regularization_reports_weight_noise_and_fit():
    """estimate_kernel(..., regularization="auto"): the weight chosen inside the engine's call."""
    x = jdeconv.data.natural_image("camera", shape=(96, 96))
    h = jdeconv.data.gaussian_kernel(K, 1.6)
    y = jdeconv.data.quantize(jdeconv.data.add_gaussian_noise(blur(x, h), 0.01, seed=0), 8)
    est = jdeconv.estimate_kernel(x, y, K, regularization="auto")
    assert float(est.regularization["smooth"]) > 0
    assert abs(float(est.noise_sigma) - 0.01) < 0.002
    assert 0.8 < float(est.fit_statistic) < 1.3
    plain = jdeconv.estimate_kernel(x, y, K)
    assert rel_err(est.kernel, h) < rel_err(plain.kernel, h)
    # the engine's choice is choose_regularization's, and its kernel is the chosen candidate's
    auto = choose_regularization(x, y, K)
    assert float(est.regularization["smooth"]) == pytest.approx(auto.weight, rel=1e-12)
    np.testing.assert_allclose(est.kernel, auto.kernel, atol=1e-9)
    # the exact solver's history is the chosen candidate's solve
    it = int(est.iterations)
    assert np.isfinite(np.asarray(est.loss_history)[: it + 1]).all()
    # A clean pair: the weight goes to ~0 and the kernel is recovered.
    clean = jdeconv.estimate_kernel(x, blur(x, h), K, regularization="auto")
    assert rel_err(clean.kernel, h) <= 1e-4
    # A batch gets one weight per pair.
    batch = jdeconv.estimate_kernels(np.stack([x, x]), np.stack([y, blur(x, h)]), K,
                                     regularization="auto")
    np.testing.assert_allclose(batch.regularization["smooth"],
                               [float(est.regularization["smooth"]), float(clean.regularization["smooth"])])
    np.testing.assert_allclose(batch.kernel[0], est.kernel, atol=1e-9)


_DOF_DENSE = jax.jit(lambda gram, R, free, eq, blocks: _autoreg._dof(gram, R, 0.3, free, eq, blocks),
                     static_argnums=(3, 4))
_DOF_STENCIL = jax.jit(
    lambda gram, R, free, a, b, eq, blocks: _autoreg._dof(
        gram, R, 0.3, free, eq, blocks, stencil=(a, b), kernel_shape=(6, 5)),
    static_argnums=(5, 6))


@pytest.mark.parametrize("eq", [False, True])
def test_dof_from_the_stencil_equals_the_dense_solve(eq):
    # 6 x 5 kernel grid, 30 taps: random faces, blocks of 16 and the full matrix; the
    # stencil's weights are traced (one program for all three)
    import jax.numpy as jnp
    from jdeconv import _regularizers
    rng = np.random.default_rng(3)
    shape, n = (6, 5), 30
    A = rng.standard_normal((80, n))
    gram = jnp.asarray(A.T @ A)
    for a, b in ((1.0, 0.0), (0.0, 1.0), (0.5, 2.0)):
        R = _regularizers.traced_quadratic(shape, a, b, jnp.float64)
        for free in (rng.random(n) < 0.4, rng.random(n) < 0.8):
            free = jnp.asarray(free)
            for blocks in ((), (16,)):
                dense = _DOF_DENSE(gram, R, free, eq, blocks)
                fast = _DOF_STENCIL(gram, R, free, a, b, eq, blocks)
                np.testing.assert_allclose(fast, dense, rtol=1e-10)
            assert 0 < float(dense) < int(free.sum())


@pytest.mark.parametrize("s", [5, 64, 100, 130])
def test_lower_inverse_by_halves(s):
    rng = np.random.default_rng(s)
    A = rng.standard_normal((s, 2 * s))
    L = np.linalg.cholesky(A @ A.T)
    W = np.asarray(jax.jit(_autoreg._lower_inverse, static_argnums=1)(jax.numpy.asarray(L), 16))
    np.testing.assert_allclose(W @ L, np.eye(s), atol=1e-9)
    assert np.all(np.triu(W, 1) == 0)


def test_shifted_gershgorin_equals_the_full_pass():
    # the candidates' Lipschitz bound of G + mu R from G's row sums and R's stencil
    import jax.numpy as jnp
    from jdeconv._solvers import exact
    rng = np.random.default_rng(5)
    shape, n = (6, 5), 30
    A = rng.standard_normal((40, n))
    G = jnp.asarray(A.T @ A - 5.0)  # entries of both signs
    fn = jax.jit(_autoreg._shifted_gershgorin, static_argnames="kernel_shape")
    for a, b in ((1.0, 0.0), (0.0, 1.0), (0.5, 2.0)):
        R = _regularizers.traced_quadratic(shape, a, b, jnp.float64)
        for mask in (np.ones(n, bool), rng.random(n) < 0.6):
            mask = jnp.asarray(mask)
            rows = jnp.sum(jnp.abs(jnp.where(mask[:, None] & mask[None, :], G, 0)), axis=1)
            for mu in (0.0, 1e-3, 10.0, 1e4):
                np.testing.assert_allclose(
                    fn(rows, G, mu, mask, (a, b), kernel_shape=shape),
                    exact.gershgorin(G + mu * R, mask), rtol=1e-13)


@pytest.mark.parametrize("prior", ["simplex", "none"])
def test_sequential_path_equals_independent_solves(prior):
    # the warm starts along the weight path (previous active set, then the
    # extrapolation of the last two solutions) reach the same solutions and dof
    # as cold solves of every candidate
    import jax.numpy as jnp
    from jdeconv import _geometry, _gram
    x, y = _pair("camera", jdeconv.data.motion_kernel(K, 6, 30), 0.005, 8)
    ks = (K, K)
    x, y = jnp.asarray(x), jnp.asarray(y)
    ne = _gram.normal_equations_impl(x, y, ks, "valid")
    cands = jnp.asarray(_autoreg.DEFAULT_CANDIDATES)
    R = _autoreg._basis(("smooth",), ks)
    mask = jnp.ones((K * K,), bool)

    def run(sequential, blocks=(), max_iters=100):
        return jax.jit(lambda ne, xp, y: _autoreg.solve_candidates(
            ne, xp, y, cands, R, mask, 1e-10, kernel_shape=ks, prior=prior, max_iters=max_iters,
            sequential=sequential, stencil=_autoreg.stencil(("smooth",)),
            block_sizes=blocks))(ne, _geometry.pad(x, ks, "valid"), y)

    # With blocks, each candidate's dof come from the solver's own factor of its final
    # face. One primal-dual iteration: where the primal fallback finishes the solve
    # (more than one iteration) that factor is not of the final face, and the dof come
    # from the returned face; both kinds of candidate must equal the cold solves.
    seq, cold, blocked = run(True), run(False), run(True, (32,), max_iters=1)
    assert bool(jnp.all(seq.qp.converged)) and bool(jnp.all(cold.qp.converged))
    assert bool(jnp.all(blocked.qp.converged))
    if prior == "simplex":
        assert bool(jnp.any(blocked.qp.iterations > 1))
        assert bool(jnp.any(blocked.qp.iterations == 1))
    np.testing.assert_allclose(seq.kernels, cold.kernels, atol=1e-9)
    np.testing.assert_allclose(seq.dof, cold.dof, rtol=1e-8)
    np.testing.assert_allclose(blocked.kernels, cold.kernels, atol=1e-9)
    np.testing.assert_allclose(blocked.dof, cold.dof, rtol=1e-8)
