"""Progress reported from inside the compiled loops (jdeconv._progress)."""

import numpy as np
import pytest

import jdeconv
from jdeconv import _progress

# the shapes of the module's doctest: 32x32, a 5x5 kernel
X = jdeconv.data.noise_target((32, 32), seed=0)
H = np.asarray(jdeconv.data.gaussian_kernel(5, 0.6))
Y = np.asarray(jdeconv.conv2d(X, H))


def test_first_order_iterations_are_reported_and_the_estimate_is_unchanged():
    seen = []
    est = jdeconv.estimate_kernel(X, Y, 5, solver="fista", max_iters=200, tol=1e-8,
                                  progress=lambda *r: seen.append(r))
    plain = jdeconv.estimate_kernel(X, Y, 5, solver="fista", max_iters=200, tol=1e-8)
    # Two compiled programs (one with the reporter's callbacks): bit-equal with XLA's default
    # options, equal to rounding with the suite's (elemental emitters fuse them differently).
    np.testing.assert_allclose(np.asarray(est.kernel), np.asarray(plain.kernel), rtol=1e-12,
                               atol=1e-15)
    assert int(est.iterations) == int(plain.iterations)
    assert seen and {s for s, _, _ in seen} == {"iterations"}
    done = [d for _, d, _ in seen]
    assert done == sorted(done) and all(d % _progress.EVERY == 0 or d == 200 for d in done)
    assert max(done) <= int(est.iterations) and {t for _, _, t in seen} == {200}
    assert int(est.iterations) // _progress.EVERY == len(seen)


def test_auto_candidates_are_reported_once_each():
    seen = []
    jdeconv.estimate_kernel(X, Y, 5, regularization="auto",
                            progress=lambda *r: seen.append(r))
    counts = [d for s, d, _ in seen if s == "candidates"]
    total = seen[0][2]
    assert counts == list(range(1, total + 1))


def test_no_reporter_outside_the_call_and_bad_values():
    seen = []
    with _progress.reporting(lambda *r: seen.append(r)):
        pass
    assert _progress._active == []
    with pytest.raises(TypeError, match="progress must be True, False, None or a callable"):
        jdeconv.estimate_kernel(X, Y, 5, progress="yes")


def test_tqdm_reporter_draws_and_closes(capsys):
    report = _progress.tqdm_reporter("test")
    report("iterations", 25, 100)
    report("iterations", 50, 100)
    report.close()
    assert "test: iterations" in capsys.readouterr().err
