"""The ``jdeconv`` command line: ``estimate``, ``run`` and ``simulate``.

::

    jdeconv simulate --image shapes --kernel gaussian --kernel-size 15 --out pair/
    jdeconv estimate pair/original.png pair/blurred.png --kernel-size 15 -o kernel.npy
    jdeconv estimate sharp.png shaken.png -k auto --mode same --gain --background constant
    jdeconv run configs/question_exact.yaml --set solver.name=fista

Warnings about the estimate (a fit statistic well above 1, kernel mass on the
box border, 0–255-looking float input, a constant blurred image, JPEG input)
are printed as one line each, ``jdeconv: warning: ...``, on stderr (also with
``--quiet``); ``jdeconv run`` records them in ``metrics.json`` too.

The tool computes in float64 (it enables ``jax_enable_x64``). A user error
(bad option value, unreadable or mismatched images, invalid configuration,
existing or unwritable output) prints one line ``jdeconv: error: ...`` on
stderr and exits with status 2; when a run directory was started, the line
says where its ``.partial`` directory was left. Ctrl-C prints one line and
exits with 130 (143 for SIGTERM). ``--help`` and argument errors are answered
without importing JAX.

Compiled programs are kept in JAX's persistent compilation cache, in
``$XDG_CACHE_HOME/jdeconv/jax`` (default ``~/.cache/jdeconv/jax``), so a second
process with the same shapes does not compile again; ``--no-cache`` or
``JDECONV_NO_COMPILATION_CACHE=1`` turn it off, and a directory set with
``JAX_COMPILATION_CACHE_DIR`` is used as it is.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jdeconv import _limits
from jdeconv._names import BACKGROUNDS, LOSSES, MODES, NAN_POLICIES, ORIENTATIONS, PRIORS, SOLVERS
from jdeconv.experiment._process import (UsageError, cache_directory, check_new_directory,
                                         check_new_file, setup_jax)

__all__ = ["build_parser", "cache_directory", "main"]

#: How ``jdeconv estimate`` treats colour (not the reader's ``channels=``: "shared" is the CLI's).
ESTIMATE_CHANNELS = ("gray", "rgb", "shared")
#: Files ``--image`` reads instead of generating (the reader's formats).
_IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".npy")
#: Highest background polynomial degree (the engine's bound; see _config.MAX_BACKGROUND_DEGREE).
MAX_BACKGROUND_DEGREE = 10


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (partial directories are marked and reported)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``jdeconv: error: ...`` (status 2)."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"jdeconv: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------
# Argument types (checked by argparse, before anything is imported).
# ---------------------------------------------------------------------------


def _unknown(kind: str, value: str, choices: Sequence[str]) -> str:
    """The library's wording for an unknown name (``jdeconv._validation.unknown_name``)."""
    match = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return (f"unknown {kind} {value!r}; expected one of {', '.join(map(repr, choices))}."
            + (f" Did you mean {match[0]!r}?" if match else ""))


def _name(kind: str, choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(_unknown(kind, text, choices))
        return text
    parse.__name__ = kind
    return parse


def _progress_wanted() -> bool:
    """A progress bar from inside long compiled calls, when stderr is a terminal."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def _key_value(text: str) -> tuple[str, float]:
    """``KEY=VALUE`` with a finite number as the value (``--loss-option read_noise=3``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. read_noise=3), got {text!r}")
    number = _number(float)(value.strip())
    return key.strip(), int(number) if float(number).is_integer() else number


def _number(kind: type, *, minimum: float | None = None, maximum: float | None = None,
            positive: bool = False) -> Callable[[str], Any]:
    """One parser for every numeric option: finite, in range, an integer where asked."""
    what = "a whole number" if kind is int else "a number"

    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if kind is int:
            if not value.is_integer():
                raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"expected a finite number >= {minimum:g}, got {text!r}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is too large; at most {maximum:g}")
        return int(value) if kind is int else value
    parse.__name__ = kind.__name__
    return parse


