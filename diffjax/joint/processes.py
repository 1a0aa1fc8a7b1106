"""The product of forward processes: one process per modality, all with the shared interface.

``product(gaussian(schedule), masked(10))`` noises an (image, label) pair with a Gaussian process
on the image and a masked process on the label, each with its own time. A state, a time and a
model output are tuples with one entry per part, in the order of ``parts``:

* ``x0``, ``x_t``: ``(x_image (B, H, W, C) float, label (B,) int)`` for the example above;
* ``t``: one time per part, ``(t_image, t_label)`` (each a scalar or shape (B,)), or one array
  shared by every part;
* ``model_fn(xs, ts) -> outs``: ``xs`` and ``ts`` tuples as above (every ``ts[i]`` of shape
  (B,)); ``outs[i]`` is what part i's own model returns: a Gaussian part's prediction (of its
  ``prediction`` kind, the shape of ``xs[i]``), a discrete part's logits
  (``xs[i].shape + (vocab_size,)``).

The parts are independent given ``x0``, so every quantity of the product is the parts'
quantities put together:

* ``alpha(t)``, ``sample_marginal(key, x0, t)`` and ``posterior(x_t, x0, s, t)``: the parts'
  own, as a tuple (part i gets the i-th key of ``jax.random.split(key, len(parts))``).
* ``log_marginal(x_t, x0, t)``: ``log q(x_t | x0)`` per example, the sum of the parts' log
  densities (Gaussian: ``N(x_t; alpha x0, sigma^2 I)``; discrete: the token log-probabilities).
* ``nelbo(model_fn, x0, key)``: the continuous-time bound of the joint model along the shared
  time path (every part at the same t). The reverse step of the product factorises over the
  parts given the whole state, so its KL, and the bound, is the sum of the parts' terms, each
  evaluated with the joint model: part i's own ``nelbo`` is called with the model
  ``x_i -> model_fn(xs, (t, ..., t))[i]``, the other parts of ``xs`` drawn from their marginals
  at the same t. One model call per part; an unbiased estimate of the bound, in nats per
  example.
"""
from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from diffjax.discrete.processes import DiscreteProcess
from diffjax.gaussian import GaussianProcess
from diffjax.parameterization import expand

__all__ = ["ProductProcess", "product"]

PART_TYPES = (GaussianProcess, DiscreteProcess)


def __dir__():
    return sorted(__all__)


