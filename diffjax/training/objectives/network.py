"""The network part every objective shares: a Flax NNX model split once into a training
variant (dropout active) and an inference variant, its parameters and its other state, and
the raw forward pass ``apply(params, x, t, cond)``. The objectives add what they know of
noise (`diffjax.training.objectives.gaussian`, `diffjax.training.objectives.discrete`)."""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["Network", "masked_mean", "split_train_eval"]


def __dir__():
    return sorted(__all__)


def masked_mean(values: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    """The mean of ``values`` over the rows where ``mask`` is True (all rows without one)."""
    if mask is None:
        return jnp.mean(values)
    w = jnp.asarray(mask).astype(values.dtype)
    return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


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
              *, train: bool = False, rngs: Any = None, t2: Optional[jax.Array] = None
              ) -> jax.Array:
        """The raw network output ``model(x, t, cond)`` (training variant if ``train``);
        ``t2`` is the second time input of a model built with ``second_time=True``."""
        graphdef = self.train_graphdef if train else self.eval_graphdef
        model = nnx.merge(graphdef, params, self.rest)
        kw = {} if t2 is None else {"t2": t2}
        if self.conditional:
            return model(x, t, cond, rngs=rngs, **kw)
        if cond is not None:
            raise ValueError("cond was given but the model has no classes (num_classes=None).")
        return model(x, t, rngs=rngs, **kw)
