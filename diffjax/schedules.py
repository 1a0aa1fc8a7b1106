"""Gaussian noise schedules: immutable pytrees of alpha(t), sigma(t) and logsnr(t).

Convention: t in [0, 1], t = 0 is data and t = 1 is noise, and

    x_t = alpha(t) * x0 + sigma(t) * eps,    logsnr(t) = log(alpha(t)**2 / sigma(t)**2),

with logsnr strictly decreasing in t. Each schedule computes in log space (``log_alpha``,
``log_sigma``) so that values stay exact near the ends of [0, 1]; ``alpha`` and ``sigma`` are
their exponentials. ``logsnr`` may be +inf where sigma = 0 (t = 0 for ``linear_vp`` and
``rectified_flow``) and -inf where alpha = 0 (t = 1 for ``rectified_flow``); it is never NaN.

Time derivatives (``dalpha``, ``dsigma``) come from forward-mode autodiff of the closed forms.
The SDE view (Song et al. 2021) uses

    dx = f(t) x dt + g(t) dW,   f = d log alpha / dt,   g^2 = d sigma^2/dt - 2 f sigma^2.

Schedules are ``equinox.Module``s: their hyperparameters are pytree leaves, so a schedule can be
passed through ``jax.jit``/``jax.grad`` and the learnable schedule can be optimised with optax.
"""
from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from diffjax.registry import Registry

__all__ = [
    "Schedule",
    "LinearVP",
    "Cosine",
    "VE",
    "RectifiedFlow",
    "LearnedLogSNR",
    "linear_vp",
    "cosine",
    "ve",
    "rectified_flow",
    "learned_logsnr",
    "get",
    "NAMES",
    "SCHEDULES",
]


def __dir__():
    return sorted(__all__)


def _as_float(t):
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    return t


class Schedule(eqx.Module):
    """Base class. Subclasses define ``log_alpha`` and ``log_sigma`` (and usually a closed-form
    ``logsnr`` and ``t_of_logsnr``)."""

    def log_alpha(self, t):
        raise NotImplementedError

    def log_sigma(self, t):
        raise NotImplementedError

    def alpha(self, t):
        return jnp.exp(self.log_alpha(_as_float(t)))

    def sigma(self, t):
        return jnp.exp(self.log_sigma(_as_float(t)))

    def logsnr(self, t):
        t = _as_float(t)
        return 2.0 * (self.log_alpha(t) - self.log_sigma(t))

    def t_of_logsnr(self, lam):
        """Inverse of ``logsnr``, by bisection (subclasses override with closed forms)."""
        lam = _as_float(lam)

        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            right = self.logsnr(mid) > lam
            return jnp.where(right, mid, lo), jnp.where(right, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 64, body, (jnp.zeros_like(lam), jnp.ones_like(lam)))
        return 0.5 * (lo + hi)

    # --- derivatives and the SDE view -------------------------------------------------
    def _jvp(self, fn, t):
        t = _as_float(t)
        return jax.jvp(fn, (t,), (jnp.ones_like(t),))

    def dalpha(self, t):
        """d alpha / dt."""
        return self._jvp(self.alpha, t)[1]

    def dsigma(self, t):
        """d sigma / dt."""
        return self._jvp(self.sigma, t)[1]

    def drift(self, t):
        """f(t) = d log alpha / dt (the linear drift coefficient of the forward SDE)."""
        return self._jvp(self.log_alpha, t)[1]

    def diffusion2(self, t):
        """g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2 = -sigma^2 d logsnr / dt."""
        t = _as_float(t)
        _, dlam = self._jvp(self.logsnr, t)
        return -jnp.exp(2.0 * self.log_sigma(t)) * dlam

    def coefficients(self, t):
        """(alpha, sigma, dalpha/dt, dsigma/dt) at t."""
        t = _as_float(t)
        a, da = self._jvp(self.alpha, t)
        s, ds = self._jvp(self.sigma, t)
        return a, s, da, ds


