"""The command line's process: usage errors, output checks, float64 and the compilation cache.

Shared by every ``jdeconv`` sub-command (:mod:`jdeconv.experiment.cli` and the
modules it delegates to), so that none of them imports the command line back.
Nothing here imports JAX at module level: ``--help`` and argument errors are
answered without it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_MIN_COMPILE_SECONDS", "UsageError", "cache_directory", "check_new_directory",
           "check_new_file", "setup_jax"]

#: Compile-time threshold for the persistent cache: our programs take seconds, tiny ops much less.
CACHE_MIN_COMPILE_SECONDS = 0.1


class UsageError(ValueError):
    """A command-line mistake (reported like any other user error)."""


def cache_directory() -> Path:
    """The per-user compilation cache: ``$XDG_CACHE_HOME/jdeconv/jax`` or ``~/.cache/jdeconv/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jdeconv" / "jax"


def cache_disabled(args) -> bool:
    """True when this process should not use the persistent compilation cache."""
    if not getattr(args, "process_cache", False):
        return True  # main(argv) called from Python: leave the caller's JAX configuration alone
    return bool(getattr(args, "no_cache", False)) or os.environ.get(
        "JDECONV_NO_COMPILATION_CACHE", "").strip().lower() not in ("", "0", "false", "no")


def setup_jax(args) -> None:
    """float64, and the persistent compilation cache unless opted out."""
    import jax

    jax.config.update("jax_enable_x64", True)
    if cache_disabled(args):
        return
    if not jax.config.jax_compilation_cache_dir:  # JAX_COMPILATION_CACHE_DIR wins
        directory = cache_directory()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return  # no cache rather than no result (a read-only home, say)
        jax.config.update("jax_compilation_cache_dir", str(directory))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECONDS)
    if "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in os.environ:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size threshold


def check_new_file(path: Path, overwrite: bool) -> None:
    """Before any work: the user's path can be written (named in the message, never a temp file)."""
    from jdeconv._files import check_writable

    if path.exists() and not path.is_dir() and not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; pass --overwrite to replace it")
    check_writable(path, overwrite=overwrite)


def check_new_directory(path: Path, what: str) -> None:
    """Before any work: ``path`` does not exist and can be created."""
    from jdeconv.experiment._artifacts import check_directory_creatable

    if path.exists():
        raise FileExistsError(f"{what} {str(path)!r} already exists; choose a new one "
                              "(nothing is ever overwritten)")
    check_directory_creatable(path)
