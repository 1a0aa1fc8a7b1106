"""Spell checking with multinomial diffusion (Hoogeboom et al. 2021, section 5).

``corrupt`` replaces characters with the uniform process at a small time t (each character is
resampled uniformly with probability ``1 - alpha(t)``); ``restore`` runs the reverse process of a
trained model from that t back to 0; ``character_error_rate`` measures the damage before and
after.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from diffjax.discrete._numerics import as_float, default_float
from diffjax.discrete.processes import DiscreteProcess, MaskedProcess
from diffjax.discrete.sampling import sample

__all__ = ["corrupt", "restore", "character_error_rate"]


def __dir__():
    return sorted(__all__)


def corrupt(key, x0, t, process):
    """``x_t ~ q(x_t | x0)``: with ``process=uniform(V)`` each token is resampled uniformly with
    probability ``1 - alpha(t)`` (a masked process masks instead). ``t``: scalar or (B,)."""
    if not isinstance(process, DiscreteProcess):
        raise ValueError(f"process must be a diffjax.discrete process, got {process!r}")
    x0 = jnp.asarray(x0)
    t = jnp.broadcast_to(as_float(t, default_float()), x0.shape[:1])
    return process.sample_marginal(key, x0, t)


def restore(model_fn, key, x_t, t, *, process, steps=1, temperature=0.0, top_p=None, method="ancestral"):
    """Denoises a corrupted ``x_t`` from time ``t`` (a Python float or scalar) back to t = 0 with
    ``steps`` reverse steps; no position is held fixed. With ``steps=1`` and
    ``temperature=0`` this is one model call and the argmax of ``p(x0_i | x_t)`` per token.
    Returns ``(x0_hat, info)`` as ``sample``."""
    x_t = jnp.asarray(x_t)
    fixed = jnp.zeros(x_t.shape, bool)
    if isinstance(process, MaskedProcess):
        fixed = x_t != process.mask_id
    return sample(model_fn, key, x_t.shape, process=process, steps=steps, x_init=x_t, temperature=temperature,
                  top_p=top_p, method=method, t_start=t, fixed=fixed)


def _levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def character_error_rate(hypothesis, reference, *, per_sequence=False):
    """Character error rate of ``hypothesis`` against ``reference``.

    Strings (or lists of strings): Levenshtein distance / reference length (summed over the list
    before dividing). Token arrays of equal shape (B, ...): the fraction of differing positions
    (the substitution-only error rate, which is what the uniform process introduces); with
    ``per_sequence=True`` one rate per sequence, shape (B,).
    """
    if isinstance(hypothesis, str) != isinstance(reference, str):
        raise ValueError("hypothesis and reference must both be strings or both be token arrays")
    if isinstance(hypothesis, str):
        hypothesis, reference = [hypothesis], [reference]
    if isinstance(hypothesis, (list, tuple)) and hypothesis and isinstance(hypothesis[0], str):
        if len(hypothesis) != len(reference):
            raise ValueError(f"got {len(hypothesis)} hypotheses for {len(reference)} references")
        errs = [_levenshtein(h, r) for h, r in zip(hypothesis, reference)]
        lens = [len(r) for r in reference]
        if per_sequence:
            return np.asarray([e / max(n, 1) for e, n in zip(errs, lens)])
        return sum(errs) / max(sum(lens), 1)
    a, b = jnp.asarray(hypothesis), jnp.asarray(reference)
    if a.shape != b.shape:
        raise ValueError(f"hypothesis and reference must have the same shape, got {a.shape} and {b.shape}")
    diff = (a != b).astype(default_float())
    if per_sequence:
        return diff.reshape(diff.shape[0], -1).mean(-1)
    return diff.mean()
