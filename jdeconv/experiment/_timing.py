"""Wall time and JAX compilation time of a call, measured separately.

The compilation time is the sum of JAX's own monitoring events for tracing,
lowering and compiling (or loading from the persistent cache) during the call,
so a first call reports what the user waited and how much of it was
compilation without running the computation twice.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Stopwatch"]

_COMPILE_EVENTS = frozenset({
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
})
_total = [0.0]
_registered = [False]


def _listener(event: str, duration: float, **_: Any) -> None:
    if event in _COMPILE_EVENTS:
        _total[0] += duration


def _compile_seconds() -> float:
    if not _registered[0]:
        import jax

        jax.monitoring.register_event_duration_secs_listener(_listener)
        _registered[0] = True
    return _total[0]


class Stopwatch:
    """Context manager: ``wall_s`` (seconds waited) and ``compile_s`` (of which compiling).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> with Stopwatch() as sw:
        ...     _ = jax.jit(lambda v: v + 1)(jnp.ones(3)).block_until_ready()
        >>> 0 <= sw.compile_s <= sw.wall_s
        True
    """

    wall_s: float = 0.0
    compile_s: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._c0 = _compile_seconds()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        self.wall_s = time.perf_counter() - self._t0
        self.compile_s = min(max(_compile_seconds() - self._c0, 0.0), self.wall_s)
        return False
