"""Spatially varying PSFs for runs and the command line (``model.grid`` / ``--grid``).

A run whose configuration sets ``model.grid: [gy, gx]`` estimates a kernel field
with :func:`jdeconv.estimate_psf_field` (``model.overlap``, ``model.coupling``)
— or, with ``model.field_degree: d``, the polynomial field of
:func:`jdeconv.estimate_psf_polynomial`, evaluated at the tile centres of that
grid — besides the single kernel, and writes:

========================== ====================================================
``kernels.npy``            the field's kernels at the tile centres, (gy, gx, k, l), in
                           ``model.orientation``
``plot_field_kernels.png`` the grid of tile kernels
``plot_field_maps.png``    heat maps of FWHM (mean), ellipticity and centroid
                           shift across the field
``plot_field_residual.png`` ``y − field.render(x)`` next to
                           ``y − conv2d(x, single kernel)`` on the valid window
========================== ====================================================

and ``metrics.json`` gets ``field``: grid, centres, the residual norms with and
without the field model and their ratio (``residual_ratio`` = single / field,
above 1 when the field explains more), and per-tile FWHM, ellipticity and
centroid shift. When the true field is known (``data.synthetic.field_sigma``),
also each tile's kernel error against the true kernel at its centre, and the
single kernel's error against the same kernels.

``jdeconv simulate --field-sigma 1.0:2.5 [--field-grid 5x5]`` (and
``data.synthetic.field_sigma`` in a config) makes a varying-blur pair: a
Gaussian kernel at each node of the grid whose σ grows linearly with the
distance from the centre, from the first value there to the second in the
corners (:func:`jdeconv.experiment._pairs.gaussian_field`), applied by
:func:`jdeconv.conv2d_field`.

Example:
    >>> parse_grid("4x3")
    (4, 3)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["PIXEL_OPTIONS", "add_estimate_options", "add_simulate_options", "cli_options",
           "config_options", "estimate_field", "field_metrics", "parse_grid", "true_kernels_at",
           "write_field_outputs"]

from jdeconv.experiment._field_args import (MAX_GRID_SIDE, add_estimate_options,  # noqa: F401
                                              add_simulate_options, parse_grid)


#: The per-pixel and photometric options of a field estimate (those of a single estimate).
PIXEL_OPTIONS = ("mask", "weights", "saturation", "nan", "gain", "background", "loss")


def cli_options(args, y_shape) -> dict[str, Any]:
    """The :data:`PIXEL_OPTIONS` of ``jdeconv estimate`` (``--mask``, ``--weights`` files read).

    Args:
      args: the parsed ``estimate`` arguments.
      y_shape: shape of the (gray) blurred image.

    Returns:
      Keyword arguments for :func:`estimate_field` and :func:`field_metrics`.
    """
    from jdeconv.experiment import _pairs

    weights = getattr(args, "weights", None)
    if weights is not None and weights != "poisson":
        weights = _pairs.load_weights(weights, tuple(y_shape))
    mask = getattr(args, "mask", None)
    return dict(mask=None if mask is None else _pairs.load_mask(mask, tuple(y_shape)),
                weights=weights, saturation=getattr(args, "saturation", None),
                nan=getattr(args, "nan", "raise"), gain=bool(getattr(args, "gain", False)),
                background=getattr(args, "background", "none"), loss=getattr(args, "loss", "l2"))


def config_options(cfg, y_shape) -> dict[str, Any]:
    """The :data:`PIXEL_OPTIONS` of a run configuration (``data.files.mask``/``weights`` read).

    Args:
      cfg: the validated :class:`jdeconv.experiment._config.Config`.
      y_shape: shape of the (first) blurred image.

    Returns:
      Keyword arguments for :func:`estimate_field` and :func:`field_metrics`.
    """
    from jdeconv.experiment import _pairs

    model, files = cfg.model, getattr(cfg.data, "files", None)
    mask = getattr(files, "mask", None) if files is not None else None
    wfile = getattr(files, "weights", None) if files is not None else None
    weights = _pairs.load_weights(wfile, tuple(y_shape)) if wfile is not None else model.weights
    return dict(mask=None if mask is None else _pairs.load_mask(mask, tuple(y_shape)),
                weights=weights, saturation=model.saturation, nan=model.nan, gain=model.gain,
                background=model.background, loss=model.loss)


def _first_plane(a):
    """A per-pixel option of one gray pair: a (B, M, N) stack gives its first plane."""
    return a[0] if isinstance(a, np.ndarray) and a.ndim == 3 else a


def estimate_field(x, y, kernel_shape, *, grid, overlap=0.1, coupling=0.0, degree=None,
                   mode="valid", prior="simplex", regularization=None, max_iters=None, tol=None,
                   **options):
    """``(field, kernels)``: the tiled (or polynomial, ``degree``) field and its kernels.

    ``kernels`` is (gy, gx, k, l): the tiles', or the polynomial's at the tile centres.

    Args:
      x, y: the pair.
      kernel_shape: (k, l).
      grid: ``(gy, gx)`` tiles (for a polynomial field: the points its kernels are evaluated at).
      overlap, coupling: of the tiles (:func:`jdeconv.estimate_psf_field`).
      degree: None (tiles) or the degree of a polynomial field.
      mode, prior, regularization, max_iters, tol: as for a single estimate.
      **options: :data:`PIXEL_OPTIONS` (``mask``, ``weights``, ``saturation``,
        ``nan``, ``gain``, ``background``, ``loss``), passed to every tile.

    Returns:
      ``(field, kernels)``.
    """
    import jax

    from jdeconv import estimate_psf_field, estimate_psf_polynomial
    from jdeconv._field_conv import tile_centres

    unknown = sorted(set(options) - set(PIXEL_OPTIONS))
    if unknown:
        raise TypeError(f"estimate_field got unexpected options {unknown}; it takes "
                        f"{', '.join(PIXEL_OPTIONS)}.")
    options = {key: _first_plane(value) for key, value in options.items()}
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    reg = regularization if isinstance(regularization, dict) or regularization is None else None
    if degree is not None:
        if options.get("gain") or options.get("loss", "l2") != "l2":
            what = "--gain (model.gain)" if options.get("gain") else "--loss huber (model.loss)"
            raise ValueError(f"{what} is not available with a polynomial field (--field-degree, "
                             "model.field_degree); use tiles (drop the degree) or drop the option")
        kw: dict[str, Any] = dict(degree=int(degree), mode=mode, prior=prior, regularization=reg,
                                  tol=tol, **options)
        if max_iters is not None:
            kw["max_iters"] = int(max_iters)
        field = jax.block_until_ready(estimate_psf_polynomial(x, y, tuple(kernel_shape), **kw))
        rows, cols = tile_centres(x.shape, tuple(grid))
        kernels = np.asarray(field.kernels_on_grid(rows, cols))
        return field, kernels
    field = estimate_psf_field(x, y, tuple(kernel_shape), grid=tuple(grid), overlap=float(overlap),
                               coupling=float(coupling), mode=mode, prior=prior,
                               regularization=regularization, max_iters=max_iters, tol=tol,
                               **options)
    field = jax.block_until_ready(field)
    return field, np.asarray(field.kernels)


def _hat(positions, nodes) -> np.ndarray:
    """``(g, P)`` bilinear weights of :func:`jdeconv.conv2d_field` (clamped at both ends)."""
    if nodes.shape[0] == 1:
        return np.ones((1, len(positions)))
    return np.stack([np.interp(positions, nodes, e) for e in np.eye(nodes.shape[0])])


def true_kernels_at(nodes, image_shape, rows, cols) -> np.ndarray:
    """The kernels of a known field at points ``rows × cols``: ``(len(rows), len(cols), k, l)``.

    ``nodes`` is the ``(gy, gx, k, l)`` field given to :func:`jdeconv.conv2d_field`
    with its default centres (an equal split of ``image_shape``); between them
    the kernels are interpolated bilinearly, as that blur does.

    Example:
        >>> nodes = np.arange(2.0)[:, None, None, None] * np.ones((2, 1, 1, 1))
        >>> true_kernels_at(nodes, (4, 4), [0.0, 2.0], [1.0])[:, 0, 0, 0].tolist()
        [0.0, 0.75]
    """
    from jdeconv._field_conv import tile_centres

    nodes = np.asarray(nodes, np.float64)
    nr, nc = tile_centres(tuple(image_shape), nodes.shape[:2])
    wr = _hat(np.asarray(rows, np.float64), nr)
    wc = _hat(np.asarray(cols, np.float64), nc)
    return np.einsum("ai,bj,abkl->ijkl", wr, wc, nodes)


def _truth_record(kernels, single_kernel, truth, centres, image_shape) -> dict[str, Any]:
    """Each tile's kernel error against the true field at its centre, and the single kernel's."""
    true = true_kernels_at(truth, image_shape, *centres)
    if true.shape[2:] != np.shape(kernels)[2:]:
        return {}

    def rel(a, b):
        n = float(np.linalg.norm(b))
        return float(np.linalg.norm(np.asarray(a, np.float64) - b) / n) if n > 0 else None

    gy, gx = true.shape[:2]
    err = [[rel(kernels[i, j], true[i, j]) for j in range(gx)] for i in range(gy)]
    single = [[rel(single_kernel, true[i, j]) for j in range(gx)] for i in range(gy)]
    flat, flat_single = np.array(err, np.float64), np.array(single, np.float64)
    return {"kernel_error": err, "kernel_error_median": float(np.nanmedian(flat)),
            "kernel_error_max": float(np.nanmax(flat)),
            "single_kernel_error": single,
            "single_kernel_error_median": float(np.nanmedian(flat_single))}


def _centres(field, grid, image_shape):
    from jdeconv._field_conv import tile_centres

    c = getattr(field, "centres", None)
    if c is None:
        c = tile_centres(image_shape, tuple(grid))
    return [np.asarray(c[0], np.float64), np.asarray(c[1], np.float64)]


def _valid(a, kernel_shape, mode, image_shape):
    from jdeconv._field import _valid_part

    return np.asarray(_valid_part(np.asarray(a), tuple(kernel_shape), mode, tuple(image_shape)))


def field_residuals(x, y, field, single_kernel, mode, *, single_gain=1.0, single_background=(),
                    options=None):
    """``(field residual, single-kernel residual)`` on the valid window.

    Args:
      x, y: the pair.
      field: a :class:`jdeconv.PSFField` or :class:`jdeconv.PolynomialPSF`
        (its ``render`` includes its gains and backgrounds).
      single_kernel: the single estimate's kernel (convolution orientation).
      mode: the pair's geometry.
      single_gain, single_background: the single estimate's gain and
        background coefficients (Legendre over the fitted window).
      options: the :data:`PIXEL_OPTIONS` used; pixels they leave out are 0 in
        both residuals.

    Returns:
      Two arrays of the valid window's shape.
    """
    from jdeconv import conv2d
    from jdeconv._weighted_gram import background_basis

    x = np.asarray(x, np.float64)
    kshape = np.shape(single_kernel)
    yv = _valid(y, kshape, mode, x.shape)
    model = float(single_gain) * np.asarray(conv2d(x, np.asarray(single_kernel, np.float64),
                                                   "valid"))
    coeffs = np.atleast_1d(np.asarray(single_background, np.float64))
    opts = {key: _first_plane(value) for key, value in (options or {}).items()}
    if coeffs.size:
        degree = {"constant": 0, "plane": 1}.get(opts.get("background"), opts.get("background"))
        model = model + np.tensordot(coeffs, np.asarray(background_basis(yv.shape, degree)),
                                     axes=1)
    r_field = yv - np.asarray(field.render(x, "valid"))
    r_single = yv - model
    keep = _used_valid(x, y, kshape, mode, opts)
    if keep is not None:
        r_field, r_single = np.where(keep, r_field, 0.0), np.where(keep, r_single, 0.0)
    return r_field, r_single


def _used_valid(x, y, kshape, mode, opts):
    """The used pixels of the valid window (None: all), by the engine's rule."""
    from jdeconv.experiment._metrics import used_pixels

    pixel = {key: _first_plane(opts[key]) for key in ("mask", "weights", "saturation", "nan")
             if key in opts}
    used = used_pixels(np.asarray(x, np.float64), y, kshape, mode, **pixel) if pixel else None
    return None if used is None else _valid(used, kshape, mode, np.shape(x))


