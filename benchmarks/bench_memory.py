"""Peak resident memory of one kernel estimate (default 2048^2 image, 31 x 31 kernel).

Usage:
  python benchmarks/bench_memory.py                       # 2048^2, 31x31, solver auto
  python benchmarks/bench_memory.py --sizes 1024 2048 --solvers auto fista

Each estimate runs in a fresh subprocess.  The child imports jax and jdeconv (float64
enabled), records its peak so far (baseline), loads the pre-computed x and y from .npy
files, calls ``estimate_kernel`` once (compilation included: that is what a user's
first call costs) and reports the process's own peak, ``VmHWM`` from /proc/self/status
(``ru_maxrss`` would carry the parent's peak across fork+exec). ``peak`` is the whole
process (issue 11's target: <= 600 MB at 2048², 31 x 31); "peak - baseline" is the
memory the estimate itself needed, inputs (2 x 32 MB at 2048^2) included.  The im2col matrix
of the same problem would need #y * k * l * 8 bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

TARGET_GB = 600 / 1024  # issue 11: the whole process's peak <= 600 MB


def _vmhwm_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def child(xpath, ypath, k, solver):
    import time

    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import jdeconv

    jnp_ = jax.numpy.zeros(1).block_until_ready()  # initialise the backend  # noqa: F841
    base = _vmhwm_kb()
    x, y = np.load(xpath), np.load(ypath)
    t0 = time.perf_counter()
    est = jdeconv.estimate_kernel(x, y, k, solver=solver, prior="simplex")
    h = np.asarray(jax.block_until_ready(est.kernel))
    t1 = time.perf_counter()
    peak = _vmhwm_kb()
    print(json.dumps(dict(baseline_kb=base, peak_kb=peak, first_call_s=t1 - t0,
                          solver=est.solver, iterations=int(est.iterations),
                          kernel=h.tolist())))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048])
    ap.add_argument("--kernels", type=int, nargs="+", default=[31])
    ap.add_argument("--solvers", nargs="+", default=["auto"])
    ap.add_argument("--out", default=str(_common.RESULTS / "bench_memory.json"))
    ap.add_argument("--child", nargs=4, metavar=("X", "Y", "K", "SOLVER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        xp, yp, k, solver = args.child
        child(xp, yp, int(k), solver)
        return

    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import scipy.signal

    info = _common.machine_info()
    print(f"{info['cpu']} x{info['nproc']}, {info['mem_gb']} GB, jax {info['jax']}, "
          f"load {info['load_avg_1min']}" + (f", XLA_FLAGS={info['xla_flags']}" if info['xla_flags'] else ""))
    hdr = (f"{'image':>11} {'kernel':>7} {'solver':>7} {'peak-base':>10} {'peak':>8} "
           f"{'im2col A':>9} {'first call':>10} {'rel err':>8} {'target':>12}")
    print(hdr)
    print("-" * len(hdr))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            x = _common.test_image(size)
            for k in args.kernels:
                h = _common.test_kernel(k)
                y = scipy.signal.fftconvolve(x, h, mode="valid")
                xp, yp = Path(tmp, "x.npy"), Path(tmp, "y.npy")
                np.save(xp, x)
                np.save(yp, y)
                a_gb = y.size * k * k * 8 / 2**30
                for solver in args.solvers:
                    cmd = [sys.executable, __file__, "--child", str(xp), str(yp), str(k), solver]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    used_gb = (r["peak_kb"] - r["baseline_kb"]) / 2**20
                    err = _common.rel_err(np.asarray(r.pop("kernel")), h)
                    met = r["peak_kb"] / 2**20 <= TARGET_GB
                    row = dict(size=size, kernel=k, solver=r["solver"], used_gb=used_gb,
                               peak_gb=r["peak_kb"] / 2**20, baseline_gb=r["baseline_kb"] / 2**20,
                               im2col_gb=a_gb, first_call_s=r["first_call_s"],
                               iterations=r["iterations"], rel_err=err,
                               target_gb=TARGET_GB, target_met=met)
                    rows.append(row)
                    print(f"{size:>5}x{size:<5} {k:>3}x{k:<3} {r['solver']:>7} {used_gb:9.2f}G "
                          f"{row['peak_gb']:7.2f}G {a_gb:8.1f}G {r['first_call_s']:9.1f}s "
                          f"{err:8.1e} {'met' if met else 'NOT met'} (peak <= {TARGET_GB:.2f} GB)",
                          flush=True)
    payload = dict(benchmark="memory", machine=info, results=rows, argv=sys.argv[1:])
    print(f"\nwrote {_common.write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
