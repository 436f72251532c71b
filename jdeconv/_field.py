"""Spatially varying PSFs from one pair: a grid of tile kernels (:func:`estimate_psf_field`).

Model
-----
The blurred image is the kernel-field convolution of :mod:`jdeconv._field_conv`:
the kernel at a pixel is the bilinear interpolation of ``gy × gx`` tile kernels
placed at the tile centres. Each tile kernel is estimated from its own part of
the pair:

1. The pair is reduced to valid geometry: ``yv``, the part of ``y`` whose
   footprint lies inside ``x`` (for ``"same"``, ``"full"`` and ``"circular"``
   the padded borders are dropped, so unknown borders never bias a kernel).
2. ``yv`` (``M × N``) is split into ``gy × gx`` equal, overlapping tiles of
   ``S × S'`` pixels, ``S = min(M, ceil(M / gy · (1 + overlap)))``, with
   starts spread evenly from the first to the last row (the tiles cover
   ``yv``; neighbours share at least ``overlap`` of a nominal tile). Tile
   ``t`` of ``yv`` is paired with the part of ``x`` it depends on (the tile
   grown by the kernel, ``(S + k - 1) × (S' + l - 1)``): a valid-geometry
   problem inside the tile.
3. All tiles are solved in ONE compiled call of the engine of
   :func:`jdeconv.estimate_kernels` (sharded over devices), with the same
   prior, regulariser and solver as a single estimate, and the engine's rule
   for a batch: on CPU devices the tiles run one after the other inside that
   call (``lax.map``: each tile factors only its free block), on an
   accelerator they are vmapped (one after the other for the exact solver
   above 256 taps on one accelerator).
4. The tile centres (in ``x``'s pixel coordinates, where the kernel's centre
   tap lands) become the centres of the kernel field.

Masks, weights, gain and background
-----------------------------------
Every option of a single :func:`jdeconv.estimate_kernel` reaches every tile:
``mask``, ``weights`` (an array or ``"poisson"``), ``saturation`` and ``nan``
are combined into one image of pixel weights of ``y``'s shape (the rule of
:func:`jdeconv.make_problem`, on the whole pair, so a saturated original pixel
masks its footprint in every tile it reaches), and each tile gets its own
window of it, the same window as its part of ``y``. ``gain=True`` and
``background=`` fit a gain and a background polynomial per tile (the
background in the tile's own Legendre coordinates, ``[-1, 1]`` over the
tile); ``loss="huber"`` runs the reweighted solves in every tile. The field's
:meth:`PSFField.render` applies the per-tile gains and backgrounds,
interpolated with the kernels' weights. A tile with fewer used pixels than
unknowns is not estimated (``tile_result`` :attr:`TILE_RESULTS.masked`): its
kernel, gain and background are interpolated like a textureless tile's.

Tiles without texture
---------------------
A tile whose original is flat (range ``<= FLAT_RTOL ×`` the image's range)
determines at most the kernel's sum; it is not estimated (its
``tile_result`` is :attr:`TILE_RESULTS.textureless`). With ``coupling=0`` its
kernel is the discrete harmonic interpolation of the other tiles' kernels
(the solution of ``Σ_neighbours (h_t − h_s) = 0`` on the grid, i.e. the
``coupling → 0⁺`` limit of the coupled problem; a convex combination, so it
satisfies the simplex prior).

Coupling
--------
With ``coupling = λ > 0`` all tiles are solved as one problem::

    min_{h_t ∈ C}  Σ_t ½||X_t h_t − y_t||² + R_t(h_t)
                   + ½ λ s̄ Σ_{t ~ t'} ||h_t − h_t'||²,

``t ~ t'`` the 4-neighbours of the grid, ``C`` the prior's set, ``R_t`` the
tile's quadratic regulariser (with the weights its single estimate used) and
``s̄`` the mean per-tap image energy ``mean_t trace(X_tᵀX_t) / (k l)`` (so λ
is scale-free, like the regularisation weights). The per-tile normal
equations (``jdeconv.normal_equations`` vmapped over tiles, never im2col)
give the block system ``(blockdiag(G_t) + λ s̄ L ⊗ I) H = B`` with ``L`` the
grid Laplacian. It is solved by FISTA with adaptive (gradient) restart,
starting from the uncoupled estimates, with a per-tile step ``1/L_t``,
``L_t = λ_max(Q G_t Q) + 2 λ s̄ deg(t)`` (``Q`` the projector onto the
directions the prior leaves free: zero-sum kernels on the support when the
prior fixes the sum, which removes the image's mean from the conditioning).
A block-scalar metric keeps the projection the per-tile Euclidean projection
onto the prior. It stops when the scale-free optimality measure of the
single estimate, ``max_t max|h_t − P(h_t − ∇_t/L_t)| / max(max|H|,
max_t max|b_t|/L_t)``, is at most ``coupling_tol``; the code, measure and
iteration count are reported in the :class:`PSFField`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jdeconv import (_blas_threads, _diagnostics, _estimate, _field_conv, _geometry, _gram,
                     _names, _priors, _problem, _regularizers, _validation, _weighted_gram)
from jdeconv._solution import RESULTS

__all__ = ["FLAT_RTOL", "PSFField", "TILE_RESULTS", "estimate_psf_field", "pixel_weights",
           "tile_layout"]

#: A tile is textureless when its original's range is at most this fraction of the image's.
FLAT_RTOL = 1e-6
DEFAULT_COUPLING_MAX_ITERS = 20_000
DEFAULT_COUPLING_TOL = {"float64": 1e-9, "float32": 1e-5}
_HI = lax.Precision.HIGHEST


class TILE_RESULTS(enum.IntEnum):
    """Outcome of one tile (the codes of :attr:`PSFField.tile_result`).

    Example:
      >>> from jdeconv._field import TILE_RESULTS
      >>> TILE_RESULTS.textureless.message
      'no texture in the original: kernel interpolated from the neighbouring tiles'
    """

    successful = 0
    textureless = 1
    not_converged = 2
    masked = 3

    @property
    def message(self) -> str:
        return _TILE_MESSAGES[self]


_TILE_MESSAGES = {
    TILE_RESULTS.successful: "estimated",
    TILE_RESULTS.textureless: "no texture in the original: kernel interpolated from the "
                              "neighbouring tiles",
    TILE_RESULTS.not_converged: "the tile's estimate did not succeed (see "
                                "PSFField.estimate.result)",
    TILE_RESULTS.masked: "fewer used pixels than unknowns (mask, weights, saturation): kernel "
                         "interpolated from the neighbouring tiles",
}


# ----------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PSFField:
    """A field of tile kernels and how it was estimated (a pytree).

    Attributes:
      kernels: tile kernels, (gy, gx, k, l); ``kernels[i, j]`` applies at
        ``(centres[0][i], centres[1][j])``.
      centres: ``(rows, cols)`` tile centres in the original's pixel
        coordinates, (gy,) and (gx,).
      tile_bounds: (gy, gx, 4) int ``(row0, row1, col0, col1)``: the output
        pixels of each tile, in the same coordinates (half-open ranges).
      tile_result: (gy, gx) int32 :class:`TILE_RESULTS` codes.
      estimate: the tiles' own :class:`jdeconv.KernelEstimate` from one call
        of :func:`jdeconv.estimate_kernels` (batch axis ``gy * gx``,
        row-major; the entries of textureless tiles are placeholders).
      coupling_result: :class:`jdeconv.RESULTS` code of the coupled solve
        (``successful`` when ``coupling == 0``).
      coupling_optimality: its optimality measure (0 when ``coupling == 0``).
      coupling_iterations: its FISTA iterations (0 when ``coupling == 0``).
      gain: (gy, gx) per-tile gains (all 1 unless ``gain=True``).
      background: (gy, gx, nb) per-tile background coefficients in the
        tile's Legendre basis (:func:`jdeconv._weighted_gram.background_basis`
        of the tile's shape; ``nb = 0`` without a background).
      image_shape: ``(m, n)`` of the original.
      mode, grid, kernel_shape, overlap, coupling, prior: the settings used.
      background_model, loss: the photometric settings used.
      tile_shape: ``(S, S')``, the tiles' size in output pixels.
    """

    kernels: Any
    centres: Any
    tile_bounds: Any
    tile_result: Any
    estimate: Any
    coupling_result: Any
    coupling_optimality: Any
    coupling_iterations: Any
    gain: Any = None
    background: Any = None
    image_shape: tuple = ()
    mode: str = "valid"
    grid: tuple = ()
    kernel_shape: tuple = ()
    overlap: float = 0.0
    coupling: float = 0.0
    prior: str = "simplex"
    background_model: str = "none"
    loss: str = "l2"
    tile_shape: tuple = ()

    @property
    def converged(self):
        """Every estimated tile and the coupled solve succeeded (textureless tiles pass)."""
        tiles = jnp.asarray(self.tile_result) != TILE_RESULTS.not_converged
        return jnp.all(tiles) & (jnp.asarray(self.coupling_result) == RESULTS.successful)

    def kernel_at(self, row, col) -> jax.Array:
        """The kernel at image position(s) ``(row, col)``: bilinear between tile centres.

        Clamped beyond the outermost centres (the model of
        :func:`jdeconv._field_conv.conv2d_field`).

        Args:
          row, col: scalars or arrays (broadcast together), in the original's
            pixel coordinates.

        Returns:
          Array of shape ``broadcast(row, col).shape + (k, l)``.
        """
        dtype = self.kernels.dtype
        row, col = jnp.asarray(row, dtype), jnp.asarray(col, dtype)
        shape = np.broadcast_shapes(row.shape, col.shape)
        u = jnp.broadcast_to(row, shape).ravel()
        v = jnp.broadcast_to(col, shape).ravel()
        wr = _field_conv._hat_weights(u, jnp.asarray(self.centres[0], dtype))
        wc = _field_conv._hat_weights(v, jnp.asarray(self.centres[1], dtype))
        h = jnp.einsum("ap,bp,abkl->pkl", wr, wc, self.kernels, precision=_HI)
        return h.reshape(shape + tuple(self.kernel_shape))

    def render(self, x, mode: str | None = None, *, method: str = "auto") -> jax.Array:
        """The forward model: ``conv2d_field(x, gain · kernels, mode) + background``.

        The kernels are scaled by their tiles' gains (all 1 without
        ``gain=True``); the background at an output pixel is the field's
        interpolation (the kernels' bilinear weights) of the tiles' background
        polynomials, each evaluated in its own tile's coordinates (continued
        beyond the tile).

        Args:
          x: an image in the original's coordinates (usually the original).
          mode: geometry (default: the mode of the estimate).
          method: ``"auto"``, ``"direct"`` or ``"fft"``.

        Returns:
          The blurred image of the field model.
        """
        mode = self.mode if mode is None else mode
        kernels = self.kernels
        if self.gain is not None:
            kernels = kernels * jnp.asarray(self.gain, kernels.dtype)[..., None, None]
        out = _field_conv.conv2d_field(x, kernels, mode, centres=tuple(self.centres),
                                       method=method)
        if self.background is not None and np.shape(self.background)[-1] > 0:
            out = out + self.background_image(np.shape(x), mode)
        return out

    def background_image(self, image_shape, mode: str | None = None) -> jax.Array:
        """The field's background at every output pixel of ``mode`` (zeros without one).

        Args:
          image_shape: ``(m, n)`` of the original.
          mode: geometry of the output (default: the mode of the estimate).

        Returns:
          Array of the output shape: ``Σ_t w_t(p) B_t(p)``, ``w_t`` the
          kernels' interpolation weights and ``B_t`` tile ``t``'s background.
        """
        mode = _validation.check_mode(self.mode if mode is None else mode)
        ishape = tuple(int(v) for v in image_shape)
        dtype = self.kernels.dtype
        u, v = _field_conv._output_positions(ishape, tuple(self.kernel_shape), mode)
        if self.background is None or np.shape(self.background)[-1] == 0:
            return jnp.zeros((u.shape[0], v.shape[0]), dtype)
        coef = jnp.asarray(self.background, dtype)
        degree = _weighted_gram.parse_background(_background_spec(self.background_model))
        bounds = np.asarray(self.tile_bounds)
        S, T = self.tile_shape
        wr = _field_conv._hat_weights(jnp.asarray(u, dtype), jnp.asarray(self.centres[0], dtype))
        wc = _field_conv._hat_weights(jnp.asarray(v, dtype), jnp.asarray(self.centres[1], dtype))

        def local(pos, starts, size):  # (g, P) tile coordinates, -1..1 over each tile
            if size == 1:
                return jnp.zeros((starts.shape[0], pos.shape[0]), dtype)
            return 2 * (jnp.asarray(pos, dtype)[None, :] - jnp.asarray(starts, dtype)[:, None]) \
                / (size - 1) - 1

        pu = _weighted_gram._legendre(local(u, bounds[:, 0, 0], S), degree)
        pv = _weighted_gram._legendre(local(v, bounds[0, :, 2], T), degree)
        terms = [(t - b, b) for t in range(degree + 1) for b in range(t + 1)]
        a = jnp.stack([pu[i] for i, _ in terms], axis=1) * wr[:, None, :]  # (gy, nb, M)
        b = jnp.stack([pv[j] for _, j in terms], axis=1) * wc[:, None, :]  # (gx, nb, N)
        return jnp.einsum("ijt,itm,jtn->mn", coef, a, b, precision=_HI)

    def summary(self) -> str:
        """One line: grid, kernel size, tile outcomes and the coupled solve."""
        codes = np.asarray(self.tile_result).ravel()
        counts = ", ".join(f"{TILE_RESULTS(c).name}={int((codes == c).sum())}"
                           for c in sorted(set(codes.tolist())))
        line = (f"PSF field {self.grid[0]}x{self.grid[1]} tiles of {self.kernel_shape[0]}x"
                f"{self.kernel_shape[1]} kernels (prior={self.prior}, overlap={self.overlap:g}):"
                f" {counts}")
        if self.coupling > 0:
            code = RESULTS(int(np.asarray(self.coupling_result)))
            line += (f"; coupling={self.coupling:g}: {code.message}, "
                     f"{int(np.asarray(self.coupling_iterations))} iterations, optimality "
                     f"{float(np.asarray(self.coupling_optimality)):.2e}")
        return line


jax.tree_util.register_dataclass(
    PSFField,
    data_fields=["kernels", "centres", "tile_bounds", "tile_result", "estimate",
                 "coupling_result", "coupling_optimality", "coupling_iterations", "gain",
                 "background"],
    meta_fields=["image_shape", "mode", "grid", "kernel_shape", "overlap", "coupling", "prior",
                 "background_model", "loss", "tile_shape"])


def _background_spec(name: str):
    """``KernelEstimate.background_model`` ("none", "constant", "plane", "degree d") -> a spec."""
    if name.startswith("degree "):
        return int(name.split()[1])
    return name


# ----------------------------------------------------------------------------
# Tiling
# ----------------------------------------------------------------------------

def _starts(total: int, count: int, size: int) -> np.ndarray:
    if count == 1:
        return np.zeros(1, int)
    return np.round(np.arange(count) * ((total - size) / (count - 1))).astype(int)


def tile_layout(valid_shape, grid, overlap: float = 0.1):
    """Starts and size of ``gy × gx`` overlapping equal tiles covering a valid-geometry image.

    Args:
      valid_shape: ``(M, N)`` of the valid part of the blurred image.
      grid: ``(gy, gx)`` or an int.
      overlap: fraction of a nominal tile (``M / gy``) by which neighbours overlap.

    Returns:
      ``(row_starts (gy,), col_starts (gx,), (S, S'))``.

    Example:
      >>> from jdeconv._field import tile_layout
      >>> tile_layout((100, 60), (2, 3), 0.0)
      (array([ 0, 50]), array([ 0, 20, 40]), (50, 20))
    """
    M, N = _validation.as_shape(valid_shape, "valid_shape", example="(256, 256)")
    gy, gx = _validation.as_shape(grid, "grid", example="(3, 3)")
    overlap = _check_overlap(overlap)
    S = min(M, math.ceil(M / gy * (1 + overlap)))
    T = min(N, math.ceil(N / gx * (1 + overlap)))
    return _starts(M, gy, S), _starts(N, gx, T), (S, T)


def _check_overlap(overlap):
    overlap = _validation.check_real(overlap, "overlap", nonnegative=True, example="0.25")
    if overlap >= 1:
        raise ValueError(f"overlap is {overlap:g}; it is a fraction of a tile and must be in "
                         "[0, 1), e.g. overlap=0.25.")
    return overlap


def _grid_laplacian(gy: int, gx: int) -> np.ndarray:
    """Graph Laplacian of the 4-neighbour ``gy × gx`` grid, (T, T), row-major tiles."""
    idx = np.arange(gy * gx).reshape(gy, gx)
    lap = np.zeros((gy * gx, gy * gx))
    for a, b in ((idx[:-1, :].ravel(), idx[1:, :].ravel()),
                 (idx[:, :-1].ravel(), idx[:, 1:].ravel())):
        np.add.at(lap, (a, a), 1.0)
        np.add.at(lap, (b, b), 1.0)
        np.add.at(lap, (a, b), -1.0)
        np.add.at(lap, (b, a), -1.0)
    return lap


def _harmonic_fill(kernels: np.ndarray, flat: np.ndarray, lap: np.ndarray) -> np.ndarray:
    """Replaces the flat tiles' kernels by the harmonic interpolation of the others."""
    if not flat.any():
        return kernels
    T = kernels.shape[0]
    flat_h = kernels.reshape(T, -1).astype(np.float64).copy()
    f, k = flat, ~flat
    rhs = -lap[np.ix_(f, k)] @ flat_h[k]
    flat_h[f] = np.linalg.solve(lap[np.ix_(f, f)], rhs)
    return flat_h.reshape(kernels.shape).astype(kernels.dtype)


# ----------------------------------------------------------------------------
# Coupled solve (jitted)
# ----------------------------------------------------------------------------

def _free_projector(n: int, support, equality: bool, dtype):
    """``Q``: projector onto the kernel directions the prior leaves free."""
    s = jnp.ones((n,), dtype) if support is None else support.ravel().astype(dtype)
    q = jnp.diag(s)
    if equality:
        q = q - jnp.outer(s, s) / jnp.sum(s)
    return q


@functools.partial(jax.jit, static_argnames=("kernel_shape", "prior", "max_iters"))
def _coupled_solve(xs, ys, ws, h0, weights, coupling, lap, support, tol, *, kernel_shape, prior,
                   max_iters):
    k, l = kernel_shape
    n = k * l
    T = xs.shape[0]
    dtype = xs.dtype
    if ws is None:
        ne = jax.vmap(lambda a, b: _gram.normal_equations_impl(a, b, kernel_shape, "valid",
                                                               "fft"))(xs, ys)
    else:  # per-pixel weights (masks, inverse variances): weighted normal equations
        ne = jax.vmap(lambda a, b, w: _weighted_gram._wne_jit(a, b, w, kernel_shape, "auto"))(
            xs, ys, ws)
    scale = jnp.trace(ne.gram, axis1=1, axis2=2) / n
    reg = jax.vmap(lambda w, s: _regularizers.quadratic_matrix(w, s, kernel_shape, dtype))(
        weights, scale)
    gram = ne.gram + reg
    rhs = ne.rhs
    if prior == "nonneg":  # l1 is the linear term sum(h) on h >= 0 (constant on the simplex)
        rhs = rhs - (weights["l1"] * scale)[:, None]
    lam = coupling * jnp.mean(scale)
    lap = lap.astype(dtype)
    q = _free_projector(n, support, prior in _names.EQUALITY_PRIORS, dtype)
    reduced = jnp.einsum("ij,tjk,kl->til", q, gram, q, precision=_HI)
    step = jnp.linalg.eigvalsh(reduced)[:, -1] + 2 * lam * jnp.diagonal(lap)
    step = jnp.maximum(step, jnp.finfo(dtype).tiny)
    project = jax.vmap(lambda h: _priors.project_prior(h.reshape(kernel_shape), prior,
                                                        support).ravel())

    def grad(h):
        return (jnp.einsum("tij,tj->ti", gram, h, precision=_HI) - rhs
                + lam * jnp.matmul(lap, h, precision=_HI))

    def objective(h):
        gh = jnp.einsum("tij,tj->ti", gram, h, precision=_HI)
        coupled = jnp.sum(h * jnp.matmul(lap, h, precision=_HI))
        return jnp.sum(0.5 * jnp.sum(h * gh, axis=1) - jnp.sum(rhs * h, axis=1)
                       + ne.half_yy) + 0.5 * lam * coupled

    denom_b = jnp.max(jnp.abs(rhs) / step[:, None])

    def optimality(h):
        g = grad(h)
        moved = h - project(h - g / step[:, None])
        return jnp.max(jnp.abs(moved)) / jnp.maximum(jnp.maximum(jnp.max(jnp.abs(h)), denom_b),
                                                     jnp.finfo(dtype).tiny)

    h_start = project(h0.reshape(T, n))

    def cond(state):
        it, _, _, _, opt = state
        return (it < max_iters) & (opt > tol) & jnp.isfinite(opt)

    def body(state):
        it, h, z, t, _ = state
        h_new = project(z - grad(z) / step[:, None])
        t_new = 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))
        z_new = h_new + ((t - 1) / t_new) * (h_new - h)
        restart = jnp.sum((z - h_new) * (h_new - h)) > 0  # O'Donoghue & Candès (2015)
        z_new = jnp.where(restart, h_new, z_new)
        t_new = jnp.where(restart, jnp.ones_like(t_new), t_new)
        return it + 1, h_new, z_new, t_new, optimality(h_new)

    state = (jnp.asarray(0, jnp.int32), h_start, h_start, jnp.asarray(1.0, dtype),
             optimality(h_start))
    it, h, _, _, opt = lax.while_loop(cond, body, state)
    finite = jnp.all(jnp.isfinite(h)) & jnp.isfinite(opt)
    code = RESULTS.where(opt <= tol, finite)
    return h.reshape((T,) + kernel_shape), it, opt, code, objective(h)


