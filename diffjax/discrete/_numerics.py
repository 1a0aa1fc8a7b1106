"""Small numerical helpers shared by the discrete-diffusion modules.

Precision policy (mixed precision, bf16/fp16 models): every probability computation
(log-softmax, posteriors, losses, sampling) runs in ``compute_dtype(x.dtype)``, i.e. at least
float32; float64 stays float64. Masked ("impossible") logits use ``mask_value(dtype)``, a
finite constant chosen per dtype so that ``exp`` of it is exactly 0 while sums and differences
of a few of them stay finite (no ``-inf - -inf = NaN``).
"""
from __future__ import annotations

import jax.numpy as jnp


def default_float():
    """float64 when ``jax_enable_x64`` is on, float32 otherwise."""
    return jnp.result_type(float)


def as_float(t, dtype=None):
    """``t`` as a floating array (integers and Python scalars become the default float)."""
    t = jnp.asarray(t)
    if dtype is not None:
        return t.astype(dtype)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(default_float())
    return t


def compute_dtype(dtype):
    """The dtype probability math runs in: ``dtype`` promoted to at least float32."""
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(default_float())
    return jnp.promote_types(dtype, jnp.float32)


def mask_value(dtype):
    """A large negative *finite* logit for ``dtype``: ``exp(mask_value) == 0`` and a sum of four
    of them is still finite. float16: -16376, bfloat16/float32: about -8.5e37, float64: -4.5e307."""
    return jnp.asarray(jnp.finfo(dtype).min / 4, dtype)


def log1mexp(x):
    """log(1 - exp(x)) for x <= 0, accurate everywhere (Maechler 2012)."""
    x = jnp.asarray(x)
    return jnp.where(x > -0.6931471805599453, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def batch_shape_time(t, ndim):
    """Reshape a time of shape () or (B,) so that it broadcasts against an array of rank ``ndim``
    whose leading axis is the batch."""
    t = jnp.asarray(t)
    if t.ndim == 0:
        return t
    if t.ndim != 1:
        raise ValueError(f"t must be a scalar or have shape (B,), got shape {t.shape}")
    return t.reshape(t.shape + (1,) * (ndim - 1))
