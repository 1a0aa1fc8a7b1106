"""DDPM++-style U-Net (Ho et al. 2020; Song et al. 2021) on NHWC images."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.models.embeddings import Conditioning
from diffjax.models.layers import Attention, GroupNorm, dropout_rngs, num_groups, self_condition_input

__all__ = ["UNet", "JointUNet", "ResBlock", "AttnBlock", "Downsample", "Upsample"]


def __dir__():
    return sorted(__all__)


_ZEROS = nnx.initializers.zeros_init()


def _conv(in_ch: int, out_ch: int, kernel_size, **kw) -> nnx.Conv:
    return nnx.Conv(in_ch, out_ch, kernel_size, **kw)


def _group_norm(channels: int, dtype, param_dtype, rngs) -> GroupNorm:
    # Statistics are computed in float32 whatever `dtype` is.
    return GroupNorm(
        channels, num_groups=num_groups(channels), epsilon=1e-6, dtype=dtype,
        param_dtype=param_dtype, rngs=rngs,
    )


class ResBlock(nnx.Module):
    """GroupNorm -> SiLU -> conv3x3, plus the conditioning vector (added per channel, or as
    ``scale, shift`` after the second GroupNorm when ``scale_shift``), GroupNorm -> SiLU ->
    dropout -> zero-initialised conv3x3; skip connection (1x1 conv when channels change),
    divided by sqrt(2) when ``skip_rescale`` (DDPM++)."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, *, dropout: float = 0.0,
        scale_shift: bool = False, skip_rescale: bool = True, dtype=jnp.float32,
        param_dtype=jnp.float32, rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype, self.scale_shift, self.skip_rescale = dtype, scale_shift, skip_rescale
        self.norm1 = _group_norm(in_ch, **kw)
        self.conv1 = _conv(in_ch, out_ch, (3, 3), **kw)
        self.emb = nnx.Linear(
            emb_dim, out_ch * (2 if scale_shift else 1), dtype=jnp.float32,
            param_dtype=param_dtype, rngs=rngs,
        )
        self.norm2 = _group_norm(out_ch, **kw)
        self.drop = nnx.Dropout(dropout)
        self.conv2 = _conv(out_ch, out_ch, (3, 3), kernel_init=_ZEROS, **kw)
        self.skip = _conv(in_ch, out_ch, (1, 1), **kw) if in_ch != out_ch else None

    def __call__(self, x, emb, rngs=None):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        e = self.emb(jax.nn.silu(emb)).astype(self.dtype)[:, None, None, :]
        if self.scale_shift:
            scale, shift = jnp.split(e, 2, axis=-1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.drop(jax.nn.silu(h), rngs=rngs))
        skip = x if self.skip is None else self.skip(x)
        out = skip + h
        return out / math.sqrt(2.0) if self.skip_rescale else out


class AttnBlock(nnx.Module):
    """GroupNorm -> multi-head self-attention over the H*W positions -> zero-initialised
    output projection, added to the input (divided by sqrt(2) when ``skip_rescale``)."""

    def __init__(
        self, channels: int, *, heads: int = 1, skip_rescale: bool = True, dtype=jnp.float32,
        param_dtype=jnp.float32, rngs: nnx.Rngs,
    ):
        self.skip_rescale = skip_rescale
        self.norm = _group_norm(channels, dtype, param_dtype, rngs)
        self.attn = Attention(
            channels, heads, zero_init_out=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x):
        b, h, w, c = x.shape
        y = self.attn(self.norm(x).reshape(b, h * w, c)).reshape(b, h, w, c)
        out = x + y
        return out / math.sqrt(2.0) if self.skip_rescale else out


class Downsample(nnx.Module):
    """Halves H and W (rounding up): 3x3 stride-2 conv, or 2x2 average pooling."""

    def __init__(self, channels: int, *, with_conv: bool, dtype, param_dtype, rngs):
        self.conv = (
            _conv(channels, channels, (3, 3), strides=(2, 2), dtype=dtype,
                  param_dtype=param_dtype, rngs=rngs)
            if with_conv else None
        )

    def __call__(self, x):
        if self.conv is not None:
            return self.conv(x)
        return nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME", count_include_pad=False)


