"""Accuracy suite: automatic regularisation weight vs the oracle weight, on natural images.

Usage::

    python experiments/accuracy_suite.py [experiments/accuracy_suite.yaml] [--small] [--out DIR]
                                         [--no-criteria] [--limit N]

For every setting (image x kernel x noise σ x bit depth, from the YAML file) the
original is quantised to the bit depth, blurred (``mode``, MATLAB ``conv2``
geometry), Gaussian noise is added and the result quantised again. Then the
relative kernel error ``||ĥ − h|| / ||h||`` of

* ``auto``: ``jdeconv._autoreg.choose_regularization`` (the configured
  ``method``), then ``jdeconv.estimate_kernel(..., regularization=weights)``;
* ``oracle``: the best weight of the same candidate grid, picked with the true
  kernel (the solutions for all candidates come from the same vmapped solve);
* ``simplex``: the simplex prior alone (weight 0);
* ``ls``: unregularised least squares (``prior="none"``);
* ``fourier``: ``jdeconv.estimate_kernel(..., solver="fourier")``;

and, with ``compare_criteria``, the error of the kernel picked by every other
selection rule: ``upre``, ``discrepancy``, ``lcurve``, ``gcv_raw`` (GCV
without the 3-point smoothing over the grid; all from the same candidates), ``holdout`` (two-fold cross-validation on interleaved bands of
rows: fit on one fold's normal equations, score the re-blur on the other),
``gcv_unconstrained`` and ``reml`` (closed forms of the unconstrained problem
via one generalised eigendecomposition, weight then used with the simplex
prior).

Writes into a new directory (default ``runs/accuracy_suite-<timestamp>``):
``results.json`` (config, every setting, summary), ``results.md`` (tables) and
``accuracy.png`` (auto vs oracle and vs simplex alone); prints the medians and
ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import scipy.linalg  # noqa: E402

import jdeconv  # noqa: E402
from jdeconv import _autoreg, _gram  # noqa: E402
from jdeconv._solvers import exact  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "experiments" / "accuracy_suite.yaml"
EXTRA_CRITERIA = ("holdout", "gcv_unconstrained", "reml")


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    family: str
    size: int
    params: tuple  # sorted (name, value) pairs

    @property
    def label(self) -> str:
        p = ",".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                     for k, v in self.params)
        return f"{self.family}{self.size}({p})"

    def make(self) -> np.ndarray:
        params = dict(self.params)
        if self.family == "aniso":
            return jdeconv.data.gaussian_kernel(self.size, **params)
        return jdeconv.data.make_kernel(self.family, self.size, **params)


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    name: str
    seed: int
    mode: str
    image_size: int
    images: tuple
    kernels: tuple
    noise: tuple
    bits: tuple
    candidates: tuple
    method: str
    compare_criteria: bool


def _kernel_spec(d: dict) -> KernelSpec:
    d = dict(d)
    try:
        family, size = str(d.pop("family")), int(d.pop("size"))
    except KeyError as e:
        raise ValueError(f"kernel entry {d!r} needs 'family' and 'size'") from e
    return KernelSpec(family, size, tuple(sorted(d.items())))


def load_config(path, *, small: bool = False) -> SuiteConfig:
    """Parses the YAML file (and its ``small`` overrides) into a frozen config."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    overrides = raw.pop("small", {}) or {}
    if small:
        raw.update(overrides)
    c = raw.get("candidates", {}) or {}
    grid = np.logspace(math.log10(float(c.get("min", 1e-8))), math.log10(float(c.get("max", 1.0))),
                       int(c.get("num", 25)))
    cand = (0.0,) + tuple(float(v) for v in grid)
    return SuiteConfig(
        name=str(raw.get("name", "accuracy_suite")) + ("-small" if small else ""),
        seed=int(raw.get("seed", 0)),
        mode=str(raw.get("mode", "valid")),
        image_size=int(raw.get("image_size", 128)),
        images=tuple(str(i) for i in raw["images"]),
        kernels=tuple(_kernel_spec(k) for k in raw["kernels"]),
        noise=tuple(float(s) for s in raw["noise"]),
        bits=tuple(int(b) for b in raw["bits"]),
        candidates=cand,
        method=str(raw.get("method", "gcv")),
        compare_criteria=bool(raw.get("compare_criteria", True)),
    )


