"""Kernel estimation: one pair (:func:`estimate_kernel`) or a batch (:func:`estimate_kernels`).

The pipeline: validate the inputs eagerly (clear errors, never a traceback
from inside JAX); reduce ``mode="same"`` to the valid part of the blurred
image, so borders never bias the kernel; form the normal equations once
(``XᵀX`` and ``Xᵀy`` by FFT, never the im2col matrix); add the quadratic
regularisers; solve under the prior with the chosen solver, inside one
``jax.jit`` (``jax.vmap`` over pairs for a batch, sharded over all devices).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jdeconv import _checks, _conv, _gram, _priors, _regularizers, _result
from jdeconv._objective import Objective, lipschitz
from jdeconv._solvers import _driver, adam, exact, fista, fourier, gd, momentum

SOLVERS = ("auto", "exact", "gd", "fista", "momentum", "adam", "fourier")
# Largest kernel (in taps) for which the exact solver forms and factors the
# (k l) x (k l) normal matrix; beyond it "auto" uses FISTA.
EXACT_MAX_TAPS = 4096
DEFAULT_MAX_ITERS = {"exact": 100, "fourier": 1}
DEFAULT_FIRST_ORDER_ITERS = 5000
DEFAULT_TOL = {"float64": 1e-10, "float32": 1e-6}


# ----------------------------------------------------------------------------
# Validation (eager, outside jit)
# ----------------------------------------------------------------------------

def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return int(value)


def _same_to_valid(y, kernel_shape):
    """The part of a 'same' blurred image explained by the valid model."""
    (k, l) = kernel_shape
    ck, cl = (k - 1) // 2, (l - 1) // 2
    m, n = y.shape[-2:]
    return y[..., k - 1 - ck:m - ck, l - 1 - cl:n - cl]


def _prepare(x, y, kernel_shape, mode, dtype, *, batched):
    """Validates one pair (or a batch) and returns (x, y, mode for the solver)."""
    ndim = 3 if batched else 2
    what = "xs (original images)" if batched else "x (original image)"
    whaty = "ys (blurred images)" if batched else "y (blurred image)"
    mode = _checks.check_mode(mode)
    kshape = _checks.kernel_shape_tuple(kernel_shape)
    dt = _checks.resolve_dtype(dtype)
    x = _checks.as_float_array(what, x, ndim=ndim, dtype=dt)
    y = _checks.as_float_array(whaty, y, ndim=ndim, dtype=dt)
    if dt is None:
        x, y = _checks.common_float(x, y)
    if batched and x.shape[0] != y.shape[0]:
        raise ValueError(f"xs has {x.shape[0]} images but ys has {y.shape[0]}; give one "
                         "blurred image per original.")
    ishape = tuple(x.shape[-2:])
    (k, l) = kshape
    if k > ishape[0] or l > ishape[1]:
        raise ValueError(
            f"kernel shape {kshape} is larger than the original image {ishape}; the kernel "
            "must be smaller than the image (and much smaller for a well-posed estimate).")
    expected = ishape if mode == "same" else _checks.output_shape(ishape, kshape, mode)
    if tuple(y.shape[-2:]) != expected:
        hint = ""
        if mode == "valid" and tuple(y.shape[-2:]) == ishape:
            hint = " The blurred image is as large as the original: use mode='same'."
        elif mode == "same" and tuple(y.shape[-2:]) == _checks.output_shape(ishape, kshape, "valid"):
            hint = " The blurred image has the valid size: use mode='valid'."
        raise ValueError(
            f"blurred image has shape {tuple(y.shape[-2:])} but an original {ishape} blurred by "
            f"a {kshape} kernel in mode {mode!r} has shape {expected}.{hint} Otherwise check "
            "the kernel size and that the two images belong together.")
    solve_mode = mode
    if mode == "same":
        y = _same_to_valid(y, kshape)
        solve_mode = "valid"
    M, N = y.shape[-2:]
    if solve_mode == "valid" and M * N < k * l:
        raise ValueError(
            f"the valid region of the blurred image has {M}x{N} = {M * N} pixels but the "
            f"kernel has {k}x{l} = {k * l} unknowns: the problem is underdetermined. Use a "
            "smaller kernel size or larger images.")
    host = np.asarray(x).reshape((-1,) + ishape)
    flat = host.reshape(host.shape[0], -1)
    const = np.ptp(flat, axis=1) == 0
    if const.any():
        which = f" (pair {int(np.argmax(const))})" if batched else ""
        raise ValueError(
            f"the original image{which} is constant: every kernel with the same sum blurs it "
            "to the same image, so the kernel cannot be identified (the problem is singular). "
            "Use a textured original (edges, shapes, noise target).")
    return x, y, solve_mode, kshape


def _resolve_solver(solver, prior, n_taps, weights):
    solver = _checks.check_choice("solver", solver, SOLVERS)
    l1_unsupported = weights["l1"] > 0 and prior in ("none", "sum_to_one")
    if weights["l1"] > 0 and prior == "sum_to_one":
        raise ValueError("the l1 regulariser is not supported with prior='sum_to_one' (its "
                         "proximal map has no closed form there); use prior='simplex' (where "
                         "l1 is constant) or 'nonneg'.")
    if solver == "auto":
        if n_taps <= EXACT_MAX_TAPS and not l1_unsupported:
            return "exact"
        return "fista"
    if solver == "exact" and l1_unsupported:
        raise ValueError("solver='exact' handles the l1 regulariser only with prior 'nonneg' "
                         "or 'simplex'; use solver='fista' for l1 with prior='none'.")
    if solver == "exact" and n_taps > EXACT_MAX_TAPS:
        raise ValueError(f"solver='exact' forms a {n_taps}x{n_taps} matrix; kernels above "
                         f"{EXACT_MAX_TAPS} taps need solver='fista'.")
    return solver


# ----------------------------------------------------------------------------
# The jitted core (one pair; vmapped for batches)
# ----------------------------------------------------------------------------

def _prox(prior, support, l1, lipschitz_const):
    """Prox of (prior indicator + l1) with step 1/L, on a flat kernel."""

    def prox(v, shape):
        h = v.reshape(shape)
        if prior == "none":
            h = _regularizers.soft_threshold(h, l1 / lipschitz_const)
        elif prior == "nonneg":
            h = h - l1 / lipschitz_const
        return _priors.project(h, prior, support).ravel()

    return prox


def _history(first, last, max_iters, dtype):
    """History of a direct solver: the start and the final value."""
    return jnp.full((max_iters + 1,), jnp.nan, dtype).at[0].set(first).at[1].set(last)


def _core(x, y, weights, support, tol, reference, *, kernel_shape, mode, prior, solver,
          max_iters):
    (k, l) = kernel_shape
    n = k * l
    dtype = x.dtype
    xp = _conv._pad(x, kernel_shape, mode)
    ref = None if reference is None else reference.ravel()

    def residual(h):
        return _conv._valid_conv(xp, h, "auto") - y

    if solver == "fourier":
        eps = jnp.where(weights["tikhonov"] > 0, weights["tikhonov"],
                        fourier.DEFAULT_EPS[mode]).astype(dtype)
        h = _priors.project(fourier.solve(x, y, kernel_shape, mode, eps), prior, support)
        r = residual(h)
        hist = _history(0.5 * jnp.vdot(y, y), 0.5 * jnp.vdot(r, r), max_iters, dtype)
        errs = _history(_driver.relative_error(jnp.zeros(n, dtype), ref),
                        _driver.relative_error(h.ravel(), ref), max_iters, dtype)
        finite = jnp.all(jnp.isfinite(h))
        out = _driver.SolverOutput(
            h.ravel(), jnp.asarray(1, jnp.int32), finite,
            jnp.where(finite, _result.SUCCESS, _result.NONFINITE).astype(jnp.int32),
            jnp.asarray(jnp.nan, dtype), hist, errs)
        return out, jnp.asarray(jnp.nan, dtype), jnp.linalg.norm(r), hist[1]

    ne = _gram.normal_equations(x, y, kernel_shape, mode)
    scale = jnp.trace(ne.gram) / n
    gram = ne.gram + _regularizers.quadratic_matrix(weights, scale, kernel_shape, dtype)
    l1 = (weights["l1"] * scale).astype(dtype) if prior != "simplex" else jnp.zeros((), dtype)
    objective = Objective(gram, ne.rhs, ne.half_yy, l1)
    L = lipschitz(gram)
    mask = None if support is None else support.ravel()
    prox_flat = _prox(prior, support, l1, L)
    prox = lambda v: prox_flat(v, kernel_shape)
    h0 = _priors.project(jnp.zeros(kernel_shape, dtype), prior, support).ravel()

    if solver == "exact":
        rhs = ne.rhs - l1 if prior == "nonneg" else ne.rhs
        res = exact.solve_qp(gram, rhs, prior=prior, mask=mask, max_iters=max_iters, tol=tol)
        h = res.solution
        g = objective.grad(h)
        hist = _history(objective.value_from_grad(h0, objective.grad(h0)),
                        objective.value_from_grad(h, g), max_iters, dtype)
        errs = _history(_driver.relative_error(h0, ref), _driver.relative_error(h, ref),
                        max_iters, dtype)
        finite = jnp.all(jnp.isfinite(h))
        status = jnp.where(~finite, _result.NONFINITE,
                           jnp.where(res.converged, _result.SUCCESS, _result.MAX_ITERS_REACHED))
        out = _driver.SolverOutput(h, res.iterations.astype(jnp.int32), res.converged & finite,
                                   status.astype(jnp.int32),
                                   _driver.kkt_residual(h, g, prox, L), hist, errs)
    else:
        if solver == "gd":
            init, update = gd.make(L)
        elif solver == "fista":
            init, update = fista.make(L)
        elif solver == "momentum":
            init, update = momentum.make(L)
        else:
            init, update = adam.make(n, max_iters)
        out = _driver.run(init, update, objective, h0, prox, L, max_iters=max_iters, tol=tol,
                          reference=ref)
    h = out.h.reshape(kernel_shape)
    r = residual(h)
    objective_value = objective.value_from_grad(out.h, objective.grad(out.h))
    return out, L, jnp.linalg.norm(r), objective_value


@functools.lru_cache(maxsize=64)
def _compiled(batched, kernel_shape, mode, prior, solver, max_iters):
    f = functools.partial(_core, kernel_shape=kernel_shape, mode=mode, prior=prior,
                          solver=solver, max_iters=max_iters)
    if batched:
        f = jax.vmap(f, in_axes=(0, 0, 0, None, None, 0))
    return jax.jit(f)


def _settings(x, kernel_shape, prior, solver, regularization, max_iters, tol, support):
    prior = _priors.check_prior(prior)
    auto = isinstance(regularization, str) and regularization == "auto"
    if isinstance(regularization, str) and not auto:
        raise ValueError(f"regularization must be None, 'auto' or a mapping of weights, got "
                         f"{regularization!r}.")
    weights = _regularizers.check_regularization(None if auto else regularization)
    n_taps = kernel_shape[0] * kernel_shape[1]
    resolved = _resolve_solver(solver, prior, n_taps, weights)
    if max_iters is None:
        max_iters = DEFAULT_MAX_ITERS.get(resolved, DEFAULT_FIRST_ORDER_ITERS)
    max_iters = _check_int("max_iters", max_iters)
    dtype_name = np.dtype(x.dtype).name
    if tol is None:
        tol = DEFAULT_TOL[dtype_name]
    try:
        tol = float(tol)
    except (TypeError, ValueError) as e:
        raise TypeError(f"tol must be a number, got {tol!r}.") from e
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol}.")
    mask = _priors.check_support(support, kernel_shape)
    return prior, weights, resolved, max_iters, tol, mask


def _choose_weights(x, y, kshape, mode, prior, support, batched):
    """``regularization="auto"``: weights chosen from the data (one pair at a time).

    ``x``, ``y`` are validated, in the solver's geometry (``"same"`` already
    reduced to ``"valid"``).

    Returns (weights as {name: (B,) array}, noise sigma (B,), fit statistic (B,)).
    """
    from jdeconv._autoreg import choose_regularization

    xs, ys = (x, y) if batched else (x[None], y[None])
    chosen = [choose_regularization(xi, yi, kshape, mode=mode, prior=prior, support=support)
              for xi, yi in zip(xs, ys)]
    weights = {name: jnp.asarray([c.weights.get(name, 0.0) for c in chosen], x.dtype)
               for name in _regularizers.REGULARIZERS}
    sigma = jnp.asarray([c.noise_sigma for c in chosen], x.dtype)
    fit = jnp.asarray([c.fit_statistic for c in chosen], x.dtype)
    return weights, sigma, fit


def _to_result(out, L, rnorm, obj, weights, *, solver, requested, prior, mode, kshape,
               max_iters, tol, lead=(), noise_sigma=None, fit_statistic=None):
    return _result.KernelEstimate(
        kernel=out.h.reshape(lead + kshape), converged=out.converged,
        iterations=out.iterations, loss_history=out.loss_history,
        error_history=out.error_history, objective=obj,
        residual_norm=rnorm, kkt_residual=out.kkt_residual, status=out.status,
        lipschitz=L, regularization={k: jnp.asarray(v) for k, v in weights.items()},
        noise_sigma=jnp.full(lead, jnp.nan) if noise_sigma is None else noise_sigma,
        fit_statistic=jnp.full(lead, jnp.nan) if fit_statistic is None else fit_statistic,
        solver=solver, solver_requested=requested, prior=prior, mode=mode,
        kernel_shape=kshape, max_iters=max_iters, tol=tol)


def estimate_kernel(x, y, kernel_shape, *, mode: str = "valid", prior: str = "simplex",
                    solver: str = "auto", regularization=None, max_iters: int | None = None,
                    tol: float | None = None, dtype=None, support=None, reference=None):
    """Estimates the kernel ``h`` with ``y ≈ conv2d(x, h, mode)``.

    Minimises ``½||conv2d(x, h) − y||² + regularisation`` over kernels in the
    prior's set.

    Args:
      x: original image, (m, n).
      y: blurred image: (m-k+1, n-l+1) for ``"valid"``, (m, n) for ``"same"``
        (only its valid part is used, so unknown borders never bias the
        kernel) or ``"circular"``, (m+k-1, n+l-1) for ``"full"``.
      kernel_shape: (k, l) or an int.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      prior: ``"simplex"`` (h >= 0, sum 1; the default: physical PSFs),
        ``"nonneg"``, ``"sum_to_one"`` or ``"none"``.
      solver: ``"auto"`` (the exact solver while the kernel has at most 4096
        taps, else FISTA; the result's ``solver`` says which ran), ``"exact"``
        (active-set on the normal equations: the constrained optimum to
        solver precision), ``"fista"``, ``"gd"``, ``"momentum"``, ``"adam"``,
        or ``"fourier"`` (fast approximate frequency-domain division).
      regularization: None, weights ``{"tikhonov": w, "smooth": w, "l1": w}``
        relative to the image energy (see :mod:`jdeconv._regularizers`), or
        ``"auto"``: the smoothness weight chosen from the data alone by
        generalised cross-validation over a grid of candidates (see
        :func:`jdeconv.choose_regularization`); the result then reports the
        weight, the estimated noise level and a fit statistic.
      max_iters: iteration cap (default 100 for exact, 5000 for first-order).
      tol: stopping tolerance on the scale-free optimality measure (default
        1e-10 in float64, 1e-6 in float32).
      dtype: None (keep the inputs' float type), ``"float32"`` or ``"float64"``.
      support: optional (k, l) bool mask of taps allowed to be non-zero.
      reference: optional true kernel (k, l); its relative error after every
        iteration is recorded in ``error_history`` (convergence studies).

    Returns:
      A :class:`KernelEstimate` (kernel, converged, iterations, loss_history,
      residual_norm, kkt_residual, ... and the settings used).

    Raises:
      ValueError, TypeError: for inputs that do not fit (see messages).

    Example:
      >>> import jdeconv
      >>> x = jdeconv.shapes_image((64, 64), seed=1, n_shapes=6)
      >>> h = jdeconv.gaussian_kernel(7, 1.5)
      >>> est = jdeconv.estimate_kernel(x, jdeconv.conv2d(x, h), 7)
      >>> est.solver, bool(est.converged)
      ('exact', True)
    """
    x, y, solve_mode, kshape = _prepare(x, y, kernel_shape, mode, dtype, batched=False)
    prior, weights, resolved, max_iters, tol, mask = _settings(
        x, kshape, prior, solver, regularization, max_iters, tol, support)
    sigma = fit = None
    if isinstance(regularization, str):  # "auto" (validated by _settings)
        w, sigma, fit = _choose_weights(x, y, kshape, solve_mode, prior, support, batched=False)
        w = {k: v[0] for k, v in w.items()}
        sigma, fit = sigma[0], fit[0]
    else:
        w = {k: jnp.asarray(v, x.dtype) for k, v in weights.items()}
    f = _compiled(False, kshape, solve_mode, prior, resolved, max_iters)
    ref = _reference(reference, kshape, x.dtype, lead=())
    out, L, rnorm, obj = f(x, y, w, mask, jnp.asarray(tol, x.dtype), ref)
    return _to_result(out, L, rnorm, obj, w, solver=resolved, requested=solver,
                      prior=prior, mode=mode, kshape=kshape, max_iters=max_iters, tol=tol,
                      noise_sigma=sigma, fit_statistic=fit)


def _reference(reference, kshape, dtype, lead):
    """Validates an optional true kernel (broadcast over a batch)."""
    if reference is None:
        return None
    ref = _checks.as_float_array("reference", reference, ndim=None, dtype=dtype)
    if tuple(ref.shape[-2:]) != kshape or ref.ndim not in (2, 2 + len(lead)):
        raise ValueError(f"reference kernel has shape {tuple(ref.shape)}, expected "
                         f"{lead + kshape} or {kshape}.")
    if not float(jnp.linalg.norm(ref)) > 0:
        raise ValueError("reference kernel is all zeros; relative errors would be undefined.")
    return jnp.broadcast_to(ref, lead + kshape)


def _batch_sharding(batch_size):
    """NamedSharding of the batch axis over all devices, or None on one device."""
    devices = jax.devices()
    if len(devices) < 2:
        return None, batch_size
    padded = -(-batch_size // len(devices)) * len(devices)
    mesh = Mesh(np.asarray(devices), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), padded


def estimate_kernels(xs, ys, kernel_shape, *, mode: str = "valid", prior: str = "simplex",
                     solver: str = "auto", regularization=None, max_iters: int | None = None,
                     tol: float | None = None, dtype=None, support=None, reference=None):
    """Estimates one kernel per pair of a batch in one jitted, vmapped call.

    Same arguments as :func:`estimate_kernel`, with ``xs`` (B, m, n) and ``ys``
    (B, ...) stacked pairs of equal shapes (``reference``, if given, is
    (B, k, l) or one (k, l) kernel shared by all pairs). When several devices are visible
    (GPUs, or CPU devices from ``XLA_FLAGS=--xla_force_host_platform_device_count``)
    the batch is sharded over all of them with ``jax.sharding``; results equal
    the per-pair :func:`estimate_kernel` to float tolerance and each kernel
    satisfies its own prior.

    Returns:
      A :class:`KernelEstimate` whose array fields have a leading batch axis.

    Example:
      >>> import numpy as np, jdeconv
      >>> xs = np.stack([jdeconv.noise_target((32, 32), seed=s) for s in range(3)])
      >>> h = jdeconv.gaussian_kernel(5, 1.0)
      >>> ys = np.stack([np.asarray(jdeconv.conv2d(x, h)) for x in xs])
      >>> jdeconv.estimate_kernels(xs, ys, 5).kernel.shape
      (3, 5, 5)
    """
    xs, ys, solve_mode, kshape = _prepare(xs, ys, kernel_shape, mode, dtype, batched=True)
    prior, weights, resolved, max_iters, tol, mask = _settings(
        xs, kshape, prior, solver, regularization, max_iters, tol, support)
    batch = xs.shape[0]
    sigma = fit = None
    if isinstance(regularization, str):  # "auto": one weight per pair
        w, sigma, fit = _choose_weights(xs, ys, kshape, solve_mode, prior, support, batched=True)
    else:
        w = {k: jnp.full((batch,), v, xs.dtype) for k, v in weights.items()}
    ref = _reference(reference, kshape, xs.dtype, lead=(batch,))
    sharding, padded = _batch_sharding(batch)
    if padded != batch:  # repeat the last pair so every device gets equal work
        reps = padded - batch
        xs = jnp.concatenate([xs, jnp.repeat(xs[-1:], reps, axis=0)])
        ys = jnp.concatenate([ys, jnp.repeat(ys[-1:], reps, axis=0)])
        if ref is not None:
            ref = jnp.concatenate([ref, jnp.repeat(ref[-1:], reps, axis=0)])
        w = {k: jnp.concatenate([v, jnp.repeat(v[-1:], reps)]) for k, v in w.items()}
    if sharding is not None:
        xs, ys = jax.device_put(xs, sharding), jax.device_put(ys, sharding)
    f = _compiled(True, kshape, solve_mode, prior, resolved, max_iters)
    out, L, rnorm, obj = f(xs, ys, w, mask, jnp.asarray(tol, xs.dtype), ref)
    if padded != batch:
        out, L, rnorm, obj, w = jax.tree_util.tree_map(lambda a: a[:batch], (out, L, rnorm, obj, w))
    return _to_result(out, L, rnorm, obj, w, solver=resolved, requested=solver,
                      prior=prior, mode=mode, kshape=kshape, max_iters=max_iters, tol=tol,
                      lead=(batch,), noise_sigma=sigma, fit_statistic=fit)
