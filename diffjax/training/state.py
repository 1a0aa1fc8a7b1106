"""The train state: an immutable pytree of everything a bit-exact resume needs.

Flax NNX models are split once, outside jit::

    graphdef, params, rest = split_model(model)          # params: nnx.State of nnx.Param
    state = create_train_state(params, optimizer, rng=0)

and the loss function merges them back inside the step (``nnx.merge(graphdef, params,
rest)``). The graph definition and non-trainable state (``rest``: e.g. RNG counters of
dropout layers, which the train step does not update) stay outside the train state; dropout
and noise randomness come from the per-step key handed to the loss function instead.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Union

import jax
import jax.numpy as jnp
import optax
from flax import nnx

__all__ = ["TrainState", "create_train_state", "split_model", "as_raw_key"]


def __dir__():
    return sorted(__all__)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Train state pytree.

    Attributes:
      step: int32 scalar, number of train steps taken (skipped ones included).
      params: the trainable parameters (any pytree; typically an ``nnx.State``).
      opt_state: the optax optimizer state for ``params``.
      ema_params: exponential moving average of ``params`` (same structure and dtype).
      rng: uint32 raw PRNG key data, fixed for the run; step ``t`` uses
        ``jax.random.fold_in(rng, t)``, so randomness depends on the step only.
      skipped: int32 scalar, number of steps whose update was skipped as non-finite.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array
    skipped: jax.Array

    def replace(self, **changes) -> "TrainState":
        return dataclasses.replace(self, **changes)


def as_raw_key(rng: Union[int, jax.Array]) -> jax.Array:
    """A uint32 raw key from an int seed, a raw key, or a typed ``jax.random.key``.

    Raw key data is stored (not typed keys) so checkpoints hold plain uint32 arrays.
    """
    if isinstance(rng, int):
        return jax.random.key_data(jax.random.key(rng))
    rng = jnp.asarray(rng)
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng)
    if rng.dtype != jnp.uint32:
        raise ValueError(f"rng must be an int seed, a typed key or uint32 key data, got dtype "
                         f"{rng.dtype}")
    return rng


def create_train_state(params: Any, optimizer: optax.GradientTransformation,
                       rng: Union[int, jax.Array]) -> TrainState:
    """A fresh state at step 0: ``opt_state = optimizer.init(params)``, ``ema = params``.

    Params and EMA are fresh copies (distinct buffers), so the state can be donated to the
    train step without deleting the caller's ``params``.
    """
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=jax.tree.map(jnp.copy, params),
        opt_state=optimizer.init(params),
        ema_params=jax.tree.map(jnp.copy, params),
        rng=as_raw_key(rng),
        skipped=jnp.zeros((), jnp.int32),
    )


def split_model(model: nnx.Module, wrt: Any = nnx.Param):
    """``nnx.split(model, wrt, ...)`` -> ``(graphdef, params, rest)``.

    ``params`` holds the variables selected by ``wrt`` (trainable parameters); ``rest``
    everything else. Rebuild with ``nnx.merge(graphdef, params, rest)``.
    """
    graphdef, params, rest = nnx.split(model, wrt, ...)
    return graphdef, params, rest
