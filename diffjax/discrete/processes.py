"""Discrete forward processes: masked (absorbing) and uniform (multinomial) noise.

Convention: t in [0, 1], t = 0 is data, t = 1 is noise; ``alpha(t)`` (see ``schedules``) is the
probability that a token is untouched at time t. Tokens are integers in ``[0, vocab_size)``.

* ``masked(V)``:  ``q(x_t | x0) = alpha(t) [x_t = x0] + (1 - alpha(t)) [x_t = MASK]`` with
  ``mask_id = V``; the state space has ``V + 1`` states.
* ``uniform(V)``: ``q(x_t | x0) = alpha(t) [x_t = x0] + (1 - alpha(t)) / V`` (Hoogeboom et al.
  2021's multinomial diffusion); the state space has ``V`` states.

Both processes factorise over tokens. Methods shared with the Gaussian processes:
``alpha``, ``sample_marginal``, ``posterior`` and ``nelbo``.

The masked process has an unmasking ``order``:

* ``"random"`` (default; MDLM / MD4): each token is masked independently with probability
  ``1 - alpha(t)``; ``nelbo`` is the continuous-time ELBO (a Monte Carlo upper bound on the NLL).
* ``"left_to_right"`` (autoregression as masked diffusion): at time t the first
  ``L - floor(L (1 - alpha(t)))`` = ``ceil(L alpha(t))`` positions are revealed and the rest
  masked (``L``: the number of positions, the non-batch axes flattened in row-major order;
  for the linear schedule ``ceil((1 - t) L)``). The forward process is deterministic given t
  and the reverse process reveals one position at a time, so the likelihood is exact:
  ``nll`` is ``sum_k -log p(x0_k | x0_<k revealed, the rest masked)``, the state with k
  positions revealed being fed at its time ``state_time(k, L)``. ``nelbo`` is that NLL too,
  exact with a causal model (``causal=True``: one forward pass), otherwise one uniformly
  drawn position per sequence times L (an unbiased estimate of it, one model call).

Log-probability outputs (``posterior``, ``x0_log_probs``, ``marginal_log_probs``) are
normalised log-probabilities in at least float32, over the last axis; an impossible state holds
``mask_value(dtype)`` (a finite large negative number, so arithmetic never produces NaN) rather
than -inf. ``exp`` of it is exactly 0.

Models: ``model_fn(x_t, t) -> logits (B, ..., vocab_size)`` of ``p(x0_i | x_t)``; for the masked
process a model may also return ``vocab_size + 1`` logits (the last is the mask): the SUBS
parameterisation (``subs``) gives the mask token zero probability and carries unmasked tokens over.
"""
from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from diffjax.discrete import elbo as _elbo
from diffjax.discrete._numerics import as_float, batch_shape_time, compute_dtype, log1mexp, mask_value
from diffjax.discrete.schedules import Schedule
from diffjax.discrete.schedules import get as get_schedule

__all__ = ["DiscreteProcess", "MaskedProcess", "UniformProcess", "masked", "uniform", "subs", "ORDERS"]

ORDERS = ("random", "left_to_right")
"""The unmasking orders of the masked process (``masked(..., order=...)``)."""

_COUNT_TOL = 1e-4  # in tokens: L (1 - alpha(t)) within this of an integer counts as that integer


def __dir__():
    return sorted(__all__)


def _clamp(logp):
    return jnp.maximum(logp, mask_value(logp.dtype))


def _log_one_hot(x, num_classes, dtype):
    return jnp.where(jax.nn.one_hot(x, num_classes, dtype=bool), jnp.zeros((), dtype), mask_value(dtype))


def _check_tokens(x, name):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"{name} must hold integer tokens, got dtype {x.dtype}")
    return x


def _time_like(t, x):
    """t as float, broadcastable against the token array x (leading axis = batch)."""
    t = as_float(t)
    return batch_shape_time(t, x.ndim)


