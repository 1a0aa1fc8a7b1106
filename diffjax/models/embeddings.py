"""Conditioning embeddings: time features, class labels with a null class, adaLN helpers.

Time features are always computed in float32, whatever the model's compute dtype: in
bfloat16 the values 0.999 and 1.0 are the same number, so casting ``t`` early would make a
model blind to the last steps of a noise schedule. Models know nothing about schedules;
``t`` is any float conditioning value (usually diffusion time in [0, 1], t=0 data, t=1
noise, but a log-SNR or a sigma works as well with a suitable ``scale``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models.layers import concrete_range

__all__ = [
    "sinusoidal_embedding",
    "fourier_features",
    "FourierKernel",
    "GaussianFourierFeatures",
    "TimeEmbedding",
    "ClassEmbedding",
    "Conditioning",
    "AdaLNModulation",
    "modulate",
    "as_time",
    "TIME_EMBEDDINGS",
]


def __dir__():
    return sorted(__all__)


TIME_EMBEDDINGS = ("sinusoidal", "fourier")
"""The ``time_embedding=`` names: fixed sinusoidal features, or Gaussian Fourier features."""


def as_time(t, batch: int) -> jax.Array:
    """Validates ``t`` and returns it as a float32 array of shape ``(batch,)``.

    ``t`` may be a Python number, a scalar array, or an array of shape ``(batch,)``/``(1,)``.
    Integer arrays are refused: models take continuous time, not step indices.
    """
    if isinstance(t, (bool, np.bool_)):
        raise ValueError(f"t must be a float (diffusion time in [0, 1]); got bool {t!r}.")
    if not isinstance(t, (int, float)):
        dtype = jnp.result_type(t)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"t must be a floating-point array (continuous time, e.g. in [0, 1]); got dtype "
                f"{dtype}. Convert step indices to times first (t = step / num_steps)."
            )
    t = jnp.asarray(t, jnp.float32)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, batch)):
        raise ValueError(
            f"t must be a scalar or have shape ({batch},) to match the batch; got shape {t.shape}."
        )
    return jnp.broadcast_to(t.reshape(-1) if t.ndim else t, (batch,))


def sinusoidal_embedding(
    t: jax.Array, dim: int, *, max_period: float = 10000.0, scale: float = 1000.0
) -> jax.Array:
    """Transformer-style sinusoidal features of ``scale * t``; float32, shape ``(B, dim)``.

    Frequencies are geometric from 1 down to ``1 / max_period`` (DDPM / "Attention is all
    you need"). ``scale=1000`` maps t in [0, 1] onto the DDPM step range, so the fastest
    feature turns by one radian per 1/1000 of the time axis and t near 0 and near 1 stay
    distinguishable. Layout: ``[sin(..), cos(..)]`` (a zero column is appended for odd dim).
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2 for a sinusoidal embedding; got {dim}.")
    t = jnp.asarray(t, jnp.float32).reshape(-1)
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (jnp.float32(scale) * t)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def fourier_features(t: jax.Array, w: jax.Array) -> jax.Array:
    """Random Fourier features ``[sin(2 pi t w), cos(2 pi t w)]``; float32, shape (B, 2 len(w))."""
    t = jnp.asarray(t, jnp.float32).reshape(-1)
    args = 2.0 * jnp.pi * t[:, None] * jnp.asarray(w, jnp.float32)[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class FourierKernel(nnx.Variable):
    """A fixed (non-trainable) random projection; not an ``nnx.Param``, so optimisers built
    with ``wrt=nnx.Param`` leave it alone, while checkpoints of the full state keep it."""


class GaussianFourierFeatures(nnx.Module):
    """Gaussian Fourier features of Song et al. (NCSN++): fixed ``w ~ N(0, scale^2)``.

    ``scale=16`` is the published value for log-sigma inputs; for t in [0, 1] it gives
    frequencies up to roughly a hundred cycles over the time axis.
    """

    def __init__(self, dim: int, *, scale: float = 16.0, rngs: nnx.Rngs):
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even number >= 2 for Fourier features; got {dim}.")
        self.dim = dim
        self.w = FourierKernel(
            scale * jax.random.normal(rngs.params(), (dim // 2,), jnp.float32)
        )

    def __call__(self, t: jax.Array) -> jax.Array:
        return fourier_features(t, self.w[...])


class TimeEmbedding(nnx.Module):
    """Time features followed by a two-layer SiLU MLP, all in float32: ``(B,) -> (B, out_dim)``.

    Args:
      out_dim: width of the returned embedding.
      freq_dim: number of sinusoidal / Fourier features fed to the MLP (default ``out_dim``,
        rounded up to even).
      kind: ``"sinusoidal"`` (DDPM) or ``"fourier"`` (Gaussian Fourier features, NCSN++).
      scale: ``scale`` of :func:`sinusoidal_embedding` (default 1000) or the standard
        deviation of the Fourier frequencies (default 16).
    """

    def __init__(
        self,
        out_dim: int,
        *,
        freq_dim: int | None = None,
        kind: str = "sinusoidal",
        scale: float | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if kind not in TIME_EMBEDDINGS:
            raise ValueError(f"time_embedding must be one of {TIME_EMBEDDINGS}; got {kind!r}.")
        freq_dim = freq_dim or out_dim
        freq_dim += freq_dim % 2
        self.kind = kind
        self.freq_dim = freq_dim
        if kind == "sinusoidal":
            self.scale = 1000.0 if scale is None else float(scale)
            self.fourier = None
        else:
            self.scale = 16.0 if scale is None else float(scale)
            self.fourier = GaussianFourierFeatures(freq_dim, scale=self.scale, rngs=rngs)
        kw = dict(dtype=jnp.float32, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = nnx.Linear(freq_dim, out_dim, **kw)
        self.fc2 = nnx.Linear(out_dim, out_dim, **kw)

    def features(self, t: jax.Array) -> jax.Array:
        """The raw (pre-MLP) float32 features of ``t``."""
        if self.fourier is None:
            return sinusoidal_embedding(t, self.freq_dim, scale=self.scale)
        return self.fourier(t)

    def __call__(self, t: jax.Array) -> jax.Array:
        h = self.fc1(self.features(t))
        return self.fc2(jax.nn.silu(h))


class ClassEmbedding(nnx.Module):
    """Class-label embedding with a null class: labels ``0..num_classes-1`` are classes and
    ``num_classes`` (``self.null_class``) means "no condition" (classifier-free guidance)."""

    def __init__(self, num_classes: int, dim: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int or None; got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.null_class = int(num_classes)
        self.embed = nnx.Embed(
            num_classes + 1, dim, dtype=jnp.float32, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, labels: jax.Array | None, batch: int) -> jax.Array:
        """Float32 embeddings ``(batch, dim)``; ``labels=None`` gives the null class."""
        if labels is None:
            labels = jnp.full((batch,), self.null_class, jnp.int32)
        labels = jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(f"cond must be integer class labels; got dtype {labels.dtype}.")
        if labels.shape != (batch,):
            raise ValueError(f"cond must have shape ({batch},); got {labels.shape}.")
        rng = concrete_range(labels)
        if rng is not None:
            lo, hi = rng
            if lo < 0 or hi > self.null_class:
                raise ValueError(
                    f"cond labels must lie in [0, {self.num_classes}] ({self.null_class} = null "
                    f"class); got values in [{lo}, {hi}]."
                )
        return self.embed(labels)


class Conditioning(nnx.Module):
    """The conditioning vector every model uses: time embedding (+ class embedding), float32.

    ``__call__(t, cond, batch, t2=None) -> (batch, dim)``. With ``num_classes=None`` passing a
    ``cond`` is an error; with classes, ``cond=None`` means the null class.

    ``second_time=True`` adds a second time input ``t2`` (any float, shape ``(B,)`` or
    scalar) with its own embedding MLP, added to the vector (MeanFlow's interval length
    ``t - r``, say; the model does not know what it means). ``t2=None`` is ``t2 = 0``. Off
    by default: without it the module and its parameters are exactly as before, and passing
    ``t2`` is an error.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_classes: int | None = None,
        time_embedding: str = "sinusoidal",
        time_scale: float | None = None,
        freq_dim: int | None = None,
        second_time: bool = False,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dim = dim
        self.time = TimeEmbedding(
            dim, freq_dim=freq_dim, kind=time_embedding, scale=time_scale,
            param_dtype=param_dtype, rngs=rngs,
        )
        self.time2 = (
            TimeEmbedding(dim, freq_dim=freq_dim, kind=time_embedding, scale=time_scale,
                          param_dtype=param_dtype, rngs=rngs)
            if second_time else None
        )
        self.num_classes = num_classes
        self.classes = (
            None if num_classes is None
            else ClassEmbedding(num_classes, dim, param_dtype=param_dtype, rngs=rngs)
        )

    @property
    def null_class(self) -> int | None:
        return None if self.classes is None else self.classes.null_class

    @property
    def second_time(self) -> bool:
        return self.time2 is not None

    def __call__(self, t, cond, batch: int, t2=None) -> jax.Array:
        if self.classes is None and cond is not None:
            raise ValueError(
                "cond was given but the model was built with num_classes=None; "
                "build it with num_classes=K for class conditioning."
            )
        if self.time2 is None and t2 is not None:
            raise ValueError(
                "t2 was given but the model was built with second_time=False; build it with "
                "second_time=True for a second time input."
            )
        c = self.time(as_time(t, batch))
        if self.time2 is not None:
            c = c + self.time2(as_time(0.0 if t2 is None else t2, batch))
        return c if self.classes is None else c + self.classes(cond, batch)


class AdaLNModulation(nnx.Module):
    """adaLN(-Zero) modulation: ``SiLU -> Linear`` from the conditioning vector to
    ``num_chunks`` vectors of width ``dim`` (shift / scale / gate ...), float32.

    The projection is zero-initialised (adaLN-Zero, Peebles & Xie 2023), so at init every
    shift, scale and gate is 0: modulated blocks start as identity / pass-through.
    """

    def __init__(
        self, cond_dim: int, dim: int, num_chunks: int, *, param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num_chunks = num_chunks
        self.proj = nnx.Linear(
            cond_dim, num_chunks * dim, dtype=jnp.float32, param_dtype=param_dtype,
            kernel_init=nnx.initializers.zeros_init(), rngs=rngs,
        )

    def __call__(self, c: jax.Array) -> tuple[jax.Array, ...]:
        out = self.proj(jax.nn.silu(c.astype(jnp.float32)))
        return tuple(jnp.split(out, self.num_chunks, axis=-1))


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """``x * (1 + scale) + shift`` with ``shift, scale`` of shape ``(B, D)`` broadcast over
    the middle axes of ``x`` (``(B, ..., D)``)."""
    expand = (slice(None),) + (None,) * (x.ndim - 2) + (slice(None),)
    return x * (1.0 + scale[expand]) + shift[expand]
