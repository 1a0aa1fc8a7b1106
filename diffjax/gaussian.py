"""The Gaussian process as an object with the interface of ``diffjax.discrete`` processes.

``gaussian(schedule, prediction)`` bundles a schedule and a prediction kind with the methods that
the discrete processes share: ``alpha``, ``sample_marginal``, ``posterior`` and ``nelbo``, so
code that only needs "a forward process, its posterior and its bound" works with either family.

* ``sample_marginal(key, x0, t)``: x_t = alpha(t) x0 + sigma(t) eps.
* ``posterior(x_t, x0, s, t)``: the exact Gaussian q(x_s | x_t, x0) for s < t, as ``(mean, std)``:
  with alpha_ts = alpha_t / alpha_s and sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2,
  mean = alpha_ts sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_ts^2 / sigma_t^2 x0,
  var = sigma_ts^2 sigma_s^2 / sigma_t^2.
* ``nelbo(model_fn, x0, key, num_steps=None)``: the VDM bound in nats per example,
  continuous-time (``num_steps=None``) or T-step (``diffjax.losses``).
"""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from diffjax import losses
from diffjax.parameterization import add_noise, check_kind, expand
from diffjax.schedules import Schedule

__all__ = ["GaussianProcess", "gaussian"]


def __dir__():
    return sorted(__all__)


class GaussianProcess(eqx.Module):
    """A Gaussian forward process: a schedule and the kind its model predicts (see the module
    docstring for the methods). Build it with :func:`gaussian`.

    Attributes:
      schedule: a ``diffjax.schedules.Schedule``.
      prediction: one of ``diffjax.KINDS`` (static).
    """

    schedule: Schedule
    prediction: str = eqx.field(static=True, default="eps")

    def alpha(self, t):
        return self.schedule.alpha(t)

    def sigma(self, t):
        return self.schedule.sigma(t)

    def sample_marginal(self, key, x0, t):
        return add_noise(x0, jax.random.normal(key, x0.shape, x0.dtype), t, self.schedule)

    def posterior(self, x_t, x0, s, t):
        sch = self.schedule
        a_s, s_s, a_t, s_t = (expand(v, x_t) for v in (sch.alpha(s), sch.sigma(s), sch.alpha(t), sch.sigma(t)))
        a_ts = a_t / a_s
        var_ts = s_t**2 - (a_ts * s_s) ** 2
        mean = a_ts * s_s**2 / s_t**2 * x_t + a_s * var_ts / s_t**2 * x0
        std = jnp.sqrt(jnp.clip(var_ts * s_s**2 / s_t**2, 0.0))
        return mean, std

    def nelbo(self, model_fn, x0, key, num_steps=None, antithetic=True, **kwargs):
        if num_steps is None:
            total, _ = losses.vdm_elbo(model_fn, x0, key, schedule=self.schedule, prediction=self.prediction,
                                       antithetic=antithetic, **kwargs)
        else:
            total, _ = losses.vdm_elbo_discrete(model_fn, x0, key, schedule=self.schedule,
                                                prediction=self.prediction, num_steps=num_steps, **kwargs)
        return total


def gaussian(schedule: Schedule, prediction: str = "eps") -> GaussianProcess:
    """The Gaussian process of ``schedule`` for a model predicting ``prediction`` (one of
    ``diffjax.KINDS``, default ``"eps"``; a ValueError names ``prediction`` otherwise)."""
    return GaussianProcess(schedule, check_kind(prediction))
