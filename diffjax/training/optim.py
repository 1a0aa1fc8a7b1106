"""Optimizer and EMA: AdamW, linear warmup + cosine decay, global-norm clipping.

Configured from a small mapping (a dict or an `ml_collections.ConfigDict`)::

    learning_rate   peak learning rate (required)
    total_steps     length of the schedule, warmup included (required)
    warmup_steps    linear warmup from 0 to the peak (default 0)
    end_lr_ratio    final learning rate / peak (default 0.0)
    weight_decay    decoupled AdamW weight decay (default 0.0)
    decay_all       decay every array (True) or only arrays with ndim >= 2, i.e. not biases
                    and normalisation scales (default False)
    b1, b2, eps     Adam moments (defaults 0.9, 0.999, 1e-8)
    grad_clip       global-norm clipping threshold; None or 0 disables (default 1.0)

EMA of the parameters uses the warmup ``decay_t = min(decay, (1 + t) / (10 + t))`` so early
averages are not dominated by the random initialisation.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

__all__ = ["make_schedule", "make_optimizer", "ema_decay_at", "ema_update"]


def __dir__():
    return sorted(__all__)


_DEFAULTS = dict(warmup_steps=0, end_lr_ratio=0.0, weight_decay=0.0, decay_all=False,
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0)
_REQUIRED = ("learning_rate", "total_steps")


def _read(config: Any) -> dict:
    if hasattr(config, "to_dict"):  # ml_collections.ConfigDict
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a dict or ConfigDict, got {type(config).__name__}")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise ValueError(f"optimizer config is missing {missing}; required keys: {list(_REQUIRED)}")
    out = dict(_DEFAULTS)
    out.update({k: config[k] for k in config if k in _DEFAULTS or k in _REQUIRED})
    if not out["learning_rate"] > 0:
        raise ValueError(f"learning_rate must be > 0, got {out['learning_rate']!r}")
    if not (isinstance(out["total_steps"], int) and out["total_steps"] >= 1):
        raise ValueError(f"total_steps must be an int >= 1, got {out['total_steps']!r}")
    if not (isinstance(out["warmup_steps"], int) and 0 <= out["warmup_steps"] <= out["total_steps"]):
        raise ValueError(f"warmup_steps must be an int in [0, total_steps={out['total_steps']}], "
                         f"got {out['warmup_steps']!r}")
    if not 0.0 <= out["end_lr_ratio"] <= 1.0:
        raise ValueError(f"end_lr_ratio must be in [0, 1], got {out['end_lr_ratio']!r}")
    if out["weight_decay"] < 0:
        raise ValueError(f"weight_decay must be >= 0, got {out['weight_decay']!r}")
    if out["grad_clip"] is not None and out["grad_clip"] < 0:
        raise ValueError(f"grad_clip must be None or >= 0, got {out['grad_clip']!r}")
    return out


def make_schedule(config: Any) -> optax.Schedule:
    """Learning rate as a function of the number of applied updates.

    Linear 0 -> ``learning_rate`` over ``warmup_steps``, then cosine down to
    ``end_lr_ratio * learning_rate`` at ``total_steps``, constant afterwards.
    """
    c = _read(config)
    peak, warm, total = float(c["learning_rate"]), c["warmup_steps"], c["total_steps"]
    end = peak * float(c["end_lr_ratio"])

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        warmup = peak * count / max(warm, 1)
        frac = jnp.clip((count - warm) / max(total - warm, 1), 0.0, 1.0)
        cosine = end + 0.5 * (peak - end) * (1.0 + jnp.cos(jnp.pi * frac))
        return jnp.where(count < warm, warmup, cosine)

    return schedule


def _decay_mask(params):
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def make_optimizer(config: Any) -> optax.GradientTransformation:
    """``clip_by_global_norm -> adamw(schedule)`` from ``config`` (see the module docstring)."""
    c = _read(config)
    adamw = optax.adamw(make_schedule(c), b1=c["b1"], b2=c["b2"], eps=c["eps"],
                        weight_decay=c["weight_decay"],
                        mask=None if c["decay_all"] else _decay_mask)
    if c["grad_clip"]:
        return optax.chain(optax.clip_by_global_norm(float(c["grad_clip"])), adamw)
    return adamw


def ema_decay_at(step, decay: float, warmup: bool = True) -> jax.Array:
    """EMA decay at ``step`` (0-based): ``min(decay, (1 + step) / (10 + step))`` with warmup."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema decay must be in [0, 1], got {decay!r}")
    decay = jnp.float32(decay)
    if not warmup:
        return decay
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Any, params: Any, decay) -> Any:
    """``decay * ema + (1 - decay) * params``, leafwise, in each leaf's dtype."""
    return jax.tree.map(lambda e, p: (e + (1.0 - decay) * (p - e)).astype(e.dtype), ema, params)
