"""Guidance: wrappers that turn conditional models into a plain ``model_fn(x, t)``.

* ``classifier_free(cond_fn, uncond_fn, scale)``: ``uncond + scale (cond - uncond)`` on the model
  outputs (Ho & Salimans 2022). Every prediction kind is affine in the output given x_t, so the
  combination means the same in every kind: scale = 1 is the conditional model, 0 the
  unconditional one; scale > 1 samples p(x | y) p(y | x)^(scale - 1) at every noise level.
  Options: a guidance interval (guide only for t in [t_lo, t_hi], Kynkaanniemi et al. 2024) and
  CFG rescaling (Lin et al. 2024). ``scale`` may be a traced value.
* ``classifier_free_batched(model_fn, cond, null, scale)``: the same for a model that takes the
  condition, ``model_fn(x, t, cond)``, evaluating both branches in one batched call and skipping
  the unconditional branch at scale = 1.
* ``classifier(model_fn, log_prob_fn, scale, schedule=, prediction=)``: adds
  ``scale * grad_x log p(y | x_t, t)`` to the model's score (Dhariwal & Nichol 2021).
* ``drop_condition(key, cond, p, null)``: replaces the condition by ``null`` with probability p
  (training for classifier-free guidance).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from diffjax.parameterization import convert, expand

__all__ = ["classifier_free", "classifier_free_batched", "classifier", "drop_condition"]


def __dir__():
    return sorted(__all__)


def _std(v):
    return jnp.std(v.reshape(v.shape[0], -1), axis=-1)


def _combine(cond, uncond, scale, t, interval, rescale):
    scale = jnp.asarray(scale, cond.dtype)
    guided = uncond + scale * (cond - uncond)
    if rescale is not None:
        ratio = _std(cond) / jnp.maximum(_std(guided), 1e-12)
        rescaled = guided * expand(ratio, guided).astype(guided.dtype)
        guided = rescale * rescaled + (1.0 - rescale) * guided
    if interval is not None:
        lo, hi = interval
        inside = expand((t >= lo) & (t <= hi), guided)
        guided = jnp.where(inside, guided, cond)
    return guided


def classifier_free(cond_fn, uncond_fn, scale, *, interval=None, rescale=None):
    """``model_fn(x, t) = uncond_fn(x, t) + scale * (cond_fn(x, t) - uncond_fn(x, t))``.

    ``interval=(t_lo, t_hi)``: outside it the conditional output is used (no guidance).
    ``rescale=phi``: mix phi of the guided output rescaled to the conditional output's standard
    deviation (per example) with 1 - phi of the plain guided output.
    """
    def model_fn(x, t):
        return _combine(cond_fn(x, t), uncond_fn(x, t), scale, t, interval, rescale)

    return model_fn


def classifier_free_batched(model_fn, cond, null, scale, *, interval=None, rescale=None):
    """Classifier-free guidance for ``model_fn(x, t, cond)`` with both branches in one batched call.

    ``cond`` has a leading batch axis; ``null`` is the "no condition" value (broadcast to it).
    At scale = 1 (checked at run time, so a traced scale stays traced) only the conditional
    branch runs.
    """
    def pairs(a, b):
        # (B, ...) twice -> (2B, ...) with rows 2i, 2i + 1 from example i: a batch split over
        # devices stays split the same way (a concatenation would move half of it).
        return jnp.stack([a, b], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])

    def guided(x, t):
        nul = jnp.broadcast_to(jnp.asarray(null, jnp.asarray(cond).dtype), jnp.shape(cond))

        def both(_):
            out = model_fn(pairs(x, x), pairs(t, t), pairs(cond, nul))
            out = out.reshape((x.shape[0], 2) + out.shape[1:])
            return _combine(out[:, 0], out[:, 1], scale, t, interval, rescale)

        def cond_only(_):
            return model_fn(x, t, cond)

        return jax.lax.cond(jnp.asarray(scale) == 1, cond_only, both, None)

    return guided


def classifier(model_fn, log_prob_fn, scale, *, schedule, prediction):
    """Classifier guidance: the model's score plus ``scale * grad_x log_prob_fn(x, t)``.

    ``log_prob_fn(x_t, t) -> (B,)`` is log p(y | x_t, t) of a noise-conditional classifier.
    """
    def guided(x, t):
        out = model_fn(x, t)
        score = convert(out, x, t, schedule, source=prediction, target="score")
        grad = jax.grad(lambda y: jnp.sum(log_prob_fn(y, t)))(x)
        score = score + jnp.asarray(scale, score.dtype) * grad.astype(score.dtype)
        return convert(score, x, t, schedule, source="score", target=prediction)

    return guided


def drop_condition(key, cond, p, null):
    """Replaces each example's condition by ``null`` with probability ``p``."""
    cond = jnp.asarray(cond)
    drop = jax.random.bernoulli(key, p, (cond.shape[0],))
    return jnp.where(expand(drop, cond), jnp.asarray(null, cond.dtype), cond)
