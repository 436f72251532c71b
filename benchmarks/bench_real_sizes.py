"""Real sizes: camera-size kernels in generous boxes, automatic weights, batches (issue 11 §7).

Usage:
  python benchmarks/bench_real_sizes.py            # full run (idle machine: tens of minutes)
  python benchmarks/bench_real_sizes.py --quick    # one box (25), one kernel kind, 8 pairs, 512²/15 only

Inputs. The "camera" photograph at 255² (and 512²), ``same`` geometry, blurred by a
kernel of about 0.6 × the box that sits OFF-CENTRE in the box a user would guess
(motion: ``jdeconv.data.motion_kernel``; defocus: ``jdeconv.data.disk_kernel``), a
little Gaussian noise (σ = 1/255) and 8-bit quantisation. Simplex prior, float64,
one CPU device.

Columns (every ratio from this one run):
  * ``normal_equations`` alone (``jdeconv.normal_equations``, the FFT-formed XᵀX, Xᵀy);
  * exact: ``estimate_kernel`` (solver auto = exact), its ratio to ``normal_equations``;
  * auto: ``estimate_kernel(..., regularization="auto")``, its ratio to ``normal_equations``;
  * the dense QP solvers daqp and proxsuite (``pip install -e .[bench]``) on the SAME
    normal matrices, simplex constraints (h ≥ 0, Σh = 1; G and b scaled by n / tr G,
    which leaves the solution unchanged), and jdeconv's own QP on them;
  * batch (255², box ``--batch-box``, ``--batch`` pairs): ``estimate_kernels(...,
    regularization="auto")`` against a loop of single auto calls (throughput ratio),
    and ONE original with many blurred images ``estimate_kernels(x, ys)`` against
    separate ``estimate_kernel`` calls;
  * 512² with 15×15 and 31×31 boxes: ``estimate_kernel`` against the im2col normal
    equations with Cholesky (A from ``jdeconv.kernel_operator(x, k, "valid").as_matrix()``
    on the valid part of the ``same`` image, the problem jdeconv solves; AᵀA, Aᵀy,
    ``scipy.linalg.cho_factor``/``cho_solve``; building A is timed separately).

Timing: every JAX path is called once first (its compile time, first call − warm
median, is reported separately), then ``--warmup-rounds`` (default 2) untimed rounds,
then timed as the median of ``--reps`` (≥ 3) warm runs; a path whose single run exceeds
``--slow-s`` is run fewer times (the run count is in the JSON). The columns a ratio compares (``normal_equations``, exact and auto) are
timed in alternation, one call of each per round, so that both sides of a ratio see
the same load. A loop of single calls is timed per pair over up to ``--batch`` pairs,
stopping after ``--loop-budget-s`` (with at least 3 pairs): the throughput ratio is
(loop seconds per pair) / (batched seconds per pair). ``uptime`` is printed at the
start and the end; the JSON (default benchmarks/results/bench_real_sizes.json,
``--quick``: bench_real_sizes_quick.json) has every number, the machine and the loads.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jdeconv  # noqa: E402

NOISE = 1.0 / 255
KINDS = ("motion", "defocus")


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------

def true_kernel(kind: str, box: int, variant: int = 0) -> np.ndarray:
    """An off-centre kernel of about 0.6 box in a box × box array (sum 1)."""
    s = int(round(0.6 * box)) | 1
    if kind == "motion":
        angle = (30.0 + 37.0 * variant) % 180.0
        h = jdeconv.data.motion_kernel(s, length=0.85 * (s - 1), angle=angle)
    elif kind == "defocus":
        h = jdeconv.data.disk_kernel(s, radius=(0.40 + 0.02 * (variant % 5)) * s)
    else:
        raise ValueError(kind)
    h = np.asarray(h, np.float64)
    slack = (box - s) // 2
    dr = int(round(0.6 * slack)) * (1 if variant % 2 == 0 else -1)  # off-centre
    dc = -int(round(0.4 * slack)) * (1 if variant % 3 else -1)
    out = np.zeros((box, box))
    r0, c0 = slack + dr, slack + dc
    out[r0:r0 + s, c0:c0 + s] = h
    return out / out.sum()


def blurred(x, h, seed: int) -> np.ndarray:
    """``same`` blur, Gaussian noise σ = 1/255, 8-bit quantisation."""
    y = np.asarray(jdeconv.conv2d(x, h, "same"))
    return jdeconv.data.quantize(jdeconv.data.add_gaussian_noise(y, NOISE, seed=seed), 8)


def originals(batch: int, size: int) -> np.ndarray:
    """``batch`` different originals: the bundled photographs, rotated / flipped."""
    names = [n for n in jdeconv.data.NATURAL_IMAGE_NAMES if n not in ("page", "text")]
    base = [jdeconv.data.natural_image(n, shape=size) for n in names]
    xs = []
    for i in range(batch):
        x = np.rot90(base[i % len(base)], (i // len(base)) % 4)
        if (i // (4 * len(base))) % 2:
            x = x[:, ::-1]
        xs.append(np.ascontiguousarray(x))
    return np.stack(xs)


# ----------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------

def warm(fn, reps, slow_s):
    """(first call s, warm median s, runs, compile s, output) of ``fn``."""
    first, out = _common.timed(fn)
    med, runs, out = _common.median_time(fn, reps, budget_s=slow_s)
    return dict(first_s=first, warm_s=med, runs=runs, compile_s=max(first - med, 0.0)), out


def warm_interleaved(fns, reps, slow_s, warmup=0):
    """:func:`warm` for several functions, timed in alternation (one call of each per round).

    A ratio between two columns then compares calls made under the same load: timed
    one block after the other, a drift of the machine's speed between the blocks
    moved a ratio by up to 0.3 (1.2× against 1.5× for the same code).
    ``warmup`` untimed rounds follow the first calls: right after a compile, the first
    rounds ran up to 1.7× slower (``normal_equations`` at 255², box 31: 34–37 against
    21–24 ms in the rounds after, 2026-12-08), which inflated the first row's medians.
    Returns ``({name: timing}, {name: output})``; each timing keeps its runs' times
    (``times_s``, in the order they ran), so that an outlier round can be seen.
    """
    firsts, outs, ts = {}, {}, {name: [] for name in fns}
    for name, fn in fns.items():
        firsts[name], outs[name] = _common.timed(fn)
    if max(firsts.values()) <= slow_s:
        for _ in range(warmup):
            for fn in fns.values():
                fn()
    for _ in range(reps):
        slow = False
        for name, fn in fns.items():
            t, outs[name] = _common.timed(fn)
            ts[name].append(t)
            slow |= t > slow_s
        if slow:
            break
    timings = {}
    for name in fns:
        med = float(np.median(ts[name]))
        timings[name] = dict(first_s=firsts[name], warm_s=med, runs=len(ts[name]),
                             compile_s=max(firsts[name] - med, 0.0), times_s=ts[name])
    return timings, outs


def per_pair_loop(fn, n, budget_s):
    """Seconds per pair of ``fn(i)`` over up to ``n`` pairs (≥ 3), stopping after ``budget_s``."""
    ts, outs = [], []
    t_start = time.perf_counter()
    for i in range(n):
        t, out = _common.timed(lambda: fn(i))
        ts.append(t)
        outs.append(out)
        if i >= 2 and time.perf_counter() - t_start > budget_s:
            break
    return dict(per_pair_s=float(np.mean(ts)), median_pair_s=float(np.median(ts)),
                pairs_timed=len(ts)), outs


def kernel_of(est):
    return np.asarray(jax.block_until_ready(est.kernel))


def batched_against_loop(label, loop_label, ratio_key, batched, single, args):
    """One batched call (warm) against separate ``single(i)`` calls (per pair), printed.

    Returns ``batched`` (:func:`warm`), ``batched_per_pair_s``, ``loop``
    (:func:`per_pair_loop`), ``ratio_key`` (loop s/pair over batched s/pair) and
    ``max_abs_diff`` between the two sets of kernels.
    """
    B = args.batch
    bt, est = warm(batched, args.reps, args.slow_s)
    k_b = kernel_of(est)
    kernel_of(single(0))  # compile the loop's call
    lt, ks = per_pair_loop(lambda i: kernel_of(single(i)), B, args.loop_budget_s)
    n = lt["pairs_timed"]
    res = {"batched": bt, "batched_per_pair_s": bt["warm_s"] / B, "loop": lt,
           ratio_key: lt["per_pair_s"] / (bt["warm_s"] / B),
           "max_abs_diff": float(np.abs(k_b[:n] - np.stack(ks)).max())}
    print(f"{label}: {_common.fmt_t(bt['warm_s'])} ({_common.fmt_t(bt['warm_s'] / B)}/pair, "
          f"compile {bt['compile_s']:.1f} s); {loop_label} {_common.fmt_t(lt['per_pair_s'])}/pair "
          f"over {n} pairs: {res[ratio_key]:.2f}× {ratio_key.replace('_', ' ')} "
          f"(max |diff| {res['max_abs_diff']:.1e})")
    return res


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        import os
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


# ----------------------------------------------------------------------------
# Dense QP baselines
# ----------------------------------------------------------------------------

def qp_daqp(G, b):
    import daqp

    n = b.size
    A = np.ones((1, n))
    bu = np.r_[np.ones(n), 1.0]
    bl = np.r_[np.zeros(n), 1.0]
    sense = np.r_[np.zeros(n), 5].astype(np.int32)
    h, _, flag, _ = daqp.solve(G, -b, A, bu, bl, sense)
    return np.asarray(h), int(flag) == 1


def qp_proxsuite(G, b):
    import proxsuite

    n = b.size
    r = proxsuite.proxqp.dense.solve(H=G, g=-b, A=np.ones((1, n)), b=np.ones(1), C=None, l=None,
                                     u=None, l_box=np.zeros(n), u_box=np.ones(n), eps_abs=1e-9)
    return np.asarray(r.x), "SOLVED" in str(r.info.status)


def qp_jdeconv():
    """jdeconv's exact QP alone (as the engine calls it for one pair), or None."""
    try:
        from jdeconv._solvers import exact
    except ImportError:
        return None
    blocks = getattr(exact, "default_block_sizes", None)

    def solve(G, b):
        kw = {} if blocks is None else dict(block_sizes=blocks(b.shape[0]))
        return exact.solve_qp(G, b, prior="simplex", **kw)

    return solve


