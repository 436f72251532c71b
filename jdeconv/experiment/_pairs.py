"""Image pairs for experiments: synthesised from a configuration or read from files.

One implementation serves the runner (``jdeconv run``) and the command line
(``jdeconv simulate``, ``jdeconv estimate``): a synthetic pair is
``x = quantize(make_image(...))``, ``h = make_kernel(...)`` and
``y = quantize(noise(conv2d(x, h, mode)))``, each noise from its own seeded
stream; a pair from files is checked against the mode before anything runs.
Arrays are float64 NumPy; JAX is imported only to blur.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from jdeconv.experiment._config import Config, FilesData, SyntheticData

__all__ = ["blur", "check_pair_shapes", "default_kernel_params", "load_array", "load_pair",
           "load_support", "load_truth", "make_pair", "pairs_for", "seed_of", "synthesize"]


def default_kernel_params(family: str, kernel_shape) -> dict[str, float]:
    """Parameters for ``make_kernel(family, kernel_shape)`` when none are given.

    Scaled to the kernel size so the kernel fits its window: a Gaussian of
    sigma ``max(k, l) / 7.5`` (2 for 15x15), a motion blur of length
    ``0.6 max(k, l)``, a disk of radius ``0.4 (min(k, l) - 1)``, an Airy pattern
    with its first dark ring at ``min(k, l) / 5``; box and random need none.

    Example:
        >>> default_kernel_params("gaussian", (15, 15))
        {'sigma': 2.0}
    """
    k, l = kernel_shape
    key = str(family).strip().lower()
    if key == "gaussian":
        return {"sigma": round(max(k, l) / 7.5, 4)}
    if key == "motion":
        return {"length": round(0.6 * max(k, l), 4), "angle": 0.0}
    if key == "disk":
        return {"radius": round(max(0.4 * (min(k, l) - 1), 0.5), 4)}
    if key == "airy":
        return {"radius": round(max(min(k, l) / 5, 0.5), 4)}
    return {}


def seed_of(*parts: int) -> int:
    """A deterministic 32-bit seed derived from integers (independent streams).

    Example:
        >>> seed_of(0, 1) == seed_of(0, 1) != seed_of(0, 2)
        True
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint32)[0])


def _blur64(x: np.ndarray, h: np.ndarray, mode: str) -> np.ndarray:
    """``conv2d(x, h, mode)`` computed in float64 whatever the JAX precision setting."""
    import jax

    from jdeconv._conv import conv2d

    with jax.enable_x64(True):
        return np.asarray(conv2d(np.asarray(x, np.float64), np.asarray(h, np.float64), mode=mode),
                          np.float64)


def blur(x: np.ndarray, h: np.ndarray, mode: str, *, gaussian_sigma: float = 0.0,
         poisson_photons: float | None = None, bits: int | None = None, seed: int = 0) -> np.ndarray:
    """``y = conv2d(x, h, mode)`` in float64, then noise and quantisation.

    Poisson noise (``poisson_photons`` per unit intensity), then Gaussian noise
    (``gaussian_sigma``), then quantisation to ``bits`` (clipped to [0, 1]),
    each noise from its own stream seeded by ``seed``.
    """
    from jdeconv.data import add_gaussian_noise, add_poisson_noise, quantize

    y = _blur64(x, h, mode)
    if poisson_photons is not None:
        y = add_poisson_noise(np.clip(y, 0.0, None), poisson_photons, seed=seed_of(seed, 1))
    if gaussian_sigma > 0:
        y = add_gaussian_noise(y, gaussian_sigma, seed=seed_of(seed, 2))
    if bits is not None:
        y = quantize(y, bits)
    return y


def synthesize(x: np.ndarray, h: np.ndarray, mode: str, *, gaussian_sigma: float = 0.0,
               poisson_photons: float | None = None, bits: int | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: the original quantised to ``bits`` (if set) and its blurred, noisy copy."""
    from jdeconv.data import quantize

    if bits is not None:
        x = quantize(x, bits)
    y = blur(x, h, mode, gaussian_sigma=gaussian_sigma, poisson_photons=poisson_photons,
             bits=bits, seed=seed)
    return np.asarray(x, np.float64), y


def make_pair(synthetic: SyntheticData, kernel_shape: tuple[int, int], mode: str, *,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic pair ``(x, y, h)`` (float64 NumPy arrays).

    ``x = make_image(image, image_shape, seed=seed)`` (quantised to ``bits`` if
    set), ``h = make_kernel(kernel, kernel_shape, seed=seed)`` and ``y`` from
    :func:`blur` with the configured noise and ``bits``.
    """
    from jdeconv.data import make_image, make_kernel

    x = make_image(synthetic.image, tuple(synthetic.image_shape), seed=seed, **synthetic.image_options)
    params = synthetic.kernel_params
    if params is None:
        params = default_kernel_params(synthetic.kernel, kernel_shape)
    h = make_kernel(synthetic.kernel, tuple(kernel_shape), seed=seed, **params)
    x, y = synthesize(x, h, mode, gaussian_sigma=synthetic.noise.gaussian_sigma,
                      poisson_photons=synthetic.noise.poisson_photons, bits=synthetic.bits, seed=seed)
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
    """Reads a true kernel from ``.npy`` or ``.csv`` and checks its shape."""
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
    if h.shape != tuple(kernel_shape):
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


def load_pair(files: FilesData, kernel_shape, mode: str):
    """``(x, y, truth or None)`` from image files (converted to gray)."""
    from jdeconv.data import read_image

    x, _ = read_image(files.original, channels="gray")
    y, _ = read_image(files.blurred, channels="gray")
    check_pair_shapes(x.shape, y.shape, kernel_shape, mode,
                      names=(f"original ({files.original})", f"blurred ({files.blurred})"))
    truth = None if files.truth is None else load_truth(files.truth, kernel_shape)
    return x, y, truth


def pairs_for(cfg: Config, progress=None):
    """``(xs, ys, truths or None)`` of a configuration, stacked along a leading batch axis.

    ``progress`` wraps the loop over synthetic pairs (e.g. ``tqdm``); None: no progress.
    """
    kshape, mode = tuple(cfg.model.kernel_shape), cfg.model.mode
    if cfg.data.files is not None:
        x, y, truth = load_pair(cfg.data.files, kshape, mode)
        return x[None], y[None], None if truth is None else truth[None]
    seeds = range(cfg.seed, cfg.seed + cfg.data.batch)
    if progress is not None:
        seeds = progress(seeds, desc="data", leave=False)
    pairs = [make_pair(cfg.data.synthetic, kshape, mode, seed=s) for s in seeds]
    xs, ys, hs = (np.stack(a) for a in zip(*pairs))
    return xs, ys, hs
