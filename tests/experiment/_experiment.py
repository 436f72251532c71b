"""Shared by the experiment tests (``from _experiment import TINY, run_cli``)."""

import subprocess
import sys

#: The one small problem every experiment test uses (exact solver, valid mode).
TINY = {
    "name": "tiny",
    "data": {"synthetic": {"image": "shapes", "image_shape": 48, "kernel": "gaussian",
                           "kernel_params": {"sigma": 1.0}}},
    "model": {"mode": "valid", "kernel_shape": 5},
    "solver": {"name": "exact"},
}


def run_cli(env, *args, cwd=None, check=True, timeout=300, **kw):
    """``python -m jdeconv ARGS`` in a subprocess; raises with its output unless it succeeds."""
    proc = subprocess.run([sys.executable, "-m", "jdeconv", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
