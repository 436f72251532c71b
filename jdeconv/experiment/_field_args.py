"""Command-line options of PSF fields (no heavy imports: parsed before JAX or NumPy load).

Example:
    >>> parse_grid("4x4")
    (4, 4)
"""

from __future__ import annotations

import argparse
import math
from typing import Any

__all__ = ["MAX_GRID_SIDE", "add_estimate_options", "add_simulate_options", "parse_grid"]

#: Most tiles along one side.
MAX_GRID_SIDE = 64


def parse_grid(text: Any) -> tuple[int, int]:
    """``"4x4"`` -> (4, 4); both sides positive whole numbers (ValueError otherwise)."""
    parts = str(text).strip().lower().replace(",", "x").split("x")
    try:
        grid = tuple(int(p) for p in parts)
    except ValueError:
        grid = ()
    if len(grid) != 2:
        raise ValueError(f"grid {text!r} is not valid; give GYxGX, e.g. 4x4")
    if min(grid) <= 0 or max(grid) > MAX_GRID_SIDE:
        raise ValueError(f"grid {text!r} is not valid; each side must be a whole number in "
                         f"1..{MAX_GRID_SIDE}, e.g. 4x4")
    return grid  # type: ignore[return-value]


def _grid_type(text: str) -> tuple[int, int]:
    try:
        return parse_grid(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0.0 <= v < 1.0):
        raise argparse.ArgumentTypeError(f"--overlap must be in [0, 1), got {text}")
    return v


def _weight(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"--coupling must be a finite weight >= 0, got {text}")
    return v


def _degree(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 6:
        raise argparse.ArgumentTypeError(f"--field-degree must be a whole number in 0..6, got "
                                         f"{text!r}")
    return int(text)


def _sigma_range(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--field-sigma {text!r} is not valid; give "
                                         "CENTRE:CORNER, e.g. 1.0:2.5") from None
    if not (math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0):
        raise argparse.ArgumentTypeError(f"--field-sigma {text!r}: both values must be positive")
    return a, b


def add_estimate_options(e) -> None:
    """``--grid``, ``--overlap``, ``--coupling``, ``--field-degree`` of ``jdeconv estimate``."""
    e.add_argument("--grid", default=None, type=_grid_type, metavar="GYxGX",
                   help="estimate a spatially varying PSF on GYxGX tiles (e.g. 4x4); -o holds "
                   "the (gy, gx, k, l) kernels")
    e.add_argument("--overlap", default=0.1, type=_fraction, metavar="F",
                   help="tile overlap fraction in [0, 1) (with --grid; default: 0.1)")
    e.add_argument("--coupling", default=0.0, type=_weight, metavar="W",
                   help="weight >= 0 tying neighbouring tiles' kernels (with --grid; default: 0)")
    e.add_argument("--field-degree", default=None, type=_degree, metavar="D",
                   help="instead of tiles, kernels whose taps are polynomials of degree D of "
                   "the position (evaluated at the --grid tile centres)")


def add_simulate_options(s) -> None:
    """``--field-sigma``, ``--field-grid`` of ``jdeconv simulate``."""
    s.add_argument("--field-sigma", default=None, type=_sigma_range, metavar="CENTRE:CORNER",
                   help="varying blur: a Gaussian field with sigma CENTRE at the image centre "
                   "growing to CORNER in the corners (conv2d_field; replaces --kernel)")
    s.add_argument("--field-grid", default=(5, 5), type=_grid_type, metavar="GYxGX",
                   help="nodes of the simulated field (default: 5x5)")
