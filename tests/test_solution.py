"""jdeconv._solution: RESULTS codes and messages, throw=, the batch's codes, non-finite solves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdeconv
from jdeconv import RESULTS, EstimateError, KernelEstimate
from _helpers import batch_problem, blur

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")

# Shared with the solver tests (same shapes: no extra compilation).
WELL = (jdeconv.data.noise_target((40, 40), seed=1), jdeconv.data.gaussian_kernel(5, 1.0))
SHAPES = (jdeconv.data.shapes_image((64, 64), seed=3, n_shapes=8),
          jdeconv.data.gaussian_kernel(7, 1.3))
HUGE = 1e160  # the normal matrix overflows: sum x^2 > 1.8e308


def test_results_codes_and_messages():
    assert [r.value for r in RESULTS] == [0, 1, 2]
    assert RESULTS.successful.message == "converged"
    assert "max_iters" in RESULTS.max_steps_reached.message
    assert "non-finite" in RESULTS.nonfinite.message
    assert len({r.message for r in RESULTS}) == len(RESULTS)
    codes = RESULTS.where(jnp.asarray([True, False, True, False]),
                          jnp.asarray([True, True, False, False]))
    assert codes.dtype == jnp.int32 and codes.tolist() == [0, 1, 2, 2]
    assert issubclass(EstimateError, RuntimeError)


@pytest.fixture(scope="module")
def capped():
    """Gradient descent stopped by its iteration cap (tol=0 is never reached)."""
    x, h = WELL
    return jdeconv.estimate_kernel(x, blur(x, h), 5, solver="gd", max_iters=3000, tol=0,
                                   throw=False)


def test_iteration_cap_reports_not_converged(capped):
    est = capped
    assert not bool(est.converged) and int(est.result) == RESULTS.max_steps_reached
    assert int(est.iterations) == 3000 == est.max_iters
    assert "max_iters" in est.message
    assert "converged=False" in est.summary() and "iterations=3000" in est.summary()


def test_throw_raises_with_the_message():
    x, h = WELL
    with pytest.raises(EstimateError, match="did not succeed: stopped at max_iters before reaching "
                                            "tol; raise max_iters or loosen tol. Pass throw=False"):
        jdeconv.estimate_kernel(x, blur(x, h), 5, solver="gd", max_iters=3000, tol=0)


def test_successful_result_fields():
    x, h = SHAPES
    est = jdeconv.estimate_kernel(x, blur(x, h), 7)
    assert isinstance(est, KernelEstimate)
    assert int(est.result) == RESULTS.successful and bool(est.converged)
    assert est.result.dtype == jnp.int32
    assert est.message == "converged"
    assert float(est.optimality) <= est.tol == 1e-9
    assert est.kernel_shape == (7, 7) and est.mode == "valid" and est.prior == "simplex"
    assert est.solver == "exact" and est.solver_requested == "auto"
    assert dict(est.solver_options) == {"max_fallback_iters": None}
    line = est.summary()
    assert line.startswith("solver=exact (asked: auto) prior=simplex") and "converged=True" in line
    # a pytree: arrays are leaves, settings are static
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, est)
    np.testing.assert_allclose(doubled.kernel, 2 * np.asarray(est.kernel))
    assert doubled.solver == "exact" and doubled.kernel_shape == (7, 7)


def test_nonfinite_solve_is_reported_and_raised():
    x, h = SHAPES
    xb, yb = HUGE * x, HUGE * blur(x, h)
    est = jdeconv.estimate_kernel(xb, yb, 7, throw=False)
    assert int(est.result) == RESULTS.nonfinite and not bool(est.converged)
    assert "non-finite" in est.message
    with pytest.raises(EstimateError, match="non-finite values appeared"):
        jdeconv.estimate_kernel(xb, yb, 7)


def test_batch_returns_one_code_per_pair():
    xs, ys, _ = batch_problem()  # the batch shape of the engine tests: no extra compilation
    xs, ys = xs.copy(), ys.copy()
    xs[2], ys[2] = HUGE * xs[2] / xs[2].max(), HUGE * ys[2] / xs[2].max()
    batch = jdeconv.estimate_kernels(xs, ys, 5)  # throw=False by default: codes, no exception
    assert batch.result.shape == (4,)
    ok, bad = RESULTS.successful, RESULTS.nonfinite
    assert batch.result.tolist() == [ok, ok, bad, ok]
    assert batch.converged.tolist() == [True, True, False, True]
    assert batch.message == f"{RESULTS.successful.message}; {RESULTS.nonfinite.message}"
    assert "batch=4 converged=3/4" in batch.summary()
    with pytest.raises(EstimateError, match=r"\(1 of 4 pairs\).*non-finite"):
        jdeconv.estimate_kernels(xs, ys, 5, throw=True)


def test_one_outcome_text_for_estimates_and_psf_fits():
    """KernelEstimate and PSFFit share converged, message and the summary's outcome part."""
    from jdeconv._fit_psf import PSFFit
    from jdeconv._solution import _Outcome

    class Result(_Outcome):
        def __init__(self, result, iterations):
            self.result, self.iterations = jnp.asarray(result, jnp.int32), np.asarray(iterations)

    assert issubclass(KernelEstimate, _Outcome) and issubclass(PSFFit, _Outcome)
    one = Result(0, 12)
    assert bool(one.converged) and one.message == "converged"
    assert one._outcome() == "iterations=12 converged=True"
    batch = Result([0, 1, 0, 0], [10, 40, 12, 14])
    assert batch.converged.tolist() == [True, False, True, True]
    assert batch.message == f"{RESULTS.successful.message}; {RESULTS.max_steps_reached.message}"
    assert batch._outcome() == "batch=4 converged=3/4 iterations median=13 max=40"