def qp_columns(G, b, h_exact, args):
    """daqp / proxsuite / jdeconv QP times on the scaled (G, b); max |h − h_exact|."""
    scale = b.size / np.trace(G)
    Gs, bs = np.ascontiguousarray(G * scale), np.ascontiguousarray(b * scale)
    cols = {}
    for name, fn in (("daqp", qp_daqp), ("proxsuite", qp_proxsuite)):
        try:
            t, runs, (h, ok) = _common.median_time(lambda fn=fn: fn(Gs, bs), args.reps,
                                                   budget_s=args.slow_s)
        except ImportError:
            cols[name] = None
            continue
        cols[name] = dict(s=t, runs=runs, solved=bool(ok),
                          max_abs_diff_vs_exact=float(np.abs(h - h_exact.ravel()).max()))
    solve = qp_jdeconv()
    if solve is not None:
        Gj, bj = jax.numpy.asarray(Gs), jax.numpy.asarray(bs)
        timing, res = warm(lambda: jax.block_until_ready(solve(Gj, bj)), args.reps, args.slow_s)
        cols["jdeconv_qp"] = dict(s=timing["warm_s"], runs=timing["runs"],
                                  compile_s=timing["compile_s"],
                                  max_abs_diff_vs_exact=float(
                                      np.abs(np.asarray(res.solution) - h_exact.ravel()).max()))
    return cols


