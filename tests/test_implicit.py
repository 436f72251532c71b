"""Derivatives of the exact QP solution by implicit differentiation (jdeconv._implicit).

End to end: ``h(x, y, w) = solve_qp_differentiable(G(x) + s(x) (w0 I + w1 L), b(x, y))``
with ``(G, b) = normal_equations(x, y)``, checked against central finite differences
(float64, 1e-5 relative) on clean and noisy pairs, nonneg and simplex priors, with taps
on the bound; every finite difference first checks that the active set is the same at
both ends of the step (so the derivative of the face is what it measures).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from jdeconv._gram import normal_equations
from jdeconv._implicit import face_inverse, face_solve, solve_qp_differentiable
from jdeconv._regularizers import laplacian

KS = (5, 5)
N = KS[0] * KS[1]
RTOL = 1e-5
REL_STEP = 1e-6


def _kernel():
    """A 5x5 blur with small negative corners.

    With the nonneg and simplex priors the corners of the estimate sit on the bound
    with strictly positive multipliers, also on clean pairs (a true kernel with exact
    zeros would give zero multipliers there: weakly active taps, where the solution is
    only one-sidedly differentiable).
    """
    a = np.arange(5.0) - 2
    r2 = a[:, None] ** 2 + a[None, :] ** 2
    h = np.where(r2 <= 5, np.exp(-r2 / 3.0), -0.02)
    return h / h.sum()


def _pair(noise, seed=0, shape=(32, 32)):
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    y = scipy.signal.convolve2d(x, _kernel(), "valid")
    return x, y + noise * rng.standard_normal(y.shape)


def _regularized(x, y, w):
    ne = normal_equations(x, y, KS, "valid")
    s = jnp.trace(ne.gram) / N
    eye = jnp.eye(N, dtype=ne.gram.dtype)
    lap = jnp.asarray(laplacian(KS), ne.gram.dtype)
    return ne.gram + s * (w[0] * eye + w[1] * lap), ne.rhs


@partial(jax.jit, static_argnames="prior")
def estimate(x, y, w, prior):
    gram, rhs = _regularized(x, y, w)
    return solve_qp_differentiable(gram, rhs, prior=prior)


def _h(x, y, w, prior):
    return estimate(x, y, w, prior).solution


def _loss(x, y, w, c, prior):
    h = _h(x, y, w, prior)
    return jnp.vdot(c, h) + jnp.sum(h**2)


def _grad_loss(x, y, w, c, prior):
    return jax.grad(_loss, argnums=(0, 1, 2))(x, y, w, c, prior)


@partial(jax.jit, static_argnames="prior")
def derivatives(x, y, w, c, dirs, u, prior):
    """The estimate, jax.grad of the loss, jax.jvp along ``dirs`` and jax.vjp of ``u``.

    One compiled program per prior and dtype (the primal is shared).
    """
    h = partial(_h, prior=prior)
    hv, dh = jax.jvp(h, (x, y, w), dirs)
    hu, pullback = jax.vjp(h, x, y, w)
    return estimate(x, y, w, prior), _grad_loss(x, y, w, c, prior), (hv, dh), (hu, pullback(u))


def _solve_only(x, y, w, prior):
    """The estimate at a point, from the already compiled ``derivatives`` (no new compile)."""
    zeros = (np.zeros_like(x), np.zeros_like(y), np.zeros_like(w))
    return derivatives(x, y, w, np.zeros(N), zeros, np.zeros(N), prior)[0]


def _fd(func, args, direction, prior):
    """Central difference of ``func(h(*args))`` along ``direction`` (a pytree like ``args``).

    The step is ``REL_STEP * |args| / |direction|``; asserts that the active set is
    the same at both ends (and at the centre).
    """
    t = REL_STEP * _norm(args) / _norm(direction)
    plus = jax.tree.map(lambda a, d: a + t * d, args, direction)
    minus = jax.tree.map(lambda a, d: a - t * d, args, direction)
    res = [_solve_only(*a, prior) for a in (args, plus, minus)]
    np.testing.assert_array_equal(res[1].active_set, res[0].active_set)
    np.testing.assert_array_equal(res[2].active_set, res[0].active_set)
    f_plus, f_minus = (np.asarray(func(np.asarray(r.solution))) for r in res[1:])
    return (f_plus - f_minus) / (2 * t)


def _norm(tree):
    return float(np.sqrt(sum(np.sum(np.asarray(a) ** 2) for a in jax.tree.leaves(tree))))


def _close(got, want, rtol=RTOL):
    got, want = np.asarray(got), np.asarray(want)
    err = np.linalg.norm(got - want)
    assert err <= rtol * np.linalg.norm(want), (err / np.linalg.norm(want), got, want)


CASES = {
    "clean": (0.0, np.array([0.0, 0.0])),
    "clean-regularized": (0.0, np.array([1e-2, 1e-3])),
    "noisy": (0.03, np.array([0.0, 0.0])),
    "noisy-regularized": (0.03, np.array([1e-3, 1e-2])),
}


@pytest.mark.parametrize("prior", ["nonneg", "simplex"])
def test_derivatives_match_finite_differences(prior):
    rng = np.random.default_rng(1)
    c = rng.standard_normal(N)
    for name, (noise, w) in CASES.items():
        x, y = _pair(noise, seed=len(name))
        dirs = (rng.standard_normal(x.shape), rng.standard_normal(y.shape),
                w * rng.uniform(0.5, 1.5, 2) if w.any() else np.zeros(2))
        u = rng.standard_normal(N)
        res, (gx, gy, gw), (hv, dh), (hu, (ux, uy, uw)) = derivatives(x, y, w, c, dirs, u, prior)
        assert bool(res.converged), name
        active = np.asarray(res.active_set)
        assert 1 <= active.sum() <= N - 5, (name, active.sum())  # taps on the bound, and free ones
        h = np.asarray(res.solution)
        assert np.all(h[active] == 0)

        # jax.grad of a scalar loss, along each argument separately (x, y, w)
        def loss(hh):
            return np.vdot(c, hh) + np.sum(hh**2)

        for i, g in enumerate((gx, gy, gw)):
            if not dirs[i].any():
                continue
            d = tuple(dirs[j] if j == i else np.zeros_like(dirs[j]) for j in range(3))
            fd = _fd(loss, (x, y, w), d, prior)
            assert abs(np.vdot(g, dirs[i]) - fd) <= RTOL * abs(fd), (name, i)

        # jax.jvp of the whole kernel along a joint direction: all taps (bound ones
        # have derivative 0 both ways)
        np.testing.assert_allclose(hv, h, rtol=1e-12, atol=1e-15)
        fd = _fd(lambda hh: hh, (x, y, w), dirs, prior)
        _close(dh, fd)
        assert np.all(np.asarray(dh)[active] == 0)
        if prior == "simplex":
            assert abs(float(jnp.sum(dh))) <= 1e-12 * float(jnp.linalg.norm(dh))

        # jax.vjp: the pullback of a cotangent is the transpose of the jvp
        np.testing.assert_allclose(hu, h, rtol=1e-12, atol=1e-15)
        lhs = np.vdot(u, dh)
        rhs = np.vdot(ux, dirs[0]) + np.vdot(uy, dirs[1]) + np.vdot(uw, dirs[2])
        assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
        _close(np.vdot(u, fd), lhs)


def test_vmap_of_grad_matches_loop():
    prior = "nonneg"
    x, _ = _pair(0.0)
    ys = np.stack([_pair(0.03, seed=s)[1] for s in range(3)])
    w = np.array([1e-3, 1e-3])
    c = np.random.default_rng(2).standard_normal(N)
    batched = jax.jit(jax.vmap(jax.grad(partial(_loss, prior=prior), argnums=(0, 1, 2)),
                               in_axes=(None, 0, None, None)))
    bx, by, bw = batched(x, ys, w, c)
    zeros = (np.zeros_like(x), np.zeros_like(ys[0]), np.zeros_like(w))
    for i in range(3):
        _, (gx, gy, gw), _, _ = derivatives(x, ys[i], w, c, zeros, np.zeros(N), prior)
        np.testing.assert_allclose(bx[i], gx, rtol=1e-9, atol=1e-12 * np.abs(gx).max())
        np.testing.assert_allclose(by[i], gy, rtol=1e-9, atol=1e-12 * np.abs(gy).max())
        np.testing.assert_allclose(bw[i], gw, rtol=1e-9)


# ----------------------------------------------------------------------------
# Small dense problems: derivatives against closed forms
# ----------------------------------------------------------------------------


def _spd(rng, n, cond=50.0):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    g = (q * np.logspace(0, -np.log10(cond), n)) @ q.T
    return 0.5 * (g + g.T)


def _k_e(g, free, eq):
    """Reference K_e with numpy boolean indexing."""
    n = g.shape[0]
    k = np.zeros((n, n))
    kf = np.linalg.inv(g[np.ix_(free, free)])
    if eq:
        one = np.ones(free.sum())
        kf = kf - np.outer(kf @ one, one @ kf) / (one @ kf @ one)
    k[np.ix_(free, free)] = kf
    return k


@pytest.mark.parametrize("prior", ["none", "sum_to_one", "nonneg", "simplex"])
def test_jacobian_wrt_rhs_is_the_face_inverse(prior):
    rng = np.random.default_rng(5)
    n = 6
    g = _spd(rng, n)
    h0 = np.array([0.3, 0.0, 0.25, 0.0, 0.45, 0.0])  # three taps on the bound ...
    lam = np.array([0.0, 0.2, 0.0, 0.5, 0.0, 0.1])  # ... with positive multipliers
    mu = 0.7 if prior == "simplex" else 0.0
    b = g @ h0 - lam - mu  # the KKT conditions of h0 for the priors with bounds
    res = solve_qp_differentiable(g, b, prior=prior)
    jac = jax.jacobian(lambda r: solve_qp_differentiable(g, r, prior=prior).solution)(b)
    free = ~np.asarray(res.active_set)
    if prior in ("nonneg", "simplex"):
        np.testing.assert_array_equal(free, h0 > 0)
    np.testing.assert_allclose(jac, _k_e(g, free, prior in ("sum_to_one", "simplex")),
                               rtol=1e-10, atol=1e-12)
    # the face helpers agree with the reference
    np.testing.assert_allclose(face_inverse(g, free, eq=prior in ("sum_to_one", "simplex")),
                               _k_e(g, free, prior in ("sum_to_one", "simplex")),
                               rtol=1e-10, atol=1e-12)


def test_float32_derivatives_agree_with_float64():
    rng = np.random.default_rng(9)
    g = _spd(rng, 6, cond=30.0)
    b = g @ np.array([0.3, 0.0, 0.25, 0.0, 0.45, 0.0]) - np.array([0, 0.2, 0, 0.5, 0, 0.1]) - 0.7
    u = rng.standard_normal(6)

    def f(gram, rhs):
        return jnp.vdot(u.astype(rhs.dtype), solve_qp_differentiable(gram, rhs).solution)

    g64 = jax.grad(f, argnums=(0, 1))(g, b)
    gram32, rhs32 = np.float32(g), np.float32(b)
    res = solve_qp_differentiable(gram32, rhs32)
    assert bool(res.converged) and res.solution.dtype == jnp.float32
    np.testing.assert_array_equal(res.active_set, [False, True, False, True, False, True])
    g32 = jax.grad(f, argnums=(0, 1))(gram32, rhs32)
    for a, want in zip(g32, g64):
        assert a.dtype == jnp.float32
        _close(a, want, rtol=1e-4)


def test_gram_cotangent_is_symmetric_and_matches_formula():
    rng = np.random.default_rng(6)
    n = 6
    g = _spd(rng, n)
    b = rng.standard_normal(n) + 1.0
    mask = np.array([True, True, True, False, True, True])
    u = rng.standard_normal(n)

    def f(gram):
        return jnp.vdot(u, solve_qp_differentiable(gram, b, prior="simplex", mask=mask).solution)

    res = solve_qp_differentiable(g, b, prior="simplex", mask=mask)
    free = ~np.asarray(res.active_set)
    assert not free[3]
    gbar = np.asarray(jax.grad(f)(g))  # eager (no jit)
    h = np.asarray(res.solution)
    v = _k_e(g, free, True) @ u
    np.testing.assert_allclose(gbar, -0.5 * (np.outer(v, h) + np.outer(h, v)), atol=1e-12)
    np.testing.assert_array_equal(gbar, gbar.T)
    assert np.all(gbar[3] == 0) and np.all(gbar[:, 3] == 0)


def test_second_derivative_on_the_face():
    rng = np.random.default_rng(7)
    n = 6
    g0, g1 = _spd(rng, n), _spd(rng, n)
    b = g0 @ np.array([0.4, 0.0, 0.35, 0.25, 0.0, 0.0]) - np.array([0, 0.3, 0, 0, 0.2, 0.1]) - 0.1

    def h(t):
        return solve_qp_differentiable(g0 + t * g1, b, prior="simplex").solution

    t0, dt = 0.1, 1e-4
    d2 = jax.jit(jax.jacfwd(jax.jacrev(h)))(t0)
    d1 = jax.jit(jax.jacrev(h))
    fd = (np.asarray(d1(t0 + dt)) - np.asarray(d1(t0 - dt))) / (2 * dt)
    for t in (t0 - dt, t0 + dt):
        np.testing.assert_array_equal(
            solve_qp_differentiable(g0 + t * g1, b, prior="simplex").active_set,
            solve_qp_differentiable(g0 + t0 * g1, b, prior="simplex").active_set)
    _close(d2, fd, rtol=1e-6)
    assert np.abs(np.asarray(d2)).max() > 1e-3


def test_empty_face_has_zero_finite_derivative():
    g = jnp.eye(6)
    b = -jnp.ones(6)  # nonneg minimiser is h = 0, every tap on the bound
    grad = jax.grad(lambda r: jnp.sum(solve_qp_differentiable(g, r, prior="nonneg").solution))(b)
    np.testing.assert_array_equal(grad, np.zeros(6))


def test_face_solve_refinement_on_an_ill_conditioned_face():
    rng = np.random.default_rng(8)
    g = _spd(rng, 6, cond=1e8)
    free = np.ones(6, bool)
    r = rng.standard_normal(6)
    z = face_solve(g, free, r, eq=True)
    kr = _k_e(g, free, True) @ r
    _close(z, kr, rtol=1e-7)
    assert abs(float(jnp.sum(z))) <= 1e-9 * float(jnp.abs(z).max())


def test_bad_prior_is_refused():
    with pytest.raises(ValueError, match="simplex"):
        solve_qp_differentiable(jnp.eye(2), jnp.ones(2), prior="simplx")
