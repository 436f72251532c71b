"""Weighted and photometric normal equations, robust weights and pixel masks (valid geometry).

Model and unknowns
------------------
With ``A`` the valid-convolution operator of the original ``x`` (``(m, n)``), i.e.
``(A h)[i, j] = sum_ab h[a, b] x[i+k-1-a, j+l-1-b]`` (``scipy.signal.convolve2d(x, h,
"valid")``, kernel raveled row-major), and ``Phi`` the ``nb`` background images
``phi_t`` of a polynomial of degree ``d`` in the pixel coordinates of ``y``, the
blurred image ``y`` (``(M, N) = (m-k+1, n-l+1)``) is modelled as::

    y ~ g * (A h) + Phi c = A kt + Phi c,        kt = g * h,

and fitted by weighted least squares with per-pixel weights ``w >= 0`` (``0`` =
masked, otherwise an inverse variance)::

    min_{kt, c}  1/2 sum_ij w_ij (y_ij - (A kt)_ij - (Phi c)_ij)^2.

The unknowns ``theta = [kt (k*l), c (nb)]`` satisfy the normal equations ``G theta = b``
with (``W = diag(w)``)::

    G = [[A^T W A,    A^T W Phi  ],       b = [A^T W y,  Phi^T W y],
         [Phi^T W A,  Phi^T W Phi]],      half_yy = 1/2 y^T W y.

The product ``g * h`` is bilinear, so, as the difference-imaging codes do, the
*unnormalised* kernel ``kt`` is estimated (jointly with ``c``, exactly, in one linear
system); afterwards ``g = sum(kt)`` and ``h = kt / g``.  The simplex prior on ``h``
becomes nonnegativity of ``kt`` without a sum constraint (:func:`kernel_tilde_prior`).
The background coefficients are free.  :func:`jdeconv._solvers.exact.solve_qp` puts
its prior on *all* unknowns, so the background block is eliminated first (Schur
complement, :func:`eliminate_background`)::

    minimise over kt:  1/2 kt^T (G_h - C B^-1 C^T) kt - (b_h - C B^-1 b_B)^T kt,
    then               c = B^-1 (b_B - C^T kt),

with ``G_h = A^T W A``, ``C = A^T W Phi``, ``B = Phi^T W Phi``, ``b_h = A^T W y``,
``b_B = Phi^T W y``.  Minimising the joint objective over the free ``c`` first is
exact, so the constrained minimiser in ``kt`` of the reduced problem is the kernel
part of the constrained joint minimiser.  :func:`solve_photometric` is that route
end to end.

Weighted Gram matrix without im2col
-----------------------------------
With ``p = k-1-a``, ``q = l-1-b`` (so that ``A[(i,j),(a,b)] = x[i+p, j+q]``)::

    G_h[(p,q),(p',q')] = sum_ij w_ij x[i+p, j+q] x[i+p', j+q']
                       = sum_ij s_pq[i, j] x[i+p', j+q'],    s_pq = w * x[p:p+M, q:q+N],

i.e. row ``(p, q)`` of ``G_h`` is the valid cross-correlation of ``x`` with the
image-sized product ``s_pq``, evaluated at the ``k*l`` offsets ``(p', q')``.  Two
algorithms, chosen by ``method``:

* ``"fft"``: ``X = DFT(x)`` once (size ``L = fast(m) x fast(n)``: ``i + p' <= m-1``,
  so a frame of ``m`` rows already has no wrap-around); per row ``(p, q)`` one
  forward real FFT of ``s_pq`` and one partial inverse of ``conj(S_pq) X`` (the
  column inverse only for the first ``k`` rows).  The rows are batched in chunks
  (``lax.map`` over ``vmap`` chunks) so memory stays ``O(chunk * |L|)``.  Cost
  ``~ 2 k l`` real FFTs of size ``|L|``: ``O(k l mn log(mn))`` flops.  (The lag-wise
  alternative, ``z_lag = x * shift(x, lag)`` correlated with ``w`` for each of the
  ``(2k-1)(2l-1)`` lags, needs twice as many transforms even with symmetry.)
* ``"direct"``: patch blocks, ``G_h = sum_blocks P_B^T W_B P_B`` with ``P_B`` the
  ``(R*N, k*l)`` patch matrix of ``R`` output rows built by slicing (``k + l``
  slices, never the whole im2col matrix).  ``2 #y (k l)^2`` flops at matrix-product
  speed, memory ``O(R N k l)`` (``R`` keeps one block near 1 M entries); exact
  summation (no FFT rounding).
* ``"auto"``: ``"direct"`` while ``2 #y (kl)^2 <= _AUTO_RATIO * kl * |L| log2|L|``
  (flop counts weighted by the measured speed ratio of CPU matrix products and FFTs).

Measured on CPU (float64, 2 shared cores, load 4-10, so +-50 %): 255^2 image with a
7x7 kernel, direct 28 ms / fft 31 ms; 11x11, 76 / 47 ms; 15x15, 157 / 79 ms; 31x31,
fft 0.36-0.68 s (direct ~93 Gflop, several seconds) against 0.17-0.29 s for the
unweighted :func:`jdeconv.normal_equations`.

The products ``A^T W T`` for the target images ``T = y, phi_1, ...`` (right-hand side
and cross block ``C``) are correlations of ``x`` with ``w * T``, by FFT or by one
direct correlation; ``B`` and ``b_B`` are plain weighted sums.  With ``w = None``
(all ones) ``G_h`` comes from :func:`jdeconv.normal_equations` (FFT autocorrelation +
border corrections, much cheaper).  FFT rounding is a few ulps of ``max|G|``
(float64 ``~1e-15``, float32 ``~1e-7`` relative).

Background basis
----------------
Pixel coordinates of ``y`` are scaled to ``u = 2 i / (M - 1) - 1``,
``v = 2 j / (N - 1) - 1`` in ``[-1, 1]`` (``0`` for a single row / column), and the
basis is the products of Legendre polynomials ``P_alpha(u) P_beta(v)``,
``alpha + beta <= d``, ordered by total degree, then by decreasing ``alpha``:
``1, u, v, P2(u), u v, P2(v), ...`` (``nb = (d+1)(d+2)/2``).  They span exactly the
polynomials of degree ``<= d``; for ``d <= 1`` they *are* the monomials ``1, u, v``
(the constant coefficient is then the offset itself), and they are nearly orthogonal
on the grid, which keeps ``B`` well conditioned for any ``d`` (monomials on pixel
indices give ``cond(B) ~ M^(2d)``).

Robust loss and masks
---------------------
:func:`huber_weights`, :func:`robust_scale` give the reweighting of an IRLS loop (see
:func:`huber_weights`); :func:`saturation_mask` and :func:`nan_mask` give boolean
"use" masks of ``y``'s shape; ``w = mask * weights`` enters the normal equations.
:func:`poisson_weights` is the inverse variance of a Poisson + read-noise model.

Notes:
  What was followed (read from the public sources):

  * Bramich (2008, MNRAS 386, L77), as implemented in pyDANDIA
    (``pyDANDIA/dandia_kernel_compact.py``, ``naive_u_matrix``): one linear system for
    the kernel pixels (a delta-function basis, unnormalised, so its sum is the
    photometric scale factor) plus a constant differential background (a column of
    ones in the "pattern" matrix), ``U = P^T W P`` and ``b = P^T W I`` with ``W`` the
    inverse variances; non-positive variances get weight zero.  Here the same system
    is formed without the pattern matrix.
  * sfft (Hu et al. 2022, ApJ 936, 157; ``sfft/sfftcore/SFFTConfigure.py``): the
    differential background is a polynomial of total degree ``DB`` with
    ``(DB+1)(DB+2)/2`` terms in coordinates scaled by the image size
    (``(i + 1) / N0``), and every block of the linear system (kernel-kernel,
    kernel-background) is assembled from Fourier-space products of the images with
    the polynomial-weighted images; with a constant photometric ratio the kernel sum
    is the flux scaling.  Here the cross block is computed the same way (correlations
    of ``x`` with ``w * phi_t``), and the coordinates are centred on ``[-1, 1]`` with a
    Legendre basis for conditioning.
  * PyTorchDIA (Hitchcock et al. 2021, ``PyTorchDIA_RobustLoss.py``): the same model
    (kernel + polynomial background in coordinates on ``[-0.5, 0.5]``) with a Huber
    loss on noise-normalised residuals, ``c = 1.345``; it minimises by gradient
    descent, whereas here the Huber fit is an IRLS sequence of exact solves.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jdeconv import _conv, _gram, _validation
from jdeconv._gram import NormalEquations
from jdeconv._solvers import exact

__all__ = [
    "BACKGROUNDS",
    "HUBER_C",
    "BackgroundElimination",
    "PhotometricFit",
    "augmented_normal_equations",
    "background_basis",
    "background_image",
    "background_size",
    "eliminate_background",
    "huber_weights",
    "kernel_tilde_prior",
    "nan_mask",
    "parse_background",
    "photometric_model",
    "poisson_weights",
    "recover_background",
    "robust_scale",
    "saturation_mask",
    "solve_photometric",
    "split_gain",
    "weighted_normal_equations",
]

_HI = lax.Precision.HIGHEST
#: Background model names and the polynomial degree each one means.
BACKGROUNDS = {"none": None, "constant": 0, "plane": 1}
_MAX_BACKGROUND_DEGREE = 10
_METHODS = ("auto", "direct", "fft")
# "direct" while 2 #y (kl)^2 <= _AUTO_RATIO * kl |L| log2|L| (measured on CPU, float64:
# a patch-block matrix product runs ~_AUTO_RATIO times more flops per second than the FFTs).
_AUTO_RATIO = 6.0
# Memory bounds: entries of one patch block ("direct") / complex entries of one chunk of
# spectra ("fft").
_DIRECT_BLOCK_ENTRIES = 1 << 20
_FFT_CHUNK_ENTRIES = 1 << 18
# Huber's tuning constant (95 % efficiency at the normal), as in PyTorchDIA.
HUBER_C = 1.345
_MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4)


# ----------------------------------------------------------------------------- helpers


def _check_method(method) -> str:
    return _validation.check_choice("method", method, _METHODS)


def _fft_shape(m: int, n: int) -> tuple[int, int]:
    # c[p'] = sum_i s[i] x[i + p'] with i + p' <= m - 1: a frame of m rows never wraps.
    return _conv.fast_len(m), _conv.fast_len(n)


def _resolve_method(method: str, m: int, n: int, k: int, l: int) -> str:
    if method != "auto":
        return method
    M, N = m - k + 1, n - l + 1
    L1, L2 = _fft_shape(m, n)
    size = L1 * L2
    direct = 2.0 * M * N * (k * l) ** 2
    fft = _AUTO_RATIO * k * l * size * math.log2(max(size, 2))
    return "direct" if direct <= fft else "fft"


def _spectrum(x, shape):
    """``DFT(x)`` zero padded to ``shape`` (real FFT along the last axis)."""
    L1, L2 = shape
    return jnp.fft.fft(jnp.fft.rfft(x, n=L2, axis=-1), n=L1, axis=-2)


def _fft_corr(X, s, k: int, l: int, shape):
    """``c[t, p, q] = sum_ij s[t, i, j] x[i+p, j+q]`` for ``p < k``, ``q < l`` -> (T, k, l).

    ``X = _spectrum(x, shape)``; ``s`` is (T, M, N).  The inverse transform is done
    along the columns first and only for the ``k`` rows that are kept.
    """
    L1, L2 = shape
    S = _spectrum(s, shape)
    c = jnp.fft.ifft(jnp.conj(S) * X[None], axis=-2)[:, :k]
    return jnp.fft.irfft(c, n=L2, axis=-1)[:, :, :l]


def _direct_corr(x, s, k: int, l: int):
    """Same as :func:`_fft_corr` by one direct (exact-summation) correlation."""
    out = lax.conv_general_dilated(x[None, None], s[:, None], (1, 1), "VALID", precision=_HI)
    return out[0]


def _target_products(x, ws, k: int, l: int, method: str):
    """``(A^T (w T_t))`` for each weighted target ``ws[t] = w * T_t`` -> (T, k*l)."""
    if method == "direct":
        c = _direct_corr(x, ws, k, l)
    else:
        c = _fft_corr(_spectrum(x, _fft_shape(*x.shape)), ws, k, l, _fft_shape(*x.shape))
    # c is indexed by (p, q) = (k-1-a, l-1-b): reverse to the kernel raveling.
    return c[:, ::-1, ::-1].reshape(ws.shape[0], k * l)


def _gram_fft(x, w, k: int, l: int):
    """Rows ``(p, q)`` of ``A^T W A`` as FFT correlations (see module docstring)."""
    m, n = x.shape
    M, N = w.shape
    kl = k * l
    shape = _fft_shape(m, n)
    X = _spectrum(x, shape)
    chunk = max(1, min(kl, _FFT_CHUNK_ENTRIES // (shape[0] * (shape[1] // 2 + 1))))
    nchunks = -(-kl // chunk)
    taps = np.arange(nchunks * chunk) % kl  # padding rows repeat real ones; cut below
    ps = jnp.asarray((taps // l).reshape(nchunks, chunk), jnp.int32)
    qs = jnp.asarray((taps % l).reshape(nchunks, chunk), jnp.int32)

    def rows(pq):
        p, q = pq
        win = jax.vmap(lambda a, b: lax.dynamic_slice(x, (a, b), (M, N)))(p, q)
        return _fft_corr(X, win * w[None], k, l, shape).reshape(chunk, kl)

    g = lax.map(rows, (ps, qs)).reshape(nchunks * chunk, kl)[:kl]
    return g[::-1, ::-1]  # (p, q) order -> kernel order, both axes


def _gram_direct(x, w, k: int, l: int):
    """``sum_blocks P^T W P`` over blocks of ``R`` output rows (patch matrices by slicing)."""
    m, n = x.shape
    M, N = w.shape
    kl = k * l
    R = max(1, min(M, _DIRECT_BLOCK_ENTRIES // max(N * kl, 1)))
    nblocks = -(-M // R)
    pad = nblocks * R - M
    xp = jnp.pad(x, ((0, pad), (0, 0)))
    wp = jnp.pad(w, ((0, pad), (0, 0)))  # padded rows have weight 0

    def body(i, g):
        xr = lax.dynamic_slice_in_dim(xp, i * R, R + k - 1, axis=0)
        wr = lax.dynamic_slice_in_dim(wp, i * R, R, axis=0)
        xc = jnp.stack([xr[:, q:q + N] for q in range(l)], axis=-1)  # (R+k-1, N, l)
        patches = jnp.stack([xc[p:p + R] for p in range(k)], axis=2)  # (R, N, k, l)
        patches = patches.reshape(R * N, kl)  # [(r, j), (p, q)] = x[i R + r + p, j + q]
        weighted = patches * wr.reshape(R * N, 1)
        return g + lax.dot_general(weighted, patches, (((0,), (0,)), ((), ())), precision=_HI)

    g = lax.fori_loop(0, nblocks, body, jnp.zeros((kl, kl), x.dtype))
    return g[::-1, ::-1]


def _weighted_gram(x, w, k: int, l: int, method: str):
    g = _gram_direct(x, w, k, l) if method == "direct" else _gram_fft(x, w, k, l)
    return _gram._symmetrize(g)


def _prepare(x, y, w, kernel_shape, *, y_name="y (blurred image)"):
    """Eager validation shared by the public entry points; returns (x, y, w, (k, l))."""
    kshape = _validation.as_shape(kernel_shape, "kernel_shape")
    x = _validation.as_float_array("x (original image)", x)
    y = _validation.as_float_array(y_name, y, allow_nan=True)
    x, y = _validation.common_float(x, y)
    _validation.check_kernel_fits(x.shape, kshape, "valid")
    expected = (x.shape[0] - kshape[0] + 1, x.shape[1] - kshape[1] + 1)
    _validation.check_shape_is(y_name, y.shape, expected,
                               f"(an image {tuple(x.shape)} blurred by a {kshape} kernel in "
                               "mode 'valid').")
    if w is not None:
        w = _validation.as_float_array("w (pixel weights)", w)
        _validation.check_shape_is("w (pixel weights)", w.shape, expected,
                                   "(one weight per pixel of the blurred image).")
        w = jnp.asarray(w, x.dtype)
        if _validation.is_concrete(w):
            neg = int(np.count_nonzero(np.asarray(w) < 0))
            if neg:
                raise ValueError(f"w (pixel weights) has {neg} negative value(s); weights "
                                 "must be >= 0 (0 = masked, else an inverse variance).")
    if _validation.is_concrete(y) and (w is None or _validation.is_concrete(w)):
        use = np.ones(y.shape, bool) if w is None else np.asarray(w) > 0
        bad = int(np.count_nonzero(np.isnan(np.asarray(y)) & use))
        if bad:
            raise ValueError(f"{y_name} has {bad} NaN pixel(s) that are not masked; give them "
                             "weight 0 (e.g. w = nan_mask(y) * w) or clean them.")
    return x, y, w, kshape


def _masked_target(y, w):
    """``w * y`` with masked pixels (w == 0) contributing exactly 0, even if y is NaN there."""
    return jnp.where(w > 0, y, 0) * w


# ------------------------------------------------------------------- weighted system


@functools.partial(jax.jit, static_argnums=(3, 4))
def _wne_jit(x, y, w, kernel_shape, method):
    k, l = kernel_shape
    method = _resolve_method(method, *x.shape, k, l)
    wy = _masked_target(y, w)
    gram = _weighted_gram(x, w, k, l, method)
    rhs = _target_products(x, wy[None], k, l, method)[0]
    half_yy = 0.5 * _gram._sum(wy * jnp.where(w > 0, y, 0))
    return NormalEquations(gram, rhs, half_yy)


def weighted_normal_equations(x, y, w, kernel_shape, *, method: str = "auto") -> NormalEquations:
    """``(A^T W A, A^T W y, 1/2 y^T W y)`` of the weighted valid-mode least squares.

    ``min_h 1/2 sum_ij w_ij ((A h)_ij - y_ij)^2`` with ``A h = conv2d(x, h, "valid")``,
    formed without the im2col matrix.  Pixels with ``w == 0`` are masked: they may hold
    anything in ``y`` (NaN included).  Other modes: pass ``jdeconv._geometry.pad(x,
    kernel_shape, mode)`` as ``x`` (every mode is the valid convolution of the padded
    image; ``"same"`` pairs are cropped with ``same_to_valid`` instead).

    Args:
      x: original image, shape ``(m, n)``.
      y: blurred image, shape ``(m-k+1, n-l+1)``.
      w: nonnegative per-pixel weights of ``y``'s shape (0 = masked, otherwise an
        inverse variance); a boolean mask works too.
      kernel_shape: ``(k, l)`` or an int (static under ``jax.jit``).
      method: ``"auto"``, ``"direct"`` (patch blocks, ``2 #y (kl)^2`` flops, exact
        sums) or ``"fft"`` (``~2 kl`` FFTs of the image size); see the module docstring.

    Returns:
      :class:`jdeconv.NormalEquations` ``(gram (kl, kl), rhs (kl,), half_yy)`` in the
      inputs' floating dtype; with ``w == 1`` it equals :func:`jdeconv.normal_equations`.

    Raises:
      ValueError: wrong shapes, negative weights, NaN in ``y`` where ``w > 0``.

    Example:
      >>> import numpy as np, jdeconv
      >>> from jdeconv._weighted_gram import weighted_normal_equations
      >>> rng = np.random.default_rng(0)
      >>> x, h = rng.random((12, 12)), np.full((3, 3), 1 / 9)
      >>> y = np.array(jdeconv.conv2d(x, h))
      >>> w = (rng.random(y.shape) > 0.2).astype(float)
      >>> y[w == 0] = np.nan  # masked pixels are ignored
      >>> ne = weighted_normal_equations(x, y, w, (3, 3))
      >>> bool(np.allclose(np.linalg.solve(ne.gram, ne.rhs), h.ravel()))
      True
    """
    method = _check_method(method)
    x, y, w, kshape = _prepare(x, y, w, kernel_shape)
    if w is None:
        raise TypeError("w (pixel weights) is None; use jdeconv.normal_equations for "
                        "unweighted problems or pass an array of y's shape.")
    return _wne_jit(x, y, w, kshape, method)


# ------------------------------------------------------------------------ background


def parse_background(background) -> int | None:
    """Parses a background model: ``"none"``/``None`` -> None, ``"constant"`` -> 0,
    ``"plane"`` -> 1, an int ``d >= 0`` -> ``d`` (polynomial degree, at most 10).

    Example:
      >>> from jdeconv._weighted_gram import parse_background
      >>> parse_background("plane"), parse_background(2), parse_background("none")
      (1, 2, None)
    """
    if background is None:
        return None
    if isinstance(background, str):
        if background not in BACKGROUNDS:
            raise _validation.unknown_name("background", background, BACKGROUNDS)
        return BACKGROUNDS[background]
    if isinstance(background, (bool, np.bool_)) or not _validation.is_int(background):
        raise TypeError(f"background must be 'none', 'constant', 'plane' or a polynomial "
                        f"degree (int >= 0), got {type(background).__name__} {background!r}.")
    return _validation.check_int(background, "background (polynomial degree)", minimum=0,
                                 maximum=_MAX_BACKGROUND_DEGREE, example=1)


def background_size(degree: int | None) -> int:
    """Number of background coefficients, ``(d+1)(d+2)/2`` (0 for ``None``)."""
    return 0 if degree is None else (degree + 1) * (degree + 2) // 2


def _legendre(u, degree: int):
    """``[P_0(u), ..., P_degree(u)]`` by the three-term recurrence."""
    out = [jnp.ones_like(u), u]
    for n in range(1, degree):
        out.append(((2 * n + 1) * u * out[n] - n * out[n - 1]) / (n + 1))
    return out[:degree + 1]


def _coordinates(size: int, dtype):
    if size == 1:
        return jnp.zeros((1,), dtype)
    return jnp.linspace(-1.0, 1.0, size, dtype=dtype)


def _basis(shape, degree: int | None, dtype):
    M, N = shape
    if degree is None:
        return jnp.zeros((0, M, N), dtype)
    pu = _legendre(_coordinates(M, dtype), degree)
    pv = _legendre(_coordinates(N, dtype), degree)
    terms = [(t - b, b) for t in range(degree + 1) for b in range(t + 1)]
    return jnp.stack([pu[a][:, None] * pv[b][None, :] for a, b in terms])


def background_basis(shape, degree, dtype=None):
    """The background images ``phi_t`` (``(nb, M, N)``) of a polynomial of degree ``d``.

    Legendre products ``P_a(u) P_b(v)``, ``a + b <= d``, ordered ``1, u, v, P2(u), u v,
    P2(v), ...``, with ``u = 2 i/(M-1) - 1`` (row) and ``v = 2 j/(N-1) - 1`` (column)
    in ``[-1, 1]``.

    Args:
      shape: ``(M, N)``, the shape of ``y``.
      degree: an int ``>= 0``, a background name or None (see :func:`parse_background`).
      dtype: float dtype (default: the default float dtype).

    Example:
      >>> from jdeconv._weighted_gram import background_basis
      >>> background_basis((3, 2), "plane")[1].tolist()  # u, the row coordinate
      [[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]
    """
    degree = parse_background(degree)
    shape = _validation.as_shape(shape, "shape", example="(64, 64)")
    dtype = _validation.default_float_dtype() if dtype is None else dtype
    return _basis(shape, degree, dtype)


def background_image(coefficients, shape, degree):
    """``sum_t c_t phi_t``: the background image of ``shape`` for the coefficients ``c``."""
    degree = parse_background(degree)
    shape = _validation.as_shape(shape, "shape", example="(64, 64)")
    c = _validation.as_float_array("coefficients", coefficients, ndim=1)
    _validation.check_shape_is("coefficients", c.shape, (background_size(degree),),
                               f"(background of degree {degree}).")
    return jnp.tensordot(c, _basis(shape, degree, c.dtype), axes=1, precision=_HI)


# ----------------------------------------------------------------- augmented system


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _ane_jit(x, y, w, kernel_shape, degree, method):
    k, l = kernel_shape
    method = _resolve_method(method, *x.shape, k, l)
    phi = _basis(y.shape, degree, x.dtype)  # (nb, M, N)
    nb = phi.shape[0]
    if w is None:
        ne = _gram.normal_equations_impl(x, y, kernel_shape, "valid")
        gram_h, rhs_h, half_yy = ne
        wy, wphi = y, phi
        yy = y
    else:
        wy = _masked_target(y, w)
        yy = jnp.where(w > 0, y, 0)
        wphi = phi * w[None]
        gram_h = _weighted_gram(x, w, k, l, method)
        rhs_h = _target_products(x, wy[None], k, l, method)[0]
        half_yy = 0.5 * _gram._sum(wy * yy)
    if nb == 0:
        return NormalEquations(gram_h, rhs_h, half_yy)
    cross = _target_products(x, wphi, k, l, method).T  # (kl, nb) = A^T W Phi
    bg = jnp.einsum("tij,sij->ts", wphi, phi, precision=_HI)  # Phi^T W Phi
    bg = 0.5 * (bg + bg.T)
    rhs_b = jnp.einsum("tij,ij->t", wphi, yy, precision=_HI)  # Phi^T W y
    gram = jnp.concatenate([jnp.concatenate([gram_h, cross], axis=1),
                            jnp.concatenate([cross.T, bg], axis=1)], axis=0)
    return NormalEquations(gram, jnp.concatenate([rhs_h, rhs_b]), half_yy)


def augmented_normal_equations(x, y, kernel_shape, *, w=None, background_degree=None,
                               method: str = "auto") -> NormalEquations:
    """Normal equations of ``y ~ A kt + Phi c`` in ``theta = [kt (k*l), c (nb)]``.

    Block layout (``W = diag(w)``, ``W = I`` when ``w`` is None)::

        gram = [[A^T W A,   A^T W Phi  ],    rhs = [A^T W y, Phi^T W y],
                [Phi^T W A, Phi^T W Phi]],   half_yy = 1/2 y^T W y.

    ``kt = g * h`` is the unnormalised kernel (gain times kernel); ``Phi`` the
    background basis of :func:`background_basis`.  The cross block is ``nb``
    correlations of ``x`` with ``w * phi_t`` (no im2col).  With no background this is
    the (weighted) kernel system alone.  Solve it with :func:`eliminate_background` +
    ``solve_qp`` + :func:`recover_background` (or :func:`solve_photometric`).

    Args:
      x: original image ``(m, n)``.
      y: blurred image ``(m-k+1, n-l+1)``; NaN allowed where ``w == 0``.
      kernel_shape: ``(k, l)`` or an int.
      w: optional nonnegative per-pixel weights of ``y``'s shape (0 = masked).
      background_degree: None / ``"none"``, ``"constant"`` (0), ``"plane"`` (1) or a
        polynomial degree ``d`` (``nb = (d+1)(d+2)/2`` coefficients).
      method: ``"auto"``, ``"direct"`` or ``"fft"`` for the weighted kernel block.

    Returns:
      :class:`jdeconv.NormalEquations` of size ``k*l + nb``; the kernel taps come first
      (row-major), then the background coefficients.

    Example:
      >>> import numpy as np, jdeconv
      >>> from jdeconv._weighted_gram import augmented_normal_equations
      >>> rng = np.random.default_rng(0)
      >>> x, h = rng.random((12, 12)), np.full((3, 3), 1 / 9)
      >>> y = 0.9 * np.asarray(jdeconv.conv2d(x, h)) + 0.02
      >>> ne = augmented_normal_equations(x, y, (3, 3), background_degree="constant")
      >>> theta = np.linalg.solve(ne.gram, ne.rhs)
      >>> np.round([theta[:9].sum(), theta[9]], 10).tolist()  # gain, offset
      [0.9, 0.02]
    """
    method = _check_method(method)
    degree = parse_background(background_degree)
    x, y, w, kshape = _prepare(x, y, w, kernel_shape)
    return _ane_jit(x, y, w, kshape, degree, method)


class BackgroundElimination(NamedTuple):
    """The augmented system with the background block eliminated (Schur complement).

    reduced:          :class:`NormalEquations` in ``kt`` alone: ``G_h - C B^-1 C^T``,
                      ``b_h - C B^-1 b_B``, ``half_yy - 1/2 b_B^T B^-1 b_B``; its
                      quadratic value is the joint objective minimised over ``c``.
    cross:            ``C = A^T W Phi``, ``(k*l, nb)``.
    background_chol:  lower Cholesky factor of ``B = Phi^T W Phi``, ``(nb, nb)``.
    background_rhs:   ``b_B = Phi^T W y``, ``(nb,)``.
    """

    reduced: NormalEquations
    cross: jax.Array
    background_chol: jax.Array
    background_rhs: jax.Array


def eliminate_background(ne: NormalEquations, n_background: int) -> BackgroundElimination:
    """Eliminates the last ``n_background`` (free) unknowns of ``ne`` exactly.

    Args:
      ne: an augmented system (e.g. from :func:`augmented_normal_equations`).
      n_background: number of trailing free unknowns (static; 0 returns ``ne`` as is).

    Returns:
      :class:`BackgroundElimination`; a non-finite ``background_chol`` means
      ``Phi^T W Phi`` is singular (too few unmasked pixels for the background degree).

    Notes:
      Cost ``O(kl nb^2 + (kl)^2 nb)``.  The reduced Gram matrix loses about
      ``log10(mean(x)^2 / var(x))`` digits to cancellation when the background contains
      a constant (it removes the image mean), harmless in float64.
    """
    nb = int(n_background)
    n = ne.rhs.shape[-1]
    kl = n - nb
    if nb < 0 or kl < 1:
        raise ValueError(f"n_background is {nb}; it must be in [0, {n - 1}] for a system "
                         f"of size {n}.")
    return _eliminate(ne, nb)


@functools.partial(jax.jit, static_argnums=(1,))
def _eliminate(ne, nb):
    gram, rhs, half_yy = ne
    kl = rhs.shape[-1] - nb
    dt = gram.dtype
    if nb == 0:
        return BackgroundElimination(ne, jnp.zeros((kl, 0), dt), jnp.zeros((0, 0), dt),
                                     jnp.zeros((0,), dt))
    g_h, c = gram[:kl, :kl], gram[:kl, kl:]
    b_mat, b_h, b_b = gram[kl:, kl:], rhs[:kl], rhs[kl:]
    chol = jnp.linalg.cholesky(b_mat)
    z = jax.scipy.linalg.cho_solve((chol, True), jnp.concatenate([c.T, b_b[:, None]], axis=1))
    zc, zb = z[:, :kl], z[:, kl]
    g_r = g_h - jnp.matmul(c, zc, precision=_HI)
    g_r = 0.5 * (g_r + g_r.T)
    b_r = b_h - jnp.matmul(c, zb, precision=_HI)
    c_r = half_yy - 0.5 * jnp.dot(b_b, zb, precision=_HI)
    return BackgroundElimination(NormalEquations(g_r, b_r, c_r), c, chol, b_b)


def recover_background(elim: BackgroundElimination, kernel_tilde):
    """``c = B^-1 (b_B - C^T kt)``: the optimal background coefficients for a kernel.

    Args:
      elim: from :func:`eliminate_background`.
      kernel_tilde: the unnormalised kernel ``kt``, ``(k, l)`` or ``(k*l,)``.

    Returns:
      ``(nb,)`` background coefficients (empty without a background).
    """
    kt = jnp.reshape(jnp.asarray(kernel_tilde, elim.cross.dtype), (-1,))
    if elim.cross.shape[1] == 0:
        return jnp.zeros((0,), elim.cross.dtype)
    r = elim.background_rhs - jnp.matmul(elim.cross.T, kt, precision=_HI)
    return jax.scipy.linalg.cho_solve((elim.background_chol, True), r)


def split_gain(kernel_tilde):
    """``(h, g)`` with ``g = sum(kt)`` and ``h = kt / g`` (``h = kt`` when ``g == 0``)."""
    kt = jnp.asarray(kernel_tilde)
    g = jnp.sum(kt)
    return jnp.where(g != 0, kt / jnp.where(g != 0, g, 1), kt), g


def kernel_tilde_prior(prior: str, gain: bool) -> str:
    """The prior on ``kt = g h`` that a prior on ``h`` becomes when the gain is free.

    ``simplex -> nonneg``, ``sum_to_one -> none``, ``nonneg``/``none`` unchanged (with
    a free gain the sum constraint is absorbed by ``g``); without a gain, unchanged.
    """
    prior = _validation.check_prior(prior)
    if not gain:
        return prior
    return {"simplex": "nonneg", "sum_to_one": "none"}.get(prior, prior)


class PhotometricFit(NamedTuple):
    """Result of :func:`solve_photometric`.

    kernel:      ``(k, l)`` kernel ``h`` (unit sum when the gain is free and nonzero).
    gain:        scalar ``g = sum(kt)`` (1 when ``gain=False``).
    background:  ``(nb,)`` coefficients of :func:`background_basis`.
    kernel_tilde: ``(k, l)`` unnormalised kernel ``kt = g h`` (what the QP solved for).
    qp:          the :class:`jdeconv._solvers.exact.QPResult` of the reduced problem.
    """

    kernel: jax.Array
    gain: jax.Array
    background: jax.Array
    kernel_tilde: jax.Array
    qp: exact.QPResult


def solve_photometric(x, y, kernel_shape, *, w=None, background_degree=None,
                      gain: bool = False, prior: str = "simplex", mask=None,
                      max_iters: int = 100, tol=None, method: str = "auto") -> PhotometricFit:
    """Exact joint fit of kernel, gain and polynomial background (Schur route).

    Solves ``min 1/2 ||W^(1/2) (y - g A h - Phi c)||^2`` with ``prior`` on ``h``: forms
    :func:`augmented_normal_equations`, eliminates the free background block,
    solves the QP in ``kt = g h`` with :func:`kernel_tilde_prior` by ``solve_qp``, then
    recovers ``c`` and splits ``kt`` into ``(h, g)``.

    Args:
      x, y, kernel_shape, w, background_degree, method: as in
        :func:`augmented_normal_equations`.
      gain: fit a free gain ``g`` (else ``g = 1`` and ``prior`` applies to ``h`` itself).
      prior: prior on ``h`` (``"simplex"``, ``"nonneg"``, ``"sum_to_one"``, ``"none"``).
        With ``gain=True`` and a prior without a sum constraint the gain is not
        identifiable; ``h`` is then reported with unit sum and ``g = sum(kt)``.
      mask: optional ``(k*l,)`` or ``(k, l)`` boolean kernel support.
      max_iters, tol: passed to ``solve_qp``.

    Returns:
      :class:`PhotometricFit`.

    Example:
      >>> import numpy as np, jdeconv
      >>> from jdeconv._weighted_gram import solve_photometric
      >>> rng = np.random.default_rng(0)
      >>> x, h = rng.random((12, 12)), np.full((3, 3), 1 / 9)
      >>> y = 0.9 * np.asarray(jdeconv.conv2d(x, h)) + 0.02
      >>> fit = solve_photometric(x, y, (3, 3), gain=True, background_degree=0)
      >>> round(float(fit.gain), 8), np.round(fit.background, 8).tolist()
      (0.9, [0.02])
    """
    degree = parse_background(background_degree)
    kt_prior = kernel_tilde_prior(prior, gain)
    ne = augmented_normal_equations(x, y, kernel_shape, w=w, background_degree=degree,
                                    method=method)
    kshape = _validation.as_shape(kernel_shape, "kernel_shape")
    nb = background_size(degree)
    elim = eliminate_background(ne, nb)
    if mask is not None:
        mask = jnp.reshape(jnp.asarray(mask, bool), (-1,))
    qp = exact.solve_qp(elim.reduced.gram, elim.reduced.rhs, prior=kt_prior, mask=mask,
                        max_iters=max_iters, tol=tol)
    kt = qp.solution
    c = recover_background(elim, kt)
    if gain:
        h, g = split_gain(kt)
    else:
        h, g = kt, jnp.ones((), kt.dtype)
    return PhotometricFit(h.reshape(kshape), g, c, kt.reshape(kshape), qp)


def photometric_model(x, kernel_tilde, background=None, *, background_degree=None):
    """The model image ``conv2d(x, kt, "valid") + sum_t c_t phi_t`` (for residuals).

    Args:
      x: original image ``(m, n)``.
      kernel_tilde: ``(k, l)`` unnormalised kernel ``g h``.
      background: optional ``(nb,)`` coefficients.
      background_degree: the degree they belong to (see :func:`parse_background`).
    """
    degree = parse_background(background_degree)
    x = _validation.as_float_array("x (original image)", x)
    kt = _validation.as_float_array("kernel_tilde", kernel_tilde)
    x, kt = _validation.common_float(x, kt)
    _validation.check_kernel_fits(x.shape, kt.shape, "valid")
    nb = background_size(degree)
    c = jnp.zeros((nb,), x.dtype) if background is None else jnp.asarray(background, x.dtype)
    _validation.check_shape_is("background", c.shape, (nb,), f"(degree {degree}).")
    return _model_jit(x, kt, c, degree)


@functools.partial(jax.jit, static_argnums=(3,))
def _model_jit(x, kt, c, degree):
    out = lax.conv_general_dilated(x[None, None], kt[::-1, ::-1][None, None], (1, 1), "VALID",
                                   precision=_HI)[0, 0]
    if degree is None:
        return out
    return out + jnp.tensordot(c, _basis(out.shape, degree, x.dtype), axes=1, precision=_HI)


# ----------------------------------------------------------------------- robust loss


def huber_weights(residual, delta):
    """IRLS weights of the Huber loss: ``psi(r)/r = min(1, delta/|r|)``.

    ``rho(r) = r^2/2`` for ``|r| <= delta``, ``delta |r| - delta^2/2`` beyond.
    Non-finite residuals get weight 0.

    Args:
      residual: residuals, any shape (standardised: ``sqrt(w0) * (y - model)``).
      delta: threshold ``> 0`` (scalar or broadcastable array), typically
        ``1.345 * robust_scale(residual)``.

    Returns:
      Weights in ``(0, 1]`` of the residual's shape.

    Notes:
      IRLS recipe (what the engine loops; every step is one exact solve)::

          w0 = mask * inverse_variance                  # base weights
          w  = w0;  theta = solve(w)                    # plain weighted fit
          repeat:
              r     = sqrt(w0) * (y - photometric_model(x, kt, c))
              s     = robust_scale(r, w0)               # or 1 if w0 are true 1/var
              delta = max(HUBER_C * s, 1e-6 * (max(y) - min(y)))
              w     = w0 * huber_weights(r, delta)
              theta_new = solve(w)                      # solve_photometric(w=w)
          until max|theta_new - theta| <= tol * max|theta|

      The floor on ``delta`` matters for clean data: there the inlier residuals
      vanish as the fit improves and the MAD scale would drive ``delta`` to 0 (the
      loop would become an ill-conditioned L1 fit); with it, noise-free pairs with 5 %
      gross outliers converge in ~6 steps to a kernel error ~1e-6.

      With a fixed ``delta`` this is a majorise-minimise iteration for
      ``sum rho(sqrt(w0) r)`` (the Huber loss is majorised by the quadratic with weight
      ``psi(r_t)/r_t`` at the current residual), so the objective decreases
      monotonically, also under the kernel's convex constraints, and its fixed points
      are the constrained Huber minimisers.  Re-estimating ``s`` every step gives the
      usual "Huber with MAD scale" (Proposal 2-like) estimate; freeze it after a few
      steps for a strictly monotone loop.  5-15 steps suffice in practice.

    Example:
      >>> from jdeconv._weighted_gram import huber_weights
      >>> huber_weights(jnp.array([0.0, 1.0, -4.0]), 2.0).tolist()
      [1.0, 1.0, 0.5]
    """
    r = jnp.asarray(residual)
    if not jnp.issubdtype(r.dtype, jnp.floating):
        r = r.astype(_validation.default_float_dtype())
    d = jnp.asarray(delta, r.dtype)
    if _validation.is_concrete(d) and not bool(np.all(np.asarray(d) > 0)):
        raise ValueError(f"delta must be > 0, got {np.asarray(d)!r}.")
    a = jnp.abs(r)
    d = jnp.broadcast_to(d, a.shape) if d.ndim == 0 else d
    wt = jnp.where(a <= d, jnp.ones_like(a), d / jnp.where(a > 0, a, 1))
    return jnp.where(jnp.isfinite(a), wt, 0)


def robust_scale(residual, w=None):
    """``1.4826 * MAD``: a robust standard deviation of the residuals where ``w > 0``.

    Args:
      residual: residual image.
      w: optional weights or mask of the same shape; pixels with ``w == 0`` are ignored.

    Returns:
      Scalar scale (NaN when no pixel is used).
    """
    r = jnp.asarray(residual)
    if not jnp.issubdtype(r.dtype, jnp.floating):
        r = r.astype(_validation.default_float_dtype())
    if w is not None:
        w = jnp.asarray(w)
        _validation.check_shape_is("w", w.shape, r.shape, "(same shape as the residual).")
        r = jnp.where(w > 0, r, jnp.nan)
    med = jnp.nanmedian(r)
    return _MAD_TO_SIGMA * jnp.nanmedian(jnp.abs(r - med))


def poisson_weights(y, *, gain: float = 1.0, read_noise: float = 0.0):
    """Inverse variances of a Poisson + read-noise model, ``1 / (max(y, 0)/gain + sigma_r^2)``.

    Pixels whose variance is not positive (``y <= 0`` without read noise) get weight 0,
    as in pyDANDIA's noise model; NaN pixels get weight 0 too.  In an IRLS loop the
    variance may be re-taken from the model image instead of ``y`` (Bramich 2008).

    Args:
      y: blurred image (in counts; ``gain`` converts to electrons).
      gain: detector gain ``> 0`` (counts -> electrons).
      read_noise: read noise ``>= 0`` in counts.
    """
    gain = _validation.check_real(gain, "gain", positive=True)
    read_noise = _validation.check_real(read_noise, "read_noise", nonnegative=True)
    y = _validation.as_float_array("y (blurred image)", y, allow_nan=True)
    var = jnp.maximum(jnp.where(jnp.isnan(y), 0, y), 0) / gain + read_noise ** 2
    ok = (var > 0) & ~jnp.isnan(y)
    return jnp.where(ok, 1 / jnp.where(ok, var, 1), 0)


# ----------------------------------------------------------------------------- masks


def saturation_mask(x, y, level, kernel_shape):
    """Pixels of ``y`` to use (True) given a saturation ``level``.

    Excludes the pixels of ``y`` with ``y >= level`` (and NaN ones), and the pixels of
    ``y`` whose ``k x l`` footprint ``x[i:i+k, j:j+l]`` covers a pixel of ``x`` with
    ``x >= level`` (a valid ``k x l`` max filter of the saturation indicator of ``x``,
    i.e. its box sum being positive).

    Args:
      x: original image ``(m, n)``.
      y: blurred image ``(m-k+1, n-l+1)``.
      level: saturation level ``> 0`` (same units as the images).
      kernel_shape: ``(k, l)`` or an int.

    Returns:
      Boolean ``(m-k+1, n-l+1)`` mask, True = use.

    Example:
      >>> import numpy as np
      >>> from jdeconv._weighted_gram import saturation_mask
      >>> x = np.zeros((5, 5)); x[0, 0] = 1.0
      >>> y = np.zeros((3, 3)); y[2, 2] = 1.0
      >>> saturation_mask(x, y, 1.0, (3, 3)).astype(int).tolist()
      [[0, 1, 1], [1, 1, 1], [1, 1, 0]]
    """
    level = _validation.check_real(level, "saturation level", positive=True, example="0.98")
    x, y, (k, l) = _prepare_mask(x, y, kernel_shape)
    return _saturation_jit(x, y, jnp.asarray(level, x.dtype), (k, l))


def _prepare_mask(x, y, kernel_shape):
    kshape = _validation.as_shape(kernel_shape, "kernel_shape")
    x = _validation.as_float_array("x (original image)", x)
    y = _validation.as_float_array("y (blurred image)", y, allow_nan=True)
    x, y = _validation.common_float(x, y)
    _validation.check_kernel_fits(x.shape, kshape, "valid")
    expected = (x.shape[0] - kshape[0] + 1, x.shape[1] - kshape[1] + 1)
    _validation.check_shape_is("y (blurred image)", y.shape, expected,
                               f"(an image {tuple(x.shape)} blurred by a {kshape} kernel in "
                               "mode 'valid').")
    return x, y, kshape


@functools.partial(jax.jit, static_argnums=(3,))
def _saturation_jit(x, y, level, kernel_shape):
    k, l = kernel_shape
    hot = (x >= level).astype(jnp.int32)
    covered = lax.reduce_window(hot, jnp.int32(0), lax.max, (k, l), (1, 1), "VALID") > 0
    return (y < level) & ~covered


def nan_mask(y):
    """``~isnan(y)``: True where a pixel of ``y`` can be used (``nan="mask"``)."""
    return ~jnp.isnan(jnp.asarray(y))
