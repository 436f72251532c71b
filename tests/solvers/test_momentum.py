"""jdeconv._solvers.momentum: projected heavy ball (optax.sgd with momentum) and its option."""

import numpy as np
import pytest

import jdeconv
from _first_order import reaches_1e6
from _helpers import FIRST_ORDER_ITERS, blur, well_posed

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")


def test_reaches_1e6():
    # (nonneg: in test_fista.py; each (solver, prior) is a program of its own)
    prior = "simplex"
    est = reaches_1e6("momentum", prior)
    assert dict(est.solver_options) == {"momentum": 0.9, "matrix_free": None}


def test_momentum_option_is_reachable_and_zero_is_gradient_descent():
    x, h = well_posed()
    y = blur(x, h)
    kwargs = dict(max_iters=FIRST_ORDER_ITERS, tol=1e-13, throw=False)
    beta0 = jdeconv.estimate_kernel(x, y, 5, solver="momentum", solver_options={"momentum": 0.0},
                                    **kwargs)
    gd = jdeconv.estimate_kernel(x, y, 5, solver="gd", **kwargs)
    assert dict(beta0.solver_options) == {"momentum": 0.0, "matrix_free": None}
    assert int(beta0.iterations) == int(gd.iterations)
    np.testing.assert_allclose(beta0.kernel, gd.kernel, rtol=0, atol=1e-14)
    np.testing.assert_allclose(beta0.loss_history, gd.loss_history, rtol=1e-13)


@pytest.mark.parametrize("beta", [1.0, -0.1, 1.5])
def test_momentum_must_be_below_one(beta):
    x, h = well_posed()
    with pytest.raises(ValueError, match="momentum"):
        jdeconv.estimate_kernel(x, blur(x, h), 5, solver="momentum",
                                solver_options={"momentum": beta})
