"""The ``jdeconv`` command line: ``estimate``, ``run`` and ``simulate``.

::

    jdeconv simulate --image shapes --kernel gaussian --kernel-size 15 --out pair/
    jdeconv estimate pair/original.png pair/blurred.png --kernel-size 15 -o kernel.npy
    jdeconv run configs/question_exact.yaml --set solver.name=fista

The tool computes in float64 (it enables ``jax_enable_x64``). A user error
(bad option value, unreadable or mismatched images, invalid configuration,
existing output) prints one line ``jdeconv: error: ...`` on stderr and exits
with status 2; ``--help`` works on every command.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_parser", "main"]

MODES = ("valid", "same", "full", "circular")
PRIORS = ("none", "nonneg", "sum_to_one", "simplex")
SOLVERS = ("auto", "exact", "gd", "fista", "momentum", "adam", "fourier")
CHANNELS = ("gray", "rgb", "shared")


class _UsageError(ValueError):
    """A command-line mistake (reported like any other user error)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``jdeconv: error: ...`` (status 2)."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"jdeconv: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------
# Argument parsing helpers.
# ---------------------------------------------------------------------------


def _choice(name: str, value: str, choices) -> str:
    from jdeconv._checks import check_choice

    try:
        return check_choice(name, value, choices)
    except ValueError as e:
        raise _UsageError(str(e).replace("; expected", ": expected")) from None


def _size(text: str, what: str = "kernel size") -> tuple[int, int]:
    """``"15"`` -> (15, 15); ``"15x11"`` / ``"15,11"`` -> (15, 11)."""
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise _UsageError(f"{what} {text!r} is not valid; give N or KxL, e.g. 15 or 15x11") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise _UsageError(f"{what} {text!r} is not valid; give positive N or KxL, e.g. 15 or 15x11")
    return size


def _regularization(text: str | None):
    if text is None or text.strip().lower() in ("none", "null", "0"):
        return None
    if text.strip().lower() == "auto":
        return "auto"
    try:
        weight = float(text)
    except ValueError:
        raise _UsageError(f"--regularization {text!r} is not valid; give auto, none or a "
                          "smoothness weight such as 1e-3") from None
    if not np.isfinite(weight) or weight < 0:
        raise _UsageError(f"--regularization must be a finite weight >= 0, got {text}")
    return {"smooth": weight}


def _params(items: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _UsageError(f"--param {item!r} is not valid; give NAME=VALUE, e.g. sigma=2")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise _UsageError(f"--param {item!r}: the value is not valid") from None
    return out


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}")
        if v <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return v
    return parse


def _nonneg_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def _nonneg_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return v


# ---------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------