# ----------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------

def single_pair_rows(args):
    x = jdeconv.data.natural_image("camera", shape=args.size)
    rows = []
    for kind in args.kinds:
        for box in args.boxes:
            h = true_kernel(kind, box)
            y = blurred(x, h, seed=box)
            fns = {"ne": lambda: jax.block_until_ready(
                       jdeconv.normal_equations(x, y, box, "same")),
                   "exact": lambda: jdeconv.estimate_kernel(x, y, box, mode="same",
                                                            throw=False)}
            if not args.no_auto:
                fns["auto"] = lambda: jdeconv.estimate_kernel(
                    x, y, box, mode="same", regularization="auto", throw=False)
            timings, outs = warm_interleaved(fns, args.reps, args.slow_s, args.warmup_rounds)
            ne_t, ne, ex_t, est = timings["ne"], outs["ne"], timings["exact"], outs["exact"]
            h_exact = kernel_of(est)
            row = dict(size=args.size, kind=kind, box=box, ne=ne_t, exact=ex_t,
                       exact_result=int(est.result),
                       exact_rel_err=_common.rel_err(h_exact, h),
                       exact_nonzero_taps=int(np.sum(h_exact > 0)),
                       exact_over_ne=ex_t["warm_s"] / ne_t["warm_s"])
            if not args.no_auto:
                au_t, est_a = timings["auto"], outs["auto"]
                row.update(auto=au_t, auto_result=int(est_a.result),
                           auto_rel_err=_common.rel_err(kernel_of(est_a), h),
                           auto_over_ne=au_t["warm_s"] / ne_t["warm_s"])
            if not args.no_qp:
                row["qp"] = qp_columns(np.asarray(ne.gram), np.asarray(ne.rhs), h_exact, args)
            rows.append(row)
            print_single(row, header=len(rows) == 1)
    return rows


