"""Experiment configuration: a YAML file parsed at the edge into frozen pydantic models.

A configuration describes one experiment (or a sweep of experiments): where the
image pair comes from (files or a synthetic blur), the forward model, the prior,
the regularisation, the solver, what to write, and an optional ``sweep`` over
any of these settings. Every key has a default, so ``{}`` is a valid
configuration (the original question: a 256x256 shapes image blurred by a
15x15 Gaussian of sigma 2, valid mode, no noise).

Example YAML::

    name: question_fista
    data:
      synthetic: {image: shapes, image_shape: 256, kernel: gaussian, kernel_params: {sigma: 2}}
    model: {mode: valid, kernel_shape: 15}
    prior: {name: simplex}
    solver: {name: fista, max_iters: 500, options: {restart: false}}
    sweep:
      solver.name: [gd, fista]

Real calibration pairs (issue 12) have their keys in ``model``: ``kernel_shape:
auto`` (with ``max_kernel_shape``), ``gain``, ``background`` (none, constant,
plane or a polynomial degree), ``loss`` (l2, huber), ``orientation``
(convolution, correlation: also for the truth and support files),
``saturation``, ``nan`` (raise, mask) and ``weights: poisson``; per-pixel
files in ``data.files`` (``mask``, ``weights``); ``data.channels: rgb`` for
one kernel per colour channel. Synthetic pairs can be made real-like with
``data.synthetic.kernel_shape`` / ``kernel_offset`` (an off-centre true
kernel), ``gain`` / ``offset`` (an exposure change) and ``spots`` /
``spot_value`` / ``saturation_level`` (clipped highlights)::

    data:
      synthetic: {image: natural:camera, image_shape: 160, kernel: motion, kernel_shape: 11,
                  kernel_offset: [3, -2], gain: 0.97, offset: 0.008, bits: 8}
    model: {mode: same, kernel_shape: auto, gain: true, background: constant}

Mistakes become one-line :class:`ConfigError` messages that name the full key
path, e.g. ``solver.max_iter: unknown key; did you mean 'max_iters'?``. Sizes,
counts and the file itself are bounded (a config file of at most 1 MB, nesting
at most 32 levels deep, iteration counts and sizes within
:mod:`jdeconv._limits`), so a typo never exhausts the machine.

Relative file paths (``data.files.*``, ``prior.support``) written in a
configuration file are resolved against the directory of that file; paths
given as overrides (``--set data.files.original=x.npy``) or in a dict are
resolved against the current directory.

Example:
    >>> from jdeconv.experiment import load_config
    >>> cfg = load_config({"solver": {"name": "fista"}}, ["solver.max_iters=50"])
    >>> cfg.solver.name, cfg.solver.max_iters, cfg.model.kernel_shape
    ('fista', 50, (15, 15))
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from jdeconv import _limits, _names
from jdeconv._names import (BACKGROUNDS, Loss, Mode, NanPolicy, Orientation, Prior, Solver)

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "FilesData",
    "ModelConfig",
    "NoiseConfig",
    "OutputsConfig",
    "PriorConfig",
    "RegularizationWeights",
    "SolverConfig",
    "SyntheticData",
    "check_name",
    "default_kernel_params",
    "load_config",
    "parse_override",
]

#: Largest configuration file read (a config is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of mappings and lists, and most values in all.
MAX_DEPTH = 32
MAX_NODES = 100_000
#: Most points in a sweep (the cartesian product) and pairs in a batch.
MAX_SWEEP_POINTS = 10_000
MAX_BATCH = 65_536
MAX_NAME_LENGTH = 100

#: Keys that hold file paths (resolved against the config file's directory or the current one).
PATH_KEYS = ("data.files.original", "data.files.blurred", "data.files.truth", "data.files.mask",
             "data.files.weights", "prior.support")
#: Highest polynomial degree of ``model.background`` (the engine's bound,
#: ``jdeconv._weighted_gram._MAX_BACKGROUND_DEGREE``; a test keeps them equal).
MAX_BACKGROUND_DEGREE = 10
#: Most bright spots ``data.synthetic.spots`` adds to a synthetic original.
MAX_SPOTS = 100_000


class ConfigError(ValueError):
    """A configuration mistake; ``str(error)`` is one line naming the key path."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------
# Field types shared by the sections (bounded before anything is allocated).
# ---------------------------------------------------------------------------


def _pair(value: Any) -> Any:
    """``15`` -> ``(15, 15)``; ``"15x11"`` -> ``(15, 11)``; lists pass through (then validated)."""
    if isinstance(value, bool):
        return value  # rejected by the int check with a clear message
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str) and "x" in value.lower():
        parts = value.lower().split("x")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            return tuple(int(p) for p in parts)
    return value


def _shape_type(maximum: int):
    """A ``(rows, cols)`` field: an int or a pair, each side in ``[1, maximum]``."""
    def check(value: Any) -> Any:
        value = _pair(value)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            for v in value:
                if isinstance(v, (int, float)) and not isinstance(v, bool) and (
                        not math.isfinite(v) or v > maximum or v <= 0):
                    shown = [v if isinstance(v, int) else float(v) for v in value]
                    raise ValueError(f"expected positive sizes of at most {maximum}, got {shown}")
        return value
    return Annotated[tuple[int, int], BeforeValidator(check)]