class Upsample(nnx.Module):
    """Nearest-neighbour upsampling to a target (H, W) (2x, or the skip's odd size), then an
    optional 3x3 conv."""

    def __init__(self, channels: int, *, with_conv: bool, dtype, param_dtype, rngs):
        self.conv = (
            _conv(channels, channels, (3, 3), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            if with_conv else None
        )

    def __call__(self, x, size: tuple[int, int]):
        b, h, w, c = x.shape
        if size == (2 * h, 2 * w):
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        else:
            x = jax.image.resize(x, (b, *size, c), method="nearest")
        return x if self.conv is None else self.conv(x)


class _Stage(nnx.Module):
    """A residual block optionally followed by attention."""

    def __init__(self, res: ResBlock, attn: AttnBlock | None):
        self.res, self.attn = res, attn

    def __call__(self, x, emb, rngs):
        x = self.res(x, emb, rngs)
        return x if self.attn is None else self.attn(x)


def _sizes(image_size: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    sizes = [image_size]
    for _ in range(levels - 1):
        h, w = sizes[-1]
        sizes.append((-(-h // 2), -(-w // 2)))
    return sizes


class UNet(nnx.Module):
    """DDPM++-style U-Net denoiser: ``model(x, t, cond=None) -> out``, NHWC, float32 output of
    shape ``(B, H, W, out_channels)`` (``model(x, t, cond, x_self_cond=...)`` when built with
    ``self_condition=True``).

    Residual blocks (GroupNorm + SiLU, time / class embedding added or as scale-shift,
    dropout, skip rescaling by 1/sqrt(2)), self-attention at the feature-map resolutions in
    ``attn_resolutions`` and in the middle, stride-2 conv (or average-pool) down-sampling,
    nearest + conv up-sampling, skip connections from every down stage, and a zero-
    initialised output conv (the model outputs exactly 0 at init).

    The resolution of level ``i`` is ``image_size / 2**i`` (rounded up; the height is the
    "resolution" compared with ``attn_resolutions``). Examples: 8x8 digits with
    ``ch_mult=(1, 2)``; 28x28 MNIST with ``(1, 2, 2)`` (28 -> 14 -> 7); 32x32 CIFAR-10 with
    ``ch=128, ch_mult=(1, 2, 2, 2), attn_resolutions=(16,)`` (the DDPM cifar10 model).

    Args:
      in_channels: channels of ``x``.
      out_channels: output channels (default ``in_channels``).
      image_size: ``H`` (square) or ``(H, W)``; inputs must have this size.
      ch: base width; level ``i`` has ``ch * ch_mult[i]`` channels.
      ch_mult: width multipliers, one per resolution level.
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attn_resolutions: feature-map heights at which to add self-attention.
      dropout: dropout rate in residual blocks (active in ``train()`` mode only).
      num_classes: number of classes for class conditioning (label ``num_classes`` = null
        class, also used when ``cond=None``), or None.
      resample_with_conv: strided conv / conv after upsampling (True) or pooling / plain
        nearest upsampling (False).
      scale_shift: condition through GroupNorm scale-shift instead of addition.
      skip_rescale: divide residual sums by sqrt(2) (DDPM++).
      attn_heads: attention heads (DDPM uses 1).
      time_embedding: ``"sinusoidal"`` or ``"fourier"``; ``time_scale`` its scale.
      second_time: a second float input ``model(x, t, cond, t2=...)`` embedded like ``t``
        and added to the conditioning vector (off by default; see
        :class:`diffjax.models.embeddings.Conditioning`).
      self_condition: self-conditioning (Chen et al. 2022; off by default): the model also
        takes ``model(x, t, cond, x_self_cond=...)``, its own previous estimate of the clean
        data (the shape of ``x``; ``None`` means zeros), concatenated to the input channels
        (the input conv reads ``2 * in_channels`` channels).
      dtype: compute dtype; ``param_dtype``: parameter dtype (see ``diffjax.models``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        image_size: int | tuple[int, int],
        ch: int = 128,
        ch_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.1,
        num_classes: int | None = None,
        resample_with_conv: bool = True,
        scale_shift: bool = False,
        skip_rescale: bool = True,
        attn_heads: int = 1,
        time_embedding: str = "sinusoidal",
        time_scale: float | None = None,
        second_time: bool = False,
        self_condition: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if not isinstance(self_condition, bool):
            raise ValueError(f"self_condition must be True or False; got {self_condition!r}.")
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size must be an int or (H, W); got {image_size!r}.")
        for name, v in (("in_channels", in_channels), ("ch", ch),
                        ("num_res_blocks", num_res_blocks)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}.")
        ch_mult = tuple(ch_mult)
        if not ch_mult or any(not isinstance(m, int) or m < 1 for m in ch_mult):
            raise ValueError(f"ch_mult must be a non-empty tuple of positive ints; got {ch_mult}.")
        sizes = _sizes(size, len(ch_mult))
        if min(sizes[-1]) < 2:
            raise ValueError(
                f"ch_mult={ch_mult} downsamples image_size={size} to {sizes[-1]}; the lowest "
                f"resolution must stay >= 2, use at most "
                f"{len([s for s in sizes if min(s) >= 2])} levels."
            )
        heights = [s[0] for s in sizes]
        bad = [r for r in attn_resolutions if r not in heights]
        if bad:
            raise ValueError(
                f"attn_resolutions={tuple(attn_resolutions)} contains {bad}, which is not a "
                f"feature-map resolution of this U-Net; available: {heights} (or () for "
                "attention only in the middle block)."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}.")

        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.image_size = size
        self.dtype = dtype
        self.self_condition = self_condition
        emb_dim = 4 * ch
        self.cond = Conditioning(
            emb_dim, num_classes=num_classes, time_embedding=time_embedding,
            time_scale=time_scale, freq_dim=ch, second_time=second_time,
            param_dtype=param_dtype, rngs=rngs,
        )
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        rkw = dict(dropout=dropout, scale_shift=scale_shift, skip_rescale=skip_rescale, **kw)
        akw = dict(heads=attn_heads, skip_rescale=skip_rescale, **kw)

        def stage(cin, cout, height):
            attn = AttnBlock(cout, **akw) if height in attn_resolutions else None
            return _Stage(ResBlock(cin, cout, emb_dim, **rkw), attn)

        self.conv_in = _conv(in_channels * (2 if self_condition else 1), ch, (3, 3), **kw)
        skips, cur = [ch], ch
        down, downsamplers = [], []
        for i, mult in enumerate(ch_mult):
            stages = []
            for _ in range(num_res_blocks):
                stages.append(stage(cur, ch * mult, heights[i]))
                cur = ch * mult
                skips.append(cur)
            down.append(nnx.List(stages))
            if i < len(ch_mult) - 1:
                downsamplers.append(Downsample(cur, with_conv=resample_with_conv, **kw))
                skips.append(cur)
        self.down = nnx.List(down)
        self.downsamplers = nnx.List(downsamplers)

        self.mid_res1 = ResBlock(cur, cur, emb_dim, **rkw)
        self.mid_attn = AttnBlock(cur, **akw)
        self.mid_res2 = ResBlock(cur, cur, emb_dim, **rkw)

        up, upsamplers = [], []
        for i in reversed(range(len(ch_mult))):
            stages = []
            for _ in range(num_res_blocks + 1):
                stages.append(stage(cur + skips.pop(), ch * ch_mult[i], heights[i]))
                cur = ch * ch_mult[i]
            up.append(nnx.List(stages))
            if i > 0:
                upsamplers.append(Upsample(cur, with_conv=resample_with_conv, **kw))
        assert not skips
        self.up = nnx.List(up)
        self.upsamplers = nnx.List(upsamplers)

        # Output head in float32: the model's prediction is always float32.
        self.norm_out = _group_norm(cur, jnp.float32, param_dtype, rngs)
        self.conv_out = _conv(
            cur, self.out_channels, (3, 3), kernel_init=_ZEROS, dtype=jnp.float32,
            param_dtype=param_dtype, rngs=rngs,
        )

    @property
    def num_classes(self) -> int | None:
        return self.cond.num_classes

    @property
    def null_class(self) -> int | None:
        return self.cond.null_class

    def __call__(self, x, t, cond=None, *, t2=None, x_self_cond=None, rngs=None) -> jax.Array:
        return self._forward(x, t, cond, t2, rngs, x_self_cond)[0]

    def _forward(self, x, t, cond, t2, rngs, x_self_cond=None):
        """``(output, the middle block's features (B, h, w, C))``."""
        x = jnp.asarray(x)
        want = (*self.image_size, self.in_channels)
        if x.ndim != 4 or x.shape[1:] != want:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, want))}) (NHWC); "
                             f"got {x.shape}.")
        sc = self_condition_input(self, x_self_cond, x.shape, "the shape of x, NHWC")
        if sc is not None:  # the previous estimate as extra input channels
            x = jnp.concatenate([x.astype(self.dtype), sc.astype(self.dtype)], axis=-1)
        rngs = dropout_rngs(self, rngs)
        emb = self.cond(t, cond, x.shape[0], t2)

        h = self.conv_in(x.astype(self.dtype))
        hs = [h]
        for i, stages in enumerate(self.down):
            for s in stages:
                h = s(h, emb, rngs)
                hs.append(h)
            if i < len(self.downsamplers):
                h = self.downsamplers[i](h)
                hs.append(h)

        h = self.mid_res1(h, emb, rngs)
        h = self.mid_attn(h)
        h = self.mid_res2(h, emb, rngs)
        mid = h

        for i, stages in enumerate(self.up):
            for s in stages:
                h = s(jnp.concatenate([h, hs.pop()], axis=-1), emb, rngs)
            if i < len(self.upsamplers):
                h = self.upsamplers[i](h, hs[-1].shape[1:3])
        return self.conv_out(jax.nn.silu(self.norm_out(h))), mid


class JointUNet(UNet):
    """A :class:`UNet` over an image and a class label that also predicts the label:
    ``model(x, labels, t, t_label, *, rngs=None) -> (out, logits)``.

    ``labels`` are integer tokens ``(B,)`` in ``[0, num_classes]``, where ``num_classes``
    (``model.mask_token``) means "label unknown"; they enter as the U-Net's class embedding and
    ``t_label`` (float, ``(B,)`` or scalar) as its second time input, both added to the
    conditioning vector of every residual block. ``out`` is the U-Net's output for ``x`` at
    ``t`` (float32, the shape of ``x`` with ``out_channels``); ``logits`` (float32,
    ``(B, num_classes)``) come from a head on the middle block: GroupNorm -> SiLU -> mean over
    the positions -> zero-initialised linear layer (uniform logits at initialisation). The
    model knows nothing of noise: the times are just two more inputs.

    Args: those of :class:`UNet` (``num_classes`` required, ``second_time`` set), with
    ``num_classes`` the number of classes.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, *, num_classes: int,
                 param_dtype=jnp.float32, rngs: nnx.Rngs, **kwargs):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2; got {num_classes!r}.")
        if "second_time" in kwargs:
            raise ValueError("JointUNet always takes t_label as its second time; do not pass second_time.")
        if kwargs.get("self_condition", False):
            raise ValueError("JointUNet has no self-conditioning; do not pass self_condition=True.")
        super().__init__(in_channels, out_channels, num_classes=num_classes, second_time=True,
                         param_dtype=param_dtype, rngs=rngs, **kwargs)
        width = self.mid_res2.conv2.out_features
        self.head_norm = _group_norm(width, jnp.float32, param_dtype, rngs)
        self.head = nnx.Linear(width, num_classes, kernel_init=_ZEROS, dtype=jnp.float32,
                               param_dtype=param_dtype, rngs=rngs)

    @property
    def mask_token(self) -> int:
        """The label token meaning "unknown" (``num_classes``, the class embedding's null class)."""
        return self.null_class

    def __call__(self, x, labels, t, t_label, *, rngs=None):
        labels = jnp.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != jnp.shape(x)[0]:
            raise ValueError(f"labels must have shape (B,) = ({jnp.shape(x)[0]},); got {labels.shape}.")
        out, mid = self._forward(x, t, labels, t_label, rngs)
        pooled = jnp.mean(jax.nn.silu(self.head_norm(mid.astype(jnp.float32))), axis=(1, 2))
        return out, self.head(pooled)
