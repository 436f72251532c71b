"""Tests for the experiment runner (jdeconv.experiment._runner): run directories, determinism, atomicity."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from _experiment import TINY

from jdeconv.experiment import load_config, run_experiment
from jdeconv.experiment._artifacts import partial_directory_of

RUN_FILES = {"config.yaml", "versions.json", "metrics.json", "kernel.npy", "truth.npy",
             "loss_history.npy", "loss_history.csv", "kernel.csv", "kernel.png",
             "plot_kernel.png", "plot_convergence.png", "plot_residual.png", "plot_mtf.png"}
NO_EXTRAS = {"plots": False, "error_curve": False, "save_csv": False, "save_kernel_png": False}


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
    assert m["solver"] == "exact" and m["batch"] == 1 and m["converged"] and m["result"] == 0
    assert m["optimality"] <= m["tol"] and "active_taps" in m["stats"]
    h, truth = np.load(out / "kernel.npy"), np.load(out / "truth.npy")
    assert h.shape == truth.shape == (5, 5)
    assert m["relative_error"] == pytest.approx(np.linalg.norm(h - truth) / np.linalg.norm(truth))
    assert m["relative_error"] < 1e-6 and m["psnr_db"] > 100
    t = m["timing"]
    assert {"data_s", "wall_s", "compile_s", "time_s"} <= set(t) and "warm_s" not in t  # warm off
    assert 0 <= t["compile_s"] <= t["wall_s"] and t["time_s"] <= t["wall_s"]
    hist = np.load(out / "loss_history.npy")
    assert np.isfinite(hist[: m["iterations"] + 1]).all()
    rows = (out / "loss_history.csv").read_text().splitlines()
    assert rows[0] == "iteration,objective" and len(rows) == np.isfinite(hist).sum() + 1
    assert np.allclose(np.loadtxt(out / "kernel.csv", delimiter=","), h, rtol=0, atol=1e-15)
    from jdeconv.data import read_image

    assert read_image(out / "kernel.png")[0].shape[0] >= 256  # upsampled, visible

    again = run_experiment(load_config(TINY, [f"outputs.{k}=false" for k in NO_EXTRAS]),
                           tmp_path / "b", quiet=True)
    assert _numbers(again) == _numbers(out)
    assert np.array_equal(np.load(again / "kernel.npy"), h)


def test_run_directory_uses_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = run_experiment({**TINY, "outputs": NO_EXTRAS}, tmp_path / "run", quiet=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "metrics.json").stat().st_mode) == 0o644


def test_first_order_run_with_options_and_error_curve(tmp_path):
    cfg = {**TINY, "model": {"mode": "same", "kernel_shape": 5},
           "solver": {"name": "fista", "max_iters": 30, "options": {"restart": False}},
           "outputs": {**NO_EXTRAS, "error_curve": True, "save_csv": True, "warm_timing": True}}
    out = run_experiment(cfg, tmp_path / "f", quiet=True)
    m = json.loads((out / "metrics.json").read_text())
    assert m["solver"] == "fista"
    assert m["solver_options"] == {"restart": False, "matrix_free": None}
    assert m["iterations"] <= 30 and "warm_s" in m["timing"]
    its = m["error_curve"]["iterations"]
    assert its == sorted(its) and its[-1] == m["iterations"]
    assert m["error_curve"]["relative_error"][-1] == pytest.approx(m["relative_error"])
    assert (out / "error_curve.csv").exists()


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
    with pytest.raises(FileNotFoundError, match="missing.png") as e:
        run_experiment(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()
    (partial,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert partial.name.startswith("run.partial-") and partial_directory_of(e.value) == partial
    assert (partial / "FAILED").exists() and not (partial / "metrics.json").exists()
    assert "FileNotFoundError" in (partial / "FAILED").read_text()


def test_default_directory_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run_experiment({**TINY, "outputs": NO_EXTRAS}, quiet=True)
    assert out.parent == Path("runs") and out.name.startswith("tiny-")
    assert {p.name for p in out.iterdir()} == {"config.yaml", "versions.json", "metrics.json",
                                                "kernel.npy", "truth.npy", "loss_history.npy"}


def test_files_data_and_mismatched_shapes(tmp_path):
    from jdeconv.data import write_image
    from jdeconv.experiment._pairs import make_pair

    cfg = load_config(TINY)
    x, y, h = make_pair(cfg.data.synthetic, (5, 5), "valid", seed=0)
    write_image(tmp_path / "x.png", x, bit_depth=16)
    write_image(tmp_path / "y.png", y, bit_depth=16, clip=True)
    np.save(tmp_path / "h.npy", h)
    files = {"files": {"original": "x.png", "blurred": "y.png", "truth": "h.npy"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**TINY, "data": files, "outputs": NO_EXTRAS}))
    out = run_experiment(tmp_path / "c.yaml", tmp_path / "run", quiet=True)
    assert json.loads((out / "metrics.json").read_text())["relative_error"] < 0.05
    bad = load_config(tmp_path / "c.yaml", ["model.mode=same"])
    with pytest.raises(ValueError, match=r"blurred .* is 44x44 but the original .* is 48x48.*use mode 'valid'"):
        run_experiment(bad, tmp_path / "run2", quiet=True)


def test_sweep_with_batch_writes_metrics_last(tmp_path, monkeypatch):
    from jdeconv.experiment import _artifacts

    written = []
    original = _artifacts.Folder.write_json

    def spy(self, name, obj):
        written.append(str((self.dir / name).relative_to(self._root)))
        return original(self, name, obj)

    monkeypatch.setattr(_artifacts.Folder, "write_json", spy)
    cfg = load_config({**TINY, "data": {**TINY["data"], "batch": 2}, "outputs": {"error_curve": False},
                       "sweep": {"data.synthetic.noise.gaussian_sigma": [0.0, 0.01], "seed": [7]}})
    out = run_experiment(cfg, tmp_path / "sweep", quiet=True)
    subdirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert subdirs == ["000-noise.gaussian_sigma=0.0_seed=7", "001-noise.gaussian_sigma=0.01_seed=7"]
    assert {"config.yaml", "versions.json", "sweep.csv", "sweep.json", "plot_sweep.png",
            "metrics.json"} <= {p.name for p in out.iterdir()}
    # the points' metrics only after every point ran, the sweep's own metrics.json last
    assert written[0] == "versions.json" and written[-1] == "metrics.json"
    assert written[1:3] == [f"{s}/metrics.json" for s in subdirs] and written[3] == "sweep.json"
    sub = out / subdirs[1]
    assert np.load(sub / "kernels.npy").shape == np.load(sub / "truths.npy").shape == (2, 5, 5)
    m = json.loads((sub / "metrics.json").read_text())
    assert m["batch"] == 2 and len(m["per_item"]["relative_error"]) == 2
    assert yaml.safe_load((sub / "config.yaml").read_text())["seed"] == 7
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert json.loads((out / "metrics.json").read_text())["points"] == points
    assert [p["seed"] for p in points] == [7, 7]
    errors = [p["relative_error"] for p in points]
    assert errors[1] > errors[0]  # noise hurts
    lines = (out / "sweep.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("point,data.synthetic.noise.gaussian_sigma,seed,")


def test_interrupt_marks_partial_and_nothing_looks_finished(tmp_path, monkeypatch):
    from jdeconv.experiment import _runner

    calls = []
    real = _runner._run_single

    def interrupted_second_point(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(_runner, "_run_single", interrupted_second_point)
    cfg = {**TINY, "outputs": NO_EXTRAS, "sweep": {"seed": [0, 1, 2]}}
    with pytest.raises(KeyboardInterrupt) as e:
        run_experiment(cfg, tmp_path / "s", quiet=True)
    partial = partial_directory_of(e.value)
    assert partial is not None and partial.name.startswith("s.partial-")
    assert (partial / "FAILED").exists() and not list(tmp_path.rglob("metrics.json"))
    assert (partial / "000-seed=0" / "kernel.npy").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("JDECONV_SLOW_TESTS") != "1",
                    reason="compiles every solver (~20 s idle); set JDECONV_SLOW_TESTS=1")
def test_every_shipped_config_runs(tmp_path):
    """Each configs/*.yaml as written, shrunk to the tests' size (48x48, 5x5, two sweep values)."""
    root = Path(__file__).resolve().parents[2] / "configs"
    for path in sorted(root.glob("*.yaml")):
        cfg = load_config(path)
        shrink = ["data.synthetic.image_shape=48", "outputs.plots=false",
                  f"data.batch={min(cfg.data.batch, 2)}", "data.synthetic.kernel_params=null"]
        if cfg.model.auto:  # the true kernel's box shrinks; the generous box fits 48x48
            shrink += ["data.synthetic.kernel_shape=5", "model.max_kernel_shape=15"]
        else:
            shrink.append("model.kernel_shape=5")
        if cfg.solver.max_iters:
            shrink.append("solver.max_iters=20")
        if cfg.sweep:
            shrink.append("sweep=" + json.dumps({k: v[:2] for k, v in cfg.sweep.items()}))
        out = run_experiment(load_config(path, shrink), tmp_path / path.stem, quiet=True)
        assert (out / "metrics.json").exists(), path.name