# --------------------------------------------------------------------------- data


def make_pair(cfg: SuiteConfig, image: str, spec: KernelSpec, sigma: float, bits: int, seed: int):
    if image == "fractal":
        xt = jdeconv.data.fractal_image(cfg.image_size, seed=seed)
    else:
        xt = jdeconv.data.natural_image(image, shape=cfg.image_size)
    h = spec.make()
    y = np.asarray(jdeconv.conv2d(jnp.asarray(xt), jnp.asarray(h), mode=cfg.mode))
    if sigma > 0:
        y = jdeconv.data.add_gaussian_noise(y, sigma, seed=seed + 1)
    return jdeconv.data.quantize(xt, bits), jdeconv.data.quantize(y, bits), h


def rel_err(est, h) -> float:
    return float(np.linalg.norm(np.asarray(est) - h) / np.linalg.norm(h))


# --------------------------------------------------------------------------- extra criteria


_FOLD_QP: dict = {}


def _fold_solver():
    """vmapped exact simplex QP over the candidate weights (compiled once per size)."""
    if "f" not in _FOLD_QP:
        def solve(G, b, R, s, w):
            return exact.solve_qp(G + (w * s) * R, b, prior="simplex").solution
        _FOLD_QP["f"] = jax.jit(jax.vmap(solve, in_axes=(None, None, None, None, 0)))
    return _FOLD_QP["f"]