def subs(logits, x_t, mask_id):
    """SUBS parameterisation (Sahoo et al. 2024) of masked-diffusion logits.

    ``logits``: (..., V) or (..., V + 1) with ``V == mask_id`` (a mask column is dropped, i.e.
    the mask token gets probability zero). Returns log-probabilities (..., V) in at least float32:
    the softmax over the V real tokens at masked positions of ``x_t``, and the one-hot of the
    observed token at unmasked positions (they are carried over).
    """
    V = int(mask_id)
    if logits.shape[-1] not in (V, V + 1):
        raise ValueError(f"logits must have last axis vocab_size={V} or vocab_size+1={V + 1}, got {logits.shape}")
    dt = compute_dtype(logits.dtype)
    logp = _clamp(jax.nn.log_softmax(logits[..., :V].astype(dt), axis=-1))
    carried = _log_one_hot(x_t, V, dt)  # x_t == mask_id gives an all-masked row, not used
    return jnp.where((x_t != V)[..., None], carried, logp)


class DiscreteProcess(eqx.Module):
    """Base class: a factorised discrete forward process with a schedule ``alpha(t)``."""

    vocab_size: int = eqx.field(static=True)
    schedule: Schedule

    def __check_init__(self):
        if not isinstance(self.vocab_size, int) or self.vocab_size < 2:
            raise ValueError(f"vocab_size must be an int >= 2, got {self.vocab_size!r}")

    # --- schedule ------------------------------------------------------------------------------
    def alpha(self, t):
        """Probability that a token is untouched at time t."""
        return self.schedule.alpha(t)

    def log_alpha(self, t):
        return self.schedule.log_alpha(t)

    def log1m_alpha(self, t):
        return self.schedule.log1m_alpha(t)

    @property
    def num_states(self) -> int:
        raise NotImplementedError

    # --- interface shared with the Gaussian processes ------------------------------------------
    def sample_marginal(self, key, x0, t):
        """Draw ``x_t ~ q(x_t | x0)``; ``t`` has shape () or (B,) for ``x0`` of shape (B, ...)."""
        raise NotImplementedError

    def posterior(self, x_t, x0, s, t):
        """Exact ``q(x_s | x_t, x0)`` for ``s < t`` as log-probabilities over the states
        (last axis ``num_states``).

        ``x0``: integer tokens (shape of ``x_t``), or probabilities over the vocabulary
        (``x_t.shape + (vocab_size,)``); for probabilities ``p`` the result is the mixture
        ``sum_l p_l q(x_s | x_t, x0 = l)``, which is the exact reverse marginal
        ``q(x_s^i | x_t)`` when ``p = q(x0^i | x_t)`` (and the reverse model used by the ELBOs
        and the ancestral sampler).
        """
        x_t = _check_tokens(x_t, "x_t")
        x0 = jnp.asarray(x0)
        if jnp.issubdtype(x0.dtype, jnp.integer):
            dt = compute_dtype(as_float(t).dtype)
            log_p0 = _log_one_hot(x0, self.vocab_size, dt)
        else:
            if x0.shape != x_t.shape + (self.vocab_size,):
                raise ValueError(f"x0 probabilities must have shape {x_t.shape + (self.vocab_size,)}, got {x0.shape}")
            log_p0 = _clamp(jnp.log(x0.astype(compute_dtype(x0.dtype))))
        return self.log_posterior(x_t, log_p0, s, t)

    def log_posterior(self, x_t, log_p0, s, t):
        """``posterior`` with ``x0`` given as log-probabilities (..., vocab_size)."""
        raise NotImplementedError

    def marginal_log_probs(self, x0, t):
        """``log q(x_t | x0)`` over the states, shape ``x0.shape + (num_states,)``."""
        raise NotImplementedError

    def prior_log_probs(self, shape, dtype=None):
        """``log p(x_1)``, the prior at t = 1, shape ``shape + (num_states,)``."""
        raise NotImplementedError

    def x0_log_probs(self, logits, x_t):
        """Model logits -> log ``p(x0 | x_t)`` (..., vocab_size) in at least float32."""
        raise NotImplementedError

    def nelbo(self, model_fn, x0, key, num_steps=None, antithetic=True, **kwargs):
        """Per-sequence negative ELBO of ``x0`` (B, ...) in nats, shape (B,).

        ``num_steps=None``: continuous-time bound (``elbo.continuous_nelbo``); an int T: the
        T-step discrete-time bound (``elbo.discrete_nelbo``). ``antithetic``: stratified times
        across the batch. One time sample per sequence; average over keys for a lower variance.
        """
        if num_steps is None:
            return _elbo.continuous_nelbo(self, model_fn, x0, key, antithetic=antithetic, **kwargs)
        return _elbo.discrete_nelbo(self, model_fn, x0, key, num_steps, antithetic=antithetic, **kwargs)

    def hybrid_loss(self, model_fn, x0, key, num_steps=None, ce_weight=0.01, antithetic=True, **kwargs):
        """D3PM's hybrid loss: ``nelbo + ce_weight * sum_i -log p(x0_i | x_t)`` at the same x_t."""
        return _elbo.hybrid_loss(self, model_fn, x0, key, num_steps=num_steps, ce_weight=ce_weight,
                                 antithetic=antithetic, **kwargs)

    # --- ELBO integrands (per token), used by diffjax.discrete.elbo ---------------------------
    def continuous_integrand(self, x0, x_t, logp, t):
        """Per-token integrand of the continuous-time NELBO at time t (shape of x0)."""
        raise NotImplementedError

    def step_kl(self, x0, x_t, logp, s, t):
        """Per-token ``KL(q(x_s | x_t, x0) || p(x_s | x_t))`` with the model's ``logp``."""
        log_q = self.log_posterior(x_t, _log_one_hot(x0, self.vocab_size, logp.dtype), s, t)
        log_p = self.log_posterior(x_t, logp, s, t)
        return _kl(log_q, log_p)

    def prior_kl(self, x0, dtype):
        """Per-token ``KL(q(x_1 | x0) || p(x_1))``."""
        log_q = self.marginal_log_probs(x0, jnp.ones((), dtype))
        return _kl(log_q, self.prior_log_probs(x0.shape, dtype))


