"""Kernel estimation: one pair (:func:`estimate_kernel`) or a batch (:func:`estimate_kernels`).

The pipeline: validate once (:func:`jdeconv.make_problem`: clear errors, never a
traceback from inside JAX; ``"same"`` reduced to the valid part of the blurred
image, so borders never bias the kernel); inside ONE ``jax.jit`` form the
normal equations once (``XᵀX`` and ``Xᵀy`` by FFT, never the im2col matrix),
choose the weights when ``regularization="auto"`` (every candidate solved from
those same normal equations; the chosen candidate's solution *is* the
estimate), solve under the prior, and measure (residual, noise level, fit
statistic). A batch is the same function under ``jax.lax.map`` on CPU devices
and ``jax.vmap`` on accelerators (with one shared original, its normal matrix
is formed once), sharded over all devices.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jdeconv import (_autoreg, _blas_threads, _conv, _diagnostics, _geometry, _gram, _host_memory,
                     _implicit, _kernel_size, _matrix_free, _names, _noise_level, _priors,
                     _problem, _progress, _regularizers, _schedule, _shifted_gram, _uncertainty,
                     _validation, _weighted_gram)
from jdeconv._objective import Objective, lipschitz
from jdeconv._solution import RESULTS, EstimateError, KernelEstimate
from jdeconv._solvers import _driver, adam, exact, fista, fourier, gd, momentum
from jdeconv._solvers import options as _options

_HI = jax.lax.Precision.HIGHEST

# Largest kernel (in taps) for which the exact solver forms and factors the
# (k l) x (k l) normal matrix; beyond it "auto" uses FISTA.
EXACT_MAX_TAPS = 4096
DEFAULT_MAX_ITERS = {"exact": 100, "fourier": 1}
DEFAULT_FIRST_ORDER_ITERS = 5000
DEFAULT_FIRST_ORDER_TOL = {"float64": 1e-10, "float32": 1e-6}

#: Hyperparameters each solver accepts through ``solver_options=`` (and their defaults).
SOLVER_OPTIONS = _options.SOLVER_OPTIONS
#: Options of each data term through ``loss_options=`` (matrix-free path).
LOSS_OPTIONS = _options.LOSS_OPTIONS
#: Solvers that can run on the matrix-free path.
MATRIX_FREE_SOLVERS = ("fista", "gd", "momentum", "adam")


# ----------------------------------------------------------------------------
# Settings (eager)
# ----------------------------------------------------------------------------

def _resolve_solver(solver, prior, n_taps, weights, loss="l2"):
    solver = _validation.check_solver(solver)
    if loss == "poisson":
        if solver == "auto":
            return "fista"
        if solver not in MATRIX_FREE_SOLVERS:
            raise ValueError(f"loss='poisson' has no normal equations: it runs on the matrix-free "
                             f"path, with solver 'fista' (the default with solver='auto'), "
                             f"'momentum', 'gd' or 'adam'; got solver {solver!r}.")
    l1_unsupported = weights["l1"] > 0 and prior in ("none", "sum_to_one")
    if weights["l1"] > 0 and prior == "sum_to_one":
        raise ValueError("the l1 regulariser is not supported with prior='sum_to_one' (its "
                         "proximal map has no closed form there); use prior='simplex' (where "
                         "l1 is constant) or 'nonneg'.")
    if solver == "auto":
        return "exact" if n_taps <= EXACT_MAX_TAPS and not l1_unsupported else "fista"
    if solver == "exact" and l1_unsupported:
        raise ValueError("solver='exact' handles the l1 regulariser only with prior 'nonneg' "
                         "or 'simplex'; use solver='fista' for l1 with prior='none'.")
    if solver == "exact" and n_taps > EXACT_MAX_TAPS:
        raise ValueError(f"solver='exact' forms a {n_taps}x{n_taps} matrix; kernels above "
                         f"{EXACT_MAX_TAPS} taps need solver='fista'.")
    return solver


class _Settings(NamedTuple):
    prior: str
    weights: dict
    auto: bool
    solver: str
    max_iters: int
    tol: float
    options: tuple
    model: Any
    orientation: str


LOSSES = _names.LOSSES
ORIENTATIONS = _names.ORIENTATIONS
DEFAULT_ROBUST_STEPS = 10


def check_photometric(gain, background, loss) -> tuple[bool, int | None, str]:
    """``(gain, background degree or None, loss)`` checked, with the messages of the API."""
    if not isinstance(gain, (bool, np.bool_)):
        raise TypeError(f"gain must be True or False, got {gain!r}.")
    try:
        degree = _weighted_gram.parse_background(background)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{e} Background models: 'none', 'constant', 'plane' or a polynomial "
                      "degree (an int).") from None
    return bool(gain), degree, _validation.check_choice("loss", loss, LOSSES)


def _settings(problem, prior, solver, regularization, max_iters, tol, solver_options, *,
              gain=False, background="none", loss="l2", orientation="convolution",
              standard_errors=False, loss_options=None):
    prior = _validation.check_prior(prior)
    gain, degree, loss = check_photometric(gain, background, loss)
    orientation = _validation.check_choice("orientation", orientation, ORIENTATIONS)
    auto = isinstance(regularization, str) and regularization == "auto"
    if isinstance(regularization, str) and not auto:
        raise ValueError(f"regularization must be None, 'auto' or a mapping of weights, got "
                         f"{regularization!r}.")
    weights = _regularizers.check_regularization(None if auto else regularization)
    resolved = _resolve_solver(solver, prior, problem.n_taps, weights, loss)
    if auto and resolved != "exact":
        raise ValueError(f"regularization='auto' needs the exact solver (the kernel has at most "
                         f"{EXACT_MAX_TAPS} taps and solver 'auto' or 'exact'), got solver "
                         f"{resolved!r}; give explicit weights instead.")
    if max_iters is None:
        max_iters = DEFAULT_MAX_ITERS.get(resolved, DEFAULT_FIRST_ORDER_ITERS)
    max_iters = _validation.check_int(max_iters, "max_iters", minimum=1,
                                      maximum=_validation.MAX_ITERS, example=500)
    if tol is None:
        if resolved == "exact":
            tol = exact.default_tol(problem.dtype, problem.n_taps)
        else:
            tol = DEFAULT_FIRST_ORDER_TOL[np.dtype(problem.dtype).name]
    tol = _validation.check_tol(tol)
    special = bool(gain) or degree is not None or problem.pixel_weights is not None
    if resolved == "fourier" and (special or loss != "l2"):
        raise ValueError("solver='fourier' divides spectra and cannot use masks, weights, a "
                         "gain, a background or a robust loss; use solver='exact'.")
    if standard_errors and resolved != "exact":
        raise ValueError(f"standard_errors=True needs the exact solver (the inverse of the "
                         f"normal matrix on the free taps), got solver {resolved!r}.")
    opts = dict(solver_options or {}) if isinstance(solver_options, dict) else solver_options
    robust_steps = DEFAULT_ROBUST_STEPS
    if isinstance(opts, dict) and "robust_steps" in opts:
        if loss != "huber" or resolved != "exact":
            raise ValueError("solver option 'robust_steps' counts the reweighted exact solves "
                             "of loss='huber' with the exact solver; on the matrix-free path "
                             "use loss_options={'rounds': n, 'warmup': iters}.")
        robust_steps = _validation.check_int(opts.pop("robust_steps"), "robust_steps",
                                             minimum=1, maximum=1000, example=10)
    options = _options.check_solver_options(resolved, opts)
    free = _matrix_free_path(resolved, dict(options), loss, problem.n_taps)
    lopts = _check_loss_options(loss, loss_options, free, problem)
    if free and (bool(gain) or degree is not None):
        raise ValueError("a gain and a background are fitted jointly only on the normal "
                         "equations (solver 'exact' or 'auto', at most "
                         f"{EXACT_MAX_TAPS} taps, loss 'l2' or 'huber'); the matrix-free path "
                         "cannot. With loss='poisson' give a known background as "
                         "loss_options={'background': b}.")
    if loss == "poisson" and problem.inverse_variance:
        raise ValueError("loss='poisson' takes its variance from the model; weights='poisson' "
                         "(or other inverse variances) would count it twice. Use mask= to "
                         "exclude pixels, or loss='l2' with weights='poisson'.")
    model = _Model(gain=bool(gain), background=degree,
                   weighted=problem.pixel_weights is not None,
                   inverse_variance=problem.inverse_variance, loss=loss,
                   robust_steps=robust_steps if loss == "huber" and not free else 0,
                   standard_errors=bool(standard_errors), matrix_free=free,
                   loss_options=lopts)
    return _Settings(prior, weights, auto, resolved, max_iters, tol, options, model,
                     orientation)


def _matrix_free_path(solver: str, options: dict, loss: str, n_taps: int) -> bool:
    """Whether a first-order solve runs matrix-free (FFT convolutions, O(image) memory).

    By default above :data:`EXACT_MAX_TAPS` taps (the normal matrix would be
    too large) and for Huber/Poisson (no normal equations); the solver option
    ``matrix_free`` forces it either way, where the loss allows.
    """
    if solver not in MATRIX_FREE_SOLVERS:
        return False
    forced = options.get("matrix_free")
    if forced is False and loss != "l2":
        raise ValueError(f"loss={loss!r} with solver {solver!r} runs only on the matrix-free "
                         "path; drop solver_options={'matrix_free': False} (or use solver="
                         "'exact' for Huber).")
    if forced is not None:
        return bool(forced)
    return n_taps > EXACT_MAX_TAPS or loss != "l2"


def _check_loss_options(loss, loss_options, matrix_free, problem) -> tuple:
    lopts = _options.check_loss_options(loss, loss_options)
    if loss_options and not matrix_free:
        raise ValueError("loss_options apply to the matrix-free path (loss 'poisson', or "
                         "'huber' with a first-order solver); the exact Huber solve takes "
                         "solver_options={'robust_steps': n}.")
    if loss == "poisson":
        _matrix_free.check_counts(problem, lopts)
    return lopts


# ----------------------------------------------------------------------------
# The jitted core (one pair; vmapped for batches)
# ----------------------------------------------------------------------------

class _Out(NamedTuple):
    h: jax.Array
    result: jax.Array
    optimality: jax.Array
    iterations: jax.Array
    loss_history: jax.Array
    error_history: jax.Array
    objective: jax.Array
    residual_norm: jax.Array
    lipschitz: jax.Array
    weights: dict
    noise_sigma: jax.Array
    fit_statistic: jax.Array
    stats: dict


def _prox(prior, support, l1, lipschitz_const, kernel_shape):
    """Prox of (prior indicator + l1) with step 1/L, on a flat kernel."""

    prox_at = _matrix_free._prox_factory(prior, support, l1, kernel_shape)
    return lambda v: prox_at(v, lipschitz_const)


def _two_point(first, last, size, dtype):
    """History of a one-shot solver: the start and the final value."""
    return jnp.full((size,), jnp.nan, dtype).at[0].set(first).at[1].set(last)


def _dof_free(gram, reg, free, eq, regularized, stencil, kernel_shape, block_sizes,
              shifted=None):
    """Effective degrees of freedom of the estimate on its face (see :mod:`jdeconv._autoreg`).

    Without regularisation it is the number of free taps (minus one for the
    equality); with it, the trace of the influence matrix (one Cholesky).
    """
    count = jnp.sum(free).astype(gram.dtype) - (1.0 if eq else 0.0)
    return jax.lax.cond(regularized, lambda: _autoreg._dof(
        gram, reg, 1.0, free, eq, block_sizes, stencil=stencil, kernel_shape=kernel_shape,
        shifted=shifted),
        lambda: count)


class _Model(NamedTuple):
    """What the photometric / weighted options make of the data term (static parts)."""

    gain: bool = False
    background: int | None = None  # polynomial degree of the background, or None
    weighted: bool = False
    inverse_variance: bool = False
    loss: str = "l2"
    robust_steps: int = 0
    standard_errors: bool = False
    matrix_free: bool = False  # FFT convolutions and jax.grad (no normal matrix)
    loss_options: tuple = ()
    progress: bool = False  # compile in the progress callbacks (jdeconv._progress)


# Below this share of ||y||², the residual's norm is computed directly: the expansion
# loses about log10(||y||² / RSS) of float64's 16 digits to cancellation.
_EXPANSION_MIN_SHARE = 1e-6


def _rss_by_expansion(ne, h, direct, gh=None):
    """``||conv(x, h) − y||²`` as ``hᵀGh − 2bᵀh + ||y||²``, without an image-size convolution.

    Float64, plain least squares (``ne`` unregularised). Where the result is
    below :data:`_EXPANSION_MIN_SHARE` of ``||y||²`` (a nearly exact fit), it
    comes from ``direct()`` instead (``lax.cond``: computed only then). At 512²
    with a 15×15 kernel the convolution was 4 of the estimate's 21 ms. ``gh``:
    ``G h`` if the caller has it (otherwise one ``n x n`` product).
    """
    if gh is None:
        rss = 2.0 * _gram.quadratic_value(ne, h)
    else:
        rss = (jnp.dot(h, gh, precision=_HI) - 2.0 * jnp.dot(ne.rhs, h, precision=_HI)
               + 2.0 * ne.half_yy)
    return jax.lax.cond(rss > _EXPANSION_MIN_SHARE * 2.0 * ne.half_yy, lambda: rss, direct)


def _block_sizes(n: int, pixels: int, batched: bool) -> tuple:
    """The exact solver's block sizes for ``n`` taps and a padded original of ``pixels``.

    No blocks under vmap (every block would be evaluated); the coarser sizes
    from :data:`jdeconv._schedule.LARGE_PIXELS`, where fewer branches keep the
    program's memory down and the QP is a small share of the call.
    """
    if batched:
        return ()
    return exact.default_block_sizes(n, fine=pixels < _schedule.LARGE_PIXELS)


def _first_active_set(x, y, kernel_shape, mode, prior, mask, general):
    """The exact solver's first active set, or None (start from the full support).

    Where bounds apply (``"nonneg"``, ``"simplex"``) to the plain model in the
    valid geometry and the kernel has enough taps that a first factorisation of
    the whole normal matrix costs more than three FFTs of a crop
    (:func:`fourier.active_set_guess`).
    """
    n = kernel_shape[0] * kernel_shape[1]
    if general or mode != "valid" or prior not in ("nonneg", "simplex") \
            or n < fourier.GUESS_MIN_TAPS:
        return None
    return fourier.active_set_guess(x, y, kernel_shape, mask, eq=prior == "simplex")


def _core(x, y, support, weights, tol, reference, candidates, w, *, kernel_shape, mode, prior,
          solver, max_iters, options, auto_terms, model=_Model(), batched=False):
    (k, l) = kernel_shape
    n = k * l
    dtype = y.dtype
    opts = dict(options)
    xp = _geometry.pad(x, kernel_shape, mode)
    ref = None if reference is None else reference.ravel()
    mask = jnp.ones((n,), bool) if support is None else support.reshape(-1)
    nb = _weighted_gram.background_size(model.background)
    photometric = model.gain or nb > 0
    general = photometric or model.weighted or model.loss != "l2"
    kt_prior = _weighted_gram.kernel_tilde_prior(prior, model.gain)
    eq = kt_prior in _names.EQUALITY_PRIORS
    w0 = w if model.weighted else (jnp.ones(y.shape, dtype) if general else None)
    used = jnp.sum(w0 > 0).astype(dtype) if w0 is not None else jnp.asarray(y.size, dtype)
    basis = _weighted_gram._basis(y.shape, model.background, dtype) if nb else None

    def model_image(kt, c, xp=xp):
        out = _conv.valid_conv(xp, kt.reshape(kernel_shape))
        return out if nb == 0 else out + jnp.tensordot(c, basis, axes=1)

    def build(wt):
        """Normal equations in the kernel (background eliminated) for pixel weights ``wt``."""
        if not general:
            # Under vmap the direct correlation becomes a grouped convolution, which is
            # slow on CPU: batches form the right-hand side by FFT.
            return _gram.normal_equations_impl(x, y, kernel_shape, mode,
                                               "fft" if batched else "auto"), None
        ne_aug = _weighted_gram._ane_jit(xp, y, None if wt is None else wt, kernel_shape,
                                         model.background, "auto")
        elim = _weighted_gram._eliminate(ne_aug, nb)
        return elim.reduced, elim

    def background_of(elim, kt):
        if nb == 0:
            return jnp.zeros((0,), dtype)
        return _weighted_gram.recover_background(elim, kt)

    def weighted_residual(kt, c, wt, offset=0.0, xp=xp):
        r = model_image(kt, c, xp) + offset - y
        return r if wt is None else jnp.sqrt(wt) * jnp.where(wt > 0, r, 0)

    def finish(h, result, opt, iters, hist, errs, objective, L, wts, dof, stats, elim=None,
               wt=None, face=None, offset=0.0, variance=None, plain_ne=None, plain_gh=None):
        """The estimate's outputs; ``plain_gh``: ``plain_ne.gram @ h`` where the caller has
        it; ``plain_ne``: the plain model's unregularised normal
        equations, from which the residual's norm comes without a convolution."""
        c = background_of(elim, h)
        # The image-size work of the diagnostics (the residual's FFTs, then the noise
        # level) once the estimate exists: left free, XLA schedules it beside the normal
        # equations or holds its buffers through the solve (67 MB at 2048²). Only for
        # large images and single calls: each condition costs compile time (~0.1 s for
        # a 64² estimate); a shared original's FFT would be computed once per pair
        # instead of once for the batch (2 ms a pair at 255²); and under vmap a
        # condition becomes a select that copies its operand for every pair.
        late = not batched and xp.size >= _schedule.LARGE_PIXELS

        def direct_rss():
            r = weighted_residual(h, c, wt, offset, _schedule.after(xp, h) if late else xp)
            return jnp.vdot(r, r), r

        # Large images keep the convolution, and its place after the solve (see above); under
        # vmap a condition would evaluate both sides.
        if plain_ne is not None and not batched and not late and dtype == jnp.float64:
            rss, r = _rss_by_expansion(plain_ne, h, lambda: direct_rss()[0], plain_gh), None
        else:
            rss, r = direct_rss()
        if variance is not None:  # Poisson: Pearson's statistic, each pixel's own variance
            pearson = jnp.vdot(r / jnp.sqrt(variance), r / jnp.sqrt(variance))
            sigma = jnp.sqrt(jnp.sum(jnp.where(wt > 0, variance, 0)) / jnp.maximum(used, 1.0))
            fit = _autoreg.fit_statistic(pearson, dof, used, jnp.ones((), dtype))
        elif model.inverse_variance:
            sigma = jnp.ones((), dtype)  # weighted residuals of a good fit have unit variance
        else:
            if wt is not None:
                filled = jnp.where(wt > 0, y, model_image(h, c))
            else:
                filled = _schedule.after(y, r) if late else y
            sigma = _autoreg._noise_sigma_or_nan(filled)
            # Quantised data: the noise is at least the quantisation noise q/sqrt(12). The
            # patch estimate reads image structure where the true noise is below it (clean
            # 16-bit data), and there the fit's own residual is the better noise estimate.
            q = _noise_level.quantization_step(y)
            rms = jnp.sqrt(rss / jnp.maximum(used - dof, 1.0))
            floor = jnp.maximum(rms, q / jnp.sqrt(12.0))
            sigma = jnp.where(q > 0, jnp.minimum(jnp.where(jnp.isnan(sigma), floor, sigma),
                                                 floor), sigma)
        if variance is None:
            fit = _autoreg.fit_statistic(rss, dof, used, sigma)
        if model.gain:
            kernel, gain = _weighted_gram.split_gain(h)
        else:
            kernel, gain = h, jnp.ones((), dtype)
        hk = kernel.reshape(kernel_shape)
        if model.standard_errors and face is not None:
            gram_reg, active, gram_data = face
            unc = _uncertainty.kernel_standard_errors(gram_reg, active, sigma, eq=eq,
                                                      gram_data=gram_data)
            se = unc.standard_errors / (jnp.abs(gain) if model.gain else 1.0)
            stats = dict(stats, standard_errors=se.reshape(kernel_shape))
        stats = dict(stats, gain=gain, background=c,
                     centroid_offset=_diagnostics.centroid_offset(hk),
                     border_mass=_diagnostics.border_mass(hk))
        return _Out(kernel, result, opt, iters, hist, errs, objective, jnp.sqrt(rss), L, wts,
                    sigma, fit, stats)

    if solver == "fourier":
        eps = opts["eps"]
        if eps is None:
            eps = jnp.where(weights["tikhonov"] > 0, weights["tikhonov"],
                            fourier.DEFAULT_EPS[mode]).astype(dtype)
        h = _priors.project_prior(fourier.solve(x, y, kernel_shape, mode, eps), prior,
                                  support).ravel()
        r = _conv.valid_conv(xp, h.reshape(kernel_shape)) - y
        size = max_iters + 1
        hist = _two_point(0.5 * jnp.vdot(y, y), 0.5 * jnp.vdot(r, r), size, dtype)
        errs = _two_point(_driver.relative_error(jnp.zeros(n, dtype), ref),
                          _driver.relative_error(h, ref), size, dtype)
        finite = jnp.all(jnp.isfinite(h))
        nan = jnp.asarray(jnp.nan, dtype)
        return finish(h, RESULTS.where(finite, finite), nan, jnp.asarray(1, jnp.int32), hist,
                      errs, hist[1], nan, weights, jnp.sum(h != 0).astype(dtype), {})

    if model.matrix_free:  # FFT convolutions and jax.grad: memory O(image), any kernel size
        mf = _matrix_free.solve_matrix_free(
            xp, y, kernel_shape, prior=prior, support=support, weights=weights,
            pixel_weights=w if model.weighted else None, loss=model.loss,
            loss_options=model.loss_options, solver=solver, solver_options=options,
            max_iters=max_iters, tol=tol, reference=reference, progress=model.progress)
        dof = jnp.sum(mask & (mf.h != 0)).astype(dtype) - (1.0 if eq else 0.0)
        stats = dict(mf.stats, step=1.0 / mf.lipschitz)
        offset, variance = 0.0, None
        if model.loss == "poisson":
            lo = dict(model.loss_options)
            offset = jnp.asarray(lo["background"], dtype)
            mu = model_image(mf.h, None) + offset + lo["read_noise"] ** 2
            variance = jnp.maximum(mu, 1e-6 * jnp.mean(jnp.abs(mu)) + jnp.finfo(dtype).tiny)
        return finish(mf.h, mf.result, mf.optimality, mf.iterations, mf.loss_history,
                      mf.error_history, mf.objective, mf.lipschitz, weights, dof, stats,
                      wt=w0, offset=offset, variance=variance)

    blocks = _block_sizes(n, xp.size, batched)
    wt = w0
    if model.loss == "huber":  # iteratively reweighted exact solves (majorise-minimise)
        spread = jnp.max(jnp.where(w0 > 0, y, -jnp.inf)) - jnp.min(jnp.where(w0 > 0, y, jnp.inf))

        def reweight(_, wt):
            ne_t, elim_t = build(wt)
            reg = _regularizers.quadratic_matrix(weights, jnp.trace(ne_t.gram) / n,
                                                 kernel_shape, dtype)
            kt = exact.solve_qp(ne_t.gram + reg, ne_t.rhs, prior=kt_prior, mask=mask,
                                max_iters=max_iters, tol=tol, block_sizes=blocks).solution
            r = jnp.sqrt(w0) * (y - model_image(kt, background_of(elim_t, kt)))
            scale = _weighted_gram.robust_scale(r, w0)
            delta = jnp.maximum(_weighted_gram.HUBER_C * scale, 1e-6 * spread)
            return w0 * _weighted_gram.huber_weights(r, delta)

        wt = jax.lax.fori_loop(0, model.robust_steps, reweight, w0)

    ne, elim = build(wt)
    # Materialise the normal matrix once: left to itself, XLA fuses its assembly
    # (gathers over the lag terms) into every consumer and recomputes it there. The
    # right-hand side too, so that no image-size buffer of its making is held through
    # the solve (as a slice of a full inverse FFT, fused into the solver's consumers,
    # it kept 36 MB alive at 2048²).
    ne = ne._replace(gram=_schedule.materialize(ne.gram), rhs=_schedule.materialize(ne.rhs))
    scale = jnp.trace(ne.gram) / n
    bmax = jnp.max(jnp.abs(jnp.where(mask, ne.rhs, 0)))

    if auto_terms is not None:  # choose the weight: every candidate from these normal equations
        R = jnp.asarray(_autoreg._basis(auto_terms, kernel_shape), dtype)
        resid = (None if not general else
                 (lambda hh: weighted_residual(hh, background_of(elim, hh), wt)))
        sol = _autoreg.solve_candidates(ne, xp, y, candidates, R, mask, tol,
                                        kernel_shape=kernel_shape, prior=kt_prior,
                                        max_iters=max_iters, history=False, residual=resid,
                                        block_sizes=blocks, progress=model.progress,
                                        stencil=_autoreg.stencil(auto_terms))
        _, idx = _autoreg.select("gcv", sol.rss, sol.dof, sol.penalty, candidates, used,
                                 jnp.asarray(jnp.nan, dtype))
        w_chosen = jax.lax.stop_gradient(candidates[idx])
        weights = {name: (w_chosen if name in auto_terms else jnp.zeros((), dtype))
                   for name in _names.REGULARIZERS}
        reg_matrix = w_chosen * scale * R
        # The chosen candidate once more, from its own active set (one iteration), for
        # the history: recording it for every candidate cost a projection and a product
        # per iteration (~10 % of the whole call).
        qp = exact.solve_qp(ne.gram + reg_matrix, ne.rhs, prior=kt_prior, mask=mask,
                            max_iters=max_iters, tol=tol, history=True,
                            initial_active=sol.qp.active_set[idx], block_sizes=blocks)
        dof = sol.dof[idx]
    else:
        reg_matrix = _regularizers.quadratic_matrix(weights, scale, kernel_shape, dtype)
        qp = None
        dof = None
    gram = ne.gram + reg_matrix
    l1 = (weights["l1"] * scale).astype(dtype) if kt_prior != "simplex" else jnp.zeros((), dtype)
    objective = Objective(gram, ne.rhs, ne.half_yy, l1)
    if solver == "exact":  # reported only: Gershgorin's bound, one pass (no power iterations)
        L = jnp.max(jnp.sum(jnp.abs(gram), axis=1))
    else:
        L = lipschitz(gram)
    prox = _prox(kt_prior, support, l1, L, kernel_shape)
    h0 = _priors.project_prior(jnp.zeros(kernel_shape, dtype), kt_prior, support).ravel()
    regularized = (weights["tikhonov"] > 0) | (weights["smooth"] > 0)

    if solver == "exact":
        if qp is None:
            rhs = ne.rhs - l1 if kt_prior == "nonneg" else ne.rhs
            # Factor only the free block, except under vmap (where every block size
            # would be evaluated).
            # Differentiable: implicit differentiation of the KKT conditions on the
            # final face (jax.grad/jvp/vjp w.r.t. x, y and the weights).
            qp = _implicit.solve_qp_differentiable(
                gram, rhs, prior=kt_prior, mask=mask, max_iters=max_iters, tol=tol,
                max_fallback_iters=opts["max_fallback_iters"], history=True,
                block_sizes=blocks, initial_active=_first_active_set(
                    x, y, kernel_shape, mode, kt_prior, mask, general))
        else:  # the chosen candidate: the same implicit derivative on its face
            # (the weight itself is chosen by an argmin: no derivative w.r.t. it)
            sol_h = _implicit.face_solution(gram, ne.rhs,
                                            jax.lax.stop_gradient(qp.solution),
                                            mask & ~qp.active_set, eq)
            qp = qp._replace(solution=sol_h)
        h = qp.solution
        hist = qp.objective_history + ne.half_yy + l1 * jnp.sum(jnp.abs(h))
        errs = jnp.full(hist.shape, jnp.nan, dtype).at[0].set(_driver.relative_error(h0, ref))
        errs = errs.at[jnp.minimum(qp.iterations, hist.shape[0] - 1)].set(
            _driver.relative_error(h, ref))
        finite = jnp.all(jnp.isfinite(h))
        free = mask & ~qp.active_set
        if dof is None:
            dof = _dof_free(ne.gram, reg_matrix, free, eq, regularized,
                            (scale * weights["tikhonov"], scale * weights["smooth"]),
                            kernel_shape, (), gram)  # the full matrix (blocks compile 4 branches)
        dof = dof + nb + (1.0 if model.gain and eq else 0.0)
        stats = {"active_taps": jnp.sum(mask & qp.active_set).astype(jnp.int32),
                 "optimality_history": qp.optimality_history}
        g = objective.grad(h)  # the same product as the solver's last (XLA computes it once)
        # (G h)'s data part for the residual's norm, with R h from R's stencil (no product)
        data_gh = g + ne.rhs - _shifted_gram.stencil_matvec(
            h, scale * weights["tikhonov"], scale * weights["smooth"], kernel_shape)
        return finish(h, RESULTS.where(qp.converged, finite), qp.kkt_residual,
                      qp.iterations.astype(jnp.int32), hist, errs,
                      objective.value_from_grad(h, g), L, weights, dof, stats,
                      elim, wt, (gram, qp.active_set | ~mask, ne.gram),
                      plain_ne=None if general else ne, plain_gh=data_gh)

    if solver == "gd":
        init, update = gd.make(L)
    elif solver == "fista":
        init, update = fista.make(L, restart=opts["restart"])
    elif solver == "momentum":
        init, update = momentum.make(L, momentum=opts["momentum"])
    else:
        init, update = adam.make(n, max_iters, learning_rate=opts["learning_rate"],
                                 decay_rate=opts["decay_rate"])
    out = _driver.run(init, update, objective, h0, prox, L, bmax, max_iters=max_iters, tol=tol,
                      reference=ref, progress=model.progress)
    free = mask & (out.h != 0)
    dof = jnp.sum(free).astype(dtype) - (1.0 if eq else 0.0) + nb
    return finish(out.h, out.result, out.optimality, out.iterations, out.loss_history,
                  out.error_history, objective.value_from_grad(out.h, objective.grad(out.h)), L,
                  weights, dof, {"step": 1.0 / L}, elim, wt, plain_ne=None if general else ne)


