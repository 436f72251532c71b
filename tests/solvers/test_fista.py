"""jdeconv._solvers.fista: accelerated projected gradient with adaptive restart."""

import numpy as np
import pytest

import jdeconv
from _first_order import float32_reaches_1e3, reaches_1e6
from _helpers import FIRST_ORDER_ITERS, blur, rel_err, well_posed

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")

TEXTBOOK_ITERS = 4000


@pytest.mark.parametrize("prior", ["simplex", "nonneg"])
def test_reaches_1e6(prior):
    est = reaches_1e6("fista", prior)
    assert dict(est.solver_options) == {"restart": True, "matrix_free": None}


def test_float32():
    float32_reaches_1e3("fista")


def test_restart_option_is_reachable():
    """Plain FISTA (no restart) is a different iteration: it also converges, on another path."""
    x, h = well_posed()
    y = blur(x, h)
    kwargs = dict(solver="fista", max_iters=FIRST_ORDER_ITERS, tol=1e-13, throw=False)
    plain = jdeconv.estimate_kernel(x, y, 5, solver_options={"restart": False}, **kwargs)
    restarted = jdeconv.estimate_kernel(x, y, 5, **kwargs)
    assert dict(plain.solver_options) == {"restart": False, "matrix_free": None}
    assert rel_err(plain.kernel, h) <= 1e-5
    n = 50  # the first iterations are identical until the first restart, then the paths part
    a, b = np.asarray(plain.loss_history), np.asarray(restarted.loss_history)
    assert a[1] == b[1]
    assert not np.array_equal(a[:n], b[:n])


def test_textbook_example_gd_converges_and_fista_is_5x_faster():
    """The original question's scene: shapes, 15x15 Gaussian sigma=2, valid mode."""
    x = jdeconv.data.shapes_image((128, 128), seed=0, n_shapes=10)
    h = jdeconv.data.gaussian_kernel(15, 2.0)
    y = blur(x, h)
    iters = TEXTBOOK_ITERS
    gd = jdeconv.estimate_kernel(x, y, 15, solver="gd", prior="none", max_iters=iters, tol=0,
                                 reference=h, throw=False)
    fi = jdeconv.estimate_kernel(x, y, 15, solver="fista", prior="none", max_iters=iters, tol=0,
                                 reference=h, throw=False)
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