# --------------------------------------------------------------------------------------
# Published schedules
# --------------------------------------------------------------------------------------
def _vp_log_alpha(t, b0, b1):
    return -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0


@jax.custom_jvp
def _vp_sigma(t, b0, b1):
    return jnp.sqrt(-jnp.expm1(2.0 * _vp_log_alpha(t, b0, b1)))


@_vp_sigma.defjvp
def _vp_sigma_jvp(primals, tangents):
    # d sigma = -alpha^2 d(log alpha) / sigma, with d(log alpha) written out so that at t = 0 the
    # derivative is +inf (sigma ~ sqrt(beta_min t)) instead of the 0 * inf = NaN of the chain rule.
    t, b0, b1 = primals
    dt, db0, db1 = tangents
    log_a = _vp_log_alpha(t, b0, b1)
    s = jnp.sqrt(-jnp.expm1(2.0 * log_a))
    dlog_a = (-0.5 * t * (b1 - b0) - 0.5 * b0) * dt + (0.25 * t**2 - 0.5 * t) * db0 - 0.25 * t**2 * db1
    return s, -jnp.exp(2.0 * log_a) * dlog_a / s


class LinearVP(Schedule):
    """VP SDE of Song et al. (2021): beta(t) = beta_min + t (beta_max - beta_min),
    log alpha = -t^2 (beta_max - beta_min)/4 - t beta_min/2, sigma = sqrt(1 - alpha^2)."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def log_alpha(self, t):
        return _vp_log_alpha(t, self.beta_min, self.beta_max)

    def log_sigma(self, t):
        # sigma^2 = 1 - alpha^2 = -expm1(2 log alpha)
        return 0.5 * jnp.log(-jnp.expm1(2.0 * self.log_alpha(t)))

    def sigma(self, t):
        return _vp_sigma(_as_float(t), self.beta_min, self.beta_max)

    def logsnr(self, t):
        t = _as_float(t)
        two_log_a = 2.0 * self.log_alpha(t)
        return two_log_a - jnp.log(-jnp.expm1(two_log_a))

    def t_of_logsnr(self, lam):
        # alpha^2 = sigmoid(lam)  =>  (b1-b0)/4 t^2 + b0/2 t - c = 0 with c = softplus(-lam)/2.
        lam = _as_float(lam)
        c = 0.5 * jax.nn.softplus(-lam)
        d = self.beta_max - self.beta_min
        b0 = self.beta_min
        # numerically stable root of a t^2 + b t - c = 0: t = 2c / (b + sqrt(b^2 + 4ac))
        return 2.0 * c / (0.5 * b0 + jnp.sqrt(0.25 * b0**2 + d * c))


class Cosine(Schedule):
    """Cosine schedule: alpha = cos(theta), sigma = sin(theta), theta linear in t between
    atan(exp(-logsnr_max/2)) (t=0) and atan(exp(-logsnr_min/2)) (t=1)."""

    logsnr_min: float = -20.0
    logsnr_max: float = 20.0

    def _theta(self, t):
        th0 = jnp.arctan(jnp.exp(-0.5 * jnp.asarray(self.logsnr_max, t.dtype)))
        th1 = jnp.arctan(jnp.exp(-0.5 * jnp.asarray(self.logsnr_min, t.dtype)))
        return th0, th1, th0 + t * (th1 - th0)

    def log_alpha(self, t):
        return jnp.log(jnp.cos(self._theta(t)[2]))

    def log_sigma(self, t):
        return jnp.log(jnp.sin(self._theta(t)[2]))

    def logsnr(self, t):
        t = _as_float(t)
        return -2.0 * jnp.log(jnp.tan(self._theta(t)[2]))

    def t_of_logsnr(self, lam):
        lam = _as_float(lam)
        th0, th1, _ = self._theta(jnp.zeros_like(lam))
        return (jnp.arctan(jnp.exp(-0.5 * lam)) - th0) / (th1 - th0)


class VE(Schedule):
    """Variance exploding: alpha = 1, sigma = sigma_min (sigma_max / sigma_min)^t."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def log_alpha(self, t):
        return jnp.zeros_like(t)

    def log_sigma(self, t):
        lo = jnp.log(jnp.asarray(self.sigma_min, t.dtype))
        hi = jnp.log(jnp.asarray(self.sigma_max, t.dtype))
        return lo + t * (hi - lo)

    def t_of_logsnr(self, lam):
        lam = _as_float(lam)
        lo = jnp.log(jnp.asarray(self.sigma_min, lam.dtype))
        hi = jnp.log(jnp.asarray(self.sigma_max, lam.dtype))
        return (-0.5 * lam - lo) / (hi - lo)


