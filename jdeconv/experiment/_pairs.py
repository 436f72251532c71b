"""Image pairs for experiments: synthesised from a configuration or read from files.

One implementation serves the runner (``jdeconv run``) and the command line
(``jdeconv simulate``, ``jdeconv estimate``): a synthetic pair is
``x = quantize(make_image(...))``, ``h = make_kernel(...)`` and
``y = quantize(noise(conv2d(x, h, mode)))``, each noise from its own seeded
stream; a pair from files is checked against the mode before anything runs.
Arrays are float64 NumPy; JAX is imported only to blur.

Real-like synthetic pairs (``data.synthetic``): the true kernel can sit
off-centre in its box (``kernel_offset``: the box grows by ``2|offset|``),
the blurred image can differ by a gain and an offset
(``y = gain · conv2d(x, h) + offset``), and bright spots (``spots``, Gaussian
blobs of peak ``spot_value``) can be added to the scene and clipped at a
sensor level (``saturation_level``) in both images, as a camera saturates on
highlights. With ``bits`` set, values are also clipped to [0, 1].
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

# The configuration's default kernel parameters live in _config, which never imports this module.
from jdeconv.experiment._config import default_kernel_params

if TYPE_CHECKING:  # pragma: no cover
    from jdeconv.experiment._config import Config, FilesData, SyntheticData

__all__ = ["Pairs", "add_spots", "blur", "check_pair_shapes", "field_sigmas", "field_truth",
           "gaussian_field", "load_array", "load_blurred", "load_mask", "load_pair",
           "load_support", "load_truth", "load_weights", "make_pair", "pairs_for",
           "place_kernel", "seed_of", "synthesize"]


def seed_of(*parts: int) -> int:
    """A deterministic 32-bit seed derived from integers (independent streams).

    Example:
        >>> seed_of(0, 1) == seed_of(0, 1) != seed_of(0, 2)
        True
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint32)[0])


def _blur64(x: np.ndarray, h: np.ndarray, mode: str) -> np.ndarray:
    """``conv2d(x, h, mode)`` computed in float64 whatever the JAX precision setting.

    A ``(gy, gx, k, l)`` ``h`` is a field of kernels: ``conv2d_field(x, h, mode)``.
    """
    import jax

    from jdeconv._conv import conv2d
    from jdeconv._field_conv import conv2d_field

    blur_with = conv2d_field if np.ndim(h) == 4 else conv2d
    with jax.enable_x64(True):
        return np.asarray(blur_with(np.asarray(x, np.float64), np.asarray(h, np.float64),
                                    mode=mode), np.float64)


def field_sigmas(grid, centre: float, corner: float) -> np.ndarray:
    """``(gy, gx)`` σ growing linearly with the normalised distance from the centre.

    Example:
        >>> [round(float(v), 3) for v in field_sigmas((3, 3), 1.0, 2.0)[0]]   # corner, edge, corner
        [2.0, 1.707, 2.0]
    """
    gy, gx = grid
    u = np.linspace(-1.0, 1.0, gy) if gy > 1 else np.zeros(1)
    v = np.linspace(-1.0, 1.0, gx) if gx > 1 else np.zeros(1)
    r = np.sqrt(u[:, None] ** 2 + v[None, :] ** 2) / math.sqrt(2.0)
    return centre + (corner - centre) * r


def gaussian_field(kernel_shape, grid, sigmas: tuple[float, float]):
    """``(kernels, sigma)``: Gaussian kernels ``(gy, gx, k, l)`` on a grid of nodes, and their σ.

    The σ grow from ``sigmas[0]`` at the centre to ``sigmas[1]`` in the corners
    (:func:`field_sigmas`); :func:`jdeconv.conv2d_field` interpolates the
    kernels bilinearly between the nodes.
    """
    from jdeconv.data import gaussian_kernel

    s = field_sigmas(grid, *sigmas)
    kernels = np.stack([np.stack([np.asarray(gaussian_kernel(tuple(kernel_shape), float(v)))
                                  for v in row]) for row in s])
    return np.asarray(kernels, np.float64), s


def field_truth(synthetic: SyntheticData, kernel_shape) -> np.ndarray | None:
    """The true field ``(gy, gx, k, l)`` of a synthetic pair (None: the blur is uniform)."""
    if synthetic.field_sigma is None:
        return None
    return gaussian_field(kernel_shape, synthetic.field_grid, synthetic.field_sigma)[0]


