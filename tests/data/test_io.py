"""Tests for jdeconv.data._io (image files)."""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import warnings
import zlib

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from jdeconv.data import _io
from jdeconv.data import (
    READ_EXTENSIONS,
    WRITE_EXTENSIONS,
    ImageInfo,
    LossyImageWarning,
    read_image,
    write_image,
)


def _quantised(x: np.ndarray, bits: int) -> np.ndarray:
    levels = 2**bits - 1
    return np.round(x * levels) / levels


def _needs_pypng(ext: str, bits: int, rgb: bool) -> None:
    if ext == ".png" and bits == 16 and rgb:
        pytest.importorskip("png")


# --- round trips ------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("rgb", [False, True])
def test_round_trip_exact(tmp_path, ext, bits, rgb):
    _needs_pypng(ext, bits, rgb)
    shape = (13, 17, 3) if rgb else (13, 17)
    x = np.random.default_rng(bits).random(shape)
    x[0, 0] = 0.0
    x[-1, -1] = 1.0
    p = write_image(tmp_path / f"img{ext}", x, bit_depth=bits)
    assert p == tmp_path / f"img{ext}"
    y, info = read_image(p, channels="keep")
    assert y.dtype == np.float64 and y.shape == shape
    assert np.array_equal(y, _quantised(x, bits))
    assert info == ImageInfo(
        path=str(p),
        format="png" if ext == ".png" else "tiff",
        bit_depth=bits,
        channels=3 if rgb else 1,
        shape=shape,
        lossy=False,
    )
    assert sorted(os.listdir(tmp_path)) == [f"img{ext}"]  # no temporary files left


@settings(deadline=None, max_examples=15)
@given(
    x=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 9), st.integers(1, 9)),
        elements=st.floats(0.0, 1.0),
    ),
    bits=st.sampled_from([8, 16]),
    ext=st.sampled_from([".png", ".tif"]),
)
def test_round_trip_property(x, bits, ext):
    with tempfile.TemporaryDirectory() as d:
        p = write_image(os.path.join(d, "x" + ext), x, bit_depth=bits)
        y, _ = read_image(p)
    assert np.array_equal(y, _quantised(x, bits))


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 3)])
def test_npy_round_trip_as_is(tmp_path, shape):
    x = np.random.default_rng(0).normal(size=shape)  # any finite float range for .npy
    p = write_image(tmp_path / "x.npy", x)
    y, info = read_image(p, channels="keep")
    assert np.array_equal(y, x)
    assert info.bit_depth is None and info.format == "npy" and info.shape == shape
    assert info.channels == (1 if len(shape) == 2 else 3)