def _kl(log_q, log_p):
    return jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1)


class MaskedProcess(DiscreteProcess):
    """Absorbing ("[MASK]") diffusion: a token is replaced by ``mask_id == vocab_size`` with
    probability ``1 - alpha(t)`` and never changes back in the forward process.

    ``order="left_to_right"`` masks a suffix instead: the first ``num_revealed(t, L)``
    positions are kept (module docstring)."""

    order: str = eqx.field(static=True, default="random")

    def __check_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def num_states(self) -> int:
        return self.vocab_size + 1

    @property
    def fixed_order(self) -> bool:
        """True for ``order="left_to_right"``."""
        return self.order == "left_to_right"

    # --- the fixed (left-to-right) order ---------------------------------------------------------
    def num_revealed(self, t, length: int):
        """Revealed positions at time t under the fixed order: ``L - floor(L (1 - alpha(t)))``
        (= ``ceil(L alpha(t))``), int32 of t's shape. These are the counts the
        ``left_to_right`` sampler leaves masked when it starts from t = 1."""
        t = as_float(t)
        masked = jnp.floor(length * jnp.exp(self.log1m_alpha(t)) + _COUNT_TOL)
        return (length - jnp.clip(masked, 0, length)).astype(jnp.int32)

    def state_time(self, k, length: int):
        """The time of the fixed-order state with ``k`` of ``length`` positions revealed: the t
        with ``1 - alpha(t) = (length - k) / length`` (t = 1 for k = 0, t = 0 for k = length),
        the earliest time with exactly k revealed (``num_revealed(state_time(k, L), L) == k``)."""
        k = jnp.asarray(k)
        frac = (length - k).astype(jnp.result_type(float)) / length
        return self.schedule.time_at_log1m_alpha(jnp.log(frac))

    def _revealed_mask(self, t, shape):
        """Bool of ``shape`` (B, ...): True at the positions revealed at t under the fixed order."""
        L = math.prod(shape[1:])
        n = batch_shape_time(self.num_revealed(t, L), len(shape))
        return jnp.broadcast_to(jnp.arange(L).reshape(shape[1:]) < n, shape)

    def sample_marginal(self, key, x0, t):
        x0 = _check_tokens(x0, "x0")
        if self.fixed_order:
            if x0.ndim < 2:
                raise ValueError(f"x0 must be tokens of shape (B, L, ...) for order='left_to_right', got {x0.shape}")
            return jnp.where(self._revealed_mask(as_float(t), x0.shape), x0, jnp.asarray(self.mask_id, x0.dtype))
        t = _time_like(t, x0)
        u = jax.random.uniform(key, x0.shape, t.dtype)
        return jnp.where(u < jnp.exp(self.log1m_alpha(t)), jnp.asarray(self.mask_id, x0.dtype), x0)

    def reveal_log_prob(self, s, t):
        """log P(a token masked at t is unmasked at s) = log((alpha_s - alpha_t) / (1 - alpha_t)),
        and log P(it stays masked) = log((1 - alpha_s) / (1 - alpha_t))."""
        log_stay = jnp.minimum(self.log1m_alpha(s) - self.log1m_alpha(t), 0.0)
        return log1mexp(log_stay), log_stay

    def log_posterior(self, x_t, log_p0, s, t):
        dt = compute_dtype(log_p0.dtype)
        if self.fixed_order:  # the masked positions of x_t before num_revealed(s) are revealed
            revealed_s = self._revealed_mask(as_float(s), x_t.shape)
            log_reveal = jnp.where(revealed_s, 0.0, mask_value(dt)).astype(dt)
            log_stay = jnp.where(revealed_s, mask_value(dt), 0.0).astype(dt)
        else:
            s, t = _time_like(s, x_t).astype(dt), _time_like(t, x_t).astype(dt)
            log_reveal, log_stay = self.reveal_log_prob(s, t)
        log_reveal = log_reveal[..., None]
        log_stay = jnp.broadcast_to(log_stay[..., None], x_t.shape + (1,))
        from_mask = jnp.concatenate([log_reveal + log_p0.astype(dt), log_stay.astype(dt)], axis=-1)
        kept = _log_one_hot(x_t, self.num_states, dt)
        return _clamp(jnp.where((x_t == self.mask_id)[..., None], from_mask, kept))

    def marginal_log_probs(self, x0, t):
        x0 = _check_tokens(x0, "x0")
        if self.fixed_order:
            dt = compute_dtype(as_float(t).dtype)
            return _log_one_hot(self.sample_marginal(None, x0, t), self.num_states, dt)
        t = _time_like(t, x0)
        la = jnp.broadcast_to(self.log_alpha(t), x0.shape)[..., None]
        l1m = jnp.broadcast_to(self.log1m_alpha(t), x0.shape)[..., None]
        tokens = jnp.where(jax.nn.one_hot(x0, self.vocab_size, dtype=bool), la, -jnp.inf)
        return _clamp(jnp.concatenate([tokens, l1m], axis=-1).astype(compute_dtype(t.dtype)))

    def prior_log_probs(self, shape, dtype=None):
        dtype = compute_dtype(dtype or jnp.result_type(float))
        return _log_one_hot(jnp.full(shape, self.mask_id), self.num_states, dtype)

    def x0_log_probs(self, logits, x_t):
        return subs(logits, x_t, self.mask_id)

    def nelbo(self, model_fn, x0, key, num_steps=None, antithetic=True, *, causal=False, **kwargs):
        """Per-sequence negative ELBO of ``x0`` (B, ...) in nats, shape (B,).

        ``order="random"``: as ``DiscreteProcess.nelbo``. ``order="left_to_right"``: the
        exact NLL with a causal model (``causal=True``, one forward pass,
        ``elbo.fixed_order_nll``), else its one-position unbiased estimate
        (``elbo.fixed_order_nelbo``); ``num_steps`` must be None (the bound is the likelihood).
        """
        if not self.fixed_order:
            if causal:
                raise ValueError("causal=True needs order='left_to_right': a causal model cannot see the "
                                 "revealed tokens to the right of a masked one under the random order")
            return super().nelbo(model_fn, x0, key, num_steps=num_steps, antithetic=antithetic, **kwargs)
        if num_steps is not None:
            raise ValueError(f"num_steps must be None for order='left_to_right' (its bound is the exact "
                             f"likelihood), got {num_steps!r}")
        if causal:
            return _elbo.fixed_order_nll(self, model_fn, x0, causal=True, **kwargs)
        return _elbo.fixed_order_nelbo(self, model_fn, x0, key, antithetic=antithetic, **kwargs)

    def nll(self, model_fn, x0, *, causal=False, **kwargs):
        """Exact negative log-likelihood (nats, shape (B,)) of ``x0`` under the fixed order:
        ``elbo.fixed_order_nll`` (``causal=True``: one forward pass of a causal model, else
        one model call per position). ``order="random"`` has no exact likelihood: use ``nelbo``,
        or score its model with ``masked(V, schedule, order="left_to_right").nll``."""
        if not self.fixed_order:
            raise ValueError("nll is exact only for order='left_to_right'; order='random' has the ELBO "
                             "(nelbo), or evaluate the model under the fixed order with "
                             "masked(vocab_size, schedule, order='left_to_right').nll")
        return _elbo.fixed_order_nll(self, model_fn, x0, causal=causal, **kwargs)

    def hybrid_loss(self, model_fn, x0, key, num_steps=None, ce_weight=0.01, antithetic=True, **kwargs):
        if self.fixed_order:
            raise ValueError("the hybrid loss needs order='random'; order='left_to_right' trains its "
                             "exact likelihood with loss='nelbo'")
        return super().hybrid_loss(model_fn, x0, key, num_steps=num_steps, ce_weight=ce_weight,
                                   antithetic=antithetic, **kwargs)

    def continuous_integrand(self, x0, x_t, logp, t):
        # MDLM / MD4: -alpha'(t) / (1 - alpha(t)) * sum over masked tokens of -log p(x0_i | x_t).
        w = batch_shape_time(self.schedule.dlog1m_alpha(t), x0.ndim).astype(logp.dtype)
        w = jnp.where(jnp.isfinite(w), w, 0.0)  # t = 0: nothing is masked
        ce = -jnp.take_along_axis(logp, x0[..., None], axis=-1)[..., 0]
        return jnp.where(x_t == self.mask_id, w * ce, 0.0)