def batch_rows(args):
    B, box = args.batch, args.batch_box
    xs = originals(B, args.size)
    hs = [true_kernel(KINDS[i % 2], box, variant=i) for i in range(B)]
    ys = np.stack([blurred(xs[i], hs[i], seed=i) for i in range(B)])
    out = dict(size=args.size, box=box, batch=B)

    if not args.no_auto:
        out["auto"] = batched_against_loop(
            f"batched auto, {B} × {args.size}², box {box}", "loop", "throughput_ratio",
            lambda: jdeconv.estimate_kernels(xs, ys, box, mode="same", regularization="auto"),
            lambda i: jdeconv.estimate_kernel(xs[i], ys[i], box, mode="same",
                                              regularization="auto", throw=False), args)

    x = xs[0]
    ys1 = np.stack([blurred(x, hs[i], seed=1000 + i) for i in range(B)])
    out["one_x"] = batched_against_loop(
        f"one x, {B} ys, box {box}", "separate calls", "speedup",
        lambda: jdeconv.estimate_kernels(x, ys1, box, mode="same"),
        lambda i: jdeconv.estimate_kernel(x, ys1[i], box, mode="same", throw=False), args)
    return out


def im2col_rows(args):
    import scipy.linalg

    from jdeconv import _geometry

    x = jdeconv.data.natural_image("camera", shape=args.large_size)
    rows = []
    for k in args.large_kernels:
        h = true_kernel("defocus", k, variant=1)
        y = blurred(x, h, seed=k)
        timings, outs = warm_interleaved(
            {"ne": lambda: jax.block_until_ready(jdeconv.normal_equations(x, y, k, "same")),
             "exact": lambda: jdeconv.estimate_kernel(x, y, k, mode="same", throw=False)},
            args.reps, args.slow_s, args.warmup_rounds)
        ne_t, ex_t, est = timings["ne"], timings["exact"], outs["exact"]
        yv = np.asarray(_geometry.same_to_valid(y, (k, k))).ravel()
        t_build, A = _common.timed(
            lambda: np.asarray(jdeconv.kernel_operator(x, (k, k), "valid").as_matrix()))
        assert A.shape == (yv.size, k * k), A.shape

        def im2col_chol():
            G = A.T @ A
            b = A.T @ yv
            return scipy.linalg.cho_solve(scipy.linalg.cho_factor(G), b)

        t_chol, runs, h_ls = _common.median_time(im2col_chol, args.reps, budget_s=args.slow_s)
        row = dict(size=args.large_size, box=k, ne=ne_t, exact=ex_t,
                   exact_result=int(est.result),
                   exact_rel_err=_common.rel_err(kernel_of(est), h),
                   im2col_build_s=t_build, im2col_bytes=A.nbytes,
                   im2col_chol_s=t_chol, im2col_chol_runs=runs,
                   im2col_chol_rel_err=_common.rel_err(h_ls, h),
                   im2col_chol_over_exact=t_chol / ex_t["warm_s"],
                   im2col_chol_over_ne=t_chol / ne_t["warm_s"])
        del A
        rows.append(row)
        print(f"{args.large_size}², {k}×{k}: normal_equations {_common.fmt_t(ne_t['warm_s'])}, "
              f"estimate_kernel {_common.fmt_t(ex_t['warm_s'])} (compile "
              f"{ex_t['compile_s']:.1f} s), im2col NE + Cholesky {_common.fmt_t(t_chol)} "
              f"(+ building A {_common.fmt_t(t_build)}, {A_gb(row):.2f} GB): "
              f"{row['im2col_chol_over_exact']:.1f}× slower than estimate_kernel")
    return rows