def sensor_level(level: float | None, bits: int | None) -> float | None:
    """The clipping level of a sensor: ``level`` rounded up to the ``bits`` grid (if set).

    Rounding up keeps every clipped pixel at or above ``level`` after
    quantisation, so ``model.saturation: level`` finds them all.

    Example:
        >>> round(sensor_level(0.9, 8) * 255)
        230
    """
    if level is None or bits is None:
        return level
    top = float(2**bits - 1)
    return min(float(np.ceil(level * top - 1e-9)) / top, 1.0)


def blur(x: np.ndarray, h: np.ndarray, mode: str, *, gaussian_sigma: float = 0.0,
         poisson_photons: float | None = None, bits: int | None = None, seed: int = 0,
         gain: float = 1.0, offset: float = 0.0,
         saturation_level: float | None = None) -> np.ndarray:
    """``y = gain · conv2d(x, h, mode) + offset`` in float64, then noise, clipping, quantisation.

    A ``(gy, gx, k, l)`` ``h`` blurs with :func:`jdeconv.conv2d_field` instead.

    Poisson noise (``poisson_photons`` per unit intensity), then Gaussian noise
    (``gaussian_sigma``), each from its own stream seeded by ``seed``; then
    clipping at ``saturation_level`` (if set) and quantisation to ``bits``
    (clipped to [0, 1]).
    """
    from jdeconv.data import add_gaussian_noise, add_poisson_noise, quantize

    y = _blur64(x, h, mode)
    if gain != 1.0 or offset != 0.0:
        y = gain * y + offset
    if poisson_photons is not None:
        y = add_poisson_noise(np.clip(y, 0.0, None), poisson_photons, seed=seed_of(seed, 1))
    if gaussian_sigma > 0:
        y = add_gaussian_noise(y, gaussian_sigma, seed=seed_of(seed, 2))
    level = sensor_level(saturation_level, bits)
    if level is not None:
        y = np.minimum(y, level)
    if bits is not None:
        y = quantize(y, bits)
    return y