def _count_type(minimum: int, maximum: int):
    """An integer in ``[minimum, maximum]``; ``1e23`` is refused by the bound, not by an overflow."""
    def check(value: Any) -> Any:
        if isinstance(value, str):  # YAML 1.1 reads 1e5 as a string; take it as the number meant
            try:
                number = float(value)
            except ValueError:
                return value
            value = int(number) if number.is_integer() and abs(number) <= maximum else number
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                (isinstance(value, float) and not math.isfinite(value)) or value > maximum):
            raise ValueError(f"expected an integer of at most {maximum}, got {value:g}")
        return value
    return Annotated[int, BeforeValidator(check), Field(ge=minimum, le=maximum)]


ImageShape = _shape_type(_limits.MAX_IMAGE_SIDE)
KernelShape = _shape_type(_limits.MAX_KERNEL_SIDE)


def _whole(v: Any) -> int | None:
    """``v`` as an int when it is a whole number (not a bool), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return None


def _kernel_shape_or_auto(value: Any) -> Any:
    """``auto``, or a kernel box (an int, ``"15x11"`` or a pair), checked here in full.

    Everything is decided before pydantic's union sees the value, so a mistake
    is one message at ``model.kernel_shape`` rather than one per union member.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, float) and _whole(value) is not None:
        value = _whole(value)
    value = _pair(value)
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected 2 entries (a pair like [15, 15]) or auto, got {list(value)!r}")
        sides = [_whole(v) for v in value]
        if None not in sides:
            if any(v <= 0 or v > _limits.MAX_KERNEL_SIDE for v in sides):
                raise ValueError(f"expected positive sizes of at most {_limits.MAX_KERNEL_SIDE}, "
                                 f"got {sides}")
            return tuple(sides)
        for v in value:
            if isinstance(v, float) and (not math.isfinite(v) or v > _limits.MAX_KERNEL_SIDE):
                raise ValueError(f"expected positive sizes of at most {_limits.MAX_KERNEL_SIDE}, "
                                 f"got {[float(w) for w in value]}")
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise ValueError(f"expected an int or a pair like [15, 11], or auto, got {shown}")


KernelShapeOrAuto = Annotated[Union[Literal["auto"], tuple[int, int]],
                              BeforeValidator(_kernel_shape_or_auto)]


def _background(value: Any) -> Any:
    """``none`` / ``constant`` / ``plane`` or a polynomial degree ``0..MAX_BACKGROUND_DEGREE``."""
    if value is None:
        return "none"
    if isinstance(value, str):
        key = value.strip().lower()
        if key in BACKGROUNDS:
            return key
        if key.isdigit():
            value = int(key)
        else:
            match = difflib.get_close_matches(key, list(BACKGROUNDS), n=1, cutoff=0.5)
            raise ValueError(f"expected none, constant, plane or a polynomial degree (an integer "
                             f"0..{MAX_BACKGROUND_DEGREE}), got {value!r}"
                             + (f"; did you mean {match[0]!r}?" if match else ""))
    degree = _whole(value)
    if degree is None or not 0 <= degree <= MAX_BACKGROUND_DEGREE:
        raise ValueError(f"expected none, constant, plane or a polynomial degree (an integer "
                         f"0..{MAX_BACKGROUND_DEGREE}), got {value!r}")
    return degree


BackgroundModel = Annotated[Union[Literal["none", "constant", "plane"], int],
                            BeforeValidator(_background)]


def _offset(value: Any) -> Any:
    """A kernel offset: an int (both axes) or a pair of ints, each within the kernel bound."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        value = (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        for v in value:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and (
                    not math.isfinite(v) or abs(v) > _limits.MAX_KERNEL_SIDE):
                raise ValueError(f"expected offsets of at most {_limits.MAX_KERNEL_SIDE} pixels, "
                                 f"got {list(value)}")
    return value


KernelOffset = Annotated[tuple[int, int], BeforeValidator(_offset)]
Iterations = _count_type(1, _limits.MAX_ITERS)
Seed = _count_type(0, 2**63 - 1)
Batch = _count_type(1, MAX_BATCH)
Weight = Annotated[float, Field(ge=0.0)]


def check_name(name: Any) -> str:
    """Validates a run name: a plain file name (no directory part), used under the output directory.

    Example:
        >>> check_name("question_fista")
        'question_fista'
        >>> check_name("../elsewhere")
        Traceback (most recent call last):
        ...
        ValueError: '../elsewhere' is not a plain file name: ...
    """
    if not isinstance(name, str):
        raise ValueError(f"expected a string, got {name!r}")
    bad = (not name or name in (".", "..") or name.startswith(".") or len(name) > MAX_NAME_LENGTH
           or any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name))
    if bad:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise ValueError(f"{shown!r} is not a plain file name: use letters, digits and '_-.+=' "
                         f"(no '/', no leading '.', at most {MAX_NAME_LENGTH} characters), "
                         "e.g. name: my_run; choose the parent directory with --out")
    return name


# ---------------------------------------------------------------------------
# Sections.
# ---------------------------------------------------------------------------


def default_kernel_params(family: str, kernel_shape) -> dict[str, float]:
    """Parameters for ``make_kernel(family, kernel_shape)`` when none are given.

    Scaled to the kernel size so the kernel fits its window: a Gaussian of
    sigma ``max(k, l) / 7.5`` (2 for 15x15), a motion blur of length
    ``0.6 max(k, l)``, a disk of radius ``0.4 (min(k, l) - 1)``, an Airy pattern
    with its first dark ring at ``min(k, l) / 5``; box and random need none.
    A configuration's ``data.synthetic.kernel_params`` default (pure Python:
    loading a configuration imports no JAX).

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