def holdout_choice(x, y, kshape, candidates, scale, R) -> int:
    """Two-fold CV on interleaved bands of rows of the valid region (mode valid)."""
    k, l = kshape
    M = y.shape[0]
    band = max(2 * k, 16)
    fold = (np.arange(M) // band) % 2
    xp = jnp.asarray(x)
    score = np.zeros(len(candidates))
    for a in (0, 1):
        G = 0.0
        b = 0.0
        for i0 in range(0, M, band):
            if fold[i0] != a:
                continue
            i1 = min(i0 + band, M)
            ne = _gram.normal_equations(xp[i0:i1 + k - 1], jnp.asarray(y[i0:i1]), kshape)
            G, b = G + ne.gram, b + ne.rhs
        H = np.asarray(_fold_solver()(G, b, R, scale, jnp.asarray(candidates)))
        test = fold != a
        for j, hh in enumerate(H):
            r = np.asarray(jdeconv.conv2d(xp, jnp.asarray(hh.reshape(kshape)))) - y
            score[j] += float(np.sum(r[test] ** 2))
    return int(np.argmin(score))


def unconstrained_choices(x, y, kshape, candidates, R, mode) -> dict:
    """GCV and REML of the unconstrained problem (closed forms, generalised eigenbasis)."""
    ne = _gram.normal_equations(jnp.asarray(x), jnp.asarray(y), kshape, mode)
    G, b = np.asarray(ne.gram), np.asarray(ne.rhs)
    kl = G.shape[0]
    n = y.size
    s = np.trace(G) / kl
    d, V = scipy.linalg.eigh(np.asarray(R), G)  # R v = d G v, Vᵀ G V = I
    d = np.maximum(d, 0)
    z = V.T @ b
    h_ls = V @ z
    r = np.asarray(jdeconv.conv2d(jnp.asarray(x), jnp.asarray(h_ls.reshape(kshape)))) - y
    rss0 = float(np.sum(r * r))
    mu = np.asarray(candidates) * s
    md = np.outer(mu, d)
    f = 1 / (1 + md)
    rss = rss0 + np.sum(z ** 2 * (md * f) ** 2, axis=1)
    dof = f.sum(axis=1)
    pen = np.sum(z ** 2 * d * f ** 2, axis=1)
    gcv = (rss / n) / (1 - dof / n) ** 2
    logdet = np.sum(np.log1p(md), axis=1)  # + log det G (constant)
    null = int(np.sum(d <= 1e-12 * max(d.max(), 1e-300)))
    with np.errstate(divide="ignore", invalid="ignore"):
        reml = (n - null) * np.log(rss + mu * pen) + logdet - (kl - null) * np.log(mu)
    reml = np.where(mu > 0, reml, np.inf)
    return {"gcv_unconstrained": int(np.argmin(gcv)), "reml": int(np.argmin(reml))}


# --------------------------------------------------------------------------- one setting


def run_setting(cfg: SuiteConfig, image, spec, sigma, bits, seed) -> dict[str, Any]:
    x, y, h = make_pair(cfg, image, spec, sigma, bits, seed)
    kshape = h.shape
    t0 = time.perf_counter()
    auto = _autoreg.choose_regularization(x, y, kshape, mode=cfg.mode, method=cfg.method,
                                          candidates=cfg.candidates)
    est = jdeconv.estimate_kernel(x, y, kshape, mode=cfg.mode, regularization=auto.weights)
    t_auto = time.perf_counter() - t0
    errs = np.array([rel_err(k, h) for k in np.asarray(auto.kernels)])
    cand = np.asarray(auto.candidates)
    i_or = int(np.argmin(errs))
    zero = int(np.nonzero(cand == 0)[0][0]) if np.any(cand == 0) else None
    row: dict[str, Any] = {
        "image": image, "size": cfg.image_size, "kernel": spec.label, "family": spec.family,
        "kernel_size": spec.size, "sigma": sigma, "bits": bits,
        "auto": rel_err(est.kernel, h), "auto_grid": float(errs[auto.index]),
        "oracle": float(errs[i_or]),
        "simplex": float(errs[zero]) if zero is not None else math.nan,
        "weight_auto": auto.weight, "weight_oracle": float(cand[i_or]),
        "noise_sigma": float(auto.noise_sigma), "fit_statistic": float(auto.fit_statistic),
        "time_auto_s": t_auto,
    }
    row["ls"] = rel_err(jdeconv.estimate_kernel(x, y, kshape, mode=cfg.mode, prior="none").kernel, h)
    row["fourier"] = rel_err(jdeconv.estimate_kernel(x, y, kshape, mode=cfg.mode,
                                                     solver="fourier").kernel, h)
    if cfg.compare_criteria:
        crit = {}
        args = (np.asarray(auto.rss), np.asarray(auto.dof), np.asarray(auto.penalty), cand,
                auto.n_pixels, float(auto.noise_sigma))
        for m in _autoreg.METHODS:
            crit[m] = float(errs[_autoreg.select(m, *args)[1]])
        crit["gcv_raw"] = float(errs[_autoreg.select("gcv", *args, smooth=False)[1]])
        R = jnp.asarray(_autoreg._basis(("smooth",), kshape))
        if cfg.mode == "valid":
            s = float(np.trace(np.asarray(_gram.gram_matrix(jnp.asarray(x), kshape))) / h.size)
            crit["holdout"] = float(errs[holdout_choice(x, y, kshape, cand, s, R)])
        for name, j in unconstrained_choices(x, y, kshape, cand, R, cfg.mode).items():
            crit[name] = float(errs[j])
        row["criteria"] = crit
    return row


# --------------------------------------------------------------------------- reporting


def _ratios(rows, num, den):
    return np.array([r[num] / r[den] if r[den] > 0 else (1.0 if r[num] == 0 else np.inf)
                     for r in rows])


def summarize(rows) -> dict[str, Any]:
    a_or = _ratios(rows, "auto", "oracle")
    a_sx = _ratios(rows, "auto", "simplex")
    out = {
        "settings": len(rows),
        "median": {k: float(np.median([r[k] for r in rows]))
                   for k in ("auto", "oracle", "simplex", "ls", "fourier")},
        "auto_over_oracle": {"median": float(np.median(a_or)), "max": float(np.max(a_or)),
                             "n_over_1.5": int(np.sum(a_or > 1.5)),
                             "n_over_3": int(np.sum(a_or > 3))},
        "auto_over_simplex": {"median": float(np.median(a_sx)), "max": float(np.max(a_sx)),
                              "n_over_1.1": int(np.sum(a_sx > 1.1))},
        "targets_met": {
            "median_auto_over_oracle<=1.5": bool(np.median(a_or) <= 1.5),
            "max_auto_over_oracle<=3": bool(np.max(a_or) <= 3),
            "max_auto_over_simplex<=1.1": bool(np.max(a_sx) <= 1.1),
        },
    }
    if rows and "criteria" in rows[0]:
        crit = {}
        for name in rows[0]["criteria"]:
            ro = np.array([r["criteria"][name] / r["oracle"] if r["oracle"] > 0 else 1.0
                           for r in rows])
            rs = np.array([r["criteria"][name] / r["simplex"] if r["simplex"] > 0 else 1.0
                           for r in rows])
            crit[name] = {"median_over_oracle": float(np.median(ro)),
                          "p90_over_oracle": float(np.percentile(ro, 90)),
                          "max_over_oracle": float(np.max(ro)),
                          "n_over_3": int(np.sum(ro > 3)),
                          "max_over_simplex": float(np.max(rs)),
                          "n_over_simplex_1.1": int(np.sum(rs > 1.1))}
        out["criteria"] = crit
    return out


def markdown(cfg: SuiteConfig, rows, summary) -> str:
    lines = [f"# {cfg.name}", "",
             f"{summary['settings']} settings: images {', '.join(cfg.images)} at "
             f"{cfg.image_size}², {len(cfg.kernels)} kernels, noise {list(cfg.noise)}, bits "
             f"{list(cfg.bits)}, mode {cfg.mode}, {len(cfg.candidates)} candidate weights, "
             f"method {cfg.method}. Relative kernel error ‖ĥ−h‖/‖h‖.", "",
             "## Summary", "",
             "| | auto | oracle | simplex | ls | fourier |", "|---|---|---|---|---|---|",
             "| median error | " + " | ".join(f"{summary['median'][k]:.3g}" for k in
                                              ("auto", "oracle", "simplex", "ls", "fourier"))
             + " |", ""]
    ao, asx = summary["auto_over_oracle"], summary["auto_over_simplex"]
    lines += ["| ratio | median | max | count |", "|---|---|---|---|",
              f"| auto / oracle | {ao['median']:.3f} | {ao['max']:.2f} | {ao['n_over_1.5']} > 1.5, "
              f"{ao['n_over_3']} > 3 |",
              f"| auto / simplex alone | {asx['median']:.3f} | {asx['max']:.2f} | "
              f"{asx['n_over_1.1']} > 1.1 |", ""]
    if "criteria" in summary:
        lines += ["## Selection criteria (error of the kernel each one picks)", "",
                  "| criterion | median / oracle | p90 / oracle | max / oracle | # > 3× oracle "
                  "| max / simplex | # > 1.1× simplex |",
                  "|---|---|---|---|---|---|---|"]
        for name, c in summary["criteria"].items():
            lines.append(f"| {name} | {c['median_over_oracle']:.3f} | {c['p90_over_oracle']:.2f} "
                         f"| {c['max_over_oracle']:.2f} | {c['n_over_3']} | "
                         f"{c['max_over_simplex']:.2f} | {c['n_over_simplex_1.1']} |")
        lines.append("")
    lines += ["## All settings", "",
              "| image | kernel | σ | bits | auto | oracle | simplex | ls | fourier | w auto | "
              "w oracle | σ̂ | fit |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['kernel']} | {r['sigma']:g} | {r['bits']} | {r['auto']:.3g} | "
            f"{r['oracle']:.3g} | {r['simplex']:.3g} | {r['ls']:.3g} | {r['fourier']:.3g} | "
            f"{r['weight_auto']:.1e} | {r['weight_oracle']:.1e} | {r['noise_sigma']:.2g} | "
            f"{r['fit_statistic']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    sig = np.array([r["sigma"] for r in rows])
    for ax, ref, title in ((axes[0], "oracle", "auto vs oracle weight"),
                           (axes[1], "simplex", "auto vs simplex prior alone")):
        a = np.array([r["auto"] for r in rows])
        b = np.array([r[ref] for r in rows])
        sc = ax.scatter(b, a, c=np.log10(np.maximum(sig, 1e-3)), cmap="viridis", s=14)
        lo = max(min(a.min(), b.min()) * 0.5, 1e-8)
        hi = max(a.max(), b.max()) * 2
        t = np.array([lo, hi])
        ax.plot(t, t, "k-", lw=0.8, label="equal")
        for f, st in ((1.5, "--"), (3, ":")) if ref == "oracle" else ((1.1, "--"),):
            ax.plot(t, f * t, "k" + st, lw=0.8, label=f"{f}×")
        ax.set(xscale="log", yscale="log", xlabel=f"{ref} error", ylabel="auto error",
               title=title)
        ax.legend(loc="upper left", fontsize=8)
    fig.colorbar(sc, ax=axes, label="log10 noise σ (σ=0 shown at 1e-3)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _out_dir(cfg: SuiteConfig, out) -> Path:
    if out is not None:
        p = Path(out)
        if p.exists():
            raise SystemExit(f"output directory {p} exists; choose a new one")
        p.mkdir(parents=True)
        return p
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = ROOT / "runs" / f"{cfg.name}-{stamp}"
    p, i = base, 2
    while p.exists():
        p, i = Path(f"{base}-{i}"), i + 1
    p.mkdir(parents=True)
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    ap.add_argument("--small", action="store_true", help="use the config's `small` subset")
    ap.add_argument("--out", default=None, help="new output directory")
    ap.add_argument("--no-criteria", action="store_true", help="skip the criteria comparison")
    ap.add_argument("--limit", type=int, default=None, help="run only the first N settings")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, small=args.small)
    if args.no_criteria:
        cfg = dataclasses.replace(cfg, compare_criteria=False)
    settings = [(i, k, s, b) for i in cfg.images for k in cfg.kernels for s in cfg.noise
                for b in cfg.bits]
    if args.limit is not None:
        settings = settings[:args.limit]
    out = _out_dir(cfg, args.out)
    rows = []
    t0 = time.perf_counter()
    for j, (image, spec, sigma, bits) in enumerate(settings):
        row = run_setting(cfg, image, spec, sigma, bits, cfg.seed)
        rows.append(row)
        print(f"[{j + 1}/{len(settings)}] {image} {spec.label} σ={sigma:g} {bits}-bit: "
              f"auto {row['auto']:.3g} oracle {row['oracle']:.3g} simplex {row['simplex']:.3g} "
              f"ls {row['ls']:.3g} fourier {row['fourier']:.3g} (w={row['weight_auto']:.1e}, "
              f"oracle w={row['weight_oracle']:.1e})", flush=True)
        summary = summarize(rows)
        (out / "results.json").write_text(json.dumps(
            {"config": dataclasses.asdict(cfg), "versions": {"jax": jax.__version__,
             "jdeconv": jdeconv.__version__, "backend": jax.default_backend()},
             "summary": summary, "settings": rows,
             "wall_time_s": time.perf_counter() - t0}, indent=1, default=str))
    summary = summarize(rows)
    (out / "results.md").write_text(markdown(cfg, rows, summary))
    plot(out / "accuracy.png", rows)
    med = summary["median"]
    print(f"\n{len(rows)} settings in {time.perf_counter() - t0:.0f} s -> {out}")
    print("median error: " + ", ".join(f"{k} {v:.3g}" for k, v in med.items()))
    ao, asx = summary["auto_over_oracle"], summary["auto_over_simplex"]
    print(f"auto/oracle: median {ao['median']:.3f}, max {ao['max']:.2f} "
          f"({ao['n_over_1.5']} > 1.5, {ao['n_over_3']} > 3)")
    print(f"auto/simplex: median {asx['median']:.3f}, max {asx['max']:.2f} "
          f"({asx['n_over_1.1']} > 1.1)")
    if "criteria" in summary:
        for name, c in summary["criteria"].items():
            print(f"  {name:18s} median/oracle {c['median_over_oracle']:.3f} max "
                  f"{c['max_over_oracle']:.2f} max/simplex {c['max_over_simplex']:.2f}")
    print("targets:", summary["targets_met"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
