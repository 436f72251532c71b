"""Optics numbers and plots of an estimated kernel: FWHM, ellipticity, MTF, error bars.

:func:`optics_metrics` gives the JSON-able numbers a run records in
``metrics.json`` (under ``optics``); :func:`plot_mtf` draws the radial MTF with
MTF50 marked (``plot_mtf.png``); :func:`plot_kernel_errors` draws a kernel next
to its per-tap standard errors (``plot_kernel_errors.png``, with
``outputs.standard_errors: true`` or ``jdeconv estimate --standard-errors``).

Example:
    >>> import numpy as np
    >>> from jdeconv.data import gaussian_kernel
    >>> m = optics_metrics(gaussian_kernel(15, 2.0))
    >>> round(m["fwhm_major"], 2), round(m["ellipticity"], 6)
    (4.71, 0.0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["optics_metrics", "optics_line", "plot_kernel_errors", "plot_mtf"]


def _f(v) -> float | None:
    v = float(np.asarray(v))
    return v if math.isfinite(v) else None


def optics_metrics(kernel) -> dict[str, Any]:
    """FWHM (major, minor, mean; profile method), ellipticity, centroid and MTF50 of a (k, l) kernel.

    NaN values (a profile that never falls to half its maximum) are recorded as None.
    """
    from jdeconv import ellipticity, fwhm, kernel_moments, mtf50

    h = np.asarray(kernel, np.float64)
    w = fwhm(h)
    e = ellipticity(h)
    m = kernel_moments(h)
    return {"fwhm_major": _f(w.major), "fwhm_minor": _f(w.minor), "fwhm_mean": _f(w.mean),
            "angle": _f(w.angle), "ellipticity": _f(e.ellipticity), "axis_ratio": _f(e.axis_ratio),
            "centroid_dx": _f(m.dx), "centroid_dy": _f(m.dy), "mtf50": _f(mtf50(h))}


def optics_line(m: dict[str, Any]) -> str:
    """One printable line of :func:`optics_metrics`."""
    def g(v):
        return "n/a" if v is None else f"{v:.3g}"
    return (f"optics: FWHM {g(m['fwhm_major'])} x {g(m['fwhm_minor'])} px, ellipticity "
            f"{g(m['ellipticity'])}, MTF50 {g(m['mtf50'])} cycles/px")


def plot_mtf(path, kernel, title: str = ""):
    """The radial MTF of ``kernel`` against frequency (cycles/pixel), MTF50 marked."""
    from jdeconv import mtf, mtf50
    from jdeconv.experiment._plots import _save, figure

    h = np.asarray(kernel, np.float64)
    curve = mtf(h)
    f50 = float(np.asarray(mtf50(h)))
    fig, axes = figure(1, size=(5.0, 3.6))
    ax = axes[0][0]
    ax.plot(np.asarray(curve.frequency), np.asarray(curve.radial), lw=1.5, label="radial MTF")
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    if math.isfinite(f50):
        ax.axvline(f50, color="C3", lw=1.0, ls="--", label=f"MTF50 = {f50:.3g} cycles/px")
        ax.plot([f50], [0.5], "o", color="C3")
    ax.set_xlim(0, 0.5)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("spatial frequency (cycles/pixel)")
    ax.set_ylabel("MTF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, title)


def plot_kernel_errors(path, kernel, stderr, title: str = ""):
    """The kernel, its per-tap standard errors and the ratio |h| / stderr, side by side."""
    from jdeconv.experiment._plots import _save, figure, image_panel

    h = np.asarray(kernel, np.float64)
    s = np.asarray(stderr, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(s > 0, np.abs(h) / s, np.nan)
    fig, axes = figure(3)
    image_panel(fig, axes[0][0], h, "estimate", vmin=min(0.0, float(np.min(h))),
                vmax=float(np.max(np.abs(h))) or 1.0)
    image_panel(fig, axes[0][1], s, "standard error (0: tap on a bound)", vmin=0.0,
                cmap="magma")
    image_panel(fig, axes[0][2], snr, "|estimate| / standard error", vmin=0.0, cmap="cividis")
    return _save(fig, path, title)