class NoiseConfig(_Section):
    """Noise added to the synthetic blurred image (Poisson first, then Gaussian)."""

    gaussian_sigma: Weight = Field(0.0, description="standard deviation of additive Gaussian noise")
    poisson_photons: float | None = Field(
        None, gt=0.0, description="photons per unit intensity for shot noise (null: none)")


_PositiveFloat = Annotated[float, Field(gt=0.0)]


def _field_grid(value: Any) -> Any:
    if value is None:
        return None
    from jdeconv.experiment._field_args import parse_grid

    if isinstance(value, (list, tuple)):
        value = "x".join(str(v) for v in value) if value else "[]"
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected [gy, gx] or 'GYxGX', got {value!r}")
    return parse_grid(value)


class SyntheticData(_Section):
    """A synthetic pair: ``y = quantize(noise(conv2d(x, h, mode)))`` with ``x`` and ``h`` made by name."""

    image: str = Field("shapes", description="make_image name (shapes, noise, fractal, natural:camera, ...)")
    image_shape: ImageShape = Field((256, 256), description="image size: int or [m, n]")
    image_options: dict[str, Any] = Field(default_factory=dict, description="extra make_image options")
    kernel: str = Field("gaussian", description="make_kernel family (gaussian, motion, disk, box, airy, random)")
    kernel_params: dict[str, Any] | None = Field(
        None, description="make_kernel parameters (null: defaults scaled to model.kernel_shape, "
        "e.g. sigma = max(k, l) / 7.5 for a Gaussian)")
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    bits: Literal[8, 16] | None = Field(
        None, description="quantise original and blurred images to 8 or 16 bits (null: keep floats)")
    kernel_shape: KernelShape | None = Field(
        None, description="box of the true kernel (null: model.kernel_shape; required when "
        "model.kernel_shape is auto)")
    kernel_offset: KernelOffset = Field(
        (0, 0), description="shift [rows, cols] of the true kernel from the centre of its box: the "
        "truth's box grows by 2|offset| per axis and the kernel sits off-centre in it (real "
        "kernels sit up to several pixels off-centre)")
    gain: float = Field(1.0, gt=0.0, description="photometric gain g: y = g * conv2d(x, h) + offset")
    offset: float = Field(0.0, description="constant added to the blurred image (a background)")
    spots: _count_type(0, MAX_SPOTS) = Field(  # type: ignore[valid-type]
        0, description="number of bright spots (Gaussian blobs of sigma 1 px, peak spot_value) "
        "added to the scene before blurring: highlights that saturate")
    spot_value: float = Field(2.0, gt=0.0, description="peak value of each bright spot")
    saturation_level: float | None = Field(
        None, gt=0.0, description="sensor full well: original and blurred images are clipped at "
        "this level (null: no clipping); estimate with model.saturation at or just below it")
    field_sigma: tuple[_PositiveFloat, _PositiveFloat] | None = Field(
        None, description="[centre, corner]: a spatially varying blur instead of one kernel: "
        "Gaussian kernels on a field_grid of nodes whose sigma grows linearly with the distance "
        "from the centre, from the first value there to the second in the corners, interpolated "
        "bilinearly between the nodes (jdeconv.conv2d_field); the truth is the centre kernel, "
        "and with model.grid metrics.json field.kernel_error compares each tile with the true "
        "field at its centre (null: uniform blur)")
    field_grid: Annotated[tuple[int, int], BeforeValidator(_field_grid)] = Field(
        (5, 5), description="[gy, gx] nodes of the field_sigma blur (unused without field_sigma)")

    @model_validator(mode="after")
    def _field_blur(self):
        if self.field_sigma is None:
            return self
        fixed = [name for name, value, default in (
            ("kernel", self.kernel, "gaussian"), ("kernel_params", self.kernel_params, None),
            ("kernel_offset", tuple(self.kernel_offset), (0, 0))) if value != default]
        if fixed:
            raise ValueError(f"field_sigma makes its own Gaussian kernels; remove {', '.join(fixed)}"
                             " or field_sigma")
        return self


