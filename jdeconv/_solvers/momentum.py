"""Projected heavy-ball momentum (``optax.sgd(1/L, momentum=β)`` + projection)."""

from __future__ import annotations

import optax

DEFAULT_MOMENTUM = 0.9


def make(lipschitz, momentum: float = DEFAULT_MOMENTUM):
    """Returns ``(init, update)``; converges on quadratics for 0 <= β < 1 with step 1/L."""
    opt = optax.sgd(learning_rate=1.0 / lipschitz, momentum=momentum)

    def init(h0):
        return opt.init(h0)

    def update(h, g, state, objective, prox):
        updates, state = opt.update(g, state, h)
        return prox(optax.apply_updates(h, updates)), state

    return init, update
