"""jdeconv._solvers.adam: projected Adam with a decaying rate, and its options."""

import numpy as np
import pytest

import jdeconv
from jdeconv._solvers import adam
from _first_order import reaches_1e6
from _helpers import FIRST_ORDER_ITERS, blur, rel_err, well_posed

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")


def test_reaches_1e6():
    # (nonneg: in test_fista.py; each (solver, prior) is a program of its own)
    prior = "simplex"
    est = reaches_1e6("adam", prior)
    assert dict(est.solver_options) == {"learning_rate": adam.DEFAULT_RATE,
                                        "decay_rate": adam.DEFAULT_DECAY, "matrix_free": None}


def test_rate_options_are_reachable():
    x, h = well_posed()
    y = blur(x, h)
    kwargs = dict(solver="adam", max_iters=FIRST_ORDER_ITERS, tol=1e-13, throw=False)
    default = jdeconv.estimate_kernel(x, y, 5, **kwargs)
    slow = jdeconv.estimate_kernel(x, y, 5, solver_options={"learning_rate": 1e-3, "decay_rate": 0.1,
                                         "matrix_free": None},
                                   **kwargs)
    assert dict(slow.solver_options) == {"learning_rate": 1e-3, "decay_rate": 0.1,
                                         "matrix_free": None}
    # a rate 20000x smaller that decays faster stops far from the kernel
    assert rel_err(slow.kernel, h) > 100 * rel_err(default.kernel, h)
    assert not np.array_equal(np.asarray(slow.loss_history), np.asarray(default.loss_history))


@pytest.mark.parametrize("options, match", [
    ({"learning_rate": 0.0}, "learning_rate is 0.0; it must be > 0"),
    ({"decay_rate": -1}, "decay_rate"),
    ({"learning_rat": 1.0}, "Did you mean 'learning_rate'"),
    ({"learning_rate": "fast"}, "real number"),
])
def test_bad_options(options, match):
    x, h = well_posed()
    with pytest.raises((ValueError, TypeError), match=match):
        jdeconv.estimate_kernel(x, blur(x, h), 5, solver="adam", solver_options=options)
