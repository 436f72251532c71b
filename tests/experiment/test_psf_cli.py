"""Parametric PSF fits, optics metrics and error bars from the CLI and configs (in-process)."""

import json

import numpy as np
import pytest

from jdeconv.experiment.cli import main

SIGMA = 1.2


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("psf") / "pair"
    assert main(["simulate", "--image", "noise", "--image-size", "64", "--kernel", "gaussian",
                 "-k", "7", "--param", f"sigma={SIGMA}", "--noise", "0.002", "--out", str(d),
                 "-q"]) == 0
    return d


def test_estimate_model_writes_fit_json(pair, tmp_path, capsys):
    out = tmp_path / "k.npy"
    assert main(["estimate", str(pair / "original.png"), str(pair / "blurred.png"), "-k", "7",
                 "--model", "gaussian", "--standard-errors", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model=gaussian sigma=" in text and "nonparametric fit_statistic=" in text
    assert "optics: FWHM" in text and "MTF50" in text
    rec = json.loads(out.with_suffix(".json").read_text())
    assert abs(rec["params"]["sigma"] - SIGMA) < 5 * rec["stderr"]["sigma"] + 1e-3
    assert rec["covariance_names"] == ["sigma", "dx", "dy"]
    assert np.shape(rec["covariance"]) == (3, 3)
    assert rec["fit_statistic"] is not None and rec["chi2_dof"] is not None
    assert rec["nonparametric_fit_statistic"] is not None
    h = np.load(out)
    assert h.shape == (7, 7) and abs(h.sum() - 1) < 1e-9
    se = np.load(tmp_path / "k.stderr.npy")
    assert se.shape == (7, 7) and np.all(se >= 0) and se.max() > 0


def test_run_psf_model_and_optics(pair, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: psf\ndata:\n  files: {{original: {pair / 'original.png'}, blurred: "
                   f"{pair / 'blurred.png'}, truth: {pair / 'kernel.npy'}}}\n"
                   "model: {mode: valid, kernel_shape: 7, psf_model: gaussian, "
                   "psf_init: {sigma: 1.0}}\noutputs: {standard_errors: true}\n")
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(run), "-q"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    fit = m["psf_fit"]
    assert fit["model"] == "gaussian" and abs(fit["params"]["sigma"] - SIGMA) < 0.02
    assert fit["relative_error"] < 0.05 and "chi2_dof" in fit and "covariance" in fit
    o = m["optics"]
    assert abs(o["fwhm_major"] - 2.3548 * SIGMA) < 0.15 and o["ellipticity"] < 0.05
    assert 0 < o["mtf50"] < 0.5 and abs(o["fwhm_minor"] - o["fwhm_major"]) < 0.05
    assert m["standard_errors"]["max"] > 0
    for name in ("psf_kernel.npy", "stderr.npy", "plot_mtf.png", "plot_kernel_errors.png",
                 "plot_psf_kernel.png"):
        assert (run / name).exists(), name


@pytest.mark.parametrize("argv, message", [
    (["--model", "mofat"], "unknown PSF model 'mofat'; expected one of"),
    (["--model", "gaussian", "--grid", "2x2"], "--model and --grid do not combine"),
    (["--standard-errors", "--solver", "fista"], "--standard-errors needs the exact solver"),
])
def test_estimate_bad_model_options(argv, message, tmp_path, capsys):
    code = main(["estimate", "a.png", "b.png", "-k", "7", "-o", str(tmp_path / "k.npy"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    if "mofat" in argv:
        assert "Did you mean 'moffat'?" in err


def test_config_unknown_psf_model(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {psf_model: mofat}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "model.psf_model" in err and "Did you mean 'moffat'?" in err and err.count("\n") == 1
