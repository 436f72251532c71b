"""Upper bounds on sizes and counts, checked before anything is allocated.

A typo (``-k 1000000000``, ``max_iters: 1e23``) must become one clear message,
never an exhausted machine. Standard library only: the command line checks its
arguments against these bounds without importing JAX; :mod:`jdeconv._validation`
re-exports them for the library's own checks.
"""

MAX_ITERS = 10_000_000
"""Largest iteration count (``max_iters``)."""
MAX_IMAGE_SIDE = 65_536
"""Largest image side, in pixels."""
MAX_IMAGE_PIXELS = 1 << 28
"""Largest image, in pixels (268 M pixels, 2 GiB in float64)."""
MAX_KERNEL_SIDE = 4_096
"""Largest kernel side, in taps."""
