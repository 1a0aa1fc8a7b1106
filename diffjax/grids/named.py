"""The named, closed-form time grids: descending ``[t_max, ..., t_min]`` of length steps + 1.

* ``uniform_t``       equal steps in t.
* ``uniform_logsnr``  equal steps in logsnr (the natural grid of exponential integrators).
* ``karras``          Karras et al. (2022) rho-spacing in sigma/alpha = exp(-logsnr/2):
                      ``s_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho``.

Every grid starts exactly at ``t_max`` and ends exactly at ``t_min``. Where logsnr is infinite at
an end (rectified flow at t = 1, or t_min = 0 with sigma(0) = 0), the logsnr-based grids place
their interior points as if that end sat at the mirror image of the other end's logsnr
(-logsnr(t_min)), then put the exact endpoint back.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.registry import Registry

__all__ = ["uniform_t", "uniform_logsnr", "karras", "get", "NAMES", "GRIDS", "check_ts"]


def __dir__():
    return sorted(__all__)


def _check(steps, t_max, t_min):
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    for name, v in (("t_max", t_max), ("t_min", t_min)):
        if isinstance(v, (int, float)) and not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {v}")
    if isinstance(t_max, (int, float)) and isinstance(t_min, (int, float)) and not t_min < t_max:
        raise ValueError(f"t_min must be < t_max, got t_min={t_min}, t_max={t_max}")


def _pin_ends(ts, t_max, t_min):
    return ts.at[0].set(t_max).at[-1].set(t_min)


def uniform_t(steps, t_max=1.0, t_min=1e-3, dtype=jnp.float32):
    """Equal steps in t: ``linspace(t_max, t_min, steps + 1)``, ends exact.

    Args:
      steps: the number of intervals, an int >= 1 (the grid has steps + 1 points).
      t_max, t_min: the first and last point, ``0 <= t_min < t_max <= 1`` (defaults 1 and 1e-3;
        ValueError otherwise where they are Python numbers).
      dtype: of the grid.
    """
    _check(steps, t_max, t_min)
    ts = jnp.linspace(jnp.asarray(t_max, dtype), jnp.asarray(t_min, dtype), steps + 1)
    return _pin_ends(ts, t_max, t_min)


def _logsnr_ends(schedule, t_max, t_min, dtype):
    lo = schedule.logsnr(jnp.asarray(t_max, dtype))
    hi = schedule.logsnr(jnp.asarray(t_min, dtype))
    lo_f, hi_f = jnp.isfinite(lo), jnp.isfinite(hi)
    lo = jnp.where(lo_f, lo, -hi)
    hi = jnp.where(hi_f, hi, -lo)
    return lo, hi


def uniform_logsnr(schedule, steps, t_max=1.0, t_min=1e-3, dtype=jnp.float32):
    """Equal steps in ``schedule``'s log-SNR from ``logsnr(t_max)`` to ``logsnr(t_min)``, mapped
    back to t; ends exact (an infinite end is mirrored, see the module docstring).

    Args:
      schedule: a ``diffjax.schedules.Schedule``.
      steps: the number of intervals, an int >= 1 (the grid has steps + 1 points).
      t_max, t_min: the first and last point, ``0 <= t_min < t_max <= 1`` (defaults 1 and 1e-3;
        ValueError otherwise where they are Python numbers).
      dtype: of the grid.
    """
    _check(steps, t_max, t_min)
    lo, hi = _logsnr_ends(schedule, t_max, t_min, dtype)
    lam = jnp.linspace(lo, hi, steps + 1)
    return _pin_ends(schedule.t_of_logsnr(lam).astype(dtype), t_max, t_min)


def karras(schedule, steps, t_max=1.0, t_min=1e-3, rho=7.0, dtype=jnp.float32):
    """Karras et al. (2022) spacing: equal steps in ``(sigma / alpha)^(1 / rho)`` from t_max to
    t_min, mapped back to t; ends exact (an infinite end is mirrored, see the module docstring).

    Args:
      schedule: a ``diffjax.schedules.Schedule``.
      steps: the number of intervals, an int >= 1 (the grid has steps + 1 points).
      t_max, t_min: the first and last point, ``0 <= t_min < t_max <= 1`` (defaults 1 and 1e-3;
        ValueError otherwise where they are Python numbers).
      rho: the spacing exponent (default 7; larger puts more points near t_min).
      dtype: of the grid.
    """
    _check(steps, t_max, t_min)
    lo, hi = _logsnr_ends(schedule, t_max, t_min, dtype)
    # s^(1/rho) = exp(-logsnr / (2 rho))
    a, b = jnp.exp(-lo / (2 * rho)), jnp.exp(-hi / (2 * rho))
    i = jnp.arange(steps + 1, dtype=dtype) / steps
    lam = -2.0 * rho * jnp.log(a + i * (b - a))
    return _pin_ends(schedule.t_of_logsnr(lam).astype(dtype), t_max, t_min)


GRIDS = Registry("grid")
"""The grid functions by name (a :class:`diffjax.registry.Registry`); ``get`` calls them."""
GRIDS.add("uniform_t", lambda schedule, *args, **kwargs: uniform_t(*args, **kwargs))
GRIDS.add("uniform_logsnr", uniform_logsnr)
GRIDS.add("karras", karras)
NAMES = GRIDS.names()
"""The grid names: ``uniform_t``, ``uniform_logsnr``, ``karras``."""


def get(name, schedule, steps, t_max=1.0, t_min=1e-3, dtype=jnp.float32, **kwargs):
    """A named grid: one of ``NAMES`` (``kwargs``: the grid's own options, e.g. ``rho``)."""
    return GRIDS.get(name)(schedule, steps, t_max, t_min, dtype=dtype, **kwargs)


def check_ts(ts, *, increasing=False):
    """Validate an explicit grid when its values are known at trace time (a concrete array)."""
    ts_np = None
    try:
        ts_np = np.asarray(ts)
    except jax.errors.TracerArrayConversionError:  # traced: only the shape can be checked
        pass
    shape = jnp.shape(ts)
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(f"ts must be a 1-D array of length steps + 1 >= 2, got shape {shape}")
    if ts_np is not None and ts_np.dtype != object:
        if not np.all(np.isfinite(ts_np)) or ts_np.min() < 0 or ts_np.max() > 1:
            raise ValueError(f"ts must lie in [0, 1], got min {ts_np.min()} max {ts_np.max()}")
        d = np.diff(ts_np)
        if increasing and not np.all(d > 0):
            raise ValueError("ts must be strictly increasing [t_min, ..., t_max] for encoding")
        if not increasing and not np.all(d < 0):
            raise ValueError("ts must be strictly decreasing [t_max, ..., t_min] (no duplicates)")
