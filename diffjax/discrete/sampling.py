"""Samplers for discrete diffusion. Time runs from ``t_start`` (1 = pure noise) down to 0 (data)
on the uniform grid ``t_k = t_start (1 - k / steps)``; every time loop is a ``lax.scan`` or
``lax.while_loop``.

``sample(model_fn, key, shape, *, process, steps, method=...)`` with ``method``:

* ``"ancestral"`` (both processes): draw ``x_{t_{k+1}} ~ p(x_{t_{k+1}} | x_{t_k})``, the exact
  posterior ``q(x_s | x_t, x0)`` mixed over the model's ``p(x0 | x_t)``. Masked: each masked
  token is revealed with probability ``(alpha_s - alpha_t) / (1 - alpha_t)`` and then drawn from
  ``p(x0_i | x_t)``; unmasked tokens never change. One model call per step.
* ``"first_hitting"`` (masked): the same distribution as ``"ancestral"`` with the same ``steps``,
  with model calls only where a token is revealed. Whether (and at which step) a masked token is
  revealed does not depend on the model, so each token's reveal step is drawn up front by
  inverting ``1 - alpha``; each sequence then jumps from one reveal step to the next, calling the
  model at that step's time (``model_fn`` gets a per-sequence ``t``). Steps where nothing is
  revealed would leave the state unchanged and are skipped. The loop (``lax.while_loop``) runs
  ``max over the batch of the number of distinct reveal steps`` iterations, at most the number of
  masked tokens per sequence (first-hitting sampler, Zheng et al. 2024).
* ``"confidence"`` (masked, MaskGIT, Chang et al. 2022): at every step draw candidates for all
  masked tokens and keep the most confident ones (the model's log-probability of the drawn token
  before temperature and top-p, plus
  ``confidence_noise * t`` times Gumbel noise as in MaskGIT), as many as the schedule unmasks in
  expectation (``floor(M (1 - alpha(t_{k+1})) / (1 - alpha(t_start)))`` stay masked).
* ``"left_to_right"`` (masked): the same counts, revealing the leftmost masked tokens first
  (autoregressive decoding with the masked model; with ``steps = L`` one token per step, which
  samples the model's joint exactly when the model is exact).

Options (all samplers): ``temperature`` (0 = greedy) and ``top_p`` (nucleus) act on
``p(x0 | x_t)`` and may be traced values (changing them does not recompile; ``top_p=None``
skips the sort). ``x_init``: the state at ``t_start``; the value ``vocab_size`` (the mask id)
marks positions to generate, any other token is kept fixed (prompting, infilling). With the
masked process this samples the model's conditional exactly (the model sees which tokens are
given). With the uniform process the free positions start from uniform noise and the kept
tokens are put back after every step (the "replacement" method): the model cannot tell them
from noisy tokens, so the conditional is only approximate. ``fixed`` (bool, shape of x)
overrides which positions are kept (``restore`` starts from a corrupted text with
``fixed=False``). Categorical draws use ``draws.categorical`` (exact in the tails).

Returns ``(tokens, info)``: ``info["nfe"]`` model calls, ``info["changed"]`` tokens changed per
step summed over the batch (for ``first_hitting``: per loop iteration, zero-padded), and with
``return_trajectory=True`` ``info["trajectory"]`` of shape ``(steps + 1,) + shape``.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from diffjax.discrete._numerics import as_float, default_float
from diffjax.discrete.draws import adjust_log_probs, categorical, uniform_01
from diffjax.discrete.processes import DiscreteProcess, MaskedProcess, UniformProcess
from diffjax.registry import Registry

__all__ = ["sample", "sample_first_hitting", "sample_confidence", "sample_left_to_right", "METHODS",
           "SAMPLERS"]



def _setup(process, key, shape, x_init, fixed):
    if not isinstance(process, DiscreteProcess):
        raise ValueError(f"process must be a diffjax.discrete process (masked(...) or uniform(...)), got {process!r}")
    shape = tuple(int(d) for d in shape)
    if len(shape) < 1:
        raise ValueError(f"shape must be (B, ...), got {shape}")
    V = process.vocab_size
    if x_init is None:
        x_init = jnp.full(shape, V, jnp.int32)
    else:
        x_init = jnp.asarray(x_init)
        if not jnp.issubdtype(x_init.dtype, jnp.integer):
            raise ValueError(f"x_init must hold integer tokens, got dtype {x_init.dtype}")
        if x_init.shape != shape:
            raise ValueError(f"x_init must have shape {shape}, got {x_init.shape}")
    free = x_init == V
    fixed = ~free if fixed is None else jnp.broadcast_to(jnp.asarray(fixed, bool), shape)
    if isinstance(process, UniformProcess):
        noise = jax.random.randint(key, shape, 0, V, dtype=x_init.dtype)
        x_init = jnp.where(free, noise, x_init)
    return x_init, fixed, shape


def _grid(t_start, steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    try:
        ok = 0.0 < float(t_start) <= 1.0
    except (TypeError, jax.errors.ConcretizationTypeError):
        ok = True  # traced
    if not ok:
        raise ValueError(f"t_start must be in (0, 1], got {t_start}")
    t_start = as_float(t_start, default_float())
    return t_start * (1.0 - jnp.arange(steps + 1, dtype=t_start.dtype) / steps)


def _denoiser(model_fn, process, shape, temperature, top_p):
    """x (B, N) flat, t (B,) -> (log p(x0 | x_t), the same after temperature and top-p), (B, N, V)."""
    B = shape[0]

    def fn(x, t):
        x_full = x.reshape(shape)
        logp = process.x0_log_probs(model_fn(x_full, jnp.broadcast_to(t, (B,))), x_full)
        logp = logp.reshape(B, -1, process.vocab_size)
        return logp, adjust_log_probs(logp, temperature, top_p)

    return fn


def _scan(step, x, fixed, ts, key, return_trajectory):
    """Runs ``x <- step(x, t, s, key)`` over the grid (``fixed`` positions kept); returns
    (x, changed per step, trajectory or None)."""
    keys = jax.random.split(key, ts.shape[0] - 1)

    def body(x, inp):
        t, s, k = inp
        x_new = step(x, t, s, k)
        x_new = jnp.where(fixed, x, x_new)
        out = (jnp.sum(x_new != x, dtype=jnp.int32), x_new if return_trajectory else None)
        return x_new, out

    x_final, (changed, traj) = jax.lax.scan(body, x, (ts[:-1], ts[1:], keys))
    if return_trajectory:
        traj = jnp.concatenate([x[None], traj], axis=0)
    return x_final, changed, traj


def sample(model_fn, key, shape, *, process, steps, x_init=None, temperature=1.0, top_p=None,
           method="ancestral", t_start=1.0, fixed=None, confidence_noise=0.0, return_trajectory=False):
    """Draws token sequences of ``shape`` (B, ...) from a discrete diffusion model; see the module
    docstring for ``method`` and the options. Returns ``(tokens, info)``."""
    spec = SAMPLERS.get(method)
    if spec.masked_only and not isinstance(process, MaskedProcess):
        raise ValueError(f"method={method!r} needs the masked process; "
                         f"use method='ancestral' for {type(process).__name__}")
    k_init, k_run = jax.random.split(key)
    x, fixed, shape = _setup(process, k_init, shape, x_init, fixed)
    ts = _grid(t_start, steps)
    B = shape[0]
    x, fixed = x.reshape(B, -1), fixed.reshape(B, -1)
    den = _denoiser(model_fn, process, shape, temperature, top_p)
    if spec.run is not None:  # a sampler with its own loop
        if return_trajectory:
            raise ValueError(f"return_trajectory is not available for method={method!r}")
        x, info = spec.run(process, den, x, fixed, ts, k_run)
        return x.reshape(shape), info
    step = spec.build_step(process, den, x, fixed, ts, confidence_noise)
    x, changed, traj = _scan(step, x, fixed, ts, k_run, return_trajectory)
    info = {"nfe": jnp.asarray(steps, jnp.int32), "changed": changed}
    if return_trajectory:
        info["trajectory"] = traj.reshape((steps + 1,) + shape)
    return x.reshape(shape), info


def _masked_step(process, den):
    mask = process.mask_id

    def step(x, t, s, key):
        k_tok, k_rev = jax.random.split(key)
        cand = categorical(k_tok, den(x, t)[1])
        log_reveal, _ = process.reveal_log_prob(s, t)
        reveal = (x == mask) & (uniform_01(k_rev, x.shape, t.dtype) <= jnp.exp(log_reveal))
        return jnp.where(reveal, cand.astype(x.dtype), x)

    return step


def _uniform_step(process, den):
    def step(x, t, s, key):
        log_q = process.log_posterior(x, den(x, t)[1], s, t)
        return categorical(key, log_q).astype(x.dtype)

    return step


def _ordered_step(process, den, x0, fixed, ts, confidence_noise, *, method):
    """Confidence-ordered (MaskGIT) or left-to-right unmasking with the schedule's counts."""
    mask = process.mask_id
    B, N = x0.shape
    total = jnp.sum((x0 == mask) & ~fixed, axis=1)  # masked tokens to generate, per sequence
    l1m0 = process.log1m_alpha(ts[0])
    noise_scale = jnp.asarray(confidence_noise, ts.dtype)
    position = jnp.arange(N, dtype=ts.dtype)

    def step(x, t, s, key):
        k_tok, k_noise = jax.random.split(key)
        logp, adjusted = den(x, t)
        cand = categorical(k_tok, adjusted)
        masked = (x == mask) & ~fixed
        if method == "confidence":  # the model's own probability of the drawn token, as in MaskGIT
            conf = jnp.take_along_axis(logp, cand[..., None], axis=-1)[..., 0]
            score = conf + noise_scale * (s / ts[0]) * jax.random.gumbel(k_noise, conf.shape, conf.dtype)
        else:
            score = -position[None, :]
        score = jnp.where(masked, score, -jnp.inf)
        keep_frac = jnp.exp(process.log1m_alpha(s) - l1m0)  # fraction still masked after the step
        target = jnp.floor(total * keep_frac + 1e-4).astype(jnp.int32)
        n_reveal = jnp.maximum(jnp.sum(masked, axis=1) - target, 0)
        rank = jnp.argsort(jnp.argsort(-score, axis=1), axis=1)
        reveal = masked & (rank < n_reveal[:, None])
        return jnp.where(reveal, cand.astype(x.dtype), x)

    return step