class RectifiedFlow(Schedule):
    """Rectified flow / flow matching (linear interpolation): alpha = 1 - t, sigma = t."""

    def log_alpha(self, t):
        return jnp.log1p(-t)

    def log_sigma(self, t):
        return jnp.log(t)

    def alpha(self, t):
        return 1.0 - _as_float(t)

    def sigma(self, t):
        return _as_float(t)

    def t_of_logsnr(self, lam):
        # (1-t)/t = exp(lam/2)  =>  t = sigmoid(-lam/2)
        return jax.nn.sigmoid(-0.5 * _as_float(lam))


# --------------------------------------------------------------------------------------
# Learnable monotone log-SNR (VDM, Kingma et al. 2021)
# --------------------------------------------------------------------------------------
class LearnedLogSNR(Schedule):
    """Variance-preserving schedule with a learnable monotone log-SNR (VDM).

    gamma(t) = -logsnr(t) is a monotone network (positive weights through softplus) in t:
    a linear term plus a sigmoid-feature layer, as in VDM's NoiseScheduleNet. It is rescaled
    so that, for any parameter values,

        logsnr(0) = logsnr_max  and  logsnr(1) = logsnr_min  exactly.

    alpha^2 = sigmoid(logsnr), sigma^2 = sigmoid(-logsnr). Parameters are pytree leaves:
    ``eqx.filter(schedule, eqx.is_inexact_array)`` or plain ``jax.grad`` over the module.
    """

    w1: jax.Array
    b1: jax.Array
    w2: jax.Array
    b2: jax.Array
    w3: jax.Array
    logsnr_min: float = eqx.field(static=True, default=-13.3)
    logsnr_max: float = eqx.field(static=True, default=5.0)

    def _gamma_tilde(self, t):
        # Monotone increasing in t: softplus-positive weights, monotone activations.
        sp = jax.nn.softplus
        t = t[..., None]
        lin = sp(self.w1) * t + self.b1  # (..., 1)
        h = jax.nn.sigmoid(sp(self.w2) * (t - 0.5) * 2.0 + self.b2)  # (..., H)
        return lin[..., 0] + jnp.sum(sp(self.w3) * h, axis=-1)

    def _unit(self, t):
        """Monotone map [0,1] -> [0,1] with exact endpoints."""
        g = self._gamma_tilde(t)
        g0 = self._gamma_tilde(jnp.zeros((), t.dtype))
        g1 = self._gamma_tilde(jnp.ones((), t.dtype))
        u = (g - g0) / (g1 - g0)
        # Exact endpoints, whatever rounding did above.
        return jnp.where(t <= 0, 0.0, jnp.where(t >= 1, 1.0, u)).astype(t.dtype)

    def logsnr(self, t):
        t = _as_float(t)
        u = self._unit(t)
        return self.logsnr_max + (self.logsnr_min - self.logsnr_max) * u

    def log_alpha(self, t):
        return 0.5 * jax.nn.log_sigmoid(self.logsnr(t))

    def log_sigma(self, t):
        return 0.5 * jax.nn.log_sigmoid(-self.logsnr(t))


