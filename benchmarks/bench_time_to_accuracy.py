"""Time to reach a relative kernel error (1e-3, 1e-6): jdeconv solvers vs classic baselines.

Usage:
  python benchmarks/bench_time_to_accuracy.py                 # 256^2, 512^2 x 7, 15, 31
  python benchmarks/bench_time_to_accuracy.py --full          # adds 1024^2, larger caps
  python benchmarks/bench_time_to_accuracy.py --sizes 512 --kernels 15 --methods exact im2col-chol

Problem: float64, clean data, y = conv2d(x, h, "valid"), x the "camera" photograph
(see ``_common.test_image``), h a Gaussian PSF (sigma = k/6).  The error is
``||h_est - h|| / ||h||``.

Methods (all in this process, wall time):
  exact        jdeconv.estimate_kernel(solver="auto") = exact active-set solver, simplex prior
  fista, gd    jdeconv first-order solvers, simplex prior; run with ``reference=h`` so
               ``error_history`` tells after how many iterations n* the error reached the
               target; time(n*) = T(0 its) + n* * (T(cap its) - T(0 its)) / cap, where
               T(0) and T(cap) are medians of the same compiled program (``tol`` is a
               traced argument: tol=inf stops before the first iteration, tol=0 runs cap).
  fourier      jdeconv solver="fourier" (tapered, regularised frequency division)
  fft-div      naive NumPy FFT division H = Y / X (valid data is not circular: it never
               reaches 1e-3; its error is reported)
  im2col-chol  NumPy im2col matrix A, G = A^T A, b = A^T y, scipy cho_factor/cho_solve
               (the reference for the ratios)
  lstsq        NumPy im2col + numpy.linalg.lstsq (skipped where A > --max-lstsq-gb:
               0.5 GB by default, 2 GB with --full; it takes minutes above that)
  cgls, lsqr   PyLops Convolve2D (kernel as the model, image as the filter, FFT method)
               + pylops cgls / lsqr; the error is read in a callback every iteration
               (single run unless a run takes < 2 s), capped by --pylops-iters / --pylops-budget.
JAX programs are compiled by a first call (its time minus the median is reported as
"compile") and then timed as the median of --reps runs; NumPy/SciPy baselines use the
median of --reps runs, or a single run when one run exceeds --slow-s seconds.
A time-to-accuracy of "-" means the method never reached the target (see "best err").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jdeconv  # noqa: E402

TARGETS = (1e-3, 1e-6)
ALL_METHODS = ("exact", "fista", "gd", "fourier", "fft-div", "im2col-chol", "lstsq", "cgls", "lsqr")


# ----------------------------------------------------------------------------- baselines

def im2col(x, k, l):
    """A (M N, k l) with y.ravel() = A @ h.ravel() for the valid convolution (one copy)."""
    M, N = x.shape[0] - k + 1, x.shape[1] - l + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (k, l))[:, :, ::-1, ::-1]
    return win.reshape(M * N, k * l)


def im2col_cholesky(x, y, k, l):
    A = im2col(x, k, l)
    G = A.T @ A
    b = A.T @ y.ravel()
    return scipy.linalg.cho_solve(scipy.linalg.cho_factor(G), b).reshape(k, l)


def im2col_lstsq(x, y, k, l):
    A = im2col(x, k, l)
    return np.linalg.lstsq(A, y.ravel(), rcond=None)[0].reshape(k, l)


def fft_division(x, y, k, l):
    """Naive spectral division on the image grid (as if the blur were circular)."""
    m, n = x.shape
    yp = np.zeros((m, n))
    yp[k - 1:, l - 1:] = y  # valid part sits where the circular and linear blur agree
    X = np.fft.rfft2(x)
    H = np.fft.rfft2(yp) / X
    return np.fft.irfft2(H, s=(m, n))[:k, :l]


def pylops_operator(x, k, l):
    """Valid convolution as a PyLops operator of the kernel: crop . Convolve2D . pad.

    The kernel is embedded at the centre of an image-sized model and convolved with the
    image as the (centred, ``offset = shape // 2``: no padding of the filter) PyLops
    filter; the valid window then starts at (k-1, l-1) of the "same" output.
    """
    import pylops

    m, n = x.shape
    M, N = m - k + 1, n - l + 1
    r, c = m // 2, n // 2
    pad_h = pylops.Pad(dims=(k, l), pad=((r, m - k - r), (c, n - l - c)))
    conv = pylops.signalprocessing.Convolve2D(dims=(m, n), h=x, offset=(r, c), method="fft")
    crop = pylops.Pad(dims=(M, N), pad=((k - 1, m - M - (k - 1)), (l - 1, n - N - (l - 1)))).H
    return crop @ conv @ pad_h


def run_pylops(name, x, y, h, iters, budget_s):
    """One run; returns (total time, {target: time or None}, best err, iterations)."""
    import pylops.optimization.basic as pb

    k, l = h.shape
    op = pylops_operator(x, k, l)
    hits = {t: None for t in TARGETS}
    state = {"best": np.inf, "it": 0}
    t0 = time.perf_counter()

    class Stop(Exception):
        pass

    def cb(v):
        state["it"] += 1
        e = _common.rel_err(v, h)
        now = time.perf_counter() - t0
        state["best"] = min(state["best"], e)
        for t in TARGETS:
            if hits[t] is None and e <= t:
                hits[t] = now
        if all(v is not None for v in hits.values()) or now > budget_s:
            raise Stop

    x0 = np.zeros(k * l)
    try:
        if name == "cgls":
            pb.cgls(op, y.ravel(), x0=x0, niter=iters, tol=0.0, callback=cb)
        else:
            pb.lsqr(op, y.ravel(), x0=x0, niter=iters, atol=0.0, btol=0.0, conlim=1e300,
                    callback=cb)
    except Stop:
        pass
    return time.perf_counter() - t0, hits, state["best"], state["it"]


# ----------------------------------------------------------------------------- jdeconv

def jd_call(x, y, k, **kw):
    est = jdeconv.estimate_kernel(x, y, k, **kw)
    jax.block_until_ready(est.kernel)
    return est


def bench_exact(x, y, h, reps):
    k = h.shape[0]
    t_first, est = _common.timed(lambda: jd_call(x, y, k, solver="auto", prior="simplex"))
    t, n, est = _common.median_time(lambda: jd_call(x, y, k, solver="auto", prior="simplex"), reps)
    err = _common.rel_err(est.kernel, h)
    return dict(time=t, runs=n, compile=max(t_first - t, 0.0), best_err=err,
                hits={tg: (t if err <= tg else None) for tg in TARGETS},
                note=f"solver={est.solver}, {int(est.iterations)} active-set it")


def bench_first_order(solver, x, y, h, reps, cap):
    k = h.shape[0]
    common = dict(solver=solver, prior="simplex", max_iters=cap, reference=h)
    t_first, est = _common.timed(lambda: jd_call(x, y, k, tol=0.0, **common))
    t_cap, n, est = _common.median_time(lambda: jd_call(x, y, k, tol=0.0, **common), reps)
    t0, _, _ = _common.median_time(lambda: jd_call(x, y, k, tol=1e300, **common), reps)
    its = int(est.iterations)
    errs = np.asarray(est.error_history)[: its + 1]
    per_it = (t_cap - t0) / max(its, 1)
    hits = {}
    for tg in TARGETS:
        idx = np.flatnonzero(errs <= tg)
        hits[tg] = None if idx.size == 0 else t0 + int(idx[0]) * per_it
    first = {tg: (None if hits[tg] is None else int(np.flatnonzero(errs <= tg)[0])) for tg in TARGETS}
    return dict(time=t_cap, runs=n, compile=max(t_first - t_cap, 0.0),
                best_err=float(np.nanmin(errs)), hits=hits, setup=t0, per_iter=per_it,
                note=f"cap {its} it, {per_it * 1e3:.3f} ms/it, setup {t0 * 1e3:.0f} ms, "
                     f"n*={first[1e-3]}/{first[1e-6]}")


def bench_fourier(x, y, h, reps):
    k = h.shape[0]
    t_first, est = _common.timed(lambda: jd_call(x, y, k, solver="fourier", prior="simplex"))
    t, n, est = _common.median_time(lambda: jd_call(x, y, k, solver="fourier", prior="simplex"), reps)
    err = _common.rel_err(est.kernel, h)
    return dict(time=t, runs=n, compile=max(t_first - t, 0.0), best_err=err,
                hits={tg: (t if err <= tg else None) for tg in TARGETS}, note="")


def bench_numpy(fn, x, y, h, reps, slow_s):
    k, l = h.shape
    t, n, hest = _common.median_time(lambda: fn(x, y, k, l), reps, budget_s=slow_s)
    err = _common.rel_err(hest, h)
    return dict(time=t, runs=n, compile=None, best_err=err,
                hits={tg: (t if err <= tg else None) for tg in TARGETS}, note="")


# ----------------------------------------------------------------------------- driver

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true",
                    help="sizes 256 512 1024, fista/gd cap 20000, pylops budget 120 s")
    ap.add_argument("--sizes", type=int, nargs="+")
    ap.add_argument("--kernels", type=int, nargs="+", default=[7, 15, 31])
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--slow-s", type=float, default=5.0,
                    help="baselines: a single run when one run takes longer than this")
    ap.add_argument("--fista-iters", type=int)
    ap.add_argument("--gd-iters", type=int)
    ap.add_argument("--pylops-iters", type=int, default=100000)
    ap.add_argument("--pylops-budget", type=float, help="seconds per PyLops run")
    ap.add_argument("--max-im2col-gb", type=float, default=2.0,
                    help="skip im2col-chol where A is larger (default 2 GB)")
    ap.add_argument("--max-lstsq-gb", type=float,
                    help="skip lstsq where A is larger (default 0.5 GB; 2 GB with --full)")
    ap.add_argument("--out", default=str(_common.RESULTS / "bench_time_to_accuracy.json"))
    args = ap.parse_args(argv)
    sizes = args.sizes or ([256, 512, 1024] if args.full else [256, 512])
    fista_cap = args.fista_iters or (20000 if args.full else 5000)
    gd_cap = args.gd_iters or (20000 if args.full else 2000)
    lstsq_gb = args.max_lstsq_gb or (args.max_im2col_gb if args.full else 0.5)
    pl_budget = args.pylops_budget or (120.0 if args.full else 15.0)
    methods = list(args.methods)
    try:
        import pylops  # noqa: F401
    except ImportError:
        if {"cgls", "lsqr"} & set(methods):
            print("pylops not installed: skipping cgls / lsqr (pip install -e .[bench])")
        methods = [m for m in methods if m not in ("cgls", "lsqr")]

    info = _common.machine_info()
    print(f"{info['cpu']} x{info['nproc']}, {info['mem_gb']} GB, jax {info['jax']} "
          f"({info['backend']}), load {info['load_avg_1min']}")
    print(f"fista cap {fista_cap} it, gd cap {gd_cap} it, pylops budget {pl_budget:.0f} s/run")
    results = []
    for size in sizes:
        x = _common.test_image(size)
        for k in args.kernels:
            h = _common.test_kernel(k)
            y = np.asarray(jdeconv.conv2d(x, h, "valid"))
            M, N = y.shape
            a_gb = M * N * k * k * 8 / 2**30
            ne = jdeconv._gram.normal_equations(x, y, (k, k))
            cond = float(np.linalg.cond(np.asarray(ne.gram)))
            print(f"\n== {size}x{size} image, {k}x{k} kernel: im2col A = {a_gb:.2f} GB, "
                  f"cond(X^T X) = {cond:.1e}", flush=True)
            rows = {}
            for m in methods:
                try:
                    if m == "exact":
                        r = bench_exact(x, y, h, args.reps)
                    elif m in ("fista", "gd"):
                        r = bench_first_order(m, x, y, h, args.reps,
                                              fista_cap if m == "fista" else gd_cap)
                    elif m == "fourier":
                        r = bench_fourier(x, y, h, args.reps)
                    elif m == "fft-div":
                        r = bench_numpy(fft_division, x, y, h, args.reps, args.slow_s)
                    elif m in ("im2col-chol", "lstsq"):
                        cap_gb = args.max_im2col_gb if m == "im2col-chol" else lstsq_gb
                        if a_gb > cap_gb:
                            r = dict(skipped=f"im2col matrix {a_gb:.2f} GB > {cap_gb} GB")
                        else:
                            fn = im2col_cholesky if m == "im2col-chol" else im2col_lstsq
                            r = bench_numpy(fn, x, y, h, args.reps, args.slow_s)
                    else:
                        runs = []
                        for _ in range(args.reps):
                            runs.append(run_pylops(m, x, y, h, args.pylops_iters, pl_budget))
                            if runs[-1][0] > 2.0:
                                break
                        hits = {}
                        for tg in TARGETS:
                            ts = [rr[1][tg] for rr in runs]
                            hits[tg] = None if any(t is None for t in ts) else float(np.median(ts))
                        r = dict(time=float(np.median([rr[0] for rr in runs])), runs=len(runs),
                                 compile=None, best_err=min(rr[2] for rr in runs), hits=hits,
                                 note=f"{runs[-1][3]} it in {runs[-1][0]:.1f} s")
                except MemoryError as e:  # pragma: no cover
                    r = dict(skipped=f"MemoryError: {e}")
                rows[m] = r
                _print_row(m, r, None)
            ref = rows.get("im2col-chol", {})
            for m, r in rows.items():
                if "hits" in r:
                    r["ratio_vs_im2col_chol"] = {
                        tg: (ref["hits"][tg] / r["hits"][tg]
                             if "hits" in ref and ref["hits"][tg] and r["hits"][tg] else None)
                        for tg in TARGETS}
            print(f"-- ratios (im2col-chol time / method time), same run:")
            for m, r in rows.items():
                _print_row(m, r, True)
            results.append(dict(size=size, kernel=k, im2col_gb=a_gb, cond=cond,
                                methods={m: _jsonable(r) for m, r in rows.items()}))
    payload = dict(benchmark="time_to_accuracy", machine=info, targets=TARGETS,
                   fista_cap=fista_cap, gd_cap=gd_cap, pylops_budget_s=pl_budget,
                   argv=sys.argv[1:], results=results)
    print(f"\nwrote {_common.write_json(args.out, payload)}")
    _print_summary(results)


def _jsonable(r):
    out = dict(r)
    for key in ("hits", "ratio_vs_im2col_chol"):
        if key in out:
            out[key] = {f"{tg:g}": v for tg, v in out[key].items()}
    return out


def _print_row(m, r, ratios):
    if "skipped" in r:
        if not ratios:
            print(f"  {m:<12} skipped: {r['skipped']}")
        return
    if ratios:
        rr = r.get("ratio_vs_im2col_chol", {})
        cells = " ".join(f"{_fmt_ratio(rr.get(tg)):>9}" for tg in TARGETS)
        print(f"  {m:<12} {cells}")
        return
    cells = " ".join(f"{_common.fmt_t(r['hits'][tg]) if r['hits'][tg] is not None else '-':>9}"
                     for tg in TARGETS)
    comp = f"compile {r['compile']:.1f}s" if r.get("compile") is not None else ""
    print(f"  {m:<12} to1e-3/1e-6 {cells}  best err {r['best_err']:.1e}  "
          f"[{r['runs']} runs, total {_common.fmt_t(r['time'])}] {comp} {r.get('note', '')}",
          flush=True)


def _fmt_ratio(v):
    if not v:
        return "-"
    return f"{v:.1f}x" if v >= 0.95 else f"{v:.2g}x"


def _print_summary(results):
    """Markdown table: time to 1e-6 (and 1e-3) per method, ratio vs im2col-chol."""
    methods = []
    for res in results:
        for m in res["methods"]:
            if m not in methods:
                methods.append(m)
    for tg in ("0.001", "1e-06"):
        print(f"\nTime to relative error {tg} (ratio vs im2col-chol); '-' = not reached\n")
        print("| image | kernel | " + " | ".join(methods) + " |")
        print("|---|---|" + "---|" * len(methods))
        for res in results:
            cells = []
            for m in methods:
                r = res["methods"].get(m)
                if r is None:
                    cells.append("")
                elif "skipped" in r:
                    cells.append("skipped")
                elif r["hits"][tg] is None:
                    cells.append(f"- ({r['best_err']:.0e})")
                else:
                    ratio = r.get("ratio_vs_im2col_chol", {}).get(tg)
                    rs = f" ({_fmt_ratio(ratio)})" if ratio else ""
                    cells.append(_common.fmt_t(r["hits"][tg]) + rs)
            print(f"| {res['size']}² | {res['kernel']}² | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
