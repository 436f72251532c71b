"""Test configuration: 64-bit floats on (float32 is still tested explicitly)."""

import os

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "jdeconv", deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("jdeconv")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tol(dtype):
    """Relative tolerance that scales with the floating type."""
    return 1e-10 if np.dtype(dtype) == np.float64 else 2e-4