def field_metrics(x, y, field, kernels, single_kernel, *, grid, mode, degree=None,
                  single_gain=1.0, single_background=(), options=None, truth=None):
    """The ``field`` record of ``metrics.json`` and the two residual images.

    ``single_gain``, ``single_background`` and ``options``: as in
    :func:`field_residuals` (the residuals count the used pixels only, with
    each model's gains and backgrounds). A tiled field with ``gain`` or a
    background also records them per tile (``gain``; ``background``: the
    constant term of each tile's polynomial). ``truth``: the true field
    ``(gy, gx, k, l)`` of :func:`jdeconv.conv2d_field` (convolution
    orientation), which adds ``kernel_error`` (per tile, against the true
    kernel at the tile's centre, :func:`true_kernels_at`), its median and
    maximum, and ``single_kernel_error`` (the single kernel against the same
    kernels) with its median.
    """
    from jdeconv.experiment._optics import optics_metrics

    r_field, r_single = field_residuals(x, y, field, single_kernel, mode,
                                        single_gain=single_gain,
                                        single_background=single_background, options=options)
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
    if truth is not None:
        rec.update(_truth_record(kernels, single_kernel, truth, rec["centres"], np.shape(x)))
    opts = options or {}
    keep = _used_valid(x, y, np.shape(single_kernel), mode, opts)
    if keep is not None:
        rec["pixels_used"] = int(np.sum(keep))
    if degree is not None:
        rec["degree"] = int(degree)
        bg = getattr(field, "background", None)
        if bg is not None and np.size(bg):
            rec["background"] = np.asarray(bg, np.float64).tolist()
    else:
        rec.update(overlap=float(field.overlap), coupling=float(field.coupling),
                   summary=field.summary(),
                   tile_result=np.asarray(field.tile_result).tolist())
        if opts.get("gain"):
            rec["gain"] = np.asarray(field.gain, np.float64).tolist()
        bg = np.asarray(field.background, np.float64)
        if bg.shape[-1]:
            rec["background"] = bg[..., 0].tolist()
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

    Each plane is blurred by the Gaussian field
    (:func:`jdeconv.experiment._pairs.gaussian_field`), then Poisson and
    Gaussian noise and quantisation are applied by
    :func:`jdeconv.experiment._pairs.blur`, as for a uniform blur. ``info``
    holds the ``simulation.json`` entries and ``kernels`` (gy, gx, k, l).
    """
    from jdeconv.data import gaussian_kernel, quantize
    from jdeconv.experiment._pairs import blur, gaussian_field

    kernels, sig = gaussian_field(kernel_shape, args.field_grid, args.field_sigma)
    pairs = []
    for c, x in enumerate(planes):
        x = np.asarray(x, np.float64)
        if args.bits is not None:
            x = quantize(x, args.bits)
        y = blur(x, kernels, args.mode, gaussian_sigma=args.noise, poisson_photons=args.poisson,
                 bits=args.bits, seed=args.seed + 1000 * c)
        pairs.append((np.asarray(x, np.float64), np.asarray(y, np.float64)))
    centre = np.asarray(gaussian_kernel(tuple(kernel_shape), float(args.field_sigma[0])))
    info = {"kernel": "gaussian field", "kernel_params": {"sigma_centre": args.field_sigma[0],
                                                          "sigma_corner": args.field_sigma[1]},
            "field_grid": list(args.field_grid), "field_sigma": np.asarray(sig).tolist(),
            "kernels": kernels}
    return pairs, centre, info
