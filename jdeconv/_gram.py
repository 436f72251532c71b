"""Normal equations of 2-D kernel estimation, computed without the im2col matrix.

Forward model (``h`` of shape ``(k, l)``, image ``x`` of shape ``(m, n)``)::

    valid:     y = scipy.signal.convolve2d(x, h, "valid")            (m-k+1, n-l+1)
    full:      y = scipy.signal.convolve2d(x, h, "full")             (m+k-1, n+l-1)
    circular:  y = scipy.signal.convolve2d(x, h, "same", "wrap")     (m, n)

Written as ``y = A h`` with ``h`` raveled row-major (index ``a*l + b``), the least
squares problem ``min_h 1/2 ||A h - y||^2`` has the normal equations ``G h = b`` with
``G = A^T A``, ``b = A^T y`` and constant ``c = 1/2 ||y||^2``.  :func:`normal_equations`
returns ``(G, b, c)`` without ever forming ``A`` (which has ``#y * k * l`` entries).

Algorithms
----------
*full / circular*: ``G`` is Toeplitz in the lag, ``G[(a,b),(a',b')] = R(a-a', b-b')``
with ``R`` the zero-padded (resp. circular) autocorrelation of ``x`` (one FFT pair).

*valid*: with ``p = k-1-a``, ``q = l-1-b`` and ``M = m-k+1``, ``N = n-l+1``::

    G[(p,q),(p',q')] = sum_{u in [p, p+M), v in [q, q+N)} x[u, v] x[u+dp, v+dq],
    (dp, dq) = (p'-p, q'-q).

The window ``[p, p+M)`` is written per axis as "all rows minus the ``k-1`` border rows
``[0, p)`` and ``[p+M, m)``" (or, when ``m <= 2(k-1)``, directly as its rows).  Expanding
the product of the row and column windows gives four terms:

* the full lag-``(dp, dq)`` autocorrelation ``R`` (FFT, zero padded: exact lags);
* border rows x all columns: for each of the ``2(k-1)`` border rows ``u`` the 1-D
  cross-correlation ``sum_v x[u, v] x[u+dp, v+dq]`` (a batched 1-D correlation, or a
  row FFT in float64), combined over rows with the signed window weights;
* all rows x border columns: the same on the transposed image;
* border rows x border columns: with the column segments aligned per kernel column,
  ``sum_j Z[u, b, j] Z[u+dp, b', j]`` (``Z[u, b, j] = x[u, border column j of q(b)]``)
  is one small matrix product per pair of rows, combined over border rows as above.

The border terms are computed for the lags ``dp <= 0`` only, i.e. for ``G``'s blocks
``a <= a'``; the other blocks are their transposes (``G = U + U^T``, ``U`` those blocks
with the diagonal ones halved: exactly symmetric).  Computing both halves, as before,
took 2.2-3.0x as long at 255² with a 31 x 31 kernel.  Lag-indexed pieces are turned
into ``G`` with reshape "skews" (no gathers).  Cost
``O(mn log(mn) + k^2 l n + k l^2 m + k^2 l^3)`` flops, memory a few image-sized buffers
plus ``O(k^2 l^2)``.  Only ``R`` (and the right-hand side of large problems) go through
an FFT, whose error is a few ulps of ``sum x^2`` (float32: ~3e-7 of ``max|G|`` measured
up to 2048^2 images); the border terms are plain dot products.  Float32 inputs are
computed in float32, float64 inputs in float64 (x64 mode).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jdeconv import _conv, _geometry, _names, _schedule, _validation

__all__ = ["NormalEquations", "gram_matrix", "normal_rhs", "normal_equations",
           "quadratic_value", "gram_matvec"]

#: Geometries the normal equations are formed in ("same" is reduced to "valid").
SOLVE_MODES = ("valid", "full", "circular")

_HI = lax.Precision.HIGHEST
# Right-hand side: direct correlation while k*l*#y stays below this many multiply-adds
# (measured CPU cross-over) and, in float32, #y below _RHS_DIRECT_MAX_TERMS_F32; FFT above.
_RHS_DIRECT_MAX_MACS = 1 << 22
_RHS_DIRECT_MAX_TERMS_F32 = 1 << 12


class NormalEquations(NamedTuple):
    """Normal equations ``gram @ h = rhs`` of ``min 1/2 ||A h - y||^2``.

    ``gram`` is ``(k*l, k*l)``, ``rhs`` is ``(k*l,)``, ``half_yy = 1/2 ||y||^2``; the
    loss equals ``1/2 h^T gram h - rhs^T h + half_yy`` (see :func:`quadratic_value`).
    """

    gram: jax.Array
    rhs: jax.Array
    half_yy: jax.Array


# --------------------------------------------------------------------------- helpers


def _sum(z):
    """Two-level sum (rows, then the row sums) to keep float32 error ~ eps*(m+n)."""
    if z.ndim == 2:
        return jnp.sum(jnp.sum(z, axis=1))
    return jnp.sum(z)


# ------------------------------------------------------------------ autocorrelations


def _lag_gather(r, k: int, l: int):
    """``r[dp mod P, dq mod Q]`` for ``dp in (-k, k)``, ``dq in (-l, l)`` -> (2k-1, 2l-1)."""
    P, Q = r.shape
    ri = np.arange(-(k - 1), k) % P
    ci = np.arange(-(l - 1), l) % Q
    return jnp.take(jnp.take(r, ri, axis=0), ci, axis=1)


def _irfft2_at(zr, zi, s, row_lags, col_lags):
    """``irfft2(zr + i zi, s)[row_lags, col_lags]`` (indices mod ``s``) by a partial inverse DFT.

    Only a few lags of an image-size inverse transform are needed: with the
    cosines and sines of their angles, ``c = (C_Pᵀ A − S_Pᵀ B) / (P Q)``,
    ``A = zr C_Q − zi S_Q``, ``B = zr S_Q + zi C_Q`` (the half spectrum's
    columns counted twice but for the first and, for even ``Q``, the last).
    Real matrix products of ``(P, Q/2+1)`` by ``(Q/2+1, lags)``: at 2048² with a
    31 x 31 kernel 1.5x (autocorrelation) and 1.8x (right-hand side) faster than
    the inverse FFT, as fast or faster at every smaller size measured, and no
    image-size complex product or inverse to hold (74 MB at 2048²).

    Args:
      zr, zi: (P, Q // 2 + 1) real and imaginary parts of the half spectrum
        (``zi`` None: zero).
      s: ``(P, Q)``.
      row_lags, col_lags: integer lags (numpy, any sign).

    Returns:
      (len(row_lags), len(col_lags)) array.
    """
    P, Q = s
    dt = zr.dtype
    f = np.arange(zr.shape[-1])
    wf = jnp.asarray(np.where((f == 0) | ((Q % 2 == 0) & (f == Q // 2)), 1.0, 2.0), dt)

    def cos_sin(n, count, lags):  # angles 2 pi i lag / n (i < count), reduced exactly in integers
        ang = (2 * np.pi / n) * ((jnp.arange(count)[:, None] * jnp.asarray(lags)[None, :]) % n)
        return jnp.cos(ang.astype(dt)), jnp.sin(ang.astype(dt))

    cq, sq = cos_sin(Q, zr.shape[-1], col_lags)
    cq, sq = wf[:, None] * cq, wf[:, None] * sq
    cp, sp = cos_sin(P, P, row_lags)
    mm = functools.partial(jnp.matmul, precision=_HI)
    a, b = mm(zr, cq), mm(zr, sq)  # (P, len(col_lags))
    if zi is not None:
        a, b = a - mm(zi, sq), b + mm(zi, cq)
    return (mm(cp.T, a) - mm(sp.T, b)) / (P * Q)


# Transforms of at least this many points take their lags by the partial inverse DFT
# (_irfft2_at); smaller ones by the inverse FFT, as fast there and cheaper to compile
# (the partial DFT added ~0.3 s to the first call of a 64² estimate).
_PARTIAL_DFT_POINTS = 1 << 18


def _autocorr_full(X, s, k: int, l: int):
    """Zero-padded autocorrelation R[dp, dq] = sum x[u,v] x[u+dp, v+dq] (lags < (k, l)).

    ``X = rfft2(x, s)`` with ``s`` large enough for no wrap-around; the power
    spectrum ``|X|²`` is real (see :func:`_irfft2_at`).
    """
    if s[0] * s[1] < _PARTIAL_DFT_POINTS:
        return _lag_gather(jnp.fft.irfft2(X * jnp.conj(X), s=s), k, l)
    return _irfft2_at(X.real * X.real + X.imag * X.imag, None, s,
                      np.arange(-(k - 1), k), np.arange(-(l - 1), l))


# --------------------------------------------------------------- valid-mode machinery


class _AxisPlan(NamedTuple):
    """How the window ``[p, p+M)`` along one axis is assembled (``p = 0..k-1``).

    ``indicator(window(p)) = alpha * 1 + weights[p] @ indicator(index)``: the window is
    "everything" (``alpha``) corrected by signed border indices ``index`` (contiguous
    runs ``blocks``).  ``segments`` describe the same signed border sets as
    ``(sign, base, step, length)``: indices ``base[p] + step * i`` for ``i < length``
    (indices outside the image hit zero padding, so the ranges may overshoot).
    """

    alpha: bool
    index: np.ndarray
    blocks: tuple
    weights: np.ndarray
    segments: tuple


def _axis_plan(m: int, k: int) -> _AxisPlan:
    M = m - k + 1
    p = np.arange(k)
    if M > k - 1:
        # window = all - [0, p) - [p+M, m); border rows [0, k-1) and [M, m) are disjoint.
        index = np.concatenate([np.arange(k - 1), np.arange(M, m)])
        blocks = tuple(b for b in ((0, k - 1), (M, m)) if b[1] > b[0])
        out = (index[None, :] < p[:, None]) | (index[None, :] >= p[:, None] + M)
        weights = -out.astype(np.float64)
        segments = ()
        if k > 1:
            segments = ((-1, p - 1, -1, k - 1), (-1, p + M, 1, k - 1))
        return _AxisPlan(True, index, blocks, weights, segments)
    # image at most ~2x the kernel: take the window rows directly.
    index = np.arange(m)
    inside = (index[None, :] >= p[:, None]) & (index[None, :] < p[:, None] + M)
    return _AxisPlan(False, index, ((0, m),), inside.astype(np.float64), ((1, p, 1, M),))


def _band(q, T: int):
    """``out[u, t, ...] = q[u, u + t, ...]`` for ``t < T`` (needs ``u + t < q.shape[1]``)."""
    nu, nw = q.shape[:2]
    rest = q.shape[2:]
    f = q.reshape((nu * nw,) + rest)
    f = jnp.pad(f, [(0, nu)] + [(0, 0)] * len(rest))
    return f.reshape((nu, nw + 1) + rest)[:, :T]


def _row_blocks(a, blocks, extra: int):
    """Stack ``a[r0 : r1 + extra]`` over the (equal-length) blocks -> (B, r1-r0+extra, ...)."""
    return jnp.stack([a[r0 : r1 + extra] for r0, r1 in blocks])


# Above this many bytes of (row, lag) spectra, _border_corr forms them in chunks of
# rows. Chunks of ~2 MB stay in cache: measured 2-2.6x faster than all rows at once
# with a 31 x 31 kernel at 512² and 2048² (8 and 29 against 18 and 63 ms), no slower
# below; and the memory of large images stays bounded.
_BORDER_BYTES = 1 << 21
# Above this many bytes of row-pair products, _corner_terms takes one block of border
# rows at a time (below, one product for all: cheaper to compile, as fast to run).
_CORNER_BYTES = 1 << 23


def _padded_row_blocks(x, blocks, k: int, l: int):
    """``_row_blocks(pad(x, ((k-1, k-1), (l-1, l-1))), blocks, 2k - 2)``, padding only the strips.

    (A padded copy of the whole image, read by several consumers, was an
    image-size buffer of its own.)
    """
    m = x.shape[0]
    strips = []
    for r0, r1 in blocks:
        lo, hi = r0 - (k - 1), r1 + (k - 1)
        a, b = max(lo, 0), min(hi, m)
        strips.append(jnp.pad(x[a:b], ((a - lo, hi - b), (l - 1, l - 1))))
    return jnp.stack(strips)


def _border_corr(x, blocks, k: int, l: int, row_lags: int | None = None,
                 col_lags: int | None = None):
    """``C[u, dp+k-1, dq+l-1] = sum_v x[u, v] x[u+dp, v+dq]`` for the rows u in blocks.

    Rows outside x are zeros (x zero-padded by (k-1, l-1) on every side).  Float32
    uses a direct 1-D correlation (exact dot products); float64 a row FFT (XLA's f64
    conv is slow on CPU).  ``row_lags`` / ``col_lags``: only the first so many of
    the ``2k - 1`` / ``2l - 1`` lags (default all), e.g. ``k`` for ``dp <= 0``.

    Returns:
      ``(#rows, row_lags, col_lags)``.
    """
    n = x.shape[1]
    T = 2 * k - 1 if row_lags is None else row_lags
    S = 2 * l - 1 if col_lags is None else col_lags
    u = _row_blocks(x, blocks, 0)  # (B, nu, n)
    B, nu = u.shape[:2]
    w = _padded_row_blocks(x, blocks, k, l)[:, : nu + T - 1]  # (B, nu + T - 1, n + 2l - 2): rows u + dp
    if x.dtype == jnp.float32:

        def one(u, w):  # q[u, w, s] = sum_v u[u, v] w[w, v + s]
            q = lax.conv_general_dilated(w[:, None, :], u[:, None, :], (1,), "VALID", precision=_HI)
            return _band(jnp.swapaxes(q, 0, 1), T)[..., :S]  # (nu, T, S)

        c = jax.vmap(one)(u, w)
    else:
        nf = _conv.fast_len(n + 2 * l - 2)
        fu = jnp.fft.rfft(u, nf)
        fw = jnp.fft.rfft(w, nf)
        wi = np.arange(nu)[:, None] + np.arange(T)[None, :]

        def rows(fu_r, wi_r):  # border rows r of every block: (B, len(r), T, S)
            return jnp.fft.irfft(jnp.conj(fu_r)[:, :, None, :] * fw[:, wi_r], nf)[..., :S]

        # The spectra of every (row, lag) pair (B nu T (nf/2 + 1) complex numbers)
        # are 60 MB at 2048² with a 31 x 31 kernel (three such buffers were the
        # whole call's peak): above _BORDER_BYTES they are formed a few rows at a time.
        per_row = B * T * (nf // 2 + 1) * 2 * x.dtype.itemsize
        chunk = max(1, _BORDER_BYTES // per_row)
        if chunk >= nu:
            c = rows(fu, wi)
        else:
            c = lax.map(lambda a: rows(a[0][:, None], a[1][None]),
                        (jnp.moveaxis(fu, 1, 0), wi), batch_size=chunk)  # (nu, B, 1, T, S)
            c = jnp.moveaxis(c[:, :, 0], 0, 1)
    return c.reshape((B * nu, T, S))


def _corner_terms(x, rp: _AxisPlan, cp: _AxisPlan, k: int, l: int):
    """Border rows x border columns term, as ``V[p, dp+k-1, b, b']`` for ``dp <= 0`` (see _valid_gram).

    Columns use the "aligned segment" form: for the signed border-column segments,
    ``sum_v Ec[q, v] x[u, v] x[w, v + q' - q] = sum_j s_j Z[u, b, j] Z[w, b', j]`` with
    ``Z[u, b, j] = x[u, base(q) + step * j]``: one matrix product per pair of rows
    ``(u, w = u + dp)`` (u a border row); rows are then combined with ``rp.weights``.
    Only the lags ``dp <= 0`` (``G``'s upper blocks): rows ``w <= u``.

    Returns:
      ``(k, k, l, l)``.
    """
    qb = l - 1 - np.arange(l)
    cols = np.concatenate(
        [(l - 1) + bc[qb][:, None] + dc * np.arange(nc)[None, :] for _, bc, dc, nc in cp.segments],
        axis=1,
    )  # (l, J): Z[w, b, j] = xpad[w, cols[b, j]] (xpad: x zero-padded by (k-1, l-1))
    signs = np.concatenate([np.full(nc, float(sc)) for sc, _, _, nc in cp.segments])
    rows = _padded_row_blocks(x, rp.blocks, k, l)  # (B, nu + 2k - 2, n + 2l - 2), x zero-padded
    nu = rows.shape[1] - (2 * k - 2)
    rows = rows[:, : nu + k - 1]  # rows u + dp for dp <= 0
    B, nw = rows.shape[:2]
    rhs = rows[:, :, cols]  # (B, nw, l, J): right factor, rows u + dp
    signs = jnp.asarray(signs, x.dtype)[None, None, None, :]
    lhs = rhs[:, k - 1 : k - 1 + nu] * signs  # rows u, signed
    weights = jnp.asarray(rp.weights, x.dtype)  # (k, B nu)
    if B * nu * nw * l * l * x.dtype.itemsize <= _CORNER_BYTES:  # small: one product
        q = jnp.einsum("xubj,xwcj->xuwbc", lhs, rhs, precision=_HI)  # (B, nu, nw, l, l)
        h = jax.vmap(lambda q: _band(q, k))(q).reshape((B * nu, k, l, l))
        return jnp.einsum("pu,utbc->ptbc", weights, h, precision=_HI)
    band = jnp.asarray(np.arange(nu)[:, None, None, None] + np.arange(k)[None, None, :, None])

    # One block of border rows at a time: the products of all row pairs of both
    # blocks were 41 MB with a 31 x 31 kernel, whatever the image size. Each
    # product is taken in the layout the matrix product makes, (u, b, w, b'), and
    # the band w = u + dp gathered from it (a transposed layout cost a copy of the
    # whole product: the term alone at 255² with a 31 x 31 kernel, 41 against 29 ms
    # in one run).
    def add_block(blk, acc):
        q = jnp.einsum("ubj,wcj->ubwc", lhs[blk], rhs[blk], precision=_HI)  # (nu, l, nw, l)
        h = jnp.take_along_axis(q, band, axis=2)  # (nu, l, k, l): w = u + t
        w = lax.dynamic_slice_in_dim(weights, blk * nu, nu, axis=1)  # (k, nu)
        return acc + jnp.einsum("pu,ubtc->ptbc", w, h, precision=_HI)

    return lax.fori_loop(0, B, add_block, jnp.zeros((k, k, l, l), x.dtype))


def _skew(v, row_axis: int, lag_axis: int):
    """``w[.., a, .., a', ..] = v[.., a, .., a - a' + k - 1, ..]`` (a' replaces the lag axis).

    ``v.shape[row_axis] = k``, ``v.shape[lag_axis] = 2k - 1``.  Done with a flip and
    reshapes of the flattened (row, lag) block (no gather: XLA on CPU would materialise
    and re-read large index arrays).
    """
    v = jnp.moveaxis(v, (row_axis, lag_axis), (0, 1))
    k = v.shape[0]
    rest = v.shape[2:]
    if k > 1:
        # flip lag: w[a, a'] = v'[a, (k-1) - a + a'] at flat index a*(2k-2) + (k-1) + a'
        v = jnp.flip(v, 1).reshape((k * (2 * k - 1),) + rest)
        v = lax.slice_in_dim(v, k - 1, k - 1 + k * (2 * k - 2), axis=0)
        v = v.reshape((k, 2 * k - 2) + rest)[:, :k]
    return jnp.moveaxis(v, (0, 1), (row_axis, lag_axis))


def _lag_terms_to_gram(k: int, l: int, R=None, Vp=None, Vq=None, Vc=None):
    """Assemble ``G[(a,b),(a',b')]`` (p = k-1-a, q = l-1-b, t = a-a'+k-1, s = b-b'+l-1) as

    ``R[t, s] + Vp[p, t, s] + Vq[q, t, s] + Vc[p, t, b, b']`` (absent terms are skipped).
    """
    T, S = 2 * k - 1, 2 * l - 1
    dt = next(v.dtype for v in (R, Vp, Vq, Vc) if v is not None)
    acc = None  # indexed [a, t, b, b']
    v = None  # indexed [a, t, s]
    if R is not None:
        v = jnp.broadcast_to(R[None], (k, T, S))
    if Vp is not None:
        v = jnp.flip(Vp, 0) if v is None else v + jnp.flip(Vp, 0)
    if v is not None:
        acc = _skew(jnp.broadcast_to(v[:, :, None, :], (k, T, l, S)), 2, 3)
    if Vc is not None:
        acc = jnp.flip(Vc, 0) if acc is None else acc + jnp.flip(Vc, 0)
    g = 0
    if acc is not None:
        g = jnp.transpose(_skew(acc, 0, 1), (0, 2, 1, 3))  # [a, b, a', b']
    if Vq is not None:
        w = _skew(jnp.flip(Vq, 0), 0, 2)  # [b, t, b']
        g = g + _skew(jnp.broadcast_to(w[None], (k, l, T, l)), 0, 2)
    g = jnp.broadcast_to(jnp.asarray(g, dt), (k, l, k, l))
    return g.reshape(k * l, k * l)


def _valid_gram(x, R, k: int, l: int):
    m, n = x.shape
    dt = x.dtype
    rp, cp = _axis_plan(m, k), _axis_plan(n, l)
    has_r, has_c = len(rp.index) > 0, len(cp.index) > 0
    terms = {}
    if rp.alpha and cp.alpha:
        terms["R"] = R
    if cp.alpha and has_r:  # border rows x all columns
        rc = _border_corr(x, rp.blocks, k, l, row_lags=k)  # (u, t < k, s)
        terms["Vp"] = jnp.einsum("pu,uts->pts", jnp.asarray(rp.weights, dt), rc, precision=_HI)
    if rp.alpha and has_c:  # all rows x border columns
        cc = _border_corr(x.T, cp.blocks, l, k, col_lags=k)  # (v, s, t < k)
        terms["Vq"] = jnp.einsum("qv,vst->qts", jnp.asarray(cp.weights, dt), cc, precision=_HI)
    if has_r and cp.segments:  # border rows x border columns
        terms["Vc"] = _corner_terms(x, rp, cp, k, l)
    return _upper_blocks_to_gram(k, l, **terms)


def _upper_blocks_to_gram(k: int, l: int, R=None, Vp=None, Vq=None, Vc=None):
    """``G`` from its blocks ``a <= a'`` (``t = a - a' + k - 1 < k``, i.e. ``dp <= 0``), mirrored.

    The terms are those of :func:`_lag_terms_to_gram`, with ``Vp``, ``Vq`` and ``Vc``
    at the ``k`` lags ``t < k`` only (``R`` at all ``2k - 1``).  With ``U`` the blocks
    ``a <= a'`` (the diagonal ones halved) and zeros below, ``G = U + U^T``: exactly
    symmetric, and half of the lag terms is all the border terms need to compute.
    The blocks are summed over ``(a, t, b, b')`` at the ``k`` lags (``k^2 l^2`` numbers)
    before the lag becomes the column block ``a'``: padded to ``2k - 1`` lags
    first, the assembly took 1.8x as long (255² with a 31 x 31 kernel).
    """
    S = 2 * l - 1
    acc = None  # [a, t < k, b, b']
    v = None  # [a, t < k, s]
    if R is not None:
        v = jnp.broadcast_to(R[None, :k], (k, k, S))
    if Vp is not None:
        v = jnp.flip(Vp, 0) if v is None else v + jnp.flip(Vp, 0)
    if v is not None:
        acc = _skew(jnp.broadcast_to(v[:, :, None, :], (k, k, l, S)), 2, 3)
    if Vq is not None:
        w = jnp.transpose(_skew(jnp.flip(Vq, 0), 0, 2), (1, 0, 2))[None]  # [., t, b, b']
        acc = w if acc is None else acc + w
    if Vc is not None:
        acc = jnp.flip(Vc, 0) if acc is None else acc + jnp.flip(Vc, 0)
    acc = jnp.pad(jnp.broadcast_to(acc, (k, k, l, l)), ((0, 0), (0, k - 1), (0, 0), (0, 0)))
    u = jnp.transpose(_skew(acc, 0, 1), (0, 2, 1, 3))  # [a, b, a', b'], zero where a' < a
    scale = np.triu(np.ones((k, k)), 1) + 0.5 * np.eye(k)  # blocks a < a', halved a = a', none below
    u = (u * jnp.asarray(scale[:, None, :, None], u.dtype)).reshape(k * l, k * l)
    return u + u.T


def _toeplitz_gram(R, k: int, l: int):
    """G[(a,b),(a',b')] = R[a-a'+k-1, b-b'+l-1]."""
    return _lag_terms_to_gram(k, l, R=R)


def _symmetrize(g):
    return 0.5 * (g + g.T)  # exactly symmetric; the pieces differ only by rounding


# --------------------------------------------------------------------- public pieces


def _gram_impl(x, k: int, l: int, mode: str, X=None, s=None):
    m, n = x.shape
    if mode == "circular":
        if X is None:
            X = jnp.fft.rfft2(x)
        r = jnp.fft.irfft2(X * jnp.conj(X), s=(m, n))
        return _symmetrize(_toeplitz_gram(_lag_gather(r, k, l), k, l))
    if X is None:
        s = (_conv.fast_len(m + k - 1), _conv.fast_len(n + l - 1))
        X = jnp.fft.rfft2(x, s=s)
    R = _autocorr_full(X, s, k, l)
    if mode == "full":
        return _symmetrize(_toeplitz_gram(R, k, l))
    return _valid_gram(x, R, k, l)  # exactly symmetric


def _rhs_direct(x, y, k: int, l: int, mode: str):
    """b via a direct (exact-summation) correlation."""
    m, n = x.shape
    if mode == "full":
        # b[a, b] = sum_{u,v} x[u, v] y[u+a, v+b]
        out = lax.conv_general_dilated(
            y[None, None], x[None, None], (1, 1), "VALID", precision=_HI
        )[0, 0]
        return out.reshape(-1)
    if mode == "circular":
        x = _geometry.pad(x, (k, l), "circular")
    # b[a, b] = sum_{i,j} y[i,j] x[i+k-1-a, j+l-1-b]
    out = lax.conv_general_dilated(
        x[None, None], y[None, None], (1, 1), "VALID", precision=_HI
    )[0, 0]
    return out[::-1, ::-1].reshape(-1)


def _rhs_fft(x, y, k: int, l: int, mode: str, X=None, s=None):
    m, n = x.shape
    if mode == "circular":
        # b[a, b] = sum_u x[u] y[(u + a - ck) mod m]  (circular cross-correlation)
        if X is None:
            X = jnp.fft.rfft2(x)
        c = jnp.fft.irfft2(jnp.conj(X) * jnp.fft.rfft2(y), s=(m, n))
        ck, cl = _geometry.centre((k, l))
        ri = (np.arange(k) - ck) % m
        ci = (np.arange(l) - cl) % n
        return jnp.take(jnp.take(c, ri, axis=0), ci, axis=1).reshape(-1)
    if X is None:
        s = (_conv.fast_len(m + k - 1), _conv.fast_len(n + l - 1))
        X = jnp.fft.rfft2(x, s=s)
    Y = jnp.fft.rfft2(y, s=s)
    if s[0] * s[1] < _PARTIAL_DFT_POINTS:
        if mode == "full":
            # b[a, b] = sum_u x[u] y[u + a]; u + a <= m+k-2 < P: no wrap-around.
            return jnp.fft.irfft2(jnp.conj(X) * Y, s=s)[:k, :l].reshape(-1)
        # valid: c[p] = sum_i y[i] x[i + p], i + p <= m - 1: no wrap-around.
        return jnp.fft.irfft2(X * jnp.conj(Y), s=s)[:k, :l][::-1, ::-1].reshape(-1)
    re = X.real * Y.real + X.imag * Y.imag  # Re(X conj(Y)) = Re(conj(X) Y)
    im = X.imag * Y.real - X.real * Y.imag  # Im(X conj(Y)) = -Im(conj(X) Y)
    if mode == "full":
        # b[a, b] = sum_u x[u] y[u + a] = irfft2(conj(X) Y)[a, b]; u + a <= m+k-2 < P.
        return _irfft2_at(re, -im, s, np.arange(k), np.arange(l)).reshape(-1)
    # valid: c[p] = sum_i y[i] x[i + p] = irfft2(X conj(Y))[p], i + p <= m - 1: no wrap-around.
    return _irfft2_at(re, im, s, np.arange(k), np.arange(l))[::-1, ::-1].reshape(-1)


def _rhs_method(m, n, k, l, mode, method, dtype):
    if method != "auto":
        return method
    My, Ny = _geometry.output_shape((m, n), (k, l), mode)
    small = k * l * My * Ny <= _RHS_DIRECT_MAX_MACS
    # XLA's direct float32 correlation sums #y terms with growing error; the FFT's error
    # only grows like log(#y), so large float32 problems go through the FFT.
    if dtype == jnp.float32:
        small = small and My * Ny <= _RHS_DIRECT_MAX_TERMS_F32
    return "direct" if small else "fft"


def _validate(x, y, kernel_shape, mode, rhs_method="auto", *, need_y=True):
    """Eager checks of the public entry points; returns (x, y, (k, l), solve mode)."""
    mode = _validation.check_mode(mode)
    _validation.check_choice("rhs_method", rhs_method, _names.METHODS)
    kshape = _validation.as_shape(kernel_shape, "kernel_shape")
    x = _validation.as_float_array("x (original image)", x)
    if need_y:
        y = _validation.as_float_array("y (blurred image)", y)
        x, y = _validation.common_float(x, y)
    _validation.check_kernel_fits(x.shape, kshape, "valid" if mode == "same" else mode)
    if need_y:
        expected = _geometry.output_shape(x.shape, kshape, mode)
        _validation.check_shape_is("y (blurred image)", y.shape, expected,
                                   f"(an image {tuple(x.shape)} blurred by a {kshape} kernel in "
                                   f"mode {mode!r}).")
        if mode == "same":
            y = _geometry.same_to_valid(y, kshape)
    return x, y, kshape, _geometry.solver_mode(mode)


def fft_shape(image_shape, kernel_shape, mode: str) -> tuple[int, int]:
    """The FFT size used for an image: exact lags without wrap-around (periodic for circular)."""
    (m, n), (k, l) = image_shape, kernel_shape
    if mode == "circular":
        return (m, n)
    return (_conv.fast_len(m + k - 1), _conv.fast_len(n + l - 1))


def normal_equations_impl(x, y, kernel_shape, mode: str, rhs_method: str = "auto",
                          X=None) -> NormalEquations:
    """:func:`normal_equations` without validation, for traced code (``mode`` in SOLVE_MODES).

    ``X``: optionally the precomputed ``rfft2(x, s=fft_shape(...))`` (reused when one
    original serves many blurred images).
    """
    k, l = kernel_shape
    m, n = x.shape
    s = fft_shape((m, n), (k, l), mode)
    if X is None:
        X = jnp.fft.rfft2(x, s=s)
    gram = _gram_impl(x, k, l, mode, X=X, s=s)
    # The right-hand side after the normal matrix: left free, XLA interleaves the two,
    # and the image-size spectra and products of both are alive at once (with the
    # full inverse FFTs this was 140 MB at 2048²).
    if y.size >= _schedule.LARGE_PIXELS:
        y = _schedule.after(y, gram)
    rhs = rhs_impl(x, y, kernel_shape, mode, rhs_method, X=X)
    return NormalEquations(gram, rhs, 0.5 * _sum(y * y))


def rhs_impl(x, y, kernel_shape, mode: str, rhs_method: str = "auto", X=None):
    """``b = Aᵀ y`` without validation (``mode`` in SOLVE_MODES)."""
    k, l = kernel_shape
    m, n = x.shape
    if _rhs_method(m, n, k, l, mode, rhs_method, x.dtype) == "direct":
        return _rhs_direct(x, y, k, l, mode)
    return _rhs_fft(x, y, k, l, mode, X=X, s=fft_shape((m, n), (k, l), mode))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _gram_jit(x, kernel_shape, mode):
    return _gram_impl(x, *kernel_shape, mode)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _rhs_jit(x, y, kernel_shape, mode, rhs_method):
    return rhs_impl(x, y, kernel_shape, mode, rhs_method)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _ne_jit(x, y, kernel_shape, mode, rhs_method):
    return normal_equations_impl(x, y, kernel_shape, mode, rhs_method)


def gram_matrix(x, kernel_shape, mode: str = "valid"):
    """``G = AᵀA`` of shape ``(k*l, k*l)`` (row-major kernel raveling).

    Example:
      >>> import numpy as np
      >>> from jdeconv._gram import gram_matrix
      >>> gram_matrix(np.random.default_rng(0).random((8, 8)), (3, 3)).shape
      (9, 9)
    """
    x, _, kshape, mode = _validate(x, None, kernel_shape, mode, need_y=False)
    return _gram_jit(x, kshape, mode)


def normal_rhs(x, y, kernel_shape, mode: str = "valid", *, rhs_method: str = "auto"):
    """``b = Aᵀy`` of shape ``(k*l,)``.

    ``rhs_method``: 'direct' (exact-summation correlation, cost ``k*l*#y``), 'fft', or
    'auto' (direct below ``2**22`` multiply-adds).
    """
    x, y, kshape, mode = _validate(x, y, kernel_shape, mode, rhs_method)
    return _rhs_jit(x, y, kshape, mode, rhs_method)


def normal_equations(x, y, kernel_shape, mode: str = "valid", *,
                     rhs_method: str = "auto") -> NormalEquations:
    """``(G, b, c)`` of ``min_h ½||A h − y||²`` for ``y = conv2d(x, h, mode)``.

    Formed with FFTs and thin border corrections, never with the im2col matrix
    ``A``. Differentiable (``jax.grad`` flows to ``x`` and ``y``).

    Args:
      x: original image ``(m, n)``.
      y: blurred image, shape ``conv2d(x, h, mode).shape``; for ``"same"`` only
        its valid part is used (the pixels the valid model explains).
      kernel_shape: ``(k, l)`` or an int.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      rhs_method: ``"auto"``, ``"direct"`` or ``"fft"`` for ``b``.

    Returns:
      :class:`NormalEquations` in the inputs' floating dtype.

    Example:
      >>> import numpy as np, jdeconv
      >>> x = np.random.default_rng(0).random((16, 16))
      >>> h = np.full((3, 3), 1 / 9)
      >>> ne = jdeconv.normal_equations(x, jdeconv.conv2d(x, h), (3, 3))
      >>> bool(np.allclose(np.linalg.solve(ne.gram, ne.rhs), h.ravel()))
      True
    """
    x, y, kshape, mode = _validate(x, y, kernel_shape, mode, rhs_method)
    return _ne_jit(x, y, kshape, mode, rhs_method)


def quadratic_value(ne: NormalEquations, h):
    """``1/2 h^T G h - b^T h + c`` (= ``1/2 ||A h - y||^2``); ``h`` is (k, l) or (k*l,)."""
    h = jnp.reshape(h, (-1,))
    gh = jnp.matmul(ne.gram, h, precision=_HI)
    return 0.5 * jnp.dot(h, gh, precision=_HI) - jnp.dot(ne.rhs, h, precision=_HI) + ne.half_yy


def gram_matvec(x, h, mode: str = "valid"):
    """``AᵀA h`` by two direct correlations (no G); ``h`` is (k, l), result (k, l)."""
    x, _, kshape, mode = _validate(x, None, jnp.shape(h), mode, need_y=False)
    h = _validation.as_float_array("h (kernel)", h)
    x, h = _validation.common_float(x, h)
    return _matvec_jit(x, h, mode)


@functools.partial(jax.jit, static_argnums=(2,))
def _matvec_jit(x, h, mode):
    k, l = h.shape
    xp = _geometry.pad(x, (k, l), mode)
    # A h = valid convolution of the (padded) image with h.
    ah = lax.conv_general_dilated(
        xp[None, None], h[::-1, ::-1][None, None], (1, 1), "VALID", precision=_HI
    )[0, 0]
    return _rhs_direct(xp, ah, k, l, "valid").reshape(k, l)
