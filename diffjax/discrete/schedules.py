"""Noise schedules of discrete diffusion: ``alpha(t)``, the probability that a token is untouched.

Convention: t in [0, 1], t = 0 is data, t = 1 is noise; ``alpha`` decreases from
``alpha(0) = 1`` to ``alpha(1) = 0``. For the masked process ``1 - alpha(t)`` is the masking
probability, for the uniform process the probability that a token was resampled.

Every schedule is computed in log space: ``log_alpha(t)`` and ``log1m_alpha(t) = log(1 - alpha(t))``
are closed forms that stay accurate at both ends (no ``1 - alpha`` cancellation), and the rates
the continuous-time ELBOs need are closed forms too:

* ``dlog_alpha(t)   = alpha'(t) / alpha(t)``        (<= 0; the uniform-noise rate is ``-dlog_alpha``)
* ``dlog1m_alpha(t) = -alpha'(t) / (1 - alpha(t))`` (>= 0; the masked-diffusion ELBO weight)

Schedules:

* ``"linear"``:     ``alpha = 1 - t`` (MDLM, MD4 "linear").
* ``"cosine"``:     ``alpha = 1 - cos(pi/2 (1 - t)) = 1 - sin(pi t / 2)``, MD4's cosine, which is
  MaskGIT's cosine masking ratio ``sin(pi t / 2)``; computed as ``log alpha = log 2 + 2 log
  sin(pi (1 - t) / 4)`` (exact near t = 1).
* ``"polynomial"``: ``alpha = 1 - t**exponent`` (MD4 "poly"; exponent 1 is linear).
"""
from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp

from diffjax.discrete._numerics import as_float, log1mexp

NAMES = ("linear", "cosine", "polynomial")
"""The schedule names ``get`` accepts, described above."""

__all__ = ["Schedule", "get", "NAMES"]


def __dir__():
    return sorted(__all__)


class Schedule(eqx.Module):
    """An immutable pytree: ``name`` is static, ``exponent`` (used by "polynomial") is a leaf."""

    name: str = eqx.field(static=True)
    exponent: float = 1.0

    def __check_init__(self):
        if self.name not in NAMES:
            raise ValueError(f"schedule must be one of {NAMES}, got {self.name!r}")

    # --- log-space closed forms -------------------------------------------------------------
    def log_alpha(self, t):
        t = as_float(t)
        if self.name == "linear":
            return jnp.log1p(-t)
        if self.name == "cosine":
            # 1 - sin(pi t/2) directly for t < 1/2, and as 2 sin^2(pi (1 - t)/4) for t >= 1/2.
            near0 = jnp.log1p(-jnp.sin(0.5 * math.pi * jnp.minimum(t, 0.5)))
            near1 = math.log(2.0) + 2.0 * jnp.log(jnp.sin(0.25 * math.pi * (1.0 - jnp.maximum(t, 0.5))))
            return jnp.where(t < 0.5, near0, near1)
        return log1mexp(self._log_tp(t))

    def log1m_alpha(self, t):
        t = as_float(t)
        if self.name == "linear":
            return jnp.log(t)
        if self.name == "cosine":
            return jnp.log(jnp.sin(0.5 * math.pi * t))
        return self._log_tp(t)

    def _log_tp(self, t):
        return jnp.asarray(self.exponent, t.dtype) * jnp.log(t)

    def time_at_log1m_alpha(self, log_c):
        """The inverse of ``log1m_alpha``: the t in [0, 1] with ``log(1 - alpha(t)) = log_c``
        (``log_c`` in [-inf, 0]; -inf gives t = 0, 0 gives t = 1)."""
        log_c = jnp.minimum(as_float(log_c), 0.0)
        if self.name == "linear":
            return jnp.exp(log_c)
        if self.name == "cosine":
            return (2.0 / math.pi) * jnp.arcsin(jnp.exp(log_c))
        return jnp.exp(log_c / jnp.asarray(self.exponent, log_c.dtype))

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    # --- rates --------------------------------------------------------------------------------
    def dlog_alpha(self, t):
        """``alpha'(t) / alpha(t)`` (-inf at t = 1, where alpha = 0)."""
        t = as_float(t)
        if self.name == "linear":
            return -1.0 / (1.0 - t)
        if self.name == "cosine":
            u = 0.25 * math.pi * (1.0 - t)
            return -0.5 * math.pi * jnp.cos(u) / jnp.sin(u)
        p = jnp.asarray(self.exponent, t.dtype)
        return -p * jnp.power(t, p - 1.0) * jnp.exp(-self.log_alpha(t))

    def dlog1m_alpha(self, t):
        """``-alpha'(t) / (1 - alpha(t))`` (+inf at t = 0, where 1 - alpha = 0)."""
        t = as_float(t)
        if self.name == "linear":
            return 1.0 / t
        if self.name == "cosine":
            u = 0.5 * math.pi * t
            return jnp.maximum(0.5 * math.pi * jnp.cos(u) / jnp.sin(u), 0.0)
        return jnp.asarray(self.exponent, t.dtype) / t


def get(schedule, exponent=None) -> Schedule:
    """A ``Schedule`` from a name ("linear", "cosine", "polynomial") or an existing ``Schedule``."""
    if isinstance(schedule, Schedule):
        if exponent is not None:
            raise ValueError("exponent can only be given together with a schedule name")
        return schedule
    if not isinstance(schedule, str) or schedule not in NAMES:
        raise ValueError(f"schedule must be one of {NAMES} or a Schedule, got {schedule!r}")
    if exponent is None:
        exponent = 2.0 if schedule == "polynomial" else 1.0
    elif schedule != "polynomial":
        raise ValueError(f"exponent only applies to schedule='polynomial', not {schedule!r}")
    if not exponent > 0:
        raise ValueError(f"exponent must be > 0, got {exponent}")
    return Schedule(schedule, float(exponent))
