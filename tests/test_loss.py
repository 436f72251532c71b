"""jdeconv._loss: the data-fidelity loss and its closed-form gradient."""

import functools

import jax
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings

import jdeconv
from _helpers import MODES, conv_problems, random_array, tol


@functools.partial(jax.jit, static_argnames=("mode",))
def _grads(h, x, y, mode):
    return jax.grad(jdeconv.data_loss)(h, x, y, mode), jdeconv.data_loss_grad(h, x, y, mode)


@settings(max_examples=6)  # each example compiles its own program
@given(conv_problems())
def test_grad_of_loss_is_closed_form(problem):
    ishape, kshape, mode, dtype, seed = problem
    rng = np.random.default_rng(seed)
    x, h = random_array(rng, ishape, dtype), random_array(rng, kshape, dtype)
    y = random_array(rng, jdeconv.conv2d(x, h, mode).shape, dtype)
    auto, closed = _grads(h, x, y, mode)
    scale = np.abs(x).sum() * (np.abs(y).max() + np.abs(x).max() * np.abs(h).sum())
    np.testing.assert_allclose(auto, closed, atol=tol(dtype) * scale, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_value_and_gradient_against_scipy(mode):
    rng = np.random.default_rng(1)
    x, h, h0 = rng.random((9, 8)), rng.random((3, 4)), rng.random((3, 4))
    y = np.asarray(jdeconv.conv2d(x, h, mode))
    assert float(jdeconv.data_loss(h, x, y, mode)) == pytest.approx(0.0, abs=1e-20)
    if mode == "circular":
        r = scipy.signal.convolve2d(x, h0, mode="same", boundary="wrap") - y
    else:
        r = scipy.signal.convolve2d(x, h0, mode=mode) - y
    assert float(jdeconv.data_loss(h0, x, y, mode)) == pytest.approx(0.5 * np.sum(r * r), rel=1e-12)
    np.testing.assert_allclose(jdeconv.data_loss_grad(h0, x, y, mode),
                               jdeconv.conv2d_adjoint_kernel(x, r, (3, 4), mode), atol=1e-12)
    # zero gradient at the true kernel
    np.testing.assert_allclose(jdeconv.data_loss_grad(h, x, y, mode), 0.0, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_vmap_of_grad_equals_loop(mode):
    rng = np.random.default_rng(4)
    xs, hs = rng.standard_normal((5, 9, 8)), rng.standard_normal((5, 3, 4))
    r = rng.standard_normal((5,) + jdeconv.conv2d(xs[0], hs[0], mode).shape)
    g = jax.jit(jax.vmap(jax.grad(jdeconv.data_loss), in_axes=(0, 0, 0, None)), static_argnums=3)
    np.testing.assert_allclose(
        g(hs, xs, r, mode), np.stack([jdeconv.data_loss_grad(h, x, q, mode) for h, x, q in zip(hs, xs, r)]),
        atol=1e-10)


def test_float32_stays_float32():
    x = np.random.default_rng(2).random((6, 6)).astype(np.float32)
    h = np.ones((2, 2), np.float32) / 4
    y = np.asarray(jdeconv.conv2d(x, h))
    assert jdeconv.data_loss(h, x, y).dtype == np.float32
    assert jdeconv.data_loss_grad(h, x, y).dtype == np.float32


@pytest.mark.parametrize("call, match", [
    (lambda: jdeconv.data_loss(np.ones((2, 2)), np.ones((4, 4)), np.ones((4, 4))), "mode='same'"),
    (lambda: jdeconv.data_loss(np.ones((2, 2)), np.ones((4, 4)), np.ones((2, 2))), "Check the kernel size"),
    (lambda: jdeconv.data_loss_grad(np.ones((2, 2)), np.ones((4, 4)), np.ones((3, 3)), "sme"), "Did you mean 'same'"),
    (lambda: jdeconv.data_loss_grad(np.ones((5, 5)), np.ones((4, 4)), np.ones((1, 1))), "larger than the image"),
    (lambda: jdeconv.data_loss(np.ones((2, 2)), np.ones((4, 4)), np.full((3, 3), np.nan)), "NaN"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
