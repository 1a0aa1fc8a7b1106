"""Conditional generation by editing the sampling path: inpainting, RePaint, SDEdit, inversion.

* ``inpaint``: the replacement method (Song et al. 2021; Lugmayr et al. 2022 call it the
  baseline): after every solver step the known region is overwritten by a fresh draw of the
  forward process at the new time, ``alpha(t) x_known + sigma(t) z``. With ``resample=R > 1``
  each step is repeated R times, diffusing the state back from t_next to t in between
  (RePaint), which lets the unknown region harmonise with the known one. The returned sample
  equals ``x_known`` exactly where ``mask`` is True.
* ``sdedit``: partially noise an input to ``t_start`` and denoise it (Meng et al. 2022).
* ``invert_and_edit``: deterministic inversion with one model (``diffjax.encode``) then sampling
  with another (e.g. another class or guidance scale) from the same latent.

All three run through the solver driver (``diffjax.solvers.driver``): ``sdedit`` and
``invert_and_edit`` by ``sample`` / ``encode``, ``inpaint`` directly, its projection of the known
region and RePaint's jump back being the hooks of the driver's one ``lax.scan``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from diffjax.parameterization import add_noise
from diffjax.solvers import driver, encode, sample

__all__ = ["inpaint", "sdedit", "invert_and_edit", "renoise"]


def __dir__():
    return sorted(__all__)


def renoise(key, x_s, s, t, schedule):
    """A draw from the forward transition q(x_t | x_s) for s < t:
    x_t = (alpha_t / alpha_s) x_s + sqrt(sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2) z."""
    a_s, s_s = schedule.alpha(s), schedule.sigma(s)
    a_t, s_t = schedule.alpha(t), schedule.sigma(t)
    ratio = a_t / a_s
    std = jnp.sqrt(jnp.clip(s_t**2 - (ratio * s_s) ** 2, 0.0))
    return (ratio * x_s + std * jax.random.normal(key, x_s.shape, x_s.dtype)).astype(x_s.dtype)


def inpaint(model_fn, key, x_known, mask, *, schedule, prediction, solver="ddpm", steps=None, ts=None,
            t_min=1e-3, t_max=1.0, resample=1, grid=None, **solver_options):
    """Fills ``x_known`` where ``mask`` is False; returns ``(x, info)`` with x == x_known where mask.

    ``mask`` is a boolean array broadcastable to ``x_known`` (True = known). ``resample`` (RePaint's
    U) repeats every step that many times; model calls grow accordingly (``info["nfe"]``). The
    solver driver runs the loop: the projection below is its hook, ``renoise`` its jump back.
    """
    driver.check_common(schedule, prediction, solver, t_min, t_max)
    solv = driver.make_solver(solver, solver_options)
    if not solv.fixed_grid:
        raise ValueError(f"inpaint projects the state after every grid step and needs a fixed-grid "
                         f"solver; {solver!r} has no single step (use e.g. 'ddpm', 'ddim', "
                         f"'euler', 'heun', 'dpmpp_2m')")
    if not isinstance(resample, int) or resample < 1:
        raise ValueError(f"resample must be a positive int, got {resample!r}")
    x_known = jnp.asarray(x_known)
    mask = jnp.broadcast_to(jnp.asarray(mask, bool), x_known.shape)
    tdtype = jnp.promote_types(x_known.dtype, jnp.float32)
    ts = driver.make_grid(solv, schedule, steps=steps, ts=ts, t_min=t_min, t_max=t_max, grid=grid, dtype=tdtype)
    driver.check_singular_start(schedule, prediction, ts[0])
    den = driver.Denoiser(model_fn, schedule, prediction)
    k_init, k_loop = jax.random.split(key)

    def project(x, t, k):
        """The known region replaced by a fresh draw of the forward process at t."""
        known_t = add_noise(x_known, jax.random.normal(k, x_known.shape, x_known.dtype), t, schedule)
        return jnp.where(mask, known_t, x)

    def jump_back(x, t_from, t_to, k):
        return renoise(k, x, t_from, t_to, schedule)

    x_init = project(schedule.sigma(ts[0]).astype(x_known.dtype)
                     * jax.random.normal(k_init, x_known.shape, x_known.dtype), ts[0], k_init)
    x, nfe = driver.run_steps(solv, den, x_init, ts, k_loop, project=project, repeat=resample, jump_back=jump_back)
    x0, _ = den(x, ts[-1])
    return jnp.where(mask, x_known, x0), {"nfe": nfe + 1, "ts": ts}


def sdedit(model_fn, key, x, t_start, *, schedule, prediction, solver="ddpm", steps=None, t_min=1e-3,
           **sample_kwargs):
    """SDEdit: x_t = alpha(t_start) x + sigma(t_start) z, then sample from t_start down to t_min.
    Smaller ``t_start`` stays closer to the input; larger follows the model more."""
    x = jnp.asarray(x)
    k_noise, k_sample = jax.random.split(key)
    t0 = jnp.asarray(t_start, jnp.promote_types(x.dtype, jnp.float32))
    x_t = add_noise(x, jax.random.normal(k_noise, x.shape, x.dtype), t0, schedule)
    return sample(model_fn, k_sample, x.shape, schedule=schedule, prediction=prediction, solver=solver, steps=steps,
                  t_min=t_min, t_max=t_start, x_init=x_t, **sample_kwargs)


def invert_and_edit(source_fn, target_fn, x, *, schedule, prediction, solver="ddim", steps=50, t_min=1e-3,
                    t_max=1.0, key=None, denoise_final=True, **kwargs):
    """Edits x by deterministic inversion under ``source_fn`` to t_max, then sampling under
    ``target_fn`` from that latent (``t_max < 1`` keeps more of the input's structure)."""
    kw = dict(schedule=schedule, prediction=prediction, solver=solver, steps=steps, t_min=t_min, t_max=t_max, **kwargs)
    z, info_enc = encode(source_fn, x, **kw)
    key = jax.random.PRNGKey(0) if key is None else key
    out, info = sample(target_fn, key, x.shape, x_init=z, denoise_final=denoise_final, **kw)
    return out, {"nfe": info["nfe"] + info_enc["nfe"], "latent": z}
