r"""Negative ELBOs of discrete diffusion, in nats per sequence.

Two separate estimators, each unbiased for its bound, with one time sample per sequence
(stratified across the batch when ``antithetic=True``: ``u_i = (u + pi(i) / B) mod 1`` with
a random permutation ``pi``, so each sequence's estimate is unbiased on its own):

``continuous_nelbo`` - the continuous-time bound (T -> infinity).

* masked (MDLM, Sahoo et al. 2024; MD4, Shi et al. 2024)::

      NELBO = int_0^1 -alpha'(t) / (1 - alpha(t)) E_{x_t} sum_{i: x_t^i = MASK} -log p(x0^i | x_t) dt

* uniform: the T -> infinity limit of the multinomial bound below. Between s = t - dt and t a
  token jumps from ``k`` to ``j`` with rate ``beta / K``, ``beta = -alpha'/alpha``; the true reverse
  rate of ``j -> k`` given x0 = l is ``(beta/K) r_k`` with ``r_k = q_t(k | l) / q_t(j | l)``, the
  model's is ``(beta/K) rhat_k``, ``rhat_k = sum_l' p(l' | x_t) q_t(k | l') / q_t(j | l')`` (exact
  reverse rates for the exact denoiser, so the bound is then tight). A step's KL is
  ``dt (beta/K) sum_{k != j} [rhat_k - r_k + r_k log(r_k / rhat_k)] + O(dt^2)``, hence::

      NELBO = int_0^1 (beta(t)/K) E_{x_t} sum_i sum_{k != x_t^i} rhat_k g(r_k / rhat_k) dt,
      g(x) = x log x - x + 1,

  the prior term vanishing since ``alpha(1) = 0``. This is the same as the continuous-time
  bound of Campbell et al. 2022 / UDLM (Schiff et al. 2024) written with the x0 prediction;
  ``g`` is evaluated as ``d e^d - expm1(d)``, ``d = log(r / rhat)``, so it stays accurate as
  ``alpha -> 0`` where ``r, rhat -> 1``. The test suite checks it against the T-step bound as
  T grows and against the exact NLL.

``discrete_nelbo`` - the T-step bound (Sohl-Dickstein 2015; Hoogeboom et al. 2021; D3PM,
Austin et al. 2021) on the grid ``t_k = k / T``::

      NELBO = KL(q(x_1 | x0) || p(x_1))
              + sum_{k=2}^T E KL(q(x_{t_{k-1}} | x_{t_k}, x0) || p(x_{t_{k-1}} | x_{t_k}))
              + E[-log p(x0 | x_{t_1})]

with ``p(x_s | x_t) = sum_l p(x0 = l | x_t) q(x_s | x_t, x0 = l)`` per token (``posterior``).
One term is drawn per sequence, ``k ~ U{1..T}``, and weighted by T.

``hybrid_loss`` - D3PM's hybrid loss, NELBO + ``ce_weight`` * ``sum_i -log p(x0^i | x_t)``.

Losses are computed in at least float32 whatever the model's dtype (bf16/fp16 models).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from diffjax.discrete._numerics import default_float

__all__ = ["continuous_nelbo", "discrete_nelbo", "hybrid_loss", "stratified_uniform"]


def __dir__():
    return sorted(__all__)


def stratified_uniform(key, n, dtype=None, antithetic=True):
    """n uniforms in [0, 1): ``(u + pi(i)/n) mod 1`` for one shared ``u`` and a random permutation
    ``pi`` (antithetic / stratified: every 1/n-quantile is hit once, and each entry is marginally
    uniform, so per-sequence estimates stay unbiased), or i.i.d. when ``antithetic=False``."""
    dtype = dtype or default_float()
    k_u, k_perm = jax.random.split(key)
    if not antithetic:
        return jax.random.uniform(k_u, (n,), dtype)
    u = jax.random.uniform(k_u, (), dtype)
    strata = jax.random.permutation(k_perm, n)  # so that every sequence's t is marginally U[0, 1)
    return jnp.mod(u + strata.astype(dtype) / n, 1.0)


def _check(x0, model_fn):
    x0 = jnp.asarray(x0)
    if not jnp.issubdtype(x0.dtype, jnp.integer) or x0.ndim < 1:
        raise ValueError(f"x0 must be integer tokens of shape (B, ...), got {x0.dtype} {x0.shape}")
    if not callable(model_fn):
        raise ValueError("model_fn must be callable as model_fn(x_t, t) -> logits")
    return x0


def _per_sequence(x):
    return x.reshape(x.shape[0], -1).sum(-1)


def _continuous(process, model_fn, x0, key, antithetic, time_dtype):
    x0 = _check(x0, model_fn)
    k_t, k_x = jax.random.split(key)
    t = 1.0 - stratified_uniform(k_t, x0.shape[0], time_dtype, antithetic)  # in (0, 1]
    x_t = process.sample_marginal(k_x, x0, t)
    logp = process.x0_log_probs(model_fn(x_t, t), x_t)
    nelbo = _per_sequence(process.continuous_integrand(x0, x_t, logp, t))
    return nelbo, _per_sequence(_cross_entropy(logp, x0))


def _discrete(process, model_fn, x0, key, num_steps, antithetic, time_dtype):
    x0 = _check(x0, model_fn)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be None or an int >= 1, got {num_steps!r}")
    T = num_steps
    k_t, k_x = jax.random.split(key)
    u = stratified_uniform(k_t, x0.shape[0], time_dtype or default_float(), antithetic)
    k = jnp.minimum(jnp.floor(u * T).astype(jnp.int32), T - 1) + 1  # in {1, ..., T}
    t = (k / T).astype(u.dtype)
    s = ((k - 1) / T).astype(u.dtype)
    x_t = process.sample_marginal(k_x, x0, t)
    logp = process.x0_log_probs(model_fn(x_t, t), x_t)
    ce = _cross_entropy(logp, x0)
    kl = process.step_kl(x0, x_t, logp, s, t)
    first = (k == 1).reshape((-1,) + (1,) * (x0.ndim - 1))
    terms = jnp.where(first, ce, kl)  # the k = 1 term is the reconstruction -log p(x0 | x_{1/T})
    prior = process.prior_kl(x0, logp.dtype)
    return _per_sequence(T * terms + prior), _per_sequence(ce)


def _cross_entropy(logp, x0):
    return -jnp.take_along_axis(logp, x0[..., None], axis=-1)[..., 0]


def continuous_nelbo(process, model_fn, x0, key, *, antithetic=True, time_dtype=None):
    """Continuous-time negative ELBO (nats) per sequence, shape (B,). See the module docstring.

    ``time_dtype``: dtype of the sampled t passed to ``model_fn`` (default: float32, or float64
    under ``jax_enable_x64``)."""
    return _continuous(process, model_fn, x0, key, antithetic, time_dtype)[0]


def discrete_nelbo(process, model_fn, x0, key, num_steps, *, antithetic=True, time_dtype=None):
    """T-step discrete-time negative ELBO (nats) per sequence, shape (B,), ``T = num_steps``."""
    return _discrete(process, model_fn, x0, key, num_steps, antithetic, time_dtype)[0]


def hybrid_loss(process, model_fn, x0, key, *, num_steps=None, ce_weight=0.01, antithetic=True, time_dtype=None):
    """D3PM hybrid loss per sequence: NELBO (continuous if ``num_steps`` is None, else T-step)
    plus ``ce_weight`` times the cross-entropy ``sum_i -log p(x0^i | x_t)`` at the same ``x_t``
    (for the masked process only masked tokens contribute). ``ce_weight`` may be traced."""
    if num_steps is None:
        nelbo, ce = _continuous(process, model_fn, x0, key, antithetic, time_dtype)
    else:
        nelbo, ce = _discrete(process, model_fn, x0, key, num_steps, antithetic, time_dtype)
    return nelbo + jnp.asarray(ce_weight, nelbo.dtype) * ce


