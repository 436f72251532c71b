"""``kernel_shape="auto"``: the kernel's box from the data.

Real kernels (camera shake, defocus, telescopes) are 15–40 px and sit off-centre
in the box a user guesses, so a box sized to the kernel cuts it. In the
``"same"`` and ``"circular"`` geometries the box is free, and this module
chooses it:

1. estimate on a generous box (``max_kernel_shape``; default the largest odd
   square up to 51 that fits a third of the image and 4096 taps);
2. find the support: the taps above a noise-aware threshold, ``max(4 · RMS of
   the taps on the generous box's outer ring, floor · max h)`` (the outer ring
   holds no kernel when the generous box is large enough, so its taps measure
   the estimate's noise; the floor, :func:`relative_floor`, is 1e-3 at 8-bit
   noise and lower on cleaner data), keeping only the group of taps that holds
   the largest one and any other group with :data:`COMPONENT_MIN_MASS` of the
   mass (so a lone noise tap far from the kernel does not widen the box);
3. return the estimate in the smallest box that holds the support and is
   centred on the geometry's zero shift (tap ``((k-1)//2, (l-1)//2)``), solved
   again in that box.

In ``"valid"`` and ``"full"`` geometry the box is fixed by the two images'
shapes (``k = m − M + 1`` and ``k = M − m + 1``); ``"auto"`` reads it off.

The result's ``stats`` report ``kernel_box``, ``generous_shape``,
``centroid_offset`` (of the kernel's centroid from the box centre),
``border_mass`` (fraction of the mass on the box border), and a
criterion-against-size curve: for odd sizes up to the generous box, the
residual RMS over the noise level (on the pixels every size shares) of the
generous-box kernel cropped to that size — it falls to about 1 once the box
holds the kernel.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jdeconv import _conv, _geometry, _validation

DEFAULT_MAX_SIDE = 51


def _odd_at_most(v: int) -> int:
    v = max(int(v), 1)
    return v if v % 2 else v - 1


def default_max_shape(image_shape) -> tuple[int, int]:
    """The generous box: the largest odd square <= 51 within a third of the image, <= 4096 taps."""
    m, n = image_shape
    side = _odd_at_most(min(DEFAULT_MAX_SIDE, m // 3, n // 3, 63))
    return (max(side, 1), max(side, 1))


def fixed_shape(image_shape, y_shape, mode: str) -> tuple[int, int]:
    """The kernel box the shapes imply in ``"valid"`` / ``"full"`` geometry."""
    (m, n), (M, N) = tuple(image_shape)[-2:], tuple(y_shape)[-2:]
    if mode == "valid":
        k, l = m - M + 1, n - N + 1
    else:
        k, l = M - m + 1, N - n + 1
    if k < 1 or l < 1:
        raise ValueError(f"the blurred image {(M, N)} does not fit an original {(m, n)} in mode "
                         f"{mode!r}; check the mode and that the images belong together.")
    return (k, l)


#: A group of above-threshold taps apart from the kernel's main one counts as kernel when it
#: holds at least this fraction of the kernel's mass (a broken motion path does; the odd noise
#: tap at the edge of the generous box, ~1e-5 of the mass, does not).
COMPONENT_MIN_MASS = 0.01


def _components(above: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels of the groups of ``above`` taps: taps at most 2 apart (a gap of one tap) join."""
    K, L = above.shape
    labels = np.zeros((K, L), np.int32)
    count = 0
    reach = [(dr, dc) for dr in range(-2, 3) for dc in range(-2, 3) if dr or dc]
    for start in zip(*np.nonzero(above)):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        stack = [start]
        while stack:
            r, c = stack.pop()
            for dr, dc in reach:
                a, b = r + dr, c + dc
                if 0 <= a < K and 0 <= b < L and above[a, b] and not labels[a, b]:
                    labels[a, b] = count
                    stack.append((a, b))
    return labels, count


def _kernel_components(h: np.ndarray, above: np.ndarray) -> np.ndarray:
    """The ``above`` taps that belong to the kernel: its main group and any heavy other group."""
    labels, count = _components(above)
    if count <= 1:
        return above
    total = float(h.sum())
    mass = np.bincount(labels.ravel(), weights=h.ravel(), minlength=count + 1)
    main = labels.ravel()[int(np.argmax(np.where(above, h, -1.0)))]
    keep = (mass >= COMPONENT_MIN_MASS * total)
    keep[main] = True
    keep[0] = False
    return keep[labels]