# ----------------------------------------------------------------------------
# The estimate
# ----------------------------------------------------------------------------

def _valid_part(y, kernel_shape, mode, image_shape):
    """The part of a ``mode`` blurred image explained by the valid model."""
    (top, _), (left, _) = _geometry.padding(kernel_shape, mode)
    M, N = _geometry.output_shape(image_shape, kernel_shape, "valid")
    return y[top:top + M, left:left + N]


def _tile_names(which, gx):
    idx = np.flatnonzero(which)
    names = ", ".join(f"({i // gx}, {i % gx})" for i in idx[:8])
    return names + (", ..." if idx.size > 8 else "")


def _tile_messages(est, flat, grid, starved=None, standard_errors=None) -> list[str]:
    """The warnings of a field estimate, per tile (textureless or masked tiles, poor fits, cut
    kernels)."""
    T = flat.size
    starved = np.zeros(T, bool) if starved is None else starved
    out = []
    if flat.any():
        out.append(f"{int(flat.sum())} of {T} tiles have no texture in the original (tiles "
                   f"{_tile_names(flat, grid[1])}): their kernels are interpolated from the "
                   "neighbouring tiles (tile_result 'textureless'); coupling > 0 also uses "
                   "their data.")
    if starved.any():
        out.append(f"{int(starved.sum())} of {T} tiles have fewer used pixels than unknowns "
                   f"after masking (tiles {_tile_names(starved, grid[1])}): their kernels are "
                   "interpolated from the neighbouring tiles (tile_result 'masked'); mask fewer "
                   "pixels or use a coarser grid.")
    ok = (np.asarray(est.result) == RESULTS.successful) & ~flat & ~starved
    fit = np.asarray(est.fit_statistic)
    bad = ok & np.isfinite(fit) & (fit > _diagnostics.FIT_STATISTIC_WARN)
    if bad.any():
        out.append(f"{int(bad.sum())} of {T} tiles have a fit statistic above "
                   f"{_diagnostics.FIT_STATISTIC_WARN:g} (tiles {_tile_names(bad, grid[1])}): "
                   "the model does not explain them (a kernel that varies faster than the grid "
                   "resolves: try a finer grid; misregistration, exposure changes, or a kernel "
                   "box that is too small).")
    k, l = est.kernel_shape
    if min(k, l) >= 3:
        cut = ok & (np.asarray(_diagnostics.border_mass(est.kernel))
                    > _diagnostics.BORDER_MASS_WARN)
        if standard_errors is not None:  # only border mass the noise cannot explain
            cut &= (_diagnostics.significant_border_mass(est.kernel, standard_errors)
                    > _diagnostics.BORDER_MASS_WARN)
        if cut.any():
            out.append(_diagnostics.BoxMessage(  # a KernelBoxWarning, like a single kernel's
                f"in {int(cut.sum())} of {T} tiles more than "
                f"{100 * _diagnostics.BORDER_MASS_WARN:g} % of the kernel's mass lies on "
                f"the border of its {k}x{l} box (tiles {_tile_names(cut, grid[1])}): the "
                "box probably cuts the kernel; try a larger kernel_shape."))
    return out


