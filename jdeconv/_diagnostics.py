"""Cheap checks of a finished estimate, and the warnings they raise.

Every estimate carries a noise level and a fit statistic (residual RMS over
the noise level: about 1 when the model explains the data up to noise). This
module turns them, and a few properties of the inputs and of the kernel, into
one-line warnings that name the likely causes:

* a fit statistic well above 1: the images are swapped or unrelated,
  misregistered, the exposure or tone curve differs, or the kernel box is too
  small;
* kernel mass on the border of its box: the box cuts the kernel;
* float input outside [0, 1] that looks like 0–255 data;
* an all-zero or constant blurred image;
* a blurred image sharper than its original (:func:`sharpening_ratio`): a
  nonnegative kernel cannot sharpen, so the images are probably swapped. The
  fit statistic often misses a swap: the noise level measured on the
  residual absorbs it.

The warnings are :class:`FitWarning` (a ``UserWarning``), so they can be
filtered with the ``warnings`` module; the ones that say the box cuts the
kernel (mass on its border, or a kernel that fills the generous box of
``kernel_shape="auto"``) are the subclass :class:`KernelBoxWarning`, so they
can be filtered by class, never by their wording.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jdeconv import _geometry

#: A converged fit whose statistic is above this does not explain the data.
FIT_STATISTIC_WARN = 3.0
#: Fraction of the kernel's mass on the outer ring of its box that gets a warning.
BORDER_MASS_WARN = 0.02
#: Border taps count towards the warning only by what exceeds this many standard errors.
BORDER_SIGNIFICANCE = 3.0
#: A blurred image this much sharper than its original (:func:`sharpening_ratio`) gets a warning.
#: Measured on 8-bit pairs (shapes, camera, coins, fractal, noise images; Gaussian, motion and
#: two-tap kernels; noise up to 0.03): good pairs 0.16-0.99, swapped Gaussian or motion pairs
#: 1.6-6.5 (a swapped two-tap blur, nearly invertible, 1.02-1.3).
SHARPENING_WARN = 1.25


class FitWarning(UserWarning):
    """A finished estimate that is probably wrong, or inputs that look wrong."""


class KernelBoxWarning(FitWarning):
    """The kernel's box probably cuts the kernel: mass on its border, or a filled generous box.

    A :class:`FitWarning`; its own class lets a caller that expects mass on the
    border (a box chosen by ``kernel_shape="auto"`` ends where the support does)
    drop these warnings and keep the others.
    """


class BoxMessage(str):
    """The text of a :class:`KernelBoxWarning` (a plain ``str`` is emitted as a FitWarning)."""

    __slots__ = ()
    category = KernelBoxWarning


def border_mass(kernel) -> jnp.ndarray:
    """Fraction of ``|h|``'s mass on the outer ring of its box (one tap wide).

    Args:
      kernel: (..., k, l).

    Returns:
      (...,) fractions in [0, 1] (0 for kernels of side 1 or 2 — all border —
      is not meaningful; such boxes return 1).

    Example:
      >>> import jax.numpy as jnp
      >>> float(border_mass(jnp.pad(jnp.ones((3, 3)), 1)))
      0.0
    """
    return _border_mass(jnp.asarray(kernel))


@jax.jit
def _border_mass(kernel):  # one program per shape (eager calls compiled every op)
    a = jnp.abs(kernel)
    inner = a[..., 1:-1, 1:-1].sum(axis=(-2, -1))
    total = a.sum(axis=(-2, -1))
    return jnp.where(total > 0, 1 - inner / jnp.where(total > 0, total, 1), 0.0)


def significant_border_mass(kernel, standard_errors, z: float = BORDER_SIGNIFICANCE
                            ) -> np.ndarray:
    """Fraction of ``|h|``'s mass on its border that the noise cannot explain.

    The larger of two excesses over what noise gives, both about zero for the
    border taps of a well-boxed but noisy (or signed) kernel:

    * per tap, what a tap's magnitude exceeds ``z`` of its standard errors by,
      ``sum max(|h_i| - z se_i, 0)`` (noise: about ``8e-4 se`` a tap at ``z = 3``);
      strong border taps of a cut kernel keep nearly all of their mass;
    * jointly, ``sum |h_i| - E - z D`` with the mean ``E = sqrt(2/pi) sum se_i``
      and spread ``D = sqrt(1 - 2/pi) sqrt(sum se_i^2)`` of the border's noise
      magnitudes: a weak but coherent border (each tap within a few standard
      errors) of a kernel cut by the box.

    Args:
      kernel: (..., k, l).
      standard_errors: (..., k, l) per-tap standard errors (``stats["standard_errors"]``
        of an exact estimate).
      z: how many standard errors a tap's magnitude must exceed.

    Returns:
      (...,) fractions in [0, 1] (host NumPy).

    Example:
      >>> import numpy as np
      >>> h = np.pad(np.full((3, 3), 0.1), 1); h[0, 0] = 0.02   # 2 % noise on the border
      >>> float(significant_border_mass(h, np.full((5, 5), 0.01))) < 0.001
      True
    """
    a = np.abs(np.asarray(kernel, np.float64))
    se = np.broadcast_to(np.asarray(standard_errors, np.float64), a.shape)
    ring = np.ones(a.shape[-2:], bool)
    ring[1:-1, 1:-1] = False
    a_b, se_b = a[..., ring], se[..., ring]
    per_tap = np.maximum(a_b - z * se_b, 0.0).sum(axis=-1)
    joint = (a_b.sum(axis=-1) - math.sqrt(2 / math.pi) * se_b.sum(axis=-1)
             - z * math.sqrt(1 - 2 / math.pi) * np.sqrt((se_b ** 2).sum(axis=-1)))
    total = a.sum(axis=(-2, -1))
    signal = np.maximum(np.maximum(per_tap, joint), 0.0)
    return np.where(total > 0, signal / np.where(total > 0, total, 1), 0.0)


def centroid_offset(kernel) -> jnp.ndarray:
    """Offset ``(d_row, d_col)`` of the kernel's centroid from its box's centre tap.

    The centre tap is ``((k-1)//2, (l-1)//2)`` (the ``"same"`` geometry's zero shift).

    Example:
      >>> import jax.numpy as jnp
      >>> h = jnp.zeros((5, 5)).at[1, 3].set(1.0)
      >>> centroid_offset(h).tolist()
      [-1.0, 1.0]
    """
    return _centroid_offset(jnp.asarray(kernel))


@jax.jit
def _centroid_offset(kernel):
    h = jnp.abs(kernel)
    k, l = h.shape[-2:]
    total = h.sum(axis=(-2, -1))
    lead = (1,) * (h.ndim - 2)  # broadcast over a batch explicitly (rank promotion is strict)
    rows = (h.sum(axis=-1) * jnp.arange(k).reshape(lead + (k,))).sum(axis=-1) / total
    cols = (h.sum(axis=-2) * jnp.arange(l).reshape(lead + (l,))).sum(axis=-1) / total
    return jnp.stack([rows - (k - 1) // 2, cols - (l - 1) // 2], axis=-1)


def _looks_like_8bit_scale(a) -> bool:
    host = np.asarray(a)
    if host.dtype.kind != "f":
        return False
    probe = host.ravel()[:4096]  # real float images fail here, without a pass over the image
    probe = probe[np.isfinite(probe)]
    if probe.size and not np.allclose(probe, np.round(probe)):
        return False
    finite = host[np.isfinite(host)]
    if finite.size == 0 or finite.max() <= 1.5:
        return False
    return finite.max() <= 65535 and np.allclose(finite, np.round(finite))


def input_messages(x, y) -> list[str]:
    """Warnings about the inputs alone (cheap, host-side)."""
    out = []
    yh = np.asarray(y)
    finite = yh if np.isfinite(yh).all() else yh[np.isfinite(yh)]  # no copy when all finite
    if finite.size and np.ptp(finite) == 0:
        what = "all zero" if finite.max() == 0 else "constant"
        out.append(f"the blurred image is {what}: it carries no information about the kernel "
                   "(check that the right file was read and that the exposure is not zero).")
    for name, a in (("original", x), ("blurred", y)):
        if _looks_like_8bit_scale(a):
            out.append(f"the {name} image is float data with whole-number values up to "
                       f"{float(np.nanmax(np.asarray(a))):g}: it looks like 0-255 (or 0-65535) "
                       "data; divide by 255 (or 65535) so both images are in [0, 1].")
    return out


def _sharpness(a, used, noise_sigma: float = 0.0) -> float:
    """Mean squared neighbour difference over variance, both less ``noise_sigma``'s share."""
    return _sharpness_from(_sharpness_terms(a, used), noise_sigma)


def _sharpness_from(terms, noise_sigma: float = 0.0) -> float:
    """:func:`_sharpness` from the noise-free ``terms`` of :func:`_sharpness_terms`."""
    if terms is None:
        return math.nan
    d, v = terms
    s2 = float(noise_sigma) ** 2 if math.isfinite(float(noise_sigma)) else 0.0
    d, v = d - 4.0 * s2, v - s2  # white noise adds 2σ² per direction and σ² to the variance
    return d / v if v > 0 and d > 0 else math.nan


def _sharpness_terms(a, used):
    """``(d, v)``: the mean squared neighbour differences (rows plus columns) and the variance.

    None where there are no neighbouring pairs of used pixels, or where the sums
    overflow (values near the float64 limit).
    """
    with np.errstate(all="ignore"):  # taken before the estimate says whether it is finite
        terms = _sharpness_sums(a, used)
    return terms if terms is None or all(math.isfinite(t) for t in terms) else None


def _sharpness_sums(a, used):
    a = np.asarray(a, np.float64)
    ok = np.isfinite(a) if used is None else (np.asarray(used, bool) & np.isfinite(a))
    if ok.all():  # every pixel used: no masked copies (a few ms at 512²)
        if min(a.shape) < 2:
            return None
        # One centred copy, and the squared differences from products of shifted views:
        # sum (c[i+1] - c[i])² = sum c[1:]² + sum c[:-1]² - 2 sum c[1:] c[:-1]. (Each
        # image-size temporary is fresh memory whose pages fault in: the differences as
        # arrays cost 2.5 ms at 512², this 0.6 ms.) einsum, not np.dot: NumPy's BLAS
        # threads busy-wait after a call, and slowed the next estimate by 5 ms at 512².
        c = a - a.mean()
        sq = np.einsum("ij,ij->i", c, c)  # row sums of squares
        cs = np.einsum("ij,ij->j", c, c)  # column sums of squares
        total = float(sq.sum())
        d = ((2 * total - sq[0] - sq[-1] - 2 * np.einsum("ij,ij->", c[1:], c[:-1]))
             / (c.size - c.shape[1])
             + (2 * total - cs[0] - cs[-1] - 2 * np.einsum("ij,ij->", c[:, 1:], c[:, :-1]))
             / (c.size - c.shape[0]))
        return float(d), total / c.size
    a = np.where(ok, a, 0.0)
    d = 0.0
    for diff, both in ((a[1:] - a[:-1], ok[1:] & ok[:-1]),
                       (a[:, 1:] - a[:, :-1], ok[:, 1:] & ok[:, :-1])):
        n = int(both.sum())
        if n == 0:
            return None
        d += float(np.sum(np.square(diff[both]), dtype=np.float64)) / n
    n = int(ok.sum())
    return d, (float(np.var(a[ok], dtype=np.float64)) if n > 1 else 0.0)


def sharpening_ratio(x, y, noise_sigma: float = 0.0, used=None, *, kernel_shape=None,
                     mode: str | None = None) -> float:
    """How much sharper the blurred image is than the original: above 1 it was sharpened.

    Sharpness is the mean squared difference of neighbouring pixels over the
    variance (invariant to a gain and a background), on the blurred image less
    the share of white noise of level ``noise_sigma``. A nonnegative kernel
    lowers it on the pixels whose footprint lies inside the original, so a
    ratio well above 1 means the images are swapped (or the blurred image holds
    outliers). The border of a ``"same"`` or ``"full"`` blur made with zero
    padding (synthetic data) is a dark frame that can make a flat image look
    several times sharper: give ``kernel_shape`` and ``mode`` to leave it out.

    Args:
      x: original, (m, n).
      y: blurred image (any geometry).
      noise_sigma: noise level of ``y``.
      used: optional boolean image of ``y``'s shape, True = use (NaN is never used).
      kernel_shape, mode: optional (k, l) and geometry of ``y``; with both, only
        ``y``'s pixels whose footprint lies inside ``x`` are compared.

    Returns:
      The ratio, NaN where either image has no contrast.

    Example:
      >>> import jdeconv
      >>> x = jdeconv.data.fractal_image((64, 64), seed=0)
      >>> y = jdeconv.conv2d(x, jdeconv.data.gaussian_kernel(5, 1.0))
      >>> sharpening_ratio(x, y) < 1 < sharpening_ratio(y, x)
      True
    """
    return sharpening_ratio_from(sharpening_terms(x, y, used, kernel_shape=kernel_shape,
                                                  mode=mode), noise_sigma)


def sharpening_terms(x, y, used=None, *, kernel_shape=None, mode: str | None = None,
                     original_sharpness: float | None = None):
    """The part of :func:`sharpening_ratio` that needs no noise level, or None.

    The image sums, to be taken while the estimate that finds the noise level
    runs; :func:`sharpening_ratio_from` finishes the ratio. Arguments as for
    :func:`sharpening_ratio`; ``original_sharpness``, if given, is ``x``'s
    (the first element of the terms of an earlier pair with the same original).
    """
    if np.ndim(x) != 2 or np.ndim(y) != 2:
        return None
    if kernel_shape is not None and mode in ("same", "full"):
        (m, n), (k, l) = np.shape(x), tuple(kernel_shape)
        rows, cols = (_geometry.valid_window((m, n), (k, l), mode) if mode == "same"
                      else (slice(k - 1, m), slice(l - 1, n)))
        if m >= k and n >= l and np.shape(y) == _geometry.output_shape((m, n), (k, l), mode):
            y = np.asarray(y)[rows, cols]
            used = None if used is None else np.asarray(used, bool)[rows, cols]
    sx = _sharpness(x, None) if original_sharpness is None else original_sharpness
    return sx, _sharpness_terms(y, used)


def sharpening_ratio_from(terms, noise_sigma: float = 0.0) -> float:
    """:func:`sharpening_ratio` from :func:`sharpening_terms` and the blurred image's noise."""
    if terms is None:
        return math.nan
    sx, terms_y = terms
    sy = _sharpness_from(terms_y, noise_sigma)
    return sy / sx if math.isfinite(sx) and sx > 0 and math.isfinite(sy) else math.nan


def sharpening_applies(prior: str, loss: str) -> bool:
    """Whether :func:`sharpening_ratio` can judge an estimate: nonnegative kernels, Gaussian noise.

    A kernel with negative taps can sharpen; with ``loss="poisson"`` the noise
    level is not a Gaussian σ.
    """
    return prior in ("simplex", "nonneg") and loss != "poisson"


def poisson_scale_messages(y, loss: str, used=None) -> list[str]:
    """The warning for ``loss="poisson"`` on data that look like intensities, not counts.

    Counts reach well above 1 somewhere; a blurred image whose used pixels all lie
    in [0, 1] and are not whole numbers is scaled intensity data, for which the
    Poisson likelihood treats every pixel as less than one photon (a wrong noise
    model, and a slow, poorly determined solve).

    Example:
      >>> import numpy as np
      >>> len(poisson_scale_messages(np.full((4, 4), 0.5), "poisson"))
      1
      >>> poisson_scale_messages(np.full((4, 4), 40.0), "poisson")
      []
    """
    if loss != "poisson":
        return []
    v = np.asarray(y, np.float64)
    if used is not None and np.shape(used) == v.shape:
        v = v[np.asarray(used, bool)]
    v = v[np.isfinite(v)]
    if v.size == 0 or v.max() > 1.0 or v.max() <= 0 or np.all(v == np.round(v)):
        return []
    return [f"loss='poisson' models photon counts, but the blurred image's maximum is "
            f"{v.max():.3g}: these look like intensities scaled to [0, 1], which the Poisson "
            "likelihood reads as less than one photon per pixel (a wrong noise model and a "
            "slow, poorly determined solve). Multiply both images by the photons per unit "
            "intensity (the detector gain), or use loss='l2'."]


def sharpening_message(ratio: float) -> list[str]:
    """The warning for a :func:`sharpening_ratio` above :data:`SHARPENING_WARN` (else none)."""
    if not (math.isfinite(ratio) and ratio > SHARPENING_WARN):
        return []
    return [f"the blurred image is sharper than the original (sharpness ratio {ratio:.2g}, "
            "noise removed): a blur cannot sharpen, so the images are probably swapped; if "
            "not, the blurred image holds outliers (hot pixels, cosmic rays): mask them."]


def estimate_messages(est, *, given_shape: bool = True, standard_errors=None) -> list[str]:
    """Warnings about one finished estimate (``est`` unbatched and concrete).

    ``standard_errors`` (k, l), where known, make the border check noise-aware:
    only border mass above :data:`BORDER_SIGNIFICANCE` standard errors counts
    (:func:`significant_border_mass`).
    """
    out = []
    if int(np.asarray(est.result)) != 0:
        return out  # the result code already says what went wrong
    fit = float(np.asarray(est.fit_statistic))
    if math.isfinite(fit) and fit > FIT_STATISTIC_WARN:
        out.append(
            f"fit statistic {fit:.3g} is well above 1: the model does not explain the blurred "
            "image. Likely causes: the images are swapped or unrelated, misregistered, the "
            "exposure or tone curve differs (try gain=True, background='constant'), or the "
            "kernel box is too small (try a larger kernel_shape or kernel_shape='auto').")
    k, l = est.kernel_shape
    if not given_shape:  # kernel_shape="auto": the box was cut at the support's edge on purpose
        outside = float(np.asarray(est.stats.get("mass_outside_box", 0.0)))
        generous = tuple(int(v) for v in np.asarray(est.stats.get("generous_shape", (k, l))))
        if outside > BORDER_MASS_WARN or (k, l) == generous:
            out.append(BoxMessage(
                f"the kernel fills the whole generous box {generous[0]}x{generous[1]} "
                f"({100 * outside:.1f} % of its mass outside the chosen box): give a larger "
                f"max_kernel_shape, e.g. ({2 * generous[0] + 1}, {2 * generous[1] + 1})."))
    elif min(k, l) >= 3:
        frac = float(np.asarray(border_mass(est.kernel)))
        signal = frac if standard_errors is None else float(
            significant_border_mass(est.kernel, standard_errors))
        if frac > BORDER_MASS_WARN and signal > BORDER_MASS_WARN:
            pad = max(2, int(round(0.25 * max(k, l))))
            beyond = ("" if standard_errors is None else
                      f" ({100 * signal:.1f} % beyond {BORDER_SIGNIFICANCE:g} standard errors "
                      "of the noise)")
            out.append(BoxMessage(
                f"{100 * frac:.1f} % of the kernel's mass lies on the border of its {k}x{l} "
                f"box{beyond}: "
                f"the box probably cuts the kernel; try kernel_shape=({k + 2 * pad}, "
                f"{l + 2 * pad})" + (" or kernel_shape='auto'." if given_shape else ".")))
    return out


def batch_messages(est, standard_errors=None) -> list[str]:
    """Warnings about a batch of estimates: how many pairs fit badly or touch the border.

    ``standard_errors`` (B, k, l), where known, make the border check
    noise-aware as in :func:`estimate_messages`.
    """
    ok = np.asarray(est.result) == 0
    fit = np.asarray(est.fit_statistic)
    bad = ok & np.isfinite(fit) & (fit > FIT_STATISTIC_WARN)
    out = []
    if bad.any():
        idx = np.flatnonzero(bad)
        out.append(f"{bad.sum()} of {bad.size} pairs have a fit statistic above "
                   f"{FIT_STATISTIC_WARN:g} (pairs {', '.join(map(str, idx[:8]))}"
                   f"{', ...' if idx.size > 8 else ''}): the model does not explain them "
                   "(swapped or unrelated images, misregistration, exposure or tone changes, "
                   "or a kernel box that is too small).")
    k, l = est.kernel_shape
    if min(k, l) >= 3:
        frac = np.asarray(border_mass(est.kernel))
        cut = ok & (frac > BORDER_MASS_WARN)
        if standard_errors is not None:
            cut &= significant_border_mass(est.kernel, standard_errors) > BORDER_MASS_WARN
        if cut.any():
            out.append(BoxMessage(f"{cut.sum()} of {cut.size} kernels have more than "
                                   f"{100 * BORDER_MASS_WARN:g} % of their mass on the border "
                                   f"of the {k}x{l} box: try a larger kernel_shape."))
    return out


def warn(messages, stacklevel: int = 3) -> None:
    """Emits each message as a :class:`FitWarning` (a box message: :class:`KernelBoxWarning`)."""
    for m in messages:
        warnings.warn(str(m), getattr(m, "category", FitWarning), stacklevel=stacklevel)
