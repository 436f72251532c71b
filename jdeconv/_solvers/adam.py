"""Projected Adam (``optax.adam`` with a decaying step + projection).

Included so users can compare the deep-learning default with methods made for
this problem. Adam's steps are per-coordinate and of size about the learning
rate, so the rate is set from the kernel's scale (``1/n`` for n taps, the mean
tap of a unit-sum kernel) and decays geometrically so the iterates settle.
"""

from __future__ import annotations

import optax

from jdeconv._solvers import _driver

DEFAULT_RATE = 20.0  # initial rate, in units of the mean tap 1/n


DEFAULT_DECAY = 0.6


def make(n_taps: int, max_iters: int, *, learning_rate: float = DEFAULT_RATE,
         decay_rate: float = DEFAULT_DECAY):
    """Returns ``(init, update)`` for projected Adam.

    Args:
      n_taps: number of kernel taps (the rate is in units of the mean tap ``1/n``).
      max_iters: iteration budget (the rate decays by ``decay_rate`` every tenth of it).
      learning_rate: initial rate in units of ``1/n`` (``solver_options``).
      decay_rate: factor per tenth of the budget (``solver_options``).
    """
    transition = max(max_iters // 10, 1)
    schedule = optax.exponential_decay(learning_rate / n_taps, transition_steps=transition,
                                       decay_rate=decay_rate,
                                       end_value=1e-7 * learning_rate / n_taps)
    return _driver.projected(optax.adam(learning_rate=schedule))