#: The noise level of 8-bit quantisation of an image spanning [0, 1]: 2⁻⁸/√12.
_EIGHT_BIT_SIGMA = 2.0 ** -8 / np.sqrt(12.0)


def relative_floor(noise_sigma: float, y) -> float:
    """The support threshold's floor relative to the largest tap, from the data's noise level.

    1e-3 at (or above) the noise of 8-bit data, proportionally lower on cleaner
    data (16-bit: about 4e-6), and at least 1e-8: on clean data the estimate's
    taps are exact to far below 1e-3 of the peak, and a Gaussian's tail there
    is kernel, not noise.

    Example:
      >>> import numpy as np
      >>> y = np.linspace(0.0, 1.0, 100)
      >>> relative_floor(0.01, y), relative_floor(0.0, y)
      (0.001, 1e-08)
    """
    finite = np.asarray(y)[np.isfinite(np.asarray(y))]
    span = float(np.ptp(finite)) if finite.size else 0.0
    if not (np.isfinite(noise_sigma) and span > 0):
        return 1e-3
    return float(np.clip(1e-3 * noise_sigma / (span * _EIGHT_BIT_SIGMA), 1e-8, 1e-3))


def support_box(kernel, *, ring_factor: float = 4.0, rel_floor: float = 1e-3, tau=None):
    """The centred box holding a kernel's support, and the threshold used.

    Args:
      kernel: (K, L) estimate on a generous box.
      ring_factor: threshold in units of the RMS of the outer-ring taps.
      rel_floor: threshold floor relative to the largest tap.
      tau: an absolute threshold to use instead.

    Returns:
      ``((k, l), threshold)``: odd sides of the smallest box centred on tap
      ``((K-1)//2, (L-1)//2)`` that holds the kernel's taps above the
      threshold: those of the group holding the largest tap, and of any other
      group with at least :data:`COMPONENT_MIN_MASS` of the mass (taps at most two
      apart, a gap of one tap, form a group). A lone tap that noise put above the
      threshold far from the kernel does not widen the box.

    Example:
      >>> import numpy as np
      >>> h = np.zeros((11, 11)); h[5, 5] = 0.5; h[5, 7] = 0.5
      >>> support_box(h)[0]
      (1, 5)
    """
    h = np.abs(np.asarray(kernel, np.float64))
    K, L = h.shape
    ring = np.concatenate([h[0], h[-1], h[1:-1, 0], h[1:-1, -1]]) if min(K, L) >= 3 else h.ravel()
    if tau is None:
        tau = max(ring_factor * float(np.sqrt(np.mean(ring ** 2))), rel_floor * float(h.max()))
    rows, cols = np.nonzero(_kernel_components(h, h > tau))
    if rows.size == 0:
        return (1, 1), tau
    ck, cl = (K - 1) // 2, (L - 1) // 2
    hr = max(ck - rows.min(), rows.max() - ck)
    hc = max(cl - cols.min(), cols.max() - cl)
    return (min(2 * int(hr) + 1, K), min(2 * int(hc) + 1, L)), tau


def centred_crop(kernel, shape):
    """The ``shape`` box of a kernel centred on its centre tap (odd or even sides)."""
    K, L = kernel.shape[-2:]
    k, l = shape
    ck, cl = (K - 1) // 2, (L - 1) // 2
    r0, c0 = ck - (k - 1) // 2, cl - (l - 1) // 2
    return kernel[..., r0:r0 + k, c0:c0 + l]


def size_criterion(x, y, kernel, mode: str, sizes, noise_sigma):
    """Residual RMS / σ of ``kernel`` cropped to each size, on the pixels all sizes share.

    Every cropped kernel is rescaled to the generous kernel's sum. The crops are
    evaluated as the generous kernel masked outside each centred box (the same
    convolution, one shape), so all sizes run in one compiled program.

    Args:
      x: original, (m, n). y: blurred image in ``mode`` ("same" or "circular").
      kernel: (K, L) generous-box estimate.
      sizes: odd sides to evaluate (square boxes, clipped to the kernel's box).
      noise_sigma: the noise level.

    Returns:
      (len(sizes),) criterion values.
    """
    K, L = kernel.shape
    masks = np.zeros((len(sizes), K, L))
    for i, s in enumerate(sizes):
        centred_crop(masks[i], (min(s, K), min(s, L)))[...] = 1.0
    rms = _criterion_rms(jnp.asarray(x), jnp.asarray(y), jnp.asarray(kernel),
                         jnp.asarray(masks, jnp.asarray(kernel).dtype), mode)
    return np.asarray(rms) / max(float(noise_sigma), 1e-300)


