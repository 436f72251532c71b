"""The plots of a run: kernels, convergence, residual, and a sweep's combined plot.

Matplotlib's object API (``Figure`` + Agg canvas: no global state, no display
needed). Two panel helpers serve every plot: :func:`image_panel` (an image with
its colour bar) and :func:`curve_panel` (curves per iteration, integer ticks,
axes clipped to the data, log scale only over positive values, so a zero
objective never becomes a point at 1e-300).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["curve_panel", "figure", "image_panel", "plot_convergence", "plot_kernel_size",
           "plot_kernels", "plot_residual", "plot_sweep", "run_title", "short_key"]

Curve = tuple[np.ndarray, np.ndarray]


def figure(ncols: int, nrows: int = 1, size=(4.0, 3.4)):
    """A constrained-layout ``Figure`` on an Agg canvas and its (nrows, ncols) axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: str | os.PathLike[str], title: str):
    """Writes the figure as PNG, atomically (never over an existing file); returns it."""
    from jdeconv._files import atomic_write

    if title:
        fig.suptitle(title, fontsize=10)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return fig


def image_panel(fig, ax, img: np.ndarray, title: str, *, diverging: bool = False,
                vmin: float | None = None, vmax: float | None = None,
                cmap: str | None = None, box: tuple[slice, slice] | None = None) -> None:
    """An image with a colour bar; ``diverging`` centres the scale on 0 (±max|img|).

    ``box`` outlines a window (rows, cols) of the image, e.g. the fitted region.
    """
    img = np.asarray(img, np.float64)
    if diverging:
        lim = vmax if vmax is not None else float(np.nanmax(np.abs(img))) if img.size else 0.0
        lim = lim if np.isfinite(lim) and lim > 0 else 1.0
        vmin, vmax, cmap = -lim, lim, cmap or "RdBu_r"
    im = ax.imshow(img, cmap=cmap or "viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    if box is not None:
        from matplotlib.patches import Rectangle

        rows, cols = box
        ax.add_patch(Rectangle((cols.start - 0.5, rows.start - 0.5), cols.stop - cols.start,
                               rows.stop - rows.start, fill=False, ls="--", lw=1.0, ec="k"))
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8)


def _finite(x: np.ndarray, y: np.ndarray, positive: bool) -> Curve:
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    if positive:
        keep &= y > 0
    return x[keep], y[keep]


