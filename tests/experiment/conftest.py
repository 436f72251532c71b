"""Fixtures of the experiment-layer tests.

Every test reuses one problem size (48x48 images, 5x5 kernels) and few solver
variants, so each compiled program is built once per process; subprocesses
share one persistent compilation cache for the session.
"""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _no_cache_in_process():
    """In-process ``main()`` calls must not switch this process to the persistent cache.

    Session-wide, so it also holds in module-scoped fixtures that call ``main()`` (they are
    set up before any function-scoped fixture): once set, the cache directory stays for the
    whole process, and the user's cache (shared with other processes) is no place for it.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JDECONV_NO_COMPILATION_CACHE", "1")
        yield


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
    """Subprocess environment: CPU, and a per-session user cache directory (XDG_CACHE_HOME)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "JDECONV_", "XDG_CACHE_HOME"))}
    env.update(JAX_PLATFORMS="cpu", XDG_CACHE_HOME=str(tmp_path_factory.mktemp("xdg-cache")))
    return env
