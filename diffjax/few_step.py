"""Few-step generation: MeanFlow, continuous-time consistency models and progressive
distillation -- their losses and their samplers, over plain callables (no Flax).

Time runs from t = 0 (data) to t = 1 (noise), x_t = alpha(t) x0 + sigma(t) eps, as everywhere
in diffjax. Every function takes ``t`` of shape ``(B,)``.

MeanFlow (Geng et al. 2025, "Mean Flows for One-step Generative Modeling")
    On the rectified-flow path z_t = (1 - t) x + t eps (velocity v = eps - x) a network
    ``u_fn(z, r, t)`` learns the *average* velocity over [r, t],
    u(z_t, r, t) = (z_t - z_r) / (t - r), so that z_r = z_t - (t - r) u(z_t, r, t) is exact
    along the probability-flow ODE. Differentiating (t - r) u = z_t - z_r in t gives the MeanFlow
    identity u = v - (t - r) du/dt, with the total derivative du/dt = v . d_z u + d_t u (r
    fixed), computed by one `jax.jvp` along the tangent (v, 0, 1) of (z, r, t).
    `meanflow_target` returns u and the stop-gradient target; `meanflow_loss` draws (t, r) and
    takes the squared error with the paper's adaptive weight; `meanflow_sample` takes K
    equal steps from t = 1 to 0 (K network calls).

Continuous-time consistency (sCM, Lu & Song 2024, written for any diffjax schedule)
    A consistency function f(x_t, t) maps every point of a probability-flow trajectory to its
    end at t = 0; here f is the x0 reading of a network ``net_fn(x, t)`` of a prediction kind
    (``diffjax.convert(out, x, t, schedule, source=prediction, target="x0")``), so f(x, 0) = x
    up to sigma(0). The discrete consistency loss ||f(x_t, t) - f^-(x_{t - dt}, t - dt)||^2 has
    as dt -> 0 the gradient of ||out - sg(out^- + g)||^2 with the tangent
    g = -alpha sigma (df^-/dt) / B, B = d x0 / d out (for the cosine schedule with
    v-prediction this is sCM's TrigFlow tangent g = cos(t) df/dt), where df/dt is the total
    derivative along dx_t/dt -- the teacher's probability-flow velocity (consistency
    distillation) or the conditional velocity alpha' x0 + sigma' eps (consistency training) --
    computed with `jax.jvp`. g is normalised as g / (rms(g) + c) (sCM's tangent normalisation).
    `consistency_sample` evaluates f at t = 1 and, for K > 1 steps, re-noises to the next time
    and evaluates again (K calls).

Progressive distillation (Salimans & Ho 2022)
    A student with N steps learns in one DDIM step from t to t - 1/N what the teacher does in
    two DDIM steps (t -> t - 1/2N -> t - 1/N): `progressive_target` is the x0 that makes the
    student's single DDIM step land where the teacher's two land; `progressive_loss` weights
    the x0 error by max(SNR, 1) ("truncated SNR"). A student's N-step DDIM sampler is
    ``diffjax.sample(..., solver="ddim", ts=uniform_steps(N), denoise_final=False)``.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from diffjax.parameterization import check_kind, convert, expand
from diffjax.schedules import Schedule

__all__ = ["logit_normal", "meanflow_times", "meanflow_target", "meanflow_loss", "meanflow_sample",
           "consistency_tangent", "consistency_loss", "consistency_sample", "x0_scale",
           "ddim_step", "progressive_target", "progressive_loss", "uniform_steps"]


def __dir__():
    return sorted(__all__)


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    return steps


def _sq(x: jax.Array) -> jax.Array:
    """Mean of squares over every axis but the first, in float32: shape (B,)."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return jnp.mean(jnp.square(x).reshape(x.shape[0], -1), axis=1)


def logit_normal(key, shape, mean: float = 0.0, std: float = 1.0, dtype=jnp.float32):
    """``sigmoid(mean + std * N(0, 1))``: times in (0, 1) (Esser et al. 2024)."""
    return jax.nn.sigmoid(mean + std * jax.random.normal(key, shape, dtype))


def uniform_steps(steps: int, t_max: float = 1.0, t_min: float = 0.0):
    """The descending grid ``[t_max, ..., t_min]`` of ``steps`` equal intervals."""
    _check_steps(steps)
    return jnp.linspace(t_max, t_min, steps + 1)


# ------------------------------------------------------------------------------ MeanFlow
def meanflow_times(key, batch: int, *, average_share: float = 0.25, mean: float = -0.4,
                   std: float = 1.0):
    """``(r, t)``, shape (B,) each, r <= t: two logit-normal draws sorted; on a random
    ``1 - average_share`` of the rows r = t (plain flow matching)."""
    if not 0.0 <= average_share <= 1.0:
        raise ValueError(f"average_share must be in [0, 1], got {average_share!r}")
    k1, k2 = jax.random.split(key)
    a = logit_normal(k1, (2, batch), mean, std)
    r, t = jnp.min(a, axis=0), jnp.max(a, axis=0)
    keep = jax.random.uniform(k2, (batch,)) < average_share
    return jnp.where(keep, r, t), t


