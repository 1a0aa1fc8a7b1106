"""2-D toy distributions with exact samplers.

``sample(name, n, seed)`` draws ``n`` independent points from the distribution itself (never
from a fixed finite sample), as float32 numpy of shape ``(n, 2)``; the same ``(name, n,
seed)`` always gives the same points. Distributions (all parameters are module constants):

``gaussian_ring``
    Equal-weight mixture of ``RING_COMPONENTS = 8`` isotropic Gaussians with standard deviation
    ``RING_STD = 0.1`` centred at ``RING_RADIUS * (cos(2 pi k / 8), sin(2 pi k / 8))``,
    ``RING_RADIUS = 2``. Mean 0, covariance ``(R^2 / 2 + s^2) I``, ``E|x|^2 = R^2 + 2 s^2``.
``two_moons``
    With probability 1/2 each (``theta ~ U[0, pi]``): the upper moon ``(cos theta, sin theta)``
    or the lower moon ``(1 - cos theta, 1/2 - sin theta)``; then shifted by
    ``MOONS_SHIFT = (-1/2, -1/4)`` (which makes the mean exactly 0) and blurred by isotropic
    Gaussian noise of standard deviation ``MOONS_NOISE = 0.1``. (scikit-learn's ``make_moons``
    geometry, with a random rather than evenly spaced angle.)
``swiss_roll``
    ``t ~ U[1.5 pi, 4.5 pi]``, point ``t (cos t, sin t) / SWISS_ROLL_SCALE + SWISS_ROLL_SHIFT``
    (``SWISS_ROLL_SCALE = 5``; ``SWISS_ROLL_SHIFT = -(2, 2 / (3 pi)) / 5`` is minus the exact
    mean of the spiral, so the mean is 0) plus isotropic Gaussian noise of standard deviation
    ``SWISS_ROLL_NOISE = 0.05``: a spiral whose radius ``t / 5`` grows with the angle ``t``.
``checkerboard``
    Uniform on the black squares of a 4 x 4 board of unit squares covering ``[-2, 2]^2``: the
    squares ``[i, i+1) x [j, j+1)`` (``i, j`` in ``-2..1``) with ``i + j`` even; 8 squares, each
    with probability 1/8, uniform inside. Mean 0, per-coordinate variance 4/3.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["CHECKERBOARD_SIZE", "MOONS_NOISE", "MOONS_SHIFT", "NAMES", "RING_COMPONENTS", "RING_RADIUS", "RING_STD",
           "SWISS_ROLL_NOISE", "SWISS_ROLL_SCALE", "SWISS_ROLL_SHIFT", "SWISS_ROLL_T_RANGE", "check_name",
           "checkerboard_squares", "sample"]


def __dir__():
    return sorted(__all__)


RING_COMPONENTS = 8
"""``gaussian_ring``: the number of equal-weight Gaussian components, evenly spaced on a circle."""
RING_RADIUS = 2.0
"""``gaussian_ring``: the radius of the circle of component centres."""
RING_STD = 0.1
"""``gaussian_ring``: the standard deviation of each (isotropic) component."""

MOONS_SHIFT = (-0.5, -0.25)
"""``two_moons``: the shift added to every point (it makes the mean exactly 0)."""
MOONS_NOISE = 0.1
"""``two_moons``: the standard deviation of the isotropic Gaussian blur."""

SWISS_ROLL_T_RANGE = (1.5 * np.pi, 4.5 * np.pi)
"""``swiss_roll``: the range ``(low, high)`` of the uniform angle ``t``."""
SWISS_ROLL_SCALE = 5.0
"""``swiss_roll``: the divisor of ``t (cos t, sin t)`` (the spiral's radius is ``t / 5``)."""
SWISS_ROLL_NOISE = 0.05
"""``swiss_roll``: the standard deviation of the isotropic Gaussian blur."""
# E[t cos t] = 2 and E[t sin t] = 2 / (3 pi) for t ~ U[1.5 pi, 4.5 pi].
SWISS_ROLL_SHIFT = (-2.0 / SWISS_ROLL_SCALE, -2.0 / (3.0 * np.pi) / SWISS_ROLL_SCALE)
"""``swiss_roll``: the shift added to every point, minus the exact mean of the spiral (so the
mean is 0)."""

CHECKERBOARD_SIZE = 4
"""``checkerboard``: the number of unit squares per side of the board, centred on the origin."""


def _gaussian_ring(rng: np.random.Generator, n: int) -> np.ndarray:
    k = rng.integers(0, RING_COMPONENTS, size=n)
    angle = 2.0 * np.pi * k / RING_COMPONENTS
    centres = RING_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    return centres + RING_STD * rng.standard_normal((n, 2))


def _two_moons(rng: np.random.Generator, n: int) -> np.ndarray:
    theta = rng.uniform(0.0, np.pi, size=n)
    lower = rng.random(n) < 0.5
    x = np.where(lower, 1.0 - np.cos(theta), np.cos(theta))
    y = np.where(lower, 0.5 - np.sin(theta), np.sin(theta))
    points = np.stack([x, y], axis=-1) + np.asarray(MOONS_SHIFT)
    return points + MOONS_NOISE * rng.standard_normal((n, 2))


def _swiss_roll(rng: np.random.Generator, n: int) -> np.ndarray:
    t = rng.uniform(*SWISS_ROLL_T_RANGE, size=n)
    points = t[:, None] * np.stack([np.cos(t), np.sin(t)], axis=-1) / SWISS_ROLL_SCALE
    points = points + np.asarray(SWISS_ROLL_SHIFT)
    return points + SWISS_ROLL_NOISE * rng.standard_normal((n, 2))


def checkerboard_squares() -> np.ndarray:
    """Lower-left corners ``(i, j)`` of the occupied unit squares (``i + j`` even)."""
    half = CHECKERBOARD_SIZE // 2
    return np.array([(i, j) for i in range(-half, half) for j in range(-half, half)
                     if (i + j) % 2 == 0], dtype=np.float64)


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    squares = checkerboard_squares()
    which = rng.integers(0, len(squares), size=n)
    return squares[which] + rng.random((n, 2))


_SAMPLERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "gaussian_ring": _gaussian_ring,
    "two_moons": _two_moons,
    "swiss_roll": _swiss_roll,
    "checkerboard": _checkerboard,
}
NAMES = tuple(_SAMPLERS)
"""The toy distribution names: ``gaussian_ring``, ``two_moons``, ``swiss_roll``,
``checkerboard``."""


def check_name(name: str) -> str:
    """``name`` if it is one of ``NAMES``, else a ValueError listing them."""
    if name not in _SAMPLERS:
        raise ValueError(f"name must be one of {list(NAMES)}, got {name!r}.")
    return name


def sample(name: str, n: int, seed: int | Sequence[int] = 0) -> np.ndarray:
    """``n`` exact, independent draws from toy distribution ``name`` as float32 ``(n, 2)``.

    ``seed`` is an int or a sequence of ints (as for ``np.random.default_rng``); the result is
    a deterministic function of ``(name, n, seed)``.
    """
    check_name(name)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}.")
    rng = np.random.default_rng(seed)
    return _SAMPLERS[name](rng, int(n)).astype(np.float32)
