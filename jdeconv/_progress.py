"""Progress from inside compiled loops (``estimate_kernel(..., progress=...)``).

A long estimate is one compiled call: a first-order solver's ``while_loop``,
the matrix-free path, or the candidate weights of ``regularization="auto"``.
To say how far it has got, the loops are compiled with a ``jax.debug.callback``
every :data:`EVERY` iterations (and once per candidate weight) that hands
``(stage, done, total)`` to the reporter of the call in progress. The callback
is compiled in only when progress was asked for (a static flag), so ordinary
programs stay pure and unchanged.

A reporter is any callable ``report(stage, done, total)``; ``stage`` is one of
:data:`STAGES`. :func:`reporting` makes it the active one for the duration of
a call (innermost wins; the compiled program finds it at run time, so one
compiled program serves every reporter). ``progress=True`` uses
:func:`tqdm_reporter` (a bar on stderr; tqdm is imported only then).

Example:
  >>> import jdeconv
  >>> x = jdeconv.data.noise_target((32, 32), seed=0)
  >>> y = jdeconv.conv2d(x, jdeconv.data.gaussian_kernel(5, 0.6))
  >>> seen = []
  >>> est = jdeconv.estimate_kernel(x, y, 5, solver="fista", max_iters=200, tol=1e-8,
  ...                               progress=lambda stage, done, total: seen.append(stage))
  >>> sorted(set(seen))
  ['iterations']
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable

import jax
import jax.numpy as jnp

#: Iterations between two reports of a first-order loop.
EVERY = 25
#: What a report counts: solver iterations, or candidate weights of ``"auto"``.
STAGES = ("iterations", "candidates")

_lock = threading.Lock()
_active: list[Callable] = []  # the reporters of the calls in progress (innermost last)


@contextlib.contextmanager
def reporting(report: Callable[[str, int, int], None]):
    """Makes ``report`` receive the progress of the compiled calls made inside the block."""
    with _lock:
        _active.append(report)
    try:
        yield report
    finally:
        with _lock:
            _active.remove(report)


def _dispatch(stage, done, total):
    with _lock:
        report = _active[-1] if _active else None
    if report is not None:
        report(STAGES[int(stage)], int(done), int(total))


def tick(enabled: bool, stage: str, done, total, *, every: int = EVERY) -> None:
    """Inside a traced loop: reports ``done`` of ``total`` every ``every`` steps and at the end.

    Args:
      enabled: static; False compiles nothing.
      stage: one of :data:`STAGES` (static).
      done, total: traced integer scalars (unbatched: progress is for single estimates).
      every: static reporting interval.
    """
    if not enabled:
        return
    code = jnp.asarray(STAGES.index(stage), jnp.int32)
    done = jnp.asarray(done, jnp.int32)
    total = jnp.asarray(total, jnp.int32)
    jax.lax.cond((done % every == 0) | (done >= total),
                 lambda: jax.debug.callback(_dispatch, code, done, total),
                 lambda: None)


def tqdm_reporter(description: str = "jdeconv"):
    """A reporter drawing a tqdm bar on stderr (one bar per stage); call ``.close()`` after."""
    from tqdm.auto import tqdm

    bars: dict[str, object] = {}

    def report(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{description}: {stage}", leave=False,
                                     unit=stage[:4], dynamic_ncols=True)
        bar.n = min(done, total)
        bar.refresh()

    def close() -> None:
        for bar in bars.values():
            bar.close()
        bars.clear()

    report.close = close
    return report


def as_reporter(progress):
    """``progress=`` of the API: None/False (no reporter), True (a tqdm bar) or a callable."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return tqdm_reporter()
    if callable(progress):
        return progress
    raise TypeError(f"progress must be True, False, None or a callable (stage, done, total), "
                    f"got {progress!r}.")