class FilesData(_Section):
    """An image pair read from files (PNG, TIFF, JPEG, .npy), converted to gray."""

    original: str = Field(description="path of the original (sharp) image")
    blurred: str = Field(description="path of the blurred image")
    truth: str | None = Field(
        None, description="path of the true kernel (.npy or .csv), if known; in "
        "model.orientation (a correlation filter when orientation is correlation)")
    mask: str | None = Field(
        None, description="pixels of the blurred image to use: an image or .npy file of its "
        "shape, nonzero/True = use (saturated highlights, hot pixels, moving objects: 0)")
    weights: str | None = Field(
        None, description=".npy file of per-pixel inverse variances of the blurred image "
        "(0 = not used); for Poisson weights use model.weights: poisson")


class DataConfig(_Section):
    """Where the image pair comes from: ``files`` or ``synthetic`` (default: synthetic)."""

    files: FilesData | None = None
    synthetic: SyntheticData | None = None
    batch: Batch = Field(1, description="number of synthetic pairs (seeds seed, seed+1, ...)")
    channels: Literal["gray", "rgb"] = Field(
        "gray", description="gray: one kernel (RGB files averaged to gray); rgb: one kernel per "
        "colour channel (files read as RGB; synthetic originals from seeds seed, seed+1, seed+2 "
        "blurred by the same kernel)")

    @model_validator(mode="before")
    @classmethod
    def _default_source(cls, raw):
        if isinstance(raw, dict) and raw.get("files") is None and raw.get("synthetic") is None:
            raw = {**raw, "synthetic": {}}
        return raw

    @model_validator(mode="after")
    def _one_source(self):
        if self.files is not None and self.synthetic is not None:
            raise ValueError("give either files or synthetic, not both")
        if self.files is not None and self.batch != 1:
            raise ValueError("batch applies to synthetic data only; remove it or set it to 1")
        if self.channels == "rgb" and self.batch != 1:
            raise ValueError("channels: rgb estimates one kernel per channel of one pair; set "
                             "batch to 1")
        if self.synthetic is not None:
            m, n = self.synthetic.image_shape
            if self.batch * m * n > _limits.MAX_IMAGE_PIXELS:
                raise ValueError(f"batch {self.batch} of {m}x{n} images is too large: at most "
                                 f"{_limits.MAX_IMAGE_PIXELS} pixels in all")
        return self


def _psf_model(value: Any) -> Any:
    if value is None:
        return None
    from jdeconv.experiment._psf_fit import check_model

    return check_model(value)




class ModelConfig(_Section):
    """The forward model ``y ≈ gain · conv2d(x, h, mode) + background`` and the pixels that count."""

    mode: Mode = "valid"
    kernel_shape: KernelShapeOrAuto = Field(
        (15, 15), description="int, [k, l] or auto (the box from the data: estimated on a generous "
        "box, then the smallest centred box holding the kernel's support)")
    max_kernel_shape: KernelShape | None = Field(
        None, description="the generous box of kernel_shape: auto (null: the largest odd square "
        "up to 51 within a third of the image); same and circular modes only")
    gain: bool = Field(False, description="fit a free scale g jointly with the kernel")
    background: BackgroundModel = Field(
        "none", description="background fitted jointly: none, constant, plane or a polynomial "
        f"degree 0..{MAX_BACKGROUND_DEGREE}")
    loss: Loss = Field("l2", description="l2, huber (robust to outliers no mask names) or poisson "
                       "(photon counts; matrix-free FISTA)")
    loss_options: dict[str, float] | None = Field(
        None, description="options of the matrix-free data terms: poisson read_noise, "
        "background, floor (counts); huber delta, rounds, warmup")
    orientation: Orientation = Field(
        "convolution", description="convolution, or correlation: the returned kernel and any "
        "truth or support files are flipped 180 degrees")
    saturation: float | None = Field(
        None, gt=0.0, description="level: pixels of y at or above it, and pixels of y whose "
        "footprint covers a pixel of x at or above it, are not used (null: all used)")
    nan: NanPolicy = Field("raise", description="NaN in the blurred image: raise (an error) or "
                           "mask (not used)")
    weights: Literal["poisson"] | None = Field(
        None, description="poisson: inverse-variance weights 1/y (shot noise); per-pixel weights "
        "from a file: data.files.weights")
    psf_model: Annotated[str | None, BeforeValidator(_psf_model)] = Field(
        None, description="fit a parametric PSF (gaussian, elliptical_gaussian, moffat, airy, "
        "defocus, line_motion, zernike) besides the nonparametric kernel; the fit's kernel is "
        "saved and its parameters go to metrics.json (psf_fit)")
    psf_init: dict[str, Any] | None = Field(
        None, description="starting parameters of the parametric fit (null: from the "
        "nonparametric estimate)")
    grid: Annotated[tuple[int, int] | None, BeforeValidator(_field_grid)] = Field(
        None, description="[gy, gx]: also estimate a spatially varying PSF on gy x gx tiles "
        "(kernels.npy, plot_field_*.png, metrics.json field)")
    overlap: float = Field(0.1, ge=0.0, lt=1.0, description="tile overlap fraction (model.grid)")
    coupling: float = Field(0.0, ge=0.0, description="weight tying neighbouring tiles' kernels "
                            "(model.grid)")
    field_degree: int | None = Field(
        None, ge=0, le=6, description="polynomial field of this degree instead of tiles, "
        "evaluated at the model.grid tile centres")

    @property
    def auto(self) -> bool:
        """True when the kernel box is chosen from the data."""
        return self.kernel_shape == "auto"


