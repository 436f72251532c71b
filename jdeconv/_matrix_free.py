"""Matrix-free kernel estimation: FFT convolutions, ``jax.grad``, optax steps, projections.

Every other solver works on the ``(k l) x (k l)`` normal matrix, which for a
129 x 129 kernel (16 641 taps) is 2.2 GB. Here the data term is evaluated with
FFT convolutions of the image, so memory is O(image) and one iteration costs
two FFT products (four real FFTs of the image frame), whatever the kernel size.
The same path carries the data terms that have no normal equations: Huber and
the Poisson likelihood.

Model (valid geometry of the padded original ``xp``, see :mod:`jdeconv._geometry`)::

    z = A h = valid_conv(xp, h)          # (M, N), M = m - k + 1, N = n - l + 1

Objective (``w`` the pixel weights, 1 when none; ``s`` the regulariser scale)::

    F(h) = D(A h) + s (w_tik ½||h||² + w_smooth ½||∇h||²) + s w_l1 ||h||₁,   h in the prior

with the data term ``D`` one of

* ``"l2"``: ``½ Σ w (z − y)²``.
* ``"huber"``: ``Σ ρ_δ(√w (z − y))``, ``ρ_δ(r) = r²/2`` for ``|r| <= δ`` and
  ``δ|r| − δ²/2`` beyond. ``δ`` is ``loss_options["delta"]`` (in units of the
  whitened residual) or, by default, ``1.345 σ̂`` with ``σ̂`` the robust scale
  (:func:`jdeconv._weighted_gram.robust_scale`, 1.4826 MAD) of the residual:
  first of the initial kernel's, then re-estimated after each of
  ``loss_options["rounds"]`` (3) warm-up rounds of at most
  ``loss_options["warmup"]`` (100) Huber FISTA iterations; the last round's
  kernel starts the final solve. (The first ``δ`` is large, so the first round
  is close to least squares; the re-estimates bring ``δ`` to the noise level,
  as the engine's reweighted exact solves do.)
* ``"poisson"``: the negative log-likelihood of counts ``y`` given the model
  ``λ = A h + b`` (``b = loss_options["background"]``, counts, default 0),
  with read noise ``σ_r = loss_options["read_noise"]`` (counts, default 0)
  by the usual shifted-Poisson approximation of "Poisson + Gaussian read
  noise" (as in difference-imaging codes): ``y + σ_r² ~ Poisson(λ + σ_r²)``.
  With ``c = max(y + σ_r², 0)`` and ``μ = λ + σ_r²``::

      D = Σ w [μ − c − c log(μ / c)]          (half the Poisson deviance, 0 log 0 = 0)

  which differs from ``−log p(y | λ)`` by a constant. Below the floor
  ``μ < ε`` (``loss_options["floor"]``, default ``1e-6`` times the mean of
  ``c`` over the used pixels) ``μ − c log μ`` is continued by its second-order
  Taylor polynomial at ``ε``, so ``D`` stays convex, finite and differentiable
  for every kernel (the extrapolated FISTA point may leave the positive
  region). Here ``w`` multiplies each pixel's term (0 = masked); it is not an
  inverse variance.

Gradient: ``∇F = Aᵀ ∇D(z) + ∇R(h)``, computed by ``jax.grad`` of ``D`` in the
model image and the transpose of the FFT convolution (``jax.linear_transpose``
of the forward map; the chain rule of ``jax.grad(D ∘ A)``, which the tests
check against :func:`jdeconv.data_loss_grad`). The FFT of ``xp`` (at a 5-smooth
frame of ``xp``'s shape, no wrap-around reaches the valid window) is taken
once per solve.

Step sizes: for ``l2`` and ``huber`` (``ρ'' <= 1``), ``L`` is the largest
eigenvalue of ``Q AᵀWA Q`` by 30 Lanczos steps with FFTs (the power method's
Krylov space; its top Ritz value is exact to ~1e-5 where the 30th power
iterate is still 5 % low), enlarged by 2 %, plus the regularisers'
``s w_tik + 8 s w_smooth`` (8 bounds the grid Laplacian). ``Q`` restricts to
the directions the iterates move in: the support and, with a sum constraint
(``simplex``, ``sum_to_one``), the hyperplane ``Σ h = 1``. Without it the
all-ones direction (``λ ≈ n mean(x)² #y``) would set the step, ``~3 k l`` times
too small (on a 129 x 129 kernel FISTA would barely move in 200 iterations;
with it a noise target converges in about 10). ``s = trace(AᵀWA)/(k l)``, the
weighted mean over the taps of ``Σ x²`` over their window (a box sum of
``xp²``; for ``poisson`` divided by the mean of ``c``, the Fisher
information's scale), as the engine's ``trace(G)/n``.

The Poisson likelihood has no global Lipschitz constant. ``fista``, ``gd`` and
``momentum`` then *backtrack*: ``L`` starts from the curvature at the starting
point (``Q Aᵀ diag(w c / μ₀²) A Q``, the start being a flat kernel of the
data's flux); each iteration first tries ``0.9 L`` and doubles it until the
step satisfies the descent condition
``D(h⁺) <= D(p) + <∇D(p), h⁺ − p> + L/2 ||h⁺ − p||²`` (``p`` the point the
gradient was taken at); each failed trial costs one forward convolution.
FISTA's momentum factor is capped so that the extrapolated model stays at
least half the current one wherever counts were seen (the likelihood's
curvature ``c/μ²`` there grows at most 4x). ``adam`` takes its own decaying
rate (no ``L``). The optimality measure keeps the starting ``L`` as its fixed
scale (a measure taken with a backtracked, possibly huge ``L`` would read as
converged).
Iterations: ``optax.sgd(1/L)`` (FISTA's gradient step, with O'Donoghue–Candès
restart as in :mod:`jdeconv._solvers.fista`), ``optax.sgd(1/L, momentum=β)``
(heavy ball), plain ``optax.sgd(1/L)`` (``gd``) or the projected Adam of
:mod:`jdeconv._solvers.adam`; each step is followed by the prior's projection
(:func:`jdeconv._priors.project_prior`, with the l1 prox as the engine applies
it). FISTA tracks ``A h`` and obtains ``A y`` of the extrapolated point by
linearity, so it too needs one forward and one adjoint per iteration.

Stopping: the optimality measure of every solver
(:func:`jdeconv._objective.optimality`) at the returned kernel is at most
``tol``. FISTA evaluates its gradient at the extrapolated point ``y``; when the
measure there falls below ``tol`` the momentum is reset so that the next
iteration measures at the iterate itself, and it stops only on that exact
measure. The reported ``optimality`` is always the measure at the returned
kernel (``bmax``, its scale, is ``max|AᵀWy|`` on the support; for ``poisson``
``max|AᵀWc| / mean(c)``).

Users reach this path through :func:`jdeconv.estimate_kernel`: a first-order
solver above 4096 taps, ``loss="poisson"``, ``loss="huber"`` with a first-order
solver, or ``solver_options={"matrix_free": True}``.

Example (a few hot pixels: least squares is pulled away, Huber is not):
  >>> import jax.numpy as jnp, jdeconv
  >>> x = jdeconv.data.noise_target((64, 64), seed=1)
  >>> h = jdeconv.data.gaussian_kernel(7, 1.0)
  >>> y = jdeconv.conv2d(x, h).at[::9, ::7].add(3.0)
  >>> est = jdeconv.estimate_kernel(x, y, 7, loss="huber", solver="fista", max_iters=3000)
  >>> bool(est.converged), float(jnp.abs(est.kernel - h).max()) < 1e-6
  (True, True)
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jdeconv import (_conv, _names, _objective, _priors, _progress, _regularizers, _validation,
                     _weighted_gram)
from jdeconv._solution import RESULTS
from jdeconv._solvers import _driver, adam
from jdeconv._solvers.options import check_loss_options, check_solver_options  # noqa: F401

LOSSES: tuple[str, ...] = ("l2", "huber", "poisson")
SOLVERS: tuple[str, ...] = ("fista", "momentum", "gd", "adam")

POWER_ITERS = 30
LIPSCHITZ_MARGIN = 1.02
BACKTRACK_FACTOR = 2.0
BACKTRACK_DECREASE = 0.9
MAX_BACKTRACKS = 60
DEFAULT_FLOOR = 1e-6
DOMAIN_FRACTION = 0.5
DEFAULT_MAX_ITERS = 5000
DEFAULT_TOL = {"float64": 1e-10, "float32": 1e-6}


class MatrixFreeOutput(NamedTuple):
    """What :func:`solve_matrix_free` returns (mirrors ``_solvers._driver.SolverOutput``).

    Attributes:
      h: (k l,) the flattened kernel (row-major).
      result: int32 :class:`jdeconv.RESULTS` code.
      optimality: the optimality measure at ``h``.
      iterations: iterations of the main loop (the Huber warm-up not counted).
      loss_history: (max_iters + 1,) objective after each iteration (entry 0: the
        starting point; NaN after ``iterations``).
      error_history: (max_iters + 1,) ``||h − reference|| / ||reference||`` (NaN
        without a reference).
      lipschitz: the final ``L`` (the step is ``1/L``; grown by backtracking for
        ``poisson``).
      objective: ``F(h)``, data term + regularisation.
      stats: ``scale`` (the regulariser scale ``s``), ``delta`` (Huber's δ, NaN
        otherwise), ``backtracks`` (failed trial steps), ``warmup_iterations``.
    """

    h: jax.Array
    result: jax.Array
    optimality: jax.Array
    iterations: jax.Array
    loss_history: jax.Array
    error_history: jax.Array
    lipschitz: jax.Array
    objective: jax.Array
    stats: dict

    @property
    def L(self):
        """Alias of ``lipschitz``."""
        return self.lipschitz


# ----------------------------------------------------------------------------
# Operators (traced)
# ----------------------------------------------------------------------------

def fft_operator(xp, kernel_shape):
    """``(A, Aᵀ)``: valid convolution with ``xp`` and its transpose, reusing one FFT of ``xp``.

    ``A h = valid_conv(xp, h)``; the frame is the 5-smooth size at least
    ``xp.shape``: the circular convolution wraps only into rows/columns below
    ``k − 1``/``l − 1``, which the valid window drops. ``Aᵀ`` is
    ``jax.linear_transpose`` of ``A`` (one FFT product as well).
    """
    (m, n), (k, l) = xp.shape, kernel_shape
    frame = (_conv.fast_len(m), _conv.fast_len(n))
    xf = jnp.fft.rfft2(xp, s=frame)

    def forward(h):
        z = jnp.fft.irfft2(jnp.fft.rfft2(h, s=frame) * xf, s=frame)
        return z[k - 1:m, l - 1:n].astype(xp.dtype)

    transpose = jax.linear_transpose(forward, jax.ShapeDtypeStruct(kernel_shape, xp.dtype))
    return forward, lambda r: transpose(r)[0]


def box_sum(a, kernel_shape):
    """Valid ``k x l`` box sums of a 2-D array (integral image), shape ``(m-k+1, n-l+1)``."""
    k, l = kernel_shape
    c = jnp.pad(jnp.cumsum(jnp.cumsum(a, axis=0), axis=1), ((1, 0), (1, 0)))
    return c[k:, l:] - c[:-k, l:] - c[k:, :-l] + c[:-k, :-l]


def _regularizer(h, w_tik, w_smooth, s):
    dr = h[1:, :] - h[:-1, :]
    dc = h[:, 1:] - h[:, :-1]
    return 0.5 * s * (w_tik * jnp.vdot(h, h) + w_smooth * (jnp.vdot(dr, dr) + jnp.vdot(dc, dc)))


def _huber(r, delta):
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r * r, delta * a - 0.5 * delta * delta)


def _poisson_terms(mu, c, eps):
    """Per pixel ``μ − c − c log(μ/c)``; below ``ε`` its 2nd-order Taylor continuation."""
    ok = mu >= eps
    above = mu - c * jnp.log(jnp.where(ok, mu, eps))  # (where, not maximum: exact gradient at ε)
    d = mu - eps
    below = (eps - c * jnp.log(eps)) + (1.0 - c / eps) * d + 0.5 * (c / (eps * eps)) * d * d
    c_log_c = jnp.where(c > 0, c * jnp.log(jnp.where(c > 0, c, 1.0)), 0.0)
    return jnp.where(ok, above, below) - (c - c_log_c)


def _restriction(support, kernel_shape, equality):
    """``Q``: the orthogonal projection on the directions the iterates move in.

    Taps outside the support never move, and with a sum constraint the iterates
    stay on the hyperplane ``Σ h = 1``: the gradient's component along ``1``
    is removed by the projection (the simplex and hyperplane projections are
    shift-invariant). The step therefore only needs ``λ_max(Q H Q)``, which for
    an image with a mean is far below ``λ_max(H)`` (whose top eigenvector is
    nearly the all-ones kernel, ``λ ≈ n mean(x)² #y``): on a 129 x 129 kernel
    the full ``L`` would slow the iterations by the factor ``~ 3 n``.
    """
    mask = jnp.ones(kernel_shape, bool) if support is None else support

    def restrict(v):
        if equality:
            count = jnp.sum(mask)
            v = v - jnp.sum(jnp.where(mask, v, 0.0)) / count
        return jnp.where(mask, v, 0.0)

    return restrict


def _power_lipschitz(forward, transpose, d, kernel_shape, dtype, restrict, iters=POWER_ITERS):
    """``1.02 λ_max(Q Aᵀ diag(d) A Q)`` (``d >= 0`` an image, ``Q`` the restriction).

    ``iters`` Lanczos steps with full reorthogonalisation (the power method's
    Krylov space, used better: on a 129 x 129 kernel the power method's 30th
    Rayleigh quotient is still 5 % low, Lanczos' top Ritz value is exact to
    1e-6). The Ritz value never exceeds ``λ_max``; it is enlarged by 2 %.
    Memory ``iters x k l``.
    """
    n = kernel_shape[0] * kernel_shape[1]
    tiny = jnp.finfo(dtype).tiny
    noise = jax.random.normal(jax.random.PRNGKey(0), kernel_shape, dtype)
    v0 = restrict(jnp.ones(kernel_shape, dtype) / math.sqrt(n) + noise / jnp.linalg.norm(noise))
    v0 = (v0 / jnp.maximum(jnp.linalg.norm(v0), tiny)).ravel()

    def op(v):
        return restrict(transpose(d * forward(v.reshape(kernel_shape)))).ravel()

    def body(j, carry):
        V, alpha, beta = carry
        v = V[j]
        w = op(v)
        a = jnp.vdot(w, v)
        w = w - a * v - jnp.where(j > 0, beta[j - 1], 0.0) * V[j - 1]
        w = w - V.T @ (V @ w)  # full reorthogonalisation (rows after j are zero)
        b = jnp.linalg.norm(w)
        ok = b > 1e-12 * jnp.maximum(jnp.abs(a), tiny)  # an invariant subspace ends the run
        V = V.at[j + 1].set(jnp.where(ok, w / jnp.where(ok, b, 1.0), 0.0))
        return V, alpha.at[j].set(a), beta.at[j].set(jnp.where(ok, b, 0.0))

    V = jnp.zeros((iters + 1, n), dtype).at[0].set(v0)
    _, alpha, beta = lax.fori_loop(0, iters, body, (V, jnp.zeros((iters,), dtype),
                                                    jnp.zeros((iters,), dtype)))
    T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    return LIPSCHITZ_MARGIN * jnp.linalg.eigvalsh(T)[-1]


def _prox_factory(prior, support, l1, kernel_shape):
    """``prox(v, L)`` on flat kernels: the prior's projection with the l1 prox of step 1/L."""

    def prox(v, L):
        h = v.reshape(kernel_shape)
        if prior == "none":
            h = _regularizers.soft_threshold(h, l1 / L)
        elif prior == "nonneg":
            h = h - l1 / L
        return _priors.project_prior(h, prior, support).ravel()

    return prox


# ----------------------------------------------------------------------------
# The loop (traced)
# ----------------------------------------------------------------------------

class _State(NamedTuple):
    h: jax.Array       # feasible iterate (flat)
    zh: jax.Array      # A h
    y: jax.Array       # point where the gradient was taken (FISTA's extrapolation; else h)
    zy: jax.Array      # A y
    gy: jax.Array      # its gradient
    opt_state: Any
    t: jax.Array
    clean: jax.Array   # y == h: kkt is the exact measure at h
    kkt: jax.Array     # optimality measure at y
    L: jax.Array
    backtracks: jax.Array
    it: jax.Array
    history: jax.Array
    errors: jax.Array


def _iterate(data, forward, transpose, reg, prox, h0, L0, bmax, l1, *, kernel_shape, solver,
             solver_options, max_iters, tol, backtrack, reference, max_extrapolation=None,
             difference=None, progress=False):
    """Runs one first-order method on ``F = data(A h) + reg(h) + l1 ||h||₁`` under the prior.

    ``L0`` is the step's starting Lipschitz constant and the fixed scale of the
    optimality measure (backtracking may grow the step's ``L``, never the
    measure's: a measure taken with a huge ``L`` would read as converged).
    ``max_extrapolation(z1, z0)``, if given, bounds FISTA's momentum factor so
    that the extrapolated model image stays in the data term's good domain.
    ``difference(z1, z0)`` gives ``D(z1) − D(z0)`` and a bound on its rounding
    error, computed without the cancellation of two large sums (for the
    backtracking test, which near convergence compares tiny changes).
    """
    dtype = h0.dtype
    opts = dict(solver_options)
    n = h0.size
    data_vg = jax.value_and_grad(data)
    reg_vg = jax.value_and_grad(lambda hf: reg(hf.reshape(kernel_shape)))

    def fwd(hf):
        return forward(hf.reshape(kernel_shape))

    def evaluate(p, zp):
        fz, gz = data_vg(zp)
        fr, gr = reg_vg(p)
        return fz + fr, transpose(gz).ravel() + gr

    def gradient(p, zp):
        return transpose(jax.grad(data)(zp)).ravel() + reg_vg(p)[1]

    def smooth_value(p, zp):
        return data(zp) + reg(p.reshape(kernel_shape))

    def total(f, h):
        return f + l1 * jnp.sum(jnp.abs(h))

    if solver == "adam":
        a_init, a_update = adam.make(n, max_iters, learning_rate=opts["learning_rate"],
                                     decay_rate=opts["decay_rate"])
        opt_init = a_init

        def trial(p, g, st, L):
            return a_update(p, g, st, None, lambda v: prox(v, L))
    else:
        beta = opts.get("momentum") if solver == "momentum" else None
        opt_init = optax.sgd(learning_rate=1.0, momentum=beta).init

        def trial(p, g, st, L):
            opt = optax.sgd(learning_rate=1.0 / L, momentum=beta)
            updates, st = opt.update(g, st, p)
            return prox(optax.apply_updates(p, updates), L), st

    L0 = jnp.asarray(L0, dtype)

    def optimality(p, g):
        return _objective.optimality(p, g, lambda v: prox(v, L0), L0, bmax)

    def error(h):
        return _driver.relative_error(h, reference)

    zh0 = fwd(h0)
    f0, g0 = evaluate(h0, zh0)
    history = jnp.full((max_iters + 1,), jnp.nan, dtype).at[0].set(total(f0, h0))
    errors = jnp.full((max_iters + 1,), jnp.nan, dtype).at[0].set(error(h0))
    state = _State(h0, zh0, h0, zh0, g0, opt_init(h0), jnp.ones((), dtype),
                   jnp.asarray(True), optimality(h0, g0), L0, jnp.zeros((), jnp.int32),
                   jnp.zeros((), jnp.int32), history, errors)

    def cond(s):
        done = s.clean & (s.kkt <= tol)
        return (s.it < max_iters) & ~done & jnp.isfinite(s.kkt)

    def body(s):
        def attempt(L):
            h1, st1 = trial(s.y, s.gy, s.opt_state, L)
            z1 = fwd(h1)
            return h1, st1, z1, smooth_value(h1, z1)

        L = s.L * BACKTRACK_DECREASE if backtrack else s.L
        h1, st1, z1, f1 = attempt(L)
        fails = jnp.zeros((), jnp.int32)
        if backtrack:
            grad_reg = reg_vg(s.y)[1]

            def bad(c):
                L, (h1, _, z1, _), k = c
                d = h1 - s.y
                # F(h1) − F(y) = ΔD + <∇R(y), d> + R(d) (R quadratic), against the model
                change, err = difference(z1, s.zy)
                change = change + jnp.vdot(grad_reg, d) + reg(d.reshape(kernel_shape))
                lin, quad = jnp.vdot(s.gy, d), 0.5 * L * jnp.vdot(d, d)
                err = err + 64 * jnp.finfo(dtype).eps * (jnp.abs(lin) + quad)
                return ~(change <= lin + quad + err) & (k < MAX_BACKTRACKS)

            def grow(c):
                L2 = BACKTRACK_FACTOR * c[0]
                return L2, attempt(L2), c[2] + 1

            L, (h1, st1, z1, f1), fails = lax.while_loop(bad, grow, (L, (h1, st1, z1, f1), fails))
        if solver == "fista":
            t1 = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * s.t * s.t))
            beta = (s.t - 1.0) / t1
            reset = s.kkt <= tol  # near the end: measure at the iterate itself next
            if opts["restart"]:
                reset = reset | (jnp.vdot(s.y - h1, h1 - s.h) > 0)
            beta = jnp.where(reset, jnp.zeros_like(beta), beta)
            if max_extrapolation is not None:
                beta = jnp.minimum(beta, max_extrapolation(z1, s.zh))
            t1 = jnp.where(reset, jnp.ones_like(t1), t1)
            y1 = h1 + beta * (h1 - s.h)
            zy1 = z1 + beta * (z1 - s.zh)
            clean = beta == 0
        else:
            t1, y1, zy1, clean = s.t, h1, z1, jnp.asarray(True)
        gy1 = gradient(y1, zy1)
        kkt = optimality(y1, gy1)
        _progress.tick(progress, "iterations", s.it + 1, max_iters)
        return _State(h1, z1, y1, zy1, gy1, st1, t1, clean, kkt, L,
                      s.backtracks + fails, s.it + 1,
                      s.history.at[s.it + 1].set(total(f1, h1)),
                      s.errors.at[s.it + 1].set(error(h1)))

    s = lax.while_loop(cond, body, state)
    f_h, g_h = evaluate(s.h, s.zh)
    opt = jnp.where(s.clean, s.kkt, optimality(s.h, g_h))
    finite = jnp.isfinite(opt) & jnp.all(jnp.isfinite(s.h))
    converged = finite & (opt <= tol)
    return _driver.SolverOutput(s.h, s.it, RESULTS.where(converged, finite), opt, s.history,
                                s.errors), s.L, total(f_h, s.h), s.backtracks


