"""Real-like pairs through the config, the runner and the CLI (issue 12).

``kernel_shape: auto``, gain and background, masks, weights, saturation, NaN,
the Huber loss and the correlation orientation; the warnings of bad pairs
(``jdeconv: warning:`` lines in the CLI, ``warnings`` in ``metrics.json``);
bad input answered by one line and exit 2.

One problem size throughout: 48x48 originals, 9x9 kernels in ``same`` mode
(``auto`` adds the 15x15 generous box), so each option compiles once per
process. Everything runs in-process (``main([...])``) to share those programs.
"""

import json

import numpy as np
import pytest
import yaml
from _experiment import TINY

from jdeconv.experiment import run_experiment
from jdeconv.experiment.cli import main

N, K = 48, 9


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("jdeconv: warning: ")]


def blur(x, h):
    import jdeconv

    return np.array(jdeconv.conv2d(x, h, mode="same"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A camera crop, 8-bit, blurred in ``same`` mode by a 9x9 Gaussian of sigma 1.2 that fits
    its box (0.5 % of its mass on the border), and the bad pairs of the issue."""
    from jdeconv.data import gaussian_kernel, make_image, quantize

    d = tmp_path_factory.mktemp("real")
    x = quantize(make_image("natural:camera", N), 8)
    h = gaussian_kernel(K, 1.2)
    y = quantize(blur(x, h), 8)
    unrelated = quantize(make_image("natural:coins", N), 8)
    arrays = {"x": x, "y": y, "unrelated": unrelated, "x255": np.round(x * 255),
              "y255": np.round(y * 255), "zero": np.zeros_like(y)}
    for name, a in arrays.items():
        np.save(d / f"{name}.npy", a)
    import imageio.v3 as iio

    iio.imwrite(d / "x.jpg", np.round(x * 255).astype(np.uint8), quality=95)
    return d, x, y, h


BAD_PAIRS = {
    "good": ("x", "y", None),
    "swapped": ("y", "x", "sharper than the original"),
    "unrelated": ("x", "unrelated", "fit statistic"),
    "scaled_0_255": ("x255", "y255", "looks like 0-255"),
    "all_zero": ("x", "zero", "the blurred image is all zero"),
    "jpeg": ("x.jpg", "y", "is a JPEG: lossy compression"),
}


@pytest.mark.parametrize("case", list(BAD_PAIRS))
def test_bad_pairs_warn_one_line_each_and_a_good_pair_does_not(case, pair, tmp_path, capsys):
    d = pair[0]
    original, blurred, expected = BAD_PAIRS[case]
    original = original if "." in original else original + ".npy"
    code = main(["estimate", str(d / original), str(d / f"{blurred}.npy"), "-k", str(K),
                 "--mode", "same", "-o", str(tmp_path / "k.npy")])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = warnings_in(err)
    assert len(lines) == len(err.splitlines())  # nothing else on stderr, one line each
    if expected is None:
        assert lines == []
        assert "kernel box 9x9" in out and "fit statistic" in out and "border mass" in out
    else:
        assert any(expected in line for line in lines), err


def _options_pair(d, x):
    """y = 0.9 (h * x) + 0.02 with an asymmetric h, 3 % dead pixels (masked) and NaNs."""
    from jdeconv.data import gaussian_kernel
    from jdeconv.experiment._pairs import place_kernel

    h = place_kernel(gaussian_kernel(7, 0.8), (1, 1))
    y = 0.9 * blur(x, h) + 0.02
    rng = np.random.default_rng(0)
    dead = rng.random(y.shape) < 0.03
    holes = rng.random(y.shape) < 0.01
    y[dead] = 0.0
    y[holes] = np.nan
    np.save(d / "y_opts.npy", y)
    np.save(d / "mask.npy", ~dead)
    np.save(d / "w.npy", np.full(y.shape, 4.0))
    return h, dead | holes


def test_cli_gain_background_mask_nan_saturation_correlation(pair, tmp_path, capsys):
    d, x = pair[0], pair[1]
    h, _ = _options_pair(d, x)
    code = main(["estimate", str(d / "x.npy"), str(d / "y_opts.npy"), "-k", str(K), "--mode", "same",
                 "--gain", "--background", "constant", "--mask", str(d / "mask.npy"),
                 "--nan", "mask", "--saturation", "0.99", "--orientation", "correlation",
                 "--weights", str(d / "w.npy"), "-o", str(tmp_path / "k.npy")])
    out, err = capsys.readouterr()
    assert code == 0, err
    k = np.load(tmp_path / "k.npy")
    assert rel(k[::-1, ::-1], h) < 1e-8  # a correlation filter: flipped
    assert "gain 0.9 background [0.02] (constant)" in out
    assert "centroid offset (-1.00, -1.00) px" in out  # the flipped kernel sits up-left


def test_cli_weights_and_huber(pair, tmp_path, capsys):
    d, x, _, h = pair
    y = blur(x, h)
    outliers = np.random.default_rng(1).random(y.shape) < 0.05
    y[outliers] = 1.0  # cosmic rays no mask names
    np.save(d / "y_out.npy", y)
    np.save(d / "w.npy", np.full(y.shape, 4.0))
    code = main(["estimate", str(d / "x.npy"), str(d / "y_out.npy"), "-k", str(K), "--mode", "same",
                 "--weights", str(d / "w.npy"), "--loss", "huber", "-o", str(tmp_path / "k.npy")])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert rel(np.load(tmp_path / "k.npy"), h) < 1e-2  # the target for Huber


def test_cli_auto_kernel_size(pair, tmp_path, capsys):
    from jdeconv.experiment._pairs import place_kernel
    from jdeconv.data import gaussian_kernel

    d, x = pair[0], pair[1]
    h = place_kernel(gaussian_kernel(5, 0.8), (2, 2))  # 9x9, off-centre by (2, 2)
    np.save(d / "y_off.npy", blur(x, h))
    code = main(["estimate", str(d / "x.npy"), str(d / "y_off.npy"), "-k", "auto", "--mode",
                 "same", "-o", str(tmp_path / "k.npy")])
    out, err = capsys.readouterr()
    assert code == 0 and warnings_in(err) == [], err
    assert "kernel box 9x9 (auto, from a generous 15x15 box" in out
    assert "centroid offset (+2.00, +2.00) px" in out
    assert rel(np.load(tmp_path / "k.npy"), h) < 1e-8

    # Per channel: the box is chosen once, on the channel mean, and every channel solved in it.
    code = main(["estimate", str(d / "x.npy"), str(d / "y_off.npy"), "-k", "auto", "--mode",
                 "same", "--channels", "rgb", "-o", str(tmp_path / "k3.npy")])
    out, err = capsys.readouterr()
    assert code == 0 and warnings_in(err) == [], err
    k3 = np.load(tmp_path / "k3.npy")
    assert k3.shape == (3, K, K) and all(rel(k, h) < 1e-8 for k in k3)
    assert "kernel box 9x9 (auto" in out and "  [2] centroid offset (+2.00, +2.00) px" in out


BAD_INPUT = [
    (["--mask", "{d}/small_mask.npy"], "mask file '{d}/small_mask.npy' has shape (10, 10) but the "
     "blurred image is 48x48"),
    (["--weights", "{d}/small_mask.npy"], "weights file '{d}/small_mask.npy' has shape (10, 10)"),
    (["--weights", "{d}/x.png"], "expected a .npy array of inverse variances"),
    (["--saturation", "-0.5"], "argument --saturation: expected a positive number, got '-0.5'"),
    (["--background", "plnae"], "unknown background model 'plnae'; expected one of 'none', "
     "'constant', 'plane' or a polynomial degree N (0 = constant, 1 = plane). Did you mean 'plane'?"),
    (["--background", "99"], "background degree 99 is too large; at most 10"),
    (["--loss", "hubr"], "Did you mean 'huber'?"),
    (["--orientation", "corelation"], "Did you mean 'correlation'?"),
    (["--nan", "masked"], "Did you mean 'mask'?"),
    (["--max-kernel-size", "15"], "--max-kernel-size applies only with --kernel-size auto"),
    (["--loss", "poisson", "--solver", "exact"], "loss='poisson' has no normal equations"),
    (["--gain", "--solver", "fourier"], "solver='fourier' divides spectra"),
    (["-k", "auto", "--mode", "valid", "--max-kernel-size", "15"],
     "max_kernel_shape has no effect in mode 'valid'"),
]


@pytest.mark.parametrize("extra, message", BAD_INPUT, ids=[" ".join(e) for e, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2(extra, message, pair, tmp_path, capsys):
    d = pair[0]
    np.save(d / "small_mask.npy", np.ones((10, 10), bool))
    argv = ["estimate", str(d / "x.npy"), str(d / "y.npy"), "-o", str(tmp_path / "k.npy")]
    argv += [] if "-k" in extra else ["-k", str(K), "--mode", "same"]
    assert main(argv + [a.replace("{d}", str(d)) for a in extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jdeconv: error: ") and err.count("\n") == 1, err
    assert message.replace("{d}", str(d)) in err
    assert not (tmp_path / "k.npy").exists()


# -- the runner and `jdeconv run` ----------------------------------------------

SAME = {"name": "real", "model": {"mode": "same", "kernel_shape": K}, "solver": {"name": "exact"},
        "outputs": {"save_csv": False, "save_kernel_png": False}}


def _synthetic(**kw):
    return {"image": "natural:camera", "image_shape": N, "bits": 8, "kernel": "gaussian",
            "kernel_params": {"sigma": 0.8}, **kw}


def test_run_auto_off_centre_writes_the_size_plot(tmp_path):
    cfg = {**SAME, "data": {"synthetic": _synthetic(kernel_shape=5, kernel_offset=[2, 2],
                                                    bits=None)},
           "model": {"mode": "same", "kernel_shape": "auto", "max_kernel_shape": 15}}
    out = run_experiment(cfg, tmp_path / "auto", quiet=True)
    m = json.loads((out / "metrics.json").read_text())
    assert (out / "plot_kernel_size.png").exists() and (out / "plot_kernel.png").exists()
    assert m["kernel_box"] == [9, 9] and np.load(out / "truth.npy").shape == (9, 9)
    size = m["kernel_size"]
    assert size["generous_shape"] == [15, 15] and size["size_candidates"] == list(range(1, 16, 2))
    assert len(size["size_criterion"]) == 8 and size["mass_outside_box"] < 1e-6
    assert m["centroid_offset"] == pytest.approx([2.0, 2.0], abs=1e-6)
    assert m["relative_error"] < 1e-8 and m["warnings"] == []


def test_run_gain_offset_and_saturated_spots(tmp_path):
    syn = _synthetic(gain=0.9, offset=0.02, spots=6, spot_value=3.0, saturation_level=0.9,
                     bits=None)
    cfg = {**SAME, "data": {"synthetic": syn},
           "model": {"mode": "same", "kernel_shape": K, "gain": True, "background": "constant",
                     "saturation": 0.9, "weights": "poisson"}}
    out = run_experiment(cfg, tmp_path / "sat", quiet=True)
    m = json.loads((out / "metrics.json").read_text())
    assert m["relative_error"] < 1e-8  # the target: kernel, gain and background to 1e-8
    assert m["gain"] == pytest.approx(0.9, abs=1e-8)
    assert m["background"] == pytest.approx([0.02], abs=1e-8)
    assert m["background_model"] == "constant" and 81 <= m["pixels_used"] < 40 * 40
    assert m["warnings"] == [] and m["fit_statistic"] < 1
    x = np.load(out / "truth.npy")
    assert x.shape == (9, 9)


def test_run_files_with_mask_nan_weights_huber_and_rgb_correlation(pair, tmp_path, capsys):
    d, x = pair[0], pair[1]
    h, bad = _options_pair(d, x)
    np.save(d / "h_corr.npy", h[::-1, ::-1])  # the truth as a correlation filter
    files = {"original": str(d / "x.npy"), "blurred": str(d / "y_opts.npy"),
             "truth": str(d / "h_corr.npy"), "mask": str(d / "mask.npy"),
             "weights": str(d / "w.npy")}
    cfg = {**SAME, "data": {"files": files},
           "model": {"mode": "same", "kernel_shape": K, "gain": True, "background": "constant",
                     "nan": "mask", "saturation": 0.99, "orientation": "correlation"},
           "outputs": {"plots": True}}
    (tmp_path / "files.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "files.yaml"), "--out", str(tmp_path / "f")]) == 0
    out, err = capsys.readouterr()
    m = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert m["relative_error"] < 1e-8 and m["orientation"] == "correlation"
    assert m["gain"] == pytest.approx(0.9, abs=1e-8)
    assert m["pixels_used"] <= 40 * 40 - int(bad[4:-4, 4:-4].sum())
    assert "gain 0.9 background [0.02] (constant)" in out and warnings_in(err) == []

    # RGB, 16-bit, per channel, orientation correlation (truths flipped to match)
    cfg = {**SAME, "data": {"synthetic": _synthetic(bits=16, kernel_shape=7,
                                                    kernel_offset=[1, 1]), "channels": "rgb"},
           "model": {"mode": "same", "kernel_shape": K, "orientation": "correlation"},
           "outputs": {"plots": False}}
    out = run_experiment(cfg, tmp_path / "rgb", quiet=True)
    m = json.loads((out / "metrics.json").read_text())
    assert m["batch"] == 3 and np.load(out / "kernels.npy").shape == (3, K, K)
    truths = np.load(out / "truths.npy")
    assert truths[0][2, 2] > truths[0][6, 6]  # flipped: the kernel sits up-left
    assert m["relative_error_max"] < 0.02
    assert len(m["per_item"]["centroid_offset"]) == 3
    assert m["per_item"]["centroid_offset"][0] == pytest.approx([-1, -1], abs=0.05)


def test_runner_records_warnings_and_the_cli_prints_them(tmp_path, capsys):
    # TINY's 5x5 box holds a Gaussian of sigma 1 with 21 % of its mass on the border.
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "outputs": {"plots": False}}))
    assert main(["run", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "t")]) == 0
    out, err = capsys.readouterr()
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert len(m["warnings"]) == 1 and "on the border of its 5x5 box" in m["warnings"][0]
    assert warnings_in(err) == [f"jdeconv: warning: {m['warnings'][0]}"]
    assert "kernel box 5x5" in out and "border mass 21 %" in out
    for key in ("centroid_offset", "border_mass", "gain", "background", "noise_sigma",
                "fit_statistic", "kernel_box"):
        assert key in m
    assert m["kernel_size"] is None and m["gain"] == 1.0 and m["background"] == []


def test_run_bad_input_is_one_line(pair, tmp_path, capsys):
    d = pair[0]
    np.save(d / "small_mask.npy", np.ones((10, 10), bool))
    files = {"original": str(d / "x.npy"), "blurred": str(d / "y.npy"),
             "mask": str(d / "small_mask.npy")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**SAME, "data": {"files": files}}))
    for extra, message in [([], "mask file '" + str(d / "small_mask.npy") + "' has shape (10, 10)"),
                           (["--set", "model.saturation=-1"], "model.saturation: expected a value > 0"),
                           (["--set", "model.background=plnae"], "did you mean 'plane'?"),
                           (["--set", "model.kernel_shape=auto", "--set", "prior.support=[[1]]"],
                            "prior.support: a support mask needs a fixed model.kernel_shape")]:
        assert main(["run", str(tmp_path / "c.yaml"), *extra, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("jdeconv: error: ") and err.count("\n") == 1, err
        assert message in err