class PriorConfig(_Section):
    """Constraint on the kernel and an optional support mask."""

    name: Prior = "simplex"
    support: str | list[list[bool]] | None = Field(
        None, description="(k, l) mask of allowed taps: a nested list of 0/1 or a .npy path (null: all)")


class RegularizationWeights(_Section):
    """Weights of the regularisation terms (0 disables a term)."""

    tikhonov: Weight = Field(0.0, description="weight of ||h||^2")
    smooth: Weight = Field(0.0, description="weight of the squared finite differences of h")
    l1: Weight = Field(0.0, description="weight of ||h||_1")


class SolverConfig(_Section):
    """Which solver, how long and how precise (null: the engine's defaults)."""

    name: Solver = "auto"
    max_iters: Iterations | None = None
    tol: float | None = Field(None, gt=0.0)
    dtype: Literal["float32", "float64"] | None = None
    options: dict[str, Any] = Field(
        default_factory=dict, description="solver hyperparameters passed as solver_options=, e.g. "
        "{restart: false} (fista), {momentum: 0.8}, {learning_rate: 0.01} (adam)")


class OutputsConfig(_Section):
    """What a run writes besides the kernel, metrics and loss history."""

    plots: bool = Field(True, description="PNG plots: kernels, convergence, residual")
    save_kernel_png: bool = Field(True, description="kernel.png (16-bit, upsampled, scaled to its range)")
    save_csv: bool = Field(True, description="kernel.csv and loss_history.csv")
    error_curve: bool = Field(
        True, description="kernel error per iteration for first-order solvers when the truth is known "
        "(recorded by the solver itself: estimate_kernel(..., reference=truth))")
    warm_timing: bool = Field(
        False, description="also time a second, compiled call (timing.warm_s; costs a second solve)")
    standard_errors: bool = Field(
        False, description="per-tap standard errors (exact solver): stderr.npy and "
        "plot_kernel_errors.png")


def _check_regularization(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, dict | RegularizationWeights):
        return value
    raise ValueError(
        f"expected null, 'auto' or a mapping of weights such as {{smooth: 0.01}}, got {value!r}")


