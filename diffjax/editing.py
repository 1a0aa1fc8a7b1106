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
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from diffjax.parameterization import add_noise
from diffjax.solvers import _check_common, _check_singular_start, _grid, _options, encode, sample
from diffjax.solvers._base import Denoiser, Solver

__all__ = ["inpaint", "sdedit", "invert_and_edit", "renoise"]


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
    U) repeats every step that many times; model calls grow accordingly (``info["nfe"]``).
    """
    solv = _check_common(schedule, prediction, solver, t_min, t_max)
    if type(solv).step is Solver.step:
        raise ValueError(f"inpaint projects the state after every grid step and needs a fixed-grid "
                         f"solver; {solv.name!r} has no single step (use e.g. 'ddpm', 'ddim', "
                         f"'euler', 'heun', 'dpmpp_2m')")
    opts = _options(solv, solver_options)
    if not isinstance(resample, int) or resample < 1:
        raise ValueError(f"resample must be a positive int, got {resample!r}")
    x_known = jnp.asarray(x_known)
    mask = jnp.broadcast_to(jnp.asarray(mask, bool), x_known.shape)
    tdtype = jnp.promote_types(x_known.dtype, jnp.float32)
    ts = _grid(solv, schedule, steps, ts, t_min, t_max, grid, tdtype)
    _check_singular_start(schedule, prediction, ts[0])
    den = Denoiser(model_fn, schedule, prediction)
    k_init, k_loop = jax.random.split(key)

    def known_at(t, k):
        return add_noise(x_known, jax.random.normal(k, x_known.shape, x_known.dtype), t, schedule)

    def project(carry, t, k):
        return solv.with_state(carry, jnp.where(mask, known_at(t, k), solv.state(carry)))

    n = ts.shape[0] - 1
    is_last = jnp.arange(n) == n - 1

    def body(state, inp):
        carry, nfe = state
        t, t_next, k, last = inp

        def go_down(carry_nfe, kk):
            carry, nfe = carry_nfe
            k1, k2 = jax.random.split(kk)
            carry, used = solv.step(den, carry, t, t_next, k1, last, opts)
            return (project(carry, t_next, k2), nfe + used)

        def resample_once(carry_nfe, kk):
            k1, k2 = jax.random.split(kk)
            carry, nfe = go_down(carry_nfe, k1)
            x_back = renoise(k2, solv.state(carry), t_next, t, schedule)
            # Jumping back in time leaves the trajectory: a multistep solver's history (model
            # outputs at t and before) does not belong to x_back, and reusing it at t would
            # divide by a zero log-SNR step. Restart the solver from x_back.
            return (solv.init(den, x_back, opts), nfe), None

        keys = jax.random.split(k, resample)
        (carry, nfe), _ = jax.lax.scan(resample_once, (carry, nfe), keys[:-1])
        return go_down((carry, nfe), keys[-1]), None

    x_init = project(solv.init(den, schedule.sigma(ts[0]).astype(x_known.dtype)
                               * jax.random.normal(k_init, x_known.shape, x_known.dtype), opts), ts[0], k_init)
    keys = jax.random.split(k_loop, n)
    (carry, nfe), _ = jax.lax.scan(body, (x_init, jnp.zeros((), jnp.int32)), (ts[:-1], ts[1:], keys, is_last))
    x0, _ = den(solv.state(carry), ts[-1])
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