def A_gb(row):
    return row["im2col_bytes"] / 1e9


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------

def print_single(row, header):
    if header:
        print(f"{'image':>6} {'kernel':>8} {'box':>4} {'normal_eq':>10} {'exact':>9} {'×NE':>6} "
              f"{'auto':>9} {'×NE':>6} {'daqp':>9} {'proxsuite':>9} {'jd QP':>9} "
              f"{'compile ex/auto':>16} {'nnz':>5} {'rel err':>8}")
    qp = row.get("qp") or {}

    def q(name):
        c = qp.get(name)
        return _common.fmt_t(c["s"]) if c else "-"

    au = row.get("auto")
    print(f"{row['size']:>5}² {row['kind']:>8} {row['box']:>4} "
          f"{_common.fmt_t(row['ne']['warm_s']):>10} {_common.fmt_t(row['exact']['warm_s']):>9} "
          f"{row['exact_over_ne']:>5.1f}× "
          f"{_common.fmt_t(au['warm_s']) if au else '-':>9} "
          f"{(format(row['auto_over_ne'], '5.1f') + '×') if au else '-':>6} "
          f"{q('daqp'):>9} {q('proxsuite'):>9} {q('jdeconv_qp'):>9} "
          f"{row['exact']['compile_s']:>7.1f}/{(au['compile_s'] if au else float('nan')):<7.1f}s "
          f"{row['exact_nonzero_taps']:>5} {row['exact_rel_err']:>8.1e}", flush=True)


