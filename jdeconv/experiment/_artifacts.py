"""What a run writes, and how: JSON, CSV, ``.npy``, text and PNG files in a run directory.

Every file is written atomically through :mod:`jdeconv._files` (a reader sees
nothing or the whole file; nothing existing is replaced), and every path stays
inside the run directory: names are plain file names, checked here.

A run directory is built as ``<dir>.partial-<random>`` next to its final name
and renamed when complete (:class:`RunDirectory`), so **a run is finished
exactly when its top-level directory has no ``.partial`` suffix**. Inside, the
runner writes ``metrics.json`` last (in a sweep: every point's
``metrics.json``, then the sweep's own), so a run that dies leaves a partial
directory in which nothing looks finished. A run that fails with a Python
exception also leaves a ``FAILED`` file holding the traceback.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from jdeconv import _files

__all__ = ["Folder", "RunDirectory", "check_directory_creatable", "clean", "csv_text", "json_text", "kernel_csv_text",
           "kernel_image", "partial_directory_of", "save_npy", "write_png"]

#: Side (in pixels) a kernel image is upsampled to at least, and at most.
KERNEL_IMAGE_SIDE = 256
KERNEL_IMAGE_MAX_SIDE = 4096


# ---------------------------------------------------------------------------
# Encoding.
# ---------------------------------------------------------------------------


def clean(obj: Any) -> Any:
    """JSON-safe plain data: NumPy values to Python, NaN/inf to None.

    Example:
        >>> clean({"a": np.float64("nan"), "b": np.arange(2), "c": (np.bool_(True),)})
        {'a': None, 'b': [0, 1], 'c': [True]}
    """
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_text(obj: Any) -> str:
    """Indented JSON of :func:`clean` ``(obj)`` (never NaN, which JSON lacks)."""
    return json.dumps(clean(obj), indent=2, allow_nan=False) + "\n"


def _cell(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def csv_text(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """CSV with a header row; floats written exactly (``repr``).

    Example:
        >>> print(csv_text(["i", "v"], [(0, 0.5)]), end="")
        i,v
        0,0.5
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


def kernel_csv_text(kernel: np.ndarray) -> str:
    """A (k, l) kernel as a k-line CSV; a stack (C, k, l) as ``channel,row,col,value`` rows."""
    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim == 2:
        buf = io.StringIO()
        np.savetxt(buf, kernel, delimiter=",", fmt="%.17g")
        return buf.getvalue()
    return csv_text(["channel", "row", "col", "value"],
                    ((c, r, q, v) for (c, r, q), v in np.ndenumerate(kernel)))


