"""Cost of a tiled PSF field (estimate_psf_field) vs one whole-image estimate.

Usage:
  python benchmarks/bench_field.py             # 2048^2 pair, 8x8 tiles, 15x15 kernels
  python benchmarks/bench_field.py --quick     # 512^2 pair, 4x4 tiles, 9x9 kernels
  python benchmarks/bench_field.py --coupling 0.01   # also time the coupled solve

The pair: the bundled photograph (mirror-tiled above 512^2, see ``_common.test_image``)
blurred by a smooth Gaussian field (sigma 1.0 at the centre to 2.5 in the corners),
float64, valid mode, simplex prior, solver "auto" (= exact). Both calls are compiled
first (compile times reported separately), then timed as the median of --reps runs.
Target of the issue: the field at most 4x the single estimate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jdeconv  # noqa: E402
from jdeconv._field import estimate_psf_field, tile_layout  # noqa: E402
from jdeconv._field_conv import conv2d_field, tile_centres  # noqa: E402


def make_pair(size: int, k: int, fine: int = 16):
    x = _common.test_image(size)
    rows, cols = tile_centres((size, size), (fine, fine))
    c = (size - 1) / 2

    def sigma(u, v):
        return 1.0 + 1.5 * ((u - c) ** 2 + (v - c) ** 2) / (2 * c * c)

    H = np.stack([np.stack([np.asarray(jdeconv.data.gaussian_kernel(k, sigma(r, q)))
                            for q in cols]) for r in rows])
    return x, np.asarray(conv2d_field(x, H, "valid"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="512^2, 4x4 tiles, 9x9 kernels")
    ap.add_argument("--size", type=int)
    ap.add_argument("--grid", type=int)
    ap.add_argument("--kernel", type=int)
    ap.add_argument("--overlap", type=float, default=0.1)
    ap.add_argument("--coupling", type=float, default=0.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(_common.RESULTS / "bench_field.json"))
    args = ap.parse_args(argv)
    size = args.size or (512 if args.quick else 2048)
    g = args.grid or (4 if args.quick else 8)
    k = args.kernel or (9 if args.quick else 15)
    info = _common.machine_info()
    print(f"{info['cpu']} x{info['nproc']}, jax {info['jax']} ({info['backend']}, "
          f"{len(jax.devices())} device(s)), load {info['load_avg_1min']}")
    x, y = make_pair(size, k)

    def single():
        return jax.block_until_ready(jdeconv.estimate_kernel(x, y, k).kernel)

    def field():
        f = estimate_psf_field(x, y, k, grid=(g, g), overlap=args.overlap, coupling=args.coupling)
        return jax.block_until_ready(f)

    def tiles_only():  # the one estimate_kernels call on the stacked tiles, nothing else
        rows, cols, (S, T) = tile_layout((size - k + 1,) * 2, (g, g), args.overlap)
        xs = np.stack([x[r:r + S + k - 1, c:c + T + k - 1] for r in rows for c in cols])
        ys = np.stack([y[r:r + S, c:c + T] for r in rows for c in cols])
        return jax.block_until_ready(jdeconv.estimate_kernels(xs, ys, k).kernel)

    tc_single, _ = _common.timed(single)
    tc_field, f = _common.timed(field)
    t_single, n_single, _ = _common.median_time(single, args.reps)
    t_field, n_field, f = _common.median_time(field, args.reps)
    t_tiles, n_tiles, _ = _common.median_time(tiles_only, args.reps)
    load_after = _common.machine_info()["load_avg_1min"]
    ratio = t_field / t_single
    print(f"{size}^2 pair, {k}x{k} kernels: single estimate {_common.fmt_t(t_single)} "
          f"(median of {n_single}; first call {_common.fmt_t(tc_single)}), "
          f"{g}x{g} field {_common.fmt_t(t_field)} (median of {n_field}; first call "
          f"{_common.fmt_t(tc_field)}): ratio {ratio:.2f} (target <= 4); load "
          f"{info['load_avg_1min']} -> {load_after}")
    print(f"of which the estimate_kernels call on the {g * g} stacked tiles: "
          f"{_common.fmt_t(t_tiles)} (median of {n_tiles}; field layer overhead "
          f"{_common.fmt_t(t_field - t_tiles)})")
    print(f.summary())
    payload = dict(benchmark="field", machine=info, load_after=load_after, size=size, grid=g,
                   kernel=k, overlap=args.overlap, coupling=args.coupling,
                   single_s=t_single, field_s=t_field, ratio=ratio, tiles_call_s=t_tiles,
                   first_call_single_s=tc_single, first_call_field_s=tc_field,
                   summary=f.summary(), argv=sys.argv[1:])
    print(f"wrote {_common.write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
