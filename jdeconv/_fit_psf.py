"""Fitting a parametric PSF to an (original, blurred) pair, with standard errors.

:func:`fit_psf` minimises the least-squares loss ``½‖conv2d(x, h(θ)) − y‖²``
over the parameters θ of a model of :data:`jdeconv.PSF_MODELS`, on the pixels
the valid model explains (for ``"same"``, the valid part of ``y``, as
:func:`jdeconv.estimate_kernel` does). Three stages, all in one jitted call:

1. L-BFGS (``optax.lbfgs`` with its zoom line search) on ``jax.value_and_grad``
   of the loss, in free coordinates: positive parameters (widths, radii,
   lengths) are fitted as ``exp`` of a free value, so they stay positive.
2. Levenberg–Marquardt polishing on the Jacobian ``J = ∂ conv2d(x, h(θ)) / ∂θ``
   (``jax.jacfwd``): quadratic convergence near the optimum, so clean pairs give
   the parameters to float precision.
3. Gauss–Newton statistics at the optimum: covariance ``σ² (JᵀJ)⁻¹``, with σ
   the given ``noise_sigma`` or the residual's ``‖r‖ / √(N − P)``; standard
   errors are the square roots of its diagonal.

Convergence is decided by one scale-free measure, the size of the Gauss–Newton
step still to take relative to the parameters,
``optimality = max_i |δθ_i| / (|θ_i| + 1)`` with ``δθ = (JᵀJ)⁻¹ Jᵀ r``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdeconv import _geometry, _names
from jdeconv import _validation as _v
from jdeconv._conv import conv2d
from jdeconv._kernel_metrics import kernel_moments
from jdeconv._noise_level import DEFAULT_PATCH_SIZE, enough_patches, estimate_noise
from jdeconv._psf_models import PSF_MODELS, ParametricPSF, _values
from jdeconv._solution import RESULTS, _Outcome

#: Default cap on L-BFGS iterations.
DEFAULT_MAX_ITERS = 200
#: Levenberg–Marquardt polishing steps after L-BFGS (at most).
GAUSS_NEWTON_STEPS = 50


@dataclasses.dataclass(frozen=True)
class PSFFit(_Outcome):
    """A fitted parametric PSF (a pytree).

    Attributes:
      params: the fitted parameters, a dict (see the model's ``param_names``).
      stderr: standard error of each parameter, a dict of the same shapes.
      covariance: ``σ² (JᵀJ)⁻¹``, (P, P), rows in the order of
        ``covariance_names``.
      kernel: the model's kernel at ``params``, (k, l).
      result: a :class:`jdeconv.RESULTS` code (int32 array).
      optimality: the relative Gauss–Newton step still to take (the measure
        ``tol`` bounds; 0 at the exact optimum).
      iterations: L-BFGS iterations performed.
      loss: ``½‖r‖²`` at the fit, r the residual on the fitted pixels.
      residual_norm: ``‖r‖``.
      noise_sigma: the noise level the statistics use: the given one, else
        :func:`jdeconv.estimate_noise` of the fitted part of ``y`` (NaN when
        it is too small to estimate).
      fit_statistic: ``RMS(r) / noise_sigma``: ≈ 1 when the model explains
        the data to the noise, as ``KernelEstimate.fit_statistic`` is for the
        nonparametric estimate (compare the two).
      chi2_dof: ``‖r‖² / (noise_sigma² · dof)``.
      stats: ``{"gauss_newton_steps", "initial_loss"}``.
      model: the model's name.
      param_names: keys of ``params``.
      covariance_names: one label per covariance row (``"coeffs[2]"`` for a
        vector's entries).
      mode, kernel_shape: the geometry used.
      dof: degrees of freedom, fitted pixels minus parameters.
      max_iters, tol: the settings used.
    """

    params: Any
    stderr: Any
    covariance: Any
    kernel: Any
    result: Any
    optimality: Any
    iterations: Any
    loss: Any
    residual_norm: Any
    noise_sigma: Any
    fit_statistic: Any
    chi2_dof: Any
    stats: Any
    model: str = ""
    param_names: tuple = ()
    covariance_names: tuple = ()
    mode: str = "valid"
    kernel_shape: tuple = ()
    dof: int = 0
    max_iters: int = 0
    tol: float = 0.0

    def summary(self) -> str:
        """One line: the model, each parameter ± its standard error, the fit statistic."""
        if np.ndim(self.result) != 0:
            return f"model={self.model} {self._outcome()}"
        parts = []
        for name in self.param_names:
            v = np.atleast_1d(np.asarray(self.params[name]))
            s = np.atleast_1d(np.asarray(self.stderr[name]))
            vals = ", ".join(f"{a:.6g}±{b:.2g}" for a, b in zip(v, s))
            parts.append(f"{name}=" + (f"[{vals}]" if np.ndim(self.params[name]) else vals))
        return (f"model={self.model} " + " ".join(parts)
                + f" fit_statistic={float(np.asarray(self.fit_statistic)):.3g} "
                + self._outcome())


jax.tree_util.register_dataclass(
    PSFFit,
    data_fields=["params", "stderr", "covariance", "kernel", "result", "optimality",
                 "iterations", "loss", "residual_norm", "noise_sigma", "fit_statistic",
                 "chi2_dof", "stats"],
    meta_fields=["model", "param_names", "covariance_names", "mode", "kernel_shape", "dof",
                 "max_iters", "tol"])


# ----------------------------------------------------------------------------
# Flat parameter vectors
# ----------------------------------------------------------------------------

def _layout(model: ParametricPSF, kernel_shape):
    """Names, shapes, per-entry labels and the positivity mask of the flat vector."""
    names = model.param_names
    shapes = model.param_shapes(kernel_shape)
    labels, positive = [], []
    for n in names:
        size = math.prod(shapes[n])
        labels += [n] if shapes[n] == () else [f"{n}[{i}]" for i in range(size)]
        positive += [n in model.positive] * size
    return names, shapes, tuple(labels), np.asarray(positive, dtype=bool)


def _flatten(params, names):
    return jnp.concatenate([jnp.ravel(params[n]) for n in names])


def _unflatten(vec, names, shapes):
    out, start = {}, 0
    for n in names:
        size = math.prod(shapes[n])
        out[n] = vec[start:start + size].reshape(shapes[n])
        start += size
    return out


# ----------------------------------------------------------------------------
# The jitted fit
# ----------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("model", "kernel_shape", "max_iters"))
def _fit_core(xp, yv, theta0, noise_sigma, noise_level, tol, *, model: ParametricPSF,
              kernel_shape, max_iters: int):
    """The fit; ``noise_sigma`` is NaN when unknown, ``noise_level`` the level for statistics."""
    names, shapes, _, positive = _layout(model, kernel_shape)
    dtype = yv.dtype
    positive = jnp.asarray(positive)

    def to_theta(z):
        return jnp.where(positive, jnp.exp(jnp.where(positive, z, 0.0)), z)

    def to_z(theta):
        return jnp.where(positive, jnp.log(jnp.where(positive, theta, 1.0)), theta)

    def predict(theta):
        h = model.fn(_unflatten(theta, names, shapes), kernel_shape)
        return conv2d(xp, h, "valid")

    def residual(z):
        r = (predict(to_theta(z)) - yv).ravel()
        return r, r

    energy = jnp.sum(yv * yv)
    scale = jnp.where(energy > 0, energy, 1.0)

    def loss(z):
        r = residual(z)[0]
        return 0.5 * jnp.sum(r * r) / scale

    # 1. L-BFGS with the zoom line search.
    z0 = to_z(theta0.astype(dtype))
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)
    f0, g0 = jax.value_and_grad(loss)(z0)
    g0_max = jnp.max(jnp.abs(g0))

    def lbfgs_cond(carry):
        _, _, it, done = carry
        return (it < max_iters) & ~done

    def lbfgs_body(carry):
        z, state, it, _ = carry
        value, grad = value_and_grad(z, state=state)
        updates, state = opt.update(grad, state, z, value=value, grad=grad, value_fn=loss)
        z_new = optax.apply_updates(z, updates)
        v_new = optax.tree.get(state, "value")
        g_new = optax.tree.get(state, "grad")
        ok = jnp.isfinite(v_new) & jnp.all(jnp.isfinite(z_new))
        small = jnp.max(jnp.abs(g_new)) <= 1e-10 * g0_max
        stalled = v_new >= value
        return jnp.where(ok, z_new, z), state, it + 1, ~ok | small | stalled

    z, _, iterations, _ = jax.lax.while_loop(
        lbfgs_cond, lbfgs_body, (z0, opt.init(z0), jnp.asarray(0), g0_max == 0))

    # 2. Levenberg–Marquardt polishing.
    def lm_cond(carry):
        _, _, i, done, _ = carry
        return (i < GAUSS_NEWTON_STEPS) & ~done

    def lm_body(carry):
        z, lam, i, _, rss = carry
        jac, r = jax.jacfwd(residual, has_aux=True)(z)
        a = jac.T @ jac
        d = jnp.diag(a)
        d = jnp.maximum(d, 1e-12 * jnp.max(d) + jnp.finfo(dtype).tiny)
        step = -jnp.linalg.solve(a + lam * jnp.diag(d), jac.T @ r)
        z_try = z + step
        r_try = residual(z_try)[0]
        rss_try = jnp.sum(r_try * r_try)
        accept = jnp.isfinite(rss_try) & (rss_try <= rss)
        theta, theta_try = to_theta(z), to_theta(z_try)
        rel = jnp.max(jnp.abs(theta_try - theta) / (jnp.abs(theta) + 1.0))
        done = accept & (rel <= tol)
        return (jnp.where(accept, z_try, z), jnp.where(accept, lam * 0.3, lam * 10.0), i + 1,
                done, jnp.where(accept, rss_try, rss))

    r_start = residual(z)[0]
    z, _, gn_steps, _, _ = jax.lax.while_loop(
        lm_cond, lm_body,
        (z, jnp.asarray(1e-3, dtype), jnp.asarray(0), jnp.asarray(False),
         jnp.sum(r_start * r_start)))

    # 3. Statistics at the optimum, in the model's own (canonical) parameters.
    params = model.canonicalize(_unflatten(to_theta(z), names, shapes))
    theta = _flatten(params, names)
    jac, pred = jax.jacfwd(lambda t: (predict(t).ravel(),) * 2, has_aux=True)(theta)
    r = pred - yv.ravel()
    rss = jnp.sum(r * r)
    n_pix, n_par = r.shape[0], theta.shape[0]
    dof = n_pix - n_par
    a = jac.T @ jac
    col = jnp.sqrt(jnp.diag(a))
    col = jnp.where(col > 0, col, 1.0)
    a_inv = jnp.linalg.inv(a / (col[:, None] * col[None, :])) / (col[:, None] * col[None, :])
    gn_step = a_inv @ (jac.T @ r)
    optimality = jnp.max(jnp.abs(gn_step) / (jnp.abs(theta) + 1.0))
    sigma_cov = jnp.where(jnp.isnan(noise_sigma), jnp.sqrt(rss / dof), noise_sigma)
    covariance = sigma_cov ** 2 * a_inv
    variances = jnp.diag(covariance)
    stderr = jnp.where(variances >= 0, jnp.sqrt(jnp.abs(variances)), jnp.nan)
    sigma_n = noise_level
    sigma_ok = sigma_n > 0
    sigma_safe = jnp.where(sigma_ok, sigma_n, 1.0)
    fit_statistic = jnp.where(sigma_ok, jnp.sqrt(rss / n_pix) / sigma_safe, jnp.nan)
    chi2_dof = jnp.where(sigma_ok, rss / (sigma_safe ** 2 * dof), jnp.nan)
    kernel = model.fn(params, kernel_shape)
    finite = jnp.isfinite(rss) & jnp.all(jnp.isfinite(theta)) & jnp.all(jnp.isfinite(kernel))
    return dict(
        params=params, stderr=_unflatten(stderr, names, shapes), covariance=covariance,
        kernel=kernel, result=RESULTS.where(optimality <= tol, finite), optimality=optimality,
        iterations=iterations, loss=0.5 * rss, residual_norm=jnp.sqrt(rss),
        noise_sigma=sigma_n, fit_statistic=fit_statistic, chi2_dof=chi2_dof,
        stats={"gauss_newton_steps": gn_steps, "initial_loss": f0 * scale})


# ----------------------------------------------------------------------------
# The public function
# ----------------------------------------------------------------------------

def _resolve_model(model) -> ParametricPSF:
    if isinstance(model, ParametricPSF):
        return model
    if isinstance(model, str):
        return PSF_MODELS[_v.check_choice("PSF model", model, _names.PSF_MODEL_NAMES)]
    raise TypeError(f"model must be a name ({', '.join(map(repr, _names.PSF_MODEL_NAMES))}) or "
                    f"a ParametricPSF from jdeconv.PSF_MODELS, got {type(model).__name__}.")


def _initial(model: ParametricPSF, init, x, y, kernel_shape, mode):
    """The starting parameters (natural units), validated."""
    if init is None:
        from jdeconv._diagnostics import FitWarning
        from jdeconv._estimate import estimate_kernel  # the nonparametric estimate

        # Only a starting point: its own diagnostics do not describe the parametric fit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            estimate = estimate_kernel(x, y, kernel_shape, mode=mode)
        params = model.init(kernel_shape, kernel_moments(estimate.kernel))
    elif isinstance(init, str):
        _v.check_choice("init", init, ("default",))
        params = model.init(kernel_shape)
    elif isinstance(init, (Mapping, PSFFit)):
        given = init.params if isinstance(init, PSFFit) else init
        unknown = [k for k in given if k not in model.param_names]
        if unknown:
            raise ValueError(f"init has key {unknown[0]!r}, which the {model.name!r} model does "
                             f"not have; its parameters are "
                             f"{', '.join(map(repr, model.param_names))} (give any of them; "
                             f"the others start from the default)."
                             + _v.closest(unknown[0], model.param_names))
        params = {**model.init(kernel_shape), **given}
    else:
        raise TypeError(f"init must be None (start from the nonparametric estimate), 'default' "
                        f"or a dict of parameters, got {type(init).__name__}.")
    params, _ = _values(model.name, params, model.param_shapes(kernel_shape))
    for name, value in params.items():
        if not _v.is_concrete(value):
            continue
        host = np.asarray(value)
        if not np.all(np.isfinite(host)):
            raise ValueError(f"init[{name!r}] is {host.tolist()}; give finite values.")
        if name in model.positive and np.any(host <= 0):
            raise ValueError(f"init[{name!r}] is {host.tolist()}; it must be > 0 for the "
                             f"{model.name!r} model.")
    return params


def fit_psf(x, y, model, kernel_shape, *, mode: str = "valid", init=None,
            max_iters: int = DEFAULT_MAX_ITERS, tol: float | None = None,
            noise_sigma=None) -> PSFFit:
    """Fits a parametric PSF ``h(θ)`` with ``y ≈ conv2d(x, h(θ), mode)``.

    Minimises ``½‖conv2d(x, h(θ)) − y‖²`` on the pixels the valid model
    explains by L-BFGS then Levenberg–Marquardt (see the module docstring),
    and reports Gauss–Newton standard errors.

    Args:
      x: original image, (m, n).
      y: blurred image, of the shape ``conv2d(x, h, mode)`` has; for
        ``"same"`` only its valid part is fitted.
      model: a name of :data:`jdeconv.PSF_MODELS` (``"gaussian"``,
        ``"elliptical_gaussian"``, ``"moffat"``, ``"airy"``, ``"defocus"``,
        ``"line_motion"``, ``"zernike"``) or a ``ParametricPSF``.
      kernel_shape: (k, l) or an int: the support the model is sampled on.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      init: where to start. None (default): from the moments of the
        nonparametric estimate ``jdeconv.estimate_kernel(x, y, kernel_shape,
        mode=mode)``; ``"default"``: the model's guess from the kernel size;
        a dict of some or all parameters (the rest from ``"default"``), or a
        previous ``PSFFit``.
      max_iters: cap on L-BFGS iterations (the polishing adds at most
        :data:`GAUSS_NEWTON_STEPS`).
      tol: bound on ``optimality`` for success (default 1e-8 in float64,
        1e-4 in float32).
      noise_sigma: standard deviation of the noise on ``y`` if known: it
        scales the covariance and the fit statistic. Otherwise the
        covariance uses the residual's variance and the fit statistic
        :func:`jdeconv.estimate_noise`.

    Returns:
      A :class:`PSFFit`.

    Raises:
      ValueError, TypeError: for an unknown model, mismatched shapes, bad
        settings or a bad ``init``.

    Example:
      >>> import numpy as np, jdeconv
      >>> from jdeconv._fit_psf import fit_psf
      >>> from jdeconv._psf_models import gaussian_psf
      >>> x = np.random.default_rng(0).standard_normal((48, 48))
      >>> y = jdeconv.conv2d(x, gaussian_psf({"sigma": 1.3, "dx": 0.2, "dy": 0.0}, 11))
      >>> fit = fit_psf(x, y, "gaussian", 11, init="default")
      >>> round(float(fit.params["sigma"]), 6), bool(fit.converged)
      (1.3, True)
    """
    psf = _resolve_model(model)
    kshape = _v.as_shape(kernel_shape, "kernel_shape", example="(9, 9)",
                         maximum=_v.MAX_KERNEL_SIDE)
    mode = _v.check_mode(mode)
    x = _v.as_float_array("x (original image)", x)
    y = _v.as_float_array("y (blurred image)", y)
    x, y = _v.common_float(x, y)
    _v.check_kernel_fits(x.shape, kshape, mode)
    expected = _geometry.output_shape(x.shape, kshape, mode)
    _v.check_shape_is("y (blurred image)", y.shape, expected,
                      f"In mode {mode!r} an image of shape {tuple(x.shape)} and a kernel of "
                      f"shape {kshape} give {expected}; check mode and kernel_shape.")
    max_iters = _v.check_int(max_iters, "max_iters", minimum=1, maximum=_v.MAX_ITERS,
                             example=DEFAULT_MAX_ITERS)
    default_tol = 1e-8 if x.dtype == jnp.float64 else 1e-4
    tol = default_tol if tol is None else _v.check_tol(tol)
    has_sigma = noise_sigma is not None
    if has_sigma:
        if isinstance(noise_sigma, (jax.Array, jax.core.Tracer, np.ndarray)):
            if np.ndim(noise_sigma) != 0:
                raise ValueError(f"noise_sigma must be a scalar, got shape "
                                 f"{tuple(np.shape(noise_sigma))}.")
            if _v.is_concrete(noise_sigma):
                _v.check_real(float(noise_sigma), "noise_sigma", positive=True, example="0.01")
        else:
            _v.check_real(noise_sigma, "noise_sigma", positive=True, example="0.01")
        sigma = jnp.asarray(noise_sigma, dtype=x.dtype)
    else:
        sigma = jnp.asarray(jnp.nan, dtype=x.dtype)

    if mode == "same":
        xp, yv = x, _geometry.same_to_valid(y, kshape)
    else:
        xp, yv = _geometry.pad(x, kshape, mode), y
    names, _, labels, _ = _layout(psf, kshape)
    dof = yv.size - len(labels)
    if dof < 1:
        raise ValueError(f"the fitted part of y has {yv.size} pixels, not more than the "
                         f"{len(labels)} parameters of the {psf.name!r} model; use larger images.")
    params0 = _initial(psf, init, x, y, kshape, mode)
    theta0 = _flatten({n: jnp.asarray(v, x.dtype) for n, v in params0.items()}, names)
    if has_sigma:
        level = sigma
    elif enough_patches(yv.shape, DEFAULT_PATCH_SIZE):
        level = estimate_noise(yv).astype(x.dtype)
    else:
        level = jnp.asarray(jnp.nan, dtype=x.dtype)
    out = _fit_core(xp, yv, theta0, sigma, level, jnp.asarray(tol, x.dtype), model=psf,
                    kernel_shape=kshape, max_iters=max_iters)
    return PSFFit(**out, model=psf.name, param_names=names, covariance_names=labels,
                  mode=mode, kernel_shape=kshape, dof=dof, max_iters=max_iters, tol=tol)


__all__ = ["DEFAULT_MAX_ITERS", "GAUSS_NEWTON_STEPS", "PSFFit", "fit_psf"]
