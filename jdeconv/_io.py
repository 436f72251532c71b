"""Reading and writing image files (PNG, TIFF, JPEG read-only, NumPy ``.npy``).

Decoding and encoding use Pillow and tifffile; 16-bit colour PNG, which
Pillow cannot represent, uses the small pure-Python ``pypng`` package
(imported only when such a file is read or written).

Integer samples are scaled to [0, 1] by their bit depth (8-bit: /255,
16-bit: /65535), so a file written by :func:`write_image` reads back exactly
the quantised values ``round(x * (2**b - 1)) / (2**b - 1)``.

Example:
    >>> import numpy as np, tempfile, os
    >>> from jdeconv._io import read_image, write_image
    >>> d = tempfile.mkdtemp()
    >>> p = write_image(os.path.join(d, "x.png"), np.full((4, 4), 0.5), bit_depth=16)
    >>> x, info = read_image(p)
    >>> info.bit_depth, info.channels, float(x[0, 0]) == 32768 / 65535
    (16, 1, True)
"""

from __future__ import annotations

import difflib
import io
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile
from PIL import Image

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

_CHANNELS = ("gray", "rgb", "keep")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
# Path checks.
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


def _decode_error(p: str, exc: BaseException) -> ValueError:
    return ValueError(
        f"file {p!r} could not be decoded ({type(exc).__name__}: {exc}); "
        f"it may be corrupt or not match its extension"
    )


# ---------------------------------------------------------------------------
# Decoders: each returns (array, bit_depth, alpha_last, lossy).
# The array is (m, n) or (m, n, c) with c in 1..4; alpha_last says whether the
# last channel of a 2- or 4-channel array is alpha.
# ---------------------------------------------------------------------------


def _png_header(p: str) -> tuple[int, int] | None:
    """(bit depth, colour type) from the PNG IHDR chunk, or None if not a PNG."""
    with open(p, "rb") as f:
        head = f.read(33)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _import_png() -> Any:
    try:
        import png
    except ImportError as exc:
        raise ImportError(
            "16-bit colour PNG needs the pypng package (Pillow cannot represent it); "
            "install it with `pip install pypng`, or use 16-bit TIFF (.tif) instead"
        ) from exc
    return png


def _decode_png16_colour(p: str) -> np.ndarray:
    png = _import_png()
    width, height, rows, info = png.Reader(filename=p).asDirect()
    planes = int(info["planes"])
    data = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    return data.reshape(height, width, planes)


def _decode_pillow(p: str) -> tuple[np.ndarray, int]:
    with Image.open(p) as im:
        im.load()
        mode = im.mode
        if mode == "1":
            im = im.convert("L")
        elif mode in ("P", "PA"):
            im = im.convert("RGBA" if (mode == "PA" or "transparency" in im.info) else "RGB")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode == "La":
            im = im.convert("LA")
        elif mode == "RGBa":
            im = im.convert("RGBA")
        arr = np.asarray(im)
        mode = im.mode
    if mode.startswith("I;16"):
        return arr.astype(np.uint16), 16
    if mode == "I":
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"32-bit integer samples outside 0..65535 (mode {mode})")
        return arr.astype(np.uint16), 16
    if mode in ("L", "LA", "RGB", "RGBA", "RGBX"):
        if mode == "RGBX":
            arr = arr[..., :3]
        return arr.astype(np.uint8), 8
    raise ValueError(f"unsupported Pillow mode {mode!r}")


def _read_png(p: str) -> tuple[np.ndarray, int | None, bool, bool]:
    header = _png_header(p)
    if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
        _import_png()  # raise ImportError outside the decode-error wrapper
        try:
            arr = _decode_png16_colour(p)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a decode error
            raise _decode_error(p, exc) from exc
        return arr, 16, True, False
    try:
        arr, depth = _decode_pillow(p)
    except Exception as exc:  # noqa: BLE001
        raise _decode_error(p, exc) from exc
    return arr, depth, True, False


