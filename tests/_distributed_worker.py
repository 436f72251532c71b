"""One process of the two-process ``jax.distributed`` test (tests/test_distributed.py).

Usage: ``python _distributed_worker.py PROCESS_ID NUM_PROCESSES PORT INPUTS.npz OUT_PREFIX``.
Run with ``JAX_PLATFORMS=cpu``. Exits with :data:`NO_CAPABILITY` (and a line starting
``NO-CAPABILITY:`` on stdout) when ``jax.distributed`` cannot run a cross-process
computation on this CPU; any other failure is a genuine error.
"""

import faulthandler
import sys
import time
import traceback
import warnings

NO_CAPABILITY = 77
CAPABLE = "initialised"  # logged once the capability check has passed
WATCHDOG_S = 120  # a hung worker prints every thread's stack and exits (parent: 150 s)


def _capability(process_id, num_processes, port):
    """Initialises jax.distributed and runs one cross-process all-gather."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=60)
    if jax.process_count() != num_processes:
        raise RuntimeError(f"process_count() is {jax.process_count()}, expected "
                           f"{num_processes}")
    got = multihost_utils.process_allgather(np.asarray([process_id]), tiled=True)
    if sorted(np.asarray(got).tolist()) != list(range(num_processes)):
        raise RuntimeError(f"process_allgather returned {got!r}")


def main(argv):
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    t0 = time.perf_counter()
    process_id, num_processes, port = (int(a) for a in argv[1:4])

    def log(what):
        print(f"[process {process_id}] {what}: {time.perf_counter() - t0:.1f} s", flush=True)

    inputs, prefix = argv[4], argv[5]
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    warnings.filterwarnings("error", category=Warning, module="jdeconv.*")
    try:
        _capability(process_id, num_processes, port)
    except Exception as e:  # noqa: BLE001 - reported to the parent as the skip reason
        print(f"NO-CAPABILITY: jax {jax.__version__}: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()
        return NO_CAPABILITY
    log(CAPABLE)

    import numpy as np

    import jdeconv

    data = np.load(inputs)
    results = {}
    for case in ("pairs", "one_x"):
        xs = data["x"] if case == "one_x" else data["xs"]
        ys = data[f"ys_{case}"]
        est = jdeconv.estimate_kernels(xs, ys, tuple(data["kernel_shape"]), mode="valid")
        for field in ("kernel", "result", "optimality", "residual_norm", "noise_sigma"):
            value = getattr(est, field)
            if not value.is_fully_addressable:
                raise AssertionError(f"{case}: {field} is not gathered to every process")
            results[f"{case}_{field}"] = np.asarray(value)
        log(case)
    results["devices"] = np.asarray(len(jax.devices()))
    results["local_devices"] = np.asarray(len(jax.local_devices()))
    np.savez(f"{prefix}{process_id}.npz", **results)
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
