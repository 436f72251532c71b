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

__all__ = ["centroid_offset", "common_box", "diagnostic_lines", "diagnostics", "error_curve", "fitted_region", "headline",
           "kernel_size_info", "metrics", "per_item", "psnr", "relative_error", "used_pixels",
           "versions"]

_FLOAT_FIELDS = ("loss_history", "error_history", "objective", "residual_norm", "optimality",
                 "lipschitz", "noise_sigma", "fit_statistic")


def common_box(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Two kernels zero-padded to one box, their centre taps ``((k-1)//2, (l-1)//2)`` aligned.

    A kernel estimated in a box of its own (``kernel_shape: auto``, or a box
    other than the truth's) is compared with the truth on the union of the two
    boxes, so mass the estimate's box cuts off counts as error.

    Example:
        >>> a, b = common_box(np.ones((1, 1)), np.ones((3, 1)))
        >>> a.ravel().tolist(), b.shape
        ([0.0, 1.0, 0.0], (3, 1))
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape == b.shape:
        return a, b
    ca = [(s - 1) // 2 for s in a.shape]
    cb = [(s - 1) // 2 for s in b.shape]
    centre = [max(p, q) for p, q in zip(ca, cb)]
    size = [c + max(s - p, t - q) for c, s, p, t, q in zip(centre, a.shape, ca, b.shape, cb)]

    def embed(k, ck):
        out = np.zeros(size)
        r0, c0 = centre[0] - ck[0], centre[1] - ck[1]
        out[r0:r0 + k.shape[0], c0:c0 + k.shape[1]] = k
        return out

    return embed(a, ca), embed(b, cb)


def relative_error(estimate, truth) -> float:
    """``||estimate - truth|| / ||truth||`` (Frobenius), on a common box (:func:`common_box`).

    Example:
        >>> relative_error([[1.0, 1.0]], [[1.0, 0.0]])
        1.0
    """
    estimate, truth = common_box(estimate, truth)
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


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
    out["gain"] = lead(est.gain, np.float64)
    out["background"] = lead(est.background, np.float64)
    out["regularization"] = {k: np.broadcast_to(lead(v, np.float64), out["iterations"].shape)
                             for k, v in dict(est.regularization or {}).items()}
    out["stats"] = {k: lead(v) for k, v in dict(est.stats or {}).items()}
    # Of the kernel as returned (in its orientation: a correlation kernel is flipped).
    out["stats"]["centroid_offset"] = centroid_offset(out["kernel"])
    return out


def centroid_offset(kernels: np.ndarray) -> np.ndarray:
    """``(d_row, d_col)`` of each kernel's centroid (of ``|h|``) from its centre tap ``(k-1)//2``.

    Example:
        >>> centroid_offset(np.eye(3)[None, ::-1] * [[[0], [0], [1]]]).tolist()
        [[1.0, -1.0]]
    """
    h = np.abs(np.asarray(kernels, np.float64))
    k, l = h.shape[-2:]
    total = h.sum(axis=(-2, -1))
    total = np.where(total > 0, total, 1.0)
    rows = (h.sum(axis=-1) * np.arange(k)).sum(axis=-1) / total - (k - 1) // 2
    cols = (h.sum(axis=-2) * np.arange(l)).sum(axis=-1) / total - (l - 1) // 2
    return np.stack([rows, cols], axis=-1)


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


def used_pixels(x, y, kernel_shape, mode: str, *, mask=None, weights=None, saturation=None,
                nan: str = "raise") -> np.ndarray | None:
    """Which pixels of ``y`` (its own shape) the estimate used, or None when all of them were.

    The engine's own rule (:func:`jdeconv.make_problem`): the mask, zero
    weights, NaN with ``nan="mask"`` and the saturation footprint. In
    ``"same"`` mode pixels outside the fitted window count as used here
    (:func:`fitted_region` leaves them out anyway).
    """
    if mask is None and weights is None and saturation is None and nan == "raise":
        return None
    from jdeconv._geometry import valid_window
    from jdeconv._problem import make_problem

    problem = make_problem(x, y, tuple(kernel_shape), mode=mode, mask=mask, weights=weights,
                           saturation=saturation, nan=nan)
    if problem.pixel_weights is None:
        return None
    w = np.asarray(problem.pixel_weights) > 0
    if mode != "same":
        return w
    out = np.ones(np.shape(y), bool)
    rows, cols = valid_window(np.shape(y), tuple(kernel_shape), mode)
    out[rows, cols] = w
    return out


def _model_image(x, h, mode, gain, background, degree, orientation):
    """``gain · conv2d(x, h, mode) + background`` in float64 (h in ``orientation``)."""
    from jdeconv._conv import conv2d
    from jdeconv._geometry import valid_window

    h = np.asarray(h, np.float64)
    if orientation == "correlation":
        h = h[::-1, ::-1]
    model = float(gain) * np.asarray(conv2d(np.asarray(x, np.float64), h, mode=mode))
    coeffs = np.atleast_1d(np.asarray(background, np.float64))
    if degree is not None and coeffs.size:
        from jdeconv._weighted_gram import background_basis

        rows, cols = valid_window(np.shape(x), h.shape, mode)
        region = model[rows, cols]
        basis = np.asarray(background_basis(region.shape, degree, np.float64))
        model[rows, cols] = region + np.tensordot(coeffs, basis, axes=1)
    return model


def residuals(xs, ys, kernels, mode: str, *, gains=None, backgrounds=None, degree=None,
              orientation: str = "convolution", used=None) -> list[np.ndarray]:
    """``gain · conv2d(x, ĥ, mode) + background - y`` per item, in float64.

    NaN where the estimate is not finite, and at the pixels ``used`` (a list
    of bool images or None, see :func:`used_pixels`) leaves out. ``degree``:
    the background's polynomial degree (None: no background), ``orientation``:
    the kernels' (correlation kernels are flipped back to convolve).
    """
    import jax

    out = []
    with jax.enable_x64(True):
        for i, (x, y, h) in enumerate(zip(xs, ys, kernels)):
            if not np.all(np.isfinite(h)):  # a failed solve is reported, not raised
                out.append(np.full(y.shape, np.nan))
                continue
            gain = 1.0 if gains is None else gains[i]
            bg = () if backgrounds is None else backgrounds[i]
            r = _model_image(x, h, mode, gain, bg, degree, orientation) - y
            if used is not None and used[i] is not None:
                r = np.where(used[i], r, np.nan)
            out.append(r)
    return out


def kernel_size_info(stats: dict[str, Any]) -> dict[str, Any] | None:
    """The ``kernel_shape: auto`` report of an (unbatched) estimate's stats, or None."""
    if "size_criterion" not in stats and "kernel_box" not in stats:
        return None
    keys = ("kernel_box", "generous_shape", "size_candidates", "size_criterion",
            "mass_outside_box")
    return {k: np.asarray(stats[k]).tolist() for k in keys if k in stats}


def _scalar_stats(stats: dict[str, np.ndarray], batch: int) -> list[dict[str, Any]]:
    """Per item, the solver-specific numbers that are scalars (histories are left out)."""
    return [{k: v[i] for k, v in stats.items() if np.ndim(v) == 1} for i in range(batch)]


def metrics(cfg, est, items, residual_images, truths, timing, *, kernel_size=None,
            warnings=()) -> dict[str, Any]:
    """``metrics.json`` content (plain data; NumPy values are cleaned when written).

    Every run reports the kernel box, the centroid offset and border mass of
    the kernel, the gain and background coefficients, the noise level and
    the fit statistic; ``kernel_size`` is the ``kernel_shape: auto`` report
    (:func:`kernel_size_info`; None for a given box) and ``warnings`` the
    estimate's warnings, one line each.
    """
    mode = cfg.model.mode
    batch = items["kernel"].shape[0]
    kshape = tuple(est.kernel_shape)

    def finite_psnr(r):
        r = fitted_region(r, kshape, mode)
        r = r[np.isfinite(r)]
        return psnr(r, 0.0) if r.size else math.nan

    psnrs = [finite_psnr(r) for r in residual_images]
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
        "gain": items["gain"], "background": items["background"],
        "centroid_offset": items["stats"].get("centroid_offset"),
        "border_mass": items["stats"].get("border_mass"),
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
        "kernel_box": list(est.kernel_shape),
        "kernel_size": kernel_size,
        "background_model": est.background_model, "loss": est.loss,
        "orientation": est.orientation,
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
    m["warnings"] = list(warnings)
    m["timing"] = timing
    return m


def headline(m: dict[str, Any]) -> dict[str, Any]:
    """Scalar summary of a run's metrics (one row of a sweep table)."""
    if m["batch"] == 1:
        keys = ("relative_error", "residual_norm", "psnr_db", "iterations", "converged",
                "optimality", "fit_statistic")
        out = {k: m.get(k) for k in keys}
    else:
        fits = [f for f in m["per_item"]["fit_statistic"] if f is not None and math.isfinite(f)]
        out = {"relative_error": m["relative_error_mean"], "residual_norm": m["residual_norm_mean"],
               "psnr_db": m["psnr_db_mean"], "iterations": m["iterations_median"],
               "converged": f"{m['converged_count']}/{m['batch']}", "optimality": None,
               "fit_statistic": float(np.median(fits)) if fits else None}
    out.update(solver=m["solver"], kernel_box="x".join(map(str, m["kernel_box"])),
               warnings=len(m.get("warnings", ())), time_s=m["timing"].get("time_s"))
    return out


def diagnostics(est, kernel_size=None) -> dict[str, Any]:
    """The diagnostics of an estimate as plain data, in :func:`metrics`' layout.

    What :func:`diagnostic_lines` prints: ``kernel_box``, ``kernel_size``,
    ``background_model`` and, per pair (``per_item`` for a batch), the
    centroid offset, border mass, gain, background, noise level and fit
    statistic.
    """
    batched = np.ndim(est.iterations) > 0
    items = per_item(est, batched)
    per = {"centroid_offset": items["stats"].get("centroid_offset"),
           "border_mass": items["stats"].get("border_mass"), "gain": items["gain"],
           "background": items["background"], "noise_sigma": items["noise_sigma"],
           "fit_statistic": items["fit_statistic"]}
    per = {k: (None if v is None else [None if v is None else v[i] for i in range(len(v))])
           for k, v in per.items()}
    out: dict[str, Any] = {"kernel_box": list(est.kernel_shape), "kernel_size": kernel_size,
                           "background_model": est.background_model}
    if batched:
        out["per_item"] = per
    else:
        out.update({k: v[0] for k, v in per.items() if v is not None})
    return out


def _fmt(v, spec: str = ".3g") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def diagnostic_lines(m: dict[str, Any]) -> list[str]:
    """The diagnostics of a run's metrics (or the CLI's estimate), as short lines.

    The box (and how ``auto`` chose it), the centroid offset and border mass,
    the gain and background (when fitted), the noise level and fit statistic —
    per pair (per channel for RGB).
    """
    box = "x".join(map(str, m["kernel_box"]))
    size = m.get("kernel_size")
    if size:
        g = "x".join(map(str, size.get("generous_shape", ())))
        out = [f"kernel box {box} (auto, from a generous {g} box; "
               f"{_fmt(100 * size.get('mass_outside_box', 0.0), '.2g')} % of its mass outside)"]
    else:
        out = [f"kernel box {box}"]
    per = m.get("per_item") or {k: [m.get(k)] for k in (
        "centroid_offset", "border_mass", "gain", "background", "noise_sigma", "fit_statistic")}
    fitted = m.get("background_model", "none") != "none" or any(
        g is not None and g != 1.0 for g in ([] if per.get("gain") is None else list(per["gain"])))
    n = len(per["noise_sigma"])
    for i in range(n):
        label = f"  [{i}] " if n > 1 else "  "
        off = None if per.get("centroid_offset") is None else per["centroid_offset"][i]
        parts = []
        if off is not None:
            parts.append(f"centroid offset ({off[0]:+.2f}, {off[1]:+.2f}) px")
        if per.get("border_mass") is not None and per["border_mass"][i] is not None:
            parts.append(f"border mass {_fmt(100 * per['border_mass'][i], '.2g')} %")
        if fitted:
            bg = [] if per["background"][i] is None else list(per["background"][i])
            parts.append(f"gain {_fmt(per['gain'][i], '.6g')} background "
                         f"[{', '.join(_fmt(b, '.4g') for b in bg)}] ({m.get('background_model')})")
        parts.append(f"noise sigma {_fmt(per['noise_sigma'][i])}")
        parts.append(f"fit statistic {_fmt(per['fit_statistic'][i])}")
        out.append(label + ", ".join(parts))
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
