"""jdeconv._names: every name a user can pass, declared once (and importable without JAX)."""

import subprocess
import sys
import typing

from jdeconv import _names


def test_tuples_are_the_literal_values():
    pairs = [(_names.Mode, _names.MODES), (_names.Method, _names.METHODS),
             (_names.Prior, _names.PRIORS), (_names.Solver, _names.SOLVERS),
             (_names.Regularizer, _names.REGULARIZERS), (_names.Criterion, _names.CRITERIA),
             (_names.QuadraticRegularizer, _names.QUADRATIC_REGULARIZERS),
             (_names.Channels, _names.CHANNELS)]
    for literal, values in pairs:
        assert typing.get_args(literal) == values
        assert len(set(values)) == len(values)
    assert _names.MODES[0] == "valid" and _names.PRIORS[0] == "simplex"
    assert _names.SOLVERS[0] == "auto"


def test_families_are_subsets():
    assert set(_names.FIRST_ORDER_SOLVERS) < set(_names.SOLVERS)
    assert set(_names.EQUALITY_PRIORS) < set(_names.PRIORS)
    assert set(_names.BOUND_PRIORS) < set(_names.PRIORS)
    assert set(_names.QUADRATIC_REGULARIZERS) < set(_names.REGULARIZERS)


def test_importing_the_names_loads_no_jax():
    code = "import sys, jdeconv._names; assert 'jax' not in sys.modules, 'jax loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
