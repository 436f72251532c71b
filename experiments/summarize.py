"""Summarise jdeconv run directories as a Markdown table (and optionally a figure).

Usage::

    python experiments/summarize.py runs/question_exact-* runs/solver_comparison-* [--figure summary.png]

Each argument is a run directory written by ``jdeconv run``: a single run
(``metrics.json``) becomes one row; a sweep (``sweep.json``) becomes one row
per point. Columns: run, point, solver, relative kernel error, residual norm,
PSNR of the re-blurred image, iterations, converged, warm time. With
``--figure``, a bar chart of the relative error of every row (log scale) is
written too. Directories that are not finished runs (``*.partial-*``, a
``FAILED`` marker, no metrics) are reported on stderr and skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

COLUMNS = ("run", "point", "solver", "rel. error", "residual", "PSNR dB", "iterations", "converged", "time s")


def _fmt(v, kind="g") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if kind == "time":
            return f"{v:.3f}"
        if kind == "db":
            return f"{v:.1f}"
        return f"{v:.3g}" if math.isfinite(v) else str(v)
    return str(v)


def _single(path: Path, run: str, point: str = "") -> dict:
    m = json.loads((path / "metrics.json").read_text())
    if m.get("batch", 1) == 1:
        err, res, psnr = m.get("relative_error"), m.get("residual_norm"), m.get("psnr_db")
        its, conv = m.get("iterations"), m.get("converged")
    else:
        err, res, psnr = m.get("relative_error_mean"), m.get("residual_norm_mean"), m.get("psnr_db_mean")
        its = m.get("iterations_median")
        conv = f"{m.get('converged_count')}/{m['batch']}"
        point = (point + " " if point else "") + f"(mean of {m['batch']})"
    return {"run": run, "point": point, "solver": m.get("solver"),
            "rel. error": err, "residual": res, "PSNR dB": psnr, "iterations": its, "converged": conv,
            "time s": (m.get("timing") or {}).get("time_s")}


def rows_for(path: Path) -> list[dict]:
    """Table rows of one run or sweep directory."""
    if ".partial-" in path.name or (path / "FAILED").exists():
        raise ValueError(f"{path} is an unfinished or failed run")
    if (path / "sweep.json").exists():
        sweep = json.loads((path / "sweep.json").read_text())
        rows = []
        for p in sweep["points"]:
            label = ", ".join(f"{'.'.join(k.split('.')[-2:])}={p[k]}" for k in sweep["keys"])
            rows.append(_single(path / p["point"], path.name, label))
        return rows
    if (path / "metrics.json").exists():
        return [_single(path, path.name)]
    raise ValueError(f"{path} has neither metrics.json nor sweep.json (not a jdeconv run directory)")


def markdown(rows: list[dict]) -> str:
    """A GitHub Markdown table of the rows."""
    kinds = {"time s": "time", "PSNR dB": "db"}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c], kinds.get(c, "g")) for c in COLUMNS) + " |")
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    """Bar chart of the relative kernel error per row (log scale)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [r for r in rows if isinstance(r["rel. error"], float)]
    fig = Figure(figsize=(max(6.0, 0.45 * len(shown) + 2), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    labels = [f"{r['run']} {r['point']}".strip() for r in shown]
    ax.bar(range(len(shown)), [max(r["rel. error"], 1e-17) for r in shown])
    ax.set_yscale("log")
    ax.set_xticks(range(len(shown)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("relative kernel error")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--figure", type=Path, default=None, help="also write a bar chart (PNG)")
    args = parser.parse_args(argv)
    rows = []
    for path in args.runs:
        try:
            rows.extend(rows_for(path))
        except (ValueError, OSError) as e:
            print(f"summarize: skipping {path}: {e}", file=sys.stderr)
    if not rows:
        print("summarize: error: no finished runs given", file=sys.stderr)
        return 2
    print(markdown(rows))
    if args.figure is not None:
        figure(rows, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
