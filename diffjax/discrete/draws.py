"""Categorical sampling that is exact in the tails, plus temperature and nucleus (top-p).

Why not Gumbel-max: ``argmax(logits - log(-log(u)))`` with a float32 ``u`` has 2**-23 resolution
near 1, so the Gumbel noise is capped (about 15.9) and coarsely quantised exactly where a rare
token must draw a large value to win: tokens of probability ~1e-6 are under-sampled by
several per cent. Inverse-CDF sampling on a float32 cumulative sum has the same problem
(absolute error ~6e-8 next to 1).

``categorical`` instead descends a binary tree of partial sums (pairwise sums of the
probabilities, relative error <= depth * eps at every node). At each node it steps into the
*smaller* child with probability ``small / (left + right)``, compared against a uniform that
carries 48 random bits and therefore has full *relative* precision near 0. Every branch
probability is thus exact to a few float32 ulps relative, and so is the probability of every
leaf, however small (down to ~1e-14). Cost per draw: ``ceil(log2 V)`` levels and two 32-bit
random words per level (far fewer random bits than Gumbel-max's V).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffjax.discrete._numerics import compute_dtype, mask_value

__all__ = ["categorical", "uniform_01", "apply_temperature", "top_p_filter", "adjust_log_probs"]


def __dir__():
    return sorted(__all__)


def uniform_01(key, shape, dtype=jnp.float32):
    """Uniforms in (0, 1] built from 48 random bits: ``hi * 2**-24 + lo * 2**-48 + 2**-49``.

    Unlike ``jax.random.uniform`` (23 bits, spacing 2**-23 everywhere), values near 0 have full
    relative precision, so ``P(u < r) = r (1 + O(2**-24))`` for every r >= ~2**-46. Never 0."""
    dtype = jnp.dtype(dtype)
    bits = jax.random.bits(key, (2,) + tuple(shape), jnp.uint32)
    hi = (bits[0] >> 8).astype(dtype) * (2.0**-24)
    lo = (bits[1] >> 8).astype(dtype) * (2.0**-48)
    return hi + (lo + 2.0**-49)


def categorical(key, logits, axis=-1, shape=None):
    """Draw indices from ``softmax(logits)`` along ``axis``, exact in the tails (see module doc).

    ``logits`` may contain ``-inf`` or ``mask_value`` entries (probability 0, never drawn); at
    least one entry per distribution must be finite. ``shape``: output shape, which must end
    with (broadcast to) the batch shape ``logits.shape`` without ``axis`` (like
    ``jax.random.categorical``); by default the batch shape. Computation in >= float32.
    """
    logits = jnp.moveaxis(jnp.asarray(logits), axis, -1)
    batch, V = logits.shape[:-1], logits.shape[-1]
    if V < 1:
        raise ValueError("logits must have at least one category")
    shape = tuple(batch) if shape is None else tuple(shape)
    batch_b = shape[len(shape) - len(batch):]
    if len(shape) < len(batch) or jnp.broadcast_shapes(batch_b, batch) != batch_b:
        raise ValueError(f"shape {shape} must end with the batch shape {batch} of logits")
    dt = compute_dtype(logits.dtype)
    logits = logits.astype(dt)
    p = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    # The batch of distributions, flattened: (M, V); draws: (S, M).
    p = jnp.broadcast_to(p, tuple(batch_b) + (V,)).reshape(-1, V)
    M = p.shape[0]
    S = math.prod(shape[: len(shape) - len(batch)])
    depth = max(1, math.ceil(math.log2(V)))
    p = jnp.pad(p, ((0, 0), (0, 2**depth - V)))
    levels = [p]  # levels[d] has 2**(depth - d) nodes per row
    for _ in range(depth):
        levels.append(levels[-1].reshape(M, -1, 2).sum(-1))
    rows = jnp.arange(M)[None, :]
    u = uniform_01(key, (depth, S, M), dt)
    idx = jnp.zeros((S, M), jnp.int32)
    for d in range(depth):
        children = levels[depth - 1 - d]
        left = children[rows, 2 * idx]
        right = children[rows, 2 * idx + 1]
        small_is_left = left <= right
        small = jnp.where(small_is_left, left, right)
        total = left + right
        go_small = u[d] * total < small  # u < small / total without the rounding of a division
        go_left = go_small == small_is_left
        idx = 2 * idx + jnp.where(go_left, 0, 1)
    return idx.reshape(shape)


def apply_temperature(logp, temperature):
    """``log_softmax(logp / temperature)``; ``temperature == 0`` is greedy (argmax, ties split
    evenly). ``temperature`` may be a traced scalar (or broadcastable array)."""
    dt = logp.dtype
    T = jnp.asarray(temperature, dt)
    safe_T = jnp.where(T > 0, T, 1.0)
    scaled = jnp.maximum(logp / safe_T, mask_value(dt))
    greedy = jnp.where(logp >= jnp.max(logp, axis=-1, keepdims=True), 0.0, mask_value(dt))
    out = jnp.where(T > 0, scaled, greedy)
    return jnp.maximum(jax.nn.log_softmax(out, axis=-1), mask_value(dt))


def top_p_filter(logp, top_p):
    """Nucleus filtering (Holtzman et al. 2020): keep the most probable tokens whose cumulative
    probability first reaches ``top_p`` (always the top token; every token when
    ``top_p >= 1``), renormalised. ``logp`` must be normalised log-probabilities; ``top_p`` may
    be traced."""
    dt = logp.dtype
    top_p = jnp.asarray(top_p, dt)
    srt = -jnp.sort(-logp, axis=-1)
    probs = jnp.exp(srt)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each sorted token
    n_keep = jnp.maximum(jnp.sum(before < top_p, axis=-1, keepdims=True), 1)
    cutoff = jnp.take_along_axis(srt, n_keep - 1, axis=-1)
    keep = (logp >= cutoff) | (top_p >= 1)
    out = jnp.where(keep, logp, mask_value(dt))
    return jnp.maximum(jax.nn.log_softmax(out, axis=-1), mask_value(dt))


def adjust_log_probs(logp, temperature=1.0, top_p=None):
    """Temperature then (if ``top_p`` is not None) nucleus filtering; both may be traced."""
    logp = apply_temperature(logp, temperature)
    if top_p is not None:
        logp = top_p_filter(logp, top_p)
    return logp
