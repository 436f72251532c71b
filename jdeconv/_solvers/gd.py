"""Projected gradient descent with step 1/L (``optax.sgd`` + projection).

The method of the original question's accepted answer, with the step taken
from the operator (``1/L``, ``L = ||X||²`` + regularisation) rather than
copied from a script: a fixed step that is stable on one scene diverges on
another.
"""

from __future__ import annotations

import optax

from jdeconv._solvers import _driver


def make(lipschitz):
    """Returns ``(init, update)`` for gradient descent with step ``1/lipschitz``."""
    return _driver.projected(optax.sgd(learning_rate=1.0 / lipschitz))
