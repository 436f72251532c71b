"""Fixtures shared by the tests (strict settings live in the root conftest.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

# Compile time dominates the suite (every (shape, solver, prior, max_iters) is a new XLA
# program of 2-5 s), and LLVM code generation is most of it (the HLO passes are ~5 %); it
# buys nothing for programs that run milliseconds. Two XLA options cut it, measured on the
# estimate's programs (exact, FISTA and automatic weights at 40x40, 5x5): LLVM at -O0 (8.2 ->
# 5.3 s) and XLA's older elemental emitters instead of the MLIR fusion emitters (5.3 ->
# 2.1 s). Set before JAX creates its CPU backend (first computation), inherited by
# subprocesses and pytest-xdist's workers; an explicit XLA_FLAGS setting of an option wins.
# An option this jaxlib does not know would abort every process (XLA parses its flags
# fatally), so each is first tried in a subprocess (1 s, once per session).
_FAST_COMPILE = (("xla_backend_optimization_level", "0"), ("xla_cpu_use_fusion_emitters", "false"))


def _xla_accepts(flags: str) -> bool:
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    try:
        probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                               capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


if "JDECONV_TEST_XLA_FLAGS_SET" not in os.environ:  # once: xdist workers inherit the result
    os.environ["JDECONV_TEST_XLA_FLAGS_SET"] = "1"
    _flags = os.environ.get("XLA_FLAGS", "")
    _wanted = " ".join(f"--{name}={value}" for name, value in _FAST_COMPILE if name not in _flags)
    if _wanted and _xla_accepts(f"{_flags} {_wanted}".strip()):
        os.environ["XLA_FLAGS"] = f"{_flags} {_wanted}".strip()
    elif _wanted and "xla_backend_optimization_level" not in _flags:
        os.environ["XLA_FLAGS"] = f"{_flags} --xla_backend_optimization_level=0".strip()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