_STATIC = ("kernel_shape", "mode", "prior", "solver", "max_iters", "options", "auto_terms",
           "model")
_core_jit = jax.jit(_core, static_argnames=_STATIC)


@functools.partial(jax.jit, static_argnames=_STATIC + ("shared_original", "sequential"))
def _core_batch(x, y, support, weights, tol, reference, candidates, w, *, shared_original,
                sequential=False, **static):
    # With one shared original, x is not batched: XLA computes its FFT and normal
    # matrix once for the whole batch. The weights are one set for every pair (not
    # batched): with a shared original the regularised matrix, and the exact
    # solver's first factorisation of it where it starts from the full support
    # (below 400 taps; see _first_active_set), are then loop-invariant (computed once).
    args = (x, y, support, weights, tol, reference, candidates, w)
    axes = (None if shared_original else 0, 0, None, None, None,
            None if reference is None else 0, None, None if w is None else 0)
    if not sequential:
        f = functools.partial(_core, batched=True, **static)
        return jax.vmap(f, in_axes=axes)(*args)
    # One pair after the other inside the one compiled call (lax.map): the exact
    # solver can then factor only each pair's free block, which at camera kernel
    # sizes beats a vmap that must factor the full matrix every iteration.
    mapped = [a for a, ax in zip(args, axes) if ax == 0]

    def one(slices):
        it = iter(slices)
        full = [next(it) if ax == 0 else a for a, ax in zip(args, axes)]
        return _core(*full, batched=False, **static)

    return jax.lax.map(one, mapped)


