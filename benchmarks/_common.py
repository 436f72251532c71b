"""Shared helpers of the benchmarks (problem set-up, timing, machine info, JSON)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def test_image(size: int) -> np.ndarray:
    """Natural test image (float64 in [0, 1]) of ``size`` x ``size``.

    Up to 512 the bundled "camera" photograph resized (anti-aliased) to the size.
    Above its native 512 it is *mirror-tiled* instead: upsampling a photograph
    band-limits it, and a band-limited original leaves the kernel unidentifiable
    (the 1024^2 upsampled camera gives cond(X^T X) ~ 1e16).
    """
    import jdeconv

    if size <= 512:
        return jdeconv.data.natural_image("camera", shape=size)
    x = jdeconv.data.natural_image("camera")
    reps = -(-size // x.shape[0])
    tiles = [[x[:: 1 - 2 * (i % 2)][:, :: 1 - 2 * (j % 2)] for j in range(reps)] for i in range(reps)]
    return np.ascontiguousarray(np.block(tiles)[:size, :size])


def test_kernel(k: int) -> np.ndarray:
    """Gaussian PSF, sigma = k / 6 (all taps positive, sum 1)."""
    import jdeconv

    return np.asarray(jdeconv.data.gaussian_kernel(k, k / 6.0))


def im2col(x, kernel_shape, mode: str = "valid") -> np.ndarray:
    """The im2col matrix A (float64) with ``A @ h.ravel() == conv2d(x, h, mode).ravel()``.

    The one reference the tests use too: the dense matrix of
    ``jdeconv.kernel_operator(x, kernel_shape, mode)`` (``as_matrix``).
    """
    import jdeconv

    op = jdeconv.kernel_operator(np.asarray(x, np.float64), kernel_shape, mode)
    return np.asarray(op.as_matrix())


def rel_err(h_est, h) -> float:
    h = np.asarray(h, np.float64)
    return float(np.linalg.norm(np.asarray(h_est, np.float64).reshape(h.shape) - h) / np.linalg.norm(h))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_time(fn, reps: int, *, budget_s: float | None = None):
    """Median wall time of ``reps`` calls (fewer if one call exceeds ``budget_s``).

    Returns (median, number of runs, last output).
    """
    ts, out = [], None
    for _ in range(reps):
        t, out = timed(fn)
        ts.append(t)
        if budget_s is not None and t > budget_s:
            break
    return float(statistics.median(ts)), len(ts), out


def machine_info() -> dict:
    import jax

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = int(line.split()[1]) / 2**20
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gb": round(mem_gb, 1),
        "load_avg_1min": round(load, 2),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "numpy": np.__version__,
        # XLA's options change compile time and memory (README, Performance)
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def write_json(path, payload) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    return path


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def fmt_t(t) -> str:
    if t is None or not np.isfinite(t):
        return "-"
    if t < 1:
        return f"{t * 1e3:.1f}ms"
    return f"{t:.2f}s"
