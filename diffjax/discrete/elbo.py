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

``fixed_order_nll`` / ``fixed_order_nelbo`` - the masked process with
``order="left_to_right"`` (autoregression). Its forward process reveals the first
``ceil(L alpha(t))`` positions, so the reverse process reveals position k exactly once, from
the state ``s_k`` with positions ``0 .. k-1`` revealed and the rest masked, at time
``t_k = process.state_time(k, L)``. The general masked-diffusion bound (the sum over reveal
events of ``-log p(x0_i | x_t)``) then has one term per position and no slack::

    NLL(x0) = sum_{k=0}^{L-1} -log p(x0_k | s_k, t_k)

(the chain rule of the autoregressive model the masked model defines). ``fixed_order_nll``
computes it exactly: L model calls (a ``lax.scan`` over k), or one call with a causal model
(``causal=True``: a model whose output at position k depends on positions < k only, such as
``TokenTransformer(causal=True)``; it is called on ``x0`` itself at t = 0 and read at every
position as if that position were the first masked one). ``fixed_order_nelbo`` draws one k
per sequence (stratified across the batch) and returns ``L * (-log p(x0_k | s_k, t_k))``, an
unbiased estimate of it with one model call.

Losses are computed in at least float32 whatever the model's dtype (bf16/fp16 models).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffjax.discrete._numerics import compute_dtype, default_float

__all__ = ["continuous_nelbo", "discrete_nelbo", "hybrid_loss", "stratified_uniform", "fixed_order_nll",
           "fixed_order_nelbo"]


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


def _check_fixed_order(process, x0, model_fn):
    x0 = _check(x0, model_fn)
    if not getattr(process, "fixed_order", False):
        raise ValueError(f"process must be a masked process with order='left_to_right', got {process!r}")
    if x0.ndim < 2:
        raise ValueError(f"x0 must be integer tokens of shape (B, L, ...), got {x0.shape}")
    return x0


def _token_nll(process, logits, x0, x_t):
    """``-log p(x0_i | x_t)`` per position from the model's logits (masked positions of x_t)."""
    return _cross_entropy(process.x0_log_probs(logits, x_t), x0)


def fixed_order_nll(process, model_fn, x0, *, causal=False, time_dtype=None):
    """Exact negative log-likelihood (nats) per sequence, shape (B,), of ``x0`` under a masked
    process with ``order="left_to_right"`` (module docstring).

    ``causal=False``: ``model_fn`` is called on every fixed-order state ``s_k`` at its time
    ``t_k`` (L calls in a ``lax.scan``). ``causal=True``: one call ``model_fn(x0, 0)``, valid
    only for a model whose output at position k ignores the tokens at positions >= k and the
    time (``TokenTransformer(causal=True)``); for any other model the result is wrong."""
    x0 = _check_fixed_order(process, x0, model_fn)
    B, L = x0.shape[0], math.prod(x0.shape[1:])
    dtype = time_dtype or default_float()
    all_masked = jnp.full_like(x0, process.mask_id)
    if causal:
        return _per_sequence(_token_nll(process, model_fn(x0, jnp.zeros((B,), dtype)), x0, all_masked))
    pos = jnp.arange(L).reshape(x0.shape[1:])

    def body(total, k):
        t = jnp.broadcast_to(process.state_time(k, L).astype(dtype), (B,))
        x_t = process.sample_marginal(None, x0, t)  # the state s_k: positions < k revealed
        nll = _token_nll(process, model_fn(x_t, t), x0, x_t)
        return total + _per_sequence(jnp.where(pos == k, nll, 0.0)), None

    total, _ = jax.lax.scan(body, jnp.zeros((B,), compute_dtype(dtype)), jnp.arange(L))
    return total


def fixed_order_nelbo(process, model_fn, x0, key, *, antithetic=True, time_dtype=None):
    """One-call unbiased estimate (nats per sequence, shape (B,)) of ``fixed_order_nll``: one
    position k per sequence, uniform on 0 .. L-1 (stratified across the batch when
    ``antithetic``), scored at its state ``s_k`` (``process.sample_marginal`` at ``t_k``) and
    weighted by L."""
    x0 = _check_fixed_order(process, x0, model_fn)
    B, L = x0.shape[0], math.prod(x0.shape[1:])
    u = stratified_uniform(key, B, time_dtype or default_float(), antithetic)
    k = jnp.minimum(jnp.floor(u * L).astype(jnp.int32), L - 1)
    t = process.state_time(k, L).astype(u.dtype)
    x_t = process.sample_marginal(None, x0, t)
    nll = _token_nll(process, model_fn(x_t, t), x0, x_t)
    at_k = jnp.arange(L).reshape(x0.shape[1:])[None] == k.reshape((B,) + (1,) * (x0.ndim - 1))
    return L * _per_sequence(jnp.where(at_k, nll, 0.0))

