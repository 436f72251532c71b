"""Spatially varying PSFs from the CLI and configs: simulate --field-sigma, estimate --grid, run."""

import json

import numpy as np
import pytest

from jdeconv.experiment.cli import main


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("field") / "pair"
    assert main(["simulate", "--image", "noise", "--image-size", "64", "-k", "7",
                 "--field-sigma", "0.5:1.3", "--field-grid", "3x3", "--out", str(d), "-q"]) == 0
    return d


def test_simulate_field(pair):
    ks = np.load(pair / "kernels.npy")
    assert ks.shape == (3, 3, 7, 7) and np.allclose(ks.sum(axis=(-2, -1)), 1)
    info = json.loads((pair / "simulation.json").read_text())
    assert info["kernel"] == "gaussian field" and info["field_grid"] == [3, 3]
    assert info["field_sigma"][1][1] == pytest.approx(0.5) and info["field_sigma"][0][0] == \
        pytest.approx(1.3)
    assert info["blurred_shape"] == [58, 58]


def test_estimate_grid(pair, tmp_path, capsys):
    out = tmp_path / "k.npy"
    assert main(["estimate", str(pair / "original.png"), str(pair / "blurred.png"), "-k", "7",
                 "--grid", "3x3", "--overlap", "0", "--coupling", "0.001", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PSF field 3x3" in text and "field residual" in text
    assert np.load(out).shape == (3, 3, 7, 7)
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["residual_ratio"] > 1.5 and rec["grid"] == [3, 3]
    # correlation orientation: the same field, each kernel flipped, the same residuals
    flipped = tmp_path / "f.npy"
    assert main(["estimate", str(pair / "original.png"), str(pair / "blurred.png"), "-k", "7",
                 "--grid", "3x3", "--overlap", "0", "--coupling", "0.001", "--orientation",
                 "correlation", "-o", str(flipped), "-q"]) == 0
    np.testing.assert_allclose(np.load(flipped), np.load(out)[..., ::-1, ::-1], atol=1e-12)
    rec_flipped = json.loads(flipped.with_suffix(".json").read_text())
    assert rec_flipped["residual_ratio"] == pytest.approx(rec["residual_ratio"], rel=1e-9)


def test_estimate_grid_mask_gain_background(pair, tmp_path, capsys):
    import warnings

    from jdeconv import estimate_psf_field
    from jdeconv.data import read_image

    x, _ = read_image(pair / "original.png")
    y, _ = read_image(pair / "blurred.png")
    rng = np.random.default_rng(0)
    bad = np.zeros(y.shape, bool)
    bad[5:15, 8:20] = True  # a saturated block in tile (0, 0)
    bad[rng.random(y.shape) < 0.02] = True  # hot pixels everywhere
    yc = 0.9 * y + 0.02
    yc[bad] = 1.0
    np.save(tmp_path / "b.npy", yc)
    np.save(tmp_path / "mask.npy", ~bad)
    out = tmp_path / "k.npy"
    assert main(["estimate", str(pair / "original.png"), str(tmp_path / "b.npy"), "-k", "7",
                 "--grid", "3x3", "--overlap", "0", "--gain", "--background", "constant",
                 "--mask", str(tmp_path / "mask.npy"), "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    # the CLI's field is the API's with the same mask and photometric terms (same program)
    kw = dict(grid=(3, 3), overlap=0.0, gain=True, background="constant")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        api = estimate_psf_field(x, yc, 7, mask=~bad, **kw)
        unmasked = estimate_psf_field(x, yc, 7, mask=np.ones(y.shape, bool), **kw)
    np.testing.assert_allclose(np.load(out), api.kernels, atol=1e-10)
    assert np.abs(np.asarray(unmasked.kernels) - api.kernels).max() > 0.02  # the mask mattered
    rec = json.loads(out.with_suffix(".json").read_text())
    np.testing.assert_allclose(rec["gain"], api.gain, atol=1e-10)
    np.testing.assert_allclose(rec["background"], api.background[..., 0], atol=1e-10)
    assert np.allclose(rec["gain"], 0.9, atol=0.1) and rec["residual_ratio"] > 1.2
    # a coupled field cannot take a gain: one line naming the fix
    code = main(["estimate", str(pair / "original.png"), str(tmp_path / "b.npy"), "-k", "7",
                 "--grid", "3x3", "--coupling", "0.1", "--gain", "-o", str(tmp_path / "c.npy")])
    err_text = capsys.readouterr().err
    assert code == 2 and "--coupling 0" in err_text and err_text.count("jdeconv: error") == 1
    assert not (tmp_path / "c.npy").exists()


def test_run_field(pair, tmp_path):
    cfg = tmp_path / "c.yaml"
    mask = np.ones((58, 58), bool)
    mask[20:24, 30:34] = False  # data.files.mask reaches the tiles too
    np.save(tmp_path / "mask.npy", mask)
    cfg.write_text(f"name: field\ndata:\n  files: {{original: {pair / 'original.png'}, blurred: "
                   f"{pair / 'blurred.png'}, mask: {tmp_path / 'mask.npy'}}}\nmodel: "
                   "{mode: valid, kernel_shape: 7, grid: [3, 3], overlap: 0}\n"
                   "outputs: {save_csv: false, save_kernel_png: false}\n")
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(run), "-q"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    f = m["field"]
    assert f["residual_ratio"] > 1.5 and np.shape(f["fwhm_mean"]) == (3, 3)
    assert f["pixels_used"] == 58 * 58 - 16
    assert np.shape(f["centroid_shift"]) == (3, 3) and np.shape(f["ellipticity"]) == (3, 3)
    # the blur grows from the centre to the corners
    assert f["fwhm_mean"][1][1] < min(f["fwhm_mean"][0][0], f["fwhm_mean"][2][2])
    assert np.load(run / "kernels.npy").shape == (3, 3, 7, 7)
    for name in ("plot_field_kernels.png", "plot_field_maps.png", "plot_field_residual.png"):
        assert (run / name).exists(), name
    # the polynomial model, same grid of evaluation points
    run2 = tmp_path / "run2"
    assert main(["run", str(cfg), "--out", str(run2), "-q", "--set", "model.field_degree=2",
                 "--set", "outputs.plots=false"]) == 0
    m2 = json.loads((run2 / "metrics.json").read_text())
    assert m2["field"]["model"] == "polynomial" and m2["field"]["residual_ratio"] > 1.2


def test_run_synthetic_field(tmp_path):
    # data.synthetic.field_sigma: the pair of `simulate --field-sigma`, its truth known
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: sf\ndata:\n  synthetic: {image: noise, image_shape: 64, "
                   "field_sigma: [0.5, 1.3], field_grid: [3, 3]}\nmodel: "
                   "{mode: valid, kernel_shape: 7, grid: [3, 3], overlap: 0}\n"
                   "outputs: {plots: false, save_csv: false, save_kernel_png: false}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "r"), "-q"]) == 0
    f = json.loads((tmp_path / "r" / "metrics.json").read_text())["field"]
    err, single = np.array(f["kernel_error"]), np.array(f["single_kernel_error"])
    assert err.shape == single.shape == (3, 3)
    assert f["kernel_error_median"] == pytest.approx(np.median(err))
    assert f["kernel_error_max"] == pytest.approx(err.max())
    # the tiles follow the true field where one kernel cannot (it fits the edge tiles' blur)
    assert (err < single).sum() >= 6 and err.mean() < 0.5 * single.mean()
    assert f["kernel_error_median"] < 0.5 * f["single_kernel_error_median"]
    # the truth is the centre kernel; the blur matches conv2d_field of the nodes
    from jdeconv.data import gaussian_kernel
    np.testing.assert_allclose(np.load(tmp_path / "r" / "truth.npy"),
                               gaussian_kernel(7, 0.5), atol=1e-12)
    # correlation orientation: kernels.npy flipped, the same field and errors
    assert main(["run", str(cfg), "--out", str(tmp_path / "c"), "-q",
                 "--set", "model.orientation=correlation"]) == 0
    fc = json.loads((tmp_path / "c" / "metrics.json").read_text())["field"]
    np.testing.assert_allclose(np.load(tmp_path / "c" / "kernels.npy"),
                               np.load(tmp_path / "r" / "kernels.npy")[..., ::-1, ::-1],
                               atol=1e-12)
    np.testing.assert_allclose(fc["kernel_error"], f["kernel_error"], atol=1e-9)
    assert fc["residual_ratio"] == pytest.approx(f["residual_ratio"], rel=1e-9)


def test_true_kernels_at_matches_the_blur():
    from jdeconv import conv2d, conv2d_field
    from jdeconv.experiment._field_run import true_kernels_at
    from jdeconv.experiment._pairs import gaussian_field

    nodes, _ = gaussian_field((5, 5), (3, 2), (0.6, 1.4))
    x = np.random.default_rng(1).random((40, 30))
    y = np.asarray(conv2d_field(x, nodes))  # valid: output (i, j) is centred on x[i+2, j+2]
    rows = (2, 9, 25)  # node rows at 6.17, 19.5, 32.8; node columns at 7, 22
    h = true_kernels_at(nodes, x.shape, rows, [6.0, 15.0])
    for a, r in enumerate(rows):  # the blur at a pixel is its interpolated kernel's
        for b, c in enumerate((6, 15)):
            local = np.asarray(conv2d(x[r - 2:r + 3, c - 2:c + 3], h[a, b]))[0, 0]
            assert local == pytest.approx(y[r - 2, c - 2], rel=1e-12)
    np.testing.assert_allclose(h[0, 0], nodes[0, 0], atol=1e-12)  # clamped before the centres
    assert np.abs(h[1, 1] - nodes[1, 0]).max() > 1e-3  # between nodes: neither node


@pytest.mark.parametrize("argv, message", [
    (["--grid", "0x3"], "grid '0x3' is not valid"),
    (["--grid", "4"], "grid '4' is not valid; give GYxGX"),
    (["--grid", "2x2", "--coupling", "-1"], "--coupling must be a finite weight >= 0"),
    (["--grid", "2x2", "--overlap", "1"], "--overlap must be in [0, 1)"),
    (["--field-degree", "1"], "--field-degree needs --grid"),
    # checked before any file is read or any estimate runs
    (["--grid", "2x2", "--coupling", "0.1", "--background", "plane", "--loss", "huber"],
     "--coupling > 0 does not combine with --background, --loss huber"),
])
def test_estimate_bad_grid(argv, message, tmp_path, capsys):
    code = main(["estimate", "a.png", "b.png", "-k", "7", "-o", str(tmp_path / "k.npy"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("override, message", [
    ("model.grid=[0, 3]", "model.grid"), ("model.grid=4", "give GYxGX"),
    ("model.coupling=-0.5", "model.coupling"),
    ("model.grid=[2, 2];model.coupling=0.1;model.gain=true",
     "model.coupling: > 0 does not combine with model.gain"),
    # the synthetic field blur
    ("data.synthetic.field_sigma=[1, 2];data.synthetic.kernel=motion",
     "field_sigma makes its own Gaussian kernels; remove kernel"),
    ("data.synthetic.field_sigma=[0, 2]", "data.synthetic.field_sigma"),
    ("data.synthetic.field_sigma=[1, 2];data.synthetic.field_grid=0x2",
     "data.synthetic.field_grid"),
])
def test_config_bad_grid(override, message, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    sets = [arg for o in override.split(";") for arg in ("--set", o)]
    assert main(["run", str(cfg), *sets, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
