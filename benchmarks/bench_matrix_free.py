"""Matrix-free path, 129x129 kernel on a 1024^2 pair: time per iteration, iterations, memory.

Usage:
  python benchmarks/bench_matrix_free.py                  # 1024^2, 129x129, the default cases
  python benchmarks/bench_matrix_free.py --quick          # 256^2, 33x33
  python benchmarks/bench_matrix_free.py --cases noise:l2 camera:l2 --cap 300

Each case runs in a fresh subprocess (so its peak resident memory, ``VmHWM`` from
/proc/self/status, is its own): it imports jax and jdeconv, records the baseline
VmHWM, loads the pair, and calls ``jdeconv.estimate_kernel`` on the matrix-free path
three times with the same compiled program (``tol`` is traced):

* first call (compilation included), ``tol`` = the default (1e-10 in float64);
* the same call again: the warm solve time and the iterations to ``tol`` (or ``cap``);
* ``tol = 1e300``: stops before the first iteration, so it times the set-up (the FFT
  of the original, 30 Lanczos steps for ``L``, the scale terms, the final gradient).

time per iteration = (warm solve − set-up) / iterations (for Huber the warm-up
iterations count too; for Poisson the failed backtracking trials, one forward
convolution each, are spread over the iterations). The normal matrix of the same
problem, which every other solver forms, would need (k l)^2 x 8 bytes (2.2 GB at
129x129).

Cases (``image:loss``), float64, valid geometry, simplex prior, FISTA:

* ``noise``: a uniform noise calibration target; y = x*h + N(0, 1e-3^2).
* ``camera``: the bundled photograph mirror-tiled to the size (see ``_common.test_image``);
  ill-conditioned at this kernel size (no regularisation: it stops at ``cap``).
* loss ``huber``: 1 % of the pixels of y hit by outliers of +-(0.5..2).
* loss ``poisson``: x scaled to 1000 photons per pixel on average, y Poisson counts
  (noise-limited: least squares on the same counts has the same error).

The kernel is ``_common.test_kernel(k)`` (a Gaussian, sigma = k / 6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

TARGET_GB = 2.0
DEFAULT_CASES = ("noise:l2", "noise:huber", "noise:poisson", "camera:l2")


def _vmhwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return -1


def child(xpath, ypath, k, loss, solver, cap, out_path):
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import jdeconv

    jax.numpy.zeros(1).block_until_ready()  # initialise the backend
    base = _vmhwm_kb()
    x, y = np.load(xpath), np.load(ypath)

    def run(tol=None):
        t0 = time.perf_counter()
        est = jdeconv.estimate_kernel(x, y, k, loss=loss, solver=solver, max_iters=cap,
                                      tol=tol, solver_options={"matrix_free": True},
                                      throw=False)
        jax.block_until_ready(est.kernel)
        return time.perf_counter() - t0, est

    first, est = run()
    warm, est = run()
    setup, _ = run(1e300)
    iters = int(est.iterations)
    warm_iters = int(est.stats["warmup_iterations"])
    per_iter = (warm - setup) / max(iters + warm_iters, 1)
    Path(out_path).write_text(json.dumps(dict(
        baseline_kb=base, peak_kb=_vmhwm_kb(), first_s=first, warm_s=warm, setup_s=setup,
        per_iter_s=per_iter, iterations=iters, warmup_iterations=warm_iters,
        converged=bool(est.converged), optimality=float(est.optimality),
        fit_statistic=float(est.fit_statistic),
        backtracks=int(est.stats["backtracks"]),
        lipschitz=float(est.lipschitz), kernel=np.asarray(est.kernel).tolist())))


def make_pair(image: str, loss: str, size: int, k: int, seed: int = 0):
    import numpy as np
    import scipy.signal

    import jdeconv

    rng = np.random.default_rng(seed)
    x = jdeconv.data.noise_target((size, size), seed=seed) if image == "noise" else \
        _common.test_image(size)
    h = _common.test_kernel(k)
    if loss == "poisson":
        x = 1000.0 * x / x.mean()
        y = rng.poisson(np.maximum(scipy.signal.fftconvolve(x, h, mode="valid"), 0)).astype(float)
        return x, h, y
    y = scipy.signal.fftconvolve(x, h, mode="valid") + 1e-3 * rng.standard_normal(
        (size - k + 1, size - k + 1))
    if loss == "huber":
        hit = rng.random(y.shape) < 0.01
        y = y + hit * rng.choice([-1.0, 1.0], y.shape) * rng.uniform(0.5, 2.0, y.shape)
    return x, h, y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="256^2 with a 33x33 kernel")
    ap.add_argument("--size", type=int)
    ap.add_argument("--kernel", type=int)
    ap.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES),
                    help="image:loss with image in noise/camera, loss in l2/huber/poisson")
    ap.add_argument("--solver", default="fista")
    ap.add_argument("--cap", type=int, default=500, help="max_iters")
    ap.add_argument("--out", default=str(_common.RESULTS / "bench_matrix_free.json"))
    ap.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        xp, yp, k, loss, solver, cap, out = args.child
        child(xp, yp, int(k), loss, solver, int(cap), out)
        return
    size = args.size or (256 if args.quick else 1024)
    k = args.kernel or (33 if args.quick else 129)

    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    info = _common.machine_info()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{info['cpu']} x{info['nproc']}, {info['mem_gb']} GB, jax {info['jax']} "
          f"({info['backend']})")
    print(f"load before: {uptime}")
    print(f"pair {size}^2, kernel {k}x{k} ({k * k} taps; the normal matrix would be "
          f"{(k * k) ** 2 * 8 / 2**30:.2f} GB), solver {args.solver}, cap {args.cap}, float64\n")
    hdr = (f"{'image':>7} {'loss':>8} {'iters':>6} {'conv':>5} {'time/iter':>10} {'set-up':>8} "
           f"{'warm solve':>10} {'1st call':>9} {'peak RSS':>9} {'est. part':>9} {'rel err':>8} "
           f"{'backtracks':>10}")
    print(hdr)
    print("-" * len(hdr))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            image, loss = case.split(":")
            x, h, y = make_pair(image, loss, size, k)
            xp, yp, op = Path(tmp, "x.npy"), Path(tmp, "y.npy"), Path(tmp, "out.json")
            np.save(xp, x)
            np.save(yp, y)
            cmd = [sys.executable, __file__, "--child", str(xp), str(yp), str(k), loss,
                   args.solver, str(args.cap), str(op)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            if proc.returncode != 0:
                print(f"{image:>7} {loss:>8} failed:\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(op.read_text())
            err = _common.rel_err(np.asarray(r.pop("kernel")), h)
            peak_gb = r["peak_kb"] / 2**20
            own_gb = (r["peak_kb"] - r["baseline_kb"]) / 2**20
            its = f"{r['iterations']}" + (f"+{r['warmup_iterations']}" if r["warmup_iterations"]
                                          else "")
            row = dict(image=image, loss=loss, size=size, kernel=k, solver=args.solver,
                       cap=args.cap, rel_err=err, peak_gb=peak_gb, estimate_gb=own_gb,
                       target_gb=TARGET_GB, target_met=peak_gb <= TARGET_GB, **r)
            rows.append(row)
            print(f"{image:>7} {loss:>8} {its:>6} {'yes' if r['converged'] else 'no':>5} "
                  f"{_common.fmt_t(r['per_iter_s']):>10} {_common.fmt_t(r['setup_s']):>8} "
                  f"{_common.fmt_t(r['warm_s']):>10} {_common.fmt_t(r['first_s']):>9} "
                  f"{peak_gb:8.2f}G {own_gb:8.2f}G {err:8.1e} {r['backtracks']:>10}", flush=True)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nload after: {uptime_after}")
    print(f"peak RSS = the child's VmHWM (jax + XLA + compilation + inputs + the solve); "
          f"est. part = peak minus the VmHWM after importing jax; target <= {TARGET_GB} GB.")
    payload = dict(benchmark="matrix_free", machine=info, load_before=uptime,
                   load_after=uptime_after, results=rows, argv=sys.argv[1:])
    print(f"wrote {_common.write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
