"""Bidirectional Transformers with adaLN-Zero time / class modulation (DiT, Peebles & Xie 2023).

One backbone (:class:`DiTBackbone`), two front ends:

* :class:`TokenTransformer` — integer tokens ``(B, L)`` -> logits ``(B, L, vocab_size)``
  for discrete (masked / multinomial) diffusion. The input vocabulary has
  ``num_extra_tokens`` more ids than the output (the mask token ``vocab_size``), and no
  logits are produced for them.
* :class:`PatchTransformer` — images ``(B, H, W, C)`` -> same shape (DiT).

Attention is full (every position sees every other), or causal in a
``TokenTransformer(causal=True)`` (autoregression as fixed-order masked diffusion).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models.embeddings import AdaLNModulation, Conditioning, modulate
from diffjax.models.layers import Attention, axes, concrete_range, dropout_rngs, self_condition_input

__all__ = [
    "DiTBlock", "FinalLayer", "DiTBackbone", "TokenTransformer", "PatchTransformer",
    "sincos_2d", "patchify", "unpatchify",
]


def __dir__():
    return sorted(__all__)


def _layer_norm(dim: int, rngs) -> nnx.LayerNorm:
    # Parameter-free LayerNorm computed in float32 (the affine part comes from adaLN).
    return nnx.LayerNorm(
        dim, epsilon=1e-6, use_scale=False, use_bias=False, dtype=jnp.float32, rngs=rngs
    )


class DiTBlock(nnx.Module):
    """Pre-LN Transformer block with adaLN-Zero: for each of attention and MLP,
    ``x + gate * f(modulate(LN(x), shift, scale))`` with shift / scale / gate projected
    from the conditioning vector by a zero-initialised layer (identity at init)."""

    def __init__(
        self, dim: int, heads: int, cond_dim: int, *, mlp_ratio: float = 4.0,
        dropout: float = 0.0, rope: bool = False, causal: bool = False, dtype=jnp.float32,
        param_dtype=jnp.float32, rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.norm1 = _layer_norm(dim, rngs)
        self.attn = Attention(dim, heads, rope=rope, causal=causal, **kw)
        self.norm2 = _layer_norm(dim, rngs)
        hidden = int(dim * mlp_ratio)
        # Column-parallel fc1, row-parallel fc2 over a `model` mesh axis ("mlp").
        self.fc1 = nnx.Linear(dim, hidden, kernel_metadata=axes("embed", "mlp"),
                              bias_metadata=axes("mlp"), **kw)
        self.fc2 = nnx.Linear(hidden, dim, kernel_metadata=axes("mlp", "embed"),
                              bias_metadata=axes("embed"), **kw)
        self.ada = AdaLNModulation(cond_dim, dim, 6, param_dtype=param_dtype, rngs=rngs)
        self.drop = nnx.Dropout(dropout)

    def __call__(self, x, c, rngs=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)
        h = modulate(self.norm1(x), shift1, scale1).astype(self.dtype)
        h = self.drop(self.attn(h), rngs=rngs)
        x = x + (gate1[:, None] * h).astype(x.dtype)
        h = modulate(self.norm2(x), shift2, scale2).astype(self.dtype)
        h = self.fc2(self.drop(jax.nn.gelu(self.fc1(h), approximate=True), rngs=rngs))
        return x + (gate2[:, None] * h).astype(x.dtype)


class FinalLayer(nnx.Module):
    """``Linear(modulate(LN(x), shift, scale))`` in float32, zero-initialised (output 0 at
    init)."""

    def __init__(self, dim: int, cond_dim: int, out_dim: int, *, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.norm = _layer_norm(dim, rngs)
        self.ada = AdaLNModulation(cond_dim, dim, 2, param_dtype=param_dtype, rngs=rngs)
        self.proj = nnx.Linear(
            dim, out_dim, dtype=jnp.float32, param_dtype=param_dtype,
            kernel_init=nnx.initializers.zeros_init(), rngs=rngs,
        )

    def __call__(self, x, c):
        shift, scale = self.ada(c)
        return self.proj(modulate(self.norm(x), shift, scale))


class DiTBackbone(nnx.Module):
    """Conditioning vector + ``depth`` :class:`DiTBlock` + :class:`FinalLayer`:
    ``(x (B, L, dim), t, cond) -> (B, L, out_dim)`` float32."""

    def __init__(
        self, dim: int, depth: int, heads: int, out_dim: int, *, mlp_ratio: float = 4.0,
        dropout: float = 0.0, rope: bool = False, num_classes: int | None = None,
        cond_dim: int | None = None, time_embedding: str = "sinusoidal",
        time_scale: float | None = None, second_time: bool = False, causal: bool = False,
        dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs,
    ):
        for name, v in (("dim", dim), ("depth", depth), ("heads", heads)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}.")
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
        cond_dim = cond_dim or dim
        self.cond = Conditioning(
            cond_dim, num_classes=num_classes, time_embedding=time_embedding,
            time_scale=time_scale, freq_dim=256, second_time=second_time,
            param_dtype=param_dtype, rngs=rngs,
        )
        self.blocks = nnx.List([
            DiTBlock(dim, heads, cond_dim, mlp_ratio=mlp_ratio, dropout=dropout, rope=rope,
                     causal=causal, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for _ in range(depth)
        ])
        self.final = FinalLayer(dim, cond_dim, out_dim, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, t, cond, rngs=None, t2=None):
        c = self.cond(t, cond, x.shape[0], t2)
        for block in self.blocks:
            x = block(x, c, rngs)
        return self.final(x, c)


_POSITIONS_TOKENS = ("rope", "learned")
_POSITIONS_PATCHES = ("sincos", "learned")


def _check_positions(positions, allowed):
    if positions not in allowed:
        raise ValueError(f"positions must be one of {allowed}; got {positions!r}.")


class _ConditionalMixin:
    @property
    def num_classes(self) -> int | None:
        return self.backbone.cond.num_classes

    @property
    def null_class(self) -> int | None:
        return self.backbone.cond.null_class


class TokenTransformer(_ConditionalMixin, nnx.Module):
    """Bidirectional adaLN-Zero Transformer over tokens: ``model(tokens, t, cond=None) ->
    logits`` of shape ``(B, L, vocab_size)``, float32.

    ``tokens`` are ints in ``[0, vocab_size + num_extra_tokens)``, shape ``(B, L)`` with
    ``L <= seq_len``; id ``vocab_size`` is the mask token of the masked process. Logits are
    only produced for the ``vocab_size`` real tokens (the process applies SUBS /
    carry-over). The output layer is zero-initialised: uniform predictions at init.

    ``causal=True`` makes it an autoregressive model in masked-diffusion form, for the masked
    process with ``order="left_to_right"``: the tokens are shifted right by one (position 0
    reads the mask id as a start token), attention is causal and the time is ignored
    (``t`` is replaced by 0: under the fixed order the state is implied by the position).
    The logits at position k are then a function of ``tokens[:, :k]`` only, the same in every
    state whose first k tokens agree, so one call on a whole sequence scores every position
    (``process.nll(..., causal=True)``). Needs ``num_extra_tokens >= 1``.

    ``self_condition=True`` (self-conditioning, Strudel et al. 2022; Chen et al. 2022) adds an
    input ``model(tokens, t, cond, x_self_cond=...)``: the model's previous predicted
    distribution over the vocabulary, probabilities of shape ``(B, L, vocab_size)`` (``None``
    means zeros), projected by a zero-initialised ``Linear(vocab_size -> dim)`` and added to the
    token embeddings. The projection is built last, so the other parameters are those of the
    model without the option (same ``rngs``), and at initialisation the output does not depend
    on ``x_self_cond``.

    Args:
      vocab_size: number of real tokens (output classes).
      num_extra_tokens: extra input-only ids (default 1: the mask token).
      seq_len: maximum sequence length.
      dim, depth, heads, mlp_ratio: Transformer width, blocks, heads, MLP expansion.
      dropout: dropout on the attention and MLP branches (``train()`` mode only).
      num_classes: class conditioning with null class ``num_classes`` (or ``cond=None``).
      cond_dim: width of the time / class vector feeding adaLN (default ``dim`` as in DiT;
        MDLM uses 128, which removes most of the modulation parameters).
      positions: ``"rope"`` (rotary, default) or ``"learned"`` absolute embeddings.
      time_embedding, time_scale: see :class:`diffjax.models.embeddings.TimeEmbedding`.
      causal: the autoregressive variant above (default False: bidirectional).
      self_condition: the self-conditioning input above (default False).
      dtype: compute dtype; ``param_dtype``: parameter dtype (see ``diffjax.models``).
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        num_extra_tokens: int = 1,
        seq_len: int,
        dim: int = 256,
        depth: int = 6,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        num_classes: int | None = None,
        cond_dim: int | None = None,
        positions: str = "rope",
        time_embedding: str = "sinusoidal",
        time_scale: float | None = None,
        causal: bool = False,
        self_condition: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if not isinstance(self_condition, bool):
            raise ValueError(f"self_condition must be True or False; got {self_condition!r}.")
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an int >= 2; got {vocab_size!r}.")
        if not isinstance(num_extra_tokens, int) or num_extra_tokens < 0:
            raise ValueError(f"num_extra_tokens must be an int >= 0; got {num_extra_tokens!r}.")
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive int; got {seq_len!r}.")
        _check_positions(positions, _POSITIONS_TOKENS)
        if causal and self_condition:
            raise ValueError("causal=True and self_condition=True cannot be combined: an autoregressive "
                             "model is scored in one pass on the whole sequence, where a previous "
                             "prediction would show it the tokens it predicts.")
        if causal and num_extra_tokens < 1:
            raise ValueError("causal=True needs num_extra_tokens >= 1 (the mask id is the start "
                             f"token); got num_extra_tokens={num_extra_tokens}.")
        self.causal = bool(causal)
        self.vocab_size, self.num_extra_tokens, self.seq_len = (
            vocab_size, num_extra_tokens, seq_len)
        self.positions, self.dtype = positions, dtype
        self.embed = nnx.Embed(
            vocab_size + num_extra_tokens, dim, dtype=dtype, param_dtype=param_dtype,
            embedding_init=nnx.initializers.normal(0.02), rngs=rngs,
        )
        self.pos = (
            nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (seq_len, dim), param_dtype))
            if positions == "learned" else None
        )
        self.backbone = DiTBackbone(
            dim, depth, heads, vocab_size, mlp_ratio=mlp_ratio, dropout=dropout,
            rope=positions == "rope", num_classes=num_classes, cond_dim=cond_dim,
            time_embedding=time_embedding, time_scale=time_scale, causal=self.causal,
            dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )
        # built last: the other parameters are those of the model without self-conditioning
        self.self_condition = self_condition
        self.self_cond_proj = (
            nnx.Linear(vocab_size, dim, kernel_init=nnx.initializers.zeros_init(), dtype=dtype,
                       param_dtype=param_dtype, rngs=rngs)
            if self_condition else None
        )

    @property
    def mask_id(self) -> int | None:
        """The first extra token id (``vocab_size``), the mask token; None without extra
        tokens (uniform / multinomial diffusion)."""
        return self.vocab_size if self.num_extra_tokens else None

    def __call__(self, tokens, t, cond=None, *, x_self_cond=None, rngs=None) -> jax.Array:
        tokens = jnp.asarray(tokens)
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be integer ids; got dtype {tokens.dtype}.")
        if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= self.seq_len:
            raise ValueError(
                f"tokens must have shape (B, L) with 1 <= L <= seq_len={self.seq_len}; "
                f"got {tokens.shape}."
            )
        rng = concrete_range(tokens)
        n_ids = self.vocab_size + self.num_extra_tokens
        if rng is not None:
            lo, hi = rng
            if lo < 0 or hi >= n_ids:
                raise ValueError(
                    f"tokens must lie in [0, {n_ids - 1}] (vocab_size={self.vocab_size} plus "
                    f"{self.num_extra_tokens} extra); got values in [{lo}, {hi}]."
                )
        sc = self_condition_input(self, x_self_cond, tokens.shape + (self.vocab_size,),
                                  "(B, L, vocab_size): probabilities over the vocabulary")
        rngs = dropout_rngs(self, rngs)
        if self.causal:  # position k reads token k - 1; time is implied by the position
            start = jnp.full_like(tokens[:, :1], self.vocab_size)
            tokens = jnp.concatenate([start, tokens[:, :-1]], axis=1)
            t = jnp.zeros_like(jnp.asarray(t, jnp.float32))
        x = self.embed(tokens)
        if sc is not None:
            x = x + self.self_cond_proj(sc.astype(self.dtype))
        if self.pos is not None:
            x = x + self.pos[: tokens.shape[1]].astype(self.dtype)[None]
        return self.backbone(x, t, cond, rngs)


