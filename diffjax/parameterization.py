"""The forward process and conversions between prediction kinds.

    x_t = alpha x0 + sigma eps

Prediction kinds (what a network outputs given x_t and t):

* ``"x0"``    the clean data estimate E[x0 | x_t]
* ``"eps"``   the noise estimate E[eps | x_t]
* ``"v"``     ``alpha * eps - sigma * x0`` (Salimans & Ho 2022)
* ``"score"`` ``grad log p_t(x_t) = -eps / sigma``
* ``"flow"``  the probability-flow velocity ``d x_t / dt = alpha' x0 + sigma' eps``

Given x_t, every kind is an affine function of every other, so ``convert`` is exact (and
classifier-free guidance, an affine combination of outputs, means the same thing in every kind).
Conversions go through the pair (x0, eps) using the closed-form inverse of each kind's 2x2 linear
system, which stays finite wherever the kind determines x0: e.g. ``flow`` and ``v`` at
alpha = 0 (rectified flow at t = 1). ``eps`` and ``score`` carry no information about x0 where
alpha = 0, and their conversion to x0 is undefined there.
"""
from __future__ import annotations

import jax.numpy as jnp

__all__ = ["KINDS", "add_noise", "convert", "to_x0_eps", "from_x0_eps", "check_kind", "expand"]


def __dir__():
    return sorted(__all__)


KINDS = ("x0", "eps", "v", "score", "flow")
"""The prediction kinds, described above."""


def check_kind(kind, arg="prediction"):
    """Returns ``kind`` if it is one of ``KINDS``; else a ValueError naming ``arg`` and the kinds."""
    if kind not in KINDS:
        raise ValueError(f"{arg} must be one of {list(KINDS)}, got {kind!r}")
    return kind


def expand(c, x):
    """Broadcast a per-example coefficient (shape (), (B,) or (B, 1, ...)) against x of shape (B, ...)."""
    c = jnp.asarray(c)
    if c.ndim == 0 or c.ndim == x.ndim:
        return c
    if c.ndim == 1:
        return c.reshape(c.shape + (1,) * (x.ndim - 1))
    raise ValueError(f"t must be a scalar or have shape (batch,) = ({x.shape[0]},), got shape {c.shape}")


def add_noise(x0, eps, t, schedule):
    """x_t = alpha(t) x0 + sigma(t) eps."""
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.promote_types(x0.dtype, jnp.float32))
    a, s = expand(schedule.alpha(t), x0), expand(schedule.sigma(t), x0)
    return (a * x0 + s * eps).astype(x0.dtype)


def _coeffs(kind, x, t, schedule):
    """alpha, sigma (and their derivatives if kind == 'flow'), broadcast against x, in float32+."""
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    t = jnp.asarray(t, dtype)
    if kind == "flow":
        a, s, da, ds = schedule.coefficients(t)
        return tuple(expand(c, x) for c in (a, s, da, ds))
    return expand(schedule.alpha(t), x), expand(schedule.sigma(t), x), None, None


def to_x0_eps(out, x_t, t, schedule, kind):
    """(x0, eps) implied by a prediction ``out`` of the given kind at (x_t, t)."""
    check_kind(kind, "source")
    if kind == "x0" or kind == "eps":
        a, s, _, _ = _coeffs(kind, x_t, t, schedule)
    else:
        a, s, da, ds = _coeffs(kind, x_t, t, schedule)
    if kind == "x0":
        x0 = out
        eps = (x_t - a * x0) / s
    elif kind == "eps":
        eps = out
        x0 = (x_t - s * eps) / a
    elif kind == "score":
        eps = -s * out
        x0 = (x_t - s * eps) / a
    elif kind == "v":
        # [a  s; -s a] [x0; eps] = [x_t; v]
        det = a * a + s * s
        x0 = (a * x_t - s * out) / det
        eps = (s * x_t + a * out) / det
    else:  # flow: [a s; da ds] [x0; eps] = [x_t; flow]
        det = a * ds - s * da
        x0 = (ds * x_t - s * out) / det
        eps = (a * out - da * x_t) / det
    return x0, eps


def from_x0_eps(x0, eps, x_t, t, schedule, kind):
    """The prediction of the given kind that corresponds to (x0, eps)."""
    check_kind(kind, "target")
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    a, s, da, ds = _coeffs(kind, x_t, t, schedule)
    if kind == "v":
        return a * eps - s * x0
    if kind == "score":
        return -eps / s
    return da * x0 + ds * eps


def convert(out, x_t, t, schedule, *, source, target):
    """Convert a prediction of kind ``source`` into kind ``target`` (exact, affine in ``out``)."""
    check_kind(source, "source")
    check_kind(target, "target")
    if out.shape != x_t.shape:
        raise ValueError(f"out must have the shape of x_t {x_t.shape}, got {out.shape}")
    if source == target:
        return out
    x0, eps = to_x0_eps(out, x_t, t, schedule, source)
    return from_x0_eps(x0, eps, x_t, t, schedule, target).astype(out.dtype)
