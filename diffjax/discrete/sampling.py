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
  It does *not* sample the model's distribution: unmasking the most confident positions first
  favours positions where the drawn token is likely, so high-probability tokens are
  over-represented and sample entropy is lower than with ``"ancestral"`` (or
  ``"first_hitting"``), increasingly so at few steps. ``confidence_noise > 0`` weakens the bias.
  ``confidence_temperature`` (tau >= 0, default 0) puts a temperature on the ordering: the
  score gets ``tau`` times Gumbel noise at every step (not annealed), so the positions revealed
  at a step are drawn without replacement with probabilities proportional to ``p_i ** (1/tau)``
  (``p_i``: the model's probability of position i's drawn token; Gumbel-top-k, Kool et al.
  2019). tau = 0 is the greedy order above, tau -> infinity a uniformly random order.
* ``"left_to_right"`` (masked): the same counts, revealing the leftmost masked tokens first
  (autoregressive decoding with the masked model; with ``steps = L`` one token per step, which
  samples the model's joint exactly when the model is exact). It is the ancestral sampler of
  the masked process with ``order="left_to_right"``, the only method that process accepts.
* ``"remdm"`` (masked, ReMDM, Wang et al. 2025): ancestral sampling in which already decoded
  tokens may be remasked. From t to s every generated token that is decoded at t is remasked
  with probability ``sigma_t``, and a masked token is revealed with probability
  ``(alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t)`` (drawn from ``p(x0 | x_t)``), which
  keeps the expected fraction of decoded tokens at ``alpha_s`` (the forward marginal): with
  more steps than tokens, decoded tokens keep being redrawn in the context of the others. As
  in ``"ancestral"``, tokens that change in the same step are drawn independently given x_t,
  which is the sampler's error with an exact model; remasking adds such changes, about
  ``sigma_t`` times the decoded tokens per step. ``sigma_t`` must lie in ``[0, sigma_max]``,
  ``sigma_max = min(1, (1 - alpha_s) / alpha_t)``; ``remask_schedule`` picks it:
  ``"cap"`` ``sigma_t = min(remask_eta, sigma_max)``, ``"rescale"``
  ``sigma_t = remask_eta * sigma_max`` (``remask_eta`` in [0, 1], may be traced).
  ``remask_eta = 0`` is ``"ancestral"``: the same tokens with the same key. One model call per
  step; ``info["changed"]`` counts reveals and remasks.

Options (all samplers): ``temperature`` (>= 0; 0 = greedy) and ``top_p`` (nucleus, in (0, 1])
act on ``p(x0 | x_t)`` and may be traced values (changing them does not recompile; ``top_p=None``
skips the sort; concrete values out of range, or NaN, raise a ValueError naming them).
``x_init``: the state at ``t_start``, integer tokens in ``0 .. vocab_size``; the value
``vocab_size`` (the mask id) marks positions to generate, any other token is kept fixed
(prompting, infilling). A concrete ``x_init`` with a token outside that range raises a
ValueError naming ``x_init``. With the
masked process this samples the model's conditional exactly (the model sees which tokens are
given). With the uniform process the free positions start from uniform noise and the kept
tokens are put back after every step (the "replacement" method): the model cannot tell them
from noisy tokens, so the conditional is only approximate. ``fixed`` (bool, shape of x)
overrides which positions are kept (``restore`` starts from a corrupted text with
``fixed=False``). Categorical draws use ``draws.categorical`` (exact in the tails).

The model's call is checked where it is traced (``x`` of ``shape``, ``t`` of shape (B,)): a
failure, or logits of a shape other than
``shape + (vocab_size,)`` (``vocab_size + 1`` allowed for the masked process), raises a
ValueError naming ``model_fn`` and the shapes it was given (a TypeError where the model fails with
one, or returns no array or non-float logits).

