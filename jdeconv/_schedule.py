"""Where XLA keeps a buffer and when it computes it (memory of large images).

XLA fuses a cheap producer into each of its consumers and schedules
independent work in any order. For image-size buffers both can cost memory: a
slice of an image-size FFT fused into consumers that run through a whole solve
keeps the FFT alive as long, and independent image-size steps scheduled side by
side are alive at once. ``lax.optimization_barrier`` changed neither when tried
on the CPU (jax 0.10.2); a conditional does both: its operand is always
materialised, and whatever reads its result waits for its predicate.
Both helpers return their argument's value unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["LARGE_PIXELS", "after", "materialize"]

# Images of at least this many pixels are "large": there a buffer the size of the
# image matters more than recomputing a step that could be shared.
LARGE_PIXELS = 1 << 20


def _first(a):
    return jnp.ravel(a)[0]


def materialize(a):
    """``a``, computed once into a buffer of its own (not fused into its consumers).

    Example:
      >>> import jax.numpy as jnp
      >>> float(materialize(jnp.arange(4.0))[3])
      3.0
    """
    return jax.lax.cond(jnp.isnan(_first(a)), lambda a: a + 0, lambda a: a, a)


def after(a, dep):
    """``a``, for consumers that must run only once ``dep`` has been computed.

    Args:
      a: a float array.
      dep: any float array.

    Returns:
      ``a`` (the same values), depending on ``dep`` in the program.

    Example:
      >>> import jax.numpy as jnp
      >>> float(after(jnp.ones(3), jnp.zeros(2)).sum())
      3.0
    """
    return jax.lax.cond(jnp.isnan(_first(dep)), lambda a: a + 0, lambda a: a, a)