def _size(what: str, maximum: int) -> Callable[[str], tuple[int, int]]:
    """``"15"`` -> (15, 15); ``"15x11"`` / ``"15,11"`` -> (15, 11); each side in [1, maximum]."""
    def parse(text: str) -> tuple[int, int]:
        parts = str(text).lower().replace(",", "x").split("x")
        try:
            size = tuple(int(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} {text!r} is not valid; give N or KxL, e.g. 15 or 15x11") from None
        if len(size) == 1:
            size = size * 2
        if len(size) != 2 or min(size) <= 0:
            raise argparse.ArgumentTypeError(
                f"{what} {text!r} is not valid; give positive N or KxL, e.g. 15 or 15x11")
        if max(size) > maximum:
            raise argparse.ArgumentTypeError(
                f"{what} {text!r} is too large: each side must be at most {maximum}")
        return size  # type: ignore[return-value]
    parse.__name__ = what
    return parse


def _kernel_size_or_auto(maximum: int) -> Callable[[str], Any]:
    """``auto``, or a kernel size as :func:`_size` reads it."""
    size = _size("kernel size", maximum)

    def parse(text: str):
        if str(text).strip().lower() == "auto":
            return "auto"
        return size(text)
    parse.__name__ = "kernel size"
    return parse


def _background(text: str):
    """``none`` / ``constant`` / ``plane`` or a polynomial degree ``N``."""
    key = text.strip().lower()
    if key in BACKGROUNDS:
        return key
    if key.isdigit() and int(key) <= MAX_BACKGROUND_DEGREE:
        return int(key)
    if key.isdigit():
        raise argparse.ArgumentTypeError(f"background degree {text} is too large; at most "
                                         f"{MAX_BACKGROUND_DEGREE}")
    match = difflib.get_close_matches(key, list(BACKGROUNDS), n=1, cutoff=0.5)
    raise argparse.ArgumentTypeError(
        f"unknown background model {text!r}; expected one of "
        f"{', '.join(map(repr, BACKGROUNDS))} or a polynomial degree N (0 = constant, 1 = plane)."
        + (f" Did you mean {match[0]!r}?" if match else ""))


def _regularization(text: str):
    key = text.strip().lower()
    if key in ("none", "null", "0"):
        return None
    if key == "auto":
        return "auto"
    try:
        weight = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--regularization {text!r} is not valid; give auto, none "
                                         "or a smoothness weight such as 1e-3") from None
    if not math.isfinite(weight) or weight < 0:
        raise argparse.ArgumentTypeError(f"--regularization must be a finite weight >= 0, got {text}")
    return {"smooth": weight}


def _params(items: list[str] | None) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {item!r} is not valid; give NAME=VALUE, e.g. sigma=2")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except (yaml.YAMLError, RecursionError):
            raise UsageError(f"--param {item!r}: the value is not valid") from None
    return out


# ---------------------------------------------------------------------------
# Progress and timing lines (JAX set-up: jdeconv.experiment._process).
# ---------------------------------------------------------------------------


def _progress(args):
    from jdeconv.experiment._feedback import tqdm_progress

    return tqdm_progress(quiet=args.quiet)


def _seconds(wall: float, compile_s: float) -> str:
    return f"{wall:.2f} s ({compile_s:.2f} s compiling)"


# ---------------------------------------------------------------------------
# Commands.
# ---------------------------------------------------------------------------


