"""Strict settings for every test and doctest (lineax/optimistix style).

64-bit floats (float32 is still tested explicitly), rank promotion raises
(``a[:, None] * b`` must be written out), and warnings raised from jdeconv are
errors (set in pyproject's ``filterwarnings``). Hypothesis runs without a
deadline: the first call of a new shape compiles.
"""

import atexit
import ctypes
import gc
import os
import shutil
import tempfile

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# One persistent compilation cache for the session's processes (the xdist controller makes
# it; its workers inherit the variable): a program one worker compiled, or that a worker
# compiled before dropping its caches (below), is read back instead of compiled again.
# Only this process's configuration: subprocesses started by tests keep their own.
if "JDECONV_TEST_JAX_CACHE" not in os.environ:
    os.environ["JDECONV_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="jdeconv-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JDECONV_TEST_JAX_CACHE"], ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", os.environ["JDECONV_TEST_JAX_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

# Under CI (CI=true) hypothesis draws the same examples on every run (derandomize), so a CI
# result does not depend on the draw; local runs keep exploring new ones.
settings.register_profile(
    "jdeconv", deadline=None, print_blob=True, max_examples=25,
    derandomize=os.environ.get("CI", "").lower() in ("true", "1"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("jdeconv")


# Every compiled program stays loaded (JIT code pages, buffers), and glibc keeps freed
# memory (XLA's compile-time allocations) instead of returning it. Over the whole suite that
# passes the kernel's limit on memory maps (vm.max_map_count, 65530 by default: XLA then
# crashes inside a compile) and several GB of resident memory. So: after each test, freed
# memory goes back to the system (malloc_trim: about 1 ms); after each module, JAX's caches
# are dropped when the process holds many maps or much memory (modules reuse their own
# shapes, so little is compiled twice). Under pytest-xdist the memory bound is shared out
# between the workers (JDECONV_TEST_RSS_KB sets the bound, in kB, for measurements).
_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
_MAX_MAPS = 20_000
_MAX_RSS_KB = int(os.environ.get("JDECONV_TEST_RSS_KB", 1_000_000)) // _WORKERS
try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc: nothing to trim
    _malloc_trim = None


def _process_load() -> tuple[int, int]:
    try:
        with open("/proc/self/maps") as f:
            maps = sum(1 for _ in f)
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    except OSError:  # not Linux: nothing to measure, nothing to drop
        return 0, 0
    return maps, rss


def _trim() -> None:
    if _malloc_trim is not None:
        _malloc_trim(0)


def _drop_compiled_programs() -> None:
    jax.clear_caches()
    gc.collect()
    _trim()


@pytest.fixture(autouse=True)
def _freed_memory_returned():
    yield
    _trim()


@pytest.fixture(autouse=True, scope="module")
def _bounded_jax_caches():
    yield
    maps, rss = _process_load()
    if maps > _MAX_MAPS or rss > _MAX_RSS_KB:
        _drop_compiled_programs()


@pytest.fixture
def released_memory():
    """Before a test that starts a large subprocess: drop this worker's compiled programs
    and hand its freed memory back, so that the two together stay within the suite's bound."""
    _drop_compiled_programs()
