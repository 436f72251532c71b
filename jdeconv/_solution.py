"""The result of an estimate, shaped as optimistix shapes a solution.

A solve reports; it raises only when asked (``throw=True``). Its outcome is a
:class:`RESULTS` code whose entries carry their messages; one optimality
measure decides convergence and is the one reported; solver-specific numbers
live in ``stats``.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class RESULTS(enum.IntEnum):
    """How a solve ended. The value is the code stored in ``KernelEstimate.result``.

    Example:
      >>> from jdeconv import RESULTS
      >>> RESULTS.max_steps_reached.message
      'stopped at max_iters before reaching tol; raise max_iters or loosen tol'
    """

    successful = 0
    max_steps_reached = 1
    nonfinite = 2

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @classmethod
    def where(cls, converged, finite):
        """The code (int32 array) from traced ``converged`` and ``finite`` flags."""
        return jnp.where(~finite, cls.nonfinite,
                         jnp.where(converged, cls.successful, cls.max_steps_reached)
                         ).astype(jnp.int32)


_MESSAGES = {
    RESULTS.successful: "converged",
    RESULTS.max_steps_reached: "stopped at max_iters before reaching tol; raise max_iters or "
                               "loosen tol",
    RESULTS.nonfinite: "non-finite values appeared (the data or the settings are out of range: "
                       "check the images' scale, or add regularization)",
}


class EstimateError(RuntimeError):
    """Raised by ``estimate_kernel(..., throw=True)`` when a solve did not succeed."""


class _Outcome:
    """What a result with ``result`` codes and ``iterations`` says of its outcome (a mixin)."""

    @property
    def converged(self):
        """Whether it succeeded (``result == RESULTS.successful``), a bool array."""
        return jnp.asarray(self.result) == RESULTS.successful

    @property
    def message(self) -> str:
        """Human-readable outcome (the distinct messages of a batch, joined)."""
        codes = np.atleast_1d(np.asarray(self.result))
        return "; ".join(RESULTS(int(c)).message for c in sorted(set(codes.tolist())))

    def _outcome(self) -> str:
        """``iterations=N converged=B``; for a batch, its size, how many converged, iterations."""
        it = np.asarray(self.iterations)
        conv = np.asarray(self.converged)
        if conv.ndim == 0:
            return f"iterations={int(it)} converged={bool(conv)}"
        return (f"batch={conv.size} converged={int(conv.sum())}/{conv.size} "
                f"iterations median={int(np.median(it))} max={int(it.max())}")


@dataclasses.dataclass(frozen=True)
class KernelEstimate(_Outcome):
    """An estimated kernel and how it was reached (a pytree; batched by a leading axis).

    Attributes:
      kernel: the estimate, (k, l) (or (B, k, l) from ``estimate_kernels``).
      result: the :class:`RESULTS` code as an int32 array (``RESULTS(int(est.result))``).
      optimality: the scale-free optimality measure that decided convergence:
        ``max|h − P(h − ∇q(h)/L)| / max(max|h|, max|b|/L)`` with ``P`` the
        projection on the prior (0 at the exact optimum); ``converged`` means
        ``optimality <= tol``.
      iterations: iterations performed (active-set iterations for ``exact``).
      loss_history: objective after each iteration, (max_iters + 1,); entry 0
        is the starting point, entries after ``iterations`` are NaN.
      error_history: ``||h − reference|| / ||reference||`` per iteration when a
        ``reference`` kernel was given, else NaN.
      objective: final objective (data term + regularisation).
      residual_norm: ``||conv2d(x, kernel) − y||`` on the fitted pixels.
      lipschitz: Lipschitz constant ``L`` of the gradient (first-order step 1/L;
        the exact solver reports Gershgorin's bound, the matrix-free path the
        final, possibly backtracked, ``L``).
      regularization: mapping name -> weight used.
      noise_sigma: noise level of the blurred image (NaN when not estimated).
      fit_statistic: residual RMS / noise level (≈ 1 when the model fits;
        NaN when the noise level was not estimated).
      gain: the fitted gain ``g`` of ``y ≈ g·(h∗x) + background`` (1 unless
        ``gain=True``).
      background: the fitted background coefficients (empty unless a
        ``background`` model was asked for; Legendre basis of the pixel
        coordinates scaled to [-1, 1], so a constant background is ``[b]``).
      stats: solver-specific numbers (for ``exact``: ``active_taps``,
        ``optimality_history``; for first-order solvers: ``step``).
      solver: the solver that ran (``"auto"`` resolved).
      solver_requested: what the caller asked for.
      prior, mode, kernel_shape, max_iters, tol: the settings used.
      solver_options: the solver's hyperparameters, as used.
      background_model, loss, orientation: the data-term settings used.
    """

    kernel: Any
    result: Any
    optimality: Any
    iterations: Any
    loss_history: Any
    error_history: Any
    objective: Any
    residual_norm: Any
    lipschitz: Any
    regularization: Any
    noise_sigma: Any
    fit_statistic: Any
    stats: Any
    gain: Any = 1.0
    background: Any = ()
    solver: str = "auto"
    solver_requested: str = "auto"
    prior: str = "simplex"
    mode: str = "valid"
    kernel_shape: tuple = ()
    max_iters: int = 0
    tol: float = 0.0
    solver_options: tuple = ()
    background_model: str = "none"
    loss: str = "l2"
    orientation: str = "convolution"

    def summary(self) -> str:
        """One-line summary: solver, iterations, outcome, residual, diagnostics."""
        head = (f"solver={self.solver} (asked: {self.solver_requested}) prior={self.prior} "
                f"{self._outcome()}")
        if np.ndim(self.result) == 0:
            line = (f"{head} residual_norm={float(np.asarray(self.residual_norm)):.4g} "
                    f"optimality={float(np.asarray(self.optimality)):.2e}")
            if self.background_model != "none" or float(np.asarray(self.gain)) != 1.0:
                bg = np.atleast_1d(np.asarray(self.background, np.float64))
                line += (f" gain={float(np.asarray(self.gain)):.6g} background="
                         f"[{', '.join(f'{v:.4g}' for v in bg)}]")
            weights = {k: float(np.asarray(v)) for k, v in dict(self.regularization or {}).items()}
            used = ", ".join(f"{k}={v:.3g}" for k, v in weights.items() if v > 0)
            if used:
                line += f" regularization: {used}"
            sigma = np.asarray(self.noise_sigma)
            if np.isfinite(sigma).all():
                line += (f" noise_sigma={float(sigma):.3g}"
                         f" fit_statistic={float(np.asarray(self.fit_statistic)):.3g}")
            return line
        return head


jax.tree_util.register_dataclass(
    KernelEstimate,
    data_fields=["kernel", "result", "optimality", "iterations", "loss_history", "error_history",
                 "objective", "residual_norm", "lipschitz", "regularization", "noise_sigma",
                 "fit_statistic", "stats", "gain", "background"],
    meta_fields=["solver", "solver_requested", "prior", "mode", "kernel_shape", "max_iters",
                 "tol", "solver_options", "background_model", "loss", "orientation"])