class Config(_Section):
    """A whole experiment; see the module docstring. Every field has a default."""

    name: str = Field("run", description="a plain file name, used for the run directory")
    description: str = ""
    seed: Seed = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    regularization: Union[RegularizationWeights, Literal["auto"], None] = None
    solver: SolverConfig = Field(default_factory=SolverConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    sweep: dict[str, list[Any]] | None = Field(
        None, description="dotted key -> list of values; the cartesian product is run")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v):
        return check_name(v)

    @field_validator("regularization", mode="before")
    @classmethod
    def _regularization_kind(cls, v):
        return _check_regularization(v)

    @model_validator(mode="after")
    def _cross_checks(self):
        self._check_model()
        sup = self.prior.support
        if isinstance(sup, list):
            shape = (len(sup), len(sup[0]) if sup else 0)
            if any(len(row) != shape[1] for row in sup) or shape != tuple(self.model.kernel_shape):
                raise ValueError(
                    f"prior.support: expected a {self.model.kernel_shape[0]}x{self.model.kernel_shape[1]} "
                    f"mask (model.kernel_shape), got {shape[0]} rows of lengths "
                    f"{sorted({len(r) for r in sup})}")
        if self.data.synthetic is not None and self.data.synthetic.kernel_params is None:
            syn = self.data.synthetic.model_copy(update={
                "kernel_params": default_kernel_params(self.data.synthetic.kernel,
                                                       self.kernel_base_shape())})
            object.__setattr__(self, "data", self.data.model_copy(update={"synthetic": syn}))
        if self.data.synthetic is not None:
            self._check_synthetic_boxes()
        return self

    def _check_model(self) -> None:
        model, files = self.model, self.data.files
        if model.max_kernel_shape is not None:
            if not model.auto:
                raise ValueError("model.max_kernel_shape: applies only with model.kernel_shape: "
                                 "auto; remove it or set kernel_shape: auto")
            if model.mode in ("valid", "full"):
                raise ValueError(f"model.max_kernel_shape: has no effect in mode {model.mode!r} "
                                 "(the images' shapes fix the box there); remove it or use mode "
                                 "same")
        if model.grid is not None and model.coupling > 0:
            extras = [f"model.{name}" for name in
                      _names.coupling_conflicts(model.gain, model.background, model.loss)]
            if extras:
                raise ValueError(f"model.coupling: > 0 does not combine with {', '.join(extras)} "
                                 "(the coupled problem is a plain least-squares one); set "
                                 "coupling: 0 (independent tiles) or drop those options")
        if model.auto and self.prior.support is not None:
            raise ValueError("prior.support: a support mask needs a fixed model.kernel_shape, "
                             "not auto")
        if model.weights is not None and files is not None and files.weights is not None:
            raise ValueError("model.weights: give either model.weights: poisson or "
                             "data.files.weights, not both")
        if model.auto and self.data.synthetic is not None and \
                self.data.synthetic.kernel_shape is None:
            raise ValueError("data.synthetic.kernel_shape: required when model.kernel_shape is "
                             "auto (the box the true kernel is made in), e.g. kernel_shape: 15")

    def _check_synthetic_boxes(self) -> None:
        m, n = self.data.synthetic.image_shape
        K, L = self.truth_shape()
        mode = self.model.mode
        if not self.model.auto:
            k, l = self.model.kernel_shape
            if mode in ("valid", "circular") and (k > m or l > n):
                raise ValueError(
                    f"model.kernel_shape: {[k, l]} is larger than data.synthetic.image_shape "
                    f"{[m, n]} in mode {mode!r}")
            if mode in ("valid", "full") and (K, L) != (k, l):
                raise ValueError(
                    f"model.kernel_shape: {[k, l]} differs from the true kernel's box {[K, L]} "
                    "(data.synthetic.kernel_shape grown by 2|kernel_offset|); in mode "
                    f"{mode!r} the images' shapes fix the box: set model.kernel_shape to "
                    f"{[K, L]} or auto, or use mode same")
        if K > m or L > n:
            raise ValueError(
                f"data.synthetic.kernel_shape: the true kernel's box {[K, L]} is larger than "
                f"data.synthetic.image_shape {[m, n]}")

    # -- helpers -----------------------------------------------------------

    def kernel_base_shape(self) -> tuple[int, int]:
        """The box a synthetic kernel is made in (``data.synthetic.kernel_shape`` or the model's)."""
        syn = self.data.synthetic
        if syn is not None and syn.kernel_shape is not None:
            return tuple(syn.kernel_shape)
        if self.model.auto:  # only reached for files data, where nothing is made
            return (15, 15)
        return tuple(self.model.kernel_shape)

    def truth_shape(self) -> tuple[int, int] | None:
        """The box of the synthetic true kernel: the base box grown by ``2|kernel_offset|``.

        None for file data (the truth file, if any, has its own shape).
        """
        syn = self.data.synthetic
        if syn is None:
            return None
        (k, l), (dr, dc) = self.kernel_base_shape(), syn.kernel_offset
        return (k + 2 * abs(dr), l + 2 * abs(dc))

    def regularization_dict(self) -> dict[str, float] | str | None:
        """What the engine takes: None, ``"auto"`` or ``{name: weight}`` (nonzero weights only)."""
        reg = self.regularization
        if reg is None or reg == "auto":
            return reg
        weights = {k: float(v) for k, v in reg.model_dump().items() if v}
        return weights or None

    def resolved(self) -> dict[str, Any]:
        """The configuration as plain data with every default filled in."""
        out = self.model_dump(mode="json")
        if not self.model.auto:
            out["model"]["kernel_shape"] = list(self.model.kernel_shape)
        if self.model.max_kernel_shape is not None:
            out["model"]["max_kernel_shape"] = list(self.model.max_kernel_shape)
        syn = self.data.synthetic
        if syn is not None:
            out["data"]["synthetic"]["image_shape"] = list(syn.image_shape)
            out["data"]["synthetic"]["kernel_offset"] = list(syn.kernel_offset)
            if syn.kernel_shape is not None:
                out["data"]["synthetic"]["kernel_shape"] = list(syn.kernel_shape)
        return out

    def to_yaml(self) -> str:
        """YAML text of :meth:`resolved` (loads back to an equal ``Config``)."""
        return yaml.safe_dump(self.resolved(), sort_keys=False, default_flow_style=None, width=100)

    def sweep_points(self) -> list[tuple[dict[str, Any], Config]]:
        """The cartesian product of ``sweep`` as ``(assignment, config)`` pairs (sweep removed).

        Without a sweep this is ``[({}, self)]``.
        """
        if not self.sweep:
            return [({}, self)]
        keys = list(self.sweep)
        base = self.resolved()
        base["sweep"] = None
        points = []
        for values in itertools.product(*(self.sweep[k] for k in keys)):
            assignment = dict(zip(keys, values))
            raw = _deepcopy(base)
            for key, value in assignment.items():
                _assign(raw, key, value, origin="sweep")
            points.append((assignment, _validate(raw, where="sweep point " + _label(assignment))))
        return points


def _label(assignment: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in assignment.items())


# ---------------------------------------------------------------------------
# Loading, overrides and error messages.
# ---------------------------------------------------------------------------


