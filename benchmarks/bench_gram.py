"""Timing of jdeconv._gram.normal_equations against NumPy im2col + A^T A.

Usage: python benchmarks/bench_gram.py [--sizes 256 512] [--kernels 7 15 31] [--reps 5]

Prints, for each (image, kernel, dtype): the median wall time of ``normal_equations``
after compilation (plus the compile time), the median time of the explicit float64
products ``A.T @ A`` and ``A.T @ y`` with the im2col matrix ``A`` (skipped when A would
exceed ``--max-im2col-gb``), and the largest deviation from that reference relative to
``max|G|`` / ``max|b|``.  ``A`` is formed once, outside the timing, as the tests form it
(``jdeconv.kernel_operator(x, k, mode).as_matrix()``, see ``_common.im2col``).  Mode
"valid" (the hard case) unless --mode is given.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from _common import im2col  # noqa: E402
from jdeconv._geometry import output_shape  # noqa: E402
from jdeconv._gram import normal_equations  # noqa: E402


def numpy_normal_equations(A, y):
    return A.T @ A, A.T @ y.ravel()


def median_time(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--kernels", type=int, nargs="+", default=[7, 15, 31])
    ap.add_argument("--mode", default="valid", choices=["valid", "full", "circular"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-im2col-gb", type=float, default=2.0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; mode={args.mode}")
    hdr = f"{'image':>9} {'kernel':>7} {'dtype':>7} {'jdeconv':>10} {'compile':>8} {'im2col':>10} {'speedup':>8} {'err G':>9} {'err b':>9}"
    print(hdr)
    print("-" * len(hdr))
    for size in args.sizes:
        for k in args.kernels:
            x = rng.random((size, size))  # nonnegative, nonzero mean like real images
            h = rng.random((k, k))
            h /= h.sum()
            shape_y = output_shape(x.shape, (k, k), args.mode)
            y = rng.random(shape_y)
            n_y = shape_y[0] * shape_y[1]
            a_gb = n_y * k * k * 8 / 2**30
            ref = None
            t_np = float("nan")
            if a_gb <= args.max_im2col_gb:
                reps = 1 if a_gb > 0.25 else min(args.reps, 3)
                A = im2col(x, (k, k), args.mode)
                t_np = median_time(lambda: numpy_normal_equations(A, y), reps)
                ref = numpy_normal_equations(A, y)
                del A
            for dt in (jnp.float32, jnp.float64):
                xj, yj = jnp.asarray(x, dt), jnp.asarray(y, dt)
                t0 = time.perf_counter()
                jax.block_until_ready(normal_equations(xj, yj, (k, k), args.mode))
                t_c = time.perf_counter() - t0
                t_j = median_time(
                    lambda: jax.block_until_ready(normal_equations(xj, yj, (k, k), args.mode)),
                    args.reps,
                )
                if ref is not None:
                    ne = normal_equations(xj, yj, (k, k), args.mode)
                    eg = np.abs(np.asarray(ne.gram, np.float64) - ref[0]).max() / np.abs(ref[0]).max()
                    eb = np.abs(np.asarray(ne.rhs, np.float64) - ref[1]).max() / np.abs(ref[1]).max()
                    errs = f"{eg:9.1e} {eb:9.1e}"
                    speed = f"{t_np / t_j:7.0f}x"
                else:
                    errs = f"{'-':>9} {'-':>9}"
                    speed = f"{'-':>8}"
                np_s = f"{t_np * 1e3:8.1f}ms" if ref is not None else f"{'skipped':>10}"
                print(
                    f"{size:>4}x{size:<4} {k:>3}x{k:<3} {np.dtype(dt).name:>7} "
                    f"{t_j * 1e3:8.1f}ms {t_c:7.1f}s {np_s} {speed} {errs}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