def _check_pair(x, y, kshape, mode, dtype, allow_nan=False):
    dt = _validation.resolve_dtype(dtype)
    x = _validation.as_float_array("x (original image)", x, dtype=dt)
    y = _validation.as_float_array("y (blurred image)", y, dtype=dt, allow_nan=allow_nan)
    if dt is None:
        x, y = _validation.common_float(x, y)
    (m, n), (k, l) = x.shape, kshape
    if k > m or l > n:
        raise ValueError(f"kernel shape {kshape} is larger than the original image {(m, n)}; "
                         "the kernel must be much smaller than the image.")
    expected = _geometry.output_shape(x.shape, kshape, mode)
    if tuple(y.shape) != tuple(expected):
        hint = ""
        if mode == "valid" and tuple(y.shape) == (m, n):
            hint = " The blurred image is as large as the original: use mode='same'."
        raise ValueError(f"blurred image has shape {tuple(y.shape)} but an original {(m, n)} "
                         f"blurred by a {kshape} kernel in mode {mode!r} has shape "
                         f"{tuple(expected)}.{hint}")
    return x, y


def pixel_weights(x, y, kernel_shape, mode="valid", *, mask=None, weights=None,
                  saturation=None, nan="raise"):
    """The pixel weights of a pair, in ``y``'s geometry (the rule of :func:`jdeconv.make_problem`).

    Args:
      x, y: the pair (``y`` in ``mode`` geometry).
      kernel_shape: (k, l).
      mode: geometry.
      mask, weights, saturation, nan: as in :func:`jdeconv.estimate_kernel`.

    Returns:
      ``(w, inverse_variance)``: a float array of ``y``'s shape (0 = not used)
      or None when every pixel counts with weight 1, and whether ``w`` holds
      inverse variances (``weights=`` was given).
    """
    nan = _validation.check_choice("nan", nan, _names.NAN_POLICIES)
    return _problem._pixel_weights(np.asarray(x), np.asarray(y), tuple(kernel_shape), mode,
                                   mask=mask, weights=weights, saturation=saturation, nan=nan,
                                   batched=False)


