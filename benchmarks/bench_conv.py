"""Direct (lax.conv_general_dilated) vs FFT valid convolution: where does the FFT pay?

Run: python benchmarks/bench_conv.py [--dtype float64]
Prints the median time of each method (compiled, warm) and their ratio for a grid
of image and kernel sizes; jdeconv's ``method="auto"`` switches to the FFT when
the kernel has more taps than the backend's threshold in ``jdeconv._conv``.
"""

import argparse
import time

import jax
import numpy as np


def median_time(f, *args, repeats=7):
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jdeconv
    from jdeconv import _conv

    rng = np.random.default_rng(0)
    threshold = _conv._FFT_TAPS.get(jax.default_backend(), _conv._FFT_TAPS_ACCELERATOR)
    print(f"backend {jax.default_backend()}: method='auto' takes the FFT above {threshold} taps; "
          f"dtype {args.dtype}")
    print(f"{'image':>6} {'kernel':>6} {'direct ms':>10} {'fft ms':>8} {'direct/fft':>10}")
    for m in (128, 256, 512):
        x = rng.random((m, m)).astype(args.dtype)
        for k in (3, 5, 7, 9, 11, 15, 21, 31):
            h = rng.random((k, k)).astype(args.dtype)
            fd = jax.jit(lambda x, h: jdeconv.conv2d(x, h, method="direct"))
            ff = jax.jit(lambda x, h: jdeconv.conv2d(x, h, method="fft"))
            td, tf = median_time(fd, x, h), median_time(ff, x, h)
            print(f"{m:>6} {k:>6} {1e3 * td:>10.2f} {1e3 * tf:>8.2f} {td / tf:>10.2f}")


if __name__ == "__main__":
    main()
