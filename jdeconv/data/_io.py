"""Reading and writing image files (PNG, TIFF, JPEG read-only, NumPy ``.npy``).

Decoding and encoding go through ``imageio.v3``: its Pillow plugin for PNG
and JPEG, its tifffile plugin for TIFF. 16-bit colour PNG, which Pillow cannot
represent (it silently reduces it to 8 bits), uses the small pure-Python
``pypng`` package, imported only when such a file is read or written.
``.npy`` files are read by NumPy and never unpickled.

Integer samples are scaled to [0, 1] by their bit depth (8-bit: /255,
16-bit: /65535), so a file written by :func:`write_image` reads back exactly
the quantised values ``round(x * (2**b - 1)) / (2**b - 1)``. The dimensions
are read from the file's header and checked before any pixel is decoded, so
an absurd size is one ``ValueError``, not an exhausted machine. Files are
written atomically (:func:`jdeconv._files.atomic_write`).

Example:
    >>> import numpy as np, tempfile, os
    >>> from jdeconv.data import read_image, write_image
    >>> d = tempfile.mkdtemp()
    >>> p = write_image(os.path.join(d, "x.png"), np.full((4, 4), 0.5), bit_depth=16)
    >>> x, info = read_image(p)
    >>> info.bit_depth, info.channels, float(x[0, 0]) == 32768 / 65535
    (16, 1, True)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import imageio.v3 as iio
import numpy as np

from jdeconv import _files, _names, _validation

__all__ = [
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "ImageInfo",
    "LossyImageWarning",
    "read_image",
    "write_image",
]

_FORMATS = {
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".npy": "npy",
}
READ_EXTENSIONS: tuple[str, ...] = tuple(_FORMATS)
"""File extensions :func:`read_image` accepts (case-insensitive)."""
WRITE_EXTENSIONS: tuple[str, ...] = (".png", ".tif", ".tiff", ".npy")
"""File extensions :func:`write_image` accepts (case-insensitive)."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Pillow modes read as they are, and those converted first (to 8-bit L/LA/RGB/RGBA;
# 32-bit "I" is named explicitly so that imageio applies no conversion of its own).
_PIL_NATIVE = ("L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N")
_PIL_CONVERT = {"1": "L", "P": "RGB", "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB",
                "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "I": "I"}


class LossyImageWarning(UserWarning):
    """Warned when reading lossy-compressed data (JPEG).

    Lossy compression adds blocky, signal-dependent errors that the blur model
    ``y = conv2(x, h)`` does not explain, which biases the kernel estimate.
    Save originals and blurred copies as PNG or TIFF instead.
    """


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image` found in a file.

    Attributes:
        path: the path as given (``os.fspath``).
        format: ``"png"``, ``"tiff"``, ``"jpeg"`` or ``"npy"``.
        bit_depth: 8 or 16 for integer data (the divisor used was
            ``2**bit_depth - 1``; PNGs below 8 bits are expanded to 8 by the
            decoder), ``None`` for float data.
        channels: 1 (gray) or 3 (RGB) as stored, alpha excluded.
        shape: shape of the stored image without alpha: ``(m, n)`` or ``(m, n, 3)``.
        lossy: True if the file used lossy compression (JPEG).
    """

    path: str
    format: str
    bit_depth: int | None
    channels: int
    shape: tuple[int, ...]
    lossy: bool


# ---------------------------------------------------------------------------
# Paths and checks.
# ---------------------------------------------------------------------------


def _fspath(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"path must be a str or os.PathLike, got {type(path).__name__}; e.g. 'image.png'"
        )
    p = os.fspath(path)
    if not isinstance(p, str):
        raise TypeError(f"path must be text, got bytes {p!r}; decode it, e.g. path.decode()")
    return p


def _extension(p: str, allowed: tuple[str, ...], action: str) -> str:
    ext = os.path.splitext(p)[1].lower()
    if ext not in allowed:
        shown = ext if ext else "no extension"
        raise ValueError(
            f"cannot {action} {p!r}: unsupported file type ({shown}); "
            f"supported extensions are {', '.join(allowed)}"
        )
    return ext


@contextlib.contextmanager
def _decoding(p: str) -> Iterator[None]:
    """Turns any failure of a decoder into one ``ValueError`` naming the file."""
    try:
        yield
    except (ImportError, MemoryError, PermissionError):
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a decode error
        raise ValueError(
            f"file {p!r} could not be decoded ({type(exc).__name__}: {exc}); "
            f"it may be corrupt or not match its extension"
        ) from exc


def _check_dimensions(p: str, rows: int, cols: int) -> None:
    """Refuses, from the header and before decoding, an image too large to hold."""
    _validation.check_image_size((int(rows), int(cols)), f"image file {p!r}")


def _import_png() -> Any:
    try:
        import png
    except ImportError as exc:
        raise ImportError(
            "16-bit colour PNG needs the pypng package (Pillow cannot represent it); "
            "install it with `pip install pypng`, or use 16-bit TIFF (.tif) instead"
        ) from exc
    return png


# ---------------------------------------------------------------------------
# Readers: each returns (array, bit_depth, lossy_message or None). The array is
# (m, n) or (m, n, c) with c in 1..4; 2 or 4 channels end with alpha.
# ---------------------------------------------------------------------------


def _png_header(p: str) -> tuple[int, int, int, int] | None:
    """(height, width, bit depth, colour type) from the PNG IHDR chunk, or None if not a PNG.

    Pillow reports a 16-bit colour PNG as 8-bit, so the header is read here.
    """
    with open(p, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return height, width, head[24], head[25]


def _read_png16_colour(p: str) -> np.ndarray:
    png = _import_png()
    with _decoding(p), open(p, "rb") as fh:
        width, height, rows, info = png.Reader(file=fh).asDirect()
        data = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
        return data.reshape(height, width, int(info["planes"]))


def _read_pillow(p: str) -> tuple[np.ndarray, int]:
    with _decoding(p):
        f = iio.imopen(p, "r", plugin="pillow")
    with f:
        with _decoding(p):
            meta = f.metadata(index=0)
            (width, height), mode = meta["shape"], meta["mode"]
        _check_dimensions(p, height, width)
        if mode == "P" and "transparency" in meta:
            target = "RGBA"
        elif mode in _PIL_NATIVE:
            target = None
        elif mode in _PIL_CONVERT:
            target = _PIL_CONVERT[mode]
        else:
            raise ValueError(f"{p!r} has Pillow image mode {mode!r}, which jdeconv does not read; "
                             f"save it as 8- or 16-bit gray or RGB")
        with _decoding(p):
            arr = f.read(index=0, mode=target)
    if mode == "I":  # 32-bit integer samples: accepted when they fit in 16 bits
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"{p!r} has 32-bit integer samples outside 0..65535, which jdeconv "
                             f"does not read; save it as 8- or 16-bit")
        return arr.astype(np.uint16), 16
    if arr.dtype.itemsize == 2:
        return arr.astype(np.uint16), 16
    return arr.astype(np.uint8), 8


def _read_png(p: str) -> tuple[np.ndarray, int | None, str | None]:
    header = _png_header(p)
    if header is not None:
        _check_dimensions(p, header[0], header[1])
        if header[2] == 16 and header[3] in (2, 4, 6):  # 16-bit RGB, gray+alpha, RGBA
            return _read_png16_colour(p), 16, None
    arr, depth = _read_pillow(p)
    return arr, depth, None


def _read_jpeg(p: str) -> tuple[np.ndarray, int | None, str | None]:
    arr, depth = _read_pillow(p)
    return arr, depth, (
        f"{p!r} is a JPEG: lossy compression adds errors that the blur model does not "
        f"explain and biases the kernel estimate; use PNG or TIFF files instead")


def _read_tiff(p: str) -> tuple[np.ndarray, int | None, str | None]:
    with _decoding(p):
        f = iio.imopen(p, "r", plugin="tifffile")
    with f:
        with _decoding(p):
            dtype = np.dtype(f.properties(index=0).dtype)
            meta = f.metadata(index=0)  # tags of the first page
            rows, cols = meta["ImageLength"], meta["ImageWidth"]
        _check_dimensions(p, rows, cols)
        if dtype.kind == "u" and dtype.itemsize in (1, 2):
            depth: int | None = 8 * dtype.itemsize
        elif dtype.kind == "f":
            depth = None
        else:
            raise ValueError(f"TIFF {p!r} has {dtype} samples, which jdeconv does not read; "
                             f"save it as 8- or 16-bit unsigned integer or float")
        try:
            f.properties(index=0, page=1)
        except IndexError:
            pass  # a single page: one image
        else:
            raise ValueError(f"TIFF {p!r} holds a stack of images (several pages in its first "
                             f"series); jdeconv reads one 2-D gray or RGB image: save a single "
                             f"page/plane")
        with _decoding(p):
            arr = f.read(index=0, page=0)
    if meta.get("planar_configuration") == 2 and arr.ndim == 3:  # separate planes: samples first
        arr = np.moveaxis(arr, 0, -1)
    compression = meta.get("compression")
    compression = getattr(compression, "name", str(compression))
    lossy = None
    if "JPEG" in compression.upper():
        lossy = (f"TIFF {p!r} uses {compression} compression, which is lossy and biases the "
                 f"kernel estimate; save it uncompressed or with lossless (LZW/deflate) "
                 f"compression")
    return arr, depth, lossy


def _read_npy(p: str) -> tuple[np.ndarray, int | None, str | None]:
    with _decoding(p):  # the header only: dtype and shape, before any data
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
    if dtype.hasobject:
        raise ValueError(
            f"{p!r} holds a pickled object array; jdeconv reads only plain numeric .npy "
            f"(allow_pickle=False): save a float array, e.g. np.save(path, arr.astype(np.float64))"
        )
    if dtype.kind != "f":
        raise ValueError(
            f"{p!r} holds {dtype} data; .npy images must be float in [0, 1]: "
            f"save e.g. arr.astype(np.float64) / 255 for 8-bit data"
        )
    if not (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3))):
        raise ValueError(
            f"{p!r} holds an array of shape {shape}; .npy images must be (m, n) gray "
            f"or (m, n, 3) RGB"
        )
    _check_dimensions(p, shape[0], shape[1])
    with _decoding(p):
        arr = np.load(p, allow_pickle=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{p!r} contains NaN or Inf values; replace them (e.g. np.nan_to_num) and save again")
    return arr, None, None


def read_image(path: str | os.PathLike[str], *, channels: str = "gray") -> tuple[np.ndarray, ImageInfo]:
    """Read an image file as float64.

    Supported: PNG and TIFF (8- and 16-bit, gray or RGB, with or without
    alpha; float TIFF too), JPEG (read-only, with a :class:`LossyImageWarning`)
    and ``.npy`` float arrays of shape (m, n) or (m, n, 3). Integer samples are
    divided by 255 (8-bit) or 65535 (16-bit); float data are returned as
    stored. An alpha channel is dropped; if it is not fully opaque a
    ``UserWarning`` says so (colour values are used as stored, not composited).
    The dimensions are checked from the header before decoding (at most
    ``MAX_IMAGE_SIDE`` pixels per side and ``MAX_IMAGE_PIXELS`` in all, see
    :mod:`jdeconv._validation`).

    Args:
        path: file path; the extension selects the format.
        channels: ``"gray"`` returns (m, n), converting RGB by averaging the
            R, G and B channels (the original question's rule, not a
            luminance weighting); ``"rgb"`` returns (m, n, 3), replicating gray;
            ``"keep"`` returns (m, n) or (m, n, 3) as stored.

    Returns:
        ``(image, info)``: image is a float64 array, in [0, 1] for integer
        files; info is an :class:`ImageInfo`.

    Raises:
        TypeError: if ``path`` is not a str/PathLike.
        FileNotFoundError: if the file does not exist.
        IsADirectoryError: if ``path`` is a directory.
        ValueError: for an unsupported extension, a bad ``channels`` value, a
            file that cannot be decoded, an image too large, unsupported
            sample types or shapes, a pickled ``.npy`` or NaN/Inf in a
            ``.npy`` file; the message names the file.
        ImportError: for 16-bit colour PNG without ``pypng`` installed.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = write_image(os.path.join(tempfile.mkdtemp(), "c.tif"), np.ones((2, 3, 3)))
        >>> x, info = read_image(p)
        >>> x.shape, info.format, info.bit_depth, info.channels
        ((2, 3), 'tiff', 8, 3)
    """
    p = _fspath(path)
    _validation.check_choice("channels", channels, _names.CHANNELS)
    if not os.path.exists(p):
        raise FileNotFoundError(f"image file {p!r} does not exist; check the path")
    if os.path.isdir(p):
        raise IsADirectoryError(f"{p!r} is a directory; give the path of an image file inside it")
    fmt = _FORMATS[_extension(p, READ_EXTENSIONS, "read")]
    reader = {"png": _read_png, "tiff": _read_tiff, "jpeg": _read_jpeg, "npy": _read_npy}[fmt]
    arr, depth, lossy = reader(p)
    if lossy:
        warnings.warn(lossy, LossyImageWarning, stacklevel=2)

    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # gray + alpha, RGB + alpha
        alpha = arr[..., -1]
        opaque = float(2**depth - 1) if depth else 1.0
        if np.any(alpha != opaque):
            warnings.warn(
                f"{p!r} has a transparent (non-opaque) alpha channel; it is ignored and the "
                f"colour values are used as stored. Flatten the image onto a background first "
                f"if transparency matters",
                UserWarning,
                stacklevel=2,
            )
        arr = arr[..., :-1]
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3) or arr.size == 0:
        raise ValueError(
            f"{p!r} decodes to an array of shape {arr.shape}; jdeconv reads (m, n) gray or (m, n, 3) RGB images"
        )

    if depth is None:
        img = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(img)):
            raise ValueError(f"{p!r} contains NaN or Inf values; replace them and save again")
    else:
        img = arr.astype(np.float64) / float(2**depth - 1)

    stored_shape = tuple(int(s) for s in img.shape)
    n_channels = 1 if img.ndim == 2 else 3
    if channels == "gray" and img.ndim == 3:
        img = img.mean(axis=2)
    elif channels == "rgb" and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    info = ImageInfo(
        path=p, format=fmt, bit_depth=depth, channels=n_channels, shape=stored_shape,
        lossy=lossy is not None,
    )
    return np.ascontiguousarray(img), info


# ---------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------


def _encode_png(f: BinaryIO, q: np.ndarray) -> None:
    if q.dtype == np.uint16 and q.ndim == 3:
        # Pillow has no 16-bit RGB mode (imageio's Pillow plugin refuses such
        # arrays), so this one case is written by pypng.
        png = _import_png()
        m, n, c = q.shape
        png.Writer(width=n, height=m, greyscale=False, bitdepth=16).write(f, q.reshape(m, n * c))
        return
    f.write(iio.imwrite("<bytes>", q, extension=".png", plugin="pillow"))


def _encode_tiff(f: BinaryIO, q: np.ndarray) -> None:
    photometric = "rgb" if q.ndim == 3 else "minisblack"
    f.write(iio.imwrite("<bytes>", q, extension=".tif", plugin="tifffile", photometric=photometric))


def _encode_npy(f: BinaryIO, q: np.ndarray) -> None:
    np.save(f, q, allow_pickle=False)


def _check_write_image(image: Any, *, clip: bool, fmt: str) -> np.ndarray:
    try:
        arr = np.asarray(image)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"image must be a numeric array, got {type(image).__name__}") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"image must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)) or arr.size == 0:
        raise ValueError(
            f"image has shape {arr.shape}; give a non-empty (m, n) gray or (m, n, 3) RGB array"
        )
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or Inf; replace them (e.g. np.nan_to_num) before writing")
    if clip:
        arr = np.clip(arr, 0.0, 1.0)
    elif fmt != "npy":
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            hint = " (integer data? divide by 255 or 65535 first)" if hi > 1.0 and float(hi).is_integer() else ""
            raise ValueError(
                f"image values span [{lo:g}, {hi:g}], outside [0, 1]{hint}; rescale them "
                f"or pass clip=True to clip"
            )
    return arr


def write_image(
    path: str | os.PathLike[str],
    image: Any,
    *,
    bit_depth: int = 8,
    clip: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write an image atomically as PNG, TIFF (gray or RGB) or ``.npy``.

    PNG/TIFF: the [0, 1] float image is quantised to
    ``round(x * (2**bit_depth - 1))`` and stored as 8- or 16-bit unsigned
    integers, uncompressed TIFF or PNG (16-bit RGB PNG uses ``pypng``).
    ``.npy``: the values are stored as float64, unquantised and unrestricted in
    range. The destination is checked first (errors name it, never a temporary
    file); the data go to a temporary file in the same directory which is then
    moved into place, so readers never see a partial file.

    Args:
        path: destination; the extension selects the format (``.png``,
            ``.tif``/``.tiff``, ``.npy``).
        image: (m, n) gray or (m, n, 3) RGB array, finite; in [0, 1] for
            PNG/TIFF unless ``clip=True``.
        bit_depth: 8 or 16 (PNG/TIFF only; ignored for ``.npy``).
        clip: clip values to [0, 1] instead of raising.
        overwrite: replace an existing file (still atomically).

    Returns:
        The written path as a ``pathlib.Path``.

    Raises:
        TypeError: for a bad path type or non-numeric image.
        ValueError: for an unsupported extension (JPEG is refused: lossy), a
            bad ``bit_depth``, bad shape, NaN/Inf, or values outside [0, 1]
            without ``clip``.
        FileExistsError: if the file exists and ``overwrite`` is False.
        FileNotFoundError: if the destination directory does not exist.
        IsADirectoryError: if ``path`` is a directory.
        PermissionError: if the destination directory is not writable.
        ImportError: for 16-bit RGB PNG without ``pypng`` installed.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = write_image(os.path.join(tempfile.mkdtemp(), "y.png"), np.eye(3), bit_depth=16)
        >>> p.name, read_image(p)[1].bit_depth
        ('y.png', 16)
    """
    p = _fspath(path)
    ext = os.path.splitext(p)[1].lower()
    if ext in (".jpg", ".jpeg"):
        raise ValueError(
            f"cannot write {p!r}: JPEG is lossy and biases kernel estimates; "
            f"use one of {', '.join(WRITE_EXTENSIONS)}"
        )
    fmt = _FORMATS[_extension(p, WRITE_EXTENSIONS, "write")]
    if isinstance(bit_depth, bool) or bit_depth not in (8, 16):
        raise ValueError(f"bit_depth is {bit_depth!r}; give 8 or 16")
    arr = _check_write_image(image, clip=clip, fmt=fmt)
    if fmt == "png" and bit_depth == 16 and arr.ndim == 3:
        _import_png()  # a missing pypng is reported before any file is touched
    encode = {"png": _encode_png, "tiff": _encode_tiff, "npy": _encode_npy}[fmt]

    def write(f: BinaryIO) -> None:
        if fmt == "npy":
            payload = arr
        else:
            maxval = 2**bit_depth - 1
            payload = np.round(arr * maxval).astype(np.uint8 if bit_depth == 8 else np.uint16)
        encode(f, payload)

    return _files.atomic_write(p, write, overwrite=overwrite)
