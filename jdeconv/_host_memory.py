"""Memory the process has freed but still holds (the peak of large problems).

Loading a compiled program, from JAX's persistent cache or from a compilation,
builds XLA's HLO module from protocol buffers on XLA's own threads. glibc keeps
what they free in those threads' arenas, while the run's image-size buffers are
new mappings that cannot reuse it, so the freed memory adds to the process's
peak. For a 2048² image with a 31×31 kernel the load's freed memory was about
50 MiB of a 646 MiB peak (measured with ``VmHWM``; the peak fell to 593 MiB
once it went back to the system before the run).

:func:`compile_then_release` compiles (or fetches the already compiled
program) for the call's arguments and then returns the freed memory to the
system (``malloc_trim``, glibc only), so that the call itself runs the loaded
program. Once the program is loaded it costs nothing measurable (JAX caches the
lowering and the executable) and releases nothing. Releasing costs ``malloc_trim``
(2-60 ms) and the page faults of what the run would have reused (about 0.1 s of a
2048² estimate's 1.8 s first call), so it is meant for large images only.
"""

from __future__ import annotations

import ctypes

import jax
import jax.monitoring

from jdeconv import _schedule, _validation

__all__ = ["RELEASE_FROM_PIXELS", "compile_then_release", "release_freed_memory"]

# The estimates release the load's freed memory from this many pixels on: the large
# images of jdeconv._schedule (a name of its own, so that a test can lower it alone).
RELEASE_FROM_PIXELS = _schedule.LARGE_PIXELS


def _find_malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


_MALLOC_TRIM = _find_malloc_trim()
# jax.monitoring's event around XLA's compilation, or the persistent cache's load
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def release_freed_memory() -> bool:
    """Return the memory the process has freed to the system (glibc); whether it could.

    Example:
      >>> isinstance(release_freed_memory(), bool)
      True
    """
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def compile_then_release(jitted, *args, **static) -> bool:
    """Compile (or fetch) ``jitted``'s program for these arguments; release freed memory.

    The memory is released only when the program had to be compiled or loaded here
    (a call that runs an already loaded program frees nothing, and releasing would cost
    it the page faults of memory it could have reused: 5-10 % at 2048²).

    Args:
      jitted: a ``jax.jit`` function.
      *args: the arguments of the call that follows (arrays; concrete, not traced: under
        a trace, or with ``jax.disable_jit()``, there is nothing to compile, and this does
        nothing).
      **static: its keyword arguments (static ones included).

    Returns:
      Whether freed memory was released.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = jax.jit(lambda a: 2 * a)
      >>> first = compile_then_release(f, jnp.ones(3))
      >>> compile_then_release(f, jnp.ones(3))  # already loaded: nothing to release
      False
      >>> float(f(jnp.ones(3))[0])
      2.0
    """
    leaves = jax.tree_util.tree_leaves((args, static))
    if (_MALLOC_TRIM is None or jax.config.jax_disable_jit  # the call runs op by op: no program
            or not all(_validation.is_concrete(a) for a in leaves)):
        return False
    loaded = []

    def listen(name, _duration, **_kw):
        if name == _BACKEND_COMPILE_EVENT:  # recorded for a compilation and a cache load
            loaded.append(name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        jitted.lower(*args, **static).compile()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return bool(loaded) and release_freed_memory()