def _read_jpeg(p: str) -> tuple[np.ndarray, int | None, bool, bool]:
    try:
        arr, depth = _decode_pillow(p)
    except Exception as exc:  # noqa: BLE001
        raise _decode_error(p, exc) from exc
    warnings.warn(
        f"{p!r} is a JPEG: lossy compression adds errors that the blur model does not "
        f"explain and biases the kernel estimate; use PNG or TIFF files instead",
        LossyImageWarning,
        stacklevel=3,
    )
    return arr, depth, True, True


def _read_tiff(p: str) -> tuple[np.ndarray, int | None, bool, bool]:
    try:
        with tifffile.TiffFile(p) as tf:
            series = tf.series[0]
            arr = np.asarray(series.asarray())
            axes = series.axes
            page = tf.pages[0]
            compression = getattr(page.compression, "name", str(page.compression))
    except Exception as exc:  # noqa: BLE001
        raise _decode_error(p, exc) from exc
    if arr.ndim != len(axes):  # pragma: no cover - defensive
        raise ValueError(f"file {p!r} could not be decoded: axes {axes!r} do not match shape {arr.shape}")
    # Bring samples last, drop singleton extra axes, refuse stacks.
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    extra = [(i, a) for i, a in enumerate(axes) if a not in "YXS"]
    big = [(a, arr.shape[i]) for i, a in extra if arr.shape[i] > 1]
    if big:
        raise ValueError(
            f"TIFF {p!r} holds a stack of images (axes {axes!r}, shape {arr.shape}); "
            f"jdeconv reads one 2-D gray or RGB image: save a single page/plane"
        )
    arr = arr.reshape([arr.shape[i] for i, a in enumerate(axes) if a in "YXS"])
    kind = arr.dtype.kind
    if kind == "u" and arr.dtype.itemsize == 1:
        depth: int | None = 8
    elif kind == "u" and arr.dtype.itemsize == 2:
        depth = 16
    elif kind == "f":
        depth = None
    else:
        raise ValueError(
            f"TIFF {p!r} has {arr.dtype} samples, which jdeconv does not read; "
            f"save it as 8- or 16-bit unsigned integer or float"
        )
    lossy = "JPEG" in compression.upper()
    if lossy:
        warnings.warn(
            f"TIFF {p!r} uses {compression} compression, which is lossy and biases the "
            f"kernel estimate; save it uncompressed or with lossless (LZW/deflate) compression",
            LossyImageWarning,
            stacklevel=3,
        )
    # 2 or 4 samples per pixel are gray+alpha / RGB+alpha (extra sample last).
    return arr, depth, True, lossy