def meanflow_target(u_fn: Callable, z: jax.Array, v: jax.Array, r: jax.Array, t: jax.Array):
    """``(u, target)``: ``u = u_fn(z, r, t)`` and the stop-gradient MeanFlow target
    ``v - (t - r) du/dt`` with du/dt the total derivative along (dz, dr, dt) = (v, 0, 1)
    (one `jax.jvp`, which also gives u)."""
    u, dudt = jax.jvp(u_fn, (z, r, t), (v, jnp.zeros_like(r), jnp.ones_like(t)))
    target = v - expand(t - r, v).astype(v.dtype) * dudt
    return u, jax.lax.stop_gradient(target)


def meanflow_loss(u_fn: Callable, x0: jax.Array, key, *, average_share: float = 0.25,
                  time_mean: float = -0.4, time_std: float = 1.0, adaptive_p: float = 1.0,
                  adaptive_c: float = 1e-3, velocity_fn: Optional[Callable] = None):
    """The MeanFlow loss per example, shape (B,), and ``{"mse": (B,)}`` (the unweighted
    error, mean over dimensions).

    ``u_fn(z, r, t)``: the average-velocity network. Times by `meanflow_times`; noise
    ``eps ~ N(0, I)``; ``z = (1 - t) x0 + t eps``; the velocity is the conditional
    ``v = eps - x0`` or, given ``velocity_fn(z, t)``, a teacher's marginal velocity. The loss
    is ``sg(w) * mse`` with the adaptive weight ``w = 1 / (mse + adaptive_c) ** adaptive_p``
    (``adaptive_p = 0``: the plain squared error). ``key`` is split into time and noise keys.
    """
    if adaptive_p < 0 or adaptive_c <= 0:
        raise ValueError(f"adaptive_p must be >= 0 and adaptive_c > 0, got {adaptive_p!r}, "
                         f"{adaptive_c!r}")
    k_t, k_eps = jax.random.split(key)
    b = x0.shape[0]
    r, t = meanflow_times(k_t, b, average_share=average_share, mean=time_mean, std=time_std)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    tt = expand(t, x0).astype(x0.dtype)
    z = (1.0 - tt) * x0 + tt * eps
    v = eps - x0 if velocity_fn is None else jax.lax.stop_gradient(velocity_fn(z, t))
    u, target = meanflow_target(u_fn, z, v, r, t)
    mse = _sq(u - target)
    w = jax.lax.stop_gradient(1.0 / (mse + adaptive_c) ** adaptive_p)
    return w * mse, {"mse": mse}


def meanflow_sample(u_fn: Callable, key, shape, *, steps: int = 1, ts=None, x_init=None,
                    dtype=jnp.float32):
    """``(x, info)``: z_1 = eps ~ N(0, I) (or ``x_init``), then z_r = z_t - (t - r) u(z_t, r, t)
    over the grid ``ts`` (default: ``steps`` equal intervals from 1 to 0), one `lax.scan`;
    ``info["nfe"]`` = steps (network calls), ``info["ts"]`` the grid."""
    ts = uniform_steps(_check_steps(steps)) if ts is None else jnp.asarray(ts, jnp.float32)
    shape = tuple(int(s) for s in shape)
    z = jax.random.normal(key, shape, dtype) if x_init is None else jnp.asarray(x_init, dtype)

    def step(z, tr):
        t, r = tr
        tb, rb = jnp.full((shape[0],), t), jnp.full((shape[0],), r)
        return (z - (t - r).astype(z.dtype) * u_fn(z, rb, tb).astype(z.dtype)), None

    z, _ = jax.lax.scan(step, z, (ts[:-1], ts[1:]))
    return z, {"nfe": ts.shape[0] - 1, "ts": ts}


# ------------------------------------------------------------------------- consistency
def x0_scale(schedule: Schedule, t: jax.Array, prediction: str, like: jax.Array):
    """``B(t) = d x0 / d out``: the x0 reading of a prediction is affine in it with this
    per-time factor (broadcast against ``like``)."""
    check_kind(prediction)
    ones, zeros = jnp.ones_like(like), jnp.zeros_like(like)
    return (convert(ones, zeros, t, schedule, source=prediction, target="x0")
            - convert(zeros, zeros, t, schedule, source=prediction, target="x0"))


