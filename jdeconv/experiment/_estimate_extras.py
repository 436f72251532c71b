"""The parametric, field and error-bar parts of ``jdeconv estimate``.

* ``--model NAME``: :func:`jdeconv.fit_psf` after the nonparametric estimate;
  the fitted kernel is saved (``-o k.npy``), ``fit.summary()`` printed with the
  nonparametric fit statistic, and ``k.json`` holds the parameters, standard
  errors, covariance, fit statistic and χ²/dof
  (:func:`jdeconv.experiment._psf_fit.fit_record`).
* ``--grid GYxGX``: a PSF field (:mod:`jdeconv.experiment._field_run`); ``-o``
  holds the (gy, gx, k, l) kernels, ``k.json`` the field record (residual
  ratio against the single kernel, per-tile FWHM, ellipticity, shift).
* ``--standard-errors``: per-tap standard errors saved as ``k.stderr.npy``.

Every estimate also prints its optics line (FWHM, ellipticity, MTF50).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from jdeconv import _names

__all__ = ["after_estimate", "check", "extra_files"]


def check(args) -> None:
    """Usage errors of the combination of options (before anything runs)."""
    from jdeconv.experiment._process import UsageError

    model, grid = getattr(args, "model", None), getattr(args, "grid", None)
    if model is None and grid is None and not getattr(args, "standard_errors", False):
        if getattr(args, "field_degree", None) is not None:
            raise UsageError("--field-degree needs --grid GYxGX (the points it is evaluated at)")
        return
    if model is not None and grid is not None:
        raise UsageError("--model and --grid do not combine; choose one")
    if args.field_degree is not None and grid is None:
        raise UsageError("--field-degree needs --grid GYxGX (the points it is evaluated at)")
    if (model is not None or grid is not None) and args.channels == "rgb":
        raise UsageError(f"{'--model' if model else '--grid'} works on one channel; use "
                         "--channels gray")
    if grid is not None and getattr(args, "coupling", 0.0) > 0:
        flags = {"gain": "--gain", "background": "--background", "loss": f"--loss {args.loss}"}
        extras = [flags[name] for name in
                  _names.coupling_conflicts(args.gain, args.background, args.loss)]
        if extras:
            raise UsageError(f"--coupling > 0 does not combine with {', '.join(extras)} (the "
                             "coupled problem is a plain least-squares one); use --coupling 0 "
                             "(independent tiles) or drop those options")
    if grid is not None and (args.png or args.csv):
        raise UsageError("--png and --csv save one kernel; with --grid the .npy holds the field")
    if args.standard_errors and args.solver not in ("auto", "exact"):
        raise UsageError("--standard-errors needs the exact solver (--solver exact or auto)")


def extra_files(args, out: Path) -> list[Path]:
    """The files besides ``out`` this command will write (checked before any work)."""
    files = []
    if getattr(args, "model", None) is not None or getattr(args, "grid", None) is not None:
        files.append(out.with_suffix(".json"))
    if getattr(args, "standard_errors", False):
        files.append(out.with_suffix(".stderr.npy"))
    return files


def after_estimate(args, xs, ys, est, kernel, out: Path):
    """``(kernel to save, files written, lines to print)`` after the nonparametric estimate."""
    from jdeconv._files import atomic_write_text
    from jdeconv.experiment import _field_run, _psf_fit
    from jdeconv.experiment._artifacts import json_text, save_npy
    from jdeconv.experiment._optics import optics_line, optics_metrics
    from jdeconv.experiment._feedback import recorded_warnings

    written: list[Path] = []
    lines: list[str] = []
    x, y = np.asarray(xs[0], np.float64), np.asarray(ys[0], np.float64)
    kshape = tuple(est.kernel_shape)
    nonparametric = float(np.asarray(est.fit_statistic).ravel()[0]) \
        if getattr(est, "fit_statistic", None) is not None else None
    with recorded_warnings() as messages:
        if args.model is not None:
            f = _psf_fit.fit(x, y, args.model, kshape, mode=args.mode, tol=args.tol)
            record = _psf_fit.fit_record(f, nonparametric_fit_statistic=nonparametric)
            kernel = np.asarray(f.kernel, np.float64)
            if args.orientation == "correlation":
                kernel = kernel[::-1, ::-1]
            atomic_write_text(out.with_suffix(".json"), json_text(record), overwrite=args.overwrite)
            written.append(out.with_suffix(".json"))
            lines.append(f.summary())
            lines.append(f"nonparametric fit_statistic={nonparametric:.3g} (parametric "
                         f"{record['fit_statistic'] if record['fit_statistic'] is None else format(record['fit_statistic'], '.3g')})"
                         if nonparametric is not None else "nonparametric fit_statistic=n/a")
        elif args.grid is not None:
            flip = args.orientation == "correlation"  # the field works in convolutions
            single = np.asarray(est.kernel, np.float64)
            single = single[::-1, ::-1] if flip else single
            options = _field_run.cli_options(args, y.shape)  # --mask, --gain, ... per tile
            field, kernels = _field_run.estimate_field(
                x, y, kshape, grid=args.grid, overlap=args.overlap, coupling=args.coupling,
                degree=args.field_degree, mode=args.mode, prior=args.prior,
                regularization=args.regularization, max_iters=args.max_iters, tol=args.tol,
                **options)
            record, _, _ = _field_run.field_metrics(
                x, y, field, kernels, single, grid=args.grid, mode=args.mode,
                degree=args.field_degree, single_gain=np.asarray(est.gain).ravel()[0],
                single_background=np.asarray(est.background).reshape(-1), options=options)
            kernel = np.ascontiguousarray(kernels[..., ::-1, ::-1]) if flip else kernels
            atomic_write_text(out.with_suffix(".json"), json_text(record), overwrite=args.overwrite)
            written.append(out.with_suffix(".json"))
            if "summary" in record:
                lines.append(record["summary"])
            ratio = record["residual_ratio"]
            lines.append(f"field residual {record['residual_norm_field']:.4g} vs single kernel "
                         f"{record['residual_norm_single']:.4g} (ratio "
                         f"{'n/a' if ratio is None else format(ratio, '.3g')})")
        if args.standard_errors:
            se = est.stats.get("standard_errors") if isinstance(est.stats, dict) else None
            if se is not None:
                save_npy(out.with_suffix(".stderr.npy"), np.asarray(se, np.float64),
                         overwrite=args.overwrite)
                written.append(out.with_suffix(".stderr.npy"))
                lines.append(f"standard errors: median {float(np.median(se)):.3g}, max "
                             f"{float(np.max(se)):.3g}")
        if kernel.ndim == 2 and np.all(np.isfinite(kernel)):
            lines.append(optics_line(optics_metrics(kernel)))
    for message in messages:
        print(f"jdeconv: warning: {message}", file=sys.stderr)
    return kernel, written, lines
