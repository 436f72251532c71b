"""jdeconv._diagnostics: the warnings' classes (box warnings are their own FitWarning subclass)."""

import inspect
import types
import warnings

import numpy as np
import pytest

import jdeconv
from jdeconv import _diagnostics, _estimate
from jdeconv._diagnostics import FitWarning, KernelBoxWarning
from jdeconv.experiment._runner import _auto_batch_warnings

X = jdeconv.data.noise_target((40, 40), seed=1)


def _categories(record):
    return [w.category for w in record]


def test_other_warnings_stay_plain_fit_warnings():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _diagnostics.warn(_diagnostics.input_messages(np.round(255 * X), np.zeros((36, 36))))
    assert _categories(record) == [FitWarning] * 2
    assert "all zero" in str(record[0].message) and "0-255" in str(record[1].message)


def test_the_generous_box_message_is_a_box_message():
    est = types.SimpleNamespace(result=np.int32(0), fit_statistic=np.float64(1.0),
                                kernel_shape=(15, 15),
                                stats={"mass_outside_box": 0.1, "generous_shape": (15, 15)})
    (message,) = _diagnostics.estimate_messages(est, given_shape=False)
    assert isinstance(message, str) and message.startswith("the kernel fills the whole generous")
    with pytest.warns(KernelBoxWarning) as record:
        _diagnostics.warn([message])
    assert type(record[0].message) is KernelBoxWarning and str(record[0].message) == message


def _record(*items):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for text, category in items:
            warnings.warn(text, category)
    return record


def test_auto_batch_filters_by_class_not_by_wording():
    """The runner's auto-size batch drops the batch's box warnings and keeps the pilot's."""
    border = "3 of 4 kernels have more than 2 % of their mass on the border of the 9x9 box"
    generous = "the kernel fills the whole generous box 15x15"
    pilot = _record((generous, KernelBoxWarning), ("fit statistic 9 is well above 1", FitWarning),
                    (generous + " (same words, another class)", FitWarning))
    batch = _record((border, KernelBoxWarning), ("2 of 4 pairs have a fit statistic", FitWarning),
                    (border + " (same words, another class)", FitWarning),
                    (border + " (a user's own warning)", UserWarning))
    kept = [str(w.message) for w in _auto_batch_warnings(pilot, batch)]
    assert kept == [generous, "2 of 4 pairs have a fit statistic",
                    border + " (same words, another class)", border + " (a user's own warning)"]


def _pair(image, h, noise=0.0, seed=0):
    x = jdeconv.data.quantize(jdeconv.data.make_image(image, (64, 64), seed=seed), 8)
    y = np.asarray(jdeconv.conv2d(x, h, mode="same"))
    y = y + noise * np.random.default_rng(seed).standard_normal(y.shape)
    return x, jdeconv.data.quantize(y, 8)


SWAP = "sharper than the original"


@pytest.mark.parametrize("image", ["shapes", "natural:camera", "noise"])
def test_swapped_images_warn_and_good_pairs_do_not(image):
    h = jdeconv.data.gaussian_kernel(7, 1.0)
    x, y = _pair(image, h, noise=0.02)
    with warnings.catch_warnings(record=True) as good:
        warnings.simplefilter("always")
        jdeconv.estimate_kernel(x, y, 7, mode="same")
    assert not any(SWAP in str(w.message) for w in good)
    # the sharpness ratio says the same, whatever the gain and background of y
    assert _diagnostics.sharpening_ratio(x, 0.8 * y + 0.1, 0.8 * 0.02) < 0.9
    with warnings.catch_warnings(record=True) as swapped:  # with or without a fit warning
        warnings.simplefilter("always")
        jdeconv.estimate_kernel(y, x, 7, mode="same")
    assert [w.category for w in swapped if SWAP in str(w.message)] == [FitWarning]


