"""The checks every first-order solver passes (imported by test_gd/test_fista/test_momentum/test_adam)."""

import numpy as np

import jdeconv
from _helpers import FIRST_ORDER_ITERS, blur, rel_err, well_posed


def reaches_1e6(solver, prior, **kwargs):
    """With enough iterations each solver reaches the kernel to 1e-6 (float64)."""
    x, h = well_posed()
    est = jdeconv.estimate_kernel(x, blur(x, h), 5, solver=solver, prior=prior,
                                  max_iters=FIRST_ORDER_ITERS, tol=1e-13, throw=False, **kwargs)
    assert est.solver == solver and est.solver_requested == solver
    assert rel_err(est.kernel, h) <= 1e-6, est.summary()
    it = int(est.iterations)
    assert est.loss_history.shape == (FIRST_ORDER_ITERS + 1,)
    hist = np.asarray(est.loss_history)
    assert np.isfinite(hist[: it + 1]).all()
    assert np.isnan(hist[it + 1:]).all()
    assert hist[it] == float(est.objective) or abs(hist[it] - float(est.objective)) <= 1e-9 * abs(hist[0])
    assert float(est.stats["step"]) == 1.0 / float(est.lipschitz)
    k = np.asarray(est.kernel)
    assert k.min() >= 0
    if prior == "simplex":
        assert abs(k.sum() - 1) < 1e-12
    return est


def float32_reaches_1e3(solver, iters=2000):
    x, h = well_posed()
    est = jdeconv.estimate_kernel(x.astype(np.float32), blur(x, h).astype(np.float32), 5,
                                  solver=solver, max_iters=iters, throw=False)
    assert est.kernel.dtype == np.float32
    assert rel_err(est.kernel, h) <= 1e-3
    return est
