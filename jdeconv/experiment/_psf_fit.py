"""Parametric PSF fits for runs and the command line (``model.psf_model`` / ``--model``).

:func:`fit_record` turns a :class:`jdeconv.PSFFit` into the JSON-able record a
run writes into ``metrics.json`` (under ``psf_fit``) and ``jdeconv estimate
--model NAME -o k.npy`` writes to ``k.json``: the model, its parameters with
standard errors, the covariance (rows labelled), the fit statistic and
χ²/dof, and, for comparison, the nonparametric estimate's fit statistic.

Example:
    >>> check_model("gausian")
    Traceback (most recent call last):
    ...
    ValueError: unknown PSF model 'gausian'; expected one of 'gaussian', 'elliptical_gaussian', 'moffat', 'airy', 'defocus', 'line_motion', 'zernike'. Did you mean 'gaussian'?
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import numpy as np

from jdeconv._names import PSF_MODEL_NAMES

__all__ = ["check_model", "fit", "fit_record"]


def check_model(name: Any) -> str:
    """``name`` if it is a PSF model's name, else a ValueError with a did-you-mean."""
    if isinstance(name, str) and name in PSF_MODEL_NAMES:
        return name
    match = difflib.get_close_matches(str(name), list(PSF_MODEL_NAMES), n=1, cutoff=0.5)
    raise ValueError(f"unknown PSF model {name!r}; expected one of "
                     f"{', '.join(map(repr, PSF_MODEL_NAMES))}."
                     + (f" Did you mean {match[0]!r}?" if match else ""))


def _num(v):
    a = np.asarray(v, np.float64)
    if a.ndim == 0:
        f = float(a)
        return f if math.isfinite(f) else None
    return [_num(e) for e in a]


def fit(x, y, model: str, kernel_shape, *, mode: str = "valid", init=None, max_iters=None,
        tol=None):
    """:func:`jdeconv.fit_psf` on 2-D arrays, blocked on."""
    import jax

    from jdeconv import fit_psf

    kw: dict[str, Any] = dict(mode=mode, init=init, tol=tol)
    if max_iters is not None:
        kw["max_iters"] = int(max_iters)
    return jax.block_until_ready(fit_psf(np.asarray(x), np.asarray(y), model,
                                         tuple(kernel_shape), **kw))


def fit_record(f, *, nonparametric_fit_statistic=None) -> dict[str, Any]:
    """The JSON-able record of a :class:`jdeconv.PSFFit` (see the module docstring)."""
    return {
        "model": f.model,
        "params": {k: _num(f.params[k]) for k in f.param_names},
        "stderr": {k: _num(f.stderr[k]) for k in f.param_names},
        "covariance_names": list(f.covariance_names),
        "covariance": _num(f.covariance),
        "fit_statistic": _num(f.fit_statistic),
        "chi2_dof": _num(f.chi2_dof),
        "noise_sigma": _num(f.noise_sigma),
        "residual_norm": _num(f.residual_norm),
        "dof": int(f.dof),
        "iterations": int(np.asarray(f.iterations)),
        "converged": bool(np.asarray(f.converged)),
        "message": f.message,
        "nonparametric_fit_statistic": None if nonparametric_fit_statistic is None
        else _num(nonparametric_fit_statistic),
    }
