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
``plot_*.png``        kernels (true, estimate, difference), convergence, residual
``metrics.json``      written last: relative kernel error (when the truth is
                      known), residual norm, PSNR, iterations, convergence,
                      optimality, solver and its options; wall-clock times under
                      ``timing`` (the only fields that vary between identical runs)
===================== ==========================================================

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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jdeconv.experiment import _metrics, _pairs, _plots
from jdeconv.experiment._artifacts import Folder, RunDirectory, clean, kernel_csv_text, kernel_image
from jdeconv.experiment._config import Config, load_config
from jdeconv.experiment._timing import Stopwatch

__all__ = ["default_run_directory", "estimate", "point_name", "run_experiment", "tqdm_progress"]

Progress = Callable[..., Any]


def tqdm_progress(*, quiet: bool = False) -> Progress | None:
    """A progress hook: ``tqdm`` on stderr (shown on a terminal only), or None when quiet."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    def progress(iterable, **kw):
        return tqdm(iterable, file=sys.stderr, disable=None, **kw)

    return progress


def estimate(cfg: Config, xs, ys, *, truths=None):
    """The estimate of a configuration's pairs (``estimate_kernels`` for a batch), blocked on."""
    import jax

    from jdeconv import estimate_kernel, estimate_kernels

    kwargs: dict[str, Any] = dict(
        mode=cfg.model.mode, prior=cfg.prior.name, solver=cfg.solver.name,
        regularization=cfg.regularization_dict(), max_iters=cfg.solver.max_iters,
        tol=cfg.solver.tol, dtype=cfg.solver.dtype,
        support=_pairs.load_support(cfg.prior.support, cfg.model.kernel_shape), throw=False)
    if cfg.solver.options:
        kwargs["solver_options"] = dict(cfg.solver.options)
    kshape = tuple(cfg.model.kernel_shape)
    if xs.shape[0] == 1:
        ref = None if truths is None else truths[0]
        est = estimate_kernel(xs[0], ys[0], kshape, reference=ref, **kwargs)
    else:
        est = estimate_kernels(xs, ys, kshape, reference=truths, **kwargs)
    return jax.block_until_ready(est)


def _data_key(cfg: Config) -> str:
    r = cfg.resolved()
    return json.dumps(clean({"data": r["data"], "model": r["model"], "seed": cfg.seed}), sort_keys=True)


def _run_single(cfg: Config, d: Folder, cache: dict, progress: Progress | None,
                label: str = "") -> dict[str, Any]:
    """Writes one run's files, except ``metrics.json``, into ``d``; returns what the caller needs."""
    t0 = time.perf_counter()
    key = _data_key(cfg)
    if key not in cache:
        cache.clear()  # keep one data set in memory
        cache[key] = _pairs.pairs_for(cfg, progress)
    xs, ys, truths = cache[key]
    timing: dict[str, float] = {"data_s": time.perf_counter() - t0}

    with Stopwatch() as sw:
        est = estimate(cfg, xs, ys, truths=truths)
    timing.update(wall_s=sw.wall_s, compile_s=sw.compile_s)
    if cfg.outputs.warm_timing:
        with Stopwatch() as warm:
            estimate(cfg, xs, ys, truths=truths)
        timing.update(warm_s=warm.wall_s, time_s=warm.wall_s)
    else:
        timing["time_s"] = max(sw.wall_s - sw.compile_s, 0.0)

    batched = xs.shape[0] > 1
    items = _metrics.per_item(est, batched)
    curve = _metrics.error_curve(est, items) if cfg.outputs.error_curve else None
    residuals = _metrics.residuals(xs, ys, items["kernel"], cfg.model.mode)
    metrics = _metrics.metrics(cfg, est, items, residuals, truths, timing)
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
        truth0 = None if truths is None else truths[0]
        optimality = items["stats"].get("optimality_history")
        _plots.plot_kernels(d.path("plot_kernel.png"), items["kernel"][0], truth0, title)
        _plots.plot_convergence(d.path("plot_convergence.png"), est.solver, items["loss_history"][0],
                                optimality_history=None if optimality is None else optimality[0],
                                error_curve=curve, title=title)
        _plots.plot_residual(d.path("plot_residual.png"), ys[0], residuals[0],
                             kernel_shape=est.kernel_shape, mode=est.mode, title=title)
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
