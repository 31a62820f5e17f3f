"""Benchmark functions (pure numpy; no hposdk imports). All are minimised.

* ``branin`` on ``[-5, 10] x [0, 15]``: minimum ``BRANIN_MIN`` at three points.
* ``hartmann6`` on ``[0, 1]^6``: minimum ``HARTMANN6_MIN``.
* ``mixed``: a five-parameter function of a categorical, a boolean, an integer, a log-scaled and a
  linear float, whose optimum in the continuous parameters moves with the categorical (see its
  docstring); minimum ``MIXED_MIN = 0``.
* ``hartmann6_mf``: Hartmann-6 at a fidelity (below).

Multi-fidelity Hartmann-6 (used by ``multifidelity.py``): the classic 6-d Hartmann function, evaluated
at a *fidelity* ``s`` in ``[0, 1]`` derived from the budget. Like the multi-fidelity benchmarks of
the BOHB and DEHB papers, cheap evaluations are informative but wrong in two ways that shrink with
the budget:

* bias: the weights of the four modes move by ``BIAS * (1 - s)``, so low fidelities rank the modes
  differently (the best low-budget point is not the best full-budget one);
* noise: Gaussian with standard deviation ``NOISE * (1 - s)``.

At the full budget (``s = 1``) it is exactly Hartmann-6 (minimum ``HARTMANN6_MIN`` at
``HARTMANN6_ARGMIN``), so a trial's observed value at the full budget is its true value.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "BRANIN_MIN",
    "HARTMANN6_ARGMIN",
    "HARTMANN6_MIN",
    "MIXED_CHOICES",
    "MIXED_MIN",
    "branin",
    "fidelity",
    "hartmann6",
    "hartmann6_mf",
    "mixed",
]

_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_A = np.array([
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
])
_P = 1e-4 * np.array([
    [1312, 1696, 5569, 124, 8283, 5886],
    [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650],
    [4047, 8828, 8732, 5743, 1091, 381],
])
HARTMANN6_MIN = -3.322368011415515
HARTMANN6_ARGMIN = (0.20168952, 0.15001069, 0.47687398, 0.27533243, 0.31165162, 0.65730054)
#: How far the mode weights move at the lowest fidelity (the 3rd mode looks best there).
BIAS = np.array([0.0, 0.4, 0.8, -0.6])
#: Noise standard deviation at the lowest fidelity.
NOISE = 0.4


def hartmann6(x: Sequence[float], alpha: np.ndarray = _ALPHA) -> float:
    """Hartmann-6 on ``[0, 1]^6`` (minimum ``HARTMANN6_MIN``)."""
    z = np.asarray(x, dtype=float)
    return float(-np.sum(alpha * np.exp(-np.sum(_A * (z - _P) ** 2, axis=1))))


def fidelity(budget: float, min_budget: float, max_budget: float) -> float:
    """``s`` in [0, 1]: 0 at ``min_budget``, 1 at ``max_budget``, linear in log(budget)."""
    if max_budget == min_budget:
        return 1.0
    s = math.log(budget / min_budget) / math.log(max_budget / min_budget)
    return min(max(s, 0.0), 1.0)


def hartmann6_mf(x: Sequence[float], budget: float, min_budget: float, max_budget: float, seed: int = 0) -> float:
    """Multi-fidelity Hartmann-6 at ``budget``: biased and noisy below ``max_budget``, exact at it.

    The noise is a fixed function of (x, budget, seed), so two optimizers that evaluate the same
    point at the same budget observe the same value (and a run is reproducible).
    """
    s = fidelity(budget, min_budget, max_budget)
    value = hartmann6(x, _ALPHA + BIAS * (1.0 - s))
    if s < 1.0:
        key = zlib.crc32(np.asarray(x, dtype=float).tobytes() + repr(float(budget)).encode())
        value += NOISE * (1.0 - s) * float(np.random.default_rng([seed, key]).standard_normal())
    return value


BRANIN_MIN = 0.397887357729738


def branin(x1: float, x2: float) -> float:
    """Branin-Hoo on ``[-5, 10] x [0, 15]`` (minimum ``BRANIN_MIN``)."""
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


#: The categorical of ``mixed``: per choice, (offset, optimal log10(lr), optimal x).
MIXED_CHOICES = {
    "adam": (0.0, -3.5, 0.70),
    "sgd": (0.15, -1.5, 0.20),
    "rmsprop": (0.30, -4.5, 0.45),
    "adagrad": (0.50, -2.0, 0.90),
}
MIXED_MIN = 0.0


def mixed(optimizer: str, lr: float, x: float, layers: int, batchnorm: bool) -> float:
    """A mixed-type function: categorical ``optimizer``, ``lr`` in [1e-5, 1e-1] (log), ``x`` in [0, 1],
    integer ``layers`` in 1..32 and boolean ``batchnorm``; minimum ``MIXED_MIN = 0`` at adam,
    lr = 10**-3.5, x = 0.7, layers = 12, batchnorm True.

    The optimal ``lr`` and ``x`` depend on the categorical, and the two interact (a rotated
    quadratic with a ripple), so sampling the parameters independently is not enough.
    """
    offset, best_log_lr, best_x = MIXED_CHOICES[optimizer]
    dl = math.log10(lr) - best_log_lr
    dx = x - best_x
    value = offset + 2.0 * dx**2 + 0.25 * dl**2 + 0.5 * dx * dl + 0.05 * math.sin(3.0 * dl) ** 2
    value += 0.003 * (layers - 12) ** 2 + (0.0 if batchnorm else 0.1)
    return float(value)
