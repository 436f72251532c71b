"""jdeconv._priors: the priors as projections, the support mask, and the engine honouring them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import jdeconv
from jdeconv import _priors
from _helpers import FIRST_ORDER_ITERS, blur, well_posed

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")

PRIORS = ["none", "nonneg", "sum_to_one", "simplex"]

# jitted: one program per case (eager calls compile every primitive separately)
_project = jax.jit(jdeconv.project_prior, static_argnums=1)
_flags = jax.jit(_priors.project_flags)


def project_simplex_np(x):
    """Euclidean projection onto the probability simplex (sort algorithm)."""
    u = np.sort(x)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u - css / np.arange(1, len(x) + 1) > 0)[0][-1]
    return np.maximum(x - css[rho] / (rho + 1), 0.0)


def reference(h, prior, support):
    """NumPy projection onto the prior's set on the support (zero outside)."""
    out = np.zeros_like(h)
    v = h[support]
    if prior == "none":
        p = v
    elif prior == "nonneg":
        p = np.maximum(v, 0)
    elif prior == "sum_to_one":
        p = v + (1 - v.sum()) / v.size
    else:
        p = project_simplex_np(v)
    out[support] = p
    return out


SUPPORTS = {"full": np.ones((4, 5), bool),
            "cross": np.pad(np.ones((2, 3), bool), ((1, 1), (1, 1)))}


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("support", sorted(SUPPORTS))
def test_projection_matches_numpy_and_is_idempotent(prior, support):
    mask = SUPPORTS[support]
    h = np.random.default_rng(0).standard_normal((4, 5))
    p = np.asarray(_project(jnp.asarray(h), prior, support=jnp.asarray(mask)))
    np.testing.assert_allclose(p, reference(h, prior, mask), atol=1e-12)
    assert np.all(p[~mask] == 0)
    again = np.asarray(_project(jnp.asarray(p), prior, support=jnp.asarray(mask)))
    np.testing.assert_allclose(again, p, atol=1e-12)
    # the flag form (traced booleans, one compiled program for all priors) agrees
    flags = _flags(jnp.asarray(h.ravel()), jnp.asarray(mask.ravel()),
                   jnp.asarray(prior in ("sum_to_one", "simplex")),
                   jnp.asarray(prior in ("nonneg", "simplex")))
    np.testing.assert_allclose(np.asarray(flags).reshape(4, 5), p, atol=1e-12)


_simplex_flags = jax.jit(lambda x, m: _priors.project_flags(x, m, True, True))


@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([1, 7, 961]), seed=st.integers(0, 2**32 - 1),
       log_scale=st.floats(-3, 3), share=st.sampled_from([0.0, 0.3, 1.0]))