def _full_weights(weights, dtype):
    out = {name: jnp.zeros((), dtype) for name in _names.REGULARIZERS}
    for name, value in dict(weights or {}).items():
        if name not in out:
            raise ValueError(f"unknown regularizer {name!r}; expected one of "
                             f"{_names.REGULARIZERS}.")
        out[name] = jnp.asarray(value, dtype)
    return out


class _Data(NamedTuple):
    """A data term ``D(z)`` of the model image and the numbers derived from the data."""

    value: Any          # z -> D(z)
    weights: Any        # w (ones when none)
    used: Any           # w > 0
    y: Any              # y with masked pixels set to 0
    difference: Any = None  # (z1, z0) -> (D(z1) − D(z0), rounding bound)
    counts: Any = None  # poisson: c = max(y + σ_r², 0)
    offset: Any = None  # poisson: b + σ_r² (added to A h)
    floor: Any = None   # poisson: ε
    level: Any = None   # poisson: mean of c over the used pixels


def _data_term(y, pixel_weights, loss, loss_options, delta=None) -> _Data:
    """Builds ``D`` for ``loss`` (Huber needs ``delta``); see the module docstring."""
    dtype = y.dtype
    lopts = dict(loss_options)
    w = jnp.ones(y.shape, dtype) if pixel_weights is None else pixel_weights.astype(dtype)
    used = w > 0
    y = jnp.where(used, y, 0.0)
    if loss == "l2":
        def value(z):
            r = z - y
            return 0.5 * jnp.sum(w * r * r)
        return _Data(value, w, used, y)
    if loss == "huber":
        sw = jnp.sqrt(w)
        return _Data(lambda z: jnp.sum(_huber(sw * (z - y), delta)), w, used, y)
    tiny = jnp.finfo(dtype).tiny
    read_var = jnp.asarray(lopts.get("read_noise", 0.0), dtype) ** 2
    offset = jnp.asarray(lopts.get("background", 0.0), dtype) + read_var
    c = jnp.where(used, jnp.maximum(y + read_var, 0.0), 0.0)
    level = jnp.maximum(jnp.sum(w * c) / jnp.maximum(jnp.sum(w), tiny), tiny)
    floor = lopts.get("floor")
    eps = DEFAULT_FLOOR * level if floor is None else jnp.asarray(floor, dtype)
    def difference(z1, z0):
        # per pixel (μ1 − μ0) − c log(μ1/μ0) = Δ − c log1p(Δ/μ0): no large constants
        # cancel
        mu0, delta = z0 + offset, z1 - z0
        ok = (mu0 >= eps) & (z1 + offset >= eps)
        safe0 = jnp.where(ok, mu0, 1.0)
        stable = delta - c * jnp.log1p(jnp.where(ok, delta, 0.0) / safe0)
        # below the floor (rare): the direct difference; skipped when no pixel is there
        terms = lax.cond(jnp.all(ok | ~used), lambda: stable, lambda: jnp.where(
            ok, stable, _poisson_terms(z1 + offset, c, eps) - _poisson_terms(mu0, c, eps)))
        # rounding: of the terms, and of Δ itself (a difference of two FFT convolutions, each
        # off by ~eps |μ|), which enters through the slope 1 − c/μ
        mu0_safe = jnp.maximum(mu0, eps)
        scale = (jnp.abs(delta) * (1.0 + c / mu0_safe)
                 + jnp.abs(1.0 - c / mu0_safe) * (jnp.abs(mu0) + jnp.abs(z1 + offset))
                 + jnp.where(ok, 0.0, c + jnp.abs(mu0)))
        return jnp.sum(w * terms), 64 * jnp.finfo(dtype).eps * jnp.sum(w * scale)

    return _Data(lambda z: jnp.sum(w * _poisson_terms(z + offset, c, eps)), w, used, y,
                 difference, c, offset, eps, level)