def _sequential_batch(problem, s) -> bool:
    """Whether a batch runs pair by pair (lax.map) rather than vmapped.

    Pair by pair:
      * every batch on CPU devices. Vmapped, a batch's LAPACK calls (the noise
        level's ``eigh``, the exact solver's Cholesky factorisations) are batched,
        and jaxlib runs a batched LAPACK call by handing its matrices to the same
        thread pool that runs the program, then blocking until they are done
        (``ParallelBatchMap``, jaxlib 0.10.2). Two such calls at once on a 2-core
        CPU block both threads of that pool, and the call never returns: a PSF field
        and a batch of 8 pairs with ``"auto"`` (128², 15×15) hung so, in their stacks
        one thread in ``dsyevd`` and the other in ``dpotrf``, both waiting. Pair by
        pair, each call is one matrix and runs on its caller's thread. It is also faster where the free sets are small: the exact solver
        factors only each pair's free block (84 against 321 ms a pair at 255², box
        31), and a first-order solver stops each pair when that pair converges;
      * the exact solver above 256 taps on one accelerator, for the free blocks.
    """
    devices = jax.devices()
    if all(d.platform == "cpu" for d in devices):
        return True
    return s.solver == "exact" and problem.n_taps > 256 and len(devices) == 1


# ----------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------