def _cmd_estimate(args) -> int:
    out = Path(args.output)
    if out.suffix.lower() != ".npy":
        raise UsageError(f"output {str(out)!r} must be a .npy file (PNG/CSV copies: --png, --csv)")
    from jdeconv.experiment import _estimate_extras

    _estimate_extras.check(args)
    targets = [out] + [out.with_suffix(s) for s, on in ((".png", args.png), (".csv", args.csv)) if on]
    targets += _estimate_extras.extra_files(args, out)
    for t in targets:
        check_new_file(t, args.overwrite)

    if args.max_kernel_size is not None and args.kernel_size != "auto":
        raise UsageError("--max-kernel-size applies only with --kernel-size auto")

    setup_jax(args)
    import numpy as np

    from jdeconv.data import read_image
    from jdeconv.experiment import _metrics, _pairs
    from jdeconv.experiment._artifacts import kernel_csv_text, kernel_image, save_npy, write_png
    from jdeconv.experiment._feedback import recorded_warnings
    from jdeconv.experiment._runner import estimate_arrays
    from jdeconv.experiment._timing import Stopwatch

    rgb = args.channels == "rgb"
    channels = "rgb" if rgb else "gray"
    with recorded_warnings() as messages:  # JPEG input; then the estimate's own warnings
        x, _ = read_image(args.original, channels=channels)
        y = _pairs.load_blurred(args.blurred, channels=channels, nan=args.nan)
        _pairs.check_pair_shapes(x.shape, y.shape, args.kernel_size, args.mode,
                                 names=(f"original ({args.original})", f"blurred ({args.blurred})"))
        mask = None if args.mask is None else _pairs.load_mask(args.mask, y.shape)
        weights = args.weights
        if weights is not None and weights != "poisson":
            weights = _pairs.load_weights(weights, y.shape)
        if rgb:
            x, y = np.moveaxis(x, -1, 0), np.moveaxis(y, -1, 0)
            mask = None if mask is None or mask.ndim == 2 else np.moveaxis(mask, -1, 0)
            if isinstance(weights, np.ndarray) and weights.ndim == 3:
                weights = np.moveaxis(weights, -1, 0)
        else:
            x, y = x[None], y[None]
        kwargs = dict(mode=args.mode, prior=args.prior, solver=args.solver,
                      regularization=args.regularization, max_iters=args.max_iters, tol=args.tol,
                      gain=args.gain, background=args.background, loss=args.loss,
                      orientation=args.orientation, saturation=args.saturation, nan=args.nan,
                      throw=False)
        if args.loss_options:
            kwargs["loss_options"] = dict(args.loss_options)
        if args.standard_errors:
            kwargs["standard_errors"] = True
        with Stopwatch() as sw:
            est, kernel_size = estimate_arrays(x, y, args.kernel_size,
                                               max_kernel_shape=args.max_kernel_size, mask=mask,
                                               weights=weights, pilot="mean",
                                               progress=_progress_wanted(), **kwargs)
    for message in messages:
        print(f"jdeconv: warning: {message}", file=sys.stderr)
    kernel = np.asarray(est.kernel, np.float64)
    if not np.all(np.isfinite(kernel)):
        raise ValueError(f"the estimate is not finite ({est.message}); try --regularization 1e-3 "
                         "or another --solver")
    kernel, extra_written, extra_lines = _estimate_extras.after_estimate(args, x, y, est, kernel,
                                                                         out)

    save_npy(out, kernel, overwrite=args.overwrite)
    written = [out] + extra_written
    if args.png:
        write_png(out.with_suffix(".png"), kernel_image(kernel, rgb=rgb), overwrite=args.overwrite)
        written.append(out.with_suffix(".png"))
    if args.csv:
        from jdeconv._files import atomic_write_text

        atomic_write_text(out.with_suffix(".csv"), kernel_csv_text(kernel), overwrite=args.overwrite)
        written.append(out.with_suffix(".csv"))
    if not args.quiet:
        print(est.summary())
        for line in _metrics.diagnostic_lines(_metrics.diagnostics(est, kernel_size)):
            print(line)
        sums = np.atleast_1d(kernel.sum(axis=(-2, -1))).ravel()
        print(f"time {_seconds(sw.wall_s, sw.compile_s)}; kernel {'x'.join(map(str, kernel.shape))}, "
              f"sum {', '.join(f'{s:.6g}' for s in sums)}")
        if not bool(np.all(np.asarray(est.converged))):
            print(f"note: {est.message}; raise --max-iters or loosen --tol", file=sys.stderr)
        for line in extra_lines:
            print(line)
        print("wrote " + ", ".join(str(w) for w in written))
    return 0


