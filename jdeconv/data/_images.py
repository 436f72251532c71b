"""Synthetic and bundled original images for kernel-estimation experiments.

Every generator returns a host-side NumPy array of shape ``(m, n)``, dtype
float64, with values in ``[0, 1]``. Random generators are deterministic: they
take an explicit ``seed: int`` and build their own
``np.random.default_rng(seed)``; no global random state is touched. Sizes are
checked before anything is allocated (at most
``jdeconv._validation.MAX_IMAGE_SIDE`` pixels per side and
``MAX_IMAGE_PIXELS`` in all), so a typo gives one ``ValueError``.

Example:
    >>> from jdeconv.data import make_image
    >>> x = make_image("shapes", (128, 128), seed=3)
    >>> x.shape, x.dtype, float(x.min()) >= 0.0, float(x.max()) <= 1.0
    ((128, 128), dtype('float64'), True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jdeconv import _validation

__all__ = [
    "IMAGE_NAMES",
    "NATURAL_IMAGE_NAMES",
    "checkerboard_image",
    "delta_image",
    "fractal_image",
    "make_image",
    "natural_image",
    "noise_target",
    "question_square_image",
    "shapes_image",
]


def _image_shape(shape: Any) -> tuple[int, int]:
    """Validates an image size (int or pair) and refuses sizes too large to allocate."""
    m, n = _validation.as_shape(shape, "image shape", example="(256, 256)",
                                maximum=_validation.MAX_IMAGE_SIDE)
    _validation.check_image_size((m, n), "image")
    return m, n


# ---------------------------------------------------------------------------
# Generators.
# ---------------------------------------------------------------------------


def question_square_image() -> np.ndarray:
    """The original question's worked example: a white square on black.

    A 200x200 zero image with a 30x30 square of ones at rows and columns
    86-115 (1-based), i.e. ``[85:115, 85:115]`` 0-based.

    Returns:
        (200, 200) float64 in {0, 1}.

    Example:
        >>> x = question_square_image()
        >>> x.shape, float(x.sum()), float(x[85, 85]), float(x[84, 85])
        ((200, 200), 900.0, 1.0, 0.0)
    """
    x = np.zeros((200, 200), dtype=np.float64)
    x[85:115, 85:115] = 1.0
    return x


def _polygon_mask(rr: np.ndarray, cc: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Mask of pixel centres (rows ``rr`` (h, 1), columns ``cc`` (1, w)) inside a convex polygon.

    ``verts`` holds the (k, 2) (row, col) vertices; the mask has shape (h, w).
    """
    k = len(verts)
    signs = []
    for i in range(k):
        r0, c0 = verts[i]
        r1, c1 = verts[(i + 1) % k]
        signs.append((r1 - r0) * (cc - c0) - (c1 - c0) * (rr - r0))
    s = np.stack(signs)
    # Orientation-independent half-plane test: all cross products share a sign.
    return np.all(s >= 0, axis=0) | np.all(s <= 0, axis=0)