def curve_panel(ax, curves: Mapping[str, Curve], *, xlabel: str = "iteration", ylabel: str,
                log: bool | None = None) -> bool:
    """Curves ``label -> (x, y)`` on one axis; returns whether anything was drawn.

    Non-finite points are dropped; on a log axis (``log=None``: when every
    value is positive and they span more than a factor 100) so are values
    <= 0. The axes are clipped to the points drawn, the x ticks are integers,
    and short curves get markers.
    """
    from matplotlib.ticker import MaxNLocator

    raw = {k: _finite(x, y, False) for k, (x, y) in curves.items()}
    values = np.concatenate([y for _, y in raw.values()]) if raw else np.zeros(0)
    if log is None:
        log = bool(values.size) and bool(np.all(values > 0)) and float(values.max()) > 100 * float(values.min())
    shown = {k: _finite(x, y, True) for k, (x, y) in curves.items()} if log else raw
    shown = {k: c for k, c in shown.items() if c[0].size}
    for label, (x, y) in shown.items():
        ax.plot(x, y, label=label, **(dict(marker="o", ms=4) if x.size <= 30 else {}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not shown:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        return False
    xs = np.concatenate([x for x, _ in shown.values()])
    ys = np.concatenate([y for _, y in shown.values()])
    x0, x1 = float(xs.min()), float(xs.max())
    pad = 0.5 if x1 == x0 else 0.02 * (x1 - x0)
    ax.set_xlim(x0 - pad, x1 + pad)
    if log:
        ax.set_yscale("log")
        lo, hi = float(ys.min()), float(ys.max())
        ax.set_ylim(lo / 1.5, hi * 1.5)
    else:
        lo, hi = float(ys.min()), float(ys.max())
        margin = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 1e-12)
        ax.set_ylim(lo - margin, hi + margin)
    if len(shown) > 1:
        ax.legend(fontsize=8)
    return True


def run_title(*, solver: str, prior: str, mode: str, kernel_shape, extra: str = "") -> str:
    """The title of a run's plots: what ran (the solver after any override), not the config name.

    Example:
        >>> run_title(solver="fista", prior="simplex", mode="valid", kernel_shape=(15, 15))
        'solver fista, prior simplex, 15x15 kernel, mode valid'
    """
    k, l = kernel_shape
    title = f"solver {solver}, prior {prior}, {k}x{l} kernel, mode {mode}"
    return f"{title} ({extra})" if extra else title


def plot_kernels(path, estimate: np.ndarray, truth: np.ndarray | None, title: str = "") -> Figure:
    """True kernel, estimate and difference side by side (estimate only without truth)."""
    panels = [("estimate", estimate)] if truth is None else [
        ("truth", truth), ("estimate", estimate), ("estimate - truth", estimate - truth)]
    fig, axes = figure(len(panels))
    vmax = max(float(np.max(np.abs(p))) for _, p in panels[:2])
    for ax, (name, img) in zip(axes[0], panels):
        if name.startswith("estimate -"):
            image_panel(fig, ax, img, name, diverging=True)
        else:
            image_panel(fig, ax, img, name, vmin=min(0.0, float(np.min(img))), vmax=vmax)
    return _save(fig, path, title)


def _steps(history: np.ndarray) -> Curve:
    history = np.asarray(history, np.float64).ravel()
    return np.arange(history.size), history


def plot_convergence(path, solver: str, loss_history: np.ndarray, *,
                     optimality_history: np.ndarray | None = None,
                     error_curve: Curve | None = None, title: str = "") -> Figure:
    """How a solve converged, in the solver's own terms.

    First-order solvers: the objective per iteration and, when the truth is
    known, the kernel error per iteration. The exact (active-set) solver: the
    objective and the optimality measure per active-set iteration, which is
    what it iterates on (a handful of points, drawn as markers).
    """
    exact = solver == "exact"
    panels: list[tuple[dict[str, Curve], str]] = [({solver: _steps(loss_history)}, "objective")]
    if optimality_history is not None and np.isfinite(np.asarray(optimality_history, float)).any():
        panels.append(({solver: _steps(optimality_history)}, "optimality"))
    if error_curve is not None:
        panels.append(({solver: error_curve}, "relative kernel error"))
    fig, axes = figure(len(panels), size=(4.6, 3.6))
    xlabel = "active-set iteration" if exact else "iteration"
    for ax, (curves, ylabel) in zip(axes[0], panels):
        curve_panel(ax, curves, xlabel=xlabel, ylabel=ylabel,
                    log=None if ylabel == "objective" else True)
    return _save(fig, path, title)


def plot_residual(path, y: np.ndarray, residual: np.ndarray, *, kernel_shape, mode: str,
                  title: str = "") -> Figure:
    """Blurred image, re-blurred estimate and residual, scaled to the fitted pixels.

    In ``"same"`` mode only the interior is fitted (the border depends on the
    unknown image outside the frame); the colour scales are set by that region,
    which a dashed box outlines, so the border cannot wash the fit out.
    """
    from jdeconv._geometry import valid_window

    box = valid_window(y.shape, tuple(kernel_shape), mode) if mode == "same" else None
    fitted = (lambda a: a[box]) if box is not None else (lambda a: a)
    model = y + residual
    gray_lo = float(min(np.nanmin(fitted(y)), np.nanmin(fitted(model))))
    gray_hi = float(max(np.nanmax(fitted(y)), np.nanmax(fitted(model))))
    lim = float(np.nanmax(np.abs(fitted(residual))))
    fig, axes = figure(3)
    image_panel(fig, axes[0][0], y, "blurred y", cmap="gray", vmin=gray_lo, vmax=gray_hi, box=box)
    image_panel(fig, axes[0][1], model, "conv2d(x, ĥ)", cmap="gray", vmin=gray_lo, vmax=gray_hi,
                box=box)
    image_panel(fig, axes[0][2], residual,
                "residual conv2d(x, ĥ) - y" + (" (fitted region boxed)" if box else ""),
                diverging=True, vmax=lim, box=box)
    return _save(fig, path, title)


def plot_kernel_size(path, sizes, criterion, chosen, *, title: str = "") -> Figure:
    """The ``kernel_shape: auto`` criterion against the box side, the chosen box marked.

    The criterion (residual RMS over the noise level of the generous-box
    kernel cropped to each odd side, on the pixels every side shares) falls to
    about 1 once the box holds the kernel; dotted lines mark the chosen box's
    sides (rows and columns) and a dashed line the value 1.

    Args:
        path: PNG to write.
        sizes: the odd sides evaluated.
        criterion: the criterion at each side.
        chosen: the chosen box ``(k, l)``.
        title: the plot's title.
    """
    fig, axes = figure(1, size=(5.6, 4.0))
    ax = axes[0][0]
    curve_panel(ax, {"criterion": (np.asarray(sizes, float), np.asarray(criterion, float))},
                xlabel="box side (px)", ylabel="residual RMS / noise level", log=None)
    k, l = (int(v) for v in chosen)
    for side, what in sorted({(k, "rows"), (l, "columns")}):
        ax.axvline(side, color="k", ls=":", lw=1.2)
        ax.annotate(f"chosen {what} {side}" if k != l else f"chosen box {k}x{l}",
                    (side, 0.95), xycoords=("data", "axes fraction"), xytext=(-3, 0),
                    textcoords="offset points", rotation=90, ha="right", va="top", fontsize=8)
    ax.axhline(1.0, color="0.5", ls="--", lw=1.0)
    return _save(fig, path, title)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def short_key(key: str) -> str:
    """``data.synthetic.noise.gaussian_sigma`` -> ``noise.gaussian_sigma``."""
    return ".".join(key.split(".")[-2:])


def plot_sweep(path, name: str, sweep: Mapping[str, list[Any]], points: list[dict[str, Any]]) -> Figure:
    """One combined plot of a sweep.

    Against the first numeric sweep key, the kernel error (or the residual
    when the truth is unknown), one line per combination of the other keys;
    when nothing numeric is swept, the points' convergence curves overlaid
    (relative suboptimality when only solver settings vary).

    Args:
        path: PNG to write.
        name: the sweep's name (the title).
        sweep: the swept keys and their values.
        points: per point, ``assignment``, ``row`` (the headline metrics),
            ``loss_history`` and ``error_curve`` (or None).
    """
    keys = list(sweep)
    rows = [p["row"] for p in points]
    metric = "relative_error" if all(r.get("relative_error") is not None for r in rows) else "residual_norm"
    numeric = [k for k in keys if all(_is_number(v) for v in sweep[k])]
    if numeric:
        xkey, others = numeric[0], [k for k in keys if k != numeric[0]]
        groups: dict[str, list[dict[str, Any]]] = {}
        for p in points:
            label = ", ".join(f"{short_key(k)}={p['assignment'][k]}" for k in others) or metric
            groups.setdefault(label, []).append(p)
        curves = {}
        for label, ps in groups.items():
            ps = sorted(ps, key=lambda p: p["assignment"][xkey])
            curves[label] = (np.asarray([p["assignment"][xkey] for p in ps], float),
                             np.asarray([np.nan if p["row"][metric] is None else p["row"][metric]
                                         for p in ps], float))
        fig, axes = figure(1, size=(6.0, 4.2))
        ax = axes[0][0]
        curve_panel(ax, curves, xlabel=short_key(xkey), ylabel=metric.replace("_", " "), log=True)
        xs = np.asarray(sweep[xkey], float)
        positive = xs[xs > 0]
        if positive.size > 1 and xs.min() >= 0 and positive.max() / positive.min() >= 5:
            ax.set_xscale("symlog", linthresh=float(positive.min()))
        if not all(float(v).is_integer() for v in xs):
            from matplotlib.ticker import AutoLocator

            ax.xaxis.set_major_locator(AutoLocator())
        return _save(fig, path, name)
    labels = [", ".join(str(v) for v in p["assignment"].values()) for p in points]
    histories = {lab: _steps(p["loss_history"]) for lab, p in zip(labels, points)}
    if all(k.startswith("solver.") for k in keys):  # same problem: relative suboptimality
        best = min((float(np.nanmin(y)) for _, y in histories.values() if np.isfinite(y).any()),
                   default=0.0)
        for lab, (x, y) in histories.items():
            finite = y[np.isfinite(y)]
            scale = float(finite[0]) - best if finite.size else 0.0
            histories[lab] = (x, (y - best) / scale if scale > 0 else np.full_like(y, np.nan))
        ylabel = "(f - f*) / (f0 - f*)"
    else:
        ylabel = "objective"
    errors = {lab: p["error_curve"] for lab, p in zip(labels, points) if p["error_curve"] is not None}
    if errors and metric == "relative_error":
        for lab, p in zip(labels, points):  # solvers without a curve: one point at their end
            if p["error_curve"] is None:
                errors[lab] = (np.asarray([p["row"]["iterations"] or 0], float),
                               np.asarray([p["row"]["relative_error"]], float))
    fig, axes = figure(2 if errors else 1, size=(5.0, 3.8))
    curve_panel(axes[0][0], histories, ylabel=ylabel, log=True)
    if errors:
        curve_panel(axes[0][1], errors, ylabel="relative kernel error", log=True)
    return _save(fig, path, name)