class UniformProcess(DiscreteProcess):
    """Multinomial diffusion: a token is kept with probability ``alpha(t)``, else resampled
    uniformly among the ``vocab_size`` tokens (possibly to itself).

    ``mask_id`` (= ``vocab_size``) is only a sentinel for "free" positions of a sampler's
    ``x_init``; it is never a state of the process."""

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def num_states(self) -> int:
        return self.vocab_size

    def sample_marginal(self, key, x0, t):
        x0 = _check_tokens(x0, "x0")
        t = _time_like(t, x0)
        k_keep, k_tok = jax.random.split(key)
        keep = jax.random.uniform(k_keep, x0.shape, t.dtype) < self.alpha(t)
        noise = jax.random.randint(k_tok, x0.shape, 0, self.vocab_size, dtype=x0.dtype)
        return jnp.where(keep, x0, noise)

    def _log_same_diff(self, t):
        """log q(x_t = j | x0 = j) and log q(x_t = j | x0 = l != j)."""
        log_k = math.log(self.vocab_size)
        la, l1m = self.log_alpha(t), self.log1m_alpha(t)
        return jnp.logaddexp(la, l1m - log_k), l1m - log_k

    def log_posterior(self, x_t, log_p0, s, t):
        # q(x_s = k | x_t = j, x0 = l) = (a_ts [k=j] + (1-a_ts)/K) (a_s [k=l] + (1-a_s)/K) / q(x_t=j | l),
        # mixed over l ~ p:  (a_ts [k=j] + (1-a_ts)/K) * (a_s w_k + (1-a_s)/K sum(w)), w_l = p_l / q(j | l).
        dt = compute_dtype(log_p0.dtype)
        log_k = math.log(self.vocab_size)
        s, t = _time_like(s, x_t).astype(dt)[..., None], _time_like(t, x_t).astype(dt)[..., None]
        la_s, l1m_s = self.log_alpha(s), self.log1m_alpha(s)
        la_ts = jnp.minimum(self.log_alpha(t) - la_s, 0.0)
        l1m_ts = log1mexp(la_ts)
        at_xt = jax.nn.one_hot(x_t, self.vocab_size, dtype=bool)
        log_same, log_diff = self._log_same_diff(t)
        log_w = log_p0.astype(dt) - jnp.where(at_xt, log_same, log_diff)
        lse_w = jax.scipy.special.logsumexp(log_w, axis=-1, keepdims=True)
        log_term2 = jnp.logaddexp(la_s + log_w, l1m_s - log_k + lse_w)
        log_term1 = jnp.where(at_xt, jnp.logaddexp(la_ts, l1m_ts - log_k), l1m_ts - log_k)
        return _clamp(jax.nn.log_softmax(log_term1 + log_term2, axis=-1))

    def marginal_log_probs(self, x0, t):
        x0 = _check_tokens(x0, "x0")
        t = _time_like(t, x0)[..., None]
        log_same, log_diff = self._log_same_diff(t)
        out = jnp.where(jax.nn.one_hot(x0, self.vocab_size, dtype=bool), log_same, log_diff)
        return _clamp(out.astype(compute_dtype(out.dtype)))

    def prior_log_probs(self, shape, dtype=None):
        dtype = compute_dtype(dtype or jnp.result_type(float))
        return jnp.full(tuple(shape) + (self.vocab_size,), -math.log(self.vocab_size), dtype)

    def x0_log_probs(self, logits, x_t):
        if logits.shape[-1] != self.vocab_size:
            raise ValueError(f"logits must have last axis vocab_size={self.vocab_size}, got {logits.shape}")
        return _clamp(jax.nn.log_softmax(logits.astype(compute_dtype(logits.dtype)), axis=-1))

    def continuous_integrand(self, x0, x_t, logp, t):
        """Continuous-time limit of the multinomial ELBO (derived in ``elbo``'s docstring):
        ``(-alpha'/alpha) / K * sum_{k != x_t} rhat_k g(r_k / rhat_k)``, ``g(x) = x log x - x + 1``."""
        dt = logp.dtype
        K, log_k = self.vocab_size, math.log(self.vocab_size)
        t = batch_shape_time(as_float(t).astype(dt), x0.ndim)[..., None]
        la, l1m = self.log_alpha(t), self.log1m_alpha(t)
        alive = la > -jnp.inf  # alpha(t) > 0; at alpha = 0 the integrand is 0
        la = jnp.where(alive, la, 0.0)
        rate = -self.schedule.dlog_alpha(jnp.where(alive, t, 0.5)) / K
        log_same = jnp.logaddexp(la + log_k, l1m)  # log(K alpha + 1 - alpha) = log(K q(j | j))
        at_xt = jax.nn.one_hot(x_t, K, dtype=bool)
        at_x0 = jax.nn.one_hot(x0, K, dtype=bool)
        # log of K q_t(k | l) for the true l = x0 and of K q_t(j | l') for every l'.
        log_kq_k_x0 = jnp.where(at_x0, log_same, l1m)
        log_kq_j_x0 = jnp.take_along_axis(log_kq_k_x0, x_t[..., None], axis=-1)
        log_r = log_kq_k_x0 - log_kq_j_x0  # true reverse ratios q_t(k | x0) / q_t(j | x0)
        log_v = logp - jnp.where(at_xt, log_same, l1m)
        log_rhat = jnp.logaddexp(log_k + la + log_v, l1m + jax.scipy.special.logsumexp(log_v, axis=-1, keepdims=True))
        d = log_r - log_rhat
        bregman = jnp.exp(log_rhat) * (d * jnp.exp(d) - jnp.expm1(d))  # rhat g(r / rhat) >= 0
        total = jnp.sum(jnp.where(at_xt, 0.0, bregman), axis=-1, keepdims=True)
        return jnp.where(alive, rate * total, 0.0)[..., 0]


def _make(cls, vocab_size, schedule, exponent, **kwargs):
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
    return cls(vocab_size, get_schedule(schedule, exponent), **kwargs)


def masked(vocab_size: int, schedule="linear", *, exponent=None, order="random") -> MaskedProcess:
    """Masked (absorbing) diffusion over ``vocab_size`` tokens; ``mask_id == vocab_size``.
    ``schedule``: "linear" (alpha = 1 - t), "cosine" (alpha = 1 - sin(pi t/2), MD4/MaskGIT),
    "polynomial" (alpha = 1 - t**exponent, default exponent 2), or a ``schedules.Schedule``.
    ``order``: "random" (MDLM / MD4) or "left_to_right" (autoregression: a prefix of
    ``ceil(L alpha(t))`` positions revealed at time t; see the module docstring)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return _make(MaskedProcess, vocab_size, schedule, exponent, order=order)


def uniform(vocab_size: int, schedule="linear", *, exponent=None) -> UniformProcess:
    """Uniform (multinomial) diffusion over ``vocab_size`` tokens; schedules as in ``masked``."""
    return _make(UniformProcess, vocab_size, schedule, exponent)