def _cmd_run(args) -> int:
    from jdeconv.experiment._config import load_config

    overrides = list(args.set or [])
    if args.warm_timing:
        overrides.append("outputs.warm_timing=true")
    cfg = load_config(args.config, overrides)
    if args.out is not None:
        check_new_directory(Path(args.out), "run directory")
    setup_jax(args)
    from jdeconv.experiment._runner import run_experiment

    path = run_experiment(cfg, args.out, progress=_progress(args))
    for message in _run_warnings(path):
        print(f"jdeconv: warning: {message}", file=sys.stderr)
    if not args.quiet:
        _print_run(path)
    return 0


def _run_warnings(path: Path) -> list[str]:
    """The warnings a finished run recorded (a sweep's: each point's, prefixed by the point)."""
    import json

    m = json.loads((path / "metrics.json").read_text())
    if "points" not in m:
        return list(m.get("warnings", ()))
    out = []
    for row in m["points"]:
        point = json.loads((path / row["point"] / "metrics.json").read_text())
        out.extend(f"{row['point']}: {w}" for w in point.get("warnings", ()))
    return out


def _print_run(path: Path) -> None:
    import json

    from jdeconv.experiment._metrics import diagnostic_lines

    m = json.loads((path / "metrics.json").read_text())
    if "points" in m:
        rows = m["points"]
        print(f"sweep of {len(rows)} points written to {path} (wall time {m['timing']['wall_s']:.2f} s)")
        for r in rows:
            print(f"  {r['point']}: solver={r['solver']} rel_error={_g(r.get('relative_error'))} "
                  f"residual={_g(r.get('residual_norm'))} iterations={r.get('iterations')} "
                  f"converged={r.get('converged')} box={r.get('kernel_box')} "
                  f"fit_statistic={_g(r.get('fit_statistic'))} warnings={r.get('warnings', 0)}")
        return
    err = m.get("relative_error", m.get("relative_error_mean"))
    t = m["timing"]
    print(f"run written to {path}")
    print(f"  solver={m['solver']} rel_error={_g(err)} "
          f"residual={_g(m.get('residual_norm', m.get('residual_norm_mean')))} "
          f"iterations={m.get('iterations', m.get('iterations_median'))} "
          f"converged={m.get('converged', m.get('converged_count'))} "
          f"time={_seconds(t['wall_s'], t['compile_s'])}"
          + (f", warm {t['warm_s']:.3f} s" if "warm_s" in t else ""))
    for line in diagnostic_lines(m):
        print(line)


def _g(v) -> str:
    return "n/a" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _looks_like_file(name: str) -> bool:
    return (os.path.sep in name or os.path.splitext(name)[1].lower() in _IMAGE_EXTENSIONS
            or os.path.exists(name))