def synthesize(x: np.ndarray, h: np.ndarray, mode: str, *, gaussian_sigma: float = 0.0,
               poisson_photons: float | None = None, bits: int | None = None,
               seed: int = 0, gain: float = 1.0, offset: float = 0.0, spots: int = 0,
               spot_value: float = 2.0,
               saturation_level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: the original (quantised to ``bits`` if set) and its blurred, noisy copy.

    With ``spots``, bright blobs are added to the scene before it is blurred;
    the original returned is the scene as the sensor records it: clipped at
    ``saturation_level`` (and, with ``bits``, at 1), so near the spots ``y`` is
    not the blur of ``x`` and those pixels must be excluded
    (``saturation=``).
    """
    from jdeconv.data import quantize

    if bits is not None:
        x = quantize(x, bits)
    scene = np.asarray(x, np.float64)
    if spots:
        scene = add_spots(scene, spots, spot_value, seed=seed_of(seed, 3))
    y = blur(scene, h, mode, gaussian_sigma=gaussian_sigma, poisson_photons=poisson_photons,
             bits=bits, seed=seed, gain=gain, offset=offset, saturation_level=saturation_level)
    level = sensor_level(saturation_level, bits)
    recorded = scene if level is None else np.minimum(scene, level)
    if bits is not None and (spots or level is not None):
        recorded = quantize(recorded, bits)
    return np.asarray(recorded, np.float64), y


def add_spots(x: np.ndarray, count: int, value: float, *, seed: int = 0) -> np.ndarray:
    """``x`` plus ``count`` Gaussian blobs (sigma 1 px, peak ``value``) at seeded random places.

    Example:
        >>> float(add_spots(np.zeros((9, 9)), 1, 2.0, seed=0).max())
        2.0
    """
    m, n = x.shape
    rng = np.random.default_rng(seed)
    impulses = np.zeros((m, n))
    np.add.at(impulses, (rng.integers(0, m, count), rng.integers(0, n, count)), value)
    t = np.arange(-3, 4)
    g = np.exp(-0.5 * t**2)
    padded = np.pad(impulses, 3)
    rows = sum(g[i] * padded[i:i + m, :] for i in range(7))
    blobs = sum(g[j] * rows[:, j:j + n] for j in range(7))
    return np.asarray(x, np.float64) + blobs


def place_kernel(h: np.ndarray, offset) -> np.ndarray:
    """``h`` in a box grown by ``2|offset|`` per axis, its centre ``offset`` from the box's centre.

    Centres are the geometry's zero shift, tap ``((k-1)//2, (l-1)//2)``.

    Example:
        >>> place_kernel(np.ones((1, 1)), (1, -1)).tolist()
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    """
    dr, dc = (int(v) for v in offset)
    if dr == 0 and dc == 0:
        return h
    k, l = h.shape
    out = np.zeros((k + 2 * abs(dr), l + 2 * abs(dc)), h.dtype)
    r0, c0 = abs(dr) + dr, abs(dc) + dc
    out[r0:r0 + k, c0:c0 + l] = h
    return out


def make_pair(synthetic: SyntheticData, kernel_shape: tuple[int, int], mode: str, *,
              seed: int = 0, channel: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic pair ``(x, y, h)`` (float64 NumPy arrays).

    ``x = make_image(image, image_shape, seed=seed + channel)`` (quantised to
    ``bits`` if set), ``h = make_kernel(kernel, kernel_shape, seed=seed)``
    placed ``kernel_offset`` off-centre (:func:`place_kernel`), and ``y`` from
    :func:`synthesize` with the configured gain, offset, spots, saturation,
    noise (seeded by ``seed + 1000 channel``) and ``bits``.
    ``kernel_shape`` is the box the kernel is made in (``data.synthetic.kernel_shape``
    or ``model.kernel_shape``); ``h`` has the grown box. With ``field_sigma``,
    ``y`` is blurred by the Gaussian field of :func:`field_truth` and ``h`` is
    its kernel at the centre.
    """
    from jdeconv.data import make_image, make_kernel

    x = make_image(synthetic.image, tuple(synthetic.image_shape), seed=seed + channel,
                   **synthetic.image_options)
    nodes = field_truth(synthetic, kernel_shape)
    if nodes is not None:  # a varying blur; the truth is the kernel at the centre
        h = np.asarray(make_kernel("gaussian", tuple(kernel_shape),
                                   sigma=float(synthetic.field_sigma[0])), np.float64)
    else:
        params = synthetic.kernel_params
        if params is None:
            params = default_kernel_params(synthetic.kernel, kernel_shape)
        h = make_kernel(synthetic.kernel, tuple(kernel_shape), seed=seed, **params)
        h = place_kernel(h, synthetic.kernel_offset)
    x, y = synthesize(x, h if nodes is None else nodes, mode, gaussian_sigma=synthetic.noise.gaussian_sigma,
                      poisson_photons=synthetic.noise.poisson_photons, bits=synthetic.bits,
                      seed=seed + 1000 * channel, gain=synthetic.gain, offset=synthetic.offset,
                      spots=synthetic.spots, spot_value=synthetic.spot_value,
                      saturation_level=synthetic.saturation_level)
    return x, y, h


def check_pair_shapes(x_shape, y_shape, kernel_shape, mode: str, *,
                      names: tuple[str, str] = ("original", "blurred")) -> None:
    """Raises a ValueError naming both shapes unless ``y`` is what ``mode`` gives for ``x``.

    Example:
        >>> check_pair_shapes((40, 40), (40, 40), (5, 5), "valid")
        Traceback (most recent call last):
        ...
        ValueError: blurred image is 40x40 but the original image is 40x40: ... use mode 'same'
    """
    from jdeconv._geometry import output_shape

    if isinstance(kernel_shape, str):  # "auto": the box is read off the shapes, or it is free
        kernel_shape = _auto_box(x_shape, y_shape, mode, names)
    (m, n), (k, l) = tuple(x_shape)[:2], tuple(kernel_shape)
    if k > m or l > n:
        raise ValueError(
            f"the {k}x{l} kernel is larger than the {names[0]} image ({m}x{n}); use a smaller "
            "kernel size")
    expected = output_shape((m, n), (k, l), mode)
    got = tuple(y_shape)[:2]
    if got != expected:
        hint = ""
        if mode == "valid" and got == (m, n):
            hint = "; the images have the same size: use mode 'same'"
        elif mode == "same" and got == output_shape((m, n), (k, l), "valid"):
            hint = "; the blurred image has the valid size: use mode 'valid'"
        raise ValueError(
            f"{names[1]} image is {got[0]}x{got[1]} but the {names[0]} image is {m}x{n}: with a "
            f"{k}x{l} kernel in mode {mode!r} the {names[1]} image must be "
            f"{expected[0]}x{expected[1]}{hint}")


def _auto_box(x_shape, y_shape, mode: str, names) -> tuple[int, int]:
    """The box ``kernel_shape="auto"`` implies for checking a pair's shapes."""
    (m, n), (M, N) = tuple(x_shape)[:2], tuple(y_shape)[:2]
    if mode == "valid" and M <= m and N <= n:
        return (m - M + 1, n - N + 1)
    if mode == "full" and M >= m and N >= n:
        return (M - m + 1, N - n + 1)
    if mode in ("same", "circular") and (M, N) == (m, n):
        return (1, 1)
    raise ValueError(
        f"{names[1]} image is {M}x{N} but the {names[0]} image is {m}x{n}: in mode {mode!r} "
        + ("the blurred image must be as large as the original" if mode in ("same", "circular")
           else "the blurred image must be " + ("smaller" if mode == "valid" else "larger")
           + " than the original by the kernel size minus one"))


def load_array(path: str | Path, what: str, key: str) -> np.ndarray:
    """Reads a ``.npy`` array without unpickling; a bad file names itself and the config key.

    Example:
        >>> load_array("missing.npy", "support mask", "prior.support")
        Traceback (most recent call last):
        ...
        FileNotFoundError: support mask file 'missing.npy' does not exist; check prior.support
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {str(p)!r} does not exist; check {key}")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ValueError(f"{what} file {str(p)!r} holds pickled Python objects, which are "
                             "never loaded; save a plain numeric array (np.save(path, array))") from None
        raise ValueError(f"{what} file {str(p)!r} is not a valid .npy array ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{what} file {str(p)!r} is not a valid .npy array ({e})") from None


def load_truth(path: str, kernel_shape) -> np.ndarray:
    """Reads a true kernel from ``.npy`` or ``.csv`` and checks its shape (any with ``"auto"``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise ValueError(f"true kernel file {str(p)!r}: expected a .npy or .csv file")
    if suffix == ".npy":
        h = load_array(p, "true kernel", "data.files.truth")
    else:
        if not p.is_file():
            raise FileNotFoundError(f"true kernel file {str(p)!r} does not exist; check data.files.truth")
        try:
            h = np.loadtxt(p, delimiter=",", ndmin=2)
        except ValueError as e:
            raise ValueError(f"true kernel file {str(p)!r} is not a CSV of numbers ({e})") from None
    if h.dtype.kind not in "biuf":
        raise ValueError(f"true kernel file {str(p)!r} holds {h.dtype} values; expected numbers")
    h = np.asarray(h, np.float64)
    if h.ndim != 2:
        raise ValueError(f"true kernel file {str(p)!r} has shape {h.shape}; expected a (k, l) "
                         "kernel")
    if not isinstance(kernel_shape, str) and h.shape != tuple(kernel_shape):
        raise ValueError(f"true kernel {str(p)!r} has shape {h.shape} but model.kernel_shape is "
                         f"{tuple(kernel_shape)}")
    return h


def load_support(support: Any, kernel_shape) -> np.ndarray | None:
    """The ``prior.support`` mask as a (k, l) bool array (None: every tap allowed)."""
    if support is None:
        return None
    where = "prior.support"
    if isinstance(support, str):
        where = f"prior.support {support!r}"
        support = load_array(support, "support mask", "prior.support")
    mask = np.asarray(support)
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"{where} holds {mask.dtype} values; expected a 0/1 or boolean mask")
    if mask.shape != tuple(kernel_shape):
        raise ValueError(f"{where} has shape {mask.shape} but model.kernel_shape is "
                         f"{tuple(kernel_shape)}")
    return mask.astype(bool)


def load_blurred(path: str, *, channels: str = "gray", nan: str = "raise") -> np.ndarray:
    """The blurred image: :func:`jdeconv.data.read_image`, except that with ``nan="mask"`` a
    ``.npy`` file may hold NaN (pixels that are not used)."""
    from jdeconv.data import read_image

    if nan != "mask" or Path(path).suffix.lower() != ".npy":
        return read_image(path, channels=channels)[0]
    a = load_array(path, "blurred image", "data.files.blurred")
    if a.dtype.kind not in "biuf" or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ValueError(f"blurred image file {str(path)!r} holds a {a.dtype} array of shape "
                         f"{a.shape}; expected (m, n) or (m, n, 3) numbers")
    a = np.asarray(a, np.float64)
    if channels == "gray" and a.ndim == 3:
        a = a.mean(axis=2)  # a NaN in any channel masks the pixel
    elif channels == "rgb" and a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a)


