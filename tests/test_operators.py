"""jdeconv._operators: the kernel and image operators, their adjoints and the dot test."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import jdeconv
from _helpers import conv_problems, random_array


@settings(max_examples=10)
@given(conv_problems())
def test_dot_test_kernel_operator(problem):
    ishape, kshape, mode, dtype, seed = problem
    x = random_array(np.random.default_rng(seed), ishape, dtype)
    jdeconv.dottest(jdeconv.kernel_operator(x, kshape, mode), seed=seed)


@settings(max_examples=10)
@given(conv_problems())
def test_dot_test_image_operator(problem):
    ishape, kshape, mode, dtype, seed = problem
    h = random_array(np.random.default_rng(seed), kshape, dtype)
    jdeconv.dottest(jdeconv.image_operator(h, ishape, mode), seed=seed)


def test_operators_are_pytrees_and_as_matrix_matches():
    rng = np.random.default_rng(5)
    x, h = rng.standard_normal((6, 5)), rng.standard_normal((3, 2))
    A = jdeconv.kernel_operator(x, (3, 2), "valid")
    np.testing.assert_allclose(A.as_matrix() @ h.ravel(), A.matvec(h).ravel(), atol=1e-12)
    np.testing.assert_allclose(jax.jit(lambda op, v: op.matvec(v))(A, h), A.matvec(h), atol=1e-12)
    B = jdeconv.image_operator(h, (6, 5), "circular")
    np.testing.assert_allclose(B.as_matrix().T @ np.ones(30), B.rmatvec(np.ones((6, 5))).ravel(), atol=1e-12)
    with pytest.raises(ValueError, match="Dimension mismatch"):
        A.matvec(np.ones((2, 2)))
    with pytest.raises(ValueError, match="Dimension mismatch"):
        B.rmatvec(np.ones((2, 2)))
    # one leaf (the fixed array); shapes and mode are static metadata
    assert len(jax.tree_util.tree_leaves(A)) == 1 and len(jax.tree_util.tree_leaves(B)) == 1
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, A)
    assert isinstance(doubled, jdeconv.KernelOperator) and doubled.kernel_shape == (3, 2)
    np.testing.assert_allclose(doubled.matvec(h), 2 * np.asarray(A.matvec(h)), atol=1e-12)


@pytest.mark.parametrize("mode", ["valid", "same", "full", "circular"])
def test_operators_wrap_conv2d_and_its_adjoints(mode):
    rng = np.random.default_rng(6)
    x, h = rng.standard_normal((7, 6)), rng.standard_normal((3, 4))
    A = jdeconv.kernel_operator(x, (3, 4), mode)
    B = jdeconv.image_operator(h, (7, 6), mode)
    y = np.asarray(jdeconv.conv2d(x, h, mode))
    assert A.out_shape == B.out_shape == y.shape
    assert A.in_shape == (3, 4) and B.in_shape == (7, 6)
    np.testing.assert_allclose(A.matvec(h), y, atol=1e-12)
    np.testing.assert_allclose(B.matvec(x), y, atol=1e-12)
    r = rng.standard_normal(y.shape)
    np.testing.assert_allclose(A.rmatvec(r), jdeconv.conv2d_adjoint_kernel(x, r, (3, 4), mode), atol=1e-12)
    np.testing.assert_allclose(B.rmatvec(r), jdeconv.conv2d_adjoint_image(h, r, (7, 6), mode), atol=1e-12)


def test_vmap_over_operators():
    rng = np.random.default_rng(7)
    xs, h = rng.standard_normal((3, 6, 6)), rng.standard_normal((2, 2))
    ops = jax.vmap(lambda x: jdeconv.KernelOperator(x, (2, 2), "valid"))(jnp.asarray(xs))
    out = jax.vmap(lambda op: op.matvec(jnp.asarray(h)))(ops)
    np.testing.assert_allclose(out, np.stack([jdeconv.conv2d(x, h) for x in xs]), atol=1e-12)


def test_dottest_reports_both_products_for_a_wrong_adjoint():
    A = jdeconv.kernel_operator(np.random.default_rng(8).random((6, 6)), 3)

    @dataclasses.dataclass(frozen=True)
    class Wrong:
        op: jdeconv.KernelOperator
        in_shape = (3, 3)
        out_shape = (4, 4)

        def matvec(self, h):
            return self.op.matvec(h)

        def rmatvec(self, r):
            return 2.0 * self.op.rmatvec(r)

    jax.tree_util.register_dataclass(Wrong, data_fields=["op"], meta_fields=[])
    lhs, rhs = jdeconv.dottest(A, seed=3)
    assert lhs == pytest.approx(rhs, rel=1e-10)
    with pytest.raises(AssertionError, match=r"Dot test failed: <A u, v> = .* but <u, A\^T v> = "):
        jdeconv.dottest(Wrong(A), seed=3)


@pytest.mark.parametrize("call, err, match", [
    (lambda: jdeconv.kernel_operator(np.ones((4, 4)), 5), ValueError, "larger than the image"),
    (lambda: jdeconv.kernel_operator(np.ones((4, 4)), 2, "vaild"), ValueError, "Did you mean 'valid'"),
    (lambda: jdeconv.kernel_operator(np.ones((4, 4)), (2, 0)), ValueError, "non-positive"),
    (lambda: jdeconv.kernel_operator(np.ones((4, 4)), 2, method="im2col"), ValueError, "unknown method"),
    (lambda: jdeconv.image_operator(np.ones((2, 2)), (1, 4), "circular"), ValueError, "larger than the image"),
    (lambda: jdeconv.image_operator(np.ones(3), (4, 4)), ValueError, "2-D array"),
    (lambda: jdeconv.image_operator(np.ones((2, 2)), "4x4"), TypeError, "image_shape"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()
