"""The matrix-free data terms from the command line and configs (``--loss poisson``).

One problem size (48x48 counts, a 5x5 kernel), in-process ``main([...])``.
"""

import json

import numpy as np
import pytest

import jdeconv
from jdeconv.experiment import run_experiment
from jdeconv.experiment.cli import main

K = 5


@pytest.fixture(scope="module")
def counts_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("counts")
    rng = np.random.default_rng(0)
    x = 400.0 * (0.2 + jdeconv.data.noise_target((48, 48), seed=2))
    h = np.asarray(jdeconv.data.gaussian_kernel(K, 0.8))
    lam = np.asarray(jdeconv.conv2d(x, h)) + 5.0
    y = rng.poisson(lam) + 2.0 * rng.standard_normal(lam.shape)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    return d, h


def test_estimate_poisson_with_loss_options(counts_pair, tmp_path, capsys):
    d, h = counts_pair
    out = tmp_path / "k.npy"
    code = main(["estimate", str(d / "x.npy"), str(d / "y.npy"), "-k", str(K), "--loss",
                 "poisson", "--loss-option", "read_noise=2", "--loss-option", "background=5",
                 "-o", str(out)])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert "fista" in text  # solver auto -> FISTA on the matrix-free path
    k = np.load(out)
    assert k.min() >= 0 and abs(k.sum() - 1) < 1e-9
    assert np.linalg.norm(k - h) / np.linalg.norm(h) < 0.1


@pytest.mark.parametrize("args, message", [
    (["--loss-option", "readnoise=2"], "no option 'readnoise'"),
    (["--loss-option", "read_noise"], "expected KEY=VALUE"),
    (["--solver", "exact"], "no normal equations"),
])
def test_estimate_poisson_errors_are_one_line(counts_pair, tmp_path, capsys, args, message):
    d, _ = counts_pair
    code = main(["estimate", str(d / "x.npy"), str(d / "y.npy"), "-k", str(K), "--loss",
                 "poisson", *args, "-o", str(tmp_path / "k.npy")])
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "k.npy").exists()


def test_config_loss_options_reach_the_estimate(tmp_path):
    cfg = {
        "name": "poisson_counts", "seed": 0,
        "data": {"synthetic": {"image": "noise", "image_shape": 48, "kernel": "gaussian",
                               "kernel_params": {"sigma": 0.8}}},
        "model": {"mode": "valid", "kernel_shape": K, "loss": "poisson",
                  "loss_options": {"read_noise": 0.0}},
        "solver": {"name": "fista", "max_iters": 1500, "tol": 1e-9},
    }
    run = run_experiment(cfg, tmp_path / "run", quiet=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["solver"] == "fista"
    assert metrics["loss"] == "poisson"
    assert metrics["relative_error"] < 1e-6  # noise-free counts: the likelihood's optimum is h
    bad = dict(cfg, model=dict(cfg["model"], loss_options={"readnoise": 1.0}))
    with pytest.raises(ValueError, match="no option 'readnoise'"):
        run_experiment(bad, tmp_path / "bad", quiet=True)
