"""Classifier-free guidance for discrete diffusion, on logits of ``p(x0 | x_t)``.

``log p_w(x0_i | x_t) = log_softmax(u + w (c - u))`` with ``c, u`` the log-softmax of the
conditional and unconditional logits: ``w = 1`` is the conditional model, ``w = 0`` the
unconditional one, ``w > 1`` sharpens towards ``p(x0 | y)^w / p(x0)^(w-1)`` per token. Mixing
happens in at least float32; entries that are impossible in both branches stay impossible
(``mask_value``, never ``-inf - -inf = NaN``). ``scale`` may be a traced value.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from diffjax.discrete._numerics import compute_dtype, mask_value

__all__ = ["classifier_free", "classifier_free_batched", "guide_logits"]


def __dir__():
    return sorted(__all__)


def guide_logits(cond_logits, uncond_logits, scale):
    """``log_softmax(u + scale * (c - u))`` over the last axis, ``c, u`` log-softmaxed first."""
    dt = compute_dtype(jnp.result_type(cond_logits, uncond_logits))
    lo = mask_value(dt)
    c = jnp.maximum(jax.nn.log_softmax(cond_logits.astype(dt), axis=-1), lo)
    u = jnp.maximum(jax.nn.log_softmax(uncond_logits.astype(dt), axis=-1), lo)
    w = jnp.asarray(scale, dt)
    mixed = jnp.maximum(u + w * (c - u), lo)
    return jnp.maximum(jax.nn.log_softmax(mixed, axis=-1), lo)


def classifier_free(cond_fn, uncond_fn, scale):
    """``model_fn(x_t, t)`` returning guided logits from two models ``fn(x_t, t) -> logits``."""

    def model_fn(x, t):
        return guide_logits(cond_fn(x, t), uncond_fn(x, t), scale)

    return model_fn


def classifier_free_batched(model_fn, cond, null, scale):
    """Guidance for ``model_fn(x_t, t, cond)`` with both branches in one batched call (the batch
    is doubled); at ``scale == 1`` (checked at run time, so a traced scale stays traced) only the
    conditional branch runs. ``cond`` has a leading batch axis; ``null`` broadcasts to it."""

    def guided(x, t):
        b = x.shape[0]
        cond_ = jnp.asarray(cond)
        nul = jnp.broadcast_to(jnp.asarray(null, cond_.dtype), cond_.shape)
        t = jnp.broadcast_to(t, (b,))

        def both(_):
            out = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([cond_, nul]))
            return guide_logits(out[:b], out[b:], scale)

        def cond_only(_):
            out = model_fn(x, t, cond_)
            return guide_logits(out, out, 1.0)

        return jax.lax.cond(jnp.asarray(scale) == 1, cond_only, both, None)

    return guided