def _check_size(raw: Any, where: str) -> None:
    """Refuses data nested deeper than MAX_DEPTH or holding more than MAX_NODES values.

    Iterative (never a RecursionError) and bounded in time even for YAML aliases
    that share one list many times over (the walk stops at MAX_NODES).
    """
    stack, nodes = [(raw, 1)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ConfigError(f"{where} holds more than {MAX_NODES} values; a configuration is a "
                              "few settings (generate large inputs as files)")
        if isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                raise ConfigError(f"{where} is nested more than {MAX_DEPTH} levels deep; a "
                                  "configuration is a few levels of sections")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, depth + 1) for _, v in items)


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``Foo | None``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _section_of(arg)
            if found is not None:
                return found
    return None


def _free_mapping(model: type[BaseModel], key: str) -> bool:
    """True for fields holding arbitrary mappings (options, sweep)."""
    ann = model.model_fields[key].annotation
    return typing.get_origin(ann) is dict or any(
        typing.get_origin(a) is dict for a in typing.get_args(ann))


def _suggest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(choices)}"


def _check_keys(raw: Any, model: type[BaseModel], path: str) -> None:
    """Raises ConfigError for the first unknown key (with the closest valid one)."""
    if not isinstance(raw, dict):
        return
    fields = list(model.model_fields)
    for key, value in raw.items():
        full = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str):
            raise ConfigError(f"{full}: keys must be strings, got {key!r}")
        if key not in model.model_fields:
            raise ConfigError(f"{full}: unknown key{_suggest(key, fields)}")
        sub = _section_of(model.model_fields[key].annotation)
        if sub is not None and isinstance(value, dict):
            _check_keys(value, sub, full)


def _resolve_path(model: type[BaseModel], key: str, origin: str) -> None:
    """Validates a dotted key such as ``solver.max_iters`` against the schema."""
    parts = key.split(".")
    current: type[BaseModel] | None = model
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if current is None:
            return  # inside a free mapping (image_options.kind): anything goes
        if part not in current.model_fields:
            raise ConfigError(f"{origin}: {here}: unknown key{_suggest(part, list(current.model_fields))}")
        nxt = _section_of(current.model_fields[part].annotation)
        if nxt is None and i < len(parts) - 1 and not _free_mapping(current, part):
            raise ConfigError(f"{origin}: {here} is a value, not a section")
        current = nxt


def _assign(raw: dict, key: str, value: Any, *, origin: str) -> None:
    """``raw[a][b] = value`` for ``key = 'a.b'``, creating sections as needed."""
    _resolve_path(Config, key, origin)
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


_SIMPLE = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "int_parsing_size": "a smaller integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)", "list_type": "a list", "tuple_type": "a list",
    "none_required": "null",
}
_OPS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _expected(err: dict) -> str:
    t, ctx = err["type"], err.get("ctx") or {}
    if t in _SIMPLE:
        return "expected " + _SIMPLE[t]
    if t in _OPS:
        return f"expected a value {_OPS[t]} {next(iter(ctx.values()))}"
    if t == "literal_error":
        return "expected one of " + ctx.get("expected", "")
    if t in ("too_short", "too_long"):
        return f"expected {ctx.get('max_length', ctx.get('min_length'))} entries (a pair like [15, 15])"
    if t == "missing":
        return "required key is missing"
    if t == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"]


def _clean_loc(loc: tuple) -> list:
    """Drops the tags pydantic adds for union members ("RegularizationWeights", "literal['auto']")."""
    parts, current = [], Config
    for part in loc:
        if isinstance(part, int):
            parts.append(part)
        elif current is None:
            parts.append(part)  # inside a free mapping or a plain value
        elif part in current.model_fields:
            parts.append(part)
            current = _section_of(current.model_fields[part].annotation)
    return parts


_SHAPE_KEYS = ("kernel_shape", "image_shape", "max_kernel_shape", "kernel_offset")


def _format(exc: ValidationError, where: str = "") -> str:
    errors = exc.errors(include_url=False)

    # Prefer the most specific error: deepest location, not a union member's type mismatch.
    def score(err):
        return (len(_clean_loc(err["loc"])), err["type"] not in ("literal_error", "none_required", "model_type"))

    err = max(errors, key=score)
    parts = _clean_loc(err["loc"])
    if parts and parts[-1] in (0, 1) and len(parts) >= 2 and parts[-2] in _SHAPE_KEYS:
        parts = parts[:-1]  # an entry of a shape: name the shape
    path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in parts).replace(".[", "[")
    message = _expected(err)
    if parts and parts[-1] in _SHAPE_KEYS and err["type"] not in (
            "value_error", "greater_than", "too_short", "too_long"):
        message = ("expected an int or a pair like [2, -3]" if parts[-1] == "kernel_offset"
                   else "expected an int or a pair like [15, 11]")
    elif parts == ["regularization"] and err["type"] != "value_error":
        message = "expected null, 'auto' or a mapping of weights such as {smooth: 0.01}"
    if err["type"] not in ("missing", "value_error") and "input" in err:
        shown = repr(err["input"])
        message += f", got {shown if len(shown) <= 60 else shown[:57] + '...'}"
        if err["type"] == "literal_error" and isinstance(err["input"], str):
            expected = str((err.get("ctx") or {}).get("expected", "")).replace(" or ", ", ")
            choices = [c.strip(" '") for c in expected.split(",")]
            match = difflib.get_close_matches(err["input"], [c for c in choices if c], n=1, cutoff=0.5)
            if match:
                message += f"; did you mean {match[0]!r}?"
    line = f"{path}: {message}" if path else message
    return f"{where}: {line}" if where else line