@example(n=961, seed=685527, log_scale=1.5, share=0.0)  # idempotence: 1.9e-14 a tap
def test_michelot_simplex_projection_equals_the_sort_algorithm(n, seed, log_scale, share):
    """The exact solver's sort-free simplex projection: the sort algorithm's answer, on the support."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** log_scale
    x = scale * (rng.standard_normal(n) + rng.standard_normal())
    mask = rng.random(n) >= share * rng.random()  # from all taps to a few
    mask[rng.integers(n)] = True
    p = np.asarray(_simplex_flags(jnp.asarray(x), jnp.asarray(mask)))
    want = np.zeros(n)
    want[mask] = project_simplex_np(x[mask])  # the sort algorithm (optax's), in NumPy
    np.testing.assert_allclose(p, want, rtol=0, atol=1e-12 * max(1.0, np.abs(x).max()))
    assert np.all(p >= 0) and np.all(p[~mask] == 0) and abs(p.sum() - 1) < 1e-12
    # Idempotent, up to the first projection's rounding: projecting p again spreads p's sum error
    # over its positive taps (n=961 with 3 positive taps: 5.7e-14 of sum error, 1.9e-14 a tap).
    np.testing.assert_allclose(np.asarray(_simplex_flags(jnp.asarray(p), jnp.asarray(mask))),
                               p, rtol=0, atol=1e-14 + abs(p.sum() - 1))


def test_michelot_threshold_ends_on_non_finite_input_and_under_vmap():
    m = jnp.ones(7, bool)
    bad = jnp.asarray([1.0, jnp.nan, 0.5, jnp.inf, -1.0, 2.0, 0.0])
    assert not bool(jnp.isfinite(jax.jit(_priors.simplex_threshold)(bad, m)))  # returns at all
    xs = jnp.asarray(np.random.default_rng(3).standard_normal((4, 7)))
    batched = jax.jit(jax.vmap(lambda x: _priors.project_flags(x, m, True, True)))(xs)
    for i in range(4):
        np.testing.assert_allclose(batched[i], project_simplex_np(np.asarray(xs[i])), atol=1e-12)


def test_projection_keeps_float32_and_works_under_vmap():
    hs = jnp.asarray(np.random.default_rng(1).standard_normal((3, 4, 4)), jnp.float32)
    out = jax.jit(jax.vmap(lambda h: jdeconv.project_prior(h, "simplex")))(hs)
    assert out.dtype == jnp.float32
    # each kernel of a batch lies in its own simplex (kernels never mix)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), 1.0, atol=1e-6)
    one = jax.jit(lambda h: jdeconv.project_prior(h, "simplex"))
    for i in range(3):
        np.testing.assert_allclose(out[i], one(hs[i]), atol=1e-6)
    assert jdeconv.project_prior(jnp.ones((2, 2), jnp.float32), "sum_to_one").dtype == jnp.float32


def test_unknown_prior():
    with pytest.raises(ValueError, match="unknown prior 'positive'"):
        jdeconv.project_prior(jnp.ones((2, 2)), "positive")


@pytest.mark.parametrize("support, err, match", [
    (np.ones((3, 3), bool), ValueError, r"support mask has shape \(3, 3\) but the kernel shape is"),
    (np.zeros((5, 5), bool), ValueError, "all False"),
    (np.full((5, 5), 2), ValueError, "boolean"),
    (np.full((5, 5), "a"), TypeError, "boolean"),
])
def test_check_support_errors(support, err, match):
    with pytest.raises(err, match=match):
        _priors.check_support(support, (5, 5))


def test_check_support_accepts_01_numbers():
    assert _priors.check_support(None, (5, 5)) is None
    mask = _priors.check_support(np.eye(3), (3, 3))
    assert mask.dtype == jnp.bool_ and bool(mask[0, 0]) and not bool(mask[0, 1])


# ----------------------------------------------------------------------------
# The engine honours every prior with a support mask (exact and FISTA)
# ----------------------------------------------------------------------------

WELL = well_posed()


@pytest.mark.parametrize("prior", PRIORS)
def test_every_prior_is_satisfied_with_support_mask(prior):
    x, h = WELL
    y = jdeconv.data.add_gaussian_noise(blur(x, h), 0.05, seed=1)
    support = np.zeros((5, 5), bool)
    support[1:4, 0:4] = True
    solvers = ["exact", "fista"] if prior == "simplex" else ["exact"]
    kernels = {}
    for solver in solvers:
        est = jdeconv.estimate_kernel(x, y, 5, prior=prior, solver=solver, support=support,
                                      max_iters=None if solver == "exact" else FIRST_ORDER_ITERS,
                                      throw=False)
        k = np.asarray(est.kernel)
        kernels[solver] = k
        assert np.all(k[~support] == 0)
        if prior in ("nonneg", "simplex"):
            assert k.min() >= 0
        if prior in ("sum_to_one", "simplex"):
            assert abs(k.sum() - 1) < 1e-9
    if prior == "simplex":  # the noisy, truncated fit has active bounds; both solvers agree
        exact = jdeconv.estimate_kernel(x, y, 5, support=support).kernel
        np.testing.assert_allclose(exact, kernels["exact"], atol=0)
        np.testing.assert_allclose(exact, kernels["fista"], atol=1e-6)