def _reference(reference, kshape, dtype, lead):
    """Validates an optional true kernel (broadcast over a batch)."""
    if reference is None:
        return None
    ref = _validation.as_float_array("reference", reference, ndim=None, dtype=dtype)
    if tuple(ref.shape[-2:]) != kshape or ref.ndim not in (2, 2 + len(lead)):
        raise ValueError(f"reference kernel has shape {tuple(ref.shape)}, expected "
                         f"{lead + kshape} or {kshape}.")
    if _validation.is_concrete(ref) and not float(jnp.linalg.norm(ref)) > 0:
        raise ValueError("reference kernel is all zeros; relative errors would be undefined.")
    return jnp.broadcast_to(ref, lead + kshape)


def _candidates(auto: bool, dtype):
    if not auto:
        return None
    return jnp.asarray(_autoreg.DEFAULT_CANDIDATES, dtype)


def _to_result(out: _Out, s: _Settings, problem, solver_requested, lead=()):
    kshape = problem.kernel_shape
    kernel = out.h.reshape(lead + kshape)
    if s.orientation == "correlation":
        kernel = kernel[..., ::-1, ::-1]
    stats = dict(out.stats)
    gain, background = stats.pop("gain"), stats.pop("background")
    if s.orientation == "correlation":  # measured on the kernel as returned
        stats["centroid_offset"] = _diagnostics.centroid_offset(kernel)
        if "standard_errors" in stats:
            stats["standard_errors"] = stats["standard_errors"][..., ::-1, ::-1]
    return KernelEstimate(
        kernel=kernel, result=out.result, optimality=out.optimality, gain=gain,
        background=background,
        iterations=out.iterations, loss_history=out.loss_history,
        error_history=out.error_history, objective=out.objective,
        residual_norm=out.residual_norm, lipschitz=out.lipschitz,
        regularization={k: jnp.asarray(v) for k, v in out.weights.items()},
        noise_sigma=out.noise_sigma, fit_statistic=out.fit_statistic, stats=stats,
        solver=s.solver, solver_requested=solver_requested, prior=s.prior, mode=problem.mode,
        kernel_shape=kshape, max_iters=s.max_iters, tol=s.tol, solver_options=s.options,
        background_model=_background_name(s.model.background), loss=s.model.loss,
        orientation=s.orientation)


