"""What a user sees while the experiment layer works: progress bars and recorded warnings.

:func:`tqdm_progress` is the progress hook of sweeps, batches and the command
line (a ``tqdm`` bar on stderr, shown on a terminal only);
:func:`recorded_warnings` collects the estimate's and the reader's warnings as
one line each, for ``metrics.json`` and the command line's
``jdeconv: warning:`` lines.

>>> import warnings
>>> with recorded_warnings() as messages:
...     warnings.warn("the box   cuts the kernel")
>>> messages
['the box cuts the kernel']
"""

from __future__ import annotations

import contextlib
import sys
import warnings as _warnings
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Progress", "recorded_warnings", "tqdm_progress"]

Progress = Callable[..., Any]


def tqdm_progress(*, quiet: bool = False) -> Progress | None:
    """A progress hook: ``tqdm`` on stderr (shown on a terminal only), or None when quiet."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    def progress(iterable, **kw):
        return tqdm(iterable, file=sys.stderr, disable=None, **kw)

    return progress


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[str]]:
    """Records the user warnings raised inside (one line each, in order, no repeats).

    ``with recorded_warnings() as messages: ...``: after the block,
    ``messages`` holds the text of every ``UserWarning`` (FitWarning,
    LossyImageWarning, ...) raised inside, whatever the warning filters say;
    other warnings (deprecations) are passed on as they came.
    """
    messages: list[str] = []
    with _warnings.catch_warnings(record=True) as log:
        _warnings.simplefilter("always", UserWarning)
        try:
            yield messages
        finally:
            others = []
            for w in log:
                if issubclass(w.category, UserWarning):
                    text = " ".join(str(w.message).split())
                    if text not in messages:
                        messages.append(text)
                else:
                    others.append(w)
    for w in others:
        _warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
