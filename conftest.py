"""Strict settings for every test and doctest (lineax/optimistix style).

64-bit floats (float32 is still tested explicitly), rank promotion raises
(``a[:, None] * b`` must be written out), and warnings raised from jdeconv are
errors (set in pyproject's ``filterwarnings``). Hypothesis runs without a
deadline: the first call of a new shape compiles.
"""

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile(
    "jdeconv", deadline=None, print_blob=True, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("jdeconv")