def _estimate_tiles(xs, ys, kshape, *, prior, solver, regularization, max_iters, tol, support,
                    solver_options, gain, background, loss, mask=None, weights=None):
    """The tiles' estimates in one compiled call (:func:`jdeconv.estimate_kernels`' engine).

    Returns ``(estimate, standard errors for the border check or None)``.

    On one device the engine's batch core runs directly, pair by pair or vmapped
    by the engine's own rule (:func:`jdeconv._estimate._sequential_batch`), and
    without the batch's diagnostics (the field words its own); on several
    devices the batch is :func:`jdeconv.estimate_kernels` itself, sharded.
    """
    kw = dict(mode="valid", prior=prior, solver=solver, regularization=regularization,
              max_iters=max_iters, tol=tol, support=support, solver_options=solver_options,
              gain=gain, background=background, loss=loss, mask=mask, weights=weights)
    problem = _problem.make_problem(xs, ys, kshape, mode="valid", support=support, batched=True,
                                    mask=mask, weights=weights)
    s = _estimate._settings(problem, prior, solver, regularization, max_iters, tol,
                            solver_options, gain=gain, background=background, loss=loss)
    if len(jax.devices()) > 1:
        est = _estimate.estimate_kernels(xs, ys, kshape, throw=False, **kw)
    else:
        dt = problem.dtype
        batch = problem.batch_size
        out = _blas_threads.run_with_one_blas_thread(
            _estimate._core_batch, problem.x, problem.y, problem.support,
            _estimate._weights_arrays(s.weights, dt), jnp.asarray(s.tol, dt), None,
            _estimate._candidates(s.auto, dt), problem.pixel_weights,
            shared_original=problem.shared_original,
            sequential=_estimate._sequential_batch(problem, s),
            **_estimate._static(problem, s))
        est = _estimate._to_result(out, s, problem, solver, lead=(batch,))
    # the border check's standard errors (plain least squares only: no second solve here)
    return est, _estimate._border_errors(None, s, est, problem)