def learned_logsnr(logsnr_min=-13.3, logsnr_max=5.0, hidden=1024, *, key=None) -> LearnedLogSNR:
    """A learnable variance-preserving schedule (VDM, Kingma et al. 2021): :class:`LearnedLogSNR`.

    ``logsnr(t)`` is a monotone network of t rescaled so that its ends are exact for any
    parameter values; ``alpha^2 = sigmoid(logsnr)``, ``sigma^2 = sigmoid(-logsnr)``. At
    initialisation ``logsnr`` is (nearly) linear in t.

    Args:
      logsnr_min: ``logsnr(1)``, the log-SNR at the noise end (default -13.3).
      logsnr_max: ``logsnr(0)``, the log-SNR at the data end (default 5.0). Both finite, with
        ``logsnr_min < logsnr_max``.
      hidden: the number of sigmoid features of the network, an int >= 1 (default 1024).
      key: a ``jax.random`` key for the features' initial slopes (default ``PRNGKey(0)``).

    Endpoints: ``logsnr(0) = logsnr_max`` and ``logsnr(1) = logsnr_min`` exactly, so
    ``alpha(0) = sigmoid(logsnr_max)^(1/2)`` (0.9966 by default) and ``sigma(1) =
    sigmoid(-logsnr_min)^(1/2)``.

    Raises:
      ValueError: a bound that is not finite, ``logsnr_min >= logsnr_max``, or ``hidden`` not
        an int >= 1.
    """
    if not (math.isfinite(logsnr_min) and math.isfinite(logsnr_max)):
        raise ValueError(f"logsnr_min and logsnr_max must be finite, got logsnr_min={logsnr_min}, "
                         f"logsnr_max={logsnr_max}")
    if not logsnr_min < logsnr_max:
        raise ValueError(f"logsnr_min must be < logsnr_max, got logsnr_min={logsnr_min}, logsnr_max={logsnr_max}")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"hidden must be an int >= 1, got {hidden!r}")
    key = jax.random.PRNGKey(0) if key is None else key
    k2 = jax.random.split(key)[0]
    inv_sp = lambda y: math.log(math.expm1(y))  # noqa: E731
    return LearnedLogSNR(
        w1=jnp.asarray(inv_sp(1.0)),
        b1=jnp.asarray(0.0),
        w2=inv_sp(1.0) + 0.1 * jax.random.normal(k2, (hidden,)),
        b2=jnp.zeros((hidden,)),
        # small weight on the nonlinear features: starts near the linear schedule
        w3=jnp.full((hidden,), inv_sp(1e-3)),
        logsnr_min=float(logsnr_min),
        logsnr_max=float(logsnr_max),
    )


# --------------------------------------------------------------------------------------
# Constructors (published defaults)
# --------------------------------------------------------------------------------------
def linear_vp(beta_min=0.1, beta_max=20.0) -> LinearVP:
    """The variance-preserving SDE of Song et al. (2021), DDPM's linear beta schedule in
    continuous time: :class:`LinearVP`.

    ``beta(t) = beta_min + t (beta_max - beta_min)``, ``log alpha(t) = -t^2 (beta_max -
    beta_min) / 4 - t beta_min / 2`` and ``sigma = sqrt(1 - alpha^2)``.

    Args:
      beta_min: beta at t = 0 (default 0.1).
      beta_max: beta at t = 1 (default 20.0). Both finite, ``0 <= beta_min < beta_max``.

    Endpoints: ``alpha(0) = 1``, ``sigma(0) = 0`` and ``logsnr(0) = +inf``; at t = 1
    ``log alpha = -(beta_min + beta_max) / 4`` (``alpha = 0.0066``, ``logsnr = -10.05`` with the
    defaults).

    Raises:
      ValueError: a bound that is not finite or not ``0 <= beta_min < beta_max``.
    """
    if not (math.isfinite(beta_min) and math.isfinite(beta_max) and 0 <= beta_min < beta_max):
        raise ValueError(f"linear_vp needs finite 0 <= beta_min < beta_max, got beta_min={beta_min}, "
                         f"beta_max={beta_max}")
    return LinearVP(beta_min, beta_max)