def test_swapped_pairs_in_a_batch_are_named():
    h = jdeconv.data.gaussian_kernel(7, 1.0)
    pairs = [_pair("shapes", h, seed=s) for s in range(3)]
    xs = np.stack([p[0] for p in pairs])
    ys = np.stack([p[1] for p in pairs])
    xs[1], ys[1] = pairs[1][1], pairs[1][0]  # pair 1 swapped
    with pytest.warns(FitWarning, match=r"1 of 3 pairs have a blurred image sharper .*pairs 1\)"):
        jdeconv.estimate_kernels(xs, ys, 7, mode="same")


def test_batch_sharpness_terms_equal_the_ratio_of_each_pair():
    # one original for every blurred image: its sharpness is taken once, with the
    # same result as pair by pair, masks and the valid window included
    h = jdeconv.data.gaussian_kernel(7, 1.0)
    x, y = _pair("shapes", h, noise=0.02)
    ys = np.stack([y, x, 0.5 * y])  # with y as the original, pair 1 is sharper than it
    mask = np.ones(ys.shape, bool)
    mask[2, 10:20, 10:20] = False
    for xs in (np.asarray(y), np.stack([np.asarray(y)] * 3)):
        terms = _estimate._batch_sharpening_terms(xs, ys, mask, "simplex", "l2", "same", (7, 7))
        for b, t in enumerate(terms):
            want = _diagnostics.sharpening_ratio(y, ys[b], 0.01, mask[b], kernel_shape=(7, 7),
                                                 mode="same")
            assert _diagnostics.sharpening_ratio_from(t, 0.01) == pytest.approx(want, rel=1e-12)
    assert _estimate._batch_sharpening_terms(xs, ys, None, "none", "l2", "same", (7, 7)) is None


def test_sharpness_of_overflowing_images_is_nan_without_warnings():
    # the sums are taken while the estimate runs, before it says whether it is finite
    a = np.full((8, 8), 1e308)
    a[::2] = -1e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _diagnostics.sharpening_terms(a, a)[1] is None
        assert np.isnan(_diagnostics.sharpening_ratio(a, a))


def test_zero_padded_border_of_a_same_blur_is_not_sharpness():
    # A bright, low-contrast original blurred in "same" geometry with zero padding
    # (synthetic data) gets a dark frame, whose edges dominated the sharpness: a good
    # pair read as swapped (ratio 4.4). Only the pixels inside the original count.
    h = jdeconv.data.gaussian_kernel(7, 1.0)
    base = np.asarray(jdeconv.data.make_image("natural:camera", (64, 64), seed=0))
    x = jdeconv.data.quantize(0.6 + 0.1 * base, 8)
    y = jdeconv.data.quantize(np.asarray(jdeconv.conv2d(x, h, mode="same")), 8)
    assert _diagnostics.sharpening_ratio(x, y) > 3  # the frame counted
    assert _diagnostics.sharpening_ratio(x, y, kernel_shape=(7, 7), mode="same") < 0.6
    full = np.asarray(jdeconv.conv2d(x, h, mode="full"))
    assert _diagnostics.sharpening_ratio(x, full, kernel_shape=(7, 7), mode="full") < 0.6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jdeconv.estimate_kernel(x, y, 7, mode="same")
        # three pairs: the program of the batch test above
        jdeconv.estimate_kernels(np.stack([x] * 3), np.stack([y] * 3), 7, mode="same")
    assert not any(SWAP in str(w.message) for w in caught)


def test_sharpening_ratio_ignores_masked_outliers():
    h = jdeconv.data.gaussian_kernel(7, 1.0)
    x, y = _pair("natural:camera", h)
    hot = np.random.default_rng(3).random(y.shape) < 0.01
    y_hot = np.where(hot, 1.0, y)
    assert _diagnostics.sharpening_ratio(x, y_hot) > _diagnostics.SHARPENING_WARN  # unmasked
    masked = _diagnostics.sharpening_ratio(x, y_hot, used=~hot)
    assert masked == pytest.approx(_diagnostics.sharpening_ratio(x, y), rel=0.1) and masked < 0.8
    y_nan = np.where(hot, np.nan, y)
    assert _diagnostics.sharpening_ratio(x, y_nan) == pytest.approx(masked, rel=1e-12)
    assert np.isnan(_diagnostics.sharpening_ratio(x, np.zeros_like(y)))  # no contrast
    assert _diagnostics.sharpening_message(1.0) == []


