"""Atomic files and directories: nothing a user wrote is overwritten or half-written.

Standard library only; used by the image writer (``jdeconv.data``) and by the
experiment layer's artifacts. A file is written to a temporary name in its
destination directory, flushed, and then linked into place (refusing to
replace an existing file unless ``overwrite=True``). A directory is built under
``<name>.partial-<random>`` and renamed when complete, so a directory without
the ``.partial`` suffix is always a finished one.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def check_writable(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Checks, before any work, that a file can be created at ``path``.

    Raises ``FileExistsError``, ``FileNotFoundError``, ``IsADirectoryError`` or
    ``PermissionError`` naming the user's path (never a temporary name).
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"cannot write {str(p)!r}: it is a directory; give a file name.")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{str(p)!r} already exists; pass overwrite=True (CLI: --overwrite) "
                              "to replace it.")
    directory = p.parent if str(p.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot write {str(p)!r}: directory {str(directory)!r} does not "
                                "exist; create it first.")
    probe = directory / f".{p.name}.{uuid.uuid4().hex[:12]}.probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise PermissionError(f"cannot write {str(p)!r}: directory {str(directory)!r} is not "
                              f"writable ({e.strerror or e}).") from None
    os.close(fd)
    os.unlink(probe)
    return p


def _link_no_clobber(tmp: str, dest: str) -> None:
    """Moves ``tmp`` to ``dest`` atomically, failing if ``dest`` exists."""
    try:
        os.link(tmp, dest)  # atomic, and refuses to replace an existing file
    except FileExistsError:
        raise FileExistsError(f"{dest!r} already exists; pass overwrite=True (CLI: --overwrite) "
                              "to replace it.") from None
    except (OSError, NotImplementedError, AttributeError):
        # File systems without hard links: best-effort check, then replace.
        if os.path.exists(dest):
            raise FileExistsError(f"{dest!r} already exists; pass overwrite=True to replace "
                                  "it.") from None
        os.replace(tmp, dest)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None], *,
                 overwrite: bool = False) -> Path:
    """Writes a file atomically: readers see the old state or the whole new file.

    Args:
      path: destination file.
      write: called with a binary file object open on a temporary file in the
        destination directory.
      overwrite: replace an existing file (still atomically).

    Returns:
      ``path`` as a ``pathlib.Path``.

    Example:
      >>> import tempfile, pathlib
      >>> d = pathlib.Path(tempfile.mkdtemp())
      >>> atomic_write(d / "a.txt", lambda f: f.write(b"hi")).read_bytes()
      b'hi'
    """
    p = check_writable(path, overwrite=overwrite)
    tmp = p.parent / f".{p.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # honour the user's umask, as other tools do (mkstemp-style 0600 is too strict)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if overwrite:
            os.replace(tmp, p)
        else:
            _link_no_clobber(str(tmp), str(p))
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), overwrite=overwrite)


def make_partial_directory(final: str | os.PathLike[str]) -> Path:
    """Creates ``<final>.partial-<random>`` next to ``final``, with the user's umask.

    Raises ``FileExistsError`` if ``final`` exists (runs are never overwritten).
    """
    final = Path(final)
    if final.exists():
        raise FileExistsError(f"directory {str(final)!r} already exists; choose another output "
                              "directory (runs are never overwritten).")
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{final.name}.partial-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(partial, 0o777 & ~umask)  # mkdtemp makes 0700; use the user's umask
    return partial


def finish_directory(partial: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Renames a complete partial directory to its final name (never over an existing one)."""
    partial, final = Path(partial), Path(final)
    if final.exists():
        raise FileExistsError(f"directory {str(final)!r} appeared while the run was going; the "
                              f"results are in {str(partial)!r}.")
    os.rename(partial, final)
    return final