def _background_name(degree):
    return {None: "none", 0: "constant", 1: "plane"}.get(degree, f"degree {degree}")


def _raise_unless_successful(est: KernelEstimate) -> None:
    if not _validation.is_concrete(est.result):
        return  # inside a user's transformation: the code is in est.result
    codes = np.atleast_1d(np.asarray(est.result))
    if np.all(codes == RESULTS.successful):
        return
    bad = int(np.sum(codes != RESULTS.successful))
    where = f" ({bad} of {codes.size} pairs)" if codes.size > 1 else ""
    raise EstimateError(f"the estimate did not succeed{where}: {est.message}. "
                        "Pass throw=False to get the result with its code instead.")


def _weights_arrays(weights, dtype):
    """The regulariser weights as 0-d arrays (traced: a new weight does not recompile).

    Plain numbers become NumPy arrays, which the compiled call takes as they are
    (a JAX array each cost 35 µs); JAX arrays and tracers (a derivative with
    respect to a weight) stay JAX arrays.
    """
    return {k: (jnp.asarray(v, dtype) if isinstance(v, (jax.Array, jax.core.Tracer))
                else np.asarray(v, dtype)) for k, v in weights.items()}


def estimate_kernel(x, y, kernel_shape, *, max_kernel_shape=None, mode: _names.Mode = "valid",
                    prior: _names.Prior = "simplex", solver: _names.Solver = "auto",
                    regularization=None, max_iters: int | None = None,
                    tol: float | None = None, dtype=None, support=None, reference=None,
                    solver_options: dict | None = None, mask=None, weights=None,
                    saturation=None, nan: str = "raise", gain: bool = False,
                    background="none", loss: str = "l2", loss_options: dict | None = None,
                    orientation: str = "convolution", standard_errors: bool = False,
                    throw: bool = True, progress=None) -> KernelEstimate:
    """Estimates the kernel ``h`` with ``y ≈ conv2d(x, h, mode)``.

    Minimises ``½||conv2d(x, h) − y||² + regularisation`` over kernels in the
    prior's set.

    Args:
      x: original image, (m, n).
      y: blurred image: (m-k+1, n-l+1) for ``"valid"``, (m, n) for ``"same"``
        (only its valid part is used, so unknown borders never bias the
        kernel) or ``"circular"``, (m+k-1, n+l-1) for ``"full"``.
      kernel_shape: (k, l), an int, or ``"auto"``: the box from the data (see
        :mod:`jdeconv._kernel_size`): estimated on a generous box
        (``max_kernel_shape``), then solved again in the smallest box centred
        as the geometry expects that holds the kernel's support. The result's
        ``stats`` report the box, the centroid offset, the border mass and a
        criterion-against-size curve. In ``"valid"``/``"full"`` the shapes fix
        the box and ``"auto"`` reads it off.
      max_kernel_shape: the generous box of ``kernel_shape="auto"``.
      mode: ``"valid"``, ``"same"``, ``"full"`` or ``"circular"``.
      prior: ``"simplex"`` (h >= 0, sum 1; the default: physical PSFs),
        ``"nonneg"``, ``"sum_to_one"`` or ``"none"``.
      solver: ``"auto"`` (the exact solver while the kernel has at most 4096
        taps, else FISTA on the matrix-free path; FISTA for ``loss="poisson"``;
        the result's ``solver`` says which ran), ``"exact"``
        (active set on the normal equations: the constrained optimum to
        solver precision), ``"fista"``, ``"gd"``, ``"momentum"``, ``"adam"``,
        or ``"fourier"`` (fast approximate frequency-domain division).
      regularization: None, weights ``{"tikhonov": w, "smooth": w, "l1": w}``
        relative to the image energy (see :mod:`jdeconv._regularizers`), or
        ``"auto"``: the smoothness weight chosen from the data alone by
        generalised cross-validation (see :func:`jdeconv.choose_regularization`),
        inside the same compiled call, from the same normal equations.
      max_iters: iteration cap (default 100 for exact, 5000 for first-order).
      tol: tolerance on the optimality measure (``KernelEstimate.optimality``;
        default 1e-9 for exact and 1e-10 for first-order solvers in float64,
        1e-4 / 1e-6 in float32).
      dtype: None (keep the inputs' float type), ``"float32"`` or ``"float64"``.
      support: optional (k, l) bool mask of taps allowed to be non-zero.
      reference: optional true kernel (k, l); its relative error per iteration
        is recorded in ``error_history`` (convergence studies).
      solver_options: the solver's hyperparameters, e.g. ``{"restart": False}``
        for fista, ``{"momentum": 0.8}``, ``{"learning_rate": 5.0,
        "decay_rate": 0.5}`` for adam, ``{"eps": 1e-3}`` for fourier,
        ``{"max_fallback_iters": 500}`` for exact (:data:`SOLVER_OPTIONS`);
        ``{"robust_steps": 10}`` with ``loss="huber"`` and the exact solver.
        The first-order solvers take ``{"matrix_free": True/False}``: by
        default (None) they run matrix-free (FFT convolutions and
        ``jax.grad``, memory O(image), see :mod:`jdeconv._matrix_free`) above
        4096 taps and for Huber/Poisson, and on the normal matrix otherwise.
      standard_errors: also return per-tap standard errors of the kernel in
        ``stats["standard_errors"]`` (exact solver): σ·sqrt(diag(K G K)) on the
        free taps, K the inverse of the regularised normal matrix on the free
        face (projected on Σh = 1 when the prior fixes it), σ the noise level;
        0 for taps at a bound. The variance only: a regularised estimate is
        also biased (see :func:`jdeconv.kernel_standard_errors`).
      mask: boolean image of ``y``'s shape, True = use the pixel (saturated
        highlights, hot pixels, cosmic rays, moving objects). The masked
        normal equations are still formed without im2col.
      weights: per-pixel inverse variances of ``y``'s shape, or ``"poisson"``
        (variance taken from ``y``, in counts).
      saturation: a level: pixels of ``y`` at or above it, and pixels of ``y``
        whose footprint covers a pixel of ``x`` at or above it, are not used.
      nan: ``"raise"`` (NaN in ``y`` is an error) or ``"mask"`` (NaN pixels of
        ``y`` are not used).
      gain: fit a free scale ``g`` jointly: ``y ≈ g·(h∗x) + background``; the
        prior stays on ``h`` (the result's ``gain``).
      background: ``"none"``, ``"constant"``, ``"plane"`` or a polynomial
        degree of the pixel position, fitted jointly and exactly (the
        result's ``background`` coefficients, Legendre basis in ``[-1, 1]``).
      loss: ``"l2"``, ``"huber"`` (robust to outliers no mask names: with the
        exact solver, iteratively reweighted exact solves, Huber threshold
        1.345 robust σ; with a first-order solver, the Huber loss itself on
        the matrix-free path) or ``"poisson"`` (the likelihood of photon
        counts, optionally with Gaussian read noise; ``x`` and ``y`` in counts,
        nonnegative; matrix-free, FISTA by default; ``fit_statistic`` is
        then Pearson's χ² per degree of freedom and ``noise_sigma`` the rms
        Poisson σ of the model).
      loss_options: options of the matrix-free data terms
        (:data:`LOSS_OPTIONS`): ``{"read_noise": σ_r, "background": b,
        "floor": ε}`` for Poisson (counts), ``{"delta": δ, "rounds": 3,
        "warmup": 100}`` for Huber.
      orientation: ``"convolution"`` (default) or ``"correlation"``: the
        returned kernel, and any ``support``/``reference`` given, are flipped
        180° (the convention of kernels published as correlation filters).
      throw: raise :class:`jdeconv.EstimateError` with the result's message
        when the solve does not succeed (as optimistix does); ``False``
        returns the result with its :class:`jdeconv.RESULTS` code. Inside a
        user's ``jax.jit`` the code is always returned.
      progress: None (default), ``True`` (a tqdm bar on stderr) or a callable
        ``(stage, done, total)``: reports from inside the compiled call the
        iterations of a first-order solve (every 25) and the candidate weights
        of ``regularization="auto"`` (see :mod:`jdeconv._progress`). The loops
        are then compiled with the callbacks (once; a program of its own).

    Returns:
      A :class:`KernelEstimate` (kernel, result, optimality, iterations,
      histories, residual_norm, noise_sigma, fit_statistic, ... and the
      settings used).

    Raises:
      ValueError, TypeError: for inputs that do not fit (see messages).
      EstimateError: with ``throw=True``, when the solve did not succeed.

    Example:
      >>> import jdeconv
      >>> x = jdeconv.data.shapes_image((64, 64), seed=1, n_shapes=6)
      >>> h = jdeconv.data.gaussian_kernel(7, 1.0)
      >>> est = jdeconv.estimate_kernel(x, jdeconv.conv2d(x, h), 7)
      >>> est.solver, bool(est.converged)
      ('exact', True)
    """
    kw = dict(mode=mode, prior=prior, solver=solver, regularization=regularization,
              max_iters=max_iters, tol=tol, dtype=dtype, support=support, reference=reference,
              solver_options=solver_options, mask=mask, weights=weights, saturation=saturation,
              nan=nan, gain=gain, background=background, loss=loss, loss_options=loss_options,
              orientation=orientation, standard_errors=standard_errors, throw=throw,
              progress=progress)
    auto = isinstance(kernel_shape, str)
    checks = {}  # host-side checks of the inputs, taken while the estimate runs if it can

    def input_checks(kshape):
        return dict(inputs=_diagnostics.input_messages(x, y),
                    sharpening=_sharpening_terms(x, y, prior, loss, mask, mode, kshape))

    if auto:
        if kernel_shape != "auto":
            raise ValueError(f"kernel_shape must be an int, a pair (k, l) or 'auto', got "
                             f"{kernel_shape!r}.")
        est = _kernel_size.estimate_auto(_estimate_one, x, y, max_kernel_shape=max_kernel_shape,
                                         **kw)
        errors = None
    else:
        if max_kernel_shape is not None:
            raise ValueError("max_kernel_shape applies only with kernel_shape='auto'.")

        def host_checks(problem):  # taken while the compiled program runs
            if _validation.is_concrete(x) and _validation.is_concrete(y):
                checks.update(input_checks(problem.kernel_shape))

        est, errors = _estimate_one(x, y, kernel_shape, border_errors=True, during=host_checks,
                                    **kw)
    if all(_validation.is_concrete(a) for a in (est.result, est.kernel, x, y)):
        if not checks:  # not taken beside the program (large images, automatic shape)
            checks = input_checks(np.shape(est.kernel)[-2:])
        _diagnostics.warn(checks["inputs"]
                          + _diagnostics.estimate_messages(est, given_shape=not auto,
                                                           standard_errors=errors)
                          + _sharpening(est, checks["sharpening"])
                          + _diagnostics.poisson_scale_messages(y, loss, _used(mask)))
    return est


