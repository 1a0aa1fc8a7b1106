"""Model accounting: parameter counts and XLA-measured FLOPs for MFU reporting."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["count_params", "flops_per_example"]


def __dir__():
    return sorted(__all__)


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param`` leaves). Works on abstract models from
    ``nnx.eval_shape`` too, so large configs can be counted without allocating them."""
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def _default_input_dtype(model):
    from diffjax.models.transformer import TokenTransformer

    return jnp.int32 if isinstance(model, TokenTransformer) else jnp.float32


def flops_per_example(
    model: nnx.Module,
    input_shape: tuple[int, ...],
    *,
    input_dtype=None,
    conditional: bool | None = None,
    train: bool = False,
) -> float:
    """FLOPs per example of the model's forward pass (or a full train step's
    forward + backward with ``train=True``), from XLA's cost analysis of the compiled
    function on the current default backend.

    ``input_shape`` includes the batch axis, e.g. ``(8, 32, 32, 3)`` or ``(8, 256)`` for
    tokens; FLOPs are divided by the batch size. Nothing is executed (inputs are abstract).
    Dropout is off. ``conditional`` (default: whether the model has classes) feeds class
    labels. ``train=True`` differentiates a squared-output loss with respect to all
    ``nnx.Param`` leaves; its count is close to 3x the forward one. The numbers are XLA's
    (elementwise work included), so use them for MFU on the same backend.
    """
    if len(input_shape) < 2:
        raise ValueError(f"input_shape must include the batch axis; got {input_shape}.")
    batch = int(input_shape[0])
    input_dtype = input_dtype or _default_input_dtype(model)
    if conditional is None:
        conditional = getattr(model, "num_classes", None) is not None
    eval_model = nnx.view(model, deterministic=True, raise_if_not_found=False)
    graphdef, params, rest = nnx.split(eval_model, nnx.Param, ...)

    def forward(params, x, t, cond):
        m = nnx.merge(graphdef, params, rest)
        return m(x, t, cond)

    def loss(params, x, t, cond):
        return jnp.mean(jnp.square(forward(params, x, t, cond)))

    fn = jax.grad(loss) if train else forward
    args = (
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params),
        jax.ShapeDtypeStruct(tuple(input_shape), input_dtype),
        jax.ShapeDtypeStruct((batch,), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.int32) if conditional else None,
    )
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
        cost = cost[0]
    flops = cost.get("flops") if cost else None
    if flops is None or flops < 0:
        raise ValueError("the backend's cost analysis reports no FLOP count for this model.")
    return float(flops) / batch
