"""A normal matrix plus a weighted grid stencil, ``G + mu (a I + b DᵀD)``, unformed.

:class:`ShiftedGram` stands for ``G + mu R`` where ``R = a I + b DᵀD`` is the
quadratic regulariser of :func:`jdeconv._regularizers.traced_quadratic` (``D``
the first differences of the ``k × l`` kernel grid). The exact solver
(:func:`jdeconv._solvers.exact.solve_qp`) accepts it in place of a matrix: it
reads blocks of the free taps and matrix-vector products, and ``R``'s part of
both comes from the stencil (``O(s²)`` and ``O(n)``), so the ``n × n`` sum is
never written. ``"auto"`` solves 26 weights on one ``G``, and forming each
weight's ``G + mu R`` was a pass over three ``n × n`` arrays per weight
(0.4 ms at 31 × 31).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["ShiftedGram", "block", "dense", "matvec", "rows_matvec", "stencil_matvec"]


@jax.tree_util.register_pytree_node_class
class ShiftedGram:
    """``G + mu (a I + b DᵀD)`` on a ``kernel_shape`` grid (a pytree; the shape is static).

    Attributes:
      G: (n, n) the normal matrix, ``n = k l``.
      mu, a, b: scalars (traced or Python numbers).
      kernel_shape: (k, l).
    """

    def __init__(self, G, mu, a, b, kernel_shape):
        self.G, self.mu, self.a, self.b = G, mu, a, b
        self.kernel_shape = tuple(int(v) for v in kernel_shape)

    def tree_flatten(self):
        return (self.G, self.mu, self.a, self.b), self.kernel_shape

    @classmethod
    def tree_unflatten(cls, kernel_shape, children):
        return cls(*children, kernel_shape)

    @property
    def dtype(self):
        return self.G.dtype

    @property
    def shape(self):
        return self.G.shape


def _stencil_entries(rows, cols, a, b, kernel_shape, dtype):
    """``R[rows[:, None], cols[None, :]]`` of ``R = a I + b DᵀD``, from index arithmetic."""
    k, l = kernel_shape
    i, j = rows // l, rows % l
    deg = ((i > 0).astype(dtype) + (i < k - 1) + (j > 0) + (j < l - 1))[:, None]
    d = cols[None, :] - rows[:, None]
    jr = j[:, None]
    near = ((d == 1) & (jr < l - 1)) | ((d == -1) & (jr > 0)) | (d == l) | (d == -l)
    return jnp.where(d == 0, a + b * deg, jnp.where(near, -b, jnp.zeros((), dtype)))


def stencil_matvec(h, a, b, kernel_shape):
    """``(a I + b DᵀD) h`` for ``h`` (n,) on the kernel grid."""
    k, l = kernel_shape
    v = h.reshape(k, l)
    dr, dc = v[1:] - v[:-1], v[:, 1:] - v[:, :-1]  # D v
    z_r, z_c = jnp.zeros((1, l), h.dtype), jnp.zeros((k, 1), h.dtype)
    dtd = (jnp.concatenate([z_r, dr]) - jnp.concatenate([dr, z_r])
           + jnp.concatenate([z_c, dc], axis=1) - jnp.concatenate([dc, z_c], axis=1))
    return (a * v + b * dtd).reshape(-1)


def matvec(G, h, precision=None):
    """``G h`` for a matrix or a :class:`ShiftedGram`."""
    if isinstance(G, ShiftedGram):
        return (jnp.matmul(G.G, h, precision=precision)
                + G.mu * stencil_matvec(h, G.a, G.b, G.kernel_shape))
    return jnp.matmul(G, h, precision=precision)


def block(G, idx):
    """``G[idx[:, None], idx[None, :]]`` (s, s) for a matrix or a :class:`ShiftedGram`."""
    if isinstance(G, ShiftedGram):
        return (G.G[idx[:, None], idx[None, :]]
                + G.mu * _stencil_entries(idx, idx, G.a, G.b, G.kernel_shape, G.dtype))
    return G[idx[:, None], idx[None, :]]


def rows_matvec(G, hs, idx, h, precision=None):
    """``G h`` for ``h`` (n,) zero off ``idx`` (s,), with ``hs = h[idx]``: from the
    ``s`` gathered rows of ``G`` (symmetric), and ``R h`` by its stencil."""
    if isinstance(G, ShiftedGram):
        return (jnp.matmul(hs, G.G[idx], precision=precision)
                + G.mu * stencil_matvec(h, G.a, G.b, G.kernel_shape))
    return jnp.matmul(hs, G[idx], precision=precision)


def dense(G):
    """The (n, n) matrix."""
    if isinstance(G, ShiftedGram):
        n = G.G.shape[-1]
        t = jnp.arange(n)
        return G.G + G.mu * _stencil_entries(t, t, G.a, G.b, G.kernel_shape, G.dtype)
    return G
