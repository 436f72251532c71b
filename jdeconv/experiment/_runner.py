"""Experiment runner: a :class:`~jdeconv.experiment.Config` in, a run directory out.

:func:`run_experiment` builds (or reads) the image pair(s), estimates the
kernel with :func:`jdeconv.estimate_kernel` (:func:`jdeconv.estimate_kernels`
for a batch), and writes a new directory:

===================== ==========================================================
``config.yaml``       the resolved configuration (every default filled in)
``versions.json``     jdeconv, jax, jaxlib, optax, numpy, python, platform, devices
``kernel.npy``        the estimate (``kernels.npy``, shape (B, k, l), for a batch)
``truth.npy``         the true kernel when known (``truths.npy`` for a batch)
``loss_history.npy``  objective per iteration (NaN after the last); ``.csv`` too
``kernel.csv/.png``   optional (``outputs.save_csv`` / ``outputs.save_kernel_png``);
                      the PNG is upsampled (nearest neighbour) to be visible
``plot_*.png``        kernels (true, estimate, difference), convergence, residual;
                      ``plot_kernel_size.png`` (the size criterion against the box
                      side, the chosen box marked) with ``kernel_shape: auto``
``metrics.json``      written last: relative kernel error (when the truth is
                      known), residual norm, PSNR, iterations, convergence,
                      optimality, solver and its options; the diagnostics of
                      every estimate (kernel box, and with ``auto`` how it was
                      chosen; centroid offset, border mass, gain, background,
                      noise level, fit statistic); ``warnings``, the estimate's
                      warnings (one line each); wall-clock times under
                      ``timing`` (the only fields that vary between identical runs)
===================== ==========================================================

Warnings of the estimate (:class:`jdeconv._diagnostics.FitWarning`: a fit
statistic well above 1, kernel mass on the border, 0–255-looking floats, a
constant blurred image) and of reading the images (JPEG) are recorded in
``metrics.json``, not raised: :func:`jdeconv.experiment._feedback.recorded_warnings`. The command line
prints them as ``jdeconv: warning: ...``.

With ``kernel_shape: auto`` and several pairs (``data.batch``, or the channels
of ``data.channels: rgb``), the box is chosen once — on the channel mean for
RGB, on the first pair of a batch — and every pair is estimated in it.

``timing`` holds ``data_s`` (making or reading the pair), ``wall_s`` (what the
estimate took, as waited), ``compile_s`` (how much of it was JAX compilation
or loading from the compilation cache) and ``time_s`` (the solve without
compilation: ``warm_s``, a second timed call, when ``outputs.warm_timing`` is
on, else ``wall_s - compile_s``).

A configuration with a ``sweep`` section writes one such sub-directory per
point (``000-name=value``...) plus ``sweep.csv``, ``sweep.json``, one combined
plot, ``plot_sweep.png``, and, last of all, its own ``metrics.json`` (the
table of points). The points' ``metrics.json`` files are written only once
every point has run.

Finished runs: everything is written into ``<dir>.partial-XXXXXXXX`` next to
the destination, which is renamed to ``<dir>`` only when complete, so **a run is
finished exactly when its top-level directory has no ``.partial`` suffix**. If
anything fails (Ctrl-C included), the partial directory stays for inspection
with a ``FAILED`` file holding the traceback; a killed run leaves it without
any ``metrics.json``. An existing destination is never overwritten. Without
``out_dir`` the destination is ``runs/<config name>-<YYYYmmdd-HHMMSS>``
(``-2``, ``-3``... if taken).

Reproducibility: the same configuration gives identical ``metrics.json``
numbers outside ``timing`` (synthetic data are seeded from ``seed``; JAX on CPU
is deterministic). Synthetic data are generated in float64; the estimation
runs in the solver's ``dtype`` (None: float64 when ``jax_enable_x64`` is on, as
in the command line tool).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
import warnings as _warnings
from pathlib import Path
from typing import Any

import numpy as np

from jdeconv.experiment import _metrics, _pairs, _plots
from jdeconv.experiment._artifacts import Folder, RunDirectory, clean, kernel_csv_text, kernel_image
from jdeconv.experiment._config import Config, load_config
from jdeconv.experiment._feedback import Progress, recorded_warnings, tqdm_progress
from jdeconv.experiment._timing import Stopwatch

__all__ = ["default_run_directory", "estimate", "estimate_arrays", "estimate_options",
           "point_name", "run_experiment"]


def estimate_options(cfg: Config) -> dict[str, Any]:
    """The ``estimate_kernel`` options a configuration asks for (all but the data)."""
    model = cfg.model
    kwargs: dict[str, Any] = dict(
        mode=model.mode, prior=cfg.prior.name, solver=cfg.solver.name,
        regularization=cfg.regularization_dict(), max_iters=cfg.solver.max_iters,
        tol=cfg.solver.tol, dtype=cfg.solver.dtype, gain=model.gain,
        background=model.background, loss=model.loss, orientation=model.orientation,
        saturation=model.saturation, nan=model.nan, throw=False)
    if model.loss_options:
        kwargs["loss_options"] = dict(model.loss_options)
    if not model.auto:
        kwargs["support"] = _pairs.load_support(cfg.prior.support, model.kernel_shape)
    if model.weights is not None:
        kwargs["weights"] = model.weights
    if cfg.solver.options:
        kwargs["solver_options"] = dict(cfg.solver.options)
    if cfg.outputs.standard_errors:
        kwargs["standard_errors"] = True
    return kwargs


def _pilot(a, how: str):
    """The one image (or mask/weights) a batch's ``auto`` box is chosen on."""
    if a is None or isinstance(a, str) or a.ndim == 2:
        return a
    if how == "first":
        return a[0]
    return a.all(axis=0) if a.dtype == bool else a.mean(axis=0)


