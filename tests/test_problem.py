"""jdeconv._problem: one validation per call, one wording, the pair in solver geometry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdeconv
from jdeconv import _geometry

# The test kernels are truncated on purpose (a Gaussian cut by its box, as in the original
# question): the estimate's border-mass diagnostic is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::jdeconv.FitWarning")


def _pair(m=20, k=5, mode="valid", seed=0):
    x = np.random.default_rng(seed).random((m, m))
    return x, np.zeros(_geometry.output_shape((m, m), (k, k), mode))


@pytest.mark.parametrize("mode", ["valid", "same", "full", "circular"])
def test_problem_is_in_solver_geometry(mode):
    x, y = _pair(mode=mode)
    p = jdeconv.make_problem(x, y, 5, mode=mode)
    assert p.mode == mode and p.solve_mode == _geometry.solver_mode(mode)
    assert p.kernel_shape == (5, 5) and p.n_taps == 25
    assert p.y.shape == _geometry.output_shape((20, 20), (5, 5), p.solve_mode)
    assert p.dtype == jnp.float64 and p.y.dtype == jnp.float64
    assert not p.batched and p.batch_size == 1 and p.support is None


def test_same_mode_keeps_the_valid_part():
    x = np.random.default_rng(1).random((12, 11))
    h = np.random.default_rng(2).random((4, 3))
    y = np.asarray(jdeconv.conv2d(x, h, "same"))
    p = jdeconv.make_problem(x, y, (4, 3), mode="same")
    np.testing.assert_allclose(p.y, jdeconv.conv2d(x, h, "valid"), atol=1e-12)


def test_dtypes_batches_and_pytree():
    x, y = _pair()
    p32 = jdeconv.make_problem(x, y, 5, dtype="float32")
    assert p32.x.dtype == p32.y.dtype == jnp.float32
    pint = jdeconv.make_problem((255 * x).astype(np.uint8), y.astype(np.float32), 5)
    assert pint.x.dtype == pint.y.dtype == jnp.float64  # ints become the default float, then common
    xs = np.stack([x, x[::-1]])
    ys = np.stack([y, y])
    pb = jdeconv.make_problem(xs, ys, 5, batched=True)
    assert pb.batched and not pb.shared_original and pb.batch_size == 2
    shared = jdeconv.make_problem(x, ys, 5, batched=True, support=np.ones((5, 5), bool))
    assert shared.shared_original and shared.x.shape == (20, 20) and shared.batch_size == 2
    assert shared.support.dtype == jnp.bool_
    leaves = jax.tree_util.tree_leaves(shared)
    assert len(leaves) == 3  # x, y, support; the rest is static
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, pb)
    assert doubled.kernel_shape == (5, 5) and doubled.mode == "valid"


# Every mistake becomes one ValueError/TypeError from make_problem, with the same wording
# through estimate_kernel (validated once, before anything is traced).
BAD = [
    (dict(x=np.ones((20, 20))), "constant"),
    (dict(x=np.zeros((20, 20))), "constant"),
    (dict(kernel_shape=30), "larger than the original"),
    (dict(kernel_shape=(0, 3)), "non-positive"),
    (dict(kernel_shape=(-1, 3)), "non-positive"),
    (dict(kernel_shape=20, y=np.ones((1, 1))), "underdetermined"),
    (dict(kernel_shape=12, y=np.ones((9, 9))), "underdetermined"),
    (dict(kernel_shape=10**6), "too large"),
    (dict(y=np.ones((20, 20))), "mode='same'"),
    (dict(y=np.ones((16, 16)), mode="same"), "mode='valid'"),
    (dict(y=np.ones((5, 5))), "has shape"),
    (dict(y=np.full((16, 16), np.nan)), "NaN"),
    (dict(x=np.full((20, 20), np.inf)), "NaN or infinite"),
    (dict(x=np.ones((20, 20), complex)), "complex"),
    (dict(mode="vaild"), "Did you mean 'valid'"),
    (dict(dtype="int8"), "float32 or float64"),
    (dict(support=np.ones((3, 3), bool)), "support mask has shape"),
    (dict(support=np.zeros((5, 5), bool)), "all False"),
]


@pytest.mark.parametrize("kwargs, match", BAD)
def test_bad_input(kwargs, match):
    rng = np.random.default_rng(0)
    args = dict(x=rng.random((20, 20)), y=rng.random((16, 16)), kernel_shape=5)
    args.update(kwargs)
    x, y, ks = args.pop("x"), args.pop("y"), args.pop("kernel_shape")
    with pytest.raises((ValueError, TypeError), match=match) as direct:
        jdeconv.make_problem(x, y, ks, **args)
    with pytest.raises((ValueError, TypeError), match=match) as engine:
        jdeconv.estimate_kernel(x, y, ks, **args)
    assert str(engine.value) == str(direct.value)


def test_bad_batch_input():
    xs = np.random.default_rng(0).random((3, 20, 20))
    with pytest.raises(ValueError, match="3-D"):
        jdeconv.estimate_kernels(xs[0], xs[0][:16, :16], 5)
    with pytest.raises(ValueError, match="one blurred image per original"):
        jdeconv.estimate_kernels(xs, xs[:2, :16, :16], 5)
    bad = xs.copy()
    bad[1] = 0.5
    with pytest.raises(ValueError, match=r"pair 1\) is constant"):
        jdeconv.estimate_kernels(bad, xs[:, :16, :16], 5)
    with pytest.raises(ValueError, match="ys .*3-D"):
        jdeconv.make_problem(xs, xs[0, :16, :16], 5, batched=True)


@pytest.mark.parametrize("mode", ["valid", "same", "full", "circular"])
def test_saturation_is_the_one_mask_of_weighted_gram(mode):
    """make_problem's saturation footprint is jdeconv.saturation_mask on x padded for mode."""
    rng = np.random.default_rng(4)
    xs = rng.random((2, 14, 13))
    ys = rng.random((2,) + _geometry.output_shape((14, 13), (4, 3), mode))
    want = np.stack([jdeconv.saturation_mask(_geometry.pad(x, (4, 3), mode), y, 0.95, (4, 3))
                     for x, y in zip(xs, ys)])
    p = jdeconv.make_problem(xs[0], ys[0], (4, 3), mode=mode, saturation=0.95)
    window = _geometry.same_to_valid if mode == "same" else (lambda a, _: a)
    np.testing.assert_array_equal(np.asarray(p.pixel_weights) > 0, window(want[0], (4, 3)))
    batch = jdeconv.make_problem(xs, ys, (4, 3), mode=mode, saturation=0.95, batched=True)
    np.testing.assert_array_equal(np.asarray(batch.pixel_weights) > 0, window(want, (4, 3)))
    shared = jdeconv.make_problem(xs[0], ys, (4, 3), mode=mode, saturation=0.95, batched=True)
    one = np.stack([jdeconv.saturation_mask(_geometry.pad(xs[0], (4, 3), mode), y, 0.95, (4, 3))
                    for y in ys])
    np.testing.assert_array_equal(np.asarray(shared.pixel_weights) > 0, window(one, (4, 3)))