def _per_pixel(a: np.ndarray, y_shape, what: str, path: str, key: str) -> np.ndarray:
    """``a`` checked against the blurred image's shape ((m, n), or (m, n, 3) for RGB)."""
    (M, N) = tuple(y_shape)[:2]
    ok = a.shape == (M, N) or (len(y_shape) == 3 and a.shape == tuple(y_shape))
    if not ok:
        raise ValueError(f"{what} file {str(path)!r} has shape {a.shape} but the blurred image is "
                         f"{M}x{N}; give one value per pixel of the blurred image ({key})")
    return a


def load_mask(path: str, y_shape) -> np.ndarray:
    """A pixel mask from an image or ``.npy`` file: nonzero/True = use the pixel (bool)."""
    from jdeconv.data import read_image

    if Path(path).suffix.lower() == ".npy":
        a = load_array(path, "mask", "data.files.mask")
        if a.dtype.kind not in "biuf":
            raise ValueError(f"mask file {str(path)!r} holds {a.dtype} values; expected a 0/1 or "
                             "boolean image")
        a = np.nan_to_num(np.asarray(a, np.float64), nan=0.0)
    else:
        a, _ = read_image(path, channels="keep")
    if a.ndim == 3 and len(y_shape) == 2:
        a = a.max(axis=2)  # a colour mask image: a pixel is used where any channel is nonzero
    return _per_pixel(a != 0, y_shape, "mask", path, "data.files.mask")