def estimate_arrays(xs, ys, kernel_shape, *, max_kernel_shape=None, reference=None, mask=None,
                    weights=None, pilot: str = "first", **kwargs):
    """``(estimate, kernel_size)`` for stacked pairs ``xs`` (B, m, n), ``ys`` (B, M, N), blocked on.

    One pair: :func:`jdeconv.estimate_kernel`; several: :func:`jdeconv.estimate_kernels`.
    With ``kernel_shape="auto"`` and several pairs the box is chosen by
    ``estimate_kernel(..., "auto")`` on a pilot pair (``pilot="first"``: the
    first pair; ``"mean"``: the mean of the pairs, for the channels of one
    colour pair) and every pair is then estimated in that box.
    ``kernel_size`` is :func:`jdeconv.experiment._metrics.kernel_size_info`
    of the auto choice (None for a given box). ``weights`` may be
    ``"poisson"``; ``reference`` is used only where its shape is the box's.
    ``progress`` (``True`` or a reporter, see :mod:`jdeconv._progress`)
    reaches the single-pair calls (the pilot and one pair); a batch runs
    vmapped and reports nothing from inside.
    """
    import jax

    from jdeconv import estimate_kernel, estimate_kernels

    opts = dict(kwargs)
    progress = opts.pop("progress", None)
    if weights is not None:
        opts["weights"] = weights
    auto = isinstance(kernel_shape, str)
    single = xs.shape[0] == 1
    if auto and single:
        est = estimate_kernel(xs[0], ys[0], "auto", max_kernel_shape=max_kernel_shape,
                              mask=None if mask is None else _pilot(mask, "first"),
                              progress=progress, **_first(opts))
        est = jax.block_until_ready(est)
        return est, _metrics.kernel_size_info(est.stats)
    info = None
    if auto:
        how = "first" if pilot == "first" else "mean"
        x0 = xs[0] if how == "first" else xs.mean(axis=0)
        y0 = ys[0] if how == "first" else ys.mean(axis=0)
        with _warnings.catch_warnings(record=True) as pilot_log:
            _warnings.simplefilter("always", UserWarning)
            first = estimate_kernel(x0, y0, "auto", max_kernel_shape=max_kernel_shape,
                                    mask=_pilot(mask, how), progress=progress,
                                    **_first(opts, how))
        info = _metrics.kernel_size_info(first.stats)
        kernel_shape = tuple(int(v) for v in info["kernel_box"])
    kshape = tuple(kernel_shape)
    if reference is not None and tuple(np.shape(reference)[-2:]) != kshape:
        reference = None
    if single:
        ref = None if reference is None else reference[0]
        m = None if mask is None else _pilot(mask, "first")
        est = estimate_kernel(xs[0], ys[0], kshape, reference=ref, mask=m, progress=progress,
                              **_first(opts))
    elif not auto:
        est = estimate_kernels(xs, ys, kshape, reference=reference, mask=mask, **opts)
    else:
        with _warnings.catch_warnings(record=True) as log:
            _warnings.simplefilter("always", UserWarning)
            est = estimate_kernels(xs, ys, kshape, reference=reference, mask=mask, **opts)
        for w in _auto_batch_warnings(pilot_log, log):
            _warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return jax.block_until_ready(est), info