def _validate(raw: Any, *, where: str = "") -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where + ': ' if where else ''}config: expected a mapping of sections "
                          f"(data, model, prior, ...), got {type(raw).__name__}")
    try:
        _check_keys(raw, Config, "")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format(e, where)) from None


def _resolve_files(raw: dict, base: Path) -> None:
    """Makes the relative paths under :data:`PATH_KEYS` relative to ``base``."""
    for key in PATH_KEYS:
        *sections, leaf = key.split(".")
        node: Any = raw
        for s in sections:
            node = node.get(s) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str) and not os.path.isabs(node[leaf]):
            node[leaf] = str(base / node[leaf])


def parse_override(text: str) -> tuple[str, Any]:
    """``"solver.max_iters=50"`` -> ``("solver.max_iters", 50)`` (value read as YAML)."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. solver.max_iters=100")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r}: expected a dotted key before '=', e.g. solver.name=fista")
    if len(value) > MAX_CONFIG_BYTES:
        raise ConfigError(f"override {key}=...: the value is longer than {MAX_CONFIG_BYTES} bytes")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({_yaml_problem(e)})") from None
    _check_size(parsed, f"override {key}")
    return key, parsed


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return problem


def _read_yaml(path: Path) -> Any:
    """Reads a config file of at most MAX_CONFIG_BYTES (checked before parsing)."""
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise ConfigError(f"config path {str(path)!r} is a directory; give a .yaml file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(path)!r} is larger than {MAX_CONFIG_BYTES // 1024} KiB; "
                          "a configuration is a few settings (is this the right file?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: not UTF-8 text ({e.reason} at "
                          f"byte {e.start})") from None
    try:
        return yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - the safe loader
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:
        raise ConfigError(f"config file {str(path)!r} is nested too deeply (at most {MAX_DEPTH} "
                          "levels)") from None


def _count_points(sweep: Any) -> None:
    if isinstance(sweep, dict):
        sizes = [len(v) for v in sweep.values() if isinstance(v, list)]
        if math.prod(sizes) > MAX_SWEEP_POINTS:
            raise ConfigError(f"sweep: {' x '.join(map(str, sizes))} = {math.prod(sizes)} points; "
                              f"at most {MAX_SWEEP_POINTS} (split the sweep)")


def load_config(source: str | os.PathLike[str] | dict | Config | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads and validates a configuration.

    Args:
        source: a YAML file path, a dict (as from ``yaml.safe_load``), a
            :class:`Config`, or None for all defaults.
        overrides: ``"a.b=value"`` strings applied in order; ``value`` is read
            with ``yaml.safe_load`` (``solver.max_iters=50`` gives an int,
            ``model.kernel_shape=[15,11]`` a list, ``regularization=null`` None).
            Relative paths in overrides are relative to the current directory.

    Returns:
        A frozen :class:`Config`. ``name`` defaults to the file's stem.

    Raises:
        ConfigError: one line naming the problem and the key path (unknown key
            with the closest valid one, wrong type or range, missing file,
            invalid, too large or too deeply nested YAML).
    """
    try:
        return _load(source, overrides)
    except RecursionError:  # e.g. a deeply nested dict from Python; files are checked earlier
        raise ConfigError(f"config is nested too deeply (at most {MAX_DEPTH} levels)") from None


def _load(source, overrides) -> Config:
    base = Path.cwd()
    stem = None
    where = "config"
    if isinstance(source, Config):
        raw = source.resolved()
    elif source is None:
        raw = {}
    elif isinstance(source, dict):
        raw = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = f"config file {str(path)!r}"
        raw = _read_yaml(path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping of sections (data, model, ...), got "
                              f"{type(raw).__name__}")
        base = path.resolve().parent
        stem = path.stem
    else:
        raise ConfigError(f"config: expected a YAML path or a mapping, got {type(source).__name__}")
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(raw).__name__}")
    _check_size(raw, where)
    raw = _deepcopy(raw)
    if stem is not None and "name" not in raw:
        raw["name"] = stem
    _resolve_files(raw, base)  # the file's own paths: next to the file
    for text in overrides:
        key, value = parse_override(text)
        _assign(raw, key, value, origin=f"override {text!r}")
    _resolve_files(raw, Path.cwd())  # what is still relative came from overrides (or a dict)
    _count_points(raw.get("sweep"))
    cfg = _validate(raw)
    if cfg.sweep:
        for key, values in cfg.sweep.items():
            if not values:
                raise ConfigError(f"sweep.{key}: expected a non-empty list of values")
            _resolve_path(Config, key, "sweep")
            if key.split(".")[0] in ("sweep", "name", "outputs"):
                raise ConfigError(f"sweep: {key}: {key.split('.')[0]} cannot be swept")
        cfg.sweep_points()  # validate every point now, before anything runs
    return cfg