def _read_npy(p: str) -> tuple[np.ndarray, int | None, bool, bool]:
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise _decode_error(p, exc) from exc
    if not isinstance(arr, np.ndarray):  # pragma: no cover - np.load of .npy gives ndarray
        raise ValueError(f"file {p!r} could not be decoded as a single NumPy array")
    if arr.dtype.kind != "f":
        raise ValueError(
            f"{p!r} holds {arr.dtype} data; .npy images must be float in [0, 1]: "
            f"save e.g. arr.astype(np.float64) / 255 for 8-bit data"
        )
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3))):
        raise ValueError(
            f"{p!r} holds an array of shape {arr.shape}; .npy images must be (m, n) gray "
            f"or (m, n, 3) RGB"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{p!r} contains NaN or Inf values; replace them (e.g. np.nan_to_num) and save again")
    return arr, None, False, False


_READERS = {"png": _read_png, "tiff": _read_tiff, "jpeg": _read_jpeg, "npy": _read_npy}


def read_image(path: str | os.PathLike[str], *, channels: str = "gray") -> tuple[np.ndarray, ImageInfo]:
    """Read an image file as float64.

    Supported: PNG and TIFF (8- and 16-bit, gray or RGB, with or without
    alpha; float TIFF too), JPEG (read-only, with a :class:`LossyImageWarning`)
    and ``.npy`` float arrays of shape (m, n) or (m, n, 3). Integer samples are
    divided by 255 (8-bit) or 65535 (16-bit); float data are returned as
    stored. An alpha channel is dropped; if it is not fully opaque a
    ``UserWarning`` says so (colour values are used as stored, not composited).

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
            file that cannot be decoded, unsupported sample types or shapes,
            or NaN/Inf in a ``.npy`` file.
        ImportError: for 16-bit colour PNG without ``pypng`` installed.

    Example:
        >>> x, info = read_image("scene.png")  # doctest: +SKIP
        >>> x.shape, info.bit_depth  # doctest: +SKIP
        ((256, 256), 8)
    """
    p = _fspath(path)
    if channels not in _CHANNELS:
        msg = f"channels={channels!r} is not valid; use one of {', '.join(map(repr, _CHANNELS))}"
        close = difflib.get_close_matches(str(channels), _CHANNELS, n=1)
        raise ValueError(msg + (f" (did you mean {close[0]!r}?)" if close else ""))
    if not os.path.exists(p):
        raise FileNotFoundError(f"image file {p!r} does not exist; check the path")
    if os.path.isdir(p):
        raise IsADirectoryError(f"{p!r} is a directory; give the path of an image file inside it")
    fmt = _FORMATS[_extension(p, READ_EXTENSIONS, "read")]
    arr, depth, alpha_last, lossy = _READERS[fmt](p)

    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and alpha_last and arr.shape[-1] in (2, 4):
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
        path=p, format=fmt, bit_depth=depth, channels=n_channels, shape=stored_shape, lossy=lossy
    )
    return np.ascontiguousarray(img), info


# ---------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------


def _encode_png(f: BinaryIO, q: np.ndarray) -> None:
    if q.dtype == np.uint16 and q.ndim == 3:
        png = _import_png()
        m, n, c = q.shape
        png.Writer(width=n, height=m, greyscale=False, bitdepth=16).write(f, q.reshape(m, n * c))
        return
    Image.fromarray(q).save(f, format="PNG")


def _encode_tiff(f: BinaryIO, q: np.ndarray) -> None:
    tifffile.imwrite(f, q, photometric="rgb" if q.ndim == 3 else "minisblack")


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
    range. The data go to a temporary file in the same directory which is then
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
        ImportError: for 16-bit RGB PNG without ``pypng`` installed.

    Example:
        >>> write_image("blurred.png", y, bit_depth=16)  # doctest: +SKIP
        PosixPath('blurred.png')
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

    directory = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"cannot write {p!r}: directory {directory!r} does not exist; create it first"
        )
    if os.path.isdir(p):
        raise IsADirectoryError(f"cannot write {p!r}: it is a directory; give a file name")
    if os.path.exists(p) and not overwrite:
        raise FileExistsError(f"{p!r} already exists; pass overwrite=True to replace it")

    if fmt == "npy":
        payload = arr
    else:
        maxval = 2**bit_depth - 1
        payload = np.round(arr * maxval).astype(np.uint8 if bit_depth == 8 else np.uint16)

    tmp = os.path.join(directory, f".{os.path.basename(p)}.{uuid.uuid4().hex[:12]}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            buf = io.BytesIO()  # encoders get a named-less, seekable stream
            if fmt == "npy":
                np.save(buf, payload, allow_pickle=False)
            elif fmt == "png":
                _encode_png(buf, payload)
            else:
                _encode_tiff(buf, payload)
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, p)
        else:
            _link_no_clobber(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Path(p)


def _link_no_clobber(tmp: str, p: str) -> None:
    """Move ``tmp`` to ``p`` atomically, failing if ``p`` appeared meanwhile."""
    try:
        os.link(tmp, p)  # atomic and refuses to replace an existing file
    except FileExistsError:
        raise FileExistsError(f"{p!r} already exists; pass overwrite=True to replace it") from None
    except (OSError, NotImplementedError, AttributeError):
        # Filesystems without hard links: best effort check-then-replace.
        if os.path.exists(p):
            raise FileExistsError(f"{p!r} already exists; pass overwrite=True to replace it") from None
        os.replace(tmp, p)
