"""Tests of the ``jdeconv`` command line (jdeconv.experiment.cli).

A few end-to-end runs of ``python -m jdeconv`` in subprocesses (each costs a JAX
import, so they are few and share one problem size and one compilation cache),
plus in-process checks of --help and of every user-error path (exit 2, one
line, no traceback).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from _experiment import TINY, run_cli

from jdeconv.experiment.cli import main


def rel_error(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_gray_8bit_valid_end_to_end(tmp_path, cli_env, capsys):
    pair = tmp_path / "pair"
    # simulate in this process (the RGB test below runs it as a command); estimate and run as
    # commands, sharing the session's compilation cache
    assert main(["simulate", "--image", "shapes", "--image-size", "48", "--kernel", "gaussian",
                 "--kernel-size", "5", "--param", "sigma=1", "--bits", "8", "--mode", "valid",
                 "--out", str(pair)]) == 0
    assert "original.png" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair"]
    assert sorted(p.name for p in pair.iterdir()) == ["blurred.png", "kernel.npy", "original.png",
                                                       "simulation.json"]
    info = json.loads((pair / "simulation.json").read_text())
    assert info["blurred_shape"] == [44, 44] and info["bits"] == 8
    from jdeconv.data import read_image

    assert read_image(pair / "blurred.png")[1].bit_depth == 8

    out = run_cli(cli_env, "estimate", pair / "original.png", pair / "blurred.png", "--kernel-size", 5,
                  "-o", tmp_path / "k.npy", "--png", "--csv")
    assert "solver=exact" in out.stdout and "converged=True" in out.stdout and "wrote" in out.stdout
    assert " s compiling)" in out.stdout  # wall time and compile time, separately
    h, truth = np.load(tmp_path / "k.npy"), np.load(pair / "kernel.npy")
    assert h.shape == (5, 5) and abs(h.sum() - 1) < 1e-9 and h.min() >= 0
    assert rel_error(h, truth) < 0.05  # 8-bit quantisation noise only
    assert np.allclose(np.loadtxt(tmp_path / "k.csv", delimiter=","), h, atol=1e-15)
    assert read_image(tmp_path / "k.png")[0].shape == (260, 260)  # 5x5 taps, 52 px each

    # The compilation cache lives in the user's cache directory ...
    cache = cli_env["XDG_CACHE_HOME"] + "/jdeconv/jax"
    import os

    assert os.listdir(cache)
    # ... so the same problem in a new process reuses it (--channels shared: same kernel).
    run_cli(cli_env, "estimate", pair / "original.png", pair / "blurred.png", "-k", 5,
            "--channels", "shared", "-o", tmp_path / "shared.npy", "--quiet")
    assert np.allclose(np.load(tmp_path / "shared.npy"), h, rtol=0, atol=1e-12)

    # The run command on the same problem size.
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "outputs": {"plots": False}}))
    out = run_cli(cli_env, "run", tmp_path / "tiny.yaml", "--out", tmp_path / "run", "--set", "seed=1")
    assert "run written to" in out.stdout and "compiling)" in out.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["solver"] == "exact" and m["converged"] and m["relative_error"] < 1e-8
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["seed"] == 1


def test_rgb_16bit_same_end_to_end_without_cache(tmp_path, cli_env):
    env = {**cli_env, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    pair = tmp_path / "rgb"
    run_cli(env, "simulate", "--image", "noise", "--image-size", 48, "--kernel", "motion",
            "-k", 5, "--param", "length=3", "--param", "angle=90", "--bits", 16, "--mode", "same",
            "--noise", "0.0005", "--seed", 3, "--rgb", "--quiet", "--no-cache", "--out", pair)
    from jdeconv.data import read_image

    y, info = read_image(pair / "blurred.png", channels="keep")
    assert y.shape == (48, 48, 3) and info.bit_depth == 16
    out = run_cli({**env, "JDECONV_NO_COMPILATION_CACHE": "1"}, "estimate", pair / "original.png",
                  pair / "blurred.png", "-k", 5, "--mode", "same", "--channels", "rgb",
                  "--solver", "fista", "--max-iters", 300, "-o", tmp_path / "k.npy", "--csv", "--png")
    assert "solver=fista" in out.stdout and "batch=3" in out.stdout
    h, truth = np.load(tmp_path / "k.npy"), np.load(pair / "kernel.npy")
    assert h.shape == (3, 5, 5) and truth.shape == (5, 5)
    assert all(rel_error(hc, truth) < 0.05 for hc in h)
    assert (tmp_path / "k.csv").read_text().startswith("channel,row,col,value\n")
    assert read_image(tmp_path / "k.png", channels="keep")[0].shape == (260, 260, 3)
    assert not (tmp_path / "xdg").exists()  # --no-cache and the variable: no cache written


def test_help_and_argument_errors_do_not_import_jax():
    code = (
        "import sys\n"
        "from jdeconv.experiment.cli import main\n"
        "codes = [main(['--help']), main(['run', '--help']), main(['estimate', 'a', 'b', '-k', '0']),\n"
        "         main(['simulate', '--prior', 'x', '--out', 'o']), main(['estimate', 'a', 'b', '-k', '5',\n"
        "         '--prior', 'simplx'])]\n"
        "heavy = [m for m in ('jax', 'pydantic', 'yaml', 'matplotlib', 'numpy') if m in sys.modules]\n"
        "print('RESULT', codes, heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "RESULT [0, 0, 2, 2, 2] []", proc.stdout + proc.stderr
    assert "Did you mean 'simplex'?" in proc.stderr


def test_error_in_subprocess_is_one_line_exit_2(tmp_path, cli_env):
    bad = run_cli(cli_env, "estimate", tmp_path / "none.png", tmp_path / "none2.png", "-k", 5,
                  "-o", tmp_path / "k.npy", check=False)
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
        assert "--set" in out and "--out" in out and "--warm-timing" in out and ".partial" in out
    if command == ["simulate"]:
        assert "--poisson" in out and "--bits" in out and "--rgb" in out
    if command:
        assert "--no-cache" in out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small valid pair, a same-size pair, configs and pickled arrays, written without the CLI."""
    from jdeconv.data import write_image

    d = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    write_image(d / "x.png", rng.random((20, 20)))
    write_image(d / "y.png", rng.random((16, 16)))
    (d / "bad.yaml").write_text("solver: {max_iter: 3}\n")
    (d / "ok.yaml").write_text("model: {kernel_shape: 5}\n")
    np.save(d / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "support.yaml").write_text("model: {kernel_shape: 5}\nprior: {support: pickled.npy}\n")
    (d / "truth.yaml").write_text("model: {kernel_shape: 5}\ndata:\n  files: {original: x.png, "
                                  "blurred: y.png, truth: pickled.npy}\n")
    (d / "existing").mkdir()
    (d / "k.npy").write_bytes(b"")
    return d


