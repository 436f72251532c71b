"""Tests for run metrics (jdeconv.experiment._metrics), on hand-made estimates (nothing compiles)."""

import math
from types import SimpleNamespace

import numpy as np

from jdeconv.experiment import load_config
from jdeconv.experiment._metrics import (error_curve, fitted_region, headline, metrics, per_item,
                                         psnr, relative_error)


def _estimate(batch=None, solver="fista"):
    lead = () if batch is None else (batch,)
    hist = np.tile(np.array([3.0, 2.0, 1.0, np.nan]), lead + (1,))
    return SimpleNamespace(
        kernel=np.full(lead + (2, 2), 0.25), iterations=np.full(lead, 2), result=np.zeros(lead, int),
        converged=np.ones(lead, bool), loss_history=hist, error_history=hist / 3,
        objective=np.ones(lead), residual_norm=np.full(lead, 0.5), optimality=np.full(lead, 1e-12),
        lipschitz=np.full(lead, 4.0), noise_sigma=np.full(lead, np.nan),
        fit_statistic=np.full(lead, np.nan), regularization={"smooth": np.zeros(lead)},
        stats={"step": np.full(lead, 0.25), "optimality_history": hist}, solver=solver,
        solver_requested=solver, solver_options=(("restart", False),), prior="simplex",
        mode="valid", kernel_shape=(2, 2), max_iters=3, tol=1e-10, message="converged")


def test_single_and_batch_metrics():
    cfg = load_config({})
    truth = np.eye(2)[None] / 2
    for batch in (None, 3):
        est = _estimate(batch)
        items = per_item(est, batch is not None)
        b = items["kernel"].shape[0]
        m = metrics(cfg, est, items, [np.full((3, 3), 0.1)] * b, np.repeat(truth, b, 0), {"time_s": 1.0})
        assert m["solver_options"] == {"restart": False} and m["batch"] == b
        row = headline(m)
        assert row["solver"] == "fista" and row["time_s"] == 1.0
        if batch is None:
            assert m["relative_error"] == relative_error(np.full((2, 2), 0.25), truth[0])
            assert m["stats"] == {"step": 0.25}  # scalars only; histories stay out of the JSON
            assert math.isclose(m["psnr_db"], 20.0)
        else:
            assert m["converged_count"] == 3 and len(m["per_item"]["stats"]) == 3
    curve = error_curve(_estimate(), per_item(_estimate(), False))
    assert curve[0].tolist() == [0, 1, 2] and np.allclose(curve[1], [1.0, 2 / 3, 1 / 3])
    assert error_curve(_estimate(solver="exact"), per_item(_estimate(), False)) is None


def test_fitted_region_and_psnr():
    a = np.arange(100.0).reshape(10, 10)
    assert np.array_equal(fitted_region(a, (3, 3), "valid"), a)
    assert np.array_equal(fitted_region(a, (3, 3), "same"), a[1:9, 1:9])
    assert psnr(np.ones(3), np.ones(3)) == math.inf
