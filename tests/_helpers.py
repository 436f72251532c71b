"""Shared test helpers (import as ``from _helpers import ...``; tests/ is on pythonpath)."""

import numpy as np


def tol(dtype):
    """Relative tolerance that scales with the floating type."""
    return 1e-10 if np.dtype(dtype) == np.float64 else 2e-4