def _host_work_beside(problem) -> bool:
    """Whether the host-side input checks run while the compiled program runs.

    Below :data:`jdeconv._schedule.LARGE_PIXELS` per image, yes: at 512² that
    took 2.5-3 ms off a 21-25 ms call. Above, they run after it: their
    image-size temporaries (a centred float64 copy, 32 MB at 2048²) added 4 MiB
    to the peak of a 2048² estimate from the command line, for about 25 ms of
    a 700 ms call.
    """
    return problem.x.shape[-2] * problem.x.shape[-1] < _schedule.LARGE_PIXELS


def _used(mask):
    """A user's boolean mask as an array, or None (a string names a mask file elsewhere)."""
    return None if mask is None or isinstance(mask, str) else np.asarray(mask, bool)


def _sharpening_terms(x, y, prior, loss, mask, mode, kernel_shape):
    """The image sums of the swapped-images check, or None where it does not apply.

    It applies to nonnegative kernels and Gaussian noise levels.
    """
    if not _diagnostics.sharpening_applies(prior, loss):
        return None
    used = _used(mask)
    if used is not None and used.shape != np.shape(y):
        return None
    return _diagnostics.sharpening_terms(x, y, used, kernel_shape=kernel_shape, mode=mode)


def _sharpening(est, terms) -> list[str]:
    """The swapped-images warning of a successful estimate, from :func:`_sharpening_terms`."""
    if terms is None or int(np.asarray(est.result)):
        return []
    return _diagnostics.sharpening_message(_diagnostics.sharpening_ratio_from(
        terms, float(np.asarray(est.noise_sigma))))


