"""End-to-end tests of the ``jdeconv`` command line (``python -m jdeconv`` in a subprocess),
plus in-process checks of --help and of every user-error path (exit 2, one line, no traceback)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from jdeconv.cli import main


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Subprocess environment: CPU, and a compilation cache shared by the subprocesses."""
    cache = tmp_path_factory.mktemp("jax-cache")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def jdeconv(env, *args, cwd=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "jdeconv", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def rel_error(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_gray_8bit_valid_end_to_end(tmp_path, env):
    pair = tmp_path / "pair"
    out = jdeconv(env, "simulate", "--image", "shapes", "--image-size", 40, "--kernel", "gaussian",
                  "--kernel-size", 5, "--param", "sigma=1", "--bits", 8, "--mode", "valid",
                  "--out", pair)
    assert "original.png" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair"]
    assert sorted(p.name for p in pair.iterdir()) == ["blurred.png", "kernel.npy", "original.png",
                                                       "simulation.json"]
    info = json.loads((pair / "simulation.json").read_text())
    assert info["blurred_shape"] == [36, 36] and info["bits"] == 8
    from jdeconv._io import read_image

    assert read_image(pair / "blurred.png")[1].bit_depth == 8

    out = jdeconv(env, "estimate", pair / "original.png", pair / "blurred.png", "--kernel-size", 5,
                  "-o", tmp_path / "k.npy", "--png", "--csv")
    assert "solver=exact" in out.stdout and "converged=True" in out.stdout and "wrote" in out.stdout
    h, truth = np.load(tmp_path / "k.npy"), np.load(pair / "kernel.npy")
    assert h.shape == (5, 5) and abs(h.sum() - 1) < 1e-9 and h.min() >= 0
    assert rel_error(h, truth) < 0.05  # 8-bit quantisation noise only
    assert np.allclose(np.loadtxt(tmp_path / "k.csv", delimiter=","), h, atol=1e-15)
    assert (tmp_path / "k.png").exists()

    # --channels shared on the same pair gives the same kernel (the compiled program is reused).
    jdeconv(env, "estimate", pair / "original.png", pair / "blurred.png", "-k", 5, "--channels", "shared",
            "-o", tmp_path / "shared.npy", "--quiet")
    assert np.allclose(np.load(tmp_path / "shared.npy"), h, rtol=0, atol=1e-12)

    # The run command on a tiny configuration (same problem size: compiled program reused).
    cfg = {"name": "tiny", "data": {"synthetic": {"image_shape": 40, "kernel_params": {"sigma": 1.0}}},
           "model": {"kernel_shape": 5}, "solver": {"name": "exact"}, "outputs": {"plots": False}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    out = jdeconv(env, "run", tmp_path / "tiny.yaml", "--out", tmp_path / "run", "--set", "seed=1")
    assert "run written to" in out.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["solver"] == "exact" and m["converged"] and m["relative_error"] < 1e-8
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["seed"] == 1


def test_rgb_16bit_same_end_to_end(tmp_path, env):
    pair = tmp_path / "rgb"
    jdeconv(env, "simulate", "--image", "noise", "--image-size", 40, "--kernel", "motion",
            "-k", 5, "--param", "length=3", "--param", "angle=90", "--bits", 16, "--mode", "same",
            "--noise", "0.0005", "--seed", 3, "--rgb", "--quiet", "--out", pair)
    from jdeconv._io import read_image

    y, info = read_image(pair / "blurred.png", channels="keep")
    assert y.shape == (40, 40, 3) and info.bit_depth == 16
    out = jdeconv(env, "estimate", pair / "original.png", pair / "blurred.png", "-k", 5,
                  "--mode", "same", "--channels", "rgb", "--solver", "fista", "--max-iters", 300,
                  "-o", tmp_path / "k.npy", "--csv", "--png")
    assert "solver=fista" in out.stdout and "batch=3" in out.stdout
    h, truth = np.load(tmp_path / "k.npy"), np.load(pair / "kernel.npy")
    assert h.shape == (3, 5, 5) and truth.shape == (5, 5)
    assert all(rel_error(hc, truth) < 0.05 for hc in h)
    assert (tmp_path / "k.csv").read_text().startswith("channel,row,col,value\n")


def test_error_in_subprocess_is_one_line_exit_2(tmp_path, env):
    bad = jdeconv(env, "estimate", tmp_path / "none.png", tmp_path / "none2.png", "-k", 5,
                  check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == f"jdeconv: error: image file '{tmp_path / 'none.png'}' does not exist; check the path\n"


@pytest.mark.parametrize("command", [[], ["estimate"], ["run"], ["simulate"]])
def test_help(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jdeconv")
    if command == ["estimate"]:
        assert "--kernel-size" in out and "--channels" in out and "--overwrite" in out
    if command == ["run"]:
        assert "--set" in out and "--out" in out
    if command == ["simulate"]:
        assert "--poisson" in out and "--bits" in out and "--rgb" in out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small valid pair, a same-size pair and a config, written without the CLI."""
    from jdeconv._io import write_image

    d = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    write_image(d / "x.png", rng.random((20, 20)))
    write_image(d / "y.png", rng.random((16, 16)))
    (d / "bad.yaml").write_text("solver: {max_iter: 3}\n")
    (d / "ok.yaml").write_text("model: {kernel_shape: 5}\n")
    (d / "existing").mkdir()
    (d / "k.npy").write_bytes(b"")
    return d


ERRORS = [
    (["estimate", "{d}/missing.png", "{d}/y.png", "-k", "5"], "image file '{d}/missing.png' does not exist"),
    (["estimate", "{d}/x.png", "{d}/x.png", "-k", "5"],
     "blurred ({d}/x.png) image is 20x20 but the original ({d}/x.png) image is 20x20: with a 5x5 "
     "kernel in mode 'valid' the blurred ({d}/x.png) image must be 16x16; the images have the same "
     "size: use mode 'same'"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "abc"], "kernel size 'abc' is not valid"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--solver", "fsta"], "Did you mean 'fista'?"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--mode", "vald"], "Did you mean 'valid'?"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--channels", "rgbb"], "Did you mean 'rgb'?"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--regularization", "lots"],
     "--regularization 'lots' is not valid"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "-o", "{d}/k.txt"], "must be a .npy file"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "-o", "{d}/k.npy"], "already exists; pass --overwrite"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "30"], "the 30x30 kernel is larger than the original"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--max-iters", "0"], "argument --max-iters: expected a positive"),
    (["estimate", "{d}/x.png", "{d}/y.png"], "the following arguments are required: -k/--kernel-size"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["run", "{d}/bad.yaml"], "solver.max_iter: unknown key; did you mean 'max_iters'?"),
    (["run", "{d}/nope.yaml"], "config file '{d}/nope.yaml' does not exist"),
    (["run", "{d}/ok.yaml", "--set", "solver.name"], "override 'solver.name': expected key=value"),
    (["run", "{d}/ok.yaml", "--set", "solver.name=fsta"], "solver.name: expected one of"),
    (["run", "{d}/ok.yaml", "--out", "{d}/existing"], "run directory '{d}/existing' already exists"),
    (["simulate", "--image", "shapez", "--out", "{d}/s1"], "Did you mean 'shapes'?"),
    (["simulate", "--kernel", "gausian", "--out", "{d}/s2"], "Did you mean 'gaussian'?"),
    (["simulate", "--kernel", "motion", "--param", "lenght=3", "--out", "{d}/s3"], "does not take option(s) lenght"),
    (["simulate", "--bits", "12", "--out", "{d}/s4"], "--bits must be 8 or 16"),
    (["simulate", "--out", "{d}/existing"], "output directory '{d}/existing' already exists"),
    (["simulate", "--image", "{d}/missing.png", "--out", "{d}/s5"], "image file '{d}/missing.png' does not exist"),
    (["simulate", "--noise", "-1", "--out", "{d}/s6"], "argument --noise: expected a finite number >= 0"),
]


@pytest.mark.parametrize("argv, message", ERRORS, ids=[" ".join(a[:1] + a[3:5]) or "none" for a, _ in ERRORS])
def test_user_errors_exit_2_with_one_line(argv, message, files, capsys):
    d = str(files)
    code = main([a.replace("{d}", d) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("jdeconv: error: ") and err.count("\n") == 1, err
    assert message.replace("{d}", d) in err
    assert "Traceback" not in err
    assert not any(p.name.startswith("s") and p.is_dir() for p in files.iterdir())