def cosine(logsnr_min=-20.0, logsnr_max=20.0) -> Cosine:
    """The cosine schedule (Nichol & Dhariwal 2021) in its log-SNR-truncated form: :class:`Cosine`.

    ``alpha = cos(theta)``, ``sigma = sin(theta)`` (variance preserving), with ``theta`` linear
    in t from ``atan(exp(-logsnr_max / 2))`` at t = 0 to ``atan(exp(-logsnr_min / 2))`` at t = 1;
    ``logsnr(t) = -2 log tan(theta)``.

    Args:
      logsnr_min: ``logsnr(1)``, the log-SNR at the noise end (default -20).
      logsnr_max: ``logsnr(0)``, the log-SNR at the data end (default 20). Both finite, with
        ``logsnr_min < logsnr_max``.

    Endpoints: ``logsnr(0) = logsnr_max`` and ``logsnr(1) = logsnr_min``; with the defaults
    ``sigma(0) = alpha(1) = 4.5e-5``, so neither end is exactly data or pure noise.

    Raises:
      ValueError: a bound that is not finite, or ``logsnr_min >= logsnr_max``.
    """
    if not (math.isfinite(logsnr_min) and math.isfinite(logsnr_max) and logsnr_min < logsnr_max):
        raise ValueError(f"cosine needs finite logsnr_min < logsnr_max, got {logsnr_min}, {logsnr_max}")
    return Cosine(logsnr_min, logsnr_max)


def ve(sigma_min=0.01, sigma_max=50.0) -> VE:
    """The variance-exploding SDE of Song et al. (2021) (NCSN): :class:`VE`.

    ``alpha = 1`` and ``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` (geometric in t), so
    ``logsnr(t) = -2 log sigma(t)``.

    Args:
      sigma_min: ``sigma(0)`` (default 0.01).
      sigma_max: ``sigma(1)`` (default 50). Both finite, ``0 < sigma_min < sigma_max``; the
        noise end approximates pure noise only when ``sigma_max`` dwarfs the data's scale.

    Endpoints: ``sigma(0) = sigma_min``, ``sigma(1) = sigma_max``; ``logsnr`` runs from
    ``-2 log sigma_min`` (9.21) to ``-2 log sigma_max`` (-7.82 with the defaults).

    Raises:
      ValueError: a bound that is not finite or not ``0 < sigma_min < sigma_max``.
    """
    if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0 < sigma_min < sigma_max):
        raise ValueError(f"ve needs finite 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, "
                         f"sigma_max={sigma_max}")
    return VE(sigma_min, sigma_max)


def rectified_flow() -> RectifiedFlow:
    """Rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2022), linear
    interpolation between data and noise: :class:`RectifiedFlow`. No parameters.

    ``alpha(t) = 1 - t``, ``sigma(t) = t``; the probability-flow velocity is ``eps - x0``.

    Endpoints: exactly data at t = 0 (``sigma = 0``, ``logsnr = +inf``) and exactly noise at
    t = 1 (``alpha = 0``, ``logsnr = -inf``).
    """
    return RectifiedFlow()


SCHEDULES = Registry("schedule")
"""The schedule constructors by name (a :class:`diffjax.registry.Registry`)."""
for _ctor in (linear_vp, cosine, ve, rectified_flow, learned_logsnr):
    SCHEDULES.add(_ctor.__name__, _ctor)
NAMES = SCHEDULES.names()
"""The schedule names, in registration order: ``linear_vp``, ``cosine``, ``ve``,
``rectified_flow``, ``learned_logsnr``."""


def get(name: str, **kwargs) -> Schedule:
    """Schedule by name (for configs): one of ``NAMES``, with its constructor's keyword
    arguments."""
    return SCHEDULES.get(name)(**kwargs)
