"""Fault injection (issue 13): hostile input, kills and impossible sizes against the ``jdeconv`` CLI.

Each case runs the real command in a subprocess and asserts what a user sees:
exit status 2, one line ``jdeconv: error: ...``, no traceback, nothing written
outside the output directory and nothing that looks finished (a run is
finished exactly when its top-level directory has no ``.partial`` suffix, and
only a finished run holds a ``metrics.json``).
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from _experiment import TINY


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


#: The child limits its own address space, then runs ``python -m jdeconv`` (no preexec_fn:
#: forking a multithreaded JAX process is unsafe). A limit ``+N`` is N bytes above what the
#: child holds once JAX has started: it means the same on any machine (JAX's thread pools,
#: and so its address space, grow with the core count) and is reached at the first large
#: allocation.
_LIMITED = ("import resource, runpy, sys; arg = sys.argv.pop(1); limit = int(arg)\n"
            "if arg.startswith('+'):\n"
            "    import jax; jax.devices()\n"
            "    limit += int(next(l for l in open('/proc/self/status') "
            "if l.startswith('VmSize:')).split()[1]) * 1024\n"
            "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
            "sys.argv[0] = 'jdeconv'; runpy.run_module('jdeconv', run_name='__main__')")


def _jdeconv(env, args, cwd, *, memory_bytes=None, timeout=120):
    """``python -m jdeconv ARGS``; ``memory_bytes``: an address-space limit (see ``_LIMITED``)."""
    head = [sys.executable, "-c", _LIMITED, str(memory_bytes)] if memory_bytes else [
        sys.executable, "-m", "jdeconv"]
    return subprocess.run([*head, *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _assert_one_line_error(proc, message):
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("jdeconv: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr, proc.stderr


@pytest.fixture
def work(tmp_path):
    """``tmp/work`` (the current directory of the command) inside an otherwise empty ``tmp``."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


HOSTILE_CONFIGS = {
    "deep": ("x: " + "[" * 5000 + "]" * 5000 + "\n", "is nested too deeply"),
    "huge_iters": ("solver: {max_iters: 1e23}\n", "solver.max_iters: expected an integer of at most"),
    "huge_kernel": ("model: {kernel_shape: [5, 1.0e+23]}\n", "model.kernel_shape: expected positive sizes"),
    "escape": ("name: ../../../elsewhere/x\n", "name: '../../../elsewhere/x' is not a plain file name"),
    "absolute": ("name: /tmp/jdeconv-escape\n", "is not a plain file name"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONFIGS))
def test_hostile_config_is_one_line_and_writes_nothing(case, work, cli_env):
    text, message = HOSTILE_CONFIGS[case]
    (work / "c.yaml").write_text(text)
    before = _tree(work.parent)
    t0 = time.perf_counter()
    proc = _jdeconv(cli_env, ["run", "c.yaml"], work)  # default output: runs/<name>-<stamp>
    _assert_one_line_error(proc, message)
    assert time.perf_counter() - t0 < 60
    assert _tree(work.parent) == before  # no runs/, nothing beside or above it
    assert not os.path.exists("/tmp/jdeconv-escape")


def test_unwritable_output_is_refused_before_estimating(work, cli_env):
    # The images need not even exist: the output is checked first.
    proc = _jdeconv(cli_env, ["estimate", "x.png", "y.png", "-k", 5, "-o", "/proc/k.npy"], work)
    _assert_one_line_error(proc, "cannot write '/proc/k.npy'")
    assert ".tmp" not in proc.stderr and ".probe" not in proc.stderr
    assert _tree(work.parent) == ["work"]


@pytest.mark.parametrize("args, limit, message", [
    (["-k", "1000000000"], 3 << 30, "kernel size '1000000000' is too large"),
    (["--image-size", "1000000000"], 3 << 30, "image size '1000000000' is too large"),
    (["--image-size", "60000", "-k", "9"], 3 << 30, "image size 60000x60000 is too large"),
    # within the bounds, but not within this process's memory (one 16000x16000 float64
    # image is 1.9 GiB, the limit 1 GiB above the started JAX): still one line
    (["--image-size", "16000", "-k", "9", "--no-cache"], f"+{1 << 30}", "out of memory"),
])
def test_out_of_range_simulate_under_a_memory_limit(args, limit, message, work, cli_env):
    proc = _jdeconv(cli_env, ["simulate", *args, "--out", "pair"], work, memory_bytes=limit,
                    timeout=120)
    _assert_one_line_error(proc, message)
    assert _tree(work.parent) == ["work"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_sweep_killed_midway_leaves_nothing_that_looks_finished(sig, work, cli_env):
    cfg = {**TINY, "outputs": {"save_csv": False, "plots": False}, "sweep": {"seed": list(range(40))}}
    (work / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "jdeconv", "run", "sweep.yaml", "--out", "out/s"],
                            env=cli_env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 240
        while not list((work / "out").glob("s.partial-*/001-seed=1/kernel.npy")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sweep did not reach its second point"
            time.sleep(0.1)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    (partial,) = (work / "out").iterdir()
    assert partial.name.startswith("s.partial-")  # never renamed: not finished
    assert not list(work.parent.rglob("metrics.json"))  # neither the sweep nor any point
    assert sorted(os.listdir(work)) == ["out", "sweep.yaml"] and _tree(work.parent)[0] == "work"
    assert "Traceback" not in stderr
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        assert stderr == f"jdeconv: terminated; the incomplete results are in {str(partial.relative_to(work))!r}\n"
        assert (partial / "FAILED").exists()
    else:
        assert proc.returncode == -signal.SIGKILL
