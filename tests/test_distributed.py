"""``estimate_kernels`` across two processes with ``jax.distributed`` (multi-host, on the CPU).

Two local processes (``JAX_PLATFORMS=cpu``, one CPU device each: a global mesh of
two devices) join a coordinator on 127.0.0.1 and call ``estimate_kernels`` on the
same global batch; every process passes the full batch and gets the full result
back. Both must equal one single-process run to 1e-10 (float64), for a batch of
separate pairs (8: four per device) and for one original with many blurred images
(7: padded to 8). The worker is tests/_distributed_worker.py.

One CPU device per process, as on a cluster. (Several CPU devices in one process
are test_estimate's sharded test: there each device solves its pairs one after
the other, because vmapped, jaxlib's batched LAPACK calls (``eigh``, Cholesky)
blocked every intra-op thread waiting for sub-tasks on the same pool, and the
program deadlocked; README, Known issues.)

The test is skipped only when the capability check fails: a worker cannot initialise
``jax.distributed`` or run one cross-process all-gather on this CPU (the skip gives
the error). A failure after that check fails the test.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jdeconv

from _distributed_worker import CAPABLE

# On CI it runs on request: a loaded 2-core machine once deadlocked an earlier version of
# this test in a full-suite run, and a hang would stall the whole CI job.
pytestmark = pytest.mark.skipif(os.environ.get("JDECONV_DISTRIBUTED_TESTS") != "1",
                                reason="set JDECONV_DISTRIBUTED_TESTS=1 to run the two-process test")

WORKER = Path(__file__).with_name("_distributed_worker.py")
NUM_PROCESSES = 2
LOCAL_DEVICES = 1
TIMEOUT_S = 150  # the workers dump their stacks and exit after WATCHDOG_S


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs():
    rng = np.random.default_rng(0)
    kernels = [np.asarray(jdeconv.data.gaussian_kernel(5, s)) for s in (0.45, 0.5, 0.55, 0.6)]
    xs = np.stack([jdeconv.data.noise_target((32, 32), seed=s) for s in range(8)])
    ys_pairs = np.stack([np.asarray(jdeconv.conv2d(x, kernels[i % 4]))
                         for i, x in enumerate(xs)])
    ys_pairs = ys_pairs + 1e-3 * rng.standard_normal(ys_pairs.shape)
    x = xs[0]
    ys_one_x = np.stack([np.asarray(jdeconv.conv2d(x, kernels[i % 4])) for i in range(7)])
    ys_one_x = ys_one_x + 1e-3 * rng.standard_normal(ys_one_x.shape)
    return dict(xs=xs, ys_pairs=ys_pairs, x=x, ys_one_x=ys_one_x,
                kernel_shape=np.asarray((5, 5)))


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count="
                                         f"{LOCAL_DEVICES}"])
    env.pop("JAX_NUM_CPU_DEVICES", None)
    return env


def _start_workers(inputs, prefix):
    port = _free_port()
    return [subprocess.Popen([sys.executable, str(WORKER), str(i), str(NUM_PROCESSES),
                              str(port), str(inputs), str(prefix)],
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
            for i in range(NUM_PROCESSES)]


def _wait(procs):
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the {NUM_PROCESSES} jax.distributed workers did not finish in "
                    f"{TIMEOUT_S} s")
    return [p.returncode for p in procs], outs


def test_estimate_kernels_two_processes_equal_one(tmp_path):
    data = _inputs()
    np.savez(tmp_path / "inputs.npz", **data)
    procs = _start_workers(tmp_path / "inputs.npz", tmp_path / "out")
    try:  # the single-process reference, while the workers run
        kshape = tuple(data["kernel_shape"])
        single = {"pairs": jdeconv.estimate_kernels(data["xs"], data["ys_pairs"], kshape),
                  "one_x": jdeconv.estimate_kernels(data["x"], data["ys_one_x"], kshape)}
    finally:
        codes, outs = _wait(procs)
    # A worker that failed before passing the capability check (its own report, or a
    # hard exit from inside the collectives library) means no jax.distributed here.
    failed_early = [out for code, out in zip(codes, outs)
                    if code != 0 and f"] {CAPABLE}:" not in out]
    if failed_early:
        lines = [line for out in failed_early for line in out.splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("NO-CAPABILITY:")),
                      " / ".join(lines[-3:]) or "(no message)")
        pytest.skip(f"jax.distributed on the CPU is not available: {reason}")
    for i, (code, out) in enumerate(zip(codes, outs)):
        assert code == 0, f"worker {i} exited with {code}:\n{out[-4000:]}"

    for i in range(NUM_PROCESSES):
        got = np.load(tmp_path / f"out{i}.npz")
        assert int(got["devices"]) == NUM_PROCESSES * LOCAL_DEVICES
        assert int(got["local_devices"]) == LOCAL_DEVICES
        for case, est in single.items():
            assert np.all(np.asarray(est.result) == 0), case
            np.testing.assert_array_equal(got[f"{case}_result"], np.asarray(est.result))
            for field in ("kernel", "residual_norm", "noise_sigma", "optimality"):
                want = np.asarray(getattr(est, field))
                assert got[f"{case}_{field}"].shape == want.shape, (case, field)
                atol = 1e-10 * max(1.0, float(np.max(np.abs(want))))
                np.testing.assert_allclose(got[f"{case}_{field}"], want, rtol=0, atol=atol,
                                           err_msg=f"process {i}, {case}, {field}")
