"""jdeconv._kernel_size: the kernel box from the data (``kernel_shape="auto"``).

The support box and the centred crop have known answers; the size criterion,
evaluated as the generous kernel masked outside each box in one compiled program,
must equal its definition (each crop convolved on its own); the fixed boxes of
``"valid"`` / ``"full"`` come from the shapes. End-to-end runs of ``"auto"`` on
real-like pairs are in ``tests/experiment/test_real_pairs.py``.
"""

import numpy as np
import pytest

import jdeconv
from jdeconv import _geometry, _kernel_size


def test_support_box_is_centred_and_odd():
    h = np.zeros((11, 11))
    h[5, 5], h[5, 7], h[2, 5] = 0.5, 0.3, 0.2          # 2 right, 3 up of the centre
    box, tau = _kernel_size.support_box(h)
    assert box == (7, 5) and tau == pytest.approx(1e-3 * 0.5)
    assert _kernel_size.support_box(np.zeros((5, 5)))[0] == (1, 1)
    # an absolute threshold above the smaller taps keeps only the centre
    assert _kernel_size.support_box(h, tau=0.4)[0] == (1, 1)


def test_support_box_ignores_lone_noise_taps_but_not_heavy_groups():
    h = np.zeros((21, 21))
    h[9:12, 9:13] = 0.08                                # the kernel: 3x4 taps around the centre
    h[0, 17] = 3e-4                                     # noise on the generous box's edge
    box, tau = _kernel_size.support_box(h)
    assert h[0, 17] > tau and box == (3, 5)
    h[3, 10] = h[4, 10] = 0.02                          # a broken path, 4 % of the mass
    assert _kernel_size.support_box(h)[0] == (15, 5)
    h[3, 10] = h[4, 10] = 2e-3                          # a light group apart: not kernel
    assert _kernel_size.support_box(h)[0] == (3, 5)
    h[6, 10] = h[7, 10] = 2e-3                          # gaps of one tap: now one group
    assert _kernel_size.support_box(h)[0] == (15, 5)


def test_relative_floor_follows_the_noise_level():
    y = np.linspace(0.0, 2.0, 50)                       # span 2
    eight = 2.0 * 2.0 ** -8 / np.sqrt(12)
    assert _kernel_size.relative_floor(eight, y) == pytest.approx(1e-3)
    assert _kernel_size.relative_floor(eight / 256, y) == pytest.approx(1e-3 / 256)
    assert _kernel_size.relative_floor(1e-15, y) == 1e-8
    assert _kernel_size.relative_floor(np.nan, y) == 1e-3


def test_auto_box_on_an_8bit_off_centre_disk():
    # 8-bit data under the simplex prior: most taps of the generous estimate are exactly 0, so
    # the threshold falls to its floor and the odd noise tap on the generous box's edge used to
    # stretch the box to the whole generous box (21x21 here). It must hold the support within
    # 2 px per side, and its kernel error match that of the true box.
    from jdeconv.experiment._pairs import place_kernel

    x = jdeconv.data.quantize(jdeconv.data.make_image("natural:camera", (96, 96)), 8)
    h = place_kernel(np.asarray(jdeconv.data.make_kernel("disk", (9, 9), radius=3.0)), (1, 2))
    y = jdeconv.data.quantize(np.asarray(jdeconv.conv2d(x, h, "same")), 8)
    auto = jdeconv.estimate_kernel(x, y, "auto", mode="same", max_kernel_shape=21)
    rows, cols = np.nonzero(h > 0)
    need = tuple(2 * int(max(np.abs(a - (n - 1) // 2))) + 1
                 for a, n in ((rows, h.shape[0]), (cols, h.shape[1])))
    box = tuple(int(v) for v in np.asarray(auto.stats["kernel_box"]))
    assert all(n <= b <= n + 4 for n, b in zip(need, box)), (need, box)
    given = jdeconv.estimate_kernel(x, y, h.shape, mode="same")
    crop = _kernel_size.centred_crop(np.asarray(given.kernel), box)
    assert crop.shape == np.shape(auto.kernel)
    err_auto = np.linalg.norm(_kernel_size.centred_crop(h, box) - auto.kernel) / np.linalg.norm(h)
    err_given = np.linalg.norm(h - given.kernel) / np.linalg.norm(h)
    assert err_auto <= 1.1 * err_given


def test_centred_crop_keeps_the_centre_tap():
    h = np.arange(9 * 8).reshape(9, 8)
    c = _kernel_size.centred_crop(h, (3, 5))
    ck, cl = _geometry.centre((9, 8))
    assert c.shape == (3, 5) and c[1, 2] == h[ck, cl]


@pytest.mark.parametrize("mode", ["same", "circular"])
@pytest.mark.parametrize("kshape", [(7, 7), (6, 9)])
def test_size_criterion_is_the_rms_of_each_crop_over_sigma(mode, kshape):
    rng = np.random.default_rng(1)
    x = rng.random((32, 30))
    h = rng.random(kshape)
    y = np.asarray(jdeconv.conv2d(x, jdeconv.data.gaussian_kernel(5, 1.0), mode))
    y = y + 0.01 * rng.standard_normal(y.shape)
    sizes = [1, 3, 5, 7, 9]
    got = _kernel_size.size_criterion(x, y, h, mode, sizes, 0.01)
    rows, cols = _geometry.valid_window(x.shape, kshape, "same")
    want = []
    for s in sizes:
        hc = _kernel_size.centred_crop(h, (min(s, kshape[0]), min(s, kshape[1])))
        r = np.asarray(jdeconv.conv2d(x, hc / hc.sum() * h.sum(), mode)) - y
        r = r[rows, cols] if mode == "same" else r
        want.append(np.sqrt(np.mean(r * r)) / 0.01)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_fixed_shape_from_the_images_and_a_clear_error():
    assert _kernel_size.fixed_shape((40, 30), (34, 27), "valid") == (7, 4)
    assert _kernel_size.fixed_shape((40, 30), (46, 33), "full") == (7, 4)
    with pytest.raises(ValueError, match="does not fit an original"):
        _kernel_size.fixed_shape((40, 30), (46, 33), "valid")


def test_default_max_shape_is_odd_and_bounded():
    assert _kernel_size.default_max_shape((512, 512)) == (51, 51)
    assert _kernel_size.default_max_shape((96, 200)) == (31, 31)
    assert _kernel_size.default_max_shape((2, 2)) == (1, 1)
