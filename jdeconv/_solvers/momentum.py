"""Projected heavy-ball momentum (``optax.sgd(1/L, momentum=β)`` + projection)."""

from __future__ import annotations

import optax

from jdeconv._solvers import _driver

DEFAULT_MOMENTUM = 0.9


def make(lipschitz, *, momentum: float = DEFAULT_MOMENTUM):
    """Returns ``(init, update)``; converges on quadratics for 0 <= β < 1 with step 1/L.

    Args:
      lipschitz: L, the step is 1/L.
      momentum: β (``solver_options={"momentum": β}``).
    """
    return _driver.projected(optax.sgd(learning_rate=1.0 / lipschitz, momentum=momentum))