def consistency_tangent(f_fn: Callable, x: jax.Array, t: jax.Array, dxdt: jax.Array):
    """``(f(x, t), df/dt)``: the total derivative of ``f_fn(x, t)`` along (dx/dt, 1), one
    `jax.jvp`."""
    return jax.jvp(f_fn, (x, t), (dxdt, jnp.ones_like(t)))


def consistency_loss(net_fn: Callable, x0: jax.Array, key, *, schedule: Schedule,
                     prediction: str, teacher_x0_fn: Optional[Callable] = None,
                     t_min: float = 1e-3, t_max: float = 1.0, time_mean: Optional[float] = None,
                     time_std: float = 1.6, tangent_c: float = 0.1, dt: Optional[float] = None):
    """The continuous-time consistency loss per example, shape (B,), and
    ``{"tangent_rms": (B,)}`` (the rms of df/dt before normalisation).

    ``net_fn(x, t)`` predicts kind ``prediction``; f is its x0 reading. ``teacher_x0_fn(x, t)``
    (an x0 estimate on the same schedule) makes it consistency distillation along the
    teacher's probability-flow velocity; without one, consistency training along the
    conditional velocity ``alpha' x0 + sigma' eps``. Times: uniform on [t_min, t_max], or
    with ``time_mean`` set, ``logsnr ~ N(time_mean, time_std)`` mapped to t (then clipped to
    [t_min, t_max]). The value is ``mean((out - sg(out + g))^2) = mean(g^2)`` with g the
    normalised tangent (module docstring): zero exactly when f is constant along the
    velocity. ``key`` is split into time and noise keys.

    ``dt`` set: df/dt is the finite difference ``(f(x_t, t) - f(x_r, r)) / dt`` over
    ``r = max(t - dt, 0)`` instead of the `jax.jvp` (discrete-time consistency: x_r is the
    teacher's DDIM step from x_t for distillation, ``alpha_r x0 + sigma_r eps`` with the same
    noise for training -- ECT's form), which does not differentiate the network's time
    features (a network whose time embedding turns fast, e.g. sinusoidal at scale 1000, has a
    time derivative that is mostly noise).
    """
    check_kind(prediction)
    if dt is not None and not dt > 0:
        raise ValueError(f"dt must be None (continuous time) or > 0, got {dt!r}")
    if tangent_c < 0:
        raise ValueError(f"tangent_c must be >= 0, got {tangent_c!r}")
    k_t, k_eps = jax.random.split(key)
    b = x0.shape[0]
    tdtype = jnp.promote_types(x0.dtype, jnp.float32)
    if time_mean is None:
        t = t_min + (t_max - t_min) * jax.random.uniform(k_t, (b,), tdtype)
    else:
        lam = time_mean + time_std * jax.random.normal(k_t, (b,), tdtype)
        t = jnp.clip(schedule.t_of_logsnr(lam), t_min, t_max)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    a, s, da, ds = (expand(c, x0) for c in schedule.coefficients(t))
    x_t = (a * x0 + s * eps).astype(x0.dtype)
    if teacher_x0_fn is None:
        dxdt = da * x0 + ds * eps
    else:
        x0_hat = jax.lax.stop_gradient(teacher_x0_fn(x_t, t))
        dxdt = convert(x0_hat, x_t, t, schedule, source="x0", target="flow")

    def f_fn(x, tt):
        return convert(net_fn(x, tt), x, tt, schedule, source=prediction, target="x0")

    out = net_fn(x_t, t)
    if dt is None:
        _, dfdt = consistency_tangent(f_fn, x_t, t, dxdt.astype(x_t.dtype))
    else:
        r = jnp.maximum(t - dt, 0.0)
        if teacher_x0_fn is None:
            x_r = (expand(schedule.alpha(r), x0) * x0 + expand(schedule.sigma(r), x0) * eps)
        else:
            x_r = ddim_step(x0_hat, x_t, t, r, schedule)
        dfdt = (f_fn(x_t, t) - f_fn(x_r.astype(x_t.dtype), r)) / expand(t - r, x_t)
    dfdt = jax.lax.stop_gradient(dfdt)
    g = -a * s * dfdt / x0_scale(schedule, t, prediction, x_t)
    rms = jnp.sqrt(_sq(g))
    g = g / (expand(rms, g) + tangent_c)
    target = jax.lax.stop_gradient(out + g.astype(out.dtype))
    return _sq(out - target), {"tangent_rms": jnp.sqrt(_sq(dfdt))}