def kernel_image(kernels: np.ndarray, *, rgb: bool = False) -> np.ndarray:
    """Kernels as a visible [0, 1] image, upsampled with nearest neighbour.

    Each kernel is scaled by its own range (zero stays black for a nonnegative
    kernel); a stack (B, k, l) is tiled in a grid with 1-pixel gaps, or with
    ``rgb=True`` a (3, k, l) stack becomes the colour channels. The result is
    enlarged by an integer factor (each tap a square block) so its longer side
    is at least :data:`KERNEL_IMAGE_SIDE` pixels.

    Example:
        >>> kernel_image(np.eye(2)).shape
        (256, 256)
        >>> kernel_image(np.ones((3, 4, 4)), rgb=True).shape
        (256, 256, 3)
    """
    ks = np.asarray(kernels, np.float64)
    ks = ks.reshape((-1,) + ks.shape[-2:])
    lo = np.minimum(ks.min(axis=(1, 2), keepdims=True), 0.0)
    hi = ks.max(axis=(1, 2), keepdims=True)
    ks = (ks - lo) / np.where(hi > lo, hi - lo, 1.0)
    b, k, l = ks.shape
    if rgb:
        if b != 3:
            raise ValueError(f"an RGB kernel image needs 3 kernels, got {b}")
        out = np.moveaxis(ks, 0, -1)
    else:
        cols = int(math.ceil(math.sqrt(b)))
        rows = int(math.ceil(b / cols))
        out = np.zeros((rows * (k + 1) - 1, cols * (l + 1) - 1))
        for i, h in enumerate(ks):
            r, c = divmod(i, cols)
            out[r * (k + 1):r * (k + 1) + k, c * (l + 1):c * (l + 1) + l] = h
    side = max(out.shape[:2])
    factor = max(1, min(math.ceil(KERNEL_IMAGE_SIDE / side), KERNEL_IMAGE_MAX_SIDE // side))
    return np.repeat(np.repeat(out, factor, axis=0), factor, axis=1)


# ---------------------------------------------------------------------------
# Writing single files (atomic; never over an existing file unless asked).
# ---------------------------------------------------------------------------


def save_npy(path: str | os.PathLike[str], array: Any, *, overwrite: bool = False) -> Path:
    """Atomic ``np.save`` of a float64 array (no pickles)."""
    a = np.asarray(array, np.float64)
    return _files.atomic_write(path, lambda f: np.save(f, a, allow_pickle=False), overwrite=overwrite)


def write_png(path: str | os.PathLike[str], image: np.ndarray, *, overwrite: bool = False) -> Path:
    """Atomic 16-bit PNG of a [0, 1] image (gray or RGB)."""
    from jdeconv.data import write_image

    return write_image(path, image, bit_depth=16, clip=True, overwrite=overwrite)


# ---------------------------------------------------------------------------
# Run directories.
# ---------------------------------------------------------------------------


def _plain(name: str) -> str:
    """Refuses anything but a plain file name (the path must stay inside its directory)."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\\" in name or "\0" in name or os.path.basename(name) != name):
        raise ValueError(f"{name!r} is not a plain file name; run files stay inside the run "
                         "directory")
    return name


class Folder:
    """A directory inside a run; every write stays in it (plain names only)."""

    def __init__(self, path: Path, root: Path | None = None):
        self.dir = Path(path)
        self._root = Path(root if root is not None else path)

    def path(self, name: str) -> Path:
        """``dir / name`` for a plain file name, checked to lie inside the run directory."""
        p = self.dir / _plain(name)
        root = self._root.resolve()
        if not p.resolve().is_relative_to(root):  # e.g. a symlink planted inside
            raise ValueError(f"{str(p)!r} leads outside the run directory {str(self._root)!r}")
        return p

    def folder(self, name: str) -> Folder:
        """Creates a sub-directory (the user's umask) and returns it."""
        p = self.path(name)
        p.mkdir()
        return Folder(p, self._root)

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def write_text(self, name: str, text: str) -> Path:
        return _files.atomic_write_text(self.path(name), text)

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json_text(obj))

    def write_csv(self, name: str, header: list[str], rows: Iterable[Iterable[Any]]) -> Path:
        return self.write_text(name, csv_text(header, rows))

    def save_npy(self, name: str, array: Any) -> Path:
        return save_npy(self.path(name), array)

    def write_png(self, name: str, image: np.ndarray) -> Path:
        return write_png(self.path(name), image)


def check_directory_creatable(path: str | os.PathLike[str]) -> Path:
    """Checks, before any work, that the directory ``path`` can be created (naming ``path``)."""
    p = Path(path)
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"cannot create {str(p)!r}: {str(ancestor)!r} is not a directory")
    try:
        _files.check_writable(ancestor / p.name)
    except OSError:
        raise PermissionError(f"cannot create {str(p)!r}: directory {str(ancestor)!r} is not "
                              "writable") from None
    return p


def partial_directory_of(exc: BaseException) -> Path | None:
    """Where a failed run left its partial directory (None if it made none)."""
    return getattr(exc, "jdeconv_partial_directory", None)


class RunDirectory(Folder):
    """A run directory built as ``<final>.partial-<random>``; renamed by :meth:`finish`.

    Use as a context manager: on success the body calls :meth:`finish`; on any
    exception (Ctrl-C included) the partial directory stays with a ``FAILED``
    file, and the exception carries its path (:func:`partial_directory_of`).

    Example:
        >>> import tempfile
        >>> parent = Path(tempfile.mkdtemp())
        >>> with RunDirectory(parent / "run") as run:
        ...     _ = run.write_json("metrics.json", {"x": 1.0})
        ...     final = run.finish()
        >>> sorted(p.name for p in parent.iterdir()), (final / "metrics.json").exists()
        (['run'], True)
    """

    def __init__(self, final: str | os.PathLike[str]):
        self.final = Path(final)
        partial = _files.make_partial_directory(self.final)
        super().__init__(partial)
        self.finished = False

    def finish(self) -> Path:
        """Renames the complete partial directory to its final name; returns it."""
        _files.finish_directory(self.dir, self.final)
        self.finished = True
        return self.final

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or self.finished:
            return False
        try:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            _files.atomic_write_text(self.dir / "FAILED", text, overwrite=True)
        except OSError:  # pragma: no cover - a full disk: the partial name still says it all
            pass
        try:
            exc.jdeconv_partial_directory = self.dir
        except AttributeError:  # pragma: no cover - exotic exception types
            pass
        return False
