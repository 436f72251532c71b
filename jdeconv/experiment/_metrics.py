"""Metrics of a run: kernel error, residual, PSNR, convergence, and the software stack.

Everything here works on host (NumPy) arrays with a leading batch axis (B = 1
for a single pair), so one code path serves a pair and a batch.
"""

from __future__ import annotations

import math
import platform
import sys
from typing import Any

import numpy as np

from jdeconv._names import FIRST_ORDER_SOLVERS

__all__ = ["error_curve", "fitted_region", "headline", "metrics", "per_item", "psnr",
           "relative_error", "versions"]

_FLOAT_FIELDS = ("loss_history", "error_history", "objective", "residual_norm", "optimality",
                 "lipschitz", "noise_sigma", "fit_statistic")


def relative_error(estimate, truth) -> float:
    """``||estimate - truth|| / ||truth||`` (Frobenius).

    Example:
        >>> relative_error([[1.0, 1.0]], [[1.0, 0.0]])
        1.0
    """
    truth = np.asarray(truth, np.float64)
    return float(np.linalg.norm(np.asarray(estimate, np.float64) - truth) / np.linalg.norm(truth))


def psnr(a, b, peak: float = 1.0) -> float:
    """``10 log10(peak² / mean((a - b)²))`` in dB (images scaled to [0, 1]: peak 1).

    Example:
        >>> round(psnr([0.0, 0.1], [0.0, 0.0]), 2)
        23.01
    """
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def fitted_region(a: np.ndarray, kernel_shape, mode: str) -> np.ndarray:
    """The pixels of a blurred-image-shaped array that the estimate is fitted to.

    All of them, except in ``"same"`` mode, where only the part the valid model
    explains is fitted (see :func:`jdeconv._geometry.valid_window`).

    Example:
        >>> fitted_region(np.zeros((10, 10)), (3, 3), "same").shape
        (8, 8)
    """
    from jdeconv._geometry import valid_window

    a = np.asarray(a)
    if mode != "same":
        return a
    rows, cols = valid_window(a.shape[-2:], tuple(kernel_shape), mode)
    return a[..., rows, cols]


def per_item(est, batched: bool) -> dict[str, Any]:
    """The estimate's arrays as host arrays with a leading batch axis (B = 1 for one pair)."""
    def lead(a, dtype=None):
        a = np.asarray(a, dtype)
        return a if batched else a[None]

    out: dict[str, Any] = {"kernel": lead(est.kernel, np.float64), "iterations": lead(est.iterations),
                           "converged": lead(est.converged), "result": lead(est.result)}
    for name in _FLOAT_FIELDS:
        out[name] = lead(getattr(est, name), np.float64)
    out["regularization"] = {k: np.broadcast_to(lead(v, np.float64), out["iterations"].shape)
                             for k, v in dict(est.regularization or {}).items()}
    out["stats"] = {k: lead(v) for k, v in dict(est.stats or {}).items()}
    return out