@functools.partial(jax.jit, static_argnames="mode")
def _criterion_rms(x, y, kernel, masks, mode):
    rows, cols = _geometry.valid_window(x.shape, kernel.shape, "same")
    padded = _geometry.pad(x, kernel.shape, mode)
    total = jnp.sum(kernel)

    def one(mask):
        hc = kernel * mask
        hc = hc / jnp.where(jnp.sum(hc) != 0, jnp.sum(hc), 1) * total
        r = _conv.valid_conv(padded, hc) - y
        r = r[rows, cols] if mode == "same" else r
        return jnp.sqrt(jnp.mean(r * r))

    return jax.lax.map(one, masks)


def estimate_auto(estimate, x, y, *, mode: str, max_kernel_shape=None, **kwargs):
    """``estimate_kernel(x, y, "auto", ...)``: see the module docstring.

    Args:
      estimate: :func:`jdeconv.estimate_kernel` (passed in to keep imports one way).
      x, y, mode, kwargs: as for ``estimate_kernel``.
      max_kernel_shape: the generous box (int or pair); default
        :func:`default_max_shape`.
    """
    xa = _validation.as_float_array("x (original image)", x)
    ya = _validation.as_float_array("y (blurred image)", y, allow_nan=kwargs.get("nan") == "mask")
    mode = _validation.check_mode(mode)
    if mode in ("valid", "full"):
        if max_kernel_shape is not None:
            raise ValueError(f"max_kernel_shape has no effect in mode {mode!r}: the images' "
                             "shapes fix the kernel box there; drop it, or use mode='same'.")
        shape = fixed_shape(xa.shape, ya.shape, mode)
        est = estimate(x, y, shape, mode=mode, **kwargs)
        return _with_stats(est, shape, shape, None, None)
    generous = (default_max_shape(xa.shape) if max_kernel_shape is None else
                _validation.as_shape(max_kernel_shape, "max_kernel_shape",
                                     maximum=_validation.MAX_KERNEL_SIDE))
    first_kw = dict(kwargs, throw=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = estimate(x, y, generous, mode=mode, **first_kw)
    h0 = np.asarray(first.kernel)
    if kwargs.get("orientation", "convolution") == "correlation":
        h0 = h0[::-1, ::-1]
    sigma = float(np.asarray(first.noise_sigma))
    box, tau = support_box(h0, rel_floor=relative_floor(sigma, ya))
    sizes = [s for s in range(1, max(generous) + 1, 2)]
    crit = size_criterion(xa, jnp.nan_to_num(ya), jnp.asarray(h0), mode, sizes, sigma)
    est = estimate(x, y, box, mode=mode, **kwargs)
    # Taps of the generous estimate that only noise put above the threshold shrink away
    # once the box is smaller (fewer unknowns, less noise per tap): look once more.
    h1 = np.asarray(est.kernel)
    if kwargs.get("orientation", "convolution") == "correlation":
        h1 = h1[::-1, ::-1]
    box2, _ = support_box(h1, tau=tau)
    if box2 != box:
        box = box2
        est = estimate(x, y, box, mode=mode, **kwargs)
    outside = 1.0 - float(np.abs(centred_crop(h0, box)).sum() / max(np.abs(h0).sum(), 1e-300))
    est = _with_stats(est, box, generous, np.asarray(sizes), crit)
    est.stats["mass_outside_box"] = jnp.asarray(outside)
    return est


def _with_stats(est, box, generous, sizes, crit):
    import dataclasses

    stats = dict(est.stats)
    stats["kernel_box"] = jnp.asarray(box)
    stats["generous_shape"] = jnp.asarray(generous)
    if sizes is not None:
        stats["size_candidates"] = jnp.asarray(sizes)
        stats["size_criterion"] = jnp.asarray(crit)
    return dataclasses.replace(est, stats=stats)
