"""Flax NNX denoising networks. They know nothing about noise schedules.

Calling convention
------------------
Every model is called as ``model(x, t, cond=None, *, rngs=None) -> out``:

* ``x``: data ``(B, ...)`` (NHWC images for :class:`UNet` / :class:`PatchTransformer`,
  ``(B, dim)`` for :class:`MLP`, integer tokens ``(B, L)`` for :class:`TokenTransformer`).
* ``t``: float conditioning value, shape ``(B,)`` or scalar — normally diffusion time in
  [0, 1] (t=0 data, t=1 noise), but any float (log-SNR, sigma) works with a suitable
  ``time_scale``. Integer arrays are refused.
* ``cond``: optional integer class labels ``(B,)`` in ``[0, num_classes]`` where
  ``num_classes`` (``model.null_class``) is the null class ("no condition", for
  classifier-free guidance); ``cond=None`` on a class-conditional model means the null
  class, and passing ``cond`` to an unconditional model is an error.
* ``t2`` (keyword, :class:`MLP`, :class:`UNet`, :class:`PatchTransformer` built with
  ``second_time=True`` only): a second float conditioning value embedded like ``t`` and
  added to the conditioning vector (MeanFlow's interval ``t - r``); off by default.
* ``rngs``: a PRNG key (or ``nnx.Rngs``) for dropout. Models hold no RNG state — their
  state is parameters only (plus the fixed Fourier kernel when ``time_embedding="fourier"``)
  — so a model in training mode with dropout > 0 needs ``rngs`` on every call.
  ``model.train()`` / ``model.eval()`` (or ``nnx.view(model, deterministic=...)``) switch
  dropout on and off; Flax's default (fresh modules) is training mode.

All output layers are zero-initialised: every model returns exactly 0 at initialisation
(uniform logits for :class:`TokenTransformer`).

For pure-function training use ``graphdef, params = nnx.split(model)`` and
``nnx.merge(graphdef, params)(x, t, cond, rngs=key)`` inside ``jax.jit`` / ``jax.grad``.

Dtype policy
------------
Every model takes ``dtype`` (compute dtype, e.g. ``jnp.bfloat16``; default float32) and
``param_dtype`` (default float32):

* parameters are stored in ``param_dtype`` (keep float32; optimisers and EMA work on them);
* activations — convolutions, attention projections, MLPs, the residual stream — run in
  ``dtype``;
* always float32, whatever ``dtype``: time features and the time / class embedding MLP,
  adaLN modulation vectors, normalisation statistics (LayerNorm / GroupNorm statistics are
  computed in float32 by Flax; transformer LayerNorms also return float32), the attention
  softmax, and the output head (final norm + projection), so predictions and logits are
  float32.

Accounting: :func:`count_params` and :func:`flops_per_example` (XLA cost analysis of the
compiled forward or train step, for MFU).

Joint image + label network (``diffjax.joint``): :class:`JointUNet` is called as
``model(x, labels, t, t_label, *, rngs=None) -> (out, logits)``, a :class:`UNet` with the
label tokens (``num_classes`` = unknown) as its class input, ``t_label`` as its second time and
a head giving ``(B, num_classes)`` label logits.

Evaluation network (not a denoiser, outside the calling convention above):
:class:`InceptionV3` (:mod:`diffjax.models.inception`), the FID Inception trunk, images in
``[0, 1]`` -> 2048-d pool3 features, with :func:`load_inception` reading user-supplied
weights (none are shipped).
"""

from diffjax.models import embeddings, inception
from diffjax.models.embeddings import (
    AdaLNModulation,
    ClassEmbedding,
    Conditioning,
    GaussianFourierFeatures,
    TimeEmbedding,
    fourier_features,
    modulate,
    sinusoidal_embedding,
)
from diffjax.models.inception import InceptionV3, load_inception
from diffjax.models.mlp import MLP
from diffjax.models.transformer import DiTBackbone, PatchTransformer, TokenTransformer
from diffjax.models.unet import JointUNet, UNet
from diffjax.models.utils import count_params, flops_per_example

__all__ = [
    "MLP",
    "UNet",
    "JointUNet",
    "TokenTransformer",
    "PatchTransformer",
    "DiTBackbone",
    "embeddings",
    "inception",
    "InceptionV3",
    "load_inception",
    "AdaLNModulation",
    "ClassEmbedding",
    "Conditioning",
    "GaussianFourierFeatures",
    "TimeEmbedding",
    "fourier_features",
    "modulate",
    "sinusoidal_embedding",
    "count_params",
    "flops_per_example",
]