BOX = "on the border of its 7x7 box"
GOOD = np.pad(jdeconv.data.gaussian_kernel(3, 0.7), 2)  # well inside the 7x7 box
CUT = jdeconv.data.gaussian_kernel(13, 1.8)  # a third of its mass beyond a 7x7 box


def _box_messages(record):
    return [str(w.message) for w in record if issubclass(w.category, KernelBoxWarning)]


def test_border_warning_ignores_noise_taps_and_keeps_cut_kernels():
    """A signed estimate fills its border with noise (15 % of |h|): no warning; a cut kernel: one,
    a KernelBoxWarning (a FitWarning of its own class), for a single pair and in a batch."""
    assert issubclass(KernelBoxWarning, FitWarning) and issubclass(FitWarning, UserWarning)
    good, cut = _pair("natural:camera", GOOD, 0.02), _pair("natural:camera", CUT, 0.02)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        est = jdeconv.estimate_kernel(*good, 7, mode="same", prior="none")
    assert float(_diagnostics.border_mass(est.kernel)) > 0.1  # the plain check would warn
    assert _box_messages(record) == []
    with pytest.warns(KernelBoxWarning, match=BOX + r" \(.* % beyond 3 standard errors"):
        jdeconv.estimate_kernel(*cut, 7, mode="same", prior="none")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        jdeconv.estimate_kernels(np.stack([good[0], cut[0]]), np.stack([good[1], cut[1]]), 7,
                                 mode="same", prior="none")
    assert _box_messages(record) == [
        "1 of 2 kernels have more than 2 % of their mass on the border of the 7x7 box: try a "
        "larger kernel_shape."]


def _defaults(**kw):
    params = inspect.signature(jdeconv.estimate_kernel).parameters.values()
    out = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
    del out["max_kernel_shape"]
    return dict(out, **kw)


@pytest.mark.filterwarnings("ignore::jdeconv._diagnostics.KernelBoxWarning")
@pytest.mark.parametrize("kw", [dict(prior="simplex", orientation="correlation",
                                     regularization={"smooth": 0.05}),
                                dict(prior="none", gain=True)],
                         ids=["simplex-smooth-correlation", "gain"])
def test_border_check_errors_are_the_estimates_standard_errors(kw):
    """The check's standard errors (host algebra, or a second solve) equal standard_errors=True."""
    x, y = _pair("natural:camera", CUT, 0.02)
    est, errors = _estimate._estimate_one(x, y, 7, border_errors=True,
                                          **_defaults(mode="same", **kw))
    ref = jdeconv.estimate_kernel(x, y, 7, mode="same", standard_errors=True, **kw)
    np.testing.assert_allclose(est.kernel, ref.kernel, rtol=0, atol=1e-12)
    np.testing.assert_allclose(errors, ref.stats["standard_errors"], rtol=1e-6, atol=1e-12)
    assert errors[0].any() and errors[-1].any()  # free taps on the border


@pytest.mark.parametrize("shape", [(7, 5), (2, 9), (16, 16)])
def test_sharpness_of_a_whole_image_equals_its_definition(shape):
    # the fast path (every pixel used) takes the differences from products of shifted views
    a = np.random.default_rng(sum(shape)).random(shape) * 3 + 10
    sigma = 0.05
    d = np.mean(np.diff(a, axis=0) ** 2) + np.mean(np.diff(a, axis=1) ** 2) - 4 * sigma**2
    v = np.var(a) - sigma**2
    assert _diagnostics._sharpness(a, None, sigma) == pytest.approx(d / v, rel=1e-12)