def error_curve(est, items) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean relative kernel error per iteration, for first-order solvers.

    The engine records ``||h_i - h_true|| / ||h_true||`` after every iteration
    when it is given the true kernel (``reference=``); this averages it over
    the batch up to the last iteration any item ran.
    """
    if est.solver not in FIRST_ORDER_SOLVERS:
        return None
    errors = np.asarray(items["error_history"], np.float64)
    if not np.isfinite(errors[:, 0]).all():
        return None
    last = int(np.max(items["iterations"]))
    its = np.arange(last + 1)
    return its, np.nanmean(errors[:, : last + 1], axis=0)


def residuals(xs, ys, kernels, mode: str) -> list[np.ndarray]:
    """``conv2d(x, ĥ, mode) - y`` per item, in float64 (NaN where the estimate is not finite)."""
    import jax

    from jdeconv._conv import conv2d

    out = []
    with jax.enable_x64(True):
        for x, y, h in zip(xs, ys, kernels):
            if not np.all(np.isfinite(h)):  # a failed solve is reported, not raised
                out.append(np.full(y.shape, np.nan))
            else:
                out.append(np.asarray(conv2d(x, np.asarray(h, np.float64), mode=mode)) - y)
    return out


def _scalar_stats(stats: dict[str, np.ndarray], batch: int) -> list[dict[str, Any]]:
    """Per item, the solver-specific numbers that are scalars (histories are left out)."""
    return [{k: v[i] for k, v in stats.items() if np.ndim(v) == 1} for i in range(batch)]


def metrics(cfg, est, items, residual_images, truths, timing) -> dict[str, Any]:
    """``metrics.json`` content (plain data; NumPy values are cleaned when written)."""
    kshape, mode = tuple(cfg.model.kernel_shape), cfg.model.mode
    batch = items["kernel"].shape[0]
    psnrs = [psnr(fitted_region(r, kshape, mode), 0.0) if np.all(np.isfinite(r)) else math.nan
             for r in residual_images]
    per = {
        "relative_error": None if truths is None else
        [relative_error(h, t) for h, t in zip(items["kernel"], truths)],
        "residual_norm": items["residual_norm"], "psnr_db": psnrs,
        "iterations": items["iterations"], "converged": items["converged"],
        "result": items["result"], "objective": items["objective"],
        "optimality": items["optimality"],
        "kernel_sum": items["kernel"].sum(axis=(-2, -1)),
        "kernel_min": items["kernel"].min(axis=(-2, -1)),
        "noise_sigma": items["noise_sigma"], "fit_statistic": items["fit_statistic"],
        "weights": [{k: float(v[i]) for k, v in items["regularization"].items()}
                    for i in range(batch)],
        "stats": _scalar_stats(items["stats"], batch),
    }
    m: dict[str, Any] = {
        "batch": batch, "solver": est.solver, "solver_requested": est.solver_requested,
        "solver_options": dict(est.solver_options or ()),
        "prior": est.prior, "mode": est.mode, "kernel_shape": list(est.kernel_shape),
        "max_iters": est.max_iters, "tol": est.tol,
        "regularization_requested": cfg.regularization_dict(),
        "message": est.message,
    }
    if batch == 1:
        m.update({k: (None if v is None else v[0]) for k, v in per.items()})
        m["lipschitz"] = items["lipschitz"][0]
    else:
        err = per["relative_error"]
        m.update({
            "relative_error_mean": None if err is None else float(np.mean(err)),
            "relative_error_median": None if err is None else float(np.median(err)),
            "relative_error_max": None if err is None else float(np.max(err)),
            "residual_norm_mean": float(np.mean(per["residual_norm"])),
            "psnr_db_mean": float(np.mean(psnrs)),
            "converged_count": int(np.sum(per["converged"])),
            "iterations_median": float(np.median(per["iterations"])),
            "iterations_max": int(np.max(per["iterations"])),
            "per_item": per,
        })
    m["timing"] = timing
    return m


def headline(m: dict[str, Any]) -> dict[str, Any]:
    """Scalar summary of a run's metrics (one row of a sweep table)."""
    if m["batch"] == 1:
        keys = ("relative_error", "residual_norm", "psnr_db", "iterations", "converged", "optimality")
        out = {k: m.get(k) for k in keys}
    else:
        out = {"relative_error": m["relative_error_mean"], "residual_norm": m["residual_norm_mean"],
               "psnr_db": m["psnr_db_mean"], "iterations": m["iterations_median"],
               "converged": f"{m['converged_count']}/{m['batch']}", "optimality": None}
    out.update(solver=m["solver"], time_s=m["timing"].get("time_s"))
    return out


def versions() -> dict[str, Any]:
    """Versions of the software stack and the devices JAX sees."""
    import jax
    import jaxlib
    import optax

    from jdeconv._version import __version__

    return {
        "jdeconv": __version__,
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "optax": optax.__version__,
        "numpy": np.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "machine": platform.machine(), "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "jax_enable_x64": bool(jax.config.read("jax_enable_x64")),
    }
