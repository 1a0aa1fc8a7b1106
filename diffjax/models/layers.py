"""Shared building blocks: multi-head self-attention (optionally rotary), dropout keys."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["Attention", "apply_rope", "dropout_rngs", "num_groups", "concrete_range"]


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
    """Bidirectional multi-head self-attention over ``(B, L, D)``.

    Projections run in the compute ``dtype``; the softmax runs in float32 inside
    ``jax.nn.dot_product_attention``. ``zero_init_out`` zero-initialises the output
    projection (residual branches that start as identity).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        rope: bool = False,
        zero_init_out: bool = False,
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
        self.dim, self.heads, self.rope = dim, heads, rope
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, **kw)
        out_init = (
            nnx.initializers.zeros_init() if zero_init_out else nnx.initializers.lecun_normal()
        )
        self.out = nnx.Linear(dim, dim, kernel_init=out_init, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, length, _ = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.heads, self.dim // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rope:
            pos = jnp.arange(length)
            q, k = apply_rope(q, pos), apply_rope(k, pos)
        o = jax.nn.dot_product_attention(q, k, v)
        return self.out(o.reshape(b, length, self.dim))


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