def _first_hitting(process, den, x, fixed, ts, key):
    mask = process.mask_id
    B, N = x.shape
    steps = ts.shape[0] - 1
    k_times, k_loop = jax.random.split(key)
    c = jnp.exp(process.log1m_alpha(ts))  # P(masked at t_k), descending to 0 at t = 0
    v = uniform_01(k_times, (B, N), c.dtype) * c[0]
    # Reveal step: the k with c_{k+1} < v <= c_k, i.e. the number of k in 1..steps with c_k >= v.
    reveal_step = steps - jnp.searchsorted(c[::-1][:-1], v, side="left").astype(jnp.int32)
    reveal_step = jnp.where((x == mask) & ~fixed, reveal_step, steps)

    def cond(state):
        x, it, _, _ = state
        return jnp.any((x == mask) & (reveal_step < steps)) & (it < N)

    def body(state):
        x, it, key, changed = state
        key, k_tok = jax.random.split(key)
        pending = (x == mask) & (reveal_step < steps)
        next_step = jnp.min(jnp.where(pending, reveal_step, steps), axis=1)
        t = ts[jnp.minimum(next_step, steps - 1)]
        cand = categorical(k_tok, den(x, t)[1])
        reveal = pending & (reveal_step == next_step[:, None])
        x = jnp.where(reveal, cand.astype(x.dtype), x)
        changed = changed.at[it].set(jnp.sum(reveal, dtype=jnp.int32))
        return x, it + 1, key, changed

    state = (x, jnp.asarray(0, jnp.int32), k_loop, jnp.zeros((N,), jnp.int32))
    x, nfe, _, changed = jax.lax.while_loop(cond, body, state)
    return x, {"nfe": nfe, "changed": changed}


