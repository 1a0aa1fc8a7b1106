"""The named, closed-form time grids: descending ``[t_max, ..., t_min]`` of length steps + 1.

* ``uniform_t``       equal steps in t.
* ``uniform_logsnr``  equal steps in logsnr (the natural grid of exponential integrators).
* ``karras``          Karras et al. (2022) rho-spacing in sigma/alpha = exp(-logsnr/2):
                      ``s_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho``.
* ``uniform_angle``   equal steps in the angle ``u = arctan((sigma/(alpha sigma_data))^(1/rho))``;
                      rho = 1, sigma_data = 1 (the defaults) is the angle of (alpha, sigma), i.e.
                      equal steps in t of the cosine schedule (without its clipping), whatever the
                      schedule; sigma_data moves the densest points to sigma/alpha = sigma_data.

Every grid starts exactly at ``t_max`` and ends exactly at ``t_min``. Where logsnr is infinite at
an end (rectified flow at t = 1, or t_min = 0 with sigma(0) = 0), ``uniform_logsnr`` and
``karras`` place their interior points as if that end sat at the mirror image of the other end's
logsnr (-logsnr(t_min)), then put the exact endpoint back; ``uniform_angle`` needs no mirror (its
angle is pi/2 where alpha = 0 and 0 where sigma = 0).

``uniform_angle`` spends few points where the denoiser hardly changes, for data of scale
sigma_data: where sigma/alpha >> sigma_data (it is the data mean plus a term of order
alpha/sigma) and where sigma/alpha << sigma_data (it is x/alpha plus a term of order
(sigma/alpha)^2). Per unit of log-SNR its density of points is proportional to
1 / cosh((logsnr / 2 + log sigma_data) / rho): rho sets how fast it falls off toward both ends (a
uniform-logsnr grid is the limit rho -> inf). With rho = 1 it is the default grid of euler, ddim,
heun, the DPM-Solver++ solvers, ipndm (sigma_data = 1) and unipc (sigma_data = 0.5); their
docstrings give the measurements. It does not depend on the schedule's parameterisation of t,
only on its log-SNR.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.registry import Registry

__all__ = ["uniform_t", "uniform_logsnr", "karras", "uniform_angle", "get", "NAMES", "GRIDS", "check_ts",
           "MIRRORED"]


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


def uniform_angle(schedule, steps, t_max=1.0, t_min=1e-3, rho=1.0, sigma_data=1.0,
                  dtype=jnp.float32):
    """Equal steps in the angle ``arctan((sigma / (alpha sigma_data))^(1 / rho))`` from t_max to
    t_min, mapped back to t; ends exact, infinite log-SNR ends included (see the module docstring).

    Args:
      schedule: a ``diffjax.schedules.Schedule``.
      steps: the number of intervals, an int >= 1 (the grid has steps + 1 points).
      t_max, t_min: the first and last point, ``0 <= t_min < t_max <= 1`` (defaults 1 and 1e-3;
        ValueError otherwise where they are Python numbers).
      rho: a number > 0 (default 1: equal steps in the angle of (alpha sigma_data, sigma);
        larger values spread the points toward both ends, a uniform-logsnr grid in the limit).
      sigma_data: a number > 0 (default 1): the noise level sigma / alpha at which the points
        are densest (half of them on each side of it at rho = 1); the data's scale.
      dtype: of the grid.
    """
    _check(steps, t_max, t_min)
    for name, value in (("rho", rho), ("sigma_data", sigma_data)):
        if isinstance(value, (int, float)) and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    lo = schedule.logsnr(jnp.asarray(t_max, dtype))
    hi = schedule.logsnr(jnp.asarray(t_min, dtype))
    # (sigma / (alpha sigma_data))^(1 / rho) = exp(-(logsnr / 2 + c) / rho), c = log sigma_data;
    # arctan maps [0, inf] onto [0, pi / 2]
    c = jnp.log(jnp.asarray(sigma_data, dtype))
    u0 = jnp.arctan(jnp.exp(-(lo / 2 + c) / rho))
    u1 = jnp.arctan(jnp.exp(-(hi / 2 + c) / rho))
    u = u0 + jnp.arange(steps + 1, dtype=dtype) / steps * (u1 - u0)
    lam = 2.0 * rho * (jnp.log(jnp.cos(u)) - jnp.log(jnp.sin(u))) - 2.0 * c
    return _pin_ends(schedule.t_of_logsnr(lam).astype(dtype), t_max, t_min)


GRIDS = Registry("grid")
"""The grid functions by name (a :class:`diffjax.registry.Registry`); ``get`` calls them."""
GRIDS.add("uniform_t", lambda schedule, *args, **kwargs: uniform_t(*args, **kwargs))
GRIDS.add("uniform_logsnr", uniform_logsnr)
GRIDS.add("karras", karras)
GRIDS.add("uniform_angle", uniform_angle)
NAMES = GRIDS.names()
"""The grid names: ``uniform_t``, ``uniform_logsnr``, ``karras``, ``uniform_angle``."""
MIRRORED = ("uniform_logsnr", "karras")
"""The grids that mirror an infinite log-SNR end (they need a finite one at the other end)."""


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