def _save_npy(path: Path, array: np.ndarray, *, overwrite: bool) -> None:
    """Atomic ``np.save``: temp file in the same directory, then link (no clobber) or replace."""
    from jdeconv._io import _link_no_clobber

    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "xb") as f:
            np.save(f, np.asarray(array, np.float64), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(str(tmp), str(path))
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_text(path: Path, text: str, *, overwrite: bool) -> None:
    from jdeconv._io import _link_no_clobber

    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(str(tmp), str(path))
    finally:
        if tmp.exists():
            tmp.unlink()


def _kernel_preview(kernel: np.ndarray) -> np.ndarray:
    """A (k, l) or (3, k, l) kernel scaled to [0, 1] for a PNG: (k, l) or (k, l, 3)."""
    k = np.asarray(kernel, np.float64)
    lo = k.min(axis=(-2, -1), keepdims=True)
    hi = k.max(axis=(-2, -1), keepdims=True)
    scaled = (k - np.minimum(lo, 0)) / np.where(hi - np.minimum(lo, 0) > 0, hi - np.minimum(lo, 0), 1.0)
    return np.moveaxis(scaled, 0, -1) if scaled.ndim == 3 else scaled


def _kernel_csv(kernel: np.ndarray) -> str:
    import io

    buf = io.StringIO()
    if kernel.ndim == 2:
        np.savetxt(buf, kernel, delimiter=",", fmt="%.17g")
    else:
        buf.write("channel,row,col,value\n")
        for (c, r, q), v in np.ndenumerate(kernel):
            buf.write(f"{c},{r},{q},{float(v)!r}\n")
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Commands.
# ---------------------------------------------------------------------------


def _cmd_estimate(args) -> int:
    import jax

    from jdeconv._estimate import estimate_kernel, estimate_kernels
    from jdeconv._io import read_image
    from jdeconv._runner import check_pair_shapes

    kshape = _size(args.kernel_size)
    mode = _choice("mode", args.mode, MODES)
    prior = _choice("prior", args.prior, PRIORS)
    solver = _choice("solver", args.solver, SOLVERS)
    channels = _choice("channels", args.channels, CHANNELS)
    regularization = _regularization(args.regularization)

    out = Path(args.output)
    if out.suffix.lower() != ".npy":
        raise _UsageError(f"output {str(out)!r} must be a .npy file (PNG/CSV copies: --png, --csv)")
    targets = [out] + ([out.with_suffix(".png")] if args.png else []) + ([out.with_suffix(".csv")] if args.csv else [])
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output directory {str(out.parent)!r} does not exist; create it first")
    for t in targets:
        if t.is_dir():
            raise IsADirectoryError(f"output {str(t)!r} is a directory; give a file name")
        if t.exists() and not args.overwrite:
            raise FileExistsError(f"{str(t)!r} already exists; pass --overwrite to replace it")

    read_as = "rgb" if channels == "rgb" else "gray"
    x, xinfo = read_image(args.original, channels=read_as)
    y, yinfo = read_image(args.blurred, channels=read_as)
    check_pair_shapes(x.shape, y.shape, kshape, mode,
                      names=(f"original ({args.original})", f"blurred ({args.blurred})"))
    kwargs = dict(mode=mode, prior=prior, solver=solver, regularization=regularization,
                  max_iters=args.max_iters, tol=args.tol)
    t0 = time.perf_counter()
    if channels == "rgb":
        est = estimate_kernels(np.moveaxis(x, -1, 0), np.moveaxis(y, -1, 0), kshape, **kwargs)
    else:
        est = estimate_kernel(x, y, kshape, **kwargs)
    est = jax.block_until_ready(est)
    elapsed = time.perf_counter() - t0
    kernel = np.asarray(est.kernel, np.float64)
    if not np.all(np.isfinite(kernel)):
        raise ValueError(f"the estimate is not finite ({est.message}); try --regularization 1e-3 "
                         "or another --solver")

    _save_npy(out, kernel, overwrite=args.overwrite)
    written = [out]
    if args.png:
        from jdeconv._io import write_image

        write_image(out.with_suffix(".png"), _kernel_preview(kernel), bit_depth=16, clip=True,
                    overwrite=args.overwrite)
        written.append(out.with_suffix(".png"))
    if args.csv:
        _save_text(out.with_suffix(".csv"), _kernel_csv(kernel), overwrite=args.overwrite)
        written.append(out.with_suffix(".csv"))
    if not args.quiet:
        print(est.summary())
        sums = np.atleast_1d(kernel.sum(axis=(-2, -1)))
        print(f"time {elapsed:.2f} s (including compilation); kernel {'x'.join(map(str, kernel.shape))}, "
              f"sum {', '.join(f'{s:.6g}' for s in sums)}")
        if not bool(np.all(np.asarray(est.converged))):
            print(f"note: {est.message}; raise --max-iters or loosen --tol", file=sys.stderr)
        print("wrote " + ", ".join(str(w) for w in written))
    return 0


def _cmd_run(args) -> int:
    from jdeconv._config import load_config
    from jdeconv._runner import run_experiment

    cfg = load_config(args.config, args.set or [])
    if args.out is not None and Path(args.out).exists():
        raise FileExistsError(f"run directory {args.out!r} already exists; choose another --out "
                              "(runs are never overwritten)")
    path = run_experiment(cfg, args.out, quiet=args.quiet)
    if not args.quiet:
        _print_run(path)
    return 0


def _print_run(path: Path) -> None:
    if (path / "sweep.json").exists():
        rows = json.loads((path / "sweep.json").read_text())["points"]
        print(f"sweep of {len(rows)} points written to {path}")
        for r in rows:
            err = r.get("relative_error")
            print(f"  {r['point']}: solver={r['solver']} rel_error={_g(err)} "
                  f"residual={_g(r.get('residual_norm'))} iterations={r.get('iterations')} "
                  f"converged={r.get('converged')}")
        return
    m = json.loads((path / "metrics.json").read_text())
    err = m.get("relative_error", m.get("relative_error_mean"))
    print(f"run written to {path}")
    print(f"  solver={m['solver']} rel_error={_g(err)} "
          f"residual={_g(m.get('residual_norm', m.get('residual_norm_mean')))} "
          f"iterations={m.get('iterations', m.get('iterations_median'))} "
          f"converged={m.get('converged', m.get('converged_count'))} time={_g(m['timing'].get('time_s'))} s")


def _g(v) -> str:
    return "n/a" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _looks_like_file(name: str) -> bool:
    from jdeconv._io import READ_EXTENSIONS

    return os.path.sep in name or os.path.splitext(name)[1].lower() in READ_EXTENSIONS or os.path.exists(name)


def _cmd_simulate(args) -> int:
    from jdeconv._config import default_kernel_params
    from jdeconv._images import make_image
    from jdeconv._io import read_image, write_image
    from jdeconv._kernels import make_kernel
    from jdeconv._noise import quantize
    from jdeconv._runner import blur, versions

    kshape = _size(args.kernel_size)
    ishape = _size(args.image_size, "image size")
    mode = _choice("mode", args.mode, MODES)
    if args.bits not in (8, 16):
        raise _UsageError(f"--bits must be 8 or 16, got {args.bits}")
    final = Path(args.out)
    if final.exists():
        raise FileExistsError(f"output directory {str(final)!r} already exists; choose a new one")
    if not final.parent.resolve().is_dir():
        raise FileNotFoundError(f"parent directory {str(final.parent)!r} does not exist; create it first")

    params = _params(args.param)
    if not params:
        params = default_kernel_params(args.kernel, kshape)
    h = make_kernel(args.kernel, kshape, seed=args.seed, **params)
    nch = 3 if args.rgb else 1
    if _looks_like_file(args.image):
        img, _ = read_image(args.image, channels="rgb" if args.rgb else "gray")
        planes = [img[..., c] for c in range(3)] if args.rgb else [img]
        source = {"file": str(args.image)}
    else:
        planes = [make_image(args.image, ishape, seed=args.seed + c) for c in range(nch)]
        source = {"image": args.image, "image_shape": list(ishape)}
    xs, ys = [], []
    for c, x in enumerate(planes):
        x = quantize(x, args.bits)
        y = blur(x, h, mode, gaussian_sigma=args.noise, poisson_photons=args.poisson,
                 bits=args.bits, seed=args.seed + 1000 * c)
        xs.append(x)
        ys.append(y)
    x = np.stack(xs, axis=-1) if args.rgb else xs[0]
    y = np.stack(ys, axis=-1) if args.rgb else ys[0]
    if x.shape[0] < kshape[0] or x.shape[1] < kshape[1]:
        raise ValueError(f"the {kshape[0]}x{kshape[1]} kernel is larger than the {x.shape[0]}x{x.shape[1]} image")

    final.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{final.name}.partial-", dir=final.parent))
    try:
        write_image(partial / "original.png", x, bit_depth=args.bits)
        write_image(partial / "blurred.png", y, bit_depth=args.bits, clip=True)
        np.save(partial / "kernel.npy", h)
        info = {
            **source, "kernel": args.kernel, "kernel_shape": list(kshape), "kernel_params": params,
            "mode": mode, "gaussian_sigma": args.noise, "poisson_photons": args.poisson,
            "bits": args.bits, "seed": args.seed, "rgb": bool(args.rgb),
            "original_shape": list(x.shape), "blurred_shape": list(y.shape),
            "created": _dt.datetime.now().isoformat(timespec="seconds"), "versions": versions(),
        }
        (partial / "simulation.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            raise FileExistsError(f"output directory {str(final)!r} appeared meanwhile; results left in {str(partial)!r}")
        os.rename(partial, final)
    except BaseException:
        if partial.exists():
            (partial / "FAILED").write_text("simulate failed; this directory is incomplete\n")
        raise
    if not args.quiet:
        print(f"wrote {final}/original.png {'x'.join(map(str, x.shape))}, blurred.png "
              f"{'x'.join(map(str, y.shape))} ({args.bits}-bit, mode {mode}), kernel.npy "
              f"{kshape[0]}x{kshape[1]} ({args.kernel} {params})")
    return 0


# ---------------------------------------------------------------------------
# Parser and entry point.
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``jdeconv`` command."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="jdeconv", description="Estimate the convolution kernel (PSF) that turns an "
                "original image into its blurred copy.", formatter_class=fmt,
                epilog="Run 'jdeconv COMMAND --help' for the options of a command.")
    from jdeconv import __version__

    p.add_argument("--version", action="version", version=f"jdeconv {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    e = sub.add_parser(
        "estimate", help="estimate the kernel from an original and a blurred image",
        formatter_class=fmt,
        description="Estimate the kernel h with blurred = conv2d(original, h, mode) from two image "
        "files (PNG, TIFF, JPEG, .npy) and save it as .npy.",
        epilog="example:\n  jdeconv estimate sharp.png blurred.png --kernel-size 15 -o kernel.npy --png")
    e.add_argument("original", help="original (sharp) image file")
    e.add_argument("blurred", help="blurred image file")
    e.add_argument("-k", "--kernel-size", required=True, metavar="N|KxL",
                   help="kernel size, e.g. 15 or 15x11 (rows x columns)")
    e.add_argument("--mode", default="valid", metavar="MODE",
                   help="geometry: valid (blurred is smaller by size-1), same (same size; borders "
                   "ignored), full, circular (default: valid)")
    e.add_argument("--prior", default="simplex", metavar="PRIOR",
                   help="constraint: simplex (h >= 0, sum 1), nonneg, sum_to_one, none (default: simplex)")
    e.add_argument("--solver", default="auto", metavar="SOLVER",
                   help="auto, exact, gd, fista, momentum, adam, fourier (default: auto = exact for "
                   "kernels up to 4096 taps, else fista)")
    e.add_argument("--regularization", default=None, metavar="auto|none|W",
                   help="none (default), auto, or a smoothness weight W such as 1e-3")
    e.add_argument("--max-iters", type=_positive(int), default=None, metavar="N",
                   help="iteration cap (default: the solver's)")
    e.add_argument("--tol", type=_positive(float), default=None, metavar="T",
                   help="stopping tolerance (default: 1e-10 in float64)")
    e.add_argument("--channels", default="gray", metavar="gray|rgb|shared",
                   help="gray: one kernel from the gray images (RGB averaged); rgb: one kernel per "
                   "channel, saved as (3, k, l); shared: one kernel for all channels, estimated from "
                   "the channel mean (same as gray) (default: gray)")
    e.add_argument("-o", "--output", default="kernel.npy", metavar="FILE.npy",
                   help="where to save the kernel (default: kernel.npy)")
    e.add_argument("--png", action="store_true", help="also save a 16-bit PNG preview (FILE.png)")
    e.add_argument("--csv", action="store_true", help="also save the values as CSV (FILE.csv)")
    e.add_argument("--overwrite", action="store_true", help="replace existing output files")
    e.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    e.set_defaults(func=_cmd_estimate)

    r = sub.add_parser(
        "run", help="run an experiment described by a YAML configuration", formatter_class=fmt,
        description="Run an experiment (or a sweep) from a YAML configuration and write a new run "
        "directory with the kernel, metrics, loss history and plots.",
        epilog="example:\n  jdeconv run configs/question_fista.yaml --set solver.max_iters=200 --out runs/q")
    r.add_argument("config", help="YAML configuration file (see configs/)")
    r.add_argument("--out", default=None, metavar="DIR",
                   help="run directory to create; must not exist (default: runs/<name>-<timestamp>)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting, e.g. --set solver.name=fista --set model.kernel_shape=[15,11] "
                   "(repeatable; VALUE is read as YAML)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")
    r.set_defaults(func=_cmd_run)

    s = sub.add_parser(
        "simulate", help="make a synthetic original/blurred pair with a known kernel", formatter_class=fmt,
        description="Blur an image with a known kernel, add noise, and write original.png, blurred.png "
        "and kernel.npy (the truth) into a new directory.",
        epilog="example:\n  jdeconv simulate --image shapes --kernel motion --kernel-size 15 "
        "--param length=9 --param angle=30 --noise 0.002 --out pair/")
    s.add_argument("--image", default="shapes", metavar="NAME|FILE",
                   help="shapes, noise, delta, checkerboard, fractal, natural:camera (and other "
                   "natural:NAME photos), or an image file (default: shapes)")
    s.add_argument("--image-size", default="256", metavar="N|MxN",
                   help="size of a generated image (default: 256)")
    s.add_argument("--kernel", default="gaussian", metavar="FAMILY",
                   help="gaussian, motion, disk, box, airy, random (default: gaussian)")
    s.add_argument("-k", "--kernel-size", default="15", metavar="N|KxL", help="kernel size (default: 15)")
    s.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="kernel parameter, repeatable: sigma=2 (gaussian), length=9 angle=30 (motion), "
                   "radius=4 (disk, airy), smoothness=2 (random); default: scaled to the kernel size")
    s.add_argument("--noise", type=_nonneg_float, default=0.0, metavar="SIGMA",
                   help="standard deviation of Gaussian noise (default: 0)")
    s.add_argument("--poisson", type=_positive(float), default=None, metavar="PHOTONS",
                   help="shot noise with PHOTONS per unit intensity (default: none)")
    s.add_argument("--bits", type=int, default=16, metavar="8|16", help="PNG bit depth (default: 16)")
    s.add_argument("--mode", default="valid", metavar="MODE",
                   help="valid (blurred is smaller), same, full or circular (default: valid)")
    s.add_argument("--seed", type=_nonneg_int, default=0, metavar="N", help="random seed (default: 0)")
    s.add_argument("--rgb", action="store_true", help="write RGB images (channels from seeds N, N+1, N+2)")
    s.add_argument("--out", required=True, metavar="DIR", help="directory to create (must not exist)")
    s.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    s.set_defaults(func=_cmd_simulate)
    return p


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError):
        text = text.strip("'\"")
    return text or type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"jdeconv: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    import jax

    jax.config.update("jax_enable_x64", True)
    from jdeconv._config import ConfigError

    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args) or 0)
        except (ConfigError, ValueError, TypeError, OSError, ImportError) as e:
            print(f"jdeconv: error: {_one_line(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("jdeconv: interrupted", file=sys.stderr)
            return 130
