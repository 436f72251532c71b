"""Experiments: YAML configurations, image pairs, metrics, plots, run directories, the CLI.

The application layer over :mod:`jdeconv` (the core) and :mod:`jdeconv.data`;
nothing there imports it. Names load on first use, so importing
``jdeconv.experiment.cli`` (the ``jdeconv`` command) loads neither JAX nor
pydantic nor PyYAML until a command needs them.

* :func:`load_config` / :class:`Config` / :class:`ConfigError`: the schema
  (``_config``).
* :func:`run_experiment`: a configuration in, a run directory out (``_runner``).

A run directory is finished exactly when its name has no ``.partial`` suffix.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Config": "_config",
    "ConfigError": "_config",
    "load_config": "_config",
    "run_experiment": "_runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"jdeconv.experiment.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jdeconv.experiment' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from jdeconv.experiment._config import Config, ConfigError, load_config
    from jdeconv.experiment._runner import run_experiment
