"""Per-iteration cost of the first-order solvers vs image size (it should not depend on it).

Usage: python benchmarks/bench_iteration_cost.py [--sizes 256 1024] [--kernel 15] [--iters 3000]

FISTA iterates on the precomputed (k l) x (k l) normal matrix: one matvec per iteration,
independent of the image.  For each size the same compiled program is timed with
``tol=inf`` (set-up only: normal equations, Lipschitz constant, residual; 0 iterations)
and ``tol=0`` (exactly --iters iterations); (T(iters) - T(0)) / iters is the cost of one
iteration.  Medians of --reps runs; all sizes are measured in the same process.
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--kernel", type=int, default=15)
    ap.add_argument("--solver", default="fista")
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(_common.RESULTS / "bench_iteration_cost.json"))
    args = ap.parse_args(argv)
    info = _common.machine_info()
    print(f"{info['cpu']} x{info['nproc']}, jax {info['jax']}, load {info['load_avg_1min']}")
    k = args.kernel
    h = _common.test_kernel(k)
    rows = []
    for size in args.sizes:
        x = _common.test_image(size)
        y = np.asarray(jdeconv.conv2d(x, h))
        kw = dict(solver=args.solver, prior="simplex", max_iters=args.iters)

        def call(tol):
            est = jdeconv.estimate_kernel(x, y, k, tol=tol, **kw)
            jax.block_until_ready(est.kernel)
            return est

        call(0.0)  # compile
        t_n, _, est = _common.median_time(lambda: call(0.0), args.reps)
        t_0, _, est0 = _common.median_time(lambda: call(1e300), args.reps)
        its = int(est.iterations)
        assert int(est0.iterations) == 0
        per = (t_n - t_0) / its
        rows.append(dict(size=size, kernel=k, iterations=its, total_s=t_n, setup_s=t_0,
                         per_iter_s=per))
        print(f"{size:>5}^2, {k}x{k}: setup {t_0 * 1e3:8.1f} ms, {its} it {t_n * 1e3:8.1f} ms, "
              f"per iteration {per * 1e6:8.1f} us", flush=True)
    base = rows[0]["per_iter_s"]
    for r in rows:
        r["per_iter_ratio_vs_first"] = r["per_iter_s"] / base
    print("per-iteration ratio vs first size: "
          + ", ".join(f"{r['size']}^2: {r['per_iter_ratio_vs_first']:.2f}" for r in rows))
    payload = dict(benchmark="iteration_cost", machine=info, solver=args.solver,
                   argv=sys.argv[1:], results=rows)
    print(f"wrote {_common.write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