def consistency_sample(f_fn: Callable, key, shape, *, schedule: Schedule, steps: int = 1,
                       ts=None, t_max: float = 1.0, x_init=None, dtype=jnp.float32):
    """``(x, info)``: multistep consistency sampling. ``f_fn(x, t)`` returns the x0 estimate.
    x = sigma(t_0) eps (or ``x_init``), x0 = f(x, t_0); then for each later time t_k,
    x = alpha(t_k) x0 + sigma(t_k) eps_k and x0 = f(x, t_k). Times ``ts`` (descending,
    length ``steps``; default ``t_max (1 - k / steps)``): ``steps`` network calls, one
    `lax.scan`."""
    if ts is None:
        ts = uniform_steps(_check_steps(steps), t_max)[:-1]
    ts = jnp.asarray(ts, jnp.float32)
    shape = tuple(int(s) for s in shape)
    k0, k_rest = jax.random.split(key)
    x = (schedule.sigma(ts[0]).astype(dtype) * jax.random.normal(k0, shape, dtype)
         if x_init is None else jnp.asarray(x_init, dtype))
    x0 = f_fn(x, jnp.full((shape[0],), ts[0])).astype(dtype)

    def step(x0, tk):
        t, k = tk
        x = (schedule.alpha(t) * x0 + schedule.sigma(t) * jax.random.normal(k, shape, dtype))
        return f_fn(x.astype(dtype), jnp.full((shape[0],), t)).astype(dtype), None

    n = ts.shape[0] - 1
    if n:  # (a static length)
        x0, _ = jax.lax.scan(step, x0, (ts[1:], jax.random.split(k_rest, n)))
    return x0, {"nfe": n + 1, "ts": ts}


# --------------------------------------------------------------- progressive distillation
def ddim_step(x0_hat: jax.Array, x_t: jax.Array, t: jax.Array, s: jax.Array,
              schedule: Schedule) -> jax.Array:
    """One deterministic DDIM step from t to s with the x0 estimate ``x0_hat``:
    ``alpha_s x0 + sigma_s eps_hat``, ``eps_hat = (x_t - alpha_t x0) / sigma_t``."""
    a_t, s_t = expand(schedule.alpha(t), x_t), expand(schedule.sigma(t), x_t)
    a_s, s_s = expand(schedule.alpha(s), x_t), expand(schedule.sigma(s), x_t)
    eps = (x_t - a_t * x0_hat) / s_t
    return (a_s * x0_hat + s_s * eps).astype(x_t.dtype)


def progressive_target(teacher_x0_fn: Callable, x_t: jax.Array, t: jax.Array, dt,
                       *, schedule: Schedule) -> jax.Array:
    """The student's x0 target at (x_t, t) for a student step of length ``dt``: the teacher
    takes two DDIM steps t -> t - dt/2 -> t - dt to x'', and the target is the x0 whose single
    DDIM step t -> t - dt gives x'': ``(x'' - (s''/s) x_t) / (a'' - (s''/s) a)``. Stop-gradient."""
    t = jnp.asarray(t)
    t1, t2 = t - 0.5 * dt, t - dt
    x1 = ddim_step(teacher_x0_fn(x_t, t), x_t, t, t1, schedule)
    x2 = ddim_step(teacher_x0_fn(x1, t1), x1, t1, t2, schedule)
    a, s = expand(schedule.alpha(t), x_t), expand(schedule.sigma(t), x_t)
    a2, s2 = expand(schedule.alpha(t2), x_t), expand(schedule.sigma(t2), x_t)
    ratio = s2 / s
    return jax.lax.stop_gradient(((x2 - ratio * x_t) / (a2 - ratio * a)).astype(x_t.dtype))


def progressive_loss(net_fn: Callable, teacher_x0_fn: Callable, x0: jax.Array, key, *,
                     schedule: Schedule, prediction: str, student_steps: int):
    """The progressive-distillation loss per example, shape (B,), and ``{"mse_x0": (B,)}``.

    t is drawn uniformly from the student's grid ``{1/N, ..., 1}`` (N = ``student_steps``),
    x_t = alpha x0 + sigma eps; the student's x0 reading of ``net_fn(x_t, t)`` (kind
    ``prediction``) is compared with `progressive_target` for dt = 1/N, weighted by
    max(alpha^2 / sigma^2, 1) (truncated SNR). ``key`` is split into time and noise keys."""
    check_kind(prediction)
    n = _check_steps(student_steps)
    k_t, k_eps = jax.random.split(key)
    b = x0.shape[0]
    tdtype = jnp.promote_types(x0.dtype, jnp.float32)
    t = jax.random.randint(k_t, (b,), 1, n + 1).astype(tdtype) / n
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    a, s = expand(schedule.alpha(t), x0), expand(schedule.sigma(t), x0)
    x_t = (a * x0 + s * eps).astype(x0.dtype)
    target = progressive_target(teacher_x0_fn, x_t, t, 1.0 / n, schedule=schedule)
    x0_hat = convert(net_fn(x_t, t), x_t, t, schedule, source=prediction, target="x0")
    mse = _sq(x0_hat - target)
    w = jnp.maximum(jnp.exp(schedule.logsnr(t)), 1.0)
    return w * mse, {"mse_x0": mse}