def _auto_batch_warnings(pilot_log: list, log: list) -> list:
    """The warnings of an ``auto``-size batch to pass on, by class (never by wording).

    The auto box ends where the support does, so mass on its border is expected: keep the
    pilot's word on the box (:class:`~jdeconv._diagnostics.KernelBoxWarning`: a generous box
    the kernel fills) and the batch's other warnings (fit statistics), drop the batch's
    box warnings (mass on the border).
    """
    from jdeconv._diagnostics import KernelBoxWarning

    def box(w) -> bool:
        return issubclass(w.category, KernelBoxWarning)

    return [w for w in pilot_log if box(w)] + [w for w in log if not box(w)]


def _first(opts: dict, how: str = "first") -> dict:
    """Options for one pair out of a stack: per-pixel weights of the first pair (or their mean)."""
    w = opts.get("weights")
    if w is None or isinstance(w, str) or np.ndim(w) == 2:
        return opts
    return {**opts, "weights": _pilot(w, how)}


def estimate(cfg: Config, xs, ys, *, truths=None, mask=None, weights=None):
    """``(estimate, kernel_size)`` of a configuration's pairs (see :func:`estimate_arrays`)."""
    kshape = "auto" if cfg.model.auto else tuple(cfg.model.kernel_shape)
    options = estimate_options(cfg)
    if weights is None:  # model.weights (poisson), if any
        weights = options.pop("weights", None)
    options.pop("weights", None)
    return estimate_arrays(xs, ys, kshape, max_kernel_shape=cfg.model.max_kernel_shape,
                           reference=truths, mask=mask, weights=weights,
                           pilot="mean" if cfg.data.channels == "rgb" else "first", **options)


def _degree(background) -> int | None:
    """The polynomial degree of a background model (None for none)."""
    return {"none": None, "constant": 0, "plane": 1}.get(background, background)


def _used(cfg: Config, est, pairs) -> list | None:
    """Per pair, the pixels of ``y`` the estimate used (None where all were), or None."""
    model = cfg.model
    weights = pairs.weights if pairs.weights is not None else model.weights
    if pairs.mask is None and weights is None and model.saturation is None and model.nan == "raise":
        return None

    def item(a, i):
        return a if a is None or isinstance(a, str) or a.ndim == 2 else a[i]

    return [_metrics.used_pixels(x, y, est.kernel_shape, model.mode, mask=item(pairs.mask, i),
                                 weights=item(weights, i), saturation=model.saturation,
                                 nan=model.nan)
            for i, (x, y) in enumerate(zip(pairs.xs, pairs.ys))]


def _data_key(cfg: Config) -> str:
    r = cfg.resolved()
    return json.dumps(clean({"data": r["data"], "model": r["model"], "seed": cfg.seed}), sort_keys=True)