def load_weights(path: str, y_shape) -> np.ndarray:
    """Per-pixel inverse variances of the blurred image from a ``.npy`` file."""
    if Path(path).suffix.lower() != ".npy":
        raise ValueError(f"weights file {str(path)!r}: expected a .npy array of inverse variances")
    a = load_array(path, "weights", "data.files.weights")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"weights file {str(path)!r} holds {a.dtype} values; expected numbers")
    return _per_pixel(np.asarray(a, np.float64), y_shape, "weights", path, "data.files.weights")


def load_pair(files: FilesData, kernel_shape, mode: str, *, channels: str = "gray",
              nan: str = "raise"):
    """``(x, y, truth or None)`` from image files (converted to gray, or RGB ``(m, n, 3)``)."""
    from jdeconv.data import read_image

    x, _ = read_image(files.original, channels=channels)
    y = load_blurred(files.blurred, channels=channels, nan=nan)
    check_pair_shapes(x.shape, y.shape, kernel_shape, mode,
                      names=(f"original ({files.original})", f"blurred ({files.blurred})"))
    truth = None if files.truth is None else load_truth(files.truth, kernel_shape)
    return x, y, truth


class Pairs(NamedTuple):
    """A configuration's data, with a leading batch axis (B = 1 for one pair, 3 for RGB)."""

    xs: np.ndarray
    ys: np.ndarray
    truths: np.ndarray | None  # in model.orientation
    mask: np.ndarray | None = None  # (M, N) for every pair, or (B, M, N)
    weights: np.ndarray | None = None
    field_truth: np.ndarray | None = None  # (gy, gx, k, l), convolution orientation


def _channels_first(a):
    return None if a is None else (np.moveaxis(a, -1, 0) if a.ndim == 3 else a)


def pairs_for(cfg: Config, progress=None) -> Pairs:
    """The :class:`Pairs` of a configuration: ``(xs, ys, truths or None, mask, weights)``.

    RGB data (``data.channels: rgb``) become a batch of three channels. Truths
    are in ``model.orientation`` (flipped 180° for ``correlation``: synthetic
    kernels are made as convolution kernels, truth files are read as given).
    ``progress`` wraps the loop over synthetic pairs (e.g. ``tqdm``); None: no progress.
    """
    mode, rgb = cfg.model.mode, cfg.data.channels == "rgb"
    kshape = "auto" if cfg.model.auto else tuple(cfg.model.kernel_shape)
    files = cfg.data.files
    if files is not None:
        x, y, truth = load_pair(files, kshape, mode, channels=cfg.data.channels,
                                nan=cfg.model.nan)
        mask = None if files.mask is None else load_mask(files.mask, y.shape)
        weights = None if files.weights is None else load_weights(files.weights, y.shape)
        if rgb:
            n = x.shape[-1]
            return Pairs(np.moveaxis(x, -1, 0), np.moveaxis(y, -1, 0),
                         None if truth is None else np.repeat(truth[None], n, axis=0),
                         _channels_first(mask), _channels_first(weights))
        return Pairs(x[None], y[None], None if truth is None else truth[None], mask, weights)
    base = cfg.kernel_base_shape()
    if rgb:
        pairs = [make_pair(cfg.data.synthetic, base, mode, seed=cfg.seed, channel=c)
                 for c in range(3)]
    else:
        seeds = range(cfg.seed, cfg.seed + cfg.data.batch)
        if progress is not None:
            seeds = progress(seeds, desc="data", leave=False)
        pairs = [make_pair(cfg.data.synthetic, base, mode, seed=s) for s in seeds]
    xs, ys, hs = (np.stack(a) for a in zip(*pairs))
    if cfg.model.orientation == "correlation":
        hs = np.ascontiguousarray(hs[..., ::-1, ::-1])
    return Pairs(xs, ys, hs, field_truth=field_truth(cfg.data.synthetic, base))