def _estimate_one(x, y, kernel_shape, *, mode, prior, solver, regularization, max_iters, tol,
                  dtype, support, reference, solver_options, mask, weights, saturation, nan,
                  gain, background, loss, loss_options, orientation, standard_errors, throw,
                  progress=None, border_errors=False, during=None):
    """One estimate; with ``border_errors``, ``(estimate, standard errors or None)``.

    ``during``: optional host work, ``during(problem)``, done while the
    estimate's compiled program runs (see
    :func:`jdeconv._blas_threads.run_beside_host_work`).
    """
    support, reference = _oriented_inputs(orientation, support, reference)
    problem = _problem.make_problem(x, y, kernel_shape, mode=mode, dtype=dtype, support=support,
                                    mask=mask, weights=weights, saturation=saturation, nan=nan)
    s = _settings(problem, prior, solver, regularization, max_iters, tol, solver_options,
                  gain=gain, background=background, loss=loss, orientation=orientation,
                  standard_errors=standard_errors, loss_options=loss_options)
    dt = problem.dtype
    ref = _reference(reference, problem.kernel_shape, dt, lead=())
    reporter = _progress.as_reporter(progress)
    if reporter is not None:  # compile the loops with their progress callbacks
        s = s._replace(model=s.model._replace(progress=True))

    def solve(s, weights, candidates, host_work=None):
        args = (problem.x, problem.y, problem.support, weights, jnp.asarray(s.tol, dt), ref,
                candidates, problem.pixel_weights)
        static = _static(problem, s)
        if problem.x.size >= _host_memory.RELEASE_FROM_PIXELS:  # the load's freed memory, first
            _host_memory.compile_then_release(_core_jit, *args, **static)
        out, _ = _blas_threads.run_beside_host_work(host_work, _core_jit, *args, **static)
        if s.model.progress:  # finish inside the reporting context
            out = jax.block_until_ready(out)
        return _to_result(out, s, problem, solver)

    w = _weights_arrays(s.weights, dt)
    host_work = (functools.partial(during, problem)
                 if during is not None and _host_work_beside(problem) else None)
    if reporter is None:
        est = solve(s, w, _candidates(s.auto, dt), host_work)
    else:
        with _progress.reporting(reporter):
            try:
                est = solve(s, w, _candidates(s.auto, dt), host_work)
            finally:
                if hasattr(reporter, "close"):
                    reporter.close()
    if throw:
        _raise_unless_successful(est)
    if border_errors:
        return est, _border_errors(solve, s, est, problem)
    return est


def _border_errors(solve, s: _Settings, est: KernelEstimate, problem):
    """Per-tap standard errors for the border-mass check, or None where there are none.

    Computed only where the plain check would warn (more than
    ``BORDER_MASS_WARN`` of a kernel's mass on its border), so that a signed or
    noisy kernel whose border taps are noise does not get the warning: for the
    plain least-squares model on the host from the data's normal matrix (one
    small compiled program per shape), otherwise (gain, background, weights, a
    robust loss) by one more exact solve at the weights the estimate used, with
    the face's inverse. ``solve(s, weights, candidates)`` runs the estimate's
    own problem; None (batches and fields: no second vmapped solve, whose
    compile would cost every flagged batch seconds) means no standard errors
    for those models, which keep the plain check.
    """
    if s.solver != "exact" or not _validation.is_concrete(est.kernel):
        return None
    if "standard_errors" in est.stats:
        return np.asarray(est.stats["standard_errors"])
    k, l = est.kernel_shape
    ok = np.asarray(est.result) == RESULTS.successful
    need = ok & (np.asarray(_diagnostics.border_mass(est.kernel)) > _diagnostics.BORDER_MASS_WARN)
    if min(k, l) < 3 or not np.any(need):
        return None
    m = s.model
    if not (m.gain or m.background is not None or m.weighted or m.loss != "l2"):
        return _plain_border_errors(problem, s, est, need)
    if solve is None:
        return None
    again = s._replace(auto=False, model=m._replace(standard_errors=True, progress=False))
    fixed = {name: jnp.asarray(v) for name, v in est.regularization.items()}
    return np.asarray(solve(again, fixed, None).stats["standard_errors"])


def _plain_border_errors(problem, s: _Settings, est: KernelEstimate, need):
    """Standard errors of the plain model's flagged kernels (zero for the others), on the host."""
    kshape = est.kernel_shape
    n = kshape[0] * kshape[1]
    h = np.asarray(est.kernel, np.float64)
    if s.orientation == "correlation":  # the solve's own orientation
        h = h[..., ::-1, ::-1]
    flat = h.reshape(-1, n)
    need = np.asarray(need).reshape(-1)
    sigma = np.asarray(est.noise_sigma, np.float64).reshape(-1)
    reg = {name: np.asarray(v, np.float64).reshape(-1) for name, v in est.regularization.items()}
    support = (np.ones(n, bool) if problem.support is None
               else np.asarray(problem.support, bool).reshape(n))
    out = np.zeros_like(flat)
    cache = {}
    for b in np.flatnonzero(need):
        xb = problem.x if problem.x.ndim == 2 else problem.x[b]
        key = 0 if problem.x.ndim == 2 else b
        if key not in cache:
            cache[key] = np.asarray(_gram._gram_jit(xb, kshape, problem.solve_mode), np.float64)
        G = cache[key]
        w_tik, w_smooth = (reg[name][b % reg[name].size] for name in ("tikhonov", "smooth"))
        Gr = G + np.trace(G) / n * (w_tik * np.eye(n) + w_smooth * _regularizers.laplacian(kshape)
                                    if (w_tik or w_smooth) else 0.0)
        out[b] = _uncertainty.face_standard_errors(G, Gr, support & (flat[b] != 0), sigma[b],
                                                   eq=s.prior in _names.EQUALITY_PRIORS)
    out = out.reshape(h.shape)
    return out[..., ::-1, ::-1] if s.orientation == "correlation" else out


def _static(problem, s: _Settings) -> dict:
    return dict(kernel_shape=problem.kernel_shape, mode=problem.solve_mode, prior=s.prior,
                solver=s.solver, max_iters=s.max_iters, options=s.options,
                auto_terms=("smooth",) if s.auto else None, model=s.model)


def _flip(a):
    """180° rotation of a kernel (convolution <-> correlation orientation)."""
    return None if a is None else np.asarray(a)[..., ::-1, ::-1]


def _oriented_inputs(orientation, support, reference):
    if orientation == "correlation":
        return _flip(support), _flip(reference)
    _validation.check_choice("orientation", orientation, ORIENTATIONS)
    return support, reference





