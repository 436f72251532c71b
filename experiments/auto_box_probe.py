"""kernel_shape="auto" on off-centre real-size kernels, against the estimate given the true box.

Usage:
  python experiments/auto_box_probe.py [--size 255] [--out experiments/results/auto_box_probe.json]

Issue 12's target: on natural images with off-centre kernels of 15-35 px (clean and 8-bit), the
automatic box holds the true support within 2 px per side, and its kernel error is within 1.1x of
the estimate given the true box. The pairs: the bundled camera photograph, `same` geometry,
float64, simplex prior, exact solver, generous box 51x51. The true support is the box centred on
the centre tap that holds every nonzero tap of the placed kernel; errors are relative Frobenius
errors on the union of the chosen and the true box.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import jdeconv  # noqa: E402
from jdeconv.data import make_image, make_kernel, quantize  # noqa: E402
from jdeconv.experiment._pairs import place_kernel  # noqa: E402

CASES = [("motion", 15, {"length": 13, "angle": 20}, (3, -2)),
         ("motion", 21, {"length": 19, "angle": 60}, (4, 3)),
         ("motion", 31, {"length": 27, "angle": -35}, (-5, 6)),
         ("disk", 15, {"radius": 5}, (2, 3)),
         ("gaussian", 21, {"sigma": 2.5}, (-3, 4))]


def union_error(h, truth):
    K, L = max(h.shape[0], truth.shape[0]), max(h.shape[1], truth.shape[1])

    def pad(a):
        r, c = K - a.shape[0], L - a.shape[1]
        return np.pad(a, ((r // 2, r - r // 2), (c // 2, c - c // 2)))
    return float(np.linalg.norm(pad(np.asarray(h)) - pad(truth)) / np.linalg.norm(truth))


def support_need(h):
    rows, cols = np.nonzero(h > 0)
    return tuple(2 * int(np.max(np.abs(a - (n - 1) // 2))) + 1
                 for a, n in ((rows, h.shape[0]), (cols, h.shape[1])))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=255)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "auto_box_probe.json"))
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    x0 = make_image("natural:camera", (args.size, args.size))
    rows = []
    for bits in (None, 8):
        x = x0 if bits is None else quantize(x0, bits)
        for name, k, params, offset in CASES:
            h = place_kernel(np.asarray(make_kernel(name, (k, k), **params)), offset)
            y = np.asarray(jdeconv.conv2d(x, h, "same"))
            y = y if bits is None else quantize(y, bits)
            t0 = time.perf_counter()
            auto = jdeconv.estimate_kernel(x, y, "auto", mode="same", max_kernel_shape=51)
            seconds = time.perf_counter() - t0
            given = jdeconv.estimate_kernel(x, y, h.shape, mode="same")
            box = tuple(int(v) for v in np.asarray(auto.stats["kernel_box"]))
            need = support_need(h)
            ea, eg = union_error(auto.kernel, h), union_error(given.kernel, h)
            row = dict(bits=bits, kernel=name, side=k, offset=list(offset),
                       true_box=list(h.shape), support=list(need), auto_box=list(box),
                       within_2px=all(n <= b <= n + 4 for n, b in zip(need, box)),
                       error_auto=ea, error_given=eg, ratio=ea / eg, auto_s=seconds)
            rows.append(row)
            print(f"{'clean' if bits is None else '8-bit'} {name} {k} offset {offset}: support "
                  f"{need}, auto box {box} ({'within' if row['within_2px'] else 'NOT within'} "
                  f"2 px), error auto {ea:.3g} / given {eg:.3g} = {ea / eg:.2f} ({seconds:.1f} s)",
                  flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"size": args.size, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
