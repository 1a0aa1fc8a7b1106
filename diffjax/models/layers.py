"""Shared building blocks: multi-head self-attention (optionally rotary), GroupNorm, dropout
keys, the self-conditioning input check."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["Attention", "GroupNorm", "LOGICAL_AXES", "axes", "group_norm", "apply_rope",
           "dropout_rngs", "num_groups", "concrete_range", "self_condition_input"]


def __dir__():
    return sorted(__all__)


LOGICAL_AXES = "logical_axes"
"""Name of the parameter metadata that holds a parameter's logical axis names: one name (or
None) per dimension, e.g. ``("embed", "mlp")`` for an MLP's first kernel. Models only name
their axes; the training layer maps names to mesh axes
(``diffjax.training.sharding.LOGICAL_RULES``: ``"heads"`` and ``"mlp"`` to the ``model``
axis) and replicates parameters without names."""


def axes(*names: str | None) -> dict:
    """``kernel_metadata=`` / ``bias_metadata=`` for Flax layers: the logical axis names of a
    parameter, one per dimension."""
    return {LOGICAL_AXES: tuple(names)}


def apply_rope(x: jax.Array, positions: jax.Array, *, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding (rotate-half form) of ``x`` with shape ``(B, L, H, Dh)``.

    Angles are computed in float32 and the result is cast back to ``x.dtype``.
    """
    dh = x.shape[-1]
    if dh % 2:
        raise ValueError(f"rotary positions need an even head dimension; got {dh}.")
    half = dh // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    ang = positions.astype(jnp.float32)[:, None] * freqs[None, :]  # (L, half)
    cos, sin = jnp.cos(ang)[None, :, None, :], jnp.sin(ang)[None, :, None, :]
    xf = x.astype(jnp.float32)
    x1, x2 = xf[..., :half], xf[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.astype(x.dtype)


class Attention(nnx.Module):
    """Multi-head self-attention over ``(B, L, D)``: bidirectional, or with ``causal=True``
    position i attends to positions ``<= i`` only.

    Projections run in the compute ``dtype``; the softmax runs in float32 inside
    ``jax.nn.dot_product_attention``. ``zero_init_out`` zero-initialises the output
    projection (residual branches that start as identity).

    The kernels keep the head axis: ``qkv.kernel`` is ``(D, 3, heads, D/heads)`` and
    ``out.kernel`` is ``(heads, D/heads, D)``, annotated with the logical axes ``"embed"``,
    ``"heads"`` and ``"head_dim"`` (see :data:`LOGICAL_AXES`), so a ``model`` mesh axis can
    split whole heads (Megatron-style: column-parallel ``qkv``, row-parallel ``out``).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        rope: bool = False,
        zero_init_out: bool = False,
        causal: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if heads < 1 or dim % heads:
            raise ValueError(f"heads must be >= 1 and divide dim={dim}; got heads={heads}.")
        if rope and (dim // heads) % 2:
            raise ValueError(
                f"rotary positions need an even head dimension; dim={dim}, heads={heads} "
                f"gives {dim // heads}."
            )
        self.dim, self.heads, self.rope, self.causal = dim, heads, rope, bool(causal)
        dh = dim // heads
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # fan-in = D for both, as for a (D, 3D) / (D, D) dense kernel.
        self.qkv = nnx.Einsum(
            "bld,dthk->blthk", (dim, 3, heads, dh), (3, heads, dh),
            kernel_init=nnx.initializers.lecun_normal(in_axis=0, out_axis=(1, 2, 3)),
            kernel_metadata=axes("embed", None, "heads", "head_dim"),
            bias_metadata=axes(None, "heads", "head_dim"), **kw)
        out_init = (
            nnx.initializers.zeros_init() if zero_init_out
            else nnx.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
        )
        self.out = nnx.Einsum("blhk,hkd->bld", (heads, dh, dim), (dim,), kernel_init=out_init,
                              kernel_metadata=axes("heads", "head_dim", "embed"),
                              bias_metadata=axes("embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        length = x.shape[1]
        qkv = self.qkv(x)  # (B, L, 3, heads, D/heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rope:
            pos = jnp.arange(length)
            q, k = apply_rope(q, pos), apply_rope(k, pos)
        return self.out(jax.nn.dot_product_attention(q, k, v, is_causal=self.causal))


def _group_mean(v, groups):
    """Mean of ``v`` (B, N, C) over N and each group of C // groups channels, broadcast back to
    (B, 1, C). Reducing over N first (a contiguous, vectorised per-channel sum) and then over
    the channels of a group vectorises better than one reduction over both."""
    b, n, c = v.shape
    per_channel = jnp.sum(v, axis=1).reshape(b, groups, c // groups)
    per_group = jnp.sum(per_channel, axis=-1, keepdims=True) / (n * (c // groups))
    return jnp.broadcast_to(per_group, per_channel.shape).reshape(b, 1, c)


def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int, *,
               eps: float = 1e-6) -> jax.Array:
    """Group normalisation of ``x`` (B, ..., C) over its non-batch axes in ``groups`` channel
    groups, then ``* scale + bias`` (shape (C,)). Runs in float32 (the result too; callers
    cast to their compute dtype). The statistics are per-channel sums over positions, then
    sums over each group's channels, and the normalisation is one per-(example, channel)
    affine map ``x * a + b``: the same numbers as ``nnx.GroupNorm`` (to float32 rounding),
    with fewer passes over ``x`` than ``(x - mean) * rsqrt(var + eps) * scale + bias``, forward
    and backward."""
    c = x.shape[-1]
    if x.ndim < 2 or c % groups:
        raise ValueError(f"group_norm needs x of shape (B, ..., C) with C divisible by "
                         f"groups={groups}; got {x.shape}.")
    x3 = x.astype(jnp.float32).reshape(x.shape[0], -1, c)
    mean = _group_mean(x3, groups)
    var = jnp.maximum(_group_mean(jnp.square(x3), groups) - jnp.square(mean), 0.0)
    a = jax.lax.rsqrt(var + eps) * scale  # (B, 1, C): one multiply-add per element
    return (x3 * a + (bias - mean * a)).reshape(x.shape)


class GroupNorm(nnx.Module):
    """GroupNorm over the channels-last axis with learned ``scale`` and ``bias`` (the
    parameter names and initialisation of ``nnx.GroupNorm``); see `group_norm`. Output in
    ``dtype``."""

    def __init__(self, num_features: int, *, num_groups: int, epsilon: float = 1e-6,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        del rngs
        if num_features % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide num_features={num_features}.")
        self.num_groups, self.epsilon, self.dtype = num_groups, epsilon, dtype
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        scale, bias = (v[...].astype(jnp.float32) for v in (self.scale, self.bias))
        y = group_norm(x, scale, bias, self.num_groups, eps=self.epsilon)
        return y.astype(self.dtype)


def dropout_rngs(module: nnx.Module, rngs) -> nnx.Rngs | None:
    """Turns the ``rngs`` argument of a model call into an ``nnx.Rngs`` for its dropouts.

    ``rngs`` may be a PRNG key, an ``nnx.Rngs`` or None. Models keep no RNG state of their
    own (their state is parameters only, which keeps EMA, checkpoints and sharding simple),
    so a model in training mode with active dropout needs a key for every call.
    """
    if isinstance(rngs, nnx.Rngs):
        return rngs
    if rngs is not None:
        return nnx.Rngs(dropout=rngs)
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Dropout) and node.rate > 0 and not node.deterministic:
            raise ValueError(
                f"{type(module).__name__} is in training mode with dropout rate {node.rate} "
                "and needs a PRNG key: call it with rngs=key, or call model.eval() "
                "(or use nnx.view(model, deterministic=True)) for inference."
            )
    return None


def num_groups(channels: int, max_groups: int = 32) -> int:
    """GroupNorm group count as in DDPM++: ``min(channels // 4, 32)``, lowered until it
    divides ``channels`` (at least 1)."""
    g = max(1, min(channels // 4, max_groups))
    while channels % g:
        g -= 1
    return g


def concrete_range(a) -> tuple[int, int] | None:
    """``(min, max)`` of an integer array whose values are known now, else None (traced).

    Used to validate labels and token ids eagerly; under ``jit`` the values are unknown
    and the check is skipped (out-of-range ids then give NaN embeddings, never silence).
    """
    if isinstance(a, jax.core.Tracer) or a.size == 0:
        return None
    a = np.asarray(a)
    return int(a.min()), int(a.max())


def self_condition_input(module: nnx.Module, x_self_cond, shape, what: str = "the shape of x"):
    """The self-conditioning input of a model call, checked.

    A model built with ``self_condition=True`` (``module.self_condition``) gets ``x_self_cond``
    as a float array of ``shape`` (``None``: zeros, float32); a model without it gets None back,
    and a ``x_self_cond`` given to it raises. ``what`` describes ``shape`` in the messages.

    Raises:
      ValueError: naming ``x_self_cond``: given to a model without self-conditioning, of another
        shape, or not floating-point.
    """
    if not getattr(module, "self_condition", False):
        if x_self_cond is not None:
            raise ValueError(f"x_self_cond was given but this {type(module).__name__} was built with "
                             f"self_condition=False; build it with self_condition=True.")
        return None
    shape = tuple(int(d) for d in shape)
    if x_self_cond is None:
        return jnp.zeros(shape, jnp.float32)
    x_self_cond = jnp.asarray(x_self_cond)
    if x_self_cond.shape != shape:
        raise ValueError(f"x_self_cond must have shape {shape} ({what}); got {x_self_cond.shape}.")
    if not jnp.issubdtype(x_self_cond.dtype, jnp.floating):
        raise ValueError(f"x_self_cond must be floating-point; got dtype {x_self_cond.dtype}.")
    return x_self_cond
