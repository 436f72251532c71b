"""Tests for run files and directories (jdeconv.experiment._artifacts)."""

import json
import os

import numpy as np
import pytest

from jdeconv.experiment._artifacts import (Folder, RunDirectory, check_directory_creatable, clean,
                                           csv_text, json_text, kernel_csv_text, kernel_image,
                                           partial_directory_of, save_npy)


def test_json_is_plain_and_finite():
    text = json_text({"a": np.float32(0.5), "b": np.array([1.0, np.inf]), "c": np.bool_(False)})
    assert json.loads(text) == {"a": 0.5, "b": [1.0, None], "c": False}
    assert clean((np.int64(3),)) == [3]


def test_csv_round_trips_floats_exactly():
    text = csv_text(["x"], [(0.1 + 0.2,)])
    assert float(text.splitlines()[1]) == 0.1 + 0.2
    h = np.random.default_rng(0).random((3, 4))
    assert np.array_equal(np.loadtxt(kernel_csv_text(h).splitlines(), delimiter=","), h)
    assert kernel_csv_text(np.zeros((2, 1, 1))).splitlines() == [
        "channel,row,col,value", "0,0,0,0.0", "1,0,0,0.0"]


def test_kernel_image_is_upsampled_nearest_neighbour_and_scaled():
    h = np.array([[0.0, 1.0], [0.25, 0.5]])
    img = kernel_image(h)
    assert img.shape == (256, 256) and img.min() == 0.0 and img.max() == 1.0
    assert np.array_equal(img[::128, ::128], h)  # each tap a constant 128x128 block
    assert np.array_equal(np.unique(img), np.unique(h))
    mosaic = kernel_image(np.stack([h, h, h]))  # 2x2 grid of 2x2 kernels with 1-pixel gaps
    assert mosaic.shape == (5 * 52, 5 * 52)
    assert kernel_image(np.ones((600, 10))).shape == (600, 10)  # already large: not enlarged
    with pytest.raises(ValueError, match="needs 3 kernels"):
        kernel_image(np.ones((2, 3, 3)), rgb=True)


def test_save_npy_never_clobbers(tmp_path):
    p = save_npy(tmp_path / "k.npy", [[1.0]])
    with pytest.raises(FileExistsError, match="already exists"):
        save_npy(p, [[2.0]])
    assert np.load(p).tolist() == [[1.0]]
    save_npy(p, [[2.0]], overwrite=True)
    assert np.load(p).tolist() == [[2.0]]
    assert sorted(os.listdir(tmp_path)) == ["k.npy"]  # no temporary file left


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/b", "..", ".", "", "a\\b"])
def test_folder_refuses_names_that_leave_it(tmp_path, name):
    with pytest.raises(ValueError, match="not a plain file name"):
        Folder(tmp_path).path(name)


def test_folder_refuses_symlinks_out_of_the_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "run" / "link")
    with pytest.raises(ValueError, match="leads outside the run directory"):
        Folder(tmp_path / "run").write_text("link", "x")
    assert not os.listdir(tmp_path / "outside")


def test_run_directory_success_and_failure(tmp_path):
    with RunDirectory(tmp_path / "ok") as run:
        sub = run.folder("000-a")
        sub.write_json("metrics.json", {"x": 1})
        assert run.dir.name.startswith("ok.partial-")
        final = run.finish()
    assert final == tmp_path / "ok" and (final / "000-a" / "metrics.json").exists()
    with pytest.raises(RuntimeError, match="boom") as e:
        with RunDirectory(tmp_path / "bad") as run:
            raise RuntimeError("boom")
    partial = partial_directory_of(e.value)
    assert partial.parent == tmp_path and partial.name.startswith("bad.partial-")
    assert "RuntimeError: boom" in (partial / "FAILED").read_text()
    assert not (tmp_path / "bad").exists()
    with pytest.raises(FileExistsError, match="already exists"):
        RunDirectory(tmp_path / "ok")


def test_check_directory_creatable(tmp_path):
    assert check_directory_creatable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checked, not created
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        check_directory_creatable(tmp_path / "file" / "run")
    with pytest.raises(PermissionError, match="cannot create '/proc/run'"):
        check_directory_creatable("/proc/run")
