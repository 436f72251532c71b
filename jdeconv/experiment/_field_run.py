"""Spatially varying PSFs for runs and the command line (``model.grid`` / ``--grid``).

A run whose configuration sets ``model.grid: [gy, gx]`` estimates a kernel field
with :func:`jdeconv.estimate_psf_field` (``model.overlap``, ``model.coupling``)
— or, with ``model.field_degree: d``, the polynomial field of
:func:`jdeconv.estimate_psf_polynomial`, evaluated at the tile centres of that
grid — besides the single kernel, and writes:

========================== ====================================================
``kernels.npy``            the field's kernels at the tile centres, (gy, gx, k, l)
``plot_field_kernels.png`` the grid of tile kernels
``plot_field_maps.png``    heat maps of FWHM (mean), ellipticity and centroid
                           shift across the field
``plot_field_residual.png`` ``y − field.render(x)`` next to
                           ``y − conv2d(x, single kernel)`` on the valid window
========================== ====================================================

and ``metrics.json`` gets ``field``: grid, centres, the residual norms with and
without the field model and their ratio (``residual_ratio`` = single / field,
above 1 when the field explains more), and per-tile FWHM, ellipticity and
centroid shift.

``jdeconv simulate --field-sigma 1.0:2.5 [--field-grid 5x5]`` makes a
varying-blur pair: a Gaussian kernel at each node of the grid whose σ grows
linearly with the distance from the centre, from the first value there to the
second in the corners, applied by :func:`jdeconv.conv2d_field`.

Example:
    >>> parse_grid("4x3")
    (4, 3)
    >>> [round(float(v), 3) for v in field_sigmas((3, 3), 1.0, 2.0)[0]]   # corner, edge, corner
    [2.0, 1.707, 2.0]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["add_estimate_options", "add_simulate_options", "estimate_field", "field_metrics",
           "field_sigmas", "parse_grid", "simulate_field", "write_field_outputs"]

from jdeconv.experiment._field_args import (MAX_GRID_SIDE, add_estimate_options,  # noqa: F401
                                              add_simulate_options, parse_grid)


def field_sigmas(grid, centre: float, corner: float) -> np.ndarray:
    """(gy, gx) σ growing linearly with the normalised distance from the centre."""
    gy, gx = grid
    u = np.linspace(-1.0, 1.0, gy) if gy > 1 else np.zeros(1)
    v = np.linspace(-1.0, 1.0, gx) if gx > 1 else np.zeros(1)
    r = np.sqrt(u[:, None] ** 2 + v[None, :] ** 2) / math.sqrt(2.0)
    return centre + (corner - centre) * r


def simulate_field(x, kernel_shape, grid, sigmas: tuple[float, float], mode: str):
    """``(y, kernels)``: ``conv2d_field(x, Gaussian kernels)`` on a ``grid`` of nodes."""
    from jdeconv import conv2d_field
    from jdeconv.data import gaussian_kernel

    s = field_sigmas(grid, *sigmas)
    kernels = np.stack([np.stack([np.asarray(gaussian_kernel(tuple(kernel_shape), float(v)))
                                  for v in row]) for row in s])
    y = np.asarray(conv2d_field(np.asarray(x, np.float64), kernels, mode))
    return y, kernels, s


def estimate_field(x, y, kernel_shape, *, grid, overlap=0.1, coupling=0.0, degree=None,
                   mode="valid", prior="simplex", regularization=None, max_iters=None, tol=None):
    """``(field, kernels)``: the tiled (or polynomial, ``degree``) field and its (gy, gx, k, l) kernels."""
    import jax

    from jdeconv import estimate_psf_field, estimate_psf_polynomial
    from jdeconv._field_conv import tile_centres

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    reg = regularization if isinstance(regularization, dict) or regularization is None else None
    if degree is not None:
        kw: dict[str, Any] = dict(degree=int(degree), mode=mode, prior=prior, regularization=reg,
                                  tol=tol)
        if max_iters is not None:
            kw["max_iters"] = int(max_iters)
        field = jax.block_until_ready(estimate_psf_polynomial(x, y, tuple(kernel_shape), **kw))
        rows, cols = tile_centres(x.shape, tuple(grid))
        kernels = np.asarray(field.kernels_on_grid(rows, cols))
        return field, kernels
    field = estimate_psf_field(x, y, tuple(kernel_shape), grid=tuple(grid), overlap=float(overlap),
                               coupling=float(coupling), mode=mode, prior=prior,
                               regularization=regularization, max_iters=max_iters, tol=tol)
    field = jax.block_until_ready(field)
    return field, np.asarray(field.kernels)


def _centres(field, grid, image_shape):
    from jdeconv._field_conv import tile_centres

    c = getattr(field, "centres", None)
    if c is None:
        c = tile_centres(image_shape, tuple(grid))
    return [np.asarray(c[0], np.float64), np.asarray(c[1], np.float64)]


def _valid(a, kernel_shape, mode, image_shape):
    from jdeconv._field import _valid_part

    return np.asarray(_valid_part(np.asarray(a), tuple(kernel_shape), mode, tuple(image_shape)))


def field_residuals(x, y, field, single_kernel, mode):
    """``(field residual, single-kernel residual)`` on the valid window."""
    from jdeconv import conv2d

    x = np.asarray(x, np.float64)
    kshape = np.shape(single_kernel)
    yv = _valid(y, kshape, mode, x.shape)
    r_field = yv - np.asarray(field.render(x, "valid"))
    r_single = yv - np.asarray(conv2d(x, np.asarray(single_kernel, np.float64), "valid"))
    return r_field, r_single


def field_metrics(x, y, field, kernels, single_kernel, *, grid, mode, degree=None):
    """The ``field`` record of ``metrics.json`` and the two residual images."""
    from jdeconv.experiment._optics import optics_metrics

    r_field, r_single = field_residuals(x, y, field, single_kernel, mode)
    nf, ns = float(np.linalg.norm(r_field)), float(np.linalg.norm(r_single))
    per = [[optics_metrics(kernels[i, j]) for j in range(kernels.shape[1])]
           for i in range(kernels.shape[0])]

    def table(key):
        return [[p[key] for p in row] for row in per]

    shift = [[None if p["centroid_dx"] is None or p["centroid_dy"] is None
              else math.hypot(p["centroid_dx"], p["centroid_dy"]) for p in row] for row in per]
    rec: dict[str, Any] = {
        "model": "polynomial" if degree is not None else "tiles", "grid": list(grid),
        "centres": _centres(field, grid, np.shape(x)),
        "residual_norm_field": nf, "residual_norm_single": ns,
        "residual_ratio": ns / nf if nf > 0 else None,
        "fwhm_mean": table("fwhm_mean"), "ellipticity": table("ellipticity"),
        "centroid_shift": shift, "converged": bool(np.asarray(field.converged)),
    }
    if degree is not None:
        rec["degree"] = int(degree)
    else:
        rec.update(overlap=float(field.overlap), coupling=float(field.coupling),
                   summary=field.summary())
    return rec, r_field, r_single


def _map(rows):
    return np.array([[np.nan if v is None else v for v in row] for row in rows], np.float64)


def write_field_outputs(d, record, kernels, r_field, r_single, *, plots=True, title=""):
    """``kernels.npy`` (``field_kernels.npy`` in a batch run) and the three field plots into ``d``."""
    d.save_npy("field_kernels.npy" if d.exists("kernels.npy") else "kernels.npy", kernels)
    if not plots or not np.all(np.isfinite(kernels)):
        return
    from jdeconv.experiment._plots import _save, figure, image_panel

    gy, gx = kernels.shape[:2]
    fig, axes = figure(gx, gy, size=(1.8, 1.6))
    vmax = float(np.max(kernels)) or 1.0
    for i in range(gy):
        for j in range(gx):
            ax = axes[i][j]
            ax.imshow(kernels[i, j], cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"({i}, {j})", fontsize=8)
    _save(fig, d.path("plot_field_kernels.png"), title or "tile kernels")

    fig, axes = figure(3)
    for ax, (name, key) in zip(axes[0], (("FWHM (px)", "fwhm_mean"),
                                         ("ellipticity", "ellipticity"),
                                         ("centroid shift (px)", "centroid_shift"))):
        image_panel(fig, ax, _map(record[key]), name, cmap="magma")
    _save(fig, d.path("plot_field_maps.png"), title or "PSF across the field")

    fig, axes = figure(2)
    lim = float(max(np.max(np.abs(r_field)), np.max(np.abs(r_single)))) or 1.0
    image_panel(fig, axes[0][0], r_field, f"y - field model (norm {np.linalg.norm(r_field):.3g})",
                diverging=True, vmax=lim)
    image_panel(fig, axes[0][1], r_single,
                f"y - single kernel (norm {np.linalg.norm(r_single):.3g})", diverging=True,
                vmax=lim)
    _save(fig, d.path("plot_field_residual.png"), title or "residual on the valid window")


def simulate_field_pairs(planes, kernel_shape, args):
    """``(pairs, centre kernel, info)`` for ``jdeconv simulate --field-sigma``.

    Each plane is blurred by the Gaussian field (:func:`simulate_field`), then
    Poisson and Gaussian noise and quantisation are applied as
    :func:`jdeconv.experiment._pairs.blur` does. ``info`` holds the
    ``simulation.json`` entries and ``kernels`` (gy, gx, k, l).
    """
    from jdeconv.data import add_gaussian_noise, add_poisson_noise, gaussian_kernel, quantize
    from jdeconv.experiment._pairs import seed_of

    pairs = []
    kernels = sig = None
    for c, x in enumerate(planes):
        seed = args.seed + 1000 * c
        x = np.asarray(x, np.float64)
        if args.bits is not None:
            x = quantize(x, args.bits)
        y, kernels, sig = simulate_field(x, kernel_shape, args.field_grid, args.field_sigma,
                                         args.mode)
        if args.poisson is not None:
            y = add_poisson_noise(np.clip(y, 0.0, None), args.poisson, seed=seed_of(seed, 1))
        if args.noise > 0:
            y = add_gaussian_noise(y, args.noise, seed=seed_of(seed, 2))
        if args.bits is not None:
            y = quantize(y, args.bits)
        pairs.append((np.asarray(x, np.float64), np.asarray(y, np.float64)))
    centre = np.asarray(gaussian_kernel(tuple(kernel_shape), float(args.field_sigma[0])))
    info = {"kernel": "gaussian field", "kernel_params": {"sigma_centre": args.field_sigma[0],
                                                          "sigma_corner": args.field_sigma[1]},
            "field_grid": list(args.field_grid), "field_sigma": np.asarray(sig).tolist(),
            "kernels": np.asarray(kernels)}
    return pairs, centre, info
