"""Residual MLP denoiser for low-dimensional data (2-D toy sets, flattened small images)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.models.embeddings import (
    AdaLNModulation, Conditioning, FourierKernel, modulate,
)
from diffjax.models.layers import dropout_rngs, self_condition_input

__all__ = ["MLP", "MLPBlock"]


def __dir__():
    return sorted(__all__)


def _layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Parameter-free float32 LayerNorm; the affine part comes from adaLN.
    return nnx.LayerNorm(
        dim, epsilon=1e-6, use_scale=False, use_bias=False, dtype=jnp.float32, rngs=rngs
    )


class MLPBlock(nnx.Module):
    """``x + gate * W2 dropout(SiLU(W1 modulate(LN(x), shift, scale)))`` with adaLN-Zero
    shift / scale / gate from the conditioning vector (so the block is identity at init)."""

    def __init__(
        self, hidden: int, cond_dim: int, *, mlp_ratio: float = 2.0, dropout: float = 0.0,
        dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs,
    ):
        inner = int(hidden * mlp_ratio)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.norm = _layer_norm(hidden, rngs)
        self.ada = AdaLNModulation(cond_dim, hidden, 3, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = nnx.Linear(hidden, inner, **kw)
        self.fc2 = nnx.Linear(inner, hidden, **kw)
        self.drop = nnx.Dropout(dropout)

    def __call__(self, x, c, rngs=None):
        shift, scale, gate = self.ada(c)
        h = modulate(self.norm(x), shift, scale).astype(self.dtype)
        h = self.fc2(self.drop(jax.nn.silu(self.fc1(h)), rngs=rngs))
        return x + (gate * h).astype(x.dtype)


class MLP(nnx.Module):
    """Time- (and optionally class-) conditional residual MLP: ``model(x, t, cond=None) -> out``
    with ``out.shape == x.shape``, float32 (``model(x, t, cond, x_self_cond=...)`` when built
    with ``self_condition=True``).

    ``x`` has shape ``(B, dim)`` or ``(B, *S)`` with ``prod(S) == dim`` (flattened and
    reshaped back). ``t`` is float, shape ``(B,)`` or scalar (diffusion time, t=0 data).
    ``cond`` holds integer labels in ``[0, num_classes]``; ``num_classes`` (or ``cond=None``)
    is the null class. The output projection is zero-initialised: the model outputs exactly
    0 at init.

    Args:
      dim: data dimension.
      hidden: residual-stream width.
      depth: number of residual blocks.
      time_embed_dim: width of the time/class conditioning vector.
      num_classes: number of classes for class conditioning, or None.
      mlp_ratio: inner width of each block relative to ``hidden``.
      dropout: dropout rate inside blocks (active in ``train()`` mode; needs ``rngs=key``).
      time_embedding: ``"sinusoidal"`` or ``"fourier"``; ``time_scale`` its scale.
      input_fourier_features: ``F > 0`` feeds ``[x, sin(2 pi x B), cos(2 pi x B)]`` to the
        input projection instead of ``x`` alone, with a fixed (non-trainable) random
        ``B ~ N(0, input_fourier_scale^2)`` of shape ``(dim, F)`` (random Fourier features,
        Tancik et al. 2020): sharp, position-dependent functions of low-dimensional inputs
        (the checkerboard's square edges) that a plain MLP on ``x`` fits only slowly. ``0``
        (the default): ``x`` alone, the module and its parameters as without the option.
      input_fourier_scale: standard deviation of ``B``, in cycles per unit of ``x``.
      second_time: a second float input ``model(x, t, cond, t2=...)`` embedded like ``t``
        and added to the conditioning vector (off by default; see
        :class:`diffjax.models.embeddings.Conditioning`).
      self_condition: self-conditioning (Chen et al. 2022; off by default): the model also
        takes ``x_self_cond``, its own previous estimate of the clean data (the shape of
        ``x``; ``None`` means zeros), appended to the input projection's features (after the
        Fourier features, if any).
      dtype: compute dtype; ``param_dtype``: parameter dtype (see ``diffjax.models``).
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 256,
        depth: int = 3,
        time_embed_dim: int = 128,
        num_classes: int | None = None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        time_embedding: str = "sinusoidal",
        time_scale: float | None = None,
        second_time: bool = False,
        input_fourier_features: int = 0,
        input_fourier_scale: float = 1.0,
        self_condition: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        for name, v in (("dim", dim), ("hidden", hidden), ("depth", depth),
                        ("time_embed_dim", time_embed_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}.")
        if not isinstance(input_fourier_features, int) or input_fourier_features < 0:
            raise ValueError(f"input_fourier_features must be a non-negative int; got "
                             f"{input_fourier_features!r}.")
        if not input_fourier_scale > 0.0:
            raise ValueError(f"input_fourier_scale must be > 0; got {input_fourier_scale!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
        if not isinstance(self_condition, bool):
            raise ValueError(f"self_condition must be True or False; got {self_condition!r}.")
        self.dim, self.dtype = dim, dtype
        self.self_condition = self_condition
        self.cond = Conditioning(
            time_embed_dim, num_classes=num_classes, time_embedding=time_embedding,
            time_scale=time_scale, second_time=second_time, param_dtype=param_dtype, rngs=rngs,
        )
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.input_fourier = (
            FourierKernel(input_fourier_scale * jax.random.normal(
                rngs.params(), (dim, input_fourier_features), jnp.float32))
            if input_fourier_features else None
        )
        self.proj_in = nnx.Linear(dim * (2 if self_condition else 1) + 2 * input_fourier_features,
                                  hidden, **kw)
        self.blocks = nnx.List([
            MLPBlock(hidden, time_embed_dim, mlp_ratio=mlp_ratio, dropout=dropout, **kw)
            for _ in range(depth)
        ])
        self.norm_out = _layer_norm(hidden, rngs)
        self.ada_out = AdaLNModulation(time_embed_dim, hidden, 2, param_dtype=param_dtype,
                                       rngs=rngs)
        self.proj_out = nnx.Linear(
            hidden, dim, dtype=jnp.float32, param_dtype=param_dtype,
            kernel_init=nnx.initializers.zeros_init(), rngs=rngs,
        )

    @property
    def num_classes(self) -> int | None:
        return self.cond.num_classes

    @property
    def null_class(self) -> int | None:
        return self.cond.null_class

    def __call__(self, x, t, cond=None, *, t2=None, x_self_cond=None, rngs=None) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.dim:
            raise ValueError(
                f"x must have shape (B, {self.dim}) or (B, ...) with {self.dim} features per "
                f"example; got {x.shape}."
            )
        sc = self_condition_input(self, x_self_cond, x.shape)
        rngs = dropout_rngs(self, rngs)
        b = x.shape[0]
        c = self.cond(t, cond, b, t2)
        h = x.reshape(b, self.dim)
        if self.input_fourier is not None:
            args = 2.0 * jnp.pi * h.astype(jnp.float32) @ self.input_fourier[...]
            h = jnp.concatenate([h.astype(jnp.float32), jnp.sin(args), jnp.cos(args)], axis=-1)
        if sc is not None:
            h = jnp.concatenate([h, sc.reshape(b, self.dim).astype(h.dtype)], axis=-1)
        h = self.proj_in(h)
        for block in self.blocks:
            h = block(h, c, rngs)
        shift, scale = self.ada_out(c)
        out = self.proj_out(modulate(self.norm_out(h), shift, scale))
        return out.reshape(x.shape)