ERRORS = [
    (["estimate", "{d}/missing.png", "{d}/y.png", "-k", "5", "-o", "{d}/o1.npy"],
     "image file '{d}/missing.png' does not exist"),
    (["estimate", "{d}/x.png", "{d}/x.png", "-k", "5", "-o", "{d}/o2.npy"],
     "blurred ({d}/x.png) image is 20x20 but the original ({d}/x.png) image is 20x20: with a 5x5 "
     "kernel in mode 'valid' the blurred ({d}/x.png) image must be 16x16; the images have the same "
     "size: use mode 'same'"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "abc"], "kernel size 'abc' is not valid"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "1000000000"], "kernel size '1000000000' is too large"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--solver", "fsta"], "Did you mean 'fista'?"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--mode", "vald"], "Did you mean 'valid'?"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--prior", "nonnegative"], "Did you mean 'nonneg'?"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--channels", "rgbb"], "Did you mean 'rgb'?"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--regularization", "lots"],
     "--regularization 'lots' is not valid"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "-o", "{d}/k.txt"], "must be a .npy file"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "-o", "{d}/k.npy"], "already exists; pass --overwrite"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "-o", "/proc/k.npy"], "cannot write '/proc/k.npy'"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "-o", "{d}/nodir/k.npy"],
     "cannot write '{d}/nodir/k.npy': directory '{d}/nodir' does not exist"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "30", "-o", "{d}/o3.npy"],
     "the 30x30 kernel is larger than the original"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--max-iters", "0"], "argument --max-iters: expected a positive"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--max-iters", "1e23"], "argument --max-iters: 1e23 is too large"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--tol", "nan"], "argument --tol: expected a finite number"),
    (["estimate", "{d}/x.png", "{d}/y.png"], "the following arguments are required: -k/--kernel-size"),
    (["estimate", "{d}/x.png", "{d}/y.png", "-k", "5", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["run", "{d}/bad.yaml"], "solver.max_iter: unknown key; did you mean 'max_iters'?"),
    (["run", "{d}/nope.yaml"], "config file '{d}/nope.yaml' does not exist"),
    (["run", "{d}/ok.yaml", "--set", "solver.name"], "override 'solver.name': expected key=value"),
    (["run", "{d}/ok.yaml", "--set", "solver.name=fsta"], "solver.name: expected one of"),
    (["run", "{d}/ok.yaml", "--set", "prior.name=simplx"], "did you mean 'simplex'?"),
    (["run", "{d}/ok.yaml", "--set", "solver.max_iters=1e23"], "expected an integer of at most 10000000"),
    (["run", "{d}/ok.yaml", "--set", "name=../../escape"], "is not a plain file name"),
    (["run", "{d}/ok.yaml", "--out", "{d}/existing"], "run directory '{d}/existing' already exists"),
    (["run", "{d}/ok.yaml", "--out", "/proc/run"], "cannot create '/proc/run'"),
    (["run", "{d}/support.yaml", "--out", "{d}/r1"], "support mask file '{d}/pickled.npy' holds pickled"),
    (["run", "{d}/truth.yaml", "--out", "{d}/r2"], "true kernel file '{d}/pickled.npy' holds pickled"),
    (["simulate", "--image", "shapez", "--out", "{d}/s1"], "Did you mean 'shapes'?"),
    (["simulate", "--kernel", "gausian", "--out", "{d}/s2"], "Did you mean 'gaussian'?"),
    (["simulate", "--kernel", "motion", "--param", "lenght=3", "--out", "{d}/s3"], "does not take option(s) lenght"),
    (["simulate", "--bits", "12", "--out", "{d}/s4"], "argument --bits: invalid choice: 12"),
    (["simulate", "--out", "{d}/existing"], "output directory '{d}/existing' already exists"),
    (["simulate", "--image", "{d}/missing.png", "--out", "{d}/s5"], "image file '{d}/missing.png' does not exist"),
    (["simulate", "--noise", "-1", "--out", "{d}/s6"], "argument --noise: expected a finite number >= 0"),
    (["simulate", "-k", "1000000000", "--out", "{d}/s7"], "kernel size '1000000000' is too large"),
    (["simulate", "-k", "300", "--out", "{d}/s8"], "the 300x300 kernel is larger than the 256x256 image"),
    (["simulate", "--image-size", "30000", "--rgb", "--out", "{d}/s9"], "is too large: at most"),
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
    assert not any(p.name.startswith("o") and p.suffix == ".npy" for p in files.iterdir())


def test_failed_run_names_its_partial_directory(files, capsys):
    d = str(files)
    assert main(["run", f"{d}/support.yaml", "--out", f"{d}/r3"]) == 2
    err = capsys.readouterr().err
    (partial,) = [p for p in files.iterdir() if p.name.startswith("r3.partial-")]
    assert err.rstrip().endswith(f"; the incomplete results are in {str(partial)!r}")
    assert (partial / "FAILED").exists()


def test_in_process_main_leaves_the_process_cache_alone(tmp_path, monkeypatch):
    """``main([...])`` from Python never points the caller's process at the user's cache."""
    import jax

    from jdeconv.experiment.cli import main

    monkeypatch.delenv("JDECONV_NO_COMPILATION_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = jax.config.jax_compilation_cache_dir
    code = main(["simulate", "--image", "noise", "--image-size", "48", "-k", "5", "--quiet",
                 "--out", str(tmp_path / "pair")])
    assert code == 0
    assert jax.config.jax_compilation_cache_dir == before
    assert not (tmp_path / "xdg").exists()


def test_an_interrupt_inside_a_constructor_prints_no_destructor_traceback(monkeypatch, capsys):
    # A SIGTERM once landed inside imageio's PillowPlugin.__init__: the half-built plugin's
    # __del__ raised AttributeError when the interrupt's frames were freed, and Python
    # printed that traceback after "jdeconv: terminated".
    from jdeconv.experiment import cli

    class HalfBuilt:
        def __init__(self):
            raise cli._Terminated()

        def __del__(self):
            self.never_set  # noqa: B018 - fails like the half-built plugin

    def command(args):
        HalfBuilt()

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(cli, "_cmd_simulate", command)
    assert main(["simulate", "--out", "never"]) == 143
    assert capsys.readouterr().err == "jdeconv: terminated\n"
    assert unraisable == [] and sys.unraisablehook == unraisable.append