class _Method(NamedTuple):
    """A sampler: ``build_step(process, den, x, fixed, ts, confidence_noise)`` gives the
    update ``step(x, t, s, key)`` that `sample` scans over the grid, or ``run(process, den,
    x, fixed, ts, key) -> (x, info)`` runs a loop of its own."""

    masked_only: bool
    build_step: Optional[Callable] = None
    run: Optional[Callable] = None


def _ancestral_step(process, den, x, fixed, ts, confidence_noise):
    if isinstance(process, MaskedProcess):
        return _masked_step(process, den)
    return _uniform_step(process, den)


SAMPLERS = Registry("method")
SAMPLERS.add("ancestral", _Method(False, build_step=_ancestral_step))
SAMPLERS.add("first_hitting", _Method(True, run=_first_hitting))
SAMPLERS.add("confidence", _Method(True, build_step=functools.partial(_ordered_step,
                                                                       method="confidence")))
SAMPLERS.add("left_to_right", _Method(True, build_step=functools.partial(_ordered_step,
                                                                          method="left_to_right")))
METHODS = SAMPLERS.names()


def sample_first_hitting(model_fn, key, shape, *, process, steps, **kwargs):
    """``sample(..., method="first_hitting")``."""
    return sample(model_fn, key, shape, process=process, steps=steps, method="first_hitting", **kwargs)


def sample_confidence(model_fn, key, shape, *, process, steps, **kwargs):
    """``sample(..., method="confidence")`` (MaskGIT-style confidence-ordered unmasking)."""
    return sample(model_fn, key, shape, process=process, steps=steps, method="confidence", **kwargs)


def sample_left_to_right(model_fn, key, shape, *, process, steps=None, **kwargs):
    """``sample(..., method="left_to_right")``; ``steps`` defaults to the sequence length."""
    if steps is None:
        steps = math.prod(int(d) for d in shape[1:])
    return sample(model_fn, key, shape, process=process, steps=steps, method="left_to_right", **kwargs)