def test_npy_single_channel_and_float32(tmp_path):
    x = np.random.default_rng(0).random((4, 5, 1)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    y, info = read_image(tmp_path / "a.npy")
    assert y.shape == (4, 5) and y.dtype == np.float64 and info.channels == 1
    assert np.array_equal(y, x[..., 0].astype(np.float64))


# --- channel handling -------------------------------------------------------


def test_channels_gray_averages_rgb(tmp_path):
    x = np.random.default_rng(1).random((8, 9, 3))
    p = write_image(tmp_path / "c.tif", x, bit_depth=16)
    q = _quantised(x, 16)
    gray, info = read_image(p)
    assert gray.shape == (8, 9) and info.channels == 3 and info.shape == (8, 9, 3)
    assert np.allclose(gray, q.mean(axis=2), atol=1e-15)
    rgb, _ = read_image(p, channels="rgb")
    assert np.array_equal(rgb, q)


def test_channels_rgb_replicates_gray(tmp_path):
    x = np.random.default_rng(2).random((5, 4))
    p = write_image(tmp_path / "g.png", x)
    rgb, info = read_image(p, channels="rgb")
    assert rgb.shape == (5, 4, 3) and info.channels == 1
    for c in range(3):
        assert np.array_equal(rgb[..., c], _quantised(x, 8))
    keep, _ = read_image(p, channels="keep")
    assert keep.shape == (5, 4)


# --- alpha, palette, low bit depth -----------------------------------------


def test_rgba_png_opaque_no_warning(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    a[..., 3] = 255
    Image.fromarray(a, mode="RGBA").save(tmp_path / "o.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, info = read_image(tmp_path / "o.png", channels="keep")
    assert np.array_equal(y, a[..., :3] / 255.0)
    assert info.channels == 3 and info.shape == (6, 7, 3)


def test_rgba_png_transparent_warns_and_drops_alpha(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    a[0, 0, 3] = 10
    Image.fromarray(a, mode="RGBA").save(tmp_path / "t.png")
    with pytest.warns(UserWarning, match="alpha channel; it is ignored"):
        y, _ = read_image(tmp_path / "t.png", channels="rgb")
    assert np.array_equal(y, a[..., :3] / 255.0)


def test_gray_alpha_png(tmp_path):
    a = np.zeros((4, 4, 2), dtype=np.uint8)
    a[..., 0] = 200
    a[..., 1] = 0
    Image.fromarray(a, mode="LA").save(tmp_path / "la.png")
    with pytest.warns(UserWarning, match="alpha"):
        y, info = read_image(tmp_path / "la.png", channels="keep")
    assert y.shape == (4, 4) and np.allclose(y, 200 / 255) and info.channels == 1


def test_rgba16_png_via_pypng(tmp_path):
    png = pytest.importorskip("png")
    a = np.random.default_rng(0).integers(0, 65536, (3, 5, 4), dtype=np.uint16)
    a[..., 3] = 65535
    with open(tmp_path / "a16.png", "wb") as f:
        png.Writer(5, 3, greyscale=False, alpha=True, bitdepth=16).write(f, a.reshape(3, -1))
    y, info = read_image(tmp_path / "a16.png", channels="keep")
    assert info.bit_depth == 16 and info.channels == 3
    assert np.array_equal(y, a[..., :3] / 65535.0)


def test_palette_and_bilevel_png(tmp_path):
    a = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    im = Image.fromarray(a, mode="L").convert("P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (3 * 253))
    im.save(tmp_path / "p.png")
    y, info = read_image(tmp_path / "p.png", channels="keep")
    assert info.channels == 3 and info.bit_depth == 8
    assert np.array_equal(y[0, 1], [1.0, 0.0, 0.0]) and np.array_equal(y[1, 0], [0.0, 0.0, 1.0])
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1").save(tmp_path / "b.png")
    z, _ = read_image(tmp_path / "b.png")
    assert np.array_equal(z, [[0.0, 1.0], [1.0, 0.0]])


# --- TIFF specifics ---------------------------------------------------------


def test_float_tiff_returned_as_is(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", x)
    y, info = read_image(tmp_path / "f.tif")
    assert info.bit_depth is None and np.array_equal(y, x.astype(np.float64))


def test_planar_rgb_tiff(tmp_path):
    a = np.random.default_rng(0).integers(0, 65536, (3, 4, 5), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "pl.tif", a, photometric="rgb", planarconfig="separate")
    y, info = read_image(tmp_path / "pl.tif", channels="keep")
    assert y.shape == (4, 5, 3) and info.bit_depth == 16
    assert np.array_equal(y, np.moveaxis(a, 0, -1) / 65535.0)


def test_tiff_stack_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((2, 4, 5), dtype=np.uint16))
    with pytest.raises(ValueError, match="stack of images"):
        read_image(tmp_path / "s.tif")


def test_tiff_signed_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "i.tif", np.zeros((4, 5), dtype=np.int16))
    with pytest.raises(ValueError, match="int16 samples"):
        read_image(tmp_path / "i.tif")


# --- JPEG -------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".jpg", ".JPEG"])
def test_jpeg_reads_with_lossy_warning(tmp_path, ext):
    a = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / f"j{ext}", format="JPEG")
    with pytest.warns(LossyImageWarning, match="PNG or TIFF"):
        y, info = read_image(tmp_path / f"j{ext}")
    assert info.lossy and info.format == "jpeg" and info.bit_depth == 8 and info.channels == 3
    assert y.shape == (16, 16) and 0 <= y.min() and y.max() <= 1
    assert issubclass(LossyImageWarning, UserWarning)


# --- read errors ------------------------------------------------------------


def test_read_missing_file(tmp_path):
    p = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(p)


def test_read_directory(tmp_path):
    d = tmp_path / "dir.png"
    d.mkdir()
    with pytest.raises(IsADirectoryError, match="directory"):
        read_image(d)


def test_read_unsupported_extension(tmp_path):
    p = tmp_path / "x.bmp"
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(p)
    with pytest.raises(ValueError, match=r"unsupported file type \(\.bmp\).*\.png, \.tif, \.tiff"):
        read_image(p)
    q = tmp_path / "noext"
    q.write_bytes(b"x")
    with pytest.raises(ValueError, match="no extension"):
        read_image(q)


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg", ".npy"])
def test_read_corrupt_file(tmp_path, ext):
    p = tmp_path / f"bad{ext}"
    p.write_bytes(b"this is not an image at all" * 3)
    with pytest.raises(ValueError, match=rf"bad\{ext}.*could not be decoded"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LossyImageWarning)
            read_image(p)


def test_read_truncated_png(tmp_path):
    p = write_image(tmp_path / "t.png", np.random.default_rng(0).random((64, 64)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not be decoded"):
        read_image(p)


@pytest.mark.parametrize(
    "arr, text",
    [
        (np.array([[0.0, np.nan]]), "NaN or Inf"),
        (np.array([[0.0, np.inf]]), "NaN or Inf"),
        (np.zeros((3, 3), dtype=np.int64), "must be float"),
        (np.zeros((3, 3, 4)), r"\(m, n, 3\)"),
        (np.zeros(5), r"\(m, n\)"),
    ],
)
def test_read_bad_npy(tmp_path, arr, text):
    np.save(tmp_path / "a.npy", arr)
    with pytest.raises(ValueError, match=text):
        read_image(tmp_path / "a.npy")


def test_read_object_npy_not_unpickled(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"o\.npy' holds a pickled object array; .*allow_pickle=False"):
        read_image(tmp_path / "o.npy")


def test_read_bad_arguments(tmp_path):
    p = write_image(tmp_path / "x.png", np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"channels 'grey'.*Did you mean 'gray'"):
        read_image(p, channels="grey")
    with pytest.raises(TypeError, match="path"):
        read_image(123)  # type: ignore[arg-type]


# --- write errors and atomicity ---------------------------------------------


def test_write_refuses_to_overwrite(tmp_path):
    p = write_image(tmp_path / "x.png", np.zeros((2, 2)))
    before = p.read_bytes()
    with pytest.raises(FileExistsError, match=r"x\.png.*overwrite=True"):
        write_image(p, np.ones((2, 2)))
    assert p.read_bytes() == before
    write_image(p, np.ones((2, 2)), overwrite=True)
    assert np.array_equal(read_image(p)[0], np.ones((2, 2)))
    assert os.listdir(tmp_path) == ["x.png"]


def test_write_failure_leaves_nothing(tmp_path, monkeypatch):
    def boom(f, q):
        f.write(b"partial")
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(_io, "_encode_png", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        write_image(tmp_path / "x.png", np.zeros((2, 2)))
    assert os.listdir(tmp_path) == []
    # An existing file survives a failed overwrite untouched.
    np.save(tmp_path / "keep.npy", np.zeros(1))
    (tmp_path / "y.png").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        write_image(tmp_path / "y.png", np.zeros((2, 2)), overwrite=True)
    assert (tmp_path / "y.png").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["keep.npy", "y.png"]


def test_write_clip(tmp_path):
    x = np.array([[-0.5, 0.25], [1.0, 1.5]])
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*clip=True"):
        write_image(tmp_path / "x.png", x)
    with pytest.raises(ValueError, match="divide by 255"):
        write_image(tmp_path / "x.png", np.array([[0, 255]]))
    p = write_image(tmp_path / "x.png", x, clip=True)
    assert np.array_equal(read_image(p)[0], _quantised(np.clip(x, 0, 1), 8))


@pytest.mark.parametrize(
    "name, image, kwargs, exc, text",
    [
        ("x.jpg", np.zeros((2, 2)), {}, ValueError, "JPEG is lossy"),
        ("x.bmp", np.zeros((2, 2)), {}, ValueError, r"supported extensions are \.png, \.tif, \.tiff, \.npy"),
        ("x.png", np.zeros((2, 2)), dict(bit_depth=12), ValueError, "bit_depth"),
        ("x.png", np.zeros((2, 2)), dict(bit_depth=True), ValueError, "bit_depth"),
        ("x.png", np.array([[np.nan]]), {}, ValueError, "NaN"),
        ("x.npy", np.array([[np.inf]]), {}, ValueError, "NaN or Inf"),
        ("x.png", np.zeros((2, 2, 4)), {}, ValueError, r"\(m, n, 3\)"),
        ("x.png", np.zeros((0, 2)), {}, ValueError, "non-empty"),
        ("x.png", np.array([["a"]]), {}, TypeError, "numeric"),
        ("missing/x.png", np.zeros((2, 2)), {}, FileNotFoundError, "does not exist"),
    ],
)
def test_write_errors(tmp_path, name, image, kwargs, exc, text):
    with pytest.raises(exc, match=text):
        write_image(tmp_path / name, image, **kwargs)
    assert not (tmp_path / name).exists()


def test_write_to_directory(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(IsADirectoryError, match="directory"):
        write_image(tmp_path / "d.png", np.zeros((2, 2)), overwrite=True)


def test_write_accepts_str_path_and_single_channel(tmp_path):
    p = write_image(str(tmp_path / "s.tif"), np.full((3, 4, 1), 0.5), bit_depth=16)
    y, info = read_image(p)
    assert y.shape == (3, 4) and info.channels == 1


def test_pypng_missing_gives_clear_import_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "png", None)
    with pytest.raises(ImportError, match="pip install pypng"):
        write_image(tmp_path / "c.png", np.zeros((2, 2, 3)), bit_depth=16)
    assert os.listdir(tmp_path) == []
    # 8-bit RGB and 16-bit gray PNG need only Pillow.
    write_image(tmp_path / "c8.png", np.zeros((2, 2, 3)))
    write_image(tmp_path / "g16.png", np.zeros((2, 2)), bit_depth=16)
    assert read_image(tmp_path / "g16.png")[1].bit_depth == 16


def test_extension_lists():
    assert set(WRITE_EXTENSIONS) <= set(READ_EXTENSIONS)
    assert ".jpg" in READ_EXTENSIONS and ".jpg" not in WRITE_EXTENSIONS


def test_write_refused_for_unwritable_directory(tmp_path, monkeypatch):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        if os.access(d, os.W_OK):  # running as root: permissions are not enforced, simulate them
            real_open = os.open

            def deny(path, flags, *args, **kwargs):
                if os.path.dirname(os.fspath(path)) == str(d) and flags & os.O_CREAT:
                    raise PermissionError(13, "Permission denied", os.fspath(path))
                return real_open(path, flags, *args, **kwargs)

            monkeypatch.setattr(os, "open", deny)
        with pytest.raises(PermissionError) as err:
            write_image(d / "x.png", np.zeros((2, 2)))
    finally:
        monkeypatch.undo()
        d.chmod(0o755)
    message = str(err.value)
    assert repr(str(d / "x.png")) in message and "not writable" in message
    assert ".tmp" not in message and ".probe" not in message  # the user's path, not a temporary one
    assert os.listdir(d) == []


# --- size bounds (from the header, before decoding) -------------------------


def _png_with_header_only(path, width, height, bit_depth=8, colour_type=0):
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)


@pytest.mark.parametrize("bit_depth, colour_type", [(8, 0), (16, 2)])
def test_read_absurd_png_size_refused_from_header(tmp_path, bit_depth, colour_type):
    p = tmp_path / "huge.png"
    _png_with_header_only(p, 200_000, 200_000, bit_depth, colour_type)
    with pytest.raises(ValueError, match=r"huge\.png' of shape \(200000, 200000\) is too large"):
        read_image(p)


def test_read_absurd_npy_size_refused_from_header(tmp_path):
    p = tmp_path / "huge.npy"
    with open(p, "wb") as f:  # a header announcing 320 GB of float64, and no data
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (200_000, 200_000)})
    with pytest.raises(ValueError, match=r"huge\.npy' of shape \(200000, 200000\) is too large"):
        read_image(p)


def test_read_too_tall_tiff_refused(tmp_path):
    tifffile.imwrite(tmp_path / "tall.tif", np.zeros((70_000, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"tall\.tif' of shape \(70000, 1\) is too large"):
        read_image(tmp_path / "tall.tif")


def test_read_truncated_npy_names_file(tmp_path):
    p = tmp_path / "cut.npy"
    np.save(p, np.zeros((8, 8)))
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"cut\.npy.*could not be decoded"):
        read_image(p)
