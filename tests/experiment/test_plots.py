"""Tests for the plots (jdeconv.experiment._plots): what is drawn, and on which scale."""

import numpy as np
import pytest

from jdeconv.experiment import _plots


def _lines(ax):
    return [(line.get_xdata(), line.get_ydata()) for line in ax.get_lines()]


def test_curve_panel_log_scale_drops_zeros_and_clips_to_the_data():
    fig, axes = _plots.figure(1)
    ax = axes[0][0]
    assert _plots.curve_panel(ax, {"exact": (np.arange(4), np.array([2.0, 1e-3, 0.0, np.nan]))},
                              ylabel="objective", log=True)
    ((x, y),) = _lines(ax)
    assert list(x) == [0, 1] and list(y) == [2.0, 1e-3]  # zero and NaN are not drawn
    lo, hi = ax.get_ylim()
    assert ax.get_yscale() == "log" and 1e-4 < lo < 1e-3 and 2 < hi < 4  # never down to 1e-300
    assert all(float(t).is_integer() for t in ax.get_xticks())


def test_curve_panel_linear_when_not_positive():
    fig, axes = _plots.figure(1)
    ax = axes[0][0]
    _plots.curve_panel(ax, {"a": (np.arange(3), np.array([1.0, 0.0, -1.0]))}, ylabel="objective")
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] >= -1.2
    fig, axes = _plots.figure(1)
    assert not _plots.curve_panel(axes[0][0], {"a": (np.arange(2), np.full(2, np.nan))}, ylabel="y")


def test_exact_convergence_plot_shows_objective_and_optimality(tmp_path):
    fig = _plots.plot_convergence(tmp_path / "c.png", "exact", np.array([2.0, 0.0, np.nan]),
                                  optimality_history=np.array([0.06, 1e-16, np.nan]), title="t")
    objective, optimality = fig.axes[0], fig.axes[1]
    assert objective.get_xlabel() == "active-set iteration"
    assert optimality.get_ylabel() == "optimality" and optimality.get_yscale() == "log"
    assert optimality.get_ylim()[0] > 1e-17
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError):  # plots never replace a file either
        _plots.plot_convergence(tmp_path / "c.png", "exact", np.ones(2))


def test_residual_in_same_mode_is_scaled_to_the_fitted_region(tmp_path):
    y = np.zeros((20, 20))
    residual = np.full((20, 20), 0.01)
    residual[:2] = 5.0  # the unfitted border: large, must not set the scale
    fig = _plots.plot_residual(tmp_path / "r.png", y, residual, kernel_shape=(5, 5), mode="same")
    image = fig.axes[2].get_images()[0]
    assert image.get_clim() == pytest.approx((-0.01, 0.01))
    assert fig.axes[2].patches  # the fitted region is outlined


def test_titles_name_what_ran():
    title = _plots.run_title(solver="fista", prior="nonneg", mode="same", kernel_shape=(7, 5),
                             extra="seed=1")
    assert title == "solver fista, prior nonneg, 7x5 kernel, mode same (seed=1)"


def test_sweep_plots(tmp_path):
    points = [{"assignment": {"data.synthetic.noise.gaussian_sigma": s},
               "row": {"relative_error": e, "iterations": 1}, "loss_history": np.ones(2),
               "error_curve": None} for s, e in [(0.0, 1e-12), (0.01, 1e-2)]]
    fig = _plots.plot_sweep(tmp_path / "a.png", "noise", {"data.synthetic.noise.gaussian_sigma":
                                                          [0.0, 0.01]}, points)
    assert fig.axes[0].get_xlabel() == "noise.gaussian_sigma"
    points = [{"assignment": {"solver.name": n}, "row": {"relative_error": 1e-3, "iterations": 3},
               "loss_history": np.array([3.0, 2.0, 1.0, np.nan]),
               "error_curve": (np.arange(3), np.array([1.0, 0.1, 1e-3])) if n == "gd" else None}
              for n in ("gd", "exact")]
    fig = _plots.plot_sweep(tmp_path / "b.png", "solvers", {"solver.name": ["gd", "exact"]}, points)
    assert fig.axes[0].get_ylabel() == "(f - f*) / (f0 - f*)" and len(fig.axes) == 2
