"""jdeconv._regularizers: relative weights, the smoothness Laplacian, l1, and their effect."""

import jax.numpy as jnp
import numpy as np
import pytest

import jdeconv
from jdeconv import _regularizers as reg
from _helpers import blur, rel_err, well_posed

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")


def test_check_regularization():
    assert reg.check_regularization(None) == {"tikhonov": 0.0, "smooth": 0.0, "l1": 0.0}
    assert reg.check_regularization({"smooth": 1}) == {"tikhonov": 0.0, "smooth": 1.0, "l1": 0.0}
    assert reg.check_regularization({"l1": np.float32(0.5)})["l1"] == 0.5


@pytest.mark.parametrize("value, err, match", [
    ({"smoothness": 1.0}, ValueError, "Did you mean 'smooth'"),
    ({"smooth": -1.0}, ValueError, ">= 0"),
    ({"smooth": float("inf")}, ValueError, "finite"),
    ({"smooth": "a lot"}, TypeError, "must be a number"),
    (0.1, TypeError, "mapping like"),
    (["smooth"], TypeError, "mapping like"),
])
def test_check_regularization_errors(value, err, match):
    with pytest.raises(err, match=match):
        reg.check_regularization(value)


@pytest.mark.parametrize("kshape", [(1, 1), (2, 3), (4, 4)])
def test_laplacian_is_dtd_of_forward_differences(kshape):
    k, l = kshape
    h = np.random.default_rng(0).standard_normal(kshape)
    d = np.concatenate([np.diff(h, axis=0).ravel(), np.diff(h, axis=1).ravel()])
    L = reg.laplacian(kshape)
    assert L.shape == (k * l, k * l)
    np.testing.assert_array_equal(L, L.T)
    assert h.ravel() @ L @ h.ravel() == pytest.approx(d @ d, rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(L @ np.ones(k * l), 0, atol=1e-12)  # constants are not penalised


def test_quadratic_matrix_and_soft_threshold():
    R = reg.quadratic_matrix({"tikhonov": 2.0, "smooth": 3.0, "l1": 9.0}, 0.5, (2, 2), jnp.float32)
    assert R.dtype == jnp.float32
    np.testing.assert_allclose(R, 0.5 * (2.0 * np.eye(4) + 3.0 * reg.laplacian((2, 2))), rtol=1e-6)
    v = jnp.asarray([-2.0, -0.5, 0.0, 0.3, 1.5])
    np.testing.assert_allclose(reg.soft_threshold(v, 0.5), [-1.5, 0.0, 0.0, 0.0, 1.0])


NOISY = None


def _noisy_pair():
    global NOISY
    if NOISY is None:
        x = jdeconv.data.natural_image("camera", shape=(96, 96))
        h = jdeconv.data.gaussian_kernel(9, 1.6)
        y = jdeconv.data.quantize(jdeconv.data.add_gaussian_noise(blur(x, h), 0.01, seed=0), 8)
        NOISY = x, h, y
    return NOISY


def test_noisy_natural_image_simplex_beats_ls_and_smoothness_helps():
    x, h, y = _noisy_pair()
    err = {}
    err["ls"] = rel_err(jdeconv.estimate_kernel(x, y, 9, prior="none").kernel, h)
    err["simplex"] = rel_err(jdeconv.estimate_kernel(x, y, 9, prior="simplex").kernel, h)
    smooth = jdeconv.estimate_kernel(x, y, 9, prior="simplex", regularization={"smooth": 3e-3})
    err["smooth"] = rel_err(smooth.kernel, h)
    assert err["simplex"] < err["ls"], err
    assert err["smooth"] < 0.8 * err["simplex"], err
    assert float(smooth.regularization["smooth"]) == 3e-3
    assert float(smooth.regularization["tikhonov"]) == 0.0


def test_weights_are_relative_to_the_image_energy():
    """The same weight means the same on a brighter image: the kernel does not change."""
    x, h, y = _noisy_pair()
    a = jdeconv.estimate_kernel(x, y, 9, regularization={"smooth": 3e-3, "tikhonov": 1e-4})
    b = jdeconv.estimate_kernel(7.0 * x, 7.0 * y, 9, regularization={"smooth": 3e-3, "tikhonov": 1e-4})
    np.testing.assert_allclose(b.kernel, a.kernel, atol=1e-9)


def test_l1_with_nonneg_and_none():
    # (shapes of other tests: the well-posed pair with a support mask, the textbook scene)
    x, _ = well_posed()
    h = jdeconv.data.motion_kernel(5, 4.0, angle=45)
    y = jdeconv.data.add_gaussian_noise(blur(x, h), 0.01, seed=2)
    everywhere = np.ones((5, 5), bool)
    dense = jdeconv.estimate_kernel(x, y, 5, prior="nonneg", support=everywhere).kernel
    sparse = jdeconv.estimate_kernel(x, y, 5, prior="nonneg", support=everywhere,
                                     regularization={"l1": 0.05}).kernel
    assert np.count_nonzero(np.asarray(sparse) > 1e-12) < np.count_nonzero(np.asarray(dense) > 1e-12)
    xt = jdeconv.data.shapes_image((128, 128), seed=0, n_shapes=10)
    ht = jdeconv.data.gaussian_kernel(15, 2.0)
    est = jdeconv.estimate_kernel(xt, blur(xt, ht), 15, prior="none", regularization={"l1": 0.05},
                                  max_iters=4000, tol=0, reference=ht, throw=False)
    assert est.solver == "fista"
    with pytest.raises(ValueError, match="solver='exact' handles the l1 regulariser only"):
        jdeconv.estimate_kernel(x, y, 5, prior="none", solver="exact", regularization={"l1": 0.05})
    with pytest.raises(ValueError, match="not supported with prior='sum_to_one'"):
        jdeconv.estimate_kernel(x, y, 5, prior="sum_to_one", regularization={"l1": 0.05})


@pytest.mark.parametrize("kernel_shape", [(1, 1), (1, 4), (3, 5), (4, 4)])
def test_traced_quadratic_is_the_laplacian_without_a_literal(kernel_shape):
    from jdeconv import _regularizers

    n = kernel_shape[0] * kernel_shape[1]
    got = np.asarray(_regularizers.traced_quadratic(kernel_shape, 0.3, 2.0, jnp.float64))
    want = 0.3 * np.eye(n) + 2.0 * _regularizers.laplacian(kernel_shape)
    np.testing.assert_array_equal(got, want)



def test_the_regularizer_matrix_is_not_a_literal_in_the_program():
    import jax

    # a 15x15 kernel: a (225 x 225) literal alone would print as ~800 kB of program text
    text = jax.jit(lambda w: reg.traced_quadratic((15, 15), 0.0, w, jnp.float64)).lower(
        1.0).as_text()
    assert len(text) < 20_000, len(text)
