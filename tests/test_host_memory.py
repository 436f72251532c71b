"""jdeconv._host_memory: the program is loaded before the call, and freed memory released."""

import sys

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest

from jdeconv import _host_memory


def _compile_events(fn):
    """The trace/lowering/compilation events JAX records while ``fn()`` runs."""
    events = []

    def listen(name, _duration, **_kw):
        if name.startswith("/jax/core/compile/"):
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return events


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_the_call_after_it_compiles_nothing():
    f = jax.jit(lambda a, *, scale: scale * a + 1.0, static_argnames="scale")
    a = jnp.arange(3.0)
    released = []
    assert _compile_events(lambda: released.append(_host_memory.compile_then_release(
        f, a, scale=3.0)))
    out = []
    assert _compile_events(lambda: out.append(f(a, scale=3.0))) == []
    np.testing.assert_array_equal(out[0], [1.0, 4.0, 7.0])
    # released after the compilation; the program loaded, the next one releases nothing
    assert released == [True]
    assert _host_memory.compile_then_release(f, a, scale=3.0) is False
    assert _host_memory.compile_then_release(f, a, scale=2.0) is True  # a new program
    assert _host_memory.release_freed_memory() is True


def test_under_a_trace_it_does_nothing():
    f = jax.jit(lambda a: 2.0 * a)

    def g(a):
        assert _host_memory.compile_then_release(f, a) is False  # a tracer: nothing to do
        return f(a)

    np.testing.assert_array_equal(jax.jit(g)(jnp.ones(2)), [2.0, 2.0])
    np.testing.assert_array_equal(jax.grad(lambda a: g(a).sum())(jnp.ones(2)), [2.0, 2.0])


def test_without_jit_it_compiles_nothing():
    f = jax.jit(lambda a: 3.0 * a)
    a = jnp.ones(2)
    released = []
    with jax.disable_jit():
        events = _compile_events(lambda: released.append(_host_memory.compile_then_release(f, a)))
        np.testing.assert_array_equal(f(a), [3.0, 3.0])
    assert events == [] and released == [False]
