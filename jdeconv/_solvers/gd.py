"""Projected gradient descent with step 1/L (``optax.sgd`` + projection).

The method of the original question's accepted answer, with the step taken
from the operator (``1/L``, ``L = ||X||²`` + regularisation) rather than
copied from a script: a fixed step that is stable on one scene diverges on
another.
"""

from __future__ import annotations

import optax


def make(lipschitz):
    """Returns ``(init, update)`` for gradient descent with step ``1/lipschitz``."""
    opt = optax.sgd(learning_rate=1.0 / lipschitz)

    def init(h0):
        return opt.init(h0)

    def update(h, g, state, objective, prox):
        updates, state = opt.update(g, state, h)
        return prox(optax.apply_updates(h, updates)), state

    return init, update
