"""The network part every objective shares: a Flax NNX model split once into a training
variant (dropout active) and an inference variant, its parameters and its other state, and
the raw forward pass ``apply(params, x, t, cond)``, and the self-conditioning rule both
diffusion objectives train with (`self_condition_two_pass`, `check_self_condition`). The
objectives add what they know of noise (`diffjax.training.objectives.gaussian`,
`diffjax.training.objectives.discrete`)."""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["Network", "masked_mean", "split_train_eval", "self_condition_two_pass", "check_self_condition",
           "SELF_COND_SALT"]


def __dir__():
    return sorted(__all__)


def masked_mean(values: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    """The mean of ``values`` over the rows where ``mask`` is True (all rows without one)."""
    if mask is None:
        return jnp.mean(values)
    w = jnp.asarray(mask).astype(values.dtype)
    return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


SELF_COND_SALT = 0x5C0D
"""What a training key is folded with for the self-conditioning draws, ``jax.random.split(
jax.random.fold_in(key, SELF_COND_SALT))`` -> ``(k_use, k_first)``: the examples that get the
estimate and the first pass's dropout. The objective's other keys are those without the option."""


def check_self_condition(model: nnx.Module, self_condition) -> bool:
    """``self_condition`` checked against the model: a bool, True only for a model built with
    ``self_condition=True`` and False for one built without it (else a ValueError naming
    ``self_condition``)."""
    if not isinstance(self_condition, bool):
        raise ValueError(f"self_condition must be True or False, got {self_condition!r}")
    built = bool(getattr(model, "self_condition", False))
    if self_condition and not built:
        raise ValueError(f"self_condition=True needs a model built with self_condition=True (models.UNet, "
                         f"models.MLP, models.TokenTransformer take it); {type(model).__name__} was not")
    if built and not self_condition:
        raise ValueError(f"the {type(model).__name__} was built with self_condition=True: pass "
                         f"self_condition=True to the objective too (or build the model without it)")
    return self_condition


def self_condition_two_pass(first, second, estimate, zeros, key=None):
    """The self-conditioned model call (Chen et al. 2022).

    ``first(zeros)`` is the model run with a zero self-conditioning input; its output becomes
    an estimate of the clean data, ``estimate(output)``, taken under ``jax.lax.stop_gradient``
    (no gradient flows through the first pass); the result is ``second(x_self_cond)``. Without
    ``key`` every example gets the estimate (the model as a function of its input alone); with
    ``key`` (training) each example gets it with probability 1/2, independently
    (``jax.random.bernoulli(key, 0.5, (B,))``), and zeros otherwise.

    Args:
      first, second: ``x_self_cond -> model output`` (they may differ in their dropout keys).
      estimate: ``first's output -> the estimate`` (of the shape and dtype of ``zeros``).
      zeros: the zero input, ``(B, ...)``.
      key: None, or the key of the per-example draws.
    """
    est = jax.lax.stop_gradient(estimate(first(zeros))).astype(zeros.dtype)
    if key is not None:
        use = jax.random.bernoulli(key, 0.5, zeros.shape[:1])
        est = jnp.where(use.reshape(use.shape + (1,) * (zeros.ndim - 1)), est, zeros)
    return second(est)


def split_train_eval(model: nnx.Module):
    """``(train_graphdef, eval_graphdef, params, rest)``: the model's graph with dropout active
    and without, its ``nnx.Param`` state and everything else."""
    train_model = nnx.view(model, deterministic=False, raise_if_not_found=False)
    train_graphdef, params, rest = nnx.split(train_model, nnx.Param, ...)
    eval_model = nnx.view(model, deterministic=True, raise_if_not_found=False)
    eval_graphdef, _, _ = nnx.split(eval_model, nnx.Param, ...)
    return train_graphdef, eval_graphdef, params, rest


class Network:
    """The network side shared by the Gaussian and discrete objectives (both frozen
    dataclasses with ``train_graphdef``, ``eval_graphdef``, ``rest`` and ``num_classes``)."""

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def apply(self, params: Any, x: jax.Array, t: jax.Array, cond: Optional[jax.Array] = None,
              *, train: bool = False, rngs: Any = None, t2: Optional[jax.Array] = None,
              x_self_cond: Optional[jax.Array] = None) -> jax.Array:
        """The raw network output ``model(x, t, cond)`` (training variant if ``train``);
        ``t2`` is the second time input of a model built with ``second_time=True``,
        ``x_self_cond`` the self-conditioning input of one built with ``self_condition=True``
        (each passed only when given)."""
        graphdef = self.train_graphdef if train else self.eval_graphdef
        model = nnx.merge(graphdef, params, self.rest)
        kw = {} if t2 is None else {"t2": t2}
        if x_self_cond is not None:
            kw["x_self_cond"] = x_self_cond
        if self.conditional:
            return model(x, t, cond, rngs=rngs, **kw)
        if cond is not None:
            raise ValueError("cond was given but the model has no classes (num_classes=None).")
        return model(x, t, rngs=rngs, **kw)
