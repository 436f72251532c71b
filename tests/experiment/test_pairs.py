"""Tests for image pairs (jdeconv.experiment._pairs): synthesis, file pairs, masks."""

import numpy as np
import pytest

from jdeconv.experiment import load_config
from jdeconv.experiment._pairs import (check_pair_shapes, default_kernel_params, load_support,
                                       load_truth, make_pair, synthesize)


def test_default_kernel_params_scale_with_size():
    assert default_kernel_params("gaussian", (30, 30)) == {"sigma": 4.0}
    assert default_kernel_params("motion", (10, 5)) == {"length": 6.0, "angle": 0.0}
    assert default_kernel_params("box", (5, 5)) == {}


def test_make_pair_is_seeded_quantised_and_valid():
    cfg = load_config({"data": {"synthetic": {"image_shape": 48, "bits": 8,
                                              "noise": {"gaussian_sigma": 0.01}}},
                       "model": {"kernel_shape": 5}})
    x, y, h = make_pair(cfg.data.synthetic, (5, 5), "valid", seed=3)
    x2, y2, h2 = make_pair(cfg.data.synthetic, (5, 5), "valid", seed=3)
    assert np.array_equal(y, y2) and np.array_equal(x, x2) and np.array_equal(h, h2)
    assert x.shape == (48, 48) and y.shape == (44, 44) and h.shape == (5, 5)
    for a in (x, y):  # both 8-bit
        assert np.allclose(a * 255, np.round(a * 255))
    assert not np.array_equal(make_pair(cfg.data.synthetic, (5, 5), "valid", seed=4)[1], y)


def test_synthesize_without_noise_is_the_forward_model():
    import jdeconv

    x = np.random.default_rng(0).random((12, 12))
    h = np.full((3, 3), 1 / 9)
    x_out, y = synthesize(x, h, "same")
    assert np.array_equal(x_out, x)
    assert np.allclose(y, np.asarray(jdeconv.conv2d(x, h, mode="same")))


def test_check_pair_shapes_messages():
    with pytest.raises(ValueError, match="the 9x9 kernel is larger than the original image"):
        check_pair_shapes((5, 5), (5, 5), (9, 9), "valid")
    with pytest.raises(ValueError, match="blurred image is 6x6 .* must be 10x10; the blurred image "
                       "has the valid size: use mode 'valid'"):
        check_pair_shapes((10, 10), (6, 6), (5, 5), "same")
    check_pair_shapes((10, 10), (14, 14), (5, 5), "full")


def test_masks_and_truths_from_files(tmp_path):
    np.save(tmp_path / "m.npy", np.eye(3))
    assert load_support(str(tmp_path / "m.npy"), (3, 3)).dtype == bool
    assert load_support([[1, 0], [0, 1]], (2, 2)).tolist() == [[True, False], [False, True]]
    with pytest.raises(ValueError, match=r"prior.support '.*m.npy' has shape \(3, 3\) but "
                       r"model.kernel_shape is \(2, 2\)"):
        load_support(str(tmp_path / "m.npy"), (2, 2))
    np.save(tmp_path / "p.npy", np.array([None], dtype=object), allow_pickle=True)
    for load in (lambda: load_support(str(tmp_path / "p.npy"), (1, 1)),
                 lambda: load_truth(str(tmp_path / "p.npy"), (1, 1))):
        with pytest.raises(ValueError, match=f"'{tmp_path / 'p.npy'}' holds pickled Python objects"):
            load()
    (tmp_path / "t.csv").write_text("0.5,0.5\n")
    assert load_truth(str(tmp_path / "t.csv"), (1, 2)).tolist() == [[0.5, 0.5]]
    with pytest.raises(ValueError, match="expected a .npy or .csv file"):
        load_truth(str(tmp_path / "t.txt"), (1, 2))
    with pytest.raises(FileNotFoundError, match="check data.files.truth"):
        load_truth(str(tmp_path / "none.npy"), (1, 2))
