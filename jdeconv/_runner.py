"""Experiment runner: a :class:`~jdeconv._config.Config` in, a run directory out.

:func:`run_experiment` builds (or reads) the image pair(s), estimates the
kernel with :func:`jdeconv._estimate.estimate_kernel` (``estimate_kernels`` for
a batch), and writes a new directory:

===================== ==========================================================
``config.yaml``       the resolved configuration (every default filled in)
``versions.json``     jdeconv, jax, jaxlib, optax, numpy, python, platform, devices
``metrics.json``      relative kernel error (when the truth is known), residual
                      norm, PSNR, iterations, convergence, solver; wall-clock
                      times under ``timing`` (the only fields that vary between
                      identical runs)
``kernel.npy``        the estimate (``kernels.npy``, shape (B, k, l), for a batch)
``truth.npy``         the true kernel when known (``truths.npy`` for a batch)
``loss_history.npy``  objective per iteration (NaN after the last); ``.csv`` too
``kernel.csv/.png``   optional (``outputs.save_csv`` / ``outputs.save_kernel_png``)
``plot_*.png``        kernels (true, estimate, difference), convergence, residual
===================== ==========================================================

A configuration with a ``sweep`` section writes one such sub-directory per
point (``000-name=value``...) plus ``sweep.csv``, ``sweep.json`` and one
combined plot, ``plot_sweep.png``.

Atomicity: everything is written into ``<dir>.partial-XXXXXXXX`` next to the
destination, which is renamed to ``<dir>`` only when complete. If anything
fails, the partial directory stays (for inspection) with a ``FAILED`` file
holding the traceback, and is never mistaken for a finished run. An existing
destination is never overwritten. Without ``out_dir`` the destination is
``runs/<config name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken).

Reproducibility: the same configuration gives identical ``metrics.json``
numbers outside ``timing`` (synthetic data are seeded from ``seed``; JAX on CPU
is deterministic). Synthetic data are generated in float64; the estimation
runs in the solver's ``dtype`` (None: float64 when ``jax_enable_x64`` is on, as
in the command line tool).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jdeconv import _checks
from jdeconv._config import Config, FilesData, SyntheticData, load_config

__all__ = ["blur", "check_pair_shapes", "load_pair", "make_pair", "psnr", "relative_error",
           "run_experiment", "versions"]

_ITERATIVE = ("gd", "fista", "momentum", "adam")


# ---------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------


def _seed(*parts: int) -> int:
    """A deterministic 32-bit seed derived from integers (independent streams)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint32)[0])


def _blur64(x: np.ndarray, h: np.ndarray, mode: str) -> np.ndarray:
    """``conv2d(x, h, mode)`` computed in float64 whatever the JAX precision setting."""
    import jax

    from jdeconv._conv import conv2d

    with jax.enable_x64(True):
        return np.asarray(conv2d(np.asarray(x, np.float64), np.asarray(h, np.float64), mode), np.float64)


def blur(x: np.ndarray, h: np.ndarray, mode: str, *, gaussian_sigma: float = 0.0,
         poisson_photons: float | None = None, bits: int | None = None, seed: int = 0) -> np.ndarray:
    """``y = conv2d(x, h, mode)`` in float64, then Poisson noise (``poisson_photons``
    per unit intensity), Gaussian noise (``gaussian_sigma``) and quantisation to
    ``bits`` (clipped to [0, 1]), each noise from its own stream seeded by ``seed``."""
    from jdeconv._noise import add_gaussian_noise, add_poisson_noise, quantize

    y = _blur64(x, h, mode)
    if poisson_photons is not None:
        y = add_poisson_noise(np.clip(y, 0.0, None), poisson_photons, seed=_seed(seed, 1))
    if gaussian_sigma > 0:
        y = add_gaussian_noise(y, gaussian_sigma, seed=_seed(seed, 2))
    if bits is not None:
        y = quantize(y, bits)
    return y


