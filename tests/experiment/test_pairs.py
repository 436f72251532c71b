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


# -- issue 12: real-like synthetic pairs and the files that go with real ones ---


def test_place_kernel_spots_and_sensor_level():
    from jdeconv.experiment._metrics import centroid_offset
    from jdeconv.experiment._pairs import add_spots, place_kernel, sensor_level

    h = np.full((3, 3), 1 / 9)
    placed = place_kernel(h, (2, -1))
    assert placed.shape == (7, 5) and placed.sum() == pytest.approx(1.0)
    assert centroid_offset(placed[None]).tolist() == [[2.0, -1.0]]
    assert place_kernel(h, (0, 0)) is h
    spots = add_spots(np.zeros((20, 20)), 3, 2.5, seed=1)
    assert spots.max() >= 2.5 and np.array_equal(spots, add_spots(np.zeros((20, 20)), 3, 2.5, seed=1))
    assert sensor_level(0.9, None) == 0.9 and sensor_level(None, 8) is None
    assert sensor_level(0.9, 8) >= 0.9 and sensor_level(1.0, 16) == 1.0


def test_gain_offset_spots_and_saturation_in_a_synthetic_pair():
    import jdeconv

    cfg = load_config({"data": {"synthetic": {
        "image_shape": 40, "kernel_shape": 5, "kernel_offset": [1, 0], "gain": 0.9, "offset": 0.05,
        "spots": 4, "spot_value": 3.0, "saturation_level": 0.8, "bits": 8}},
        "model": {"mode": "same", "kernel_shape": 7}})
    x, y, h = make_pair(cfg.data.synthetic, cfg.kernel_base_shape(), "same", seed=0)
    assert h.shape == (7, 5) == cfg.truth_shape()
    level = 204 / 255  # 0.8 is on the 8-bit grid (0.9 would round up to 230/255)
    assert x.max() == pytest.approx(level) and y.max() <= level + 1e-12
    for a in (x, y):
        assert np.allclose(a * 255, np.round(a * 255))
    # away from the clipped pixels, y is the gained, offset blur of x (up to the 8-bit rounding
    # of both images: the spots' faint tails are recorded in x to the nearest grey level)
    model = 0.9 * np.asarray(jdeconv.conv2d(x, h, mode="same")) + 0.05
    from jdeconv.experiment._metrics import used_pixels

    used = used_pixels(x, y, (7, 5), "same", saturation=level)
    inner = (slice(3, -3), slice(2, -2))
    assert 0 < used[inner].sum() < used[inner].size
    assert np.abs((model - y)[inner][used[inner]]).max() <= 1 / 255


def test_rgb_pairs_and_correlation_truths():
    from jdeconv.experiment._pairs import pairs_for

    cfg = load_config({"data": {"channels": "rgb", "synthetic": {
        "image": "shapes", "image_shape": 24, "kernel_shape": 3, "kernel_offset": [1, 1]}},
        "model": {"mode": "same", "kernel_shape": 5, "orientation": "correlation"}})
    pairs = pairs_for(cfg)
    assert pairs.xs.shape == (3, 24, 24) and pairs.truths.shape == (3, 5, 5)
    assert not np.array_equal(pairs.xs[0], pairs.xs[1])  # channels from seeds 0, 1, 2
    assert np.array_equal(pairs.truths[0], pairs.truths[2])  # one kernel for all channels
    assert pairs.truths[0][1, 1] > 0 and pairs.truths[0][3, 3] == 0  # flipped: up-left
    assert pairs.mask is None and pairs.weights is None


def test_mask_weights_and_nan_files(tmp_path):
    from jdeconv.data import write_image
    from jdeconv.experiment._pairs import load_blurred, load_mask, load_weights

    m = np.ones((6, 8))
    m[2, 3] = 0
    np.save(tmp_path / "m.npy", m)
    write_image(tmp_path / "m.png", m)
    for name in ("m.npy", "m.png"):
        mask = load_mask(str(tmp_path / name), (6, 8))
        assert mask.dtype == bool and mask.sum() == 47 and not mask[2, 3]
    assert load_mask(str(tmp_path / "m.npy"), (6, 8, 3)).shape == (6, 8)  # one mask for all channels
    with pytest.raises(ValueError, match=r"mask file '.*m.npy' has shape \(6, 8\) but the blurred "
                       r"image is 5x5; give one value per pixel of the blurred image \(data.files.mask\)"):
        load_mask(str(tmp_path / "m.npy"), (5, 5))
    np.save(tmp_path / "s.npy", np.array(["a"]))
    with pytest.raises(ValueError, match="holds <U1 values"):
        load_mask(str(tmp_path / "s.npy"), (1,))
    assert load_weights(str(tmp_path / "m.npy"), (6, 8)).dtype == np.float64
    with pytest.raises(ValueError, match="expected a .npy array of inverse variances"):
        load_weights(str(tmp_path / "m.png"), (6, 8))
    y = np.full((6, 8, 3), 0.5)
    y[1, 1, 0] = np.nan
    np.save(tmp_path / "y.npy", y)
    gray = load_blurred(str(tmp_path / "y.npy"), nan="mask")
    assert gray.shape == (6, 8) and np.isnan(gray[1, 1]) and np.isfinite(gray).sum() == 47
    assert load_blurred(str(tmp_path / "y.npy"), channels="rgb", nan="mask").shape == (6, 8, 3)
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        load_blurred(str(tmp_path / "y.npy"))  # nan: raise reads as before


def test_pair_shapes_with_auto():
    check_pair_shapes((40, 40), (40, 40), "auto", "same")
    check_pair_shapes((40, 40), (30, 32), "auto", "valid")
    with pytest.raises(ValueError, match="in mode 'same' the blurred image must be as large as the original"):
        check_pair_shapes((40, 40), (30, 30), "auto", "same")
    with pytest.raises(ValueError, match="must be larger than the original"):
        check_pair_shapes((40, 40), (30, 30), "auto", "full")


def test_truth_of_any_shape_with_auto(tmp_path):
    np.save(tmp_path / "h.npy", np.ones((7, 5)) / 35)
    assert load_truth(str(tmp_path / "h.npy"), "auto").shape == (7, 5)
    with pytest.raises(ValueError, match=r"has shape \(7, 5\) but model.kernel_shape is \(5, 5\)"):
        load_truth(str(tmp_path / "h.npy"), (5, 5))