Self-conditioning (``self_condition=True``; Strudel et al. 2022, Chen et al. 2022): the model is
called as ``model_fn(x_t, t, probs_prev)``, ``probs_prev`` of shape ``shape + (vocab_size,)``
(float32) being its previous prediction ``p(x0 | x_t)``: the softmax of the last call's logits
as the process reads them (``process.x0_log_probs``, the masked process's carry-over of unmasked
tokens included), before temperature and top-p; zeros at the first call. Every sampler carries
it in its loop state (the grid ``lax.scan``, ``"first_hitting"``'s ``lax.while_loop``) and
replaces it after each model call.

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
import numpy as np

from diffjax import _model_call
from diffjax.discrete._numerics import as_float, default_float
from diffjax.discrete.draws import adjust_log_probs, categorical, uniform_01
from diffjax.discrete.processes import DiscreteProcess, MaskedProcess, UniformProcess
from diffjax.registry import Registry

__all__ = ["sample", "sample_first_hitting", "sample_confidence", "sample_left_to_right", "METHODS",
           "SAMPLERS"]


def __dir__():
    return sorted(__all__)


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
        if not isinstance(x_init, jax.core.Tracer) and x_init.size:
            with jax.ensure_compile_time_eval():  # concrete, also while an outer jit traces
                lo, hi = int(jnp.min(x_init)), int(jnp.max(x_init))
            if lo < 0 or hi > V:
                raise ValueError(f"x_init tokens must lie in 0 .. {V} (0 .. vocab_size - 1 = {V - 1} are kept, "
                                 f"{V} marks a position to generate), got values in {lo} .. {hi}")
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


def _concrete_float(v):
    """A Python float if v is a scalar known at trace time, else None (traced, or not a scalar)."""
    try:
        return float(np.asarray(v))
    except (jax.errors.TracerArrayConversionError, TypeError, ValueError):
        return None


REMASK_SCHEDULES = ("cap", "rescale")
"""The ``remask_schedule`` names of ``method="remdm"``."""


class _Options(NamedTuple):
    """The method-specific options of `sample`, handed to every ``build_step``."""

    confidence_noise: float = 0.0
    confidence_temperature: float = 0.0
    remask_schedule: str = "cap"
    remask_eta: float = 0.02


def _check_options(temperature, top_p, confidence_noise, confidence_temperature=None, remask_eta=None):
    """Range checks of the concrete numeric options (traced ones are not checked)."""
    checks = (("temperature", temperature, lambda v: v >= 0.0, ">= 0 (0 = greedy)"),
              ("top_p", top_p, lambda v: 0.0 < v <= 1.0, "in (0, 1] (or None: no nucleus filtering)"),
              ("confidence_noise", confidence_noise, lambda v: v >= 0.0, ">= 0"),
              ("confidence_temperature", confidence_temperature, lambda v: v >= 0.0, ">= 0 (0 = greedy order)"),
              ("remask_eta", remask_eta, lambda v: 0.0 <= v <= 1.0, "in [0, 1] (0 = no remasking)"))
    for name, value, ok, allowed in checks:
        if value is None:
            continue
        v = _concrete_float(value)
        if v is not None and not (math.isfinite(v) and ok(v)):
            raise ValueError(f"{name} must be a finite number {allowed}, got {v!r}")


_CONVENTION = ("t has shape (B,), one time per sequence; broadcast it with t[:, None]; the logits have "
               "shape x.shape + (vocab_size,)")
_SELF_COND_CONVENTION = (_CONVENTION + "; with self_condition=True the model is called as model_fn(x, t, "
                         "probs_prev), probs_prev float32 of shape x.shape + (vocab_size,) (its previous "
                         "p(x0 | x_t), zeros at the first call)")


def _call_model(model_fn, process, x, t, convention=_CONVENTION):
    """``model_fn(x, t)``, checked where it is traced (no extra trace: the samplers count on one
    trace per compilation; ``diffjax._model_call.call_model``): a failure, or logits of a shape
    other than ``x.shape + (vocab_size,)`` (or ``vocab_size + 1`` for the masked process), raises
    a ValueError naming ``model_fn``, the shapes it was given and the convention, chained from the
    original error (a TypeError for a TypeError raised by the model, or an output that is not a
    floating-point array)."""
    V = process.vocab_size
    shape = tuple(x.shape)
    sizes = (V, V + 1) if isinstance(process, MaskedProcess) else (V,)
    shapes = [shape + (n,) for n in sizes]
    return _model_call.call_model(model_fn, x, t, out_shapes=shapes,
                                  returns="logits of shape " + " or ".join(str(s) for s in shapes),
                                  convention=convention)


def _denoiser(model_fn, process, shape, temperature, top_p):
    """x (B, N) flat, t (B,) -> (log p(x0 | x_t), the same after temperature and top-p), (B, N, V)."""
    B = shape[0]

    def fn(x, t):
        x_full = x.reshape(shape)
        logp = process.x0_log_probs(_call_model(model_fn, process, x_full, jnp.broadcast_to(t, (B,))), x_full)
        logp = logp.reshape(B, -1, process.vocab_size)
        return logp, adjust_log_probs(logp, temperature, top_p)

    return fn


class _SelfCondDenoiser:
    """`_denoiser` for a self-conditioned ``model_fn(x, t, probs_prev)``: each call feeds ``prev``
    (shape + (V,), float32; zeros at first) and replaces it with ``exp(log p(x0 | x_t))``. The
    loops thread ``prev`` through their state (`_scan`, `_first_hitting`): they set it before a
    step's call and read it back after."""

    def __init__(self, model_fn, process, shape, temperature, top_p):
        self.model_fn, self.process, self.shape = model_fn, process, shape
        self.temperature, self.top_p = temperature, top_p
        self.prev = jnp.zeros(tuple(shape) + (process.vocab_size,), jnp.float32)

    def __call__(self, x, t):
        shape, process = self.shape, self.process
        B = shape[0]
        x_full = x.reshape(shape)
        prev = self.prev
        logits = _call_model(lambda x_, t_: self.model_fn(x_, t_, prev), process, x_full,
                             jnp.broadcast_to(t, (B,)), convention=_SELF_COND_CONVENTION)
        logp = process.x0_log_probs(logits, x_full)
        self.prev = jnp.exp(logp).astype(jnp.float32)
        logp = logp.reshape(B, -1, process.vocab_size)
        return logp, adjust_log_probs(logp, self.temperature, self.top_p)


def _self_conditioned(den) -> bool:
    return isinstance(den, _SelfCondDenoiser)


def _scan(step, x, fixed, ts, key, return_trajectory, den=None):
    """Runs ``x <- step(x, t, s, key)`` over the grid (``fixed`` positions kept); returns
    (x, changed per step, trajectory or None). With a self-conditioned ``den`` the scan also
    carries its ``prev``."""
    keys = jax.random.split(key, ts.shape[0] - 1)

    def body(x, inp):
        t, s, k = inp
        x_new = step(x, t, s, k)
        x_new = jnp.where(fixed, x, x_new)
        out = (jnp.sum(x_new != x, dtype=jnp.int32), x_new if return_trajectory else None)
        return x_new, out

    if _self_conditioned(den):
        def body_sc(carry, inp):
            x, den.prev = carry
            x_new, out = body(x, inp)
            return (x_new, den.prev), out

        (x_final, den.prev), (changed, traj) = jax.lax.scan(body_sc, (x, den.prev), (ts[:-1], ts[1:], keys))
        if return_trajectory:
            traj = jnp.concatenate([x[None], traj], axis=0)
        return x_final, changed, traj

    x_final, (changed, traj) = jax.lax.scan(body, x, (ts[:-1], ts[1:], keys))
    if return_trajectory:
        traj = jnp.concatenate([x[None], traj], axis=0)
    return x_final, changed, traj


def sample(model_fn, key, shape, *, process, steps, x_init=None, temperature=1.0, top_p=None,
           method="ancestral", t_start=1.0, fixed=None, confidence_noise=0.0, confidence_temperature=0.0,
           remask_schedule="cap", remask_eta=0.02, return_trajectory=False, self_condition=False):
    """Draws token sequences of ``shape`` (B, ...) from a discrete diffusion model.

    See the module docstring for the methods and the options in detail.

    Args:
      model_fn: ``model_fn(x_t, t) -> logits`` of ``p(x0_i | x_t)``, x_t integer tokens of
        ``shape``, t of shape (B,), logits ``shape + (vocab_size,)``.
      key: a ``jax.random`` key.
      shape: ``(B, ...)``.
      process: ``diffjax.discrete.masked(...)`` or ``uniform(...)``.
      steps: an int >= 1, the number of grid steps from ``t_start`` to 0.
      x_init: integer tokens of ``shape`` in ``0 .. vocab_size`` (``vocab_size`` = generate
        here); default all ``vocab_size``.
      temperature: >= 0 (0 = greedy); may be traced.
      top_p: None (off) or in (0, 1]; may be traced.
      method: a name in ``METHODS`` (``"ancestral"``, ``"first_hitting"``, ``"confidence"``,
        ``"left_to_right"``, ``"remdm"``; all but ancestral need the masked process, and the
        masked process with ``order="left_to_right"`` takes ``"left_to_right"`` only).
      t_start: in (0, 1], the time the grid starts from.
      fixed: optional bool array of ``shape``: positions kept as in ``x_init``.
      confidence_noise: >= 0, the Gumbel noise scale of ``"confidence"``.
      confidence_temperature: >= 0, the temperature of ``"confidence"``'s ordering (0: greedy);
        may be traced.
      remask_schedule: ``"cap"`` or ``"rescale"``, how ``"remdm"`` sets its remasking
        probability.
      remask_eta: in [0, 1], ``"remdm"``'s eta (0: no remasking); may be traced.
      return_trajectory: also return every state (not for ``"first_hitting"``).
      self_condition: default False. True samples a self-conditioned model, called as
        ``model_fn(x_t, t, probs_prev)`` with its previous prediction ``p(x0 | x_t)`` (module
        docstring); every method carries it.

    Returns:
      ``(tokens, info)`` with ``info["nfe"]``, ``info["changed"]`` and, with
      ``return_trajectory``, ``info["trajectory"]``.

    Raises:
      ValueError / TypeError: naming the argument, for out-of-range concrete options, tokens of
      ``x_init`` outside ``0 .. vocab_size``, or a model whose output does not fit (see above).
    """
    spec = SAMPLERS.get(method)
    if spec.masked_only and not isinstance(process, MaskedProcess):
        raise ValueError(f"method={method!r} needs the masked process; "
                         f"use method='ancestral' for {type(process).__name__}")
    if getattr(process, "fixed_order", False) and method != "left_to_right":
        raise ValueError(f"method={method!r} unmasks in a random order; the masked process with "
                         f"order='left_to_right' samples with method='left_to_right'")
    if remask_schedule not in REMASK_SCHEDULES:
        raise ValueError(f"remask_schedule must be one of {REMASK_SCHEDULES}, got {remask_schedule!r}")
    if not isinstance(self_condition, (bool, np.bool_)):
        raise ValueError(f"self_condition must be True or False, got {self_condition!r}")
    k_init, k_run = jax.random.split(key)
    _check_options(temperature, top_p, confidence_noise, confidence_temperature, remask_eta)
    options = _Options(confidence_noise, confidence_temperature, remask_schedule, remask_eta)
    x, fixed, shape = _setup(process, k_init, shape, x_init, fixed)
    ts = _grid(t_start, steps)
    if not callable(model_fn):
        raise TypeError(f"model_fn must be a callable model_fn(x_t, t) -> logits, got {type(model_fn).__name__}")
    B = shape[0]
    x, fixed = x.reshape(B, -1), fixed.reshape(B, -1)
    if self_condition:
        den = _SelfCondDenoiser(model_fn, process, shape, temperature, top_p)
    else:
        den = _denoiser(model_fn, process, shape, temperature, top_p)
    if spec.run is not None:  # a sampler with its own loop
        if return_trajectory:
            raise ValueError(f"return_trajectory is not available for method={method!r}")
        x, info = spec.run(process, den, x, fixed, ts, k_run)
        return x.reshape(shape), info
    step = spec.build_step(process, den, x, fixed, ts, options)
    x, changed, traj = _scan(step, x, fixed, ts, k_run, return_trajectory, den)
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


def _ordered_step(process, den, x0, fixed, ts, options, *, method):
    """Confidence-ordered (MaskGIT) or left-to-right unmasking with the schedule's counts."""
    mask = process.mask_id
    B, N = x0.shape
    total = jnp.sum((x0 == mask) & ~fixed, axis=1)  # masked tokens to generate, per sequence
    l1m0 = process.log1m_alpha(ts[0])
    noise_scale = jnp.asarray(options.confidence_noise, ts.dtype)
    order_temperature = jnp.asarray(options.confidence_temperature, ts.dtype)
    position = jnp.arange(N, dtype=ts.dtype)

    def step(x, t, s, key):
        k_tok, k_noise = jax.random.split(key)
        logp, adjusted = den(x, t)
        cand = categorical(k_tok, adjusted)
        masked = (x == mask) & ~fixed
        if method == "confidence":  # the model's own probability of the drawn token, as in MaskGIT
            conf = jnp.take_along_axis(logp, cand[..., None], axis=-1)[..., 0]
            gumbel_scale = noise_scale * (s / ts[0]) + order_temperature
            score = conf + gumbel_scale * jax.random.gumbel(k_noise, conf.shape, conf.dtype)
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
    if _self_conditioned(den):  # the previous prediction rides in the loop state
        def body_sc(state):
            den.prev = state[-1]
            return body(state[:-1]) + (den.prev,)

        x, nfe, _, changed, den.prev = jax.lax.while_loop(lambda s: cond(s[:-1]), body_sc, state + (den.prev,))
        return x, {"nfe": nfe, "changed": changed}
    x, nfe, _, changed = jax.lax.while_loop(cond, body, state)
    return x, {"nfe": nfe, "changed": changed}


def _remdm_step(process, den, x0, fixed, ts, options):
    """ReMDM: the ancestral masked step plus remasking of decoded tokens (module docstring).
    The draws of ``"ancestral"`` use the same keys, so ``remask_eta = 0`` reproduces it."""
    mask = process.mask_id
    eta = jnp.asarray(options.remask_eta, ts.dtype)

    def step(x, t, s, key):
        k_tok, k_rev = jax.random.split(key)
        k_remask = jax.random.fold_in(key, 2)
        cand = categorical(k_tok, den(x, t)[1])
        log_reveal, _ = process.reveal_log_prob(s, t)
        sigma_max = jnp.exp(jnp.minimum(process.log1m_alpha(s) - process.log_alpha(t), 0.0))
        sigma = jnp.minimum(eta, sigma_max) if options.remask_schedule == "cap" else eta * sigma_max
        # (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t): ancestral's probability plus what remasking takes
        p_reveal = jnp.exp(log_reveal) + sigma * jnp.exp(process.log_alpha(t) - process.log1m_alpha(t))
        masked = x == mask
        reveal = masked & (uniform_01(k_rev, x.shape, t.dtype) <= p_reveal)
        remask = ~masked & ~fixed & (uniform_01(k_remask, x.shape, t.dtype) < sigma)
        x_new = jnp.where(reveal, cand.astype(x.dtype), x)
        return jnp.where(remask, jnp.asarray(mask, x.dtype), x_new)

    return step


class _Method(NamedTuple):
    """A sampler: ``build_step(process, den, x, fixed, ts, options)`` (``options``: the
    method-specific arguments of `sample`) gives the
    update ``step(x, t, s, key)`` that `sample` scans over the grid, or ``run(process, den,
    x, fixed, ts, key) -> (x, info)`` runs a loop of its own."""

    masked_only: bool
    build_step: Optional[Callable] = None
    run: Optional[Callable] = None


def _ancestral_step(process, den, x, fixed, ts, options):
    if isinstance(process, MaskedProcess):
        return _masked_step(process, den)
    return _uniform_step(process, den)


SAMPLERS = Registry("method")
"""The sampling methods by name (a :class:`diffjax.registry.Registry`); each entry holds what
``sample(..., method=name)`` runs and whether the method needs the masked process."""
SAMPLERS.add("ancestral", _Method(False, build_step=_ancestral_step))
SAMPLERS.add("first_hitting", _Method(True, run=_first_hitting))
SAMPLERS.add("confidence", _Method(True, build_step=functools.partial(_ordered_step,
                                                                       method="confidence")))
SAMPLERS.add("left_to_right", _Method(True, build_step=functools.partial(_ordered_step,
                                                                          method="left_to_right")))
SAMPLERS.add("remdm", _Method(True, build_step=_remdm_step))
METHODS = SAMPLERS.names()
"""The names ``sample`` accepts as ``method``, in registration order (the names of ``SAMPLERS``;
all but ``ancestral`` need the masked process)."""


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

