"""Design a calibration target by gradient descent through the kernel estimate.

Usage::

    python experiments/calibration_target.py [--steps 300] [--sigma 0.02] [--seed 0]

A 48x48 target ``x = sigmoid(theta)`` (printable: values in [0, 1]) is optimised so
that the expected error of the estimated 5x5 kernel falls.  For a known kernel
``h`` (Gaussian, sigma 1.2 px), noise ``N(0, sigma^2)`` in the blurred image, the
simplex prior and a light smoothness regularisation ``w s L``, the expected squared
error of the estimate is, on the estimate's active face,

    E ||h_est - h||^2 = ||h_clean(x) - h||^2 + sigma^2 tr(K_e G K_e)
                      = bias^2 + variance,

with ``h_clean(x)`` the estimate from the noise-free pair (differentiated through the
exact solver by implicit differentiation, :mod:`jdeconv._implicit`) and
``sigma^2 K_e G K_e`` the covariance of the estimate
(:func:`jdeconv._uncertainty.kernel_standard_errors`).  ``jax.grad`` of the root of
this bound with respect to ``theta`` flows through the covariance, the
differentiable solve and the FFT normal equations to the pixels; optax Adam takes the
steps.  The bound is printed before and after, with a Monte Carlo check (the RMS
error of the actual estimates over 64 noise draws) and a random binary target of
the same size for reference.  Runs in well under a minute on a CPU.

Result (CPU, float64, defaults): from a smooth low-contrast start (bound 0.157,
cond(G) 3e9) the bound falls 8x to 0.019 (cond 36) and the pixels saturate to
black and white; the Monte Carlo error agrees with the bound to 1-7 %.  A random
binary target reaches 0.018: for this objective (which rewards contrast and a
flat spectrum) random binary noise is already near-optimal, and gradient design
recovers that, it does not beat it.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jdeconv  # noqa: E402
from jdeconv._implicit import solve_qp_differentiable  # noqa: E402
from jdeconv._regularizers import laplacian  # noqa: E402
from jdeconv._uncertainty import (  # noqa: E402
    conditioning_report,
    kernel_standard_errors,
    make_target,
)

SHAPE = (48, 48)
KS = (5, 5)
N = KS[0] * KS[1]
PRIOR = "simplex"
SMOOTH = 1e-3  # relative weight of the smoothness term


def true_kernel():
    a = np.arange(5.0) - 2
    h = np.exp(-(a[:, None] ** 2 + a[None, :] ** 2) / (2 * 1.2**2))
    return jnp.asarray(h / h.sum())


def _problem(x, h_true):
    """Regularised normal equations of the clean pair (x, conv2d(x, h_true))."""
    y = jdeconv.conv2d(x, h_true)
    ne = jdeconv.normal_equations(x, y, KS)
    s = jnp.trace(ne.gram) / N
    reg = SMOOTH * s * jnp.asarray(laplacian(KS))
    return ne, reg


def error_bound(x, h_true, sigma):
    """(bound, bias, rms standard error): bound^2 = bias^2 + sigma^2 tr(K_e G K_e)."""
    ne, reg = _problem(x, h_true)
    res = solve_qp_differentiable(ne.gram + reg, ne.rhs, prior=PRIOR)
    bias2 = jnp.sum((res.solution - h_true.ravel()) ** 2)
    unc = kernel_standard_errors(ne.gram + reg, res.active_set, sigma, eq=True,
                                 gram_data=ne.gram)
    var = jnp.trace(unc.covariance)
    return jnp.sqrt(bias2 + var), jnp.sqrt(bias2), jnp.sqrt(var)


@jax.jit
def monte_carlo_rms(x, h_true, sigma, key):
    """RMS error ||h_est - h|| of the actual estimates over 64 noise draws."""
    ne, reg = _problem(x, h_true)
    y = jdeconv.conv2d(x, h_true)

    def one(k):
        yn = y + sigma * jax.random.normal(k, y.shape, y.dtype)
        rhs = jdeconv.normal_equations(x, yn, KS).rhs
        h = solve_qp_differentiable(ne.gram + reg, rhs, prior=PRIOR).solution
        return jnp.sum((h - h_true.ravel()) ** 2)

    return jnp.sqrt(jnp.mean(jax.vmap(one)(jax.random.split(key, 64))))


def describe(name, x, h_true, sigma, key):
    bound, bias, sd = (float(v) for v in jax.jit(error_bound)(x, h_true, sigma))
    rms = float(monte_carlo_rms(x, h_true, sigma, key))
    cond = conditioning_report(np.asarray(x), KS).condition_number
    rel = float(jnp.linalg.norm(h_true))
    print(f"{name:<22} bound {bound / rel:9.3e}  (bias {bias / rel:8.2e}, std {sd / rel:8.2e})"
          f"  Monte Carlo {rms / rel:9.3e}  cond(G) {cond:9.3g}  contrast {float(jnp.std(x)):.3f}")
    return bound


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--sigma", type=float, default=0.02)
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    h_true = true_kernel()
    sigma = jnp.asarray(args.sigma)
    key = jax.random.PRNGKey(args.seed)

    # start: a smooth, low-contrast random image (a poor target: fine detail is missing)
    rng = np.random.default_rng(args.seed)
    f = np.fft.fftfreq(SHAPE[0])
    lowpass = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * 0.06**2))
    smooth = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal(SHAPE)) * lowpass))
    theta = jnp.asarray(smooth / smooth.std())

    def loss(th):
        return error_bound(jax.nn.sigmoid(th), h_true, sigma)[0] / jnp.linalg.norm(h_true)

    opt = optax.adam(args.lr)

    @jax.jit
    def step(th, state):
        value, g = jax.value_and_grad(loss)(th)
        updates, state = opt.update(g, state)
        return optax.apply_updates(th, updates), state, value

    def optimise(th):
        state = opt.init(th)
        history = []
        for i in range(args.steps):
            th, state, value = step(th, state)
            if i % max(args.steps // 5, 1) == 0:
                history.append(f"{i}: {float(value):.3e}")
        print("  optimising:", ", ".join(history))
        return th

    print(f"relative kernel error bound ||h_est - h|| / ||h||: {SHAPE} target, {KS} kernel, "
          f"sigma {args.sigma}, prior {PRIOR}, smooth weight {SMOOTH}, Adam lr {args.lr}, "
          f"{args.steps} steps")
    before = describe("smooth random start", jax.nn.sigmoid(theta), h_true, sigma, key)
    theta = optimise(theta)
    after = describe("  optimised", jax.nn.sigmoid(theta), h_true, sigma, key)
    x_opt = np.asarray(jax.nn.sigmoid(theta))
    print(f"  bound fell by a factor {before / after:.1f}; pixels within 0.05 of 0 or 1: "
          f"{np.mean((x_opt < 0.05) | (x_opt > 0.95)):.0%}")

    # reference: a random binary target (jdeconv target), maximal contrast, flat spectrum
    binary = make_target(SHAPE, kind="binary", seed=args.seed).image
    describe("random binary target", jnp.asarray(binary), h_true, sigma, key)
    print(f"{time.perf_counter() - t0:.1f} s in all")


if __name__ == "__main__":
    main()
