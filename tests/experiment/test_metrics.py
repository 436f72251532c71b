"""Tests for run metrics (jdeconv.experiment._metrics), on hand-made estimates (nothing compiles)."""

import math
from types import SimpleNamespace

import numpy as np

from jdeconv.experiment import load_config
from jdeconv.experiment._metrics import (common_box, diagnostic_lines, error_curve,
                                         fitted_region, headline, metrics, per_item, psnr,
                                         relative_error, residuals)


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
        mode="valid", kernel_shape=(2, 2), max_iters=3, tol=1e-10, message="converged",
        gain=np.ones(lead), background=np.zeros(lead + (0,)), background_model="none", loss="l2",
        orientation="convolution")


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
            assert m["kernel_box"] == [2, 2] and m["kernel_size"] is None and m["warnings"] == []
            assert m["gain"] == 1.0 and m["background"].size == 0
            assert m["centroid_offset"].tolist() == [0.5, 0.5]  # centre tap (0, 0) of a 2x2 box
            lines = diagnostic_lines(m)
            assert lines[0] == "kernel box 2x2" and "centroid offset (+0.50, +0.50) px" in lines[1]
            assert "gain" not in lines[1]  # neither gain nor background was fitted
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


def test_kernels_of_other_boxes_compare_on_a_common_box():
    small, big = np.ones((1, 3)) / 3, np.zeros((3, 5))
    big[1, 1:4] = 1 / 3
    a, b = common_box(small, big)
    assert a.shape == b.shape == (3, 5) and np.array_equal(a, b)
    assert relative_error(small, big) == 0.0
    cut = np.zeros((3, 3))
    cut[1, 1] = 1.0
    assert relative_error(cut, np.full((5, 5), 1 / 25)) > 0.9  # the mass a small box cuts counts


def test_residuals_with_gain_background_orientation_and_unused_pixels():
    import jax

    from jdeconv import conv2d

    rng = np.random.default_rng(0)
    x, h = rng.random((12, 12)), rng.random((3, 3))
    with jax.enable_x64(True):
        y = 0.9 * np.asarray(conv2d(x, h, mode="same")) + 0.02
    used = np.ones(y.shape, bool)
    used[5, 5] = False
    (r,) = residuals([x], [y], [h[::-1, ::-1]], "same", gains=[0.9], backgrounds=[[0.02]],
                     degree=0, orientation="correlation", used=[used])
    inner = fitted_region(r, (3, 3), "same")
    assert np.isnan(r[5, 5]) and np.nanmax(np.abs(inner)) < 1e-12