def shapes_image(
    shape: int | tuple[int, int] = (256, 256),
    *,
    seed: int = 0,
    n_shapes: int = 12,
    margin: int | None = None,
) -> np.ndarray:
    """The original question's scene: bright shapes on a dark background.

    Filled discs, axis-aligned rectangles and convex polygons (triangles up to
    hexagons) of random sizes and intensities in [0.3, 1.0] are painted in
    order (later shapes cover earlier ones) on a zero background. Every shape
    stays at least ``margin`` pixels away from the border, so a blurred copy has
    no border effects as long as the kernel half-width is below ``margin``.
    The many edges at different orientations and contrasts make kernel
    estimation well posed.

    Args:
        shape: image size ``(m, n)`` or an int for a square; both sizes >= 16.
        seed: seed for ``np.random.default_rng``.
        n_shapes: number of shapes, >= 1.
        margin: empty border in pixels; default ``max(2, min(m, n) // 10)``.
            Must leave at least 8 pixels of room: ``2 * margin + 8 <= min(m, n)``.

    Returns:
        (m, n) float64 in [0, 1]; the border ``margin`` pixels are exactly 0.

    Raises:
        TypeError: for non-integer shape, seed, n_shapes or margin.
        ValueError: for sizes below 16, negative seed, ``n_shapes < 1`` or a
            margin that leaves no room.

    Example:
        >>> x = shapes_image((64, 64), seed=1, n_shapes=5)
        >>> x.shape, float(x[:6].max())
        ((64, 64), 0.0)
    """
    m, n = _image_shape(shape)
    if min(m, n) < 16:
        raise ValueError(
            f"image shape {(m, n)} is too small for shapes_image; give both sizes >= 16, e.g. (256, 256)"
        )
    rng = np.random.default_rng(_validation.check_seed(seed))
    n_shapes = _validation.check_int(n_shapes, "n_shapes", minimum=1, example=12)
    if margin is None:
        margin = max(2, min(m, n) // 10)
    margin = _validation.check_int(margin, "margin", minimum=0, example=max(2, min(m, n) // 10))
    if 2 * margin + 8 > min(m, n):
        raise ValueError(
            f"margin {margin} leaves less than 8 pixels of room in image shape {(m, n)}; "
            f"use margin <= {(min(m, n) - 8) // 2} or a larger image"
        )

    img = np.zeros((m, n), dtype=np.float64)
    rows = np.arange(m, dtype=np.float64)[:, None]
    cols = np.arange(n, dtype=np.float64)[None, :]
    # Usable box for shape pixels (pixel centres): [lo, hi] inclusive.
    r_lo, r_hi = margin, m - 1 - margin
    c_lo, c_hi = margin, n - 1 - margin
    room = min(r_hi - r_lo, c_hi - c_lo)
    for _ in range(n_shapes):
        kind = rng.integers(0, 3)
        value = float(rng.uniform(0.3, 1.0))
        # Half-size between 4% and 18% of the usable room, at least 2.5 px.
        half = max(2.5, float(rng.uniform(0.04, 0.18)) * room)
        half = min(half, room / 2.0)
        cr = float(rng.uniform(r_lo + half, r_hi - half))
        cc0 = float(rng.uniform(c_lo + half, c_hi - half))
        # Every shape lies within ``half`` of its centre: paint only that box
        # (plus one pixel), so the work and memory scale with the shape.
        r0, r1 = max(0, int(cr - half) - 1), min(m, int(cr + half) + 2)
        c0, c1 = max(0, int(cc0 - half) - 1), min(n, int(cc0 + half) + 2)
        rr, cc = rows[r0:r1], cols[:, c0:c1]
        if kind == 0:  # disc
            mask = (rr - cr) ** 2 + (cc - cc0) ** 2 <= half**2
        elif kind == 1:  # rectangle, aspect up to 1:3
            hr = half * float(rng.uniform(0.35, 1.0))
            hc = half * float(rng.uniform(0.35, 1.0))
            mask = (np.abs(rr - cr) <= hr) & (np.abs(cc - cc0) <= hc)
        else:  # convex polygon: 3-6 vertices on a circle, jittered around even spacing
            k = int(rng.integers(3, 7))
            step = 2.0 * np.pi / k
            ang = float(rng.uniform(0.0, step)) + step * (np.arange(k) + rng.uniform(-0.25, 0.25, size=k))
            verts = np.stack([cr + half * np.sin(ang), cc0 + half * np.cos(ang)], axis=1)
            mask = _polygon_mask(rr, cc, verts)
        # Every shape covers at least the pixel at its centre.
        mask[int(round(cr)) - r0, int(round(cc0)) - c0] = True
        img[r0:r1, c0:c1][mask] = value
    # Guarantee the margin is empty regardless of rounding.
    if margin:
        img[:margin] = 0.0
        img[m - margin :] = 0.0
        img[:, :margin] = 0.0
        img[:, n - margin :] = 0.0
    return img


_NOISE_KINDS = ("uniform", "binary", "gaussian")


def noise_target(
    shape: int | tuple[int, int], *, seed: int = 0, kind: str = "uniform"
) -> np.ndarray:
    """A random calibration target with a flat (white) expected spectrum.

    White noise excites every spatial frequency, so the kernel is well
    determined from ``(x, y)``: the best possible original for calibration.

    Args:
        shape: image size ``(m, n)`` or an int for a square.
        seed: seed for ``np.random.default_rng``.
        kind: ``"uniform"`` (i.i.d. U[0, 1)), ``"binary"`` (i.i.d. 0/1 with
            probability 1/2) or ``"gaussian"`` (N(0.5, 0.15^2) clipped to [0, 1]).

    Returns:
        (m, n) float64 in [0, 1].

    Raises:
        TypeError: for a bad shape or seed type.
        ValueError: for non-positive sizes, negative seed or an unknown kind.

    Example:
        >>> x = noise_target((32, 48), seed=0, kind="binary")
        >>> x.shape, sorted(set(x.ravel().tolist()))
        ((32, 48), [0.0, 1.0])
    """
    m, n = _image_shape(shape)
    rng = np.random.default_rng(_validation.check_seed(seed))
    if kind == "uniform":
        return rng.random((m, n))
    if kind == "binary":
        return (rng.random((m, n)) < 0.5).astype(np.float64)
    if kind == "gaussian":
        return np.clip(rng.normal(0.5, 0.15, size=(m, n)), 0.0, 1.0)
    raise _validation.unknown_name("noise kind", kind, _NOISE_KINDS)


def delta_image(
    shape: int | tuple[int, int], *, position: tuple[int, int] | None = None
) -> np.ndarray:
    """A single 1.0 pixel on a zero image (its blurred copy is the kernel itself).

    Args:
        shape: image size ``(m, n)`` or an int for a square.
        position: ``(row, col)`` 0-based of the bright pixel; default the centre
            ``(m // 2, n // 2)``.

    Returns:
        (m, n) float64 with one 1.0 and zeros elsewhere.

    Raises:
        TypeError: for non-integer shape or position.
        ValueError: for non-positive sizes or a position outside the image.

    Example:
        >>> x = delta_image((5, 6))
        >>> tuple(int(i) for i in np.argwhere(x)[0])
        (2, 3)
    """
    m, n = _image_shape(shape)
    if position is None:
        r, c = m // 2, n // 2
    else:
        if (
            not isinstance(position, (Sequence, np.ndarray))
            or isinstance(position, (str, bytes))
            or len(position) != 2
            or not all(_validation.is_int(p) for p in position)
        ):
            raise TypeError(
                f"position must be a pair of ints (row, col), got {position!r}; e.g. position=({m // 2}, {n // 2})"
            )
        r, c = int(position[0]), int(position[1])
        if not (0 <= r < m and 0 <= c < n):
            raise ValueError(
                f"position {(r, c)} is outside image shape {(m, n)}; give 0 <= row < {m} and 0 <= col < {n}"
            )
    x = np.zeros((m, n), dtype=np.float64)
    x[r, c] = 1.0
    return x


def checkerboard_image(shape: int | tuple[int, int], *, square: int = 8) -> np.ndarray:
    """A 0/1 checkerboard whose top-left square is 0.

    Args:
        shape: image size ``(m, n)`` or an int for a square.
        square: side of each checker square in pixels, >= 1.

    Returns:
        (m, n) float64 in {0, 1}; ``x[i, j] = (i // square + j // square) % 2``.

    Raises:
        TypeError: for non-integer shape or square.
        ValueError: for non-positive sizes or ``square < 1``.

    Example:
        >>> checkerboard_image((2, 4), square=2)
        array([[0., 0., 1., 1.],
               [0., 0., 1., 1.]])
    """
    m, n = _image_shape(shape)
    square = _validation.check_int(square, "square", minimum=1, example=8)
    i = np.arange(m)[:, None] // square
    j = np.arange(n)[None, :] // square
    return ((i + j) % 2).astype(np.float64)


def fractal_image(
    shape: int | tuple[int, int], *, seed: int = 0, beta: float = 2.0
) -> np.ndarray:
    """A natural-image-like texture with a ``1/f**beta`` power spectrum.

    White Gaussian noise is filtered in the Fourier domain by ``|f|**(-beta/2)``
    (the mean is removed), transformed back and rescaled linearly so that its
    minimum is 0.05 and maximum 0.95. ``beta = 2`` resembles natural
    photographs; ``beta = 0`` is white noise. Needs no optional dependency.

    Args:
        shape: image size ``(m, n)`` or an int for a square.
        seed: seed for ``np.random.default_rng``.
        beta: spectral exponent, finite and >= 0.

    Returns:
        (m, n) float64 in [0.05, 0.95] (exactly 0.5 everywhere if the image has
        a single pixel).

    Raises:
        TypeError: for bad shape, seed or beta types.
        ValueError: for non-positive sizes, negative seed or negative beta.

    Example:
        >>> x = fractal_image((64, 64), seed=0)
        >>> round(float(x.min()), 6), round(float(x.max()), 6)
        (0.05, 0.95)
    """
    m, n = _image_shape(shape)
    rng = np.random.default_rng(_validation.check_seed(seed))
    beta = _validation.check_real(beta, "beta", nonnegative=True, example="2.0")
    noise = rng.standard_normal((m, n))
    fy = np.fft.fftfreq(m)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    filt = f ** (-beta / 2.0)
    filt[0, 0] = 0.0
    img = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=(m, n))
    lo, hi = float(img.min()), float(img.max())
    if not hi > lo:
        return np.full((m, n), 0.5)
    out = 0.05 + 0.9 * (img - lo) / (hi - lo)
    return np.clip(out, 0.05, 0.95)


# public name -> skimage.data function name
_NATURAL = {
    "astronaut": "astronaut",
    "brick": "brick",
    "camera": "camera",
    "chelsea": "chelsea",
    "clock": "clock",
    "coffee": "coffee",
    "coins": "coins",
    "grass": "grass",
    "gravel": "gravel",
    "immunohistochemistry": "immunohistochemistry",
    "moon": "moon",
    "page": "page",
    "text": "text",
}
NATURAL_IMAGE_NAMES: tuple[str, ...] = tuple(sorted(_NATURAL))
"""Names accepted by :func:`natural_image` (photographs bundled with scikit-image)."""

_FITS = ("resize", "crop")


def _centre_crop(img: np.ndarray, m: int, n: int) -> np.ndarray:
    r0 = (img.shape[0] - m) // 2
    c0 = (img.shape[1] - n) // 2
    return img[r0 : r0 + m, c0 : c0 + n]


def natural_image(
    name: str = "camera",
    *,
    shape: int | tuple[int, int] | None = None,
    fit: str = "resize",
) -> np.ndarray:
    """A grayscale photograph bundled with scikit-image.

    Supported names: astronaut, brick, camera, chelsea, clock, coffee, coins,
    grass, gravel, immunohistochemistry, moon, page, text (see
    ``NATURAL_IMAGE_NAMES``). Colour photographs are converted to gray by
    averaging the R, G and B channels (the same rule as
    ``read_image(channels="gray")``). 8-bit data are scaled by 1/255.

    Args:
        name: one of ``NATURAL_IMAGE_NAMES``.
        shape: optional output size ``(m, n)`` or int. ``None`` keeps the
            native size.
        fit: how to reach ``shape``: ``"resize"`` centre-crops to the target
            aspect ratio and then resamples (anti-aliased) to ``shape``;
            ``"crop"`` only centre-crops (``shape`` must fit inside the photo).

    Returns:
        (m, n) float64 in [0, 1].

    Raises:
        ImportError: if scikit-image is not installed.
        ValueError: for an unknown name or fit, or a crop larger than the photo.
        TypeError: for a bad shape type.

    Example:
        >>> x = natural_image("camera", shape=(64, 64))
        >>> x.shape, x.dtype
        ((64, 64), dtype('float64'))
    """
    _validation.check_choice("natural image", name, NATURAL_IMAGE_NAMES)
    _validation.check_choice("fit", fit, _FITS)
    target = None if shape is None else _image_shape(shape)
    try:
        import skimage.data as skdata
    except ImportError as exc:  # pragma: no cover - exercised via monkeypatch
        raise ImportError(
            "natural_image needs scikit-image; install it with "
            "`pip install 'jdeconv[natural]'`, or use fractal_image() for a "
            "natural-looking texture without extra dependencies"
        ) from exc
    raw = np.asarray(getattr(skdata, _NATURAL[name])())
    if raw.dtype == np.uint8:
        img = raw.astype(np.float64) / 255.0
    elif raw.dtype == np.uint16:  # pragma: no cover - no such bundled image today
        img = raw.astype(np.float64) / 65535.0
    else:  # pragma: no cover
        img = raw.astype(np.float64)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    if target is None:
        return np.clip(img, 0.0, 1.0)
    m, n = target
    H, W = img.shape
    if fit == "crop":
        if m > H or n > W:
            raise ValueError(
                f"cannot crop {(m, n)} from natural image {name!r} of shape {(H, W)}; "
                f"give a shape at most {(H, W)} or use fit='resize'"
            )
        return np.clip(_centre_crop(img, m, n), 0.0, 1.0).copy()
    # fit == "resize": crop to the target aspect ratio, then resample.
    if m * W > n * H:  # target is taller than the photo: crop columns
        cw = max(1, round(H * n / m))
        img = _centre_crop(img, H, min(W, cw))
    else:
        ch = max(1, round(W * m / n))
        img = _centre_crop(img, min(H, ch), W)
    if img.shape != (m, n):
        from skimage.transform import resize

        img = resize(img, (m, n), order=1, mode="reflect", anti_aliasing=img.shape[0] > m or img.shape[1] > n)
    return np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)


# ---------------------------------------------------------------------------
# Dispatcher.
# ---------------------------------------------------------------------------

IMAGE_NAMES: tuple[str, ...] = (
    "shapes",
    "question_square",
    "noise",
    "delta",
    "checkerboard",
    "fractal",
    "natural",
) + tuple(f"natural:{k}" for k in NATURAL_IMAGE_NAMES)
"""Names accepted by :func:`make_image`."""

_DEFAULT_SHAPE = (256, 256)


def make_image(
    name: str,
    /,
    shape: int | tuple[int, int] | None = None,
    *,
    seed: int = 0,
    **options: Any,
) -> np.ndarray:
    """Build an original image by name.

    Names: ``"shapes"``, ``"question_square"``, ``"noise"``, ``"delta"``,
    ``"checkerboard"``, ``"fractal"``, ``"natural"`` (photo chosen by the
    ``name=`` option, default camera; ``name`` is positional-only so the
    option does not clash) and ``"natural:<photo>"`` such as
    ``"natural:camera"`` (see ``IMAGE_NAMES``).

    Args:
        name: generator name.
        shape: ``(m, n)`` or int. ``None`` means (256, 256) for synthetic
            images, (200, 200) for ``question_square`` and the native size for
            natural photos. ``question_square`` only accepts (200, 200).
        seed: seed, passed to the random generators (shapes, noise, fractal)
            and ignored by the deterministic ones.
        **options: extra keyword options of the generator, e.g. ``kind="binary"``
            for noise, ``square=4`` for checkerboard, ``beta=1.5`` for fractal.

    Returns:
        (m, n) float64 in [0, 1].

    Raises:
        ValueError: for an unknown name (the message lists valid names and the
            closest match) or invalid parameters.
        TypeError: for options the generator does not take.

    Example:
        >>> make_image("checkerboard", (4, 4), square=2)[0]
        array([0., 0., 1., 1.])
    """
    if not isinstance(name, str):
        raise TypeError(f"image name must be a str, got {type(name).__name__}; e.g. 'shapes'")
    seed = _validation.check_seed(seed)
    key = name.strip().lower()
    if key.startswith("natural:") or key == "natural":
        if key != "natural":
            photo = key.split(":", 1)[1]
            if "name" in options:
                raise TypeError(f"give the photo either in the name {name!r} or as name=, not both")
            if photo not in _NATURAL:
                raise _validation.unknown_name("image", name, IMAGE_NAMES)
            options = {"name": photo, **options}
        return _validation.call_with_options(natural_image, "image", name, (), {"shape": shape, **options})
    if key == "question_square":
        if shape is not None and _validation.as_shape(shape, "image shape") != (200, 200):
            raise ValueError(
                f"question_square is always 200x200, got shape {shape!r}; pass shape=None or (200, 200)"
            )
        return _validation.call_with_options(question_square_image, "image", name, (), options)
    table: dict[str, tuple[Callable[..., np.ndarray], bool]] = {
        "shapes": (shapes_image, True),
        "noise": (noise_target, True),
        "delta": (delta_image, False),
        "checkerboard": (checkerboard_image, False),
        "fractal": (fractal_image, True),
    }
    if key not in table:
        raise _validation.unknown_name("image", name, IMAGE_NAMES)
    func, seeded = table[key]
    opts = dict(options)
    if seeded:
        opts["seed"] = seed
    return _validation.call_with_options(func, "image", name, (_DEFAULT_SHAPE if shape is None else shape,), opts)
