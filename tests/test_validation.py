"""jdeconv._validation: one wording for every mistake, checked before anything is traced."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdeconv import _names, _validation as v


def test_names_get_the_closest_valid_one():
    assert v.closest("simplx", _names.PRIORS) == " Did you mean 'simplex'?"
    assert v.closest("zzzzzz", _names.PRIORS) == ""
    assert v.check_mode("same") == "same"
    assert v.check_solver("fista") == "fista"
    assert v.check_method("fft") == "fft"
    assert v.check_prior("none") == "none"
    with pytest.raises(ValueError, match=r"unknown mode 'vaild'; expected one of 'valid', 'same'.*"
                                         r"Did you mean 'valid'\?"):
        v.check_mode("vaild")
    with pytest.raises(ValueError, match="unknown solver 'fastest'"):
        v.check_solver("fastest")
    with pytest.raises(ValueError, match="Did you mean 'simplex'"):
        v.check_prior("simplx")
    with pytest.raises(ValueError, match="unknown method"):
        v.check_method(3)
    with pytest.raises(ValueError, match="unknown regularizer 'smoth'.*Did you mean 'smooth'"):
        v.check_choice("regularizer", "smoth", _names.REGULARIZERS)


def test_check_int():
    assert v.check_int(5, "n") == 5 and type(v.check_int(np.int64(5), "n")) is int
    assert v.check_int(100.0, "max_iters", maximum=10**6) == 100  # YAML floats
    for huge in (1e23, 10**23):  # refused by the bound, not by an overflow in jit
        with pytest.raises(ValueError, match="max_iters is .* it must be at most 1000000"):
            v.check_int(huge, "max_iters", minimum=1, maximum=10**6)
    with pytest.raises(ValueError, match="at least 1; e.g. max_iters=500"):
        v.check_int(0, "max_iters", minimum=1, example=500)
    for bad in (True, 2.5, "3", None, float("nan"), float("inf")):
        with pytest.raises(TypeError, match="must be an integer"):
            v.check_int(bad, "n")


def test_check_real_seed_tol():
    assert v.check_real(np.float32(0.5), "w") == 0.5
    with pytest.raises(TypeError, match="real number"):
        v.check_real(True, "w")
    with pytest.raises(TypeError, match="real number"):
        v.check_real("1", "w")
    with pytest.raises(ValueError, match="finite"):
        v.check_real(float("nan"), "w")
    with pytest.raises(ValueError, match="> 0"):
        v.check_real(0.0, "w", positive=True)
    with pytest.raises(ValueError, match=">= 0"):
        v.check_real(-1.0, "w", nonnegative=True)
    with pytest.raises(ValueError, match="at most"):
        v.check_real(2.0, "w", maximum=1.0)
    assert v.check_seed(3) == 3
    with pytest.raises(TypeError, match="seed"):
        v.check_seed(1.5)
    with pytest.raises(ValueError, match="non-negative"):
        v.check_seed(-1)
    assert v.check_tol("1e-3") == 1e-3
    with pytest.raises(TypeError, match="tol must be a number"):
        v.check_tol([1])
    with pytest.raises(ValueError, match="tol must be finite and >= 0"):
        v.check_tol(-1.0)


def test_as_shape():
    assert v.as_shape(5) == (5, 5)
    assert v.as_shape((3, 4)) == (3, 4)
    assert v.as_shape(np.array([3, 4])) == (3, 4)
    assert v.as_shape(np.int64(2)) == (2, 2)
    assert v.as_shape(np.array(6)) == (6, 6)
    with pytest.raises(ValueError, match="has 3 entries"):
        v.as_shape((1, 2, 3))
    with pytest.raises(TypeError, match="must contain integers"):
        v.as_shape((1.5, 2))
    with pytest.raises(TypeError, match="must contain integers"):
        v.as_shape((True, 2))
    with pytest.raises(TypeError, match="an int or a pair of ints"):
        v.as_shape("3x3")
    with pytest.raises(ValueError, match="non-positive"):
        v.as_shape((0, 3))
    with pytest.raises(ValueError, match="too large"):
        v.as_shape(10**9, maximum=v.MAX_KERNEL_SIDE)
    with pytest.raises(TypeError, match="image_shape"):
        v.as_shape(None, "image_shape")


def test_sizes_are_bounded_before_allocation():
    v.check_image_size((v.MAX_IMAGE_SIDE, 1))
    with pytest.raises(ValueError, match="too large"):
        v.check_image_size((v.MAX_IMAGE_SIDE + 1, 1))
    with pytest.raises(ValueError, match="too large"):
        # a broadcast view: nothing of this size is allocated
        v.as_float_array("x", np.broadcast_to(np.float64(1), (v.MAX_IMAGE_SIDE + 1, 2)))
    v.check_kernel_fits((4, 4), (4, 4), "valid")
    v.check_kernel_fits((4, 4), (9, 9), "full")
    with pytest.raises(ValueError, match=r"kernel shape \(5, 4\) is larger than the image shape"):
        v.check_kernel_fits((4, 4), (5, 4), "circular")
    v.check_shape_is("y", (3, 4), (3, 4))
    with pytest.raises(ValueError, match=r"y has shape \(3, 4\) but \(4, 4\) is expected. hint"):
        v.check_shape_is("y", (3, 4), (4, 4), "hint")


def test_as_float_array():
    a = v.as_float_array("x", np.ones((3, 3), np.uint8))
    assert a.dtype == jnp.float64 and isinstance(a, jax.Array)
    assert v.as_float_array("x", np.ones((3, 3), np.float32)).dtype == jnp.float32
    assert v.as_float_array("x", np.ones((3, 3)), dtype=np.float32).dtype == jnp.float32
    assert v.as_float_array("x", np.ones(3), ndim=None).shape == (3,)
    with pytest.raises(TypeError, match="real-valued, got complex"):
        v.as_float_array("x", np.ones((3, 3), complex))
    with pytest.raises(TypeError, match="numeric"):
        v.as_float_array("x", np.array([["a"]]))
    with pytest.raises(ValueError, match=r"2-D array, got shape \(2, 3, 3\).*estimate_kernels"):
        v.as_float_array("x", np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="empty"):
        v.as_float_array("x", np.ones((0, 3)))
    bad = np.ones((3, 3))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"x contains 1 NaN or infinite value\(s\)"):
        v.as_float_array("x", bad)
    assert bool(jnp.isnan(v.as_float_array("x", bad, allow_nan=True)[0, 0]))
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="1 infinite value"):
        v.as_float_array("x", bad, allow_nan=True)
    assert v.count_nonfinite(bad) == 1


def test_checks_that_need_values_are_skipped_inside_jit():
    @jax.jit
    def f(a):
        assert not v.is_concrete(a)
        return v.as_float_array("x", a)  # no finiteness check on a tracer

    assert v.is_concrete(jnp.ones(2))
    assert bool(jnp.isnan(f(jnp.full((2, 2), jnp.nan))).all())


def test_dtypes():
    assert v.resolve_dtype(None) is None
    assert v.resolve_dtype("float32") == np.float32
    assert v.resolve_dtype(np.float64) == np.float64
    assert v.default_float_dtype() == jnp.float64
    with pytest.raises(TypeError, match="float32 or float64"):
        v.resolve_dtype("int32")
    with pytest.raises(TypeError, match="'float32' or 'float64'"):
        v.resolve_dtype("double precision")
    a, b = v.common_float(jnp.ones(2, jnp.float32), jnp.ones(2, jnp.float64))
    assert a.dtype == b.dtype == jnp.float64


def test_float64_without_x64_is_a_clear_error():
    script = ("import jdeconv, numpy as np\n"
              "try:\n"
              "    jdeconv.estimate_kernel(np.random.rand(20, 20), np.random.rand(16, 16), 5, dtype='float64')\n"
              "except ValueError as e:\n"
              "    print('OK', e)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, JAX_ENABLE_X64="0", JAX_PLATFORMS="cpu"), timeout=120)
    assert out.stdout.startswith("OK") and "jax_enable_x64" in out.stdout, out.stderr


def test_call_with_options():
    def family(size, *, sigma, angle=0.0):
        return size, sigma, angle

    assert v.call_with_options(family, "kernel", "gauss", (3,), {"sigma": 1.0}) == (3, 1.0, 0.0)
    with pytest.raises(TypeError, match=r"kernel 'gauss' does not take option\(s\) sigmaa; accepted "
                                        r"options: sigma, angle. Did you mean 'sigma'\?"):
        v.call_with_options(family, "kernel", "gauss", (3,), {"sigmaa": 1.0})
    with pytest.raises(TypeError, match=r"kernel 'gauss' needs option\(s\) sigma"):
        v.call_with_options(family, "kernel", "gauss", (3,), {})