def make_pair(synthetic: SyntheticData, kernel_shape: tuple[int, int], mode: str, *,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic pair ``(x, y, h)`` (float64 NumPy arrays).

    ``x = make_image(image, image_shape, seed=seed)`` (quantised to ``bits`` if
    set), ``h = make_kernel(kernel, kernel_shape, seed=seed)`` and ``y`` from
    :func:`blur` with the configured noise and ``bits``.
    """
    from jdeconv._config import default_kernel_params
    from jdeconv._images import make_image
    from jdeconv._kernels import make_kernel
    from jdeconv._noise import quantize

    x = make_image(synthetic.image, tuple(synthetic.image_shape), seed=seed, **synthetic.image_options)
    params = synthetic.kernel_params
    if params is None:
        params = default_kernel_params(synthetic.kernel, kernel_shape)
    h = make_kernel(synthetic.kernel, tuple(kernel_shape), seed=seed, **params)
    if synthetic.bits is not None:
        x = quantize(x, synthetic.bits)
    y = blur(x, h, mode, gaussian_sigma=synthetic.noise.gaussian_sigma,
             poisson_photons=synthetic.noise.poisson_photons, bits=synthetic.bits, seed=seed)
    return x, y, h


def check_pair_shapes(x_shape, y_shape, kernel_shape, mode: str, *,
                      names: tuple[str, str] = ("original", "blurred")) -> None:
    """Raises a ValueError naming both shapes unless ``y`` is what ``mode`` gives for ``x``."""
    mode = _checks.check_mode(mode)
    (m, n), (k, l) = tuple(x_shape)[:2], tuple(kernel_shape)
    if k > m or l > n:
        raise ValueError(
            f"the {k}x{l} kernel is larger than the {names[0]} image ({m}x{n}); use a smaller "
            "kernel size")
    expected = (m, n) if mode == "same" else _checks.output_shape((m, n), (k, l), mode)
    got = tuple(y_shape)[:2]
    if got != expected:
        hint = ""
        if mode == "valid" and got == (m, n):
            hint = "; the images have the same size: use mode 'same'"
        elif mode == "same" and got == _checks.output_shape((m, n), (k, l), "valid"):
            hint = "; the blurred image has the valid size: use mode 'valid'"
        raise ValueError(
            f"{names[1]} image is {got[0]}x{got[1]} but the {names[0]} image is {m}x{n}: with a "
            f"{k}x{l} kernel in mode {mode!r} the {names[1]} image must be "
            f"{expected[0]}x{expected[1]}{hint}")


def load_truth(path: str, kernel_shape) -> np.ndarray:
    """Reads a true kernel from ``.npy`` or ``.csv`` and checks its shape."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"true kernel file {str(p)!r} does not exist; check data.files.truth")
    if p.suffix.lower() == ".npy":
        h = np.load(p, allow_pickle=False)
    elif p.suffix.lower() == ".csv":
        h = np.loadtxt(p, delimiter=",", ndmin=2)
    else:
        raise ValueError(f"true kernel file {str(p)!r}: expected a .npy or .csv file")
    h = np.asarray(h, np.float64)
    if h.shape != tuple(kernel_shape):
        raise ValueError(f"true kernel {str(p)!r} has shape {h.shape} but model.kernel_shape is "
                         f"{tuple(kernel_shape)}")
    return h


def load_pair(files: FilesData, kernel_shape, mode: str):
    """``(x, y, truth or None)`` from image files (converted to gray)."""
    from jdeconv._io import read_image

    x, _ = read_image(files.original, channels="gray")
    y, _ = read_image(files.blurred, channels="gray")
    check_pair_shapes(x.shape, y.shape, kernel_shape, mode,
                      names=(f"original ({files.original})", f"blurred ({files.blurred})"))
    truth = None if files.truth is None else load_truth(files.truth, kernel_shape)
    return x, y, truth


def _support(cfg: Config):
    sup = cfg.prior.support
    if sup is None:
        return None
    if isinstance(sup, str):
        p = Path(sup)
        if not p.exists():
            raise FileNotFoundError(f"support mask file {sup!r} does not exist; check prior.support")
        sup = np.load(p, allow_pickle=False)
    mask = np.asarray(sup)
    if mask.shape != tuple(cfg.model.kernel_shape):
        raise ValueError(f"prior.support has shape {mask.shape} but model.kernel_shape is "
                         f"{tuple(cfg.model.kernel_shape)}")
    return mask.astype(bool)


def _data(cfg: Config, progress: Callable):
    """``(xs, ys, truths or None)`` stacked along a leading batch axis."""
    kshape, mode = tuple(cfg.model.kernel_shape), cfg.model.mode
    if cfg.data.files is not None:
        x, y, truth = load_pair(cfg.data.files, kshape, mode)
        return x[None], y[None], None if truth is None else truth[None]
    pairs = [make_pair(cfg.data.synthetic, kshape, mode, seed=cfg.seed + i)
             for i in progress(range(cfg.data.batch), desc="data", leave=False)]
    xs, ys, hs = (np.stack(a) for a in zip(*pairs))
    return xs, ys, hs


# ---------------------------------------------------------------------------
# Estimation and metrics.
# ---------------------------------------------------------------------------


def _estimate(cfg: Config, xs, ys, *, truths=None):
    import jax

    from jdeconv._estimate import estimate_kernel, estimate_kernels

    kwargs = dict(mode=cfg.model.mode, prior=cfg.prior.name, solver=cfg.solver.name,
                  regularization=cfg.regularization_dict(),
                  max_iters=cfg.solver.max_iters,
                  tol=cfg.solver.tol, dtype=cfg.solver.dtype, support=_support(cfg))
    if xs.shape[0] == 1:
        ref = None if truths is None else truths[0]
        est = estimate_kernel(xs[0], ys[0], tuple(cfg.model.kernel_shape), reference=ref, **kwargs)
    else:
        est = estimate_kernels(xs, ys, tuple(cfg.model.kernel_shape), reference=truths, **kwargs)
    return jax.block_until_ready(est)


def _per_item(est, batched: bool) -> dict[str, np.ndarray]:
    """The estimate's arrays as host arrays with a leading batch axis (B = 1 for one pair)."""
    def lead(a, dtype=None):
        a = np.asarray(a, dtype)
        return a if batched else a[None]

    out = {name: lead(getattr(est, name)) for name in ("kernel", "iterations", "converged", "status")}
    for name in ("loss_history", "error_history", "objective", "residual_norm", "kkt_residual",
                 "lipschitz", "noise_sigma", "fit_statistic"):
        out[name] = lead(getattr(est, name), np.float64)
    out["regularization"] = {k: np.broadcast_to(lead(v, np.float64), out["iterations"].shape)
                             for k, v in dict(est.regularization).items()}
    return out


def _fitted_region(a: np.ndarray, kernel_shape, mode: str) -> np.ndarray:
    """The pixels the estimator fits: all of them, or the valid part for 'same'."""
    if mode != "same":
        return a
    (k, l), (m, n) = kernel_shape, a.shape[-2:]
    ck, cl = (k - 1) // 2, (l - 1) // 2
    return a[..., k - 1 - ck:m - ck, l - 1 - cl:n - cl]


def relative_error(estimate, truth) -> float:
    """``||estimate - truth|| / ||truth||`` (Frobenius)."""
    truth = np.asarray(truth, np.float64)
    return float(np.linalg.norm(np.asarray(estimate, np.float64) - truth) / np.linalg.norm(truth))


def psnr(a, b, peak: float = 1.0) -> float:
    """``10 log10(peak² / mean((a - b)²))`` in dB (images scaled to [0, 1]: peak 1)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def _clean(obj: Any) -> Any:
    """JSON-safe: NumPy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def versions() -> dict[str, Any]:
    """Versions of the software stack and the devices JAX sees."""
    import jax
    import jaxlib
    import optax

    import jdeconv

    return {
        "jdeconv": getattr(jdeconv, "__version__", "unknown"),
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "optax": optax.__version__,
        "numpy": np.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "machine": platform.machine(), "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "jax_enable_x64": bool(jax.config.read("jax_enable_x64")),
    }


def _error_curve(est, items) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean relative kernel error per iteration, for first-order solvers.

    The engine records ``||h_i - h_true|| / ||h_true||`` after every iteration
    when it is given the true kernel (``reference=``); this averages it over
    the batch up to the last iteration any item ran.
    """
    if est.solver not in _ITERATIVE:
        return None
    errors = np.asarray(items["error_history"], np.float64)
    if not np.isfinite(errors[:, 0]).all():
        return None
    last = int(np.max(items["iterations"]))
    its = np.arange(last + 1)
    return its, np.nanmean(errors[:, : last + 1], axis=0)


def _metrics(cfg: Config, est, items, xs, ys, truths, timing) -> tuple[dict[str, Any], list[np.ndarray]]:
    """``metrics.json`` content and the residual images ``conv2d(x, ĥ) - y``."""
    import jax

    from jdeconv._conv import conv2d

    kshape, mode = tuple(cfg.model.kernel_shape), cfg.model.mode
    psnrs, residual_images = [], []
    with jax.enable_x64(True):
        for x, y, h in zip(xs, ys, items["kernel"]):
            if not np.all(np.isfinite(h)):  # a failed solve is reported, not raised
                residual_images.append(np.full(y.shape, np.nan))
                psnrs.append(math.nan)
                continue
            r = np.asarray(conv2d(x, np.asarray(h, np.float64), mode)) - y
            residual_images.append(r)
            psnrs.append(psnr(_fitted_region(r, kshape, mode), 0.0))
    batch = xs.shape[0]
    per = {
        "relative_error": None if truths is None else
        [relative_error(h, t) for h, t in zip(items["kernel"], truths)],
        "residual_norm": items["residual_norm"], "psnr_db": psnrs,
        "iterations": items["iterations"], "converged": items["converged"],
        "status": items["status"], "objective": items["objective"],
        "kkt_residual": items["kkt_residual"],
        "kernel_sum": items["kernel"].sum(axis=(-2, -1)),
        "kernel_min": items["kernel"].min(axis=(-2, -1)),
        "noise_sigma": items["noise_sigma"], "fit_statistic": items["fit_statistic"],
        "weights": [{k: float(v[i]) for k, v in items["regularization"].items()}
                    for i in range(batch)],
    }
    m: dict[str, Any] = {
        "batch": batch, "solver": est.solver, "solver_requested": est.solver_requested,
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
    return m, residual_images


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    """Scalar summary of a run's metrics (for sweep tables)."""
    if m["batch"] == 1:
        keys = ("relative_error", "residual_norm", "psnr_db", "iterations", "converged", "kkt_residual")
        out = {k: m.get(k) for k in keys}
    else:
        out = {"relative_error": m["relative_error_mean"], "residual_norm": m["residual_norm_mean"],
               "psnr_db": m["psnr_db_mean"], "iterations": m["iterations_median"],
               "converged": f"{m['converged_count']}/{m['batch']}", "kkt_residual": None}
    out.update(solver=m["solver"], time_s=m["timing"].get("time_s"))
    return out


# ---------------------------------------------------------------------------
# Files and plots.
# ---------------------------------------------------------------------------


def _kernel_mosaic(kernels: np.ndarray) -> np.ndarray:
    """Kernels min-max scaled to [0, 1], tiled in a grid with 1-pixel gaps."""
    ks = np.asarray(kernels, np.float64).reshape((-1,) + kernels.shape[-2:])
    lo, hi = ks.min(axis=(1, 2), keepdims=True), ks.max(axis=(1, 2), keepdims=True)
    ks = (ks - lo) / np.where(hi > lo, hi - lo, 1.0)
    b, k, l = ks.shape
    cols = int(math.ceil(math.sqrt(b)))
    rows = int(math.ceil(b / cols))
    out = np.zeros((rows * (k + 1) - 1, cols * (l + 1) - 1))
    for i, h in enumerate(ks):
        r, c = divmod(i, cols)
        out[r * (k + 1):r * (k + 1) + k, c * (l + 1):c * (l + 1) + l] = h
    return out


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow([_fmt(v) for v in row])


def _fmt(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _figure(ncols: int, nrows: int = 1, size=(4.0, 3.4)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def plot_kernels(path: Path, estimate: np.ndarray, truth: np.ndarray | None, title: str = "") -> None:
    """True kernel, estimate and difference side by side (estimate only without truth)."""
    panels = [("estimate", estimate)] if truth is None else [
        ("truth", truth), ("estimate", estimate), ("estimate - truth", estimate - truth)]
    fig, axes = _figure(len(panels))
    vmax = max(float(np.max(np.abs(p))) for _, p in panels[:2])
    for ax, (name, img) in zip(axes[0], panels):
        if name.startswith("estimate -"):
            lim = float(np.max(np.abs(img))) or 1.0
            im = ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        else:
            im = ax.imshow(img, cmap="viridis", vmin=min(0.0, float(img.min())), vmax=vmax,
                           interpolation="nearest")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)


def plot_convergence(path: Path, histories: dict[str, np.ndarray],
                     errors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, *,
                     suboptimality: bool = False, title: str = "") -> None:
    """Objective (or suboptimality) per iteration on a log scale; error per iteration if given."""
    ncols = 2 if errors else 1
    fig, axes = _figure(ncols, size=(5.0, 3.8))
    ax = axes[0][0]
    finite = {k: v[np.isfinite(v)] for k, v in histories.items()}
    best = min((float(v.min()) for v in finite.values() if v.size), default=0.0)
    for label, v in finite.items():
        if not v.size:
            continue
        if suboptimality:
            scale = max(float(v[0]) - best, np.finfo(float).tiny)
            vals = np.maximum((v - best) / scale, 1e-17)
        else:
            vals = np.maximum(v, np.finfo(float).tiny)
        style = dict(marker="o", ms=3) if v.size <= 3 else {}
        ax.semilogy(np.arange(v.size), vals, label=label, **style)
    ax.set_xlabel("iteration")
    ax.set_ylabel("(f - f*) / (f0 - f*)" if suboptimality else "objective")
    ax.grid(True, which="both", alpha=0.3)
    if len(histories) > 1:
        ax.legend(fontsize=8)
    if errors:
        ax = axes[0][1]
        for label, (its, err) in errors.items():
            style = dict(marker="o", ms=3)
            ax.loglog(np.maximum(its, 1), np.maximum(err, 1e-17), label=label, **style)
        ax.set_xlabel("iteration")
        ax.set_ylabel("relative kernel error")
        ax.grid(True, which="both", alpha=0.3)
        if len(errors) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)


def plot_residual(path: Path, y: np.ndarray, residual: np.ndarray, title: str = "") -> None:
    """Blurred image, re-blurred estimate and residual."""
    fig, axes = _figure(3)
    lim = float(np.max(np.abs(residual))) or 1.0
    for ax, (name, img, kw) in zip(axes[0], [
            ("blurred y", y, dict(cmap="gray")),
            ("conv2d(x, ĥ)", y + residual, dict(cmap="gray")),
            ("residual conv2d(x, ĥ) - y", residual, dict(cmap="RdBu_r", vmin=-lim, vmax=lim))]):
        im = ax.imshow(img, **kw)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------------------
# One run.
# ---------------------------------------------------------------------------


def _run_single(cfg: Config, d: Path, progress: Callable, cache: dict) -> dict[str, Any]:
    """Writes one run's files into the existing directory ``d``; returns its metrics."""
    import jax

    key = json.dumps(_clean({"data": cfg.resolved()["data"], "model": cfg.resolved()["model"],
                             "seed": cfg.seed}), sort_keys=True)
    t0 = time.perf_counter()
    if key not in cache:
        cache.clear()  # keep one data set in memory
        cache[key] = _data(cfg, progress)
    xs, ys, truths = cache[key]
    data_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    est = _estimate(cfg, xs, ys, truths=truths)
    first_s = time.perf_counter() - t0
    timing = {"data_s": data_s, "first_call_s": first_s}
    if cfg.outputs.warm_timing:
        t0 = time.perf_counter()
        _estimate(cfg, xs, ys, truths=truths)
        timing["time_s"] = time.perf_counter() - t0
        timing["compile_s_approx"] = max(first_s - timing["time_s"], 0.0)
    else:
        timing["time_s"] = first_s
    batched = xs.shape[0] > 1
    items = _per_item(est, batched)
    curve = _error_curve(est, items) if cfg.outputs.error_curve else None
    metrics, residuals = _metrics(cfg, est, items, xs, ys, truths, timing)
    metrics["devices"] = [str(dv) for dv in jax.devices()]

    stem = "kernels" if batched else "kernel"
    kernels = items["kernel"] if batched else items["kernel"][0]
    np.save(d / f"{stem}.npy", np.asarray(kernels, np.float64))
    if truths is not None:
        np.save(d / ("truths.npy" if batched else "truth.npy"), truths if batched else truths[0])
    history = items["loss_history"] if batched else items["loss_history"][0]
    np.save(d / "loss_history.npy", np.asarray(history, np.float64))
    if cfg.outputs.save_csv:
        if batched:
            _write_csv(d / "loss_history.csv", ["item", "iteration", "objective"],
                       ((b, i, v) for b, h in enumerate(items["loss_history"])
                        for i, v in enumerate(h) if np.isfinite(v)))
            _write_csv(d / "kernels.csv", ["item", "row", "col", "value"],
                       ((b, r, c, v) for b, h in enumerate(items["kernel"])
                        for (r, c), v in np.ndenumerate(h)))
        else:
            _write_csv(d / "loss_history.csv", ["iteration", "objective"],
                       ((i, v) for i, v in enumerate(history) if np.isfinite(v)))
            np.savetxt(d / "kernel.csv", np.asarray(kernels, np.float64), delimiter=",", fmt="%.17g")
        if curve is not None:
            _write_csv(d / "error_curve.csv", ["iteration", "relative_error"], zip(*curve))
    finite = bool(np.all(np.isfinite(items["kernel"])))
    if cfg.outputs.save_kernel_png and finite:
        from jdeconv._io import write_image

        write_image(d / f"{stem}.png", _kernel_mosaic(items["kernel"]), bit_depth=16)
    if curve is not None:
        metrics["error_curve"] = {"iterations": curve[0], "relative_error": curve[1]}
    if cfg.outputs.plots and finite:
        label = f"{cfg.name}: solver={est.solver}, prior={est.prior}"
        if batched:
            label += f" (item 0 of {xs.shape[0]})"
        truth0 = None if truths is None else truths[0]
        plot_kernels(d / "plot_kernel.png", items["kernel"][0], truth0, label)
        plot_convergence(d / "plot_convergence.png", {est.solver: items["loss_history"][0]},
                         None if curve is None else {est.solver: curve}, title=label)
        plot_residual(d / "plot_residual.png", ys[0], residuals[0], label)
    _write_json(d / "metrics.json", metrics)
    metrics["_loss_history"] = items["loss_history"][0]
    metrics["_error_curve"] = curve
    return metrics


# ---------------------------------------------------------------------------
# Sweeps.
# ---------------------------------------------------------------------------


def _short(key: str) -> str:
    """``data.synthetic.noise.gaussian_sigma`` -> ``noise.gaussian_sigma``."""
    return ".".join(key.split(".")[-2:])


def _point_name(i: int, assignment: dict[str, Any]) -> str:
    parts = [f"{_short(k)}={v}" for k, v in assignment.items()]
    name = f"{i:03d}-" + "_".join(parts)
    safe = "".join(c if c.isalnum() or c in "._=-+" else "_" for c in name)
    return safe[:120]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_sweep(path: Path, cfg: Config, rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    """One combined plot: error against the first numeric sweep key (one line per other
    combination), or overlaid convergence curves when nothing numeric is swept."""
    keys = list(cfg.sweep)
    numeric = [k for k in keys if all(_is_number(v) for v in cfg.sweep[k])]
    metric = "relative_error" if all(r.get("relative_error") is not None for r in rows) else "residual_norm"
    if numeric:
        xkey = numeric[0]
        others = [k for k in keys if k != xkey]
        fig, axes = _figure(1, size=(6.0, 4.2))
        ax = axes[0][0]
        groups: dict[str, list] = {}
        for r in rows:
            label = ", ".join(f"{_short(k)}={r[k]}" for k in others) or metric
            groups.setdefault(label, []).append(r)
        for label, rs in groups.items():
            rs = sorted(rs, key=lambda r: r[xkey])
            ax.plot([r[xkey] for r in rs], [np.nan if r[metric] is None else max(r[metric], 1e-17) for r in rs],
                    marker="o", label=label)
        xs = np.asarray(cfg.sweep[xkey], float)
        positive = xs[xs > 0]
        if positive.size > 1 and xs.min() >= 0 and positive.max() / positive.min() >= 5:
            ax.set_xscale("symlog", linthresh=float(positive.min()))
        ax.set_yscale("log")
        ax.set_xlabel(_short(xkey))
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(True, which="both", alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=8)
        ax.set_title(cfg.name)
        fig.savefig(path, dpi=100)
        return
    labels = [", ".join(f"{v}" for v in r["_assignment"].values()) for r in runs]
    only_solver = all(k.startswith("solver.") for k in keys)
    errors = {lab: r["_error_curve"] for lab, r in zip(labels, runs) if r["_error_curve"] is not None}
    if metric == "relative_error":
        # Non-iterative solvers: one point at their iteration count.
        for lab, r in zip(labels, runs):
            if r["_error_curve"] is None and errors:
                errors[lab] = (np.asarray([max(int(r["_headline"]["iterations"] or 1), 1)]),
                               np.asarray([r["_headline"]["relative_error"]]))
    plot_convergence(path, {lab: r["_loss_history"] for lab, r in zip(labels, runs)},
                     errors or None, suboptimality=only_solver, title=cfg.name)


def _run_sweep(cfg: Config, d: Path, progress: Callable) -> None:
    points = cfg.sweep_points()
    rows, runs, cache = [], [], {}
    for i, (assignment, point_cfg) in enumerate(progress(points, desc=cfg.name)):
        sub = d / _point_name(i, assignment)
        sub.mkdir()
        (sub / "config.yaml").write_text(point_cfg.to_yaml(), encoding="utf-8")
        m = _run_single(point_cfg, sub, progress, cache)
        head = _headline(m)
        rows.append({"point": sub.name, **assignment, **head})
        m["_assignment"], m["_headline"] = assignment, head
        runs.append(m)
    _write_json(d / "sweep.json", {"name": cfg.name, "keys": list(cfg.sweep), "points": rows})
    header = list(rows[0])
    _write_csv(d / "sweep.csv", header, ([r[h] for h in header] for r in rows))
    if cfg.outputs.plots:
        plot_sweep(d / "plot_sweep.png", cfg, rows, runs)


# ---------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------


def _default_out(name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def run_experiment(config: Config | dict | str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                   *, quiet: bool = False) -> Path:
    """Runs an experiment (or sweep) and writes a new run directory.

    Args:
        config: a :class:`Config`, a dict or a YAML path (see :func:`load_config`).
        out_dir: the directory to create; it must not exist. None:
            ``runs/<name>-<YYYYmmdd-HHMMSS>`` under the current directory.
        quiet: no progress bars.

    Returns:
        The path of the finished run directory.

    Raises:
        ConfigError: invalid configuration.
        FileExistsError: ``out_dir`` exists.
        ValueError, TypeError, FileNotFoundError: bad data (images that do not
            fit the mode, unknown image or kernel names, ...). The partial
            directory is kept with a ``FAILED`` file.
    """
    from tqdm.auto import tqdm

    cfg = config if isinstance(config, Config) else load_config(config)
    final = _default_out(cfg.name) if out_dir is None else Path(out_dir)
    if final.exists():
        raise FileExistsError(f"run directory {str(final)!r} already exists; choose another "
                              "output directory (runs are never overwritten)")
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{final.name}.partial-", dir=final.parent))

    def progress(iterable, **kw):
        return tqdm(iterable, disable=quiet, file=sys.stderr, **kw)

    try:
        (partial / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        _write_json(partial / "versions.json", versions())
        if cfg.sweep:
            _run_sweep(cfg, partial, progress)
        else:
            _run_single(cfg, partial, progress, {})
        if final.exists():
            raise FileExistsError(f"run directory {str(final)!r} appeared while the run was going; "
                                  f"the results are in {str(partial)!r}")
        os.rename(partial, final)
    except BaseException as exc:
        if partial.exists():
            (partial / "FAILED").write_text(
                "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), encoding="utf-8")
        raise
    return final