def markdown(result) -> str:
    """The tables for benchmarks/README.md and the README's Performance section."""
    lines = ["| image | kernel | box | `normal_equations` | exact (× NE) | auto (× NE) | daqp | "
             "proxsuite | compile exact / auto |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["single"]:
        qp = r.get("qp") or {}
        au = r.get("auto")

        def q(name):
            c = qp.get(name)
            return _common.fmt_t(c["s"]) if c else "-"

        lines.append(
            f"| {r['size']}² | {r['kind']} | {r['box']} | {_common.fmt_t(r['ne']['warm_s'])} | "
            f"{_common.fmt_t(r['exact']['warm_s'])} ({r['exact_over_ne']:.1f}×) | "
            + (f"{_common.fmt_t(au['warm_s'])} ({r['auto_over_ne']:.1f}×)" if au else "-")
            + f" | {q('daqp')} | {q('proxsuite')} | {r['exact']['compile_s']:.1f} s / "
            + (f"{au['compile_s']:.1f} s |" if au else "- |"))
    b = result.get("batch")
    if b:
        lines += ["", f"| batch ({b['batch']} pairs, {b['size']}², box {b['box']}) | batched | "
                  "separate calls | ratio |", "|---|---|---|---|"]
        if "auto" in b:
            a = b["auto"]
            lines.append(f"| `regularization=\"auto\"` | {_common.fmt_t(a['batched_per_pair_s'])}"
                         f"/pair | {_common.fmt_t(a['loop']['per_pair_s'])}/pair | "
                         f"{a['throughput_ratio']:.1f}× |")
        o = b["one_x"]
        lines.append(f"| one x, many y | {_common.fmt_t(o['batched_per_pair_s'])}/pair | "
                     f"{_common.fmt_t(o['loop']['per_pair_s'])}/pair | {o['speedup']:.1f}× |")
    if result.get("im2col"):
        lines += ["", "| image | box | `normal_equations` | `estimate_kernel` | im2col NE + Cholesky "
                  "| ratio |", "|---|---|---|---|---|---|"]
        for r in result["im2col"]:
            lines.append(f"| {r['size']}² | {r['box']}×{r['box']} | "
                         f"{_common.fmt_t(r['ne']['warm_s'])} | "
                         f"{_common.fmt_t(r['exact']['warm_s'])} | "
                         f"{_common.fmt_t(r['im2col_chol_s'])} | "
                         f"{r['im2col_chol_over_exact']:.0f}× |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="one box (25), motion only, 8 pairs, 512² with 15×15 only")
    ap.add_argument("--size", type=int, default=255)
    ap.add_argument("--boxes", type=int, nargs="+")
    ap.add_argument("--kinds", nargs="+", choices=KINDS)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--batch-box", type=int)
    ap.add_argument("--large-size", type=int, default=512)
    ap.add_argument("--large-kernels", type=int, nargs="+")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup-rounds", type=int, default=2,
                    help="untimed rounds after the first calls (0: none, as before 2026-12-08)")
    ap.add_argument("--slow-s", type=float, default=120.0,
                    help="a path whose one warm run exceeds this is run fewer times")
    ap.add_argument("--loop-budget-s", type=float, default=300.0)
    ap.add_argument("--no-auto", action="store_true")
    ap.add_argument("--no-qp", action="store_true")
    ap.add_argument("--no-batch", action="store_true")
    ap.add_argument("--no-im2col", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.reps < 3:
        ap.error("--reps must be at least 3 (medians of >= 3 warm runs)")
    q = args.quick
    args.boxes = args.boxes or ([25] if q else [25, 31, 39, 51])
    args.kinds = args.kinds or (["motion"] if q else list(KINDS))
    args.batch = args.batch or (8 if q else 64)
    args.batch_box = args.batch_box or (args.boxes[0] if q else 31)
    args.large_kernels = args.large_kernels or ([15] if q else [15, 31])
    out = Path(args.out or _common.RESULTS / ("bench_real_sizes_quick.json" if q
                                              else "bench_real_sizes.json"))
    warnings.filterwarnings("ignore", module="jdeconv.*")  # fit diagnostics: not timed here

    up_start = uptime()
    print("uptime (start):", up_start)
    info = _common.machine_info()
    print(f"{info['cpu']} x{info['nproc']}, {info['mem_gb']} GB, jax {info['jax']} "
          f"({info['backend']}, {len(jax.devices())} device(s))", flush=True)
    t0 = time.perf_counter()
    result = dict(args=vars(args), machine=info, uptime_start=up_start)
    result["single"] = single_pair_rows(args)
    if not args.no_batch:
        result["batch"] = batch_rows(args)
    if not args.no_im2col:
        result["im2col"] = im2col_rows(args)
    result["wall_s"] = time.perf_counter() - t0
    result["uptime_end"] = uptime()
    result["markdown"] = markdown(result)
    print()
    print(result["markdown"])
    print()
    print("uptime (end):", result["uptime_end"])
    print(f"total {result['wall_s']:.0f} s; wrote {_common.write_json(out, result)}")
    return result


if __name__ == "__main__":
    main()
