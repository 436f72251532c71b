"""Fixtures shared by the tests (strict settings live in the root conftest.py)."""

import os

import numpy as np
import pytest

# Compile time dominates the suite (every (shape, solver, prior, max_iters) is a new XLA
# program of 2-5 s). LLVM's optimisation passes are most of it and buy nothing for
# programs that run milliseconds: -O0 halves the compile time. Set before JAX creates its
# CPU backend (first computation), inherited by subprocesses; an explicit XLA_FLAGS
# setting of the option wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_backend_optimization_level=0").strip()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