def _batch_sharding(batch_size):
    """NamedSharding of the batch axis over all devices, or None on one device.

    Under ``jax.distributed`` the devices are the global ones (every process's);
    the batch is padded to a multiple of their number.
    """
    devices = jax.devices()
    if len(devices) < 2:
        return None, batch_size
    padded = -(-batch_size // len(devices)) * len(devices)
    mesh = Mesh(np.asarray(devices), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), padded


def _multiprocess(a) -> bool:
    """Whether ``a`` must be assembled as a global array (several processes, concrete data)."""
    return jax.process_count() > 1 and _validation.is_concrete(a)


def _place(a, sharding):
    """Places an array on ``sharding`` (None stays None).

    One process: ``jax.device_put``. Several processes (``jax.distributed``):
    every process holds the same full array, and each contributes the slices of
    its own devices (``jax.make_array_from_callback``).
    """
    if a is None:
        return a
    if not _multiprocess(a):
        return jax.device_put(a, sharding)
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _core_sharded(sharding, x, y, support, weights, tol, reference, candidates, w, *,
                  shared_original, **static):
    """:func:`_core_batch` with the batch split over the devices of ``sharding``.

    Each device runs the batch core on its own pairs (``shard_map``; pair by pair on
    CPU devices, see :func:`_sequential_batch`): the pairs
    are independent, so the compiled program has no collectives (a batch
    sharded by the partitioner instead gathers inside the solver's loops, and
    on several CPU devices it deadlocks). The unbatched inputs are replicated.
    """
    args = (x, y, support, weights, tol, reference, candidates, w)
    batched = (not shared_original, True, False, False, False, True, False, True)
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    args = tuple(jax.tree_util.tree_map(lambda a, b=b: _place(a, sharding if b else replicated),
                                        arg) for arg, b in zip(args, batched))
    return _core_shard_map(*args, mesh=sharding.mesh, batched=batched,
                           shared_original=shared_original, **static)


@functools.partial(jax.jit, static_argnames=_STATIC + ("shared_original", "sequential", "mesh",
                                                       "batched"))
def _core_shard_map(*args, mesh, batched, **static):
    specs = tuple(PartitionSpec("batch") if b else PartitionSpec() for b in batched)
    per_device = functools.partial(_core_batch, **static)
    if hasattr(jax, "shard_map"):
        mapped = jax.shard_map(per_device, mesh=mesh, in_specs=specs,
                               out_specs=PartitionSpec("batch"), check_vma=False)
    else:  # jax < 0.7
        from jax.experimental.shard_map import shard_map
        mapped = shard_map(per_device, mesh=mesh, in_specs=specs,
                           out_specs=PartitionSpec("batch"), check_rep=False)
    return mapped(*args)


def _gather_batch(out, sharding):
    """With several processes, the full batch result on every process (one all-gather)."""
    leaves = jax.tree_util.tree_leaves(out)
    if sharding is None or not leaves or not _multiprocess(leaves[0]):
        return out
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    full = jax.jit(lambda t: t, out_shardings=replicated)(out)
    return jax.tree_util.tree_map(lambda a: a.addressable_data(0), full)


def estimate_kernels(xs, ys, kernel_shape, *, mode: _names.Mode = "valid",
                     prior: _names.Prior = "simplex", solver: _names.Solver = "auto",
                     regularization=None, max_iters: int | None = None,
                     tol: float | None = None, dtype=None, support=None, reference=None,
                     solver_options: dict | None = None, mask=None, weights=None,
                     saturation=None, nan: str = "raise", gain: bool = False,
                     background="none", loss: str = "l2", loss_options: dict | None = None,
                     orientation: str = "convolution", standard_errors: bool = False,
                     throw: bool = False) -> KernelEstimate:
    """Estimates one kernel per pair of a batch in one jitted call.

    Same arguments as :func:`estimate_kernel`, with ``xs`` (B, m, n) and ``ys``
    (B, ...) stacked pairs of equal shapes, or ONE original ``xs`` (m, n) for
    every blurred image (a focus sweep, a video, many exposures of one target):
    its normal matrix is then formed once for the whole batch. ``reference``,
    if given, is (B, k, l) or one (k, l) kernel shared by all pairs. With
    ``regularization="auto"`` each pair gets its own weight, chosen inside the
    same call. On CPU devices the call solves the pairs one after the other
    (``lax.map``: a vmapped batch's batched LAPACK calls can deadlock jaxlib's
    thread pool, see the README's "Known issues"); on an accelerator it vmaps
    them. When several devices are visible (GPUs, or CPU devices
    from ``JAX_NUM_CPU_DEVICES=N`` or
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) the batch is
    sharded over all of them with ``jax.sharding`` (CPU devices each solve
    their pairs one after the other, so that every core works: see the README's
    "Running on a GPU or a cluster"); under ``jax.distributed`` every process
    passes the same full batch; each computes the pairs on its own devices and
    every process returns the whole batch's result. Results
    equal the per-pair :func:`estimate_kernel` to float tolerance and each
    kernel satisfies its own prior. ``throw`` defaults to False here: a batch
    returns one :class:`jdeconv.RESULTS` code per pair.

    Returns:
      A :class:`KernelEstimate` whose array fields have a leading batch axis.

    Example:
      >>> import numpy as np, jdeconv
      >>> xs = np.stack([jdeconv.data.noise_target((32, 32), seed=s) for s in range(3)])
      >>> h = jdeconv.data.gaussian_kernel(7, 1.0)
      >>> ys = np.stack([np.asarray(jdeconv.conv2d(x, h)) for x in xs])
      >>> jdeconv.estimate_kernels(xs, ys, 7).kernel.shape
      (3, 7, 7)
    """
    support, reference = _oriented_inputs(orientation, support, reference)
    given = (xs, ys, mask)
    problem = _problem.make_problem(xs, ys, kernel_shape, mode=mode, dtype=dtype,
                                    support=support, batched=True, mask=mask, weights=weights,
                                    saturation=saturation, nan=nan)
    s = _settings(problem, prior, solver, regularization, max_iters, tol, solver_options,
                  gain=gain, background=background, loss=loss, orientation=orientation,
                  standard_errors=standard_errors, loss_options=loss_options)
    dt = problem.dtype
    batch = problem.batch_size
    xs, ys, pw = problem.x, problem.y, problem.pixel_weights
    w = _weights_arrays(s.weights, dt)  # one set for the whole batch
    ref = _reference(reference, problem.kernel_shape, dt, lead=(batch,))
    sharding, padded = _batch_sharding(batch)

    def grow(a):  # repeat the last pair so every device gets equal work
        if padded == batch:
            return a
        return jnp.concatenate([a, jnp.repeat(a[-1:], padded - batch, axis=0)])

    ys, pw = grow(ys), None if pw is None else grow(pw)
    xs = xs if problem.shared_original else grow(xs)
    ref = None if ref is None else grow(ref)
    # Several devices: each runs its share of the pairs; under jax.distributed every
    # process passes the full batch and gets the full result back.
    core = _core_batch if sharding is None else functools.partial(_core_sharded, sharding)
    args = (xs, ys, problem.support, w, jnp.asarray(s.tol, dt), ref, _candidates(s.auto, dt), pw)
    static = dict(shared_original=problem.shared_original,
                  sequential=_sequential_batch(problem, s), **_static(problem, s))
    if sharding is None and xs.shape[-2] * xs.shape[-1] >= _host_memory.RELEASE_FROM_PIXELS:
        _host_memory.compile_then_release(core, *args, **static)

    def sharpening_terms():
        return _batch_sharpening_terms(*given, prior, loss, mode, problem.kernel_shape)

    beside = _host_work_beside(problem)  # host checks while it runs, or after it
    out, sharpening = _blas_threads.run_beside_host_work(
        sharpening_terms if beside else None, core, *args, **static)
    if not beside:
        sharpening = sharpening_terms()
    out = _gather_batch(out, sharding)  # every process returns the whole batch
    if padded != batch:
        out = jax.tree_util.tree_map(lambda a: a[:batch], out)
    est = _to_result(out, s, problem, solver, lead=(batch,))
    if throw:
        _raise_unless_successful(est)
    if _validation.is_concrete(est.result):
        _diagnostics.warn(_diagnostics.batch_messages(est, _border_errors(None, s, est, problem))
                          + _batch_sharpening(sharpening, est)
                          + _diagnostics.poisson_scale_messages(given[1], loss,
                                                                _used(given[2])))
    return est


def _batch_sharpening_terms(xs, ys, mask, prior, loss, mode, kernel_shape):
    """Per pair, the image sums of the swapped-images check (None where it does not apply)."""
    if not _diagnostics.sharpening_applies(prior, loss) or not all(
            _validation.is_concrete(a) for a in (xs, ys)):
        return None
    ys = np.asarray(ys)
    xs = np.asarray(xs)
    masks = None if mask is None or isinstance(mask, str) else np.asarray(mask, bool)
    terms = []
    for b in range(ys.shape[0]):
        used = None if masks is None else (masks if masks.ndim == 2 else masks[b])
        if used is not None and used.shape != ys.shape[1:]:
            used = None
        x = xs if xs.ndim == 2 else xs[b]
        terms.append(_diagnostics.sharpening_terms(
            x, ys[b], used, kernel_shape=kernel_shape, mode=mode,
            original_sharpness=terms[0][0] if xs.ndim == 2 and b and terms[0] else None))
    return terms


def _batch_sharpening(terms, est) -> list[str]:
    """The swapped-images warning of a batch: how many pairs have a sharper blurred image."""
    if terms is None:
        return []
    sigma = np.asarray(est.noise_sigma, np.float64).reshape(-1)
    ok = np.asarray(est.result).reshape(-1) == 0
    bad = [b for b, t in enumerate(terms) if ok[b] and _diagnostics.sharpening_ratio_from(
        t, sigma[b]) > _diagnostics.SHARPENING_WARN]
    if not bad:
        return []
    return [f"{len(bad)} of {len(terms)} pairs have a blurred image sharper than their "
            f"original (pairs {', '.join(map(str, bad[:8]))}{', ...' if len(bad) > 8 else ''}): "
            "a blur cannot sharpen, so they are probably swapped (or hold unmasked outliers)."]