@functools.partial(jax.jit, static_argnames=("kernel_shape", "loss", "loss_options"))
def data_loss_and_grad(h, xp, y, *, kernel_shape, loss="l2", loss_options=(), pixel_weights=None,
                       delta=None):
    """``(D(A h), ∇_h D(A h))``: the data term and its ``jax.grad``, as the solver computes them.

    ``h`` is (k, l); ``delta`` is Huber's δ (required for ``"huber"``). The
    gradient is ``Aᵀ ∇D(z)`` with ``Aᵀ`` the transpose of :func:`fft_operator`'s
    FFT convolution; for ``"l2"`` it equals :func:`jdeconv.data_loss_grad`.
    """
    if loss == "huber" and delta is None:
        raise ValueError("loss='huber' needs delta (the solver estimates it; here give it).")
    forward, transpose = fft_operator(xp.astype(y.dtype), kernel_shape)
    data = _data_term(y, pixel_weights, loss, loss_options,
                      None if delta is None else jnp.asarray(delta, y.dtype))
    value, gz = jax.value_and_grad(data.value)(forward(h))
    return value, transpose(gz)


_STATIC = ("kernel_shape", "prior", "loss", "loss_options", "solver", "solver_options",
           "max_iters", "progress")


@functools.partial(jax.jit, static_argnames=_STATIC)
def solve_matrix_free(xp, y, kernel_shape, *, prior, support=None, weights=None,
                      pixel_weights=None, loss="l2", loss_options=(), solver="fista",
                      solver_options=(), max_iters=DEFAULT_MAX_ITERS, tol=1e-10,
                      reference=None, progress=False) -> MatrixFreeOutput:
    """Estimates a kernel without the normal matrix (pure, jitted; see the module docstring).

    Args:
      xp: (m, n) the original padded for the geometry (``jdeconv._geometry.pad``):
        the model is ``valid_conv(xp, h)``.
      y: (m-k+1, n-l+1) the blurred image in that geometry (masked pixels may hold
        any finite value; their weight must be 0).
      kernel_shape: static ``(k, l)``.
      prior: static ``"none"``, ``"nonneg"``, ``"sum_to_one"`` or ``"simplex"``.
      support: optional (k, l) bool mask.
      weights: optional dict of relative regulariser weights (``"tikhonov"``,
        ``"smooth"``, ``"l1"``; missing = 0; traced scalars allowed).
      pixel_weights: optional (M, N) weights ``>= 0`` of ``y`` (0 = masked): inverse
        variances for ``l2``/``huber``, per-pixel multipliers for ``poisson``.
      loss: static ``"l2"``, ``"huber"`` or ``"poisson"``.
      loss_options: static, from :func:`check_loss_options`.
      solver: static ``"fista"``, ``"momentum"``, ``"gd"`` or ``"adam"``.
      solver_options: static, from :func:`check_solver_options`.
      max_iters: static iteration cap.
      tol: tolerance on the optimality measure (may be traced).
      reference: optional (k, l) kernel; its relative error is recorded per iteration.
      progress: static; report the main loop's iterations (:mod:`jdeconv._progress`).

    Returns:
      A :class:`MatrixFreeOutput` (flat ``h``). Memory O(image): nothing of size
      ``(k l)²`` is formed.
    """
    k, l = kernel_shape
    n = k * l
    dtype = y.dtype
    tiny = jnp.finfo(dtype).tiny
    xp = xp.astype(dtype)
    lopts = dict(loss_options)
    wts = _full_weights(weights, dtype)
    forward, transpose = fft_operator(xp, kernel_shape)
    base = _data_term(y, pixel_weights, "l2", ())
    w, used, y = base.weights, base.used, base.y
    mask = None if support is None else jnp.asarray(support, bool)
    flat_mask = jnp.ones((n,), bool) if mask is None else mask.ravel()
    ref = None if reference is None else jnp.asarray(reference, dtype).ravel()
    box_energy = jnp.sum(w * box_sum(xp * xp, kernel_shape)) / n  # trace(AᵀWA) / (k l)

    def bmax_of(image):
        return jnp.max(jnp.where(flat_mask, jnp.abs(transpose(image).ravel()), 0.0))

    if loss == "poisson":
        data = _data_term(y, pixel_weights, loss, loss_options)
        scale = box_energy / data.level
        bmax = bmax_of(w * data.counts) / data.level
        # start at a flat kernel of the right flux: the model then sits at the data's level
        flux = (jnp.sum(w * (data.counts - data.offset)) /
                jnp.maximum(jnp.sum(w * box_sum(xp, kernel_shape)) / n, tiny))
        h_start = jnp.full(kernel_shape, 1.0 / n, dtype) * jnp.maximum(flux, jnp.finfo(dtype).eps)
    else:
        scale = box_energy
        bmax = bmax_of(w * y)
        h_start = jnp.zeros(kernel_shape, dtype)

    def reg(h):
        return _regularizer(h, wts["tikhonov"], wts["smooth"], scale)

    l1 = (wts["l1"] * scale).astype(dtype) if prior != "simplex" else jnp.zeros((), dtype)
    prox = _prox_factory(prior, mask, l1, kernel_shape)
    h0 = _priors.project_prior(h_start, prior, mask).ravel()
    reg_L = scale * (wts["tikhonov"] + 8.0 * wts["smooth"])
    restrict = _restriction(mask, kernel_shape, prior in _names.EQUALITY_PRIORS)
    common = dict(kernel_shape=kernel_shape, tol=tol)
    delta = jnp.asarray(jnp.nan, dtype)
    warm_iters = jnp.zeros((), jnp.int32)

    if loss == "poisson":
        c, eps = data.counts, data.floor
        mu0 = forward(h0.reshape(kernel_shape)) + data.offset
        L0 = _power_lipschitz(forward, transpose, w * c / jnp.maximum(mu0, eps) ** 2,
                              kernel_shape, dtype, restrict) + reg_L

        def max_extrapolation(z1, z0):
            # the largest momentum factor with mu(y) >= DOMAIN_FRACTION * mu(h1) wherever counts
            # were seen (the likelihood's curvature c / mu² then grows at most 1/fraction²)
            mu1 = z1 + data.offset
            down = z0 - z1
            limited = used & (c > 0) & (mu1 > eps) & (down > 0)
            ratio = (1.0 - DOMAIN_FRACTION) * mu1 / jnp.where(limited, down, 1.0)
            return jnp.min(jnp.where(limited, ratio, jnp.inf))

        out, L, obj, fails = _iterate(data.value, forward, transpose, reg, prox, h0, L0, bmax,
                                      l1, solver=solver, solver_options=solver_options,
                                      backtrack=solver != "adam", max_iters=max_iters,
                                      reference=ref, max_extrapolation=max_extrapolation,
                                      difference=data.difference, progress=progress,
                                      **common)
    else:
        L = _power_lipschitz(forward, transpose, w, kernel_shape, dtype, restrict) + reg_L
        if loss == "huber":
            spread = (jnp.max(jnp.where(used, y, -jnp.inf)) -
                      jnp.min(jnp.where(used, y, jnp.inf)))
            sw = jnp.sqrt(w)

            def auto_delta(hf):
                r = sw * (forward(hf.reshape(kernel_shape)) - y)
                return jnp.maximum(_weighted_gram.HUBER_C * _weighted_gram.robust_scale(r, w),
                                   1e-6 * spread)

            if lopts["delta"] is None:
                # δ from the residual of the current kernel, re-estimated after each warm-up
                # round of Huber iterations (the first round starts from h0, where δ is large
                # and the round is close to least squares).
                def round_(_, carry):
                    hf, iters = carry
                    d = _data_term(y, pixel_weights, "huber", (), auto_delta(hf))
                    warm, _, _, _ = _iterate(d.value, forward, transpose, reg, prox, hf, L, bmax,
                                             l1, solver="fista",
                                             solver_options=(("restart", True),),
                                             backtrack=False, max_iters=lopts["warmup"],
                                             reference=None, **common)
                    return warm.h, iters + warm.iterations

                if lopts["warmup"] > 0 and lopts["rounds"] > 0:
                    h0, warm_iters = lax.fori_loop(0, lopts["rounds"], round_, (h0, warm_iters))
                delta = auto_delta(h0)
            else:
                delta = jnp.asarray(lopts["delta"], dtype)
        data = _data_term(y, pixel_weights, loss, (), delta)
        out, L, obj, fails = _iterate(data.value, forward, transpose, reg, prox, h0, L, bmax,
                                      l1, solver=solver, solver_options=solver_options,
                                      backtrack=False, max_iters=max_iters, reference=ref,
                                      progress=progress, **common)
    stats = {"scale": scale, "delta": delta, "backtracks": fails,
             "warmup_iterations": warm_iters}
    return MatrixFreeOutput(out.h, out.result, out.optimality, out.iterations, out.loss_history,
                            out.error_history, L, obj, stats)