def sincos_2d(dim: int, grid: tuple[int, int]) -> np.ndarray:
    """Fixed 2-D sine-cosine position embedding (MAE / DiT), shape ``(gh * gw, dim)``:
    half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for 2-D sincos positions; got {dim}.")
    gh, gw = grid
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))

    def enc(pos):
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64),
                             indexing="ij")
    return np.concatenate([enc(rows), enc(cols)], axis=1).astype(np.float32)


def patchify(x: jax.Array, p: int) -> jax.Array:
    """``(B, H, W, C) -> (B, (H/p)(W/p), p*p*C)``, patches in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: jax.Array, p: int, size: tuple[int, int], channels: int) -> jax.Array:
    """Inverse of :func:`patchify`: ``(B, N, p*p*C) -> (B, H, W, C)``."""
    b = x.shape[0]
    h, w = size
    x = x.reshape(b, h // p, w // p, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, channels)


class PatchTransformer(_ConditionalMixin, nnx.Module):
    """DiT: ``model(x, t, cond=None) -> out`` on NHWC images, ``out`` of shape
    ``(B, H, W, out_channels)``, float32, zero at init.

    ``x`` is cut into non-overlapping ``patch_size`` squares, linearly embedded, given
    fixed 2-D sincos (default) or learned positions, passed through the adaLN-Zero
    backbone and projected back to patches.

    Args:
      in_channels: channels of ``x``; ``out_channels`` defaults to it.
      image_size: ``H`` or ``(H, W)``, both divisible by ``patch_size``.
      patch_size, dim, depth, heads, mlp_ratio, dropout: as in DiT.
      num_classes: class conditioning with null class ``num_classes`` (or ``cond=None``).
      cond_dim: width of the time / class vector feeding adaLN (default ``dim``).
      positions: ``"sincos"`` or ``"learned"``.
      second_time: a second float input ``model(x, t, cond, t2=...)`` added to the
        conditioning vector (off by default; :class:`diffjax.models.embeddings.Conditioning`).
      dtype: compute dtype; ``param_dtype``: parameter dtype (see ``diffjax.models``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        image_size: int | tuple[int, int],
        patch_size: int = 2,
        dim: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        num_classes: int | None = None,
        cond_dim: int | None = None,
        positions: str = "sincos",
        time_embedding: str = "sinusoidal",
        time_scale: float | None = None,
        second_time: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive int; got {patch_size!r}.")
        if len(size) != 2 or any(s < 1 or s % patch_size for s in size):
            raise ValueError(
                f"image_size={image_size!r} must be (H, W) with H and W divisible by "
                f"patch_size={patch_size}."
            )
        _check_positions(positions, _POSITIONS_PATCHES)
        if positions == "sincos" and dim % 4:
            raise ValueError(f"dim must be divisible by 4 for sincos positions; got {dim}.")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.image_size, self.patch_size, self.dtype = size, patch_size, dtype
        self.grid = (size[0] // patch_size, size[1] // patch_size)
        self.positions = positions
        n = self.grid[0] * self.grid[1]
        p2 = patch_size * patch_size
        self.patch_embed = nnx.Linear(
            p2 * in_channels, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.pos = (
            nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (n, dim), param_dtype))
            if positions == "learned" else None
        )
        self.backbone = DiTBackbone(
            dim, depth, heads, p2 * self.out_channels, mlp_ratio=mlp_ratio, dropout=dropout,
            num_classes=num_classes, cond_dim=cond_dim, time_embedding=time_embedding,
            time_scale=time_scale, second_time=second_time, dtype=dtype,
            param_dtype=param_dtype, rngs=rngs,
        )
        self.dim = dim

    def __call__(self, x, t, cond=None, *, t2=None, rngs=None) -> jax.Array:
        x = jnp.asarray(x)
        want = (*self.image_size, self.in_channels)
        if x.ndim != 4 or x.shape[1:] != want:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, want))}) (NHWC); "
                             f"got {x.shape}.")
        rngs = dropout_rngs(self, rngs)
        h = self.patch_embed(patchify(x, self.patch_size))
        pos = self.pos[...] if self.pos is not None else sincos_2d(self.dim, self.grid)
        h = h + jnp.asarray(pos).astype(self.dtype)[None]
        out = self.backbone(h, t, cond, rngs, t2)
        return unpatchify(out, self.patch_size, self.image_size, self.out_channels)
