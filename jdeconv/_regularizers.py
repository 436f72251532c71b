"""Regularisers of the kernel: Tikhonov, smoothness (quadratic) and l1 (prox).

Weights are *relative*: a weight w on a term R(h) contributes
``w * s * R(h)`` with ``s = trace(X^T X) / (k l)``, the mean diagonal of the
normal matrix (the energy of the image under one kernel tap). The same weight
therefore means the same on any image size, brightness or kernel size.

* ``"tikhonov"``: ``½ ||h||²``.
* ``"smooth"``: ``½ ||∇h||²`` — squared differences between 4-neighbour taps
  inside the kernel window (a graph Laplacian, no boundary condition).
* ``"l1"``: ``||h||_1`` (sparsity), applied by its proximal operator
  (soft-thresholding). With the nonneg prior it is linear (``sum h``), with
  the simplex prior it is constant (``= 1``) and has no effect.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jdeconv import _names, _validation

REGULARIZERS = _names.REGULARIZERS


def check_regularization(regularization) -> dict[str, float]:
    """Validates ``None`` / ``{"smooth": 1e-3, ...}``; returns a full dict of floats.

    The string ``"auto"`` is handled by :mod:`jdeconv._autoreg`, not here.
    """
    weights = {name: 0.0 for name in REGULARIZERS}
    if regularization is None:
        return weights
    if not isinstance(regularization, dict):
        raise TypeError(
            "regularization must be None, 'auto' or a mapping like {'smooth': 1e-3}; got "
            f"{regularization!r}.")
    for name, w in regularization.items():
        _validation.check_choice("regularizer", name, REGULARIZERS)
        if not _validation.is_concrete(w):  # a traced weight (jax.grad w.r.t. the weight)
            weights[name] = w
            continue
        if isinstance(w, jax.Array) and w.ndim == 0:
            w = w.item()
        try:
            w = float(w)
        except (TypeError, ValueError) as e:
            raise TypeError(f"regularization weight for {name!r} must be a number, got {w!r}.") from e
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"regularization weight for {name!r} must be finite and >= 0, got {w}.")
        weights[name] = w
    return weights


def laplacian(kernel_shape) -> np.ndarray:
    """``D^T D`` for forward differences on the (k, l) kernel grid, (kl, kl)."""
    k, l = kernel_shape
    n = k * l
    idx = np.arange(n).reshape(k, l)
    L = np.zeros((n, n))
    pairs = [(idx[:-1, :].ravel(), idx[1:, :].ravel()), (idx[:, :-1].ravel(), idx[:, 1:].ravel())]
    for a, b in pairs:
        np.add.at(L, (a, a), 1.0)
        np.add.at(L, (b, b), 1.0)
        np.add.at(L, (a, b), -1.0)
        np.add.at(L, (b, a), -1.0)
    return L


def quadratic_matrix(weights: dict, scale, kernel_shape, dtype) -> jax.Array:
    """``s (w_tik I + w_smooth D^T D)``, the quadratic regularisation, (kl, kl)."""
    return scale * traced_quadratic(kernel_shape, weights["tikhonov"], weights["smooth"], dtype)


def traced_quadratic(kernel_shape, w_tik, w_smooth, dtype) -> jax.Array:
    """``w_tik I + w_smooth D^T D`` (kl, kl), built inside the program from index grids.

    Equal to ``w_tik * eye + w_smooth * laplacian(kernel_shape)``, but never a
    literal: a (kl)² constant (7 MB at 31 x 31) would be embedded in the program
    text and cost compile time and memory.
    """
    dtype = jnp.dtype(dtype)
    return _traced_quadratic(jnp.asarray(w_tik, dtype), jnp.asarray(w_smooth, dtype),
                             kernel_shape=tuple(int(v) for v in kernel_shape))


@functools.partial(jax.jit, static_argnames="kernel_shape")
def _traced_quadratic(w_tik, w_smooth, *, kernel_shape):  # one program, not one per op
    dtype = w_tik.dtype
    k, l = kernel_shape
    n = k * l
    i = jnp.arange(n, dtype=jnp.int32) // l
    j = jnp.arange(n, dtype=jnp.int32) % l
    dist = jnp.abs(i[:, None] - i[None, :]) + jnp.abs(j[:, None] - j[None, :])
    degree = ((i > 0).astype(dtype) + (i < k - 1) + (j > 0) + (j < l - 1))
    same = dist == 0
    return jnp.where(same, w_tik + w_smooth * degree[:, None],
                     jnp.where(dist == 1, -w_smooth, jnp.zeros((), dtype)))


def soft_threshold(v: jax.Array, t) -> jax.Array:
    """Proximal operator of ``t ||.||_1``."""
    return jnp.sign(v) * jnp.maximum(jnp.abs(v) - t, 0.0)
