"""jdeconv._solvers.gd: projected gradient descent with the step 1/L from the operator."""

import numpy as np
import pytest

import jdeconv
from _first_order import reaches_1e6
from _helpers import blur

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")

TEXTBOOK_ITERS = 4000


def test_reaches_1e6():
    # (nonneg: in test_fista.py; each (solver, prior) is a program of its own)
    prior = "simplex"
    est = reaches_1e6("gd", prior)
    loss = np.asarray(est.loss_history)[: int(est.iterations) + 1]
    assert np.all(np.diff(loss) <= 1e-12 * abs(loss[0]))  # step 1/L: monotone


def test_step_from_operator_is_stable_where_the_scripts_fixed_step_is_not():
    # A brighter copy of the original question's scene: L grows with the image energy.
    x = 3.0 * jdeconv.data.shapes_image((128, 128), seed=0, n_shapes=10)
    h = jdeconv.data.gaussian_kernel(15, 2.0)
    y = blur(x, h)
    # (reference=h: the program of the textbook test in test_fista.py, compiled once)
    est = jdeconv.estimate_kernel(x, y, 15, solver="gd", prior="none", max_iters=TEXTBOOK_ITERS,
                                  tol=0, reference=h, throw=False)
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


def test_gd_takes_no_options():
    x = jdeconv.data.noise_target((40, 40), seed=1)
    with pytest.raises(ValueError, match="solver 'gd' has no option 'learning_rate'"):
        jdeconv.estimate_kernel(x, x[:36, :36], 5, solver="gd",
                                solver_options={"learning_rate": 0.1})