def _run_single(cfg: Config, d: Folder, cache: dict, progress: Progress | None,
                label: str = "") -> dict[str, Any]:
    """Writes one run's files, except ``metrics.json``, into ``d``; returns what the caller needs."""
    t0 = time.perf_counter()
    key = _data_key(cfg)
    with recorded_warnings() as data_warnings:  # JPEG input, ...
        if key not in cache:
            cache.clear()  # keep one data set in memory
            cache[key] = (_pairs.pairs_for(cfg, progress), [])
    pairs, first_warnings = cache[key]
    first_warnings.extend(w for w in data_warnings if w not in first_warnings)
    xs, ys, truths = pairs.xs, pairs.ys, pairs.truths
    timing: dict[str, float] = {"data_s": time.perf_counter() - t0}

    with recorded_warnings() as fit_warnings, Stopwatch() as sw:
        est, kernel_size = estimate(cfg, xs, ys, truths=truths, mask=pairs.mask,
                                    weights=pairs.weights)
    timing.update(wall_s=sw.wall_s, compile_s=sw.compile_s)
    if cfg.outputs.warm_timing:
        with recorded_warnings(), Stopwatch() as warm:
            estimate(cfg, xs, ys, truths=truths, mask=pairs.mask, weights=pairs.weights)
        timing.update(warm_s=warm.wall_s, time_s=warm.wall_s)
    else:
        timing["time_s"] = max(sw.wall_s - sw.compile_s, 0.0)

    batched = xs.shape[0] > 1
    items = _metrics.per_item(est, batched)
    curve = _metrics.error_curve(est, items) if cfg.outputs.error_curve else None
    used = _used(cfg, est, pairs)
    residuals = _metrics.residuals(xs, ys, items["kernel"], cfg.model.mode, gains=items["gain"],
                                   backgrounds=items["background"],
                                   degree=_degree(cfg.model.background),
                                   orientation=cfg.model.orientation, used=used)
    metrics = _metrics.metrics(cfg, est, items, residuals, truths, timing,
                               kernel_size=kernel_size,
                               warnings=first_warnings + [w for w in fit_warnings
                                                          if w not in first_warnings])
    if used is not None:
        metrics["pixels_used"] = [int(np.sum(_metrics.fitted_region(
            u if u is not None else np.ones(y.shape, bool), est.kernel_shape, cfg.model.mode)))
            for u, y in zip(used, ys)]
        if not batched:
            metrics["pixels_used"] = metrics["pixels_used"][0]
    if curve is not None:
        metrics["error_curve"] = {"iterations": curve[0], "relative_error": curve[1]}

    stem = "kernels" if batched else "kernel"
    kernels = items["kernel"] if batched else items["kernel"][0]
    d.save_npy(f"{stem}.npy", kernels)
    if truths is not None:
        d.save_npy("truths.npy" if batched else "truth.npy", truths if batched else truths[0])
    history = items["loss_history"] if batched else items["loss_history"][0]
    d.save_npy("loss_history.npy", history)
    if cfg.outputs.save_csv:
        if batched:
            d.write_csv("loss_history.csv", ["item", "iteration", "objective"],
                        ((b, i, v) for b, h in enumerate(items["loss_history"])
                         for i, v in enumerate(h) if np.isfinite(v)))
            d.write_csv("kernels.csv", ["item", "row", "col", "value"],
                        ((b, r, c, v) for b, h in enumerate(items["kernel"])
                         for (r, c), v in np.ndenumerate(h)))
        else:
            d.write_csv("loss_history.csv", ["iteration", "objective"],
                        ((i, v) for i, v in enumerate(history) if np.isfinite(v)))
            d.write_text("kernel.csv", kernel_csv_text(kernels))
        if curve is not None:
            d.write_csv("error_curve.csv", ["iteration", "relative_error"], zip(*curve))
    finite = bool(np.all(np.isfinite(items["kernel"])))
    if cfg.outputs.save_kernel_png and finite:
        d.write_png(f"{stem}.png", kernel_image(items["kernel"]))
    if cfg.outputs.plots and finite:
        extra = ", ".join(x for x in (label, f"item 0 of {xs.shape[0]}" if batched else "") if x)
        title = _plots.run_title(solver=est.solver, prior=est.prior, mode=est.mode,
                                 kernel_shape=est.kernel_shape, extra=extra)
        kernel0, truth0 = items["kernel"][0], None if truths is None else truths[0]
        if truth0 is not None:
            kernel0, truth0 = _metrics.common_box(kernel0, truth0)
        optimality = items["stats"].get("optimality_history")
        _plots.plot_kernels(d.path("plot_kernel.png"), kernel0, truth0, title)
        if kernel_size is not None and "size_criterion" in kernel_size:
            _plots.plot_kernel_size(d.path("plot_kernel_size.png"), kernel_size["size_candidates"],
                                    kernel_size["size_criterion"], kernel_size["kernel_box"],
                                    title=title)
        _plots.plot_convergence(d.path("plot_convergence.png"), est.solver, items["loss_history"][0],
                                optimality_history=None if optimality is None else optimality[0],
                                error_curve=curve, title=title)
        _plots.plot_residual(d.path("plot_residual.png"), ys[0], residuals[0],
                             kernel_shape=est.kernel_shape, mode=est.mode, title=title)
    from jdeconv.experiment._run_extras import extend_run  # optics, error bars, PSF fits, fields

    extend_run(cfg, d, xs, ys, truths, est, items, metrics, field_truth=pairs.field_truth,
               title=_plots.run_title(solver=est.solver, prior=est.prior, mode=est.mode,
                                      kernel_shape=est.kernel_shape, extra=label))
    return {"metrics": metrics, "loss_history": items["loss_history"][0], "error_curve": curve}