def _cmd_simulate(args) -> int:
    kshape, ishape = args.kernel_size, args.image_size
    from_file = _looks_like_file(args.image)
    if not from_file:
        if ishape[0] * ishape[1] * (3 if args.rgb else 1) > _limits.MAX_IMAGE_PIXELS:
            raise UsageError(f"image size {ishape[0]}x{ishape[1]} is too large: at most "
                              f"{_limits.MAX_IMAGE_PIXELS} pixels")
        if kshape[0] > ishape[0] or kshape[1] > ishape[1]:
            raise UsageError(f"the {kshape[0]}x{kshape[1]} kernel is larger than the "
                              f"{ishape[0]}x{ishape[1]} image; use a smaller --kernel-size or a "
                              "larger --image-size")
    final = Path(args.out)
    check_new_directory(final, "output directory")
    params = _params(args.param)

    setup_jax(args)
    import datetime as _dt

    import numpy as np

    from jdeconv.data import make_image, make_kernel, read_image, write_image
    from jdeconv.experiment._artifacts import RunDirectory
    from jdeconv.experiment._metrics import versions
    from jdeconv.experiment._pairs import default_kernel_params, synthesize

    if not params:
        params = default_kernel_params(args.kernel, kshape)
    h = make_kernel(args.kernel, kshape, seed=args.seed, **params)
    nch = 3 if args.rgb else 1
    if from_file:
        img, _ = read_image(args.image, channels="rgb" if args.rgb else "gray")
        planes = [img[..., c] for c in range(3)] if args.rgb else [img]
        source: dict[str, Any] = {"file": str(args.image)}
        if img.shape[0] < kshape[0] or img.shape[1] < kshape[1]:
            raise ValueError(f"the {kshape[0]}x{kshape[1]} kernel is larger than the "
                             f"{img.shape[0]}x{img.shape[1]} image {str(args.image)!r}")
    else:
        planes = [make_image(args.image, ishape, seed=args.seed + c) for c in range(nch)]
        source = {"image": args.image, "image_shape": list(ishape)}
    pairs = [synthesize(x, h, args.mode, gaussian_sigma=args.noise, poisson_photons=args.poisson,
                        bits=args.bits, seed=args.seed + 1000 * c) for c, x in enumerate(planes)]
    field_info: dict[str, Any] = {}
    if args.field_sigma is not None:  # a varying blur (jdeconv.experiment._field_run)
        from jdeconv.experiment._field_run import simulate_field_pairs

        pairs, h, field_info = simulate_field_pairs(planes, kshape, args)
        params = field_info["kernel_params"]
    x = np.stack([p[0] for p in pairs], axis=-1) if args.rgb else pairs[0][0]
    y = np.stack([p[1] for p in pairs], axis=-1) if args.rgb else pairs[0][1]

    with RunDirectory(final) as run:
        write_image(run.path("original.png"), x, bit_depth=args.bits)
        write_image(run.path("blurred.png"), y, bit_depth=args.bits, clip=True)
        run.save_npy("kernel.npy", h)
        if field_info:
            run.save_npy("kernels.npy", field_info.pop("kernels"))
        run.write_json("simulation.json", {
            **source, "kernel": args.kernel, "kernel_shape": list(kshape), "kernel_params": params,
            "mode": args.mode, "gaussian_sigma": args.noise, "poisson_photons": args.poisson,
            "bits": args.bits, "seed": args.seed, "rgb": bool(args.rgb),
            "original_shape": list(x.shape), "blurred_shape": list(y.shape),
            "created": _dt.datetime.now().isoformat(timespec="seconds"), "versions": versions(),
            **field_info,
        })
        run.finish()
    if not args.quiet:
        print(f"wrote {final}/original.png {'x'.join(map(str, x.shape))}, blurred.png "
              f"{'x'.join(map(str, y.shape))} ({args.bits}-bit, mode {args.mode}), kernel.npy "
              f"{kshape[0]}x{kshape[1]} ({args.kernel} {params})")
    return 0


