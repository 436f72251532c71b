"""Throughput of jdeconv.estimate_kernels (one jitted call: pair by pair on a CPU, vmapped on an
accelerator) vs a Python loop of estimate_kernel.

Usage:
  python benchmarks/bench_batch.py                # 128^2: B = 1 8 64 256; 256^2: B = 1 8 64
  python benchmarks/bench_batch.py --full         # also B = 256 at 256^2
  python benchmarks/bench_batch.py --profile      # + stage timings (Gram, solve, overhead)

Pairs: B different originals (the bundled photographs, resized, flipped / rotated)
blurred by B different Gaussian PSFs (15 x 15, sigma 1.5..3.5), float64, valid mode,
simplex prior, solver "auto" (= exact).  Both paths are compiled first (the compile
time of each is reported separately), then timed as the median of --reps runs (one run
when a run exceeds --slow-s).  The batched kernels must equal the loop's to --atol
(max abs difference asserted and reported).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jdeconv  # noqa: E402

K = 15


def make_pairs(batch, size, seed=0):
    rng = np.random.default_rng(seed)
    names = [n for n in jdeconv.data.NATURAL_IMAGE_NAMES if n not in ("page", "text")]
    base = [jdeconv.data.natural_image(n, shape=size) for n in names]
    xs, ys, hs = [], [], []
    for i in range(batch):
        x = base[i % len(base)]
        x = np.rot90(x, (i // len(base)) % 4)
        if (i // (4 * len(base))) % 2:
            x = x[:, ::-1]
        x = np.ascontiguousarray(x)
        h = np.asarray(jdeconv.data.gaussian_kernel(K, float(rng.uniform(1.5, 3.5))))
        xs.append(x)
        hs.append(h)
        ys.append(np.asarray(jdeconv.conv2d(x, h)))
    return np.stack(xs), np.stack(ys), np.stack(hs)


def loop(xs, ys, **kw):
    out = [jdeconv.estimate_kernel(x, y, K, **kw).kernel for x, y in zip(xs, ys)]
    return np.asarray(jax.block_until_ready(jnp.stack(out)))


def batched(xs, ys, **kw):
    return np.asarray(jax.block_until_ready(jdeconv.estimate_kernels(xs, ys, K, **kw).kernel))


def profile(xs, ys, reps):
    """Stage timings of the batched and the looped path (same compiled pieces)."""
    from jdeconv._gram import normal_equations
    from jdeconv._solvers import exact

    B = xs.shape[0]
    xj, yj = jnp.asarray(xs), jnp.asarray(ys)
    ne_b = jax.jit(jax.vmap(lambda x, y: normal_equations(x, y, (K, K))))
    ne_1 = jax.jit(lambda x, y: normal_equations(x, y, (K, K)))
    qp_b = jax.jit(jax.vmap(lambda g, b: exact.solve_qp(g, b, prior="simplex")))
    qp_1 = jax.jit(lambda g, b: exact.solve_qp(g, b, prior="simplex"))
    ne = jax.block_until_ready(ne_b(xj, yj))
    jax.block_until_ready(ne_1(xj[0], yj[0]))
    jax.block_until_ready(qp_b(ne.gram, ne.rhs))
    jax.block_until_ready(qp_1(ne.gram[0], ne.rhs[0]))
    x_small = np.asarray(jdeconv.data.natural_image("camera", shape=32))
    y_small = np.asarray(jdeconv.conv2d(x_small, np.asarray(jdeconv.data.gaussian_kernel(K, 2.0))))
    jdeconv.estimate_kernel(x_small, y_small, K).kernel.block_until_ready()
    res = {}
    res["gram_batched"], _, _ = _common.median_time(
        lambda: jax.block_until_ready(ne_b(xj, yj)), reps)
    res["gram_loop"], _, _ = _common.median_time(
        lambda: jax.block_until_ready([ne_1(xj[i], yj[i]) for i in range(B)]), reps)
    res["solve_batched"], _, _ = _common.median_time(
        lambda: jax.block_until_ready(qp_b(ne.gram, ne.rhs)), reps)
    res["solve_loop"], _, _ = _common.median_time(
        lambda: jax.block_until_ready([qp_1(ne.gram[i], ne.rhs[i]) for i in range(B)]), reps)
    iters = np.asarray(qp_b(ne.gram, ne.rhs).iterations)
    res["active_set_iters_min_median_max"] = [int(iters.min()), float(np.median(iters)),
                                             int(iters.max())]
    res["call_overhead_32x32"], _, _ = _common.median_time(
        lambda: jdeconv.estimate_kernel(x_small, y_small, K).kernel.block_until_ready(), 5 * reps)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batches", type=int, nargs="+")
    ap.add_argument("--solver", default="auto")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--slow-s", type=float, default=20.0)
    ap.add_argument("--atol", type=float, default=1e-7,
                    help="max abs difference allowed (vmapped vs unbatched rounding, x cond)")
    ap.add_argument("--profile", action="store_true", help="stage timings for the largest B")
    ap.add_argument("--out", default=str(_common.RESULTS / "bench_batch.json"))
    args = ap.parse_args(argv)
    info = _common.machine_info()
    print(f"{info['cpu']} x{info['nproc']}, {info['mem_gb']} GB, jax {info['jax']} "
          f"({info['backend']}, {len(jax.devices())} device(s)), load {info['load_avg_1min']}")
    kw = dict(solver=args.solver, prior="simplex")
    rows = []
    hdr = (f"{'image':>9} {'B':>4} {'loop p/s':>9} {'batch p/s':>10} {'speedup':>8} "
           f"{'compile loop':>12} {'compile batch':>13} {'max|diff|':>9} {'max err':>8}")
    print(hdr)
    print("-" * len(hdr))
    for size in args.sizes:
        batches = args.batches or ([1, 8, 64, 256] if (size <= 128 or args.full) else [1, 8, 64])
        for B in batches:
            xs, ys, hs = make_pairs(B, size)
            tc_loop, k_loop = _common.timed(lambda: loop(xs[:1], ys[:1], **kw))
            tc_batch, k_b = _common.timed(lambda: batched(xs, ys, **kw))
            t_loop, n_loop, k_loop = _common.median_time(lambda: loop(xs, ys, **kw), args.reps,
                                                         budget_s=args.slow_s)
            t_batch, n_batch, k_b = _common.median_time(lambda: batched(xs, ys, **kw), args.reps,
                                                        budget_s=args.slow_s)
            diff = float(np.abs(k_b - k_loop).max())
            err = max(_common.rel_err(k_b[i], hs[i]) for i in range(B))
            assert diff <= args.atol, f"batched and looped kernels differ by {diff}"
            row = dict(size=size, batch=B, loop_s=t_loop, batch_s=t_batch, loop_runs=n_loop,
                       batch_runs=n_batch, loop_pairs_per_s=B / t_loop,
                       batch_pairs_per_s=B / t_batch, speedup=t_loop / t_batch,
                       compile_loop_s=tc_loop, compile_batch_s=max(tc_batch - t_batch, 0.0),
                       max_abs_diff=diff, max_rel_err=err)
            rows.append(row)
            print(f"{size:>4}x{size:<4} {B:>4} {B / t_loop:9.1f} {B / t_batch:10.1f} "
                  f"{t_loop / t_batch:7.2f}x {tc_loop:11.1f}s {row['compile_batch_s']:12.1f}s "
                  f"{diff:9.1e} {err:8.1e}", flush=True)
    prof = None
    if args.profile:
        size = max(args.sizes)
        B = max(r["batch"] for r in rows if r["size"] == size)
        xs, ys, _ = make_pairs(B, size)
        prof = dict(size=size, batch=B, **profile(xs, ys, args.reps))
        print(f"\nstage timings, {B} x {size}^2 (median of {args.reps}):")
        for key, v in prof.items():
            if key not in ("size", "batch"):
                print(f"  {key:<34} {v if isinstance(v, list) else _common.fmt_t(v)}")
    payload = dict(benchmark="batch", machine=info, kernel=K, solver=args.solver,
                   argv=sys.argv[1:], results=rows, profile=prof)
    print(f"\nwrote {_common.write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