class ProductProcess(eqx.Module):
    """Independent forward processes, one per modality (see the module docstring). Build it
    with :func:`product`.

    Attributes:
      parts: a tuple of ``GaussianProcess`` and ``diffjax.discrete`` processes.
    """

    parts: tuple

    def __check_init__(self):
        if not isinstance(self.parts, tuple) or len(self.parts) < 1:
            raise ValueError(f"parts must be a non-empty tuple of processes, got {self.parts!r}")
        for i, p in enumerate(self.parts):
            if not isinstance(p, PART_TYPES):
                raise ValueError(f"parts[{i}] must be a diffjax.gaussian(...) or diffjax.discrete process, "
                                 f"got {type(p).__name__}")

    @property
    def num_parts(self) -> int:
        """The number of modalities."""
        return len(self.parts)

    def is_gaussian(self, i: int) -> bool:
        """True if part ``i`` is a Gaussian process (else it is discrete)."""
        return isinstance(self.parts[i], GaussianProcess)

    # --- checks ------------------------------------------------------------------------------
    def split(self, value, name: str) -> tuple:
        """``value`` as a tuple with one entry per part: a tuple or list of that length, else a
        ValueError naming ``name``."""
        if not isinstance(value, (tuple, list)) or len(value) != self.num_parts:
            raise ValueError(f"{name} must be a tuple with one entry per part ({self.num_parts}), "
                             f"got {type(value).__name__}"
                             + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""))
        return tuple(value)

    def times(self, t) -> tuple:
        """``t`` as one time per part: a tuple or list of per-part times, or one time (a scalar
        or an array of shape (B,)) shared by every part."""
        if isinstance(t, (tuple, list)):
            return self.split(t, "t")
        return (t,) * self.num_parts

    # --- the shared interface ------------------------------------------------------------------
    def alpha(self, t) -> tuple:
        """The parts' ``alpha`` at their times."""
        return tuple(p.alpha(ti) for p, ti in zip(self.parts, self.times(t)))

    def sample_marginal(self, key, x0, t) -> tuple:
        """One draw of ``x_t ~ q(x_t | x0)``: part i draws with the i-th key of
        ``jax.random.split(key, num_parts)`` at its own time."""
        x0 = self.split(x0, "x0")
        keys = jax.random.split(key, self.num_parts)
        return tuple(p.sample_marginal(k, x, ti) for p, k, x, ti in zip(self.parts, keys, x0, self.times(t)))

    def posterior(self, x_t, x0, s, t) -> tuple:
        """The parts' exact posteriors ``q(x_s | x_t, x0)``: ``(mean, std)`` for a Gaussian part,
        log-probabilities over the states for a discrete part."""
        x_t, x0 = self.split(x_t, "x_t"), self.split(x0, "x0")
        return tuple(p.posterior(a, b, si, ti)
                     for p, a, b, si, ti in zip(self.parts, x_t, x0, self.times(s), self.times(t)))

    def log_marginal(self, x_t, x0, t):
        """``log q(x_t | x0)`` per example (shape (B,), at least float32): the sum over the parts
        of their log densities (Gaussian, over every value) or log-probabilities (discrete, over
        every token)."""
        x_t, x0 = self.split(x_t, "x_t"), self.split(x0, "x0")
        total = 0.0
        for p, xt, x, ti in zip(self.parts, x_t, x0, self.times(t)):
            total = total + _part_log_marginal(p, jnp.asarray(xt), jnp.asarray(x), ti)
        return total

    def nelbo(self, model_fn, x0, key, num_steps=None, antithetic=True):
        """The negative ELBO (nats per example, shape (B,)) of ``x0`` under the joint model
        ``model_fn(xs, ts) -> outs``, along the shared time path (module docstring): the sum of
        the parts' continuous-time ``nelbo``. ``num_steps`` must be None (the parts' T-step
        bounds use different grids)."""
        if num_steps is not None:
            raise ValueError(f"num_steps must be None (the continuous-time bound): the parts' T-step "
                             f"bounds use different grids, got {num_steps!r}")
        if not callable(model_fn):
            raise ValueError("model_fn must be callable as model_fn(xs, ts) -> outs (tuples, one entry per part)")
        x0 = self.split(x0, "x0")
        keys = jax.random.split(key, 2 * self.num_parts)
        total = 0.0
        for i, part in enumerate(self.parts):
            part_fn = _part_model(self, model_fn, x0, i, keys[2 * i + 1])
            total = total + part.nelbo(part_fn, x0[i], keys[2 * i], antithetic=antithetic)
        return total


def _part_model(process, model_fn, x0, i, key):
    """``(x_i, t) -> model_fn(xs, (t, ..., t))[i]`` with the other parts of ``xs`` drawn from
    their marginals at the same t (from ``key``)."""
    def fn(x_i, t):
        xs = list(process.sample_marginal(key, x0, t))
        xs[i] = x_i
        return model_fn(tuple(xs), (t,) * process.num_parts)[i]
    return fn


def _part_log_marginal(part, x_t, x0, t):
    """One part's ``log q(x_t | x0)`` per example, shape (B,)."""
    if isinstance(part, GaussianProcess):
        dt = jnp.promote_types(x_t.dtype, jnp.float32)
        t = jnp.asarray(t, dt)
        a, s = expand(part.alpha(t), x_t), expand(part.sigma(t), x_t)
        z = (x_t.astype(dt) - a * x0.astype(dt)) / s
        logpdf = -0.5 * z**2 - jnp.log(s) - 0.5 * jnp.log(2.0 * jnp.pi)
        logpdf = jnp.broadcast_to(logpdf, x_t.shape)
        return logpdf.reshape(x_t.shape[0], -1).sum(-1)
    logp = part.marginal_log_probs(x0, t)
    at = jnp.take_along_axis(logp, x_t[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return at.reshape(x_t.shape[0], -1).sum(-1)


def product(*parts: Sequence) -> ProductProcess:
    """The product of ``parts`` (``diffjax.gaussian(...)``, ``diffjax.discrete.masked(...)`` or
    ``uniform(...)``), one per modality, in the order of the state tuples; a ValueError names
    the part that is not a process."""
    return ProductProcess(tuple(parts))