# ---------------------------------------------------------------------------
# Parser and entry point.
# ---------------------------------------------------------------------------


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(text, 88)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``jdeconv`` command (imports nothing heavy)."""
    from jdeconv._version import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="jdeconv", description="Estimate the convolution kernel (PSF) that turns an "
                "original image into its blurred copy.", formatter_class=fmt,
                epilog="Run 'jdeconv COMMAND --help' for the options of a command.")
    p.add_argument("--version", action="version", version=f"jdeconv {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-cache", action="store_true",
                        help="do not use the persistent compilation cache (also: "
                        "JDECONV_NO_COMPILATION_CACHE=1); default: cache in "
                        "$XDG_CACHE_HOME/jdeconv/jax or ~/.cache/jdeconv/jax")
    common.add_argument("-q", "--quiet", action="store_true",
                        help="print nothing on success (warnings still go to stderr)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    mode = _name("mode", MODES)
    kernel_size = _size("kernel size", _limits.MAX_KERNEL_SIDE)

    e = sub.add_parser(
        "estimate", help="estimate the kernel from an original and a blurred image",
        formatter_class=fmt, parents=[common],
        description=_wrap("Estimate the kernel h with blurred = conv2d(original, h, mode) from two "
                          "image files (PNG, TIFF, JPEG, .npy) and save it as .npy. The output is "
                          "checked before anything is estimated."),
        epilog="examples:\n  jdeconv estimate sharp.png blurred.png --kernel-size 15 -o kernel.npy --png\n"
        "  jdeconv estimate print.png capture.png -k auto --mode same --gain --background constant "
        "--saturation 0.98")
    e.add_argument("original", help="original (sharp) image file")
    e.add_argument("blurred", help="blurred image file")
    e.add_argument("-k", "--kernel-size", required=True,
                   type=_kernel_size_or_auto(_limits.MAX_KERNEL_SIDE), metavar="N|KxL|auto",
                   help="kernel size, e.g. 15 or 15x11 (rows x columns), or auto: estimated on a "
                   "generous box, then returned in the smallest centred box holding the kernel's "
                   "support (same/circular modes; in valid/full the shapes fix the box)")
    e.add_argument("--max-kernel-size", type=kernel_size, default=None, metavar="N|KxL",
                   help="the generous box of --kernel-size auto (default: the largest odd square "
                   "up to 51 within a third of the image)")
    e.add_argument("--mode", default="valid", type=mode, metavar="MODE",
                   help="geometry: valid (blurred is smaller by size-1), same (same size; borders "
                   "ignored), full, circular (default: valid)")
    e.add_argument("--prior", default="simplex", type=_name("prior", PRIORS), metavar="PRIOR",
                   help="constraint: simplex (h >= 0, sum 1), nonneg, sum_to_one, none (default: simplex)")
    e.add_argument("--solver", default="auto", type=_name("solver", SOLVERS), metavar="SOLVER",
                   help=f"{', '.join(SOLVERS)} (default: auto = exact for small kernels, else fista)")
    e.add_argument("--regularization", default=None, type=_regularization, metavar="auto|none|W",
                   help="none (default), auto, or a smoothness weight W such as 1e-3")
    e.add_argument("--max-iters", type=_number(int, positive=True, maximum=_limits.MAX_ITERS),
                   default=None, metavar="N", help="iteration cap (default: the solver's)")
    e.add_argument("--tol", type=_number(float, positive=True), default=None, metavar="T",
                   help="stopping tolerance (default: 1e-10 in float64)")
    e.add_argument("--gain", action="store_true",
                   help="fit a free scale g jointly: blurred = g * conv2d(original, h) + background")
    e.add_argument("--background", default="none", type=_background,
                   metavar="none|constant|plane|N",
                   help="background fitted jointly: none (default), constant, plane or a "
                   "polynomial degree N")
    e.add_argument("--mask", default=None, metavar="FILE",
                   help="image or .npy of the blurred image's shape: nonzero = use the pixel "
                   "(0: saturated highlights, hot pixels, moving objects)")
    e.add_argument("--weights", default=None, metavar="FILE|poisson",
                   help=".npy of per-pixel inverse variances of the blurred image, or poisson "
                   "(variance taken from the blurred image)")
    e.add_argument("--saturation", type=_number(float, positive=True), default=None,
                   metavar="LEVEL", help="exclude blurred pixels at or above LEVEL and those whose "
                   "footprint covers an original pixel at or above it (e.g. 0.98)")
    e.add_argument("--nan", default="raise", type=_name("nan policy", NAN_POLICIES),
                   metavar="raise|mask", help="NaN in the blurred image (.npy): raise an error "
                   "(default) or mask the pixel")
    e.add_argument("--loss", default="l2", type=_name("loss", LOSSES),
                   metavar="l2|huber|poisson",
                   help="l2 (default), huber (robust to outliers no mask names) or poisson "
                   "(photon counts, matrix-free FISTA)")
    e.add_argument("--loss-option", action="append", default=None, type=_key_value,
                   metavar="KEY=VALUE", dest="loss_options",
                   help="an option of the matrix-free data term, repeatable: poisson "
                   "read_noise=3 background=10 (counts); huber delta=0.01")
    e.add_argument("--orientation", default="convolution",
                   type=_name("orientation", ORIENTATIONS), metavar="convolution|correlation",
                   help="save the kernel as a convolution kernel (default) or flipped 180 degrees "
                   "(a correlation filter)")
    e.add_argument("--channels", default="gray", type=_name("channels", ESTIMATE_CHANNELS),
                   metavar="gray|rgb|shared",
                   help="gray: one kernel from the gray images (RGB averaged); rgb: one kernel per "
                   "channel, saved as (3, k, l); shared: one kernel for all channels, estimated from "
                   "the channel mean (same as gray) (default: gray)")
    e.add_argument("-o", "--output", default="kernel.npy", metavar="FILE.npy",
                   help="where to save the kernel (default: kernel.npy)")
    e.add_argument("--png", action="store_true",
                   help="also save a 16-bit PNG preview, enlarged (FILE.png)")
    e.add_argument("--csv", action="store_true", help="also save the values as CSV (FILE.csv)")
    e.add_argument("--overwrite", action="store_true", help="replace existing output files")
    e.set_defaults(func=_cmd_estimate)

    r = sub.add_parser(
        "run", help="run an experiment described by a YAML configuration", formatter_class=fmt,
        parents=[common],
        description=_wrap("Run an experiment (or a sweep) from a YAML configuration and write a new "
                          "run directory with the kernel, metrics, loss history and plots. The "
                          "directory is built as DIR.partial-* and renamed when complete: a run is "
                          "finished exactly when its directory has no .partial suffix."),
        epilog="example:\n  jdeconv run configs/question_fista.yaml --set solver.max_iters=200 --out runs/q")
    r.add_argument("config", help="YAML configuration file (see configs/)")
    r.add_argument("--out", default=None, metavar="DIR",
                   help="run directory to create; must not exist (default: runs/<name>-<timestamp>)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting, e.g. --set solver.name=fista --set model.kernel_shape=[15,11] "
                   "(repeatable; VALUE is read as YAML; paths are relative to the current directory)")
    r.add_argument("--warm-timing", action="store_true",
                   help="also time a second, compiled solve (outputs.warm_timing; off by default)")
    r.set_defaults(func=_cmd_run)

    s = sub.add_parser(
        "simulate", help="make a synthetic original/blurred pair with a known kernel", formatter_class=fmt,
        parents=[common],
        description=_wrap("Blur an image with a known kernel, add noise, and write original.png, "
                          "blurred.png and kernel.npy (the truth) into a new directory."),
        epilog="example:\n  jdeconv simulate --image shapes --kernel motion --kernel-size 15 "
        "--param length=9 --param angle=30 --noise 0.002 --out pair/")
    s.add_argument("--image", default="shapes", metavar="NAME|FILE",
                   help="shapes, noise, delta, checkerboard, fractal, natural:camera (and other "
                   "natural:NAME photos), or an image file (default: shapes)")
    s.add_argument("--image-size", default=(256, 256), type=_size("image size", _limits.MAX_IMAGE_SIDE),
                   metavar="N|MxN", help="size of a generated image (default: 256)")
    s.add_argument("--kernel", default="gaussian", metavar="FAMILY",
                   help="gaussian, motion, disk, box, airy, random (default: gaussian)")
    s.add_argument("-k", "--kernel-size", default=(15, 15), type=kernel_size, metavar="N|KxL",
                   help="kernel size (default: 15)")
    s.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="kernel parameter, repeatable: sigma=2 (gaussian), length=9 angle=30 (motion), "
                   "radius=4 (disk, airy), smoothness=2 (random); default: scaled to the kernel size")
    s.add_argument("--noise", type=_number(float, minimum=0), default=0.0, metavar="SIGMA",
                   help="standard deviation of Gaussian noise (default: 0)")
    s.add_argument("--poisson", type=_number(float, positive=True), default=None, metavar="PHOTONS",
                   help="shot noise with PHOTONS per unit intensity (default: none)")
    s.add_argument("--bits", type=int, default=16, choices=(8, 16), metavar="8|16",
                   help="PNG bit depth (default: 16)")
    s.add_argument("--mode", default="valid", type=mode, metavar="MODE",
                   help="valid (blurred is smaller), same, full or circular (default: valid)")
    s.add_argument("--seed", type=_number(int, minimum=0, maximum=2**32 - 1001), default=0,
                   metavar="N", help="random seed (default: 0)")
    s.add_argument("--rgb", action="store_true", help="write RGB images (channels from seeds N, N+1, N+2)")
    s.add_argument("--out", required=True, metavar="DIR", help="directory to create (must not exist)")
    s.set_defaults(func=_cmd_simulate)
    _add_feature_options(sub, common, e, s, mode=mode, kernel_size=kernel_size)
    return p


def _add_feature_options(sub, common, e, s, *, mode, kernel_size) -> None:
    """``jdeconv target``, and estimate/simulate options of parametric PSFs and fields."""
    from jdeconv.experiment import _field_args, _target

    _target.add_parser(sub, common, size=_size("target size", _limits.MAX_IMAGE_SIDE),
                       kernel_size=kernel_size, name=_name, number=_number, mode=mode)
    from jdeconv._names import PSF_MODEL_NAMES

    e.add_argument("--model", default=None, type=_name("PSF model", PSF_MODEL_NAMES),
                   metavar="MODEL", help="fit a parametric PSF instead: "
                   f"{', '.join(PSF_MODEL_NAMES)}; writes FILE.json with its parameters, "
                   "standard errors and fit statistic")
    e.add_argument("--standard-errors", action="store_true",
                   help="per-tap standard errors of the kernel (exact solver): FILE.stderr.npy")
    _field_args.add_estimate_options(e)
    _field_args.add_simulate_options(s)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError):
        text = text.strip("'\"")
    if isinstance(exc, MemoryError):
        text = f"out of memory{': ' + text if text else ''}; use smaller sizes"
    return text or type(exc).__name__


def _left(exc: BaseException) -> str:
    from jdeconv.experiment._artifacts import partial_directory_of

    partial = partial_directory_of(exc)
    return "" if partial is None else f"; the incomplete results are in {str(partial)!r}"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"jdeconv: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _on_sigterm(signum, frame):
    raise _Terminated()


def _release_quietly(exc: BaseException) -> None:
    """Frees an interrupt's frames without the noise of their objects' destructors.

    An interrupt can land inside a constructor (an image reader or writer half
    built): that object's ``__del__`` then fails when the frames that hold it
    go, and Python would print its traceback after jdeconv's one-line message.
    """
    import gc

    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        seen = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            exc.__traceback__ = None
            exc = exc.__context__
        gc.collect()
    finally:
        sys.unraisablehook = hook


def _is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, (ValueError, TypeError, OSError, ImportError, MemoryError)):
        return True
    # XLA's allocation failure (a size the machine cannot hold) is the user's too.
    return isinstance(exc, RuntimeError) and "RESOURCE_EXHAUSTED" in str(exc)


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 2 user error, 130/143 interrupted).

    ``main()`` (the ``jdeconv`` command, ``python -m jdeconv``: the arguments
    from ``sys.argv``) owns its process and turns on the persistent compilation
    cache. ``main([...])`` called from Python with an argument list leaves the
    process-wide JAX configuration (the cache directory) as the caller set it.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    args.process_cache = argv is None
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        pass
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, _Terminated)
        print(f"jdeconv: {'terminated' if terminated else 'interrupted'}{_left(e)}", file=sys.stderr)
        _release_quietly(e)
        return 143 if terminated else 130
    except Exception as e:
        if not _is_user_error(e):
            raise
        print(f"jdeconv: error: {_one_line(e)}{_left(e)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
