"""Tests for the experiment runner (jdeconv._runner): run directories, determinism, atomicity."""

import json

import numpy as np
import pytest
import yaml

from jdeconv._config import load_config
from jdeconv._runner import run_experiment

# Small problems: every new shape/solver compiles, so the tests share these two.
TINY = {
    "name": "tiny",
    "data": {"synthetic": {"image": "shapes", "image_shape": 40, "kernel": "gaussian",
                           "kernel_params": {"sigma": 1.0}}},
    "model": {"mode": "valid", "kernel_shape": 5},
    "solver": {"name": "fista", "max_iters": 40},
}

RUN_FILES = {"config.yaml", "versions.json", "metrics.json", "kernel.npy", "truth.npy",
             "loss_history.npy", "loss_history.csv", "kernel.csv", "kernel.png", "error_curve.csv",
             "plot_kernel.png", "plot_convergence.png", "plot_residual.png"}


def _numbers(path):
    m = json.loads((path / "metrics.json").read_text())
    m.pop("timing")
    return m


def test_run_writes_full_directory_and_is_deterministic(tmp_path):
    cfg = load_config(TINY)
    out = run_experiment(cfg, tmp_path / "a", quiet=True)
    assert out == tmp_path / "a"
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no partial directory left
    assert load_config(yaml.safe_load((out / "config.yaml").read_text())) == cfg
    versions = json.loads((out / "versions.json").read_text())
    assert {"jdeconv", "jax", "jaxlib", "optax", "numpy", "python", "platform", "devices"} <= set(versions)

    m = json.loads((out / "metrics.json").read_text())
    assert m["solver"] == "fista" and m["batch"] == 1 and m["iterations"] <= 40
    h, truth = np.load(out / "kernel.npy"), np.load(out / "truth.npy")
    assert h.shape == truth.shape == (5, 5)
    assert m["relative_error"] == pytest.approx(np.linalg.norm(h - truth) / np.linalg.norm(truth))
    assert m["relative_error"] < 0.1 and m["psnr_db"] > 30
    assert {"time_s", "first_call_s", "data_s"} <= set(m["timing"])
    hist = np.load(out / "loss_history.npy")
    assert hist.shape == (41,) and np.isfinite(hist[: m["iterations"] + 1]).all()
    rows = (out / "loss_history.csv").read_text().splitlines()
    assert rows[0] == "iteration,objective" and len(rows) == m["iterations"] + 2
    assert np.allclose(np.loadtxt(out / "kernel.csv", delimiter=","), h, rtol=0, atol=1e-15)
    its = m["error_curve"]["iterations"]
    assert its == sorted(its) and its[-1] == m["iterations"]
    assert m["error_curve"]["relative_error"][-1] == pytest.approx(m["relative_error"])

    again = run_experiment(cfg, tmp_path / "b", quiet=True)
    assert _numbers(again) == _numbers(out)
    assert np.array_equal(np.load(again / "kernel.npy"), h)


def test_existing_directory_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        run_experiment(TINY, out, quiet=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_failure_leaves_a_marked_partial_directory(tmp_path):
    cfg = {**TINY, "data": {"files": {"original": str(tmp_path / "missing.png"),
                                      "blurred": str(tmp_path / "missing2.png")}}}
    with pytest.raises(FileNotFoundError, match="missing.png"):
        run_experiment(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()
    (partial,) = tmp_path.iterdir()
    assert partial.name.startswith("run.partial-")
    assert (partial / "FAILED").exists() and not (partial / "metrics.json").exists()
    assert "FileNotFoundError" in (partial / "FAILED").read_text()


def test_default_directory_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = {**TINY, "outputs": {"plots": False, "error_curve": False, "save_csv": False,
                               "save_kernel_png": False, "warm_timing": False}}
    out = run_experiment(cfg, quiet=True)
    assert out.parent == __import__("pathlib").Path("runs") and out.name.startswith("tiny-")
    assert {p.name for p in out.iterdir()} == {"config.yaml", "versions.json", "metrics.json",
                                                "kernel.npy", "truth.npy", "loss_history.npy"}


def test_files_data_and_mismatched_shapes(tmp_path):
    from jdeconv._io import write_image
    from jdeconv._runner import make_pair

    cfg = load_config(TINY)
    x, y, h = make_pair(cfg.data.synthetic, (5, 5), "valid", seed=0)
    write_image(tmp_path / "x.png", x, bit_depth=16)
    write_image(tmp_path / "y.png", y, bit_depth=16, clip=True)
    np.save(tmp_path / "h.npy", h)
    files = {"files": {"original": "x.png", "blurred": "y.png", "truth": "h.npy"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**TINY, "data": files, "outputs": {"plots": False}}))
    out = run_experiment(tmp_path / "c.yaml", tmp_path / "run", quiet=True)
    m = json.loads((out / "metrics.json").read_text())
    assert m["relative_error"] < 0.1
    bad = load_config(tmp_path / "c.yaml", ["model.mode=same"])
    with pytest.raises(ValueError, match=r"blurred .* is 36x36 but the original .* is 40x40.*use mode 'valid'"):
        run_experiment(bad, tmp_path / "run2", quiet=True)


def test_sweep_with_batch(tmp_path):
    cfg = load_config({**TINY, "data": {**TINY["data"], "batch": 2},
                       "outputs": {"error_curve": False, "warm_timing": False},
                       "sweep": {"data.synthetic.noise.gaussian_sigma": [0.0, 0.01], "seed": [0, 7]}})
    out = run_experiment(cfg, tmp_path / "sweep", quiet=True)
    subdirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert subdirs == ["000-noise.gaussian_sigma=0.0_seed=0", "001-noise.gaussian_sigma=0.0_seed=7",
                       "002-noise.gaussian_sigma=0.01_seed=0", "003-noise.gaussian_sigma=0.01_seed=7"]
    assert {"config.yaml", "versions.json", "sweep.csv", "sweep.json", "plot_sweep.png"} <= {
        p.name for p in out.iterdir()}
    sub = out / subdirs[3]
    assert np.load(sub / "kernels.npy").shape == np.load(sub / "truths.npy").shape == (2, 5, 5)
    assert np.load(sub / "loss_history.npy").shape == (2, 41)
    m = json.loads((sub / "metrics.json").read_text())
    assert m["batch"] == 2 and len(m["per_item"]["relative_error"]) == 2
    assert yaml.safe_load((sub / "config.yaml").read_text())["seed"] == 7
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["seed"] for p in points] == [0, 7, 0, 7]
    errors = [p["relative_error"] for p in points]
    assert errors[2] > errors[0]  # noise hurts
    lines = (out / "sweep.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("point,data.synthetic.noise.gaussian_sigma,seed,")