# ----------------------------------------------------------------------------
# Eager checks
# ----------------------------------------------------------------------------

def check_counts(problem, loss_options: tuple) -> None:
    """Raises unless a Poisson problem holds counts (``y >= 0``, ``x >= 0``).

    With read noise ``σ_r`` the blurred image may go down to ``−σ_r²`` (the
    shifted counts ``y + σ_r²`` are what the likelihood sees).
    """
    opts = dict(loss_options)
    if not (_validation.is_concrete(problem.y) and _validation.is_concrete(problem.x)):
        return
    y = np.asarray(problem.y)
    used = np.ones(y.shape, bool) if problem.pixel_weights is None else \
        np.asarray(problem.pixel_weights) > 0
    low = -float(opts.get("read_noise", 0.0)) ** 2
    bad = int(((y < low) & used).sum())
    if bad:
        extra = (f" (with read noise {opts['read_noise']}, down to {low:g})" if low < 0 else
                 "; with read noise, pass loss_options={'read_noise': sigma}")
        raise ValueError(
            f"loss='poisson' needs counts: the blurred image has {bad} pixel(s) below "
            f"{low:g}{extra}. Give photon counts (not bias-subtracted, not normalised to zero "
            "mean) or use loss='l2'.")
    if (np.asarray(problem.x) < 0).any():
        raise ValueError("loss='poisson' models the counts as λ = x∗h + background, which must "
                         "be positive: the original image has negative values. Give a "
                         "nonnegative original (e.g. in counts) or use loss='l2'.")