def _photometric(gain, background, loss):
    return _estimate.check_photometric(gain, background, loss)


def estimate_psf_field(x, y, kernel_shape, *, grid=(3, 3), overlap: float = 0.1,
                       coupling: float = 0.0, mode: _names.Mode = "valid",
                       prior: _names.Prior = "simplex", solver: _names.Solver = "auto",
                       regularization=None, max_iters: int | None = None,
                       tol: float | None = None, dtype=None, support=None,
                       solver_options: dict | None = None, mask=None, weights=None,
                       saturation=None, nan: str = "raise", gain: bool = False,
                       background="none", loss: str = "l2",
                       coupling_max_iters: int = DEFAULT_COUPLING_MAX_ITERS,
                       coupling_tol: float | None = None) -> PSFField:
    """Estimates a spatially varying PSF: one kernel per tile of a ``gy × gx`` grid.

    See the module docstring for the tiling, the treatment of textureless
    tiles and the coupled problem.

    Args:
      x: original image, (m, n).
      y: blurred image in ``mode`` geometry (as for :func:`jdeconv.estimate_kernel`).
      kernel_shape: (k, l) or an int.
      grid: ``(gy, gx)`` tiles (or an int).
      overlap: fraction of a nominal tile by which neighbouring tiles overlap,
        in [0, 1). More overlap gives each tile more data (noisy pairs) but
        pulls the outer tile centres inwards, so the field is extrapolated
        (clamped) over a wider border; on a noiseless 192² pair with a 4×4
        grid, overlap 0, 0.1 and 0.25 left residuals 2.56, 2.28 and 1.96
        times below a single kernel's.
      coupling: weight λ >= 0 of ``½ λ s̄ Σ_neighbours ||h_t − h_s||²``
        (relative to the mean per-tap image energy ``s̄``); 0 solves the tiles
        independently.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``; only the
        valid part of ``y`` is fitted.
      prior, solver, regularization, max_iters, tol, dtype, support,
        solver_options: as in :func:`jdeconv.estimate_kernel`, for every tile.
        With ``coupling > 0`` the quadratic regularisers enter the coupled
        problem with the weights each tile's estimate used.
      mask, weights, saturation, nan: as in :func:`jdeconv.estimate_kernel`
        (``mask`` and ``weights`` images of ``y``'s shape); combined on the
        whole pair, then each tile uses its own window. Also with
        ``coupling > 0``.
      gain, background, loss: as in :func:`jdeconv.estimate_kernel`, per
        tile (the result's ``gain`` and ``background``); with ``coupling = 0``
        only.
      coupling_max_iters: FISTA iteration cap of the coupled solve.
      coupling_tol: its tolerance on the optimality measure (default 1e-9 in
        float64, 1e-5 in float32).

    Returns:
      A :class:`PSFField`.

    Raises:
      ValueError, TypeError: for inputs that do not fit (grid larger than the
        image, tiles smaller than the kernel, overlap outside [0, 1), ...).

    Example:
      >>> import numpy as np, jdeconv
      >>> from jdeconv._field import estimate_psf_field
      >>> x = np.random.default_rng(0).random((48, 48))
      >>> h = jdeconv.data.gaussian_kernel(7, 0.9)
      >>> field = estimate_psf_field(x, jdeconv.conv2d(x, h), 7, grid=(2, 2))
      >>> field.kernels.shape, bool(np.allclose(field.kernels, h, atol=1e-6))
      ((2, 2, 7, 7), True)
    """
    mode = _validation.check_mode(mode)
    kshape = _validation.as_shape(kernel_shape)
    grid = _validation.as_shape(grid, "grid", example="(3, 3)")
    overlap = _check_overlap(overlap)
    coupling = _validation.check_real(coupling, "coupling", nonnegative=True, example="0.1")
    coupling_max_iters = _validation.check_int(coupling_max_iters, "coupling_max_iters",
                                               minimum=1, maximum=_validation.MAX_ITERS)
    gain, bg_degree, loss = _photometric(gain, background, loss)
    if coupling > 0 and _names.coupling_conflicts(gain, bg_degree, loss):
        raise ValueError("coupling > 0 is not available with gain=True, a background or "
                         "loss='huber' (the coupled problem is a plain least-squares one); use "
                         "coupling=0 (independent tiles), or drop those options.")
    x, y = _check_pair(x, y, kshape, mode, dtype, allow_nan=nan == "mask")
    pw, inverse_variance = pixel_weights(x, y, kshape, mode, mask=mask, weights=weights,
                                         saturation=saturation, nan=nan)
    prior = _validation.check_prior(prior)
    mask = _priors.check_support(support, kshape)
    weights = (None if regularization is None or isinstance(regularization, str)
               else _regularizers.check_regularization(regularization))
    if coupling > 0 and weights is not None and weights["l1"] > 0 and prior not in ("simplex",
                                                                                   "nonneg"):
        raise ValueError("coupling > 0 supports the l1 regulariser only with prior 'simplex' or "
                         "'nonneg' (where it is constant or linear); drop l1 or the coupling.")
    (m, n), (k, l) = x.shape, kshape
    yv = _valid_part(y, kshape, mode, x.shape)
    M, N = yv.shape
    gy, gx = grid
    if gy > M or gx > N:
        raise ValueError(f"grid {grid} has more tiles than the valid part of the blurred image "
                         f"({M}x{N}) has pixels along an axis; use a coarser grid.")
    rows, cols, (S, T) = tile_layout((M, N), grid, overlap)
    if S < k or T < l:
        raise ValueError(
            f"tiles of the blurred image would be {S}x{T} pixels, smaller than the {k}x{l} "
            f"kernel; use a coarser grid than {grid}, a larger overlap or a smaller kernel "
            "(tiles several times the kernel size give well-posed estimates).")

    # --- tiles (host slicing; one stacked batch) ---
    xh, yh = np.asarray(x), np.asarray(yv)
    wv = None if pw is None else np.asarray(_valid_part(pw, kshape, mode, x.shape))
    if wv is not None:  # masked pixels may hold anything (NaN): they contribute exactly 0
        yh = np.where(wv > 0, np.nan_to_num(yh), 0).astype(yh.dtype)
    r0 = np.repeat(rows, gx)
    c0 = np.tile(cols, gy)
    xs = np.stack([xh[r:r + S + k - 1, c:c + T + l - 1] for r, c in zip(r0, c0)])
    ys = np.stack([yh[r:r + S, c:c + T] for r, c in zip(r0, c0)])
    ws = None if wv is None else np.stack([wv[r:r + S, c:c + T] for r, c in zip(r0, c0)])
    span = float(np.ptp(xh))
    if span == 0:
        raise ValueError("the original image is constant: no kernel can be identified. Use a "
                         "textured original (edges, shapes, noise target).")
    flat = np.ptp(xs.reshape(xs.shape[0], -1), axis=1) <= FLAT_RTOL * span
    unknowns = k * l + _weighted_gram.background_size(bg_degree)
    starved = (np.zeros(flat.shape, bool) if ws is None
               else ((ws > 0).reshape(ws.shape[0], -1).sum(axis=1) < unknowns) & ~flat)
    skip = flat | starved
    if skip.all():
        raise ValueError("no tile has both texture in the original and enough unmasked pixels "
                         f"for its {unknowns} unknowns; use a coarser grid or mask fewer pixels.")
    donor = int(np.argmin(skip))  # skipped tiles get a placeholder problem (discarded)
    xs_call, ys_call = xs.copy(), ys.copy()
    xs_call[skip], ys_call[skip] = xs[donor], ys[donor]
    pixel_kw = {}
    if ws is not None:
        ws_call = ws.copy()
        ws_call[skip] = ws[donor]
        pixel_kw = {"weights": ws_call} if inverse_variance else {"mask": ws_call > 0}

    with warnings.catch_warnings():  # the batch's warnings speak of "pairs": re-worded below
        warnings.simplefilter("ignore", _diagnostics.FitWarning)
        est, errors = _estimate_tiles(
            xs_call, ys_call, kshape, prior=prior, solver=solver,
            regularization=regularization, max_iters=max_iters, tol=tol, support=support,
            solver_options=solver_options, gain=gain, background=background, loss=loss,
            **pixel_kw)
    dt = est.kernel.dtype
    lap = _grid_laplacian(gy, gx)
    kernels = _harmonic_fill(np.asarray(est.kernel), skip, lap)
    gains = _harmonic_fill(np.asarray(est.gain).reshape(-1), skip, lap)
    backgrounds = np.asarray(est.background).reshape(len(skip), -1)
    if backgrounds.shape[1]:
        backgrounds = _harmonic_fill(backgrounds, skip, lap)
    status = np.where(flat, TILE_RESULTS.textureless,
                      np.where(starved, TILE_RESULTS.masked,
                               np.where(np.asarray(est.result) == RESULTS.successful,
                                        TILE_RESULTS.successful, TILE_RESULTS.not_converged)))

    swapped = []  # the pair as a whole: a blurred image sharper than its original
    if _diagnostics.sharpening_applies(prior, loss) and not skip.all():
        sigma = float(np.nanmedian(np.asarray(est.noise_sigma, np.float64).reshape(-1)[~skip]))
        swapped = _diagnostics.sharpening_message(_diagnostics.sharpening_ratio(
            xh, yh, sigma, None if wv is None else wv > 0))
    _diagnostics.warn(_tile_messages(est, flat, grid, starved, errors) + swapped, stacklevel=3)

    c_code = jnp.asarray(RESULTS.successful, jnp.int32)
    c_opt = jnp.zeros((), dt)
    c_iter = jnp.zeros((), jnp.int32)
    if coupling > 0:
        if coupling_tol is None:
            coupling_tol = DEFAULT_COUPLING_TOL[np.dtype(dt).name]
        coupling_tol = _validation.check_tol(coupling_tol)
        w = {name: jnp.asarray(v, dt) for name, v in dict(est.regularization).items()}
        w = {name: w.get(name, jnp.zeros(len(flat), dt)) for name in _regularizers.REGULARIZERS}
        h, c_iter, c_opt, c_code, _ = _coupled_solve(
            jnp.asarray(xs, dt), jnp.asarray(ys, dt), None if ws is None else jnp.asarray(ws, dt),
            jnp.asarray(kernels, dt), w,
            jnp.asarray(coupling, dt), jnp.asarray(lap, dt), mask, jnp.asarray(coupling_tol, dt),
            kernel_shape=kshape, prior=prior, max_iters=coupling_max_iters)
        kernels = h

    offset_r = k - 1 - _geometry.centre(kshape)[0]
    offset_c = l - 1 - _geometry.centre(kshape)[1]
    centres = (jnp.asarray(rows + (S - 1) / 2 + offset_r, dt),
               jnp.asarray(cols + (T - 1) / 2 + offset_c, dt))
    bounds = np.stack([np.repeat(rows, gx) + offset_r, np.repeat(rows, gx) + offset_r + S,
                       np.tile(cols, gy) + offset_c, np.tile(cols, gy) + offset_c + T], axis=1)
    return PSFField(
        kernels=jnp.asarray(kernels, dt).reshape(grid + kshape), centres=centres,
        tile_bounds=jnp.asarray(bounds.reshape(gy, gx, 4), jnp.int32),
        tile_result=jnp.asarray(status.reshape(grid), jnp.int32), estimate=est,
        coupling_result=c_code, coupling_optimality=c_opt, coupling_iterations=c_iter,
        gain=jnp.asarray(gains, dt).reshape(grid),
        background=jnp.asarray(backgrounds, dt).reshape(grid + (backgrounds.shape[1],)),
        image_shape=(m, n), mode=mode, grid=grid, kernel_shape=kshape, overlap=overlap,
        coupling=coupling, prior=prior, background_model=est.background_model, loss=loss,
        tile_shape=(int(S), int(T)))
