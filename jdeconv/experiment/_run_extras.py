"""What a run adds to its directory besides the kernel: optics, error bars, PSF fits, fields.

Called by :func:`jdeconv.experiment._runner._run_single` after the estimate:

* always: ``metrics.json`` ``optics`` — FWHM (major, minor, mean), ellipticity,
  centroid and MTF50 of the estimate (a list, one per pair, for a batch) —
  and ``plot_mtf.png`` (radial MTF, MTF50 marked; first pair);
* ``outputs.standard_errors: true``: ``stderr.npy`` (per-tap standard errors,
  ``estimate_kernel(..., standard_errors=True)``), ``plot_kernel_errors.png``
  and ``standard_errors`` (median, max) in ``metrics.json``;
* ``model.psf_model: NAME``: :func:`jdeconv.fit_psf` on the (first) pair,
  ``psf_kernel.npy`` (the fitted kernel), ``plot_psf_kernel.png`` and
  ``metrics.json`` ``psf_fit`` (:func:`jdeconv.experiment._psf_fit.fit_record`,
  plus ``relative_error`` when the truth is known and the optics of the fitted
  kernel);
* ``model.grid: [gy, gx]``: the field outputs of
  :mod:`jdeconv.experiment._field_run` and ``metrics.json`` ``field``.

Warnings of these steps are recorded in ``metrics.json`` ``warnings`` like the
estimate's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["extend_run"]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return None
    n = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / n) if n > 0 else None


def extend_run(cfg, d, xs, ys, truths, est, items, metrics: dict[str, Any], *,
               field_truth=None, title: str = "") -> None:
    """Writes the extra files into run folder ``d`` and adds their numbers to ``metrics``.

    ``field_truth``: the true ``(gy, gx, k, l)`` field of a synthetic pair
    (convolution orientation), compared with the field's tiles.
    """
    from jdeconv.experiment import _field_run, _psf_fit
    from jdeconv.experiment._optics import optics_metrics, plot_kernel_errors, plot_mtf
    from jdeconv.experiment._feedback import recorded_warnings

    kernels = np.asarray(items["kernel"], np.float64)
    batched = kernels.shape[0] > 1
    finite = bool(np.all(np.isfinite(kernels)))
    plots = cfg.outputs.plots and finite
    model = cfg.model
    with recorded_warnings() as messages:
        if finite:
            optics = [optics_metrics(k) for k in kernels]
            metrics["optics"] = optics if batched else optics[0]
            if plots:
                plot_mtf(d.path("plot_mtf.png"), kernels[0], title)
        if cfg.outputs.standard_errors:
            se = items["stats"].get("standard_errors") if isinstance(items["stats"], dict) \
                else None
            if se is not None:
                se = np.asarray(se, np.float64)
                d.save_npy("stderr.npy", se if batched else se[0])
                metrics["standard_errors"] = {"median": float(np.median(se)),
                                              "max": float(np.max(se))}
                if plots:
                    plot_kernel_errors(d.path("plot_kernel_errors.png"), kernels[0], se[0], title)
        x, y = np.asarray(xs[0], np.float64), np.asarray(ys[0], np.float64)
        kshape = tuple(est.kernel_shape)
        if model.psf_model is not None:
            f = _psf_fit.fit(x, y, model.psf_model, kshape, mode=model.mode,
                             init=dict(model.psf_init) if model.psf_init else None,
                             max_iters=cfg.solver.max_iters, tol=cfg.solver.tol)
            fs = metrics.get("fit_statistic")
            rec = _psf_fit.fit_record(f, nonparametric_fit_statistic=fs if isinstance(
                fs, (int, float)) else None)
            pk = np.asarray(f.kernel, np.float64)
            if model.orientation == "correlation":
                pk = pk[::-1, ::-1]
            if truths is not None:
                rec["relative_error"] = _rel(pk, truths[0])
            if np.all(np.isfinite(pk)):
                rec["optics"] = optics_metrics(pk)
            metrics["psf_fit"] = rec
            d.save_npy("psf_kernel.npy", pk)
            if plots and np.all(np.isfinite(pk)):
                from jdeconv.experiment._plots import plot_kernels

                plot_kernels(d.path("plot_psf_kernel.png"), pk,
                             None if truths is None or np.shape(truths[0]) != pk.shape
                             else np.asarray(truths[0]), f"{model.psf_model} fit; {title}")
        if model.grid is not None:
            options = _field_run.config_options(cfg, y.shape)  # masks, gain, ... per tile
            field, fk = _field_run.estimate_field(
                x, y, kshape, grid=model.grid, overlap=model.overlap, coupling=model.coupling,
                degree=model.field_degree, mode=model.mode, prior=cfg.prior.name,
                regularization=cfg.regularization_dict(), max_iters=cfg.solver.max_iters,
                tol=cfg.solver.tol, **options)
            flip = model.orientation == "correlation"  # the field works in convolutions
            single = kernels[0][::-1, ::-1] if flip else kernels[0]
            rec, r_field, r_single = _field_run.field_metrics(
                x, y, field, fk, single, grid=model.grid, mode=model.mode,
                degree=model.field_degree, single_gain=np.asarray(items["gain"])[0],
                single_background=np.asarray(items["background"])[0], options=options,
                truth=field_truth)
            metrics["field"] = rec
            _field_run.write_field_outputs(
                d, rec, np.ascontiguousarray(fk[..., ::-1, ::-1]) if flip else fk, r_field,
                r_single, plots=cfg.outputs.plots, title=title)
    if messages:
        w = metrics.setdefault("warnings", [])
        w.extend(m for m in messages if m not in w)