# ---------------------------------------------------------------------------
# Sweeps.
# ---------------------------------------------------------------------------


def point_name(i: int, assignment: dict[str, Any]) -> str:
    """The sub-directory of sweep point ``i``: a plain file name, at most 120 characters.

    Example:
        >>> point_name(3, {"data.synthetic.noise.gaussian_sigma": 0.01, "solver.name": "gd"})
        '003-noise.gaussian_sigma=0.01_solver.name=gd'
        >>> point_name(0, {"name": "../x"})
        '000-name=.._x'
    """
    parts = [f"{_plots.short_key(k)}={v}" for k, v in assignment.items()]
    name = f"{i:03d}-" + "_".join(parts)
    safe = "".join(c if c.isalnum() or c in "._=-+" else "_" for c in name)
    return safe[:120]


def _run_sweep(cfg: Config, run: RunDirectory, progress: Progress | None) -> None:
    points = cfg.sweep_points()
    done: list[tuple[Folder, dict[str, Any], dict[str, Any]]] = []
    cache: dict = {}
    t0 = time.perf_counter()
    iterator = points if progress is None else progress(points, desc=cfg.name, unit="point")
    for i, (assignment, point_cfg) in enumerate(iterator):
        sub = run.folder(point_name(i, assignment))
        sub.write_text("config.yaml", point_cfg.to_yaml())
        label = ", ".join(f"{_plots.short_key(k)}={v}" for k, v in assignment.items())
        out = _run_single(point_cfg, sub, cache, progress, label)
        out["assignment"] = assignment
        out["row"] = {"point": sub.dir.name, **assignment, **_metrics.headline(out["metrics"])}
        done.append((sub, assignment, out))
    # Every point has run: only now does any of them look finished.
    for sub, _, out in done:
        sub.write_json("metrics.json", out["metrics"])
    rows = [out["row"] for _, _, out in done]
    run.write_json("sweep.json", {"name": cfg.name, "keys": list(cfg.sweep), "points": rows})
    header = list(rows[0])
    run.write_csv("sweep.csv", header, ([r.get(h) for h in header] for r in rows))
    if cfg.outputs.plots:
        _plots.plot_sweep(run.path("plot_sweep.png"), cfg.name, cfg.sweep, [out for _, _, out in done])
    run.write_json("metrics.json", {"name": cfg.name, "sweep": list(cfg.sweep), "points": rows,
                                    "timing": {"wall_s": time.perf_counter() - t0}})


# ---------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------


def default_run_directory(name: str, parent: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken); ``name`` is a plain file name."""
    from jdeconv.experiment._config import check_name

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(parent) / f"{check_name(name)}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def run_experiment(config: Config | dict | str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                   *, quiet: bool = False, progress: Progress | None = None) -> Path:
    """Runs an experiment (or sweep) and writes a new run directory.

    Args:
        config: a :class:`Config`, a dict or a YAML path (see :func:`load_config`).
        out_dir: the directory to create; it must not exist. None:
            ``runs/<name>-<YYYYmmdd-HHMMSS>`` under the current directory.
        quiet: no progress bars.
        progress: a progress hook ``progress(iterable, desc=..., **tqdm_options)``
            wrapping the sweep's points and the synthesis of a batch (None:
            ``tqdm`` on stderr when it is a terminal, nothing when ``quiet``).

    Returns:
        The path of the finished run directory.

    Raises:
        ConfigError: invalid configuration.
        FileExistsError: ``out_dir`` exists.
        ValueError, TypeError, FileNotFoundError: bad data (images that do not
            fit the mode, unknown image or kernel names, ...). The partial
            directory is kept with a ``FAILED`` file, and the exception carries
            its path (``jdeconv.experiment._artifacts.partial_directory_of``).
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    final = default_run_directory(cfg.name) if out_dir is None else Path(out_dir)
    if progress is None:
        progress = tqdm_progress(quiet=quiet)
    with RunDirectory(final) as run:
        run.write_text("config.yaml", cfg.to_yaml())
        run.write_json("versions.json", _metrics.versions())
        if cfg.sweep:
            _run_sweep(cfg, run, progress)
        else:
            out = _run_single(cfg, run, {}, progress)
            run.write_json("metrics.json", out["metrics"])
        return run.finish()
