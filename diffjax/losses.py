"""Training losses for Gaussian diffusion and flows, and the VDM evidence lower bound.

Every denoising loss is a weighted noise-prediction error (Kingma & Gao 2023):

    L(x0) = E_{t, eps} [ w(t) * ||eps_hat(x_t, t) - eps||^2 ],   x_t = alpha x0 + sigma eps,

whatever the model predicts: an error in any prediction kind is a per-time multiple of the error
in eps, so the loss is computed in the model's own output space, ``c(t)^2 ||out - target||^2``
with c the factor that maps it to eps units, then weighted. Named weightings (lam = full log-SNR):

* ``"simple"``  eps-MSE (Ho et al. 2020):                      w = 1
* ``"x0"``      x0-MSE:                                        w = exp(-lam)
* ``"v"``       v-MSE (Salimans & Ho 2022):                    w = (alpha^2 + sigma^2)^2 / alpha^2
* ``"elbo"``    likelihood weighting (VDM):                    w = -lam'(t) / 2
* ``"min_snr"`` min-SNR-gamma (Hang et al. 2023):               w = min(exp(lam), gamma) / exp(lam)
* ``"sigmoid"`` sigmoid weighting (Kingma & Gao 2023):          w = sigmoid(bias - lam)
* ``"edm"``     EDM (Karras et al. 2022), sigma_data:          w = 1 + exp(-lam) / sigma_data^2
* ``"native"``  plain MSE in the model's own kind (for ``prediction="flow"`` and
                ``rectified_flow`` this is the flow-matching loss).

Time sampling: ``t ~ U[t_min, t_max]``, stratified across the batch when ``antithetic=True``
(t_i = t_min + (t_max - t_min) ((u + i / B) mod 1), VDM's low-discrepancy sampler). With
``importance="logsnr"``, t is drawn uniform in log-SNR instead and each term is reweighted by
p(t) / q(t), so the expectation is unchanged and only the variance differs.

``vdm_elbo`` / ``vdm_elbo_discrete``: the continuous-time and T-step negative ELBOs of Kingma et
al. (2021) in nats per example, with their terms (diffusion, prior, reconstruction) and bits/dim.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffjax.parameterization import check_kind, expand, from_x0_eps

__all__ = ["WEIGHTINGS", "sample_time", "weight", "denoising_loss", "denoising_error", "flow_matching_loss",
           "vdm_elbo", "vdm_elbo_discrete", "eps_scale"]


def __dir__():
    return sorted(__all__)


WEIGHTINGS = ("simple", "x0", "v", "elbo", "min_snr", "sigmoid", "edm", "native")
"""The names ``weighting=`` accepts (``weight`` and ``denoising_loss``), listed above."""


def _tdtype(x):
    return jnp.promote_types(x.dtype, jnp.float32)


def sample_time(key, batch, *, antithetic=True, t_min=0.0, t_max=1.0, dtype=jnp.float32):
    """t in [t_min, t_max], shape (batch,): i.i.d. uniform, or stratified (antithetic) across the batch."""
    if antithetic:
        u = jax.random.uniform(key, (), dtype)
        u = jnp.mod(u + jnp.arange(batch, dtype=dtype) / batch, 1.0)
    else:
        u = jax.random.uniform(key, (batch,), dtype)
    return t_min + (t_max - t_min) * u


def eps_scale(schedule, t, kind):
    """c(t) with |d eps / d out| = c: an error of size e in kind ``kind`` is an eps error of c e."""
    check_kind(kind)
    if kind == "eps":
        return jnp.ones_like(t)
    a, s, da, ds = schedule.coefficients(t)
    if kind == "x0":
        return a / s
    if kind == "v":
        return a / (a * a + s * s)
    if kind == "score":
        return s
    return a / (a * ds - s * da)  # flow


def weight(name, schedule, t, *, gamma=5.0, bias=2.0, sigma_data=0.5):
    """The weighting w(t) on the eps-MSE for a named weighting (see module docstring)."""
    if name not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, got {name!r}")
    lam = schedule.logsnr(t)
    if name == "simple":
        return jnp.ones_like(t)
    if name == "x0":
        return jnp.exp(-lam)
    if name == "v":
        a, s = schedule.alpha(t), schedule.sigma(t)
        return (a * a + s * s) ** 2 / (a * a)
    if name == "elbo":
        _, dlam = jax.jvp(schedule.logsnr, (t,), (jnp.ones_like(t),))
        return -0.5 * dlam
    if name == "min_snr":
        return jnp.minimum(jnp.exp(lam), gamma) * jnp.exp(-lam)
    if name == "sigmoid":
        return jax.nn.sigmoid(bias - lam)
    if name == "edm":
        return 1.0 + jnp.exp(-lam) / sigma_data**2
    raise ValueError(f"weighting {name!r} has no eps-space form")  # "native" is handled by the caller


def _importance(key, batch, schedule, antithetic, t_min, t_max, dtype):
    """t uniform in log-SNR on [logsnr(t_max), logsnr(t_min)] and the ratio p(t)/q(t)."""
    lo, hi = schedule.logsnr(jnp.asarray(t_max, dtype)), schedule.logsnr(jnp.asarray(t_min, dtype))
    u = sample_time(key, batch, antithetic=antithetic, dtype=dtype)
    t = schedule.t_of_logsnr(lo + (hi - lo) * u)
    t = jnp.clip(t, t_min, t_max)
    _, dlam = jax.jvp(schedule.logsnr, (t,), (jnp.ones_like(t),))
    # p(t) = 1/(t_max - t_min); q(t) = |dlam/dt| / (hi - lo)
    return t, (hi - lo) / (jnp.abs(dlam) * (t_max - t_min))


def denoising_loss(model_fn, x0, key, *, schedule, prediction, weighting="simple", antithetic=True,
                   t_min=1e-5, t_max=1.0, importance=None, reduce="mean", t=None, **weighting_kwargs):
    """Per-example denoising loss; returns ``(loss (B,), aux)``.

    ``model_fn(x_t, t) -> prediction`` of kind ``prediction``. ``reduce="mean"`` averages the
    squared error over the non-batch dimensions, ``"sum"`` sums it (as the ELBO needs).
    ``t`` may be given to evaluate at fixed times. ``aux`` has ``t``, ``x_t`` and the unweighted
    eps-space MSE ``mse_eps``.
    """
    check_kind(prediction)
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if importance not in (None, "logsnr"):
        raise ValueError(f"importance must be None or 'logsnr', got {importance!r}")
    dtype = _tdtype(x0)
    k_t, k_eps = jax.random.split(key)
    b = x0.shape[0]
    ratio = jnp.ones((b,), dtype)
    if t is None:
        if importance == "logsnr":
            t, ratio = _importance(k_t, b, schedule, antithetic, t_min, t_max, dtype)
        else:
            t = sample_time(k_t, b, antithetic=antithetic, t_min=t_min, t_max=t_max, dtype=dtype)
    t = jnp.broadcast_to(jnp.asarray(t, dtype), (b,))
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    a, s = expand(schedule.alpha(t), x0), expand(schedule.sigma(t), x0)
    x_t = (a * x0 + s * eps).astype(x0.dtype)
    out = model_fn(x_t, t)
    loss, mse_eps = denoising_error(out, x0, eps, x_t, t, schedule=schedule, prediction=prediction,
                                    weighting=weighting, reduce=reduce, **weighting_kwargs)
    return ratio * loss, {"t": t, "x_t": x_t, "mse_eps": mse_eps}


def denoising_error(out, x0, eps, x_t, t, *, schedule, prediction, weighting="simple", reduce="mean",
                    **weighting_kwargs):
    """The per-example loss of ``denoising_loss`` for a model output ``out`` at
    ``x_t = alpha(t) x0 + sigma(t) eps`` (times ``t`` of shape (B,)); returns ``(loss (B,),
    unweighted eps-space MSE (B,))``. For callers that draw ``x_t`` and call the model
    themselves (a model with several outputs)."""
    check_kind(prediction)
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if out.shape != x0.shape:
        raise ValueError(f"model_fn must return the shape of x {x0.shape}, got {out.shape}")
    dtype = _tdtype(x0)
    b = x0.shape[0]
    target = from_x0_eps(x0, eps, x_t, t, schedule, prediction)
    err = jnp.square(out.astype(dtype) - target.astype(dtype)).reshape(b, -1)
    err = jnp.sum(err, -1) if reduce == "sum" else jnp.mean(err, -1)
    c2 = jnp.square(eps_scale(schedule, t, prediction))
    if weighting == "native":
        w_native = jnp.ones_like(t)
    else:
        w_native = weight(weighting, schedule, t, **weighting_kwargs) * c2
    return w_native * err, c2 * err


def flow_matching_loss(model_fn, x0, key, *, schedule=None, **kwargs):
    """Flow matching / rectified flow: ``||v_hat(x_t, t) - (alpha' x0 + sigma' eps)||^2``
    (with the default ``rectified_flow`` schedule the target is ``eps - x0``)."""
    from diffjax.schedules import rectified_flow

    schedule = rectified_flow() if schedule is None else schedule
    kwargs.setdefault("t_min", 0.0)
    return denoising_loss(model_fn, x0, key, schedule=schedule, prediction="flow", weighting="native", **kwargs)


def _prior_and_recon(x0, schedule, t_min, t_max):
    """Prior KL(q(z_tmax | x) || N(0, sigma(t_max)^2 I)) and the Gaussian reconstruction term
    -E log N(x; z_tmin / alpha, (sigma / alpha)^2 I) at t_min, in nats per example."""
    dtype = _tdtype(x0)
    xf = x0.reshape(x0.shape[0], -1).astype(dtype)
    d = xf.shape[1]
    t1, t0 = jnp.asarray(t_max, dtype), jnp.asarray(t_min, dtype)
    a1, s1 = schedule.alpha(t1), schedule.sigma(t1)
    prior = 0.5 * a1**2 * jnp.sum(xf**2, -1) / s1**2
    # E over z of -log N(x; z/a, (s/a)^2): d/2 log(2 pi (s/a)^2) + d/2
    log_ratio = schedule.log_sigma(t0) - schedule.log_alpha(t0)
    recon = 0.5 * d * (math.log(2 * math.pi) + 2.0 * log_ratio + 1.0) * jnp.ones_like(prior)
    return prior, recon, d


def _report(diffusion, prior, recon, d):
    total = diffusion + prior + recon
    return total, {"diffusion": diffusion, "prior": prior, "reconstruction": recon,
                   "bits_per_dim": total / (d * math.log(2.0))}


def vdm_elbo(model_fn, x0, key, *, schedule, prediction, t_min=1e-4, t_max=1.0, antithetic=True, importance=None):
    """Continuous-time negative ELBO (Kingma et al. 2021) in nats per example: one Monte-Carlo draw.

    -log p(x) <= prior + reconstruction + E_{t, eps}[(t_max - t_min) (-lam'(t)/2) ||eps_hat - eps||^2]
    with t ~ U[t_min, t_max] and eps ~ N(0, I). The prior and reconstruction terms are closed
    forms; the diffusion term's expectation is estimated from ONE draw of (t, eps) per example,
    from ``key``. So one call returns an unbiased but noisy estimate of the bound: a different
    key gives a different value. Its variance (over keys) comes from the draws of t and eps; the
    draw of t matters most where the weight -lam'(t) is large (near the ends of [0, 1] for the
    variance-preserving schedules).

    To reduce the variance:

    * average K calls with independent keys (``jax.random.split(key, K)``, e.g. under
      ``jax.vmap``): the variance falls as 1/K, and the spread of the K values over sqrt(K)
      is the standard error of the average;
    * keep ``antithetic=True`` (the default): t is stratified over the batch, which lowers the
      variance of the batch mean (the per-example values are then not independent);
    * ``importance="logsnr"``: t drawn uniform in log-SNR and reweighted by p(t) / q(t) (same
      expectation); the weight times p / q is then constant in t, so only the error term varies;
    * a learned schedule (``schedules.learned_logsnr``) trained to minimise this variance, as
      in VDM; or ``likelihood.ode_nll`` for the exact likelihood of the probability-flow ODE.

    Args:
      model_fn: ``model_fn(x_t, t) -> prediction`` of kind ``prediction``; t has shape (B,).
      x0: the data (B, ...).
      key: a ``jax.random`` key (the times and the noise).
      schedule: a ``diffjax.schedules.Schedule``.
      prediction: one of ``diffjax.KINDS``.
      t_min, t_max: the ends of the diffusion term, ``0 <= t_min < t_max <= 1`` (defaults
        1e-4 and 1).
      antithetic, importance: the time sampling, as in ``denoising_loss``.

    Returns:
      ``(total (B,), terms)``: ``terms`` holds ``diffusion``, ``prior``, ``reconstruction``
      (nats per example) and ``bits_per_dim`` (total / (D log 2); continuous data: add
      dequantisation offsets with ``likelihood.bits_per_dim``).
    """
    loss, _ = denoising_loss(model_fn, x0, key, schedule=schedule, prediction=prediction, weighting="elbo",
                             antithetic=antithetic, t_min=t_min, t_max=t_max, importance=importance, reduce="sum")
    diffusion = (t_max - t_min) * loss
    prior, recon, d = _prior_and_recon(x0, schedule, t_min, t_max)
    return _report(diffusion, prior, recon, d)


def vdm_elbo_discrete(model_fn, x0, key, *, schedule, prediction, num_steps, t_min=1e-4, t_max=1.0):
    """T-step negative ELBO (Kingma et al. 2021, eq. 13) in nats per example.

    With s_i = t_min + (i - 1) / T (t_max - t_min) and t_i = s_i + (t_max - t_min) / T,
    diffusion = T/2 E_i[expm1(lam(s_i) - lam(t_i)) ||eps_hat(x_{t_i}) - eps||^2], i ~ U{1..T}.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    dtype = _tdtype(x0)
    k_i, k_loss = jax.random.split(key)
    b = x0.shape[0]
    i = jax.random.randint(k_i, (b,), 1, num_steps + 1)
    dt = (t_max - t_min) / num_steps
    t = t_min + i.astype(dtype) * dt
    s = t - dt
    _, aux = denoising_loss(model_fn, x0, k_loss, schedule=schedule, prediction=prediction, weighting="simple",
                            reduce="sum", t=t)
    diffusion = 0.5 * num_steps * jnp.expm1(schedule.logsnr(s) - schedule.logsnr(t)) * aux["mse_eps"]
    prior, recon, d = _prior_and_recon(x0, schedule, t_min, t_max)
    return _report(diffusion, prior, recon, d)
