"""The result of a kernel estimate: the kernel and how the solver got there."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

# Status codes (optimistix-style RESULTS): a solver reports, it does not raise.
SUCCESS = 0
MAX_ITERS_REACHED = 1
NONFINITE = 2
STATUS_MESSAGES = {
    SUCCESS: "converged",
    MAX_ITERS_REACHED: "stopped at max_iters before reaching tol",
    NONFINITE: "non-finite values appeared (data or settings out of range)",
}


@dataclasses.dataclass(frozen=True)
class KernelEstimate:
    """An estimated kernel with its diagonostics (a pytree; batched by leading axis).

    Attributes:
      kernel: the estimate, shape (k, l) (or (B, k, l) from ``estimate_kernels``).
      converged: whether the stopping criterion was met (bool).
      iterations: iterations performed (int).
      loss_history: objective after each iteration, shape (max_iters + 1,);
        entry 0 is the starting point and entries after ``iterations`` are NaN.
      error_history: relative error ``||h - reference|| / ||reference||`` after
        each iteration when a ``reference`` kernel was given, else NaN.
      objective: final objective (data term + regularisation).
      residual_norm: ``||conv2d(x, kernel) - y||`` on the data used.
      kkt_residual: scale-free optimality measure at the solution
        ``||h - P(h - grad/L)|| / max(||h||, tiny)`` (0 at the exact optimum).
      status: 0 converged, 1 stopped at ``max_iters``, 2 non-finite.
      lipschitz: Lipschitz constant of the gradient (``||A||²`` + regularisation),
        the step of first-order solvers is its inverse.
      regularization: mapping name -> weight actually used.
      noise_sigma: noise level estimated from the blurred image when
        ``regularization="auto"`` (else NaN).
      fit_statistic: residual RMS / noise level at the chosen weight when
        ``regularization="auto"``: about 1 when the model fits; well above 1
        flags a wrong kernel size, misaligned images or a non-linear tone curve.
      solver: the solver that ran (``"auto"`` resolved to a concrete name).
      solver_requested: what the caller asked for.
      prior, mode, kernel_shape, max_iters, tol: the settings used.
    """

    kernel: Any
    converged: Any
    iterations: Any
    loss_history: Any
    error_history: Any
    objective: Any
    residual_norm: Any
    kkt_residual: Any
    status: Any
    lipschitz: Any
    regularization: Any
    noise_sigma: Any = None
    fit_statistic: Any = None
    solver: str = "auto"
    solver_requested: str = "auto"
    prior: str = "simplex"
    mode: str = "valid"
    kernel_shape: tuple = ()
    max_iters: int = 0
    tol: float = 0.0

    @property
    def message(self) -> str:
        """Human-readable status (for a single estimate)."""
        codes = np.atleast_1d(np.asarray(self.status))
        return "; ".join(sorted({STATUS_MESSAGES.get(int(c), f"status {int(c)}") for c in codes}))

    def summary(self) -> str:
        """One-line summary: solver, iterations, convergence, residual."""
        it = np.asarray(self.iterations)
        conv = np.asarray(self.converged)
        res = np.asarray(self.residual_norm)
        if it.ndim == 0:
            line = (f"solver={self.solver} (asked: {self.solver_requested}) prior={self.prior} "
                    f"iterations={int(it)} converged={bool(conv)} residual_norm={float(res):.4g} "
                    f"kkt={float(np.asarray(self.kkt_residual)):.2e}")
            weights = {k: float(np.asarray(v)) for k, v in dict(self.regularization or {}).items()}
            used = ", ".join(f"{k}={v:.3g}" for k, v in weights.items() if v > 0)
            if used:
                line += f" regularization: {used}"
            if self.noise_sigma is not None and np.isfinite(np.asarray(self.noise_sigma)).all():
                line += (f" noise_sigma={float(np.asarray(self.noise_sigma)):.3g}"
                         f" fit_statistic={float(np.asarray(self.fit_statistic)):.3g}")
            return line
        return (f"solver={self.solver} (asked: {self.solver_requested}) prior={self.prior} "
                f"batch={it.shape[0]} converged={int(conv.sum())}/{conv.size} "
                f"iterations median={int(np.median(it))} max={int(it.max())}")


jax.tree_util.register_dataclass(
    KernelEstimate,
    data_fields=["kernel", "converged", "iterations", "loss_history", "error_history", "objective",
                 "residual_norm", "kkt_residual", "status", "lipschitz", "regularization", "noise_sigma", "fit_statistic"],
    meta_fields=["solver", "solver_requested", "prior", "mode", "kernel_shape",
                 "max_iters", "tol"])
