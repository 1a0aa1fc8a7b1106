"""Discrete objectives: the glue between a token model and the discrete diffusion processes.

The discrete twin of :mod:`diffjax.training.objectives.gaussian`. A
:class:`DiscreteObjective` holds a token model's graph definitions (a training variant with dropout active and an inference
variant without) and a :mod:`diffjax.discrete` process (masked or uniform), and turns
parameters into the two pure functions the rest of diffjax consumes::

    model = models.TokenTransformer(27, seq_len=128, dim=256, depth=6, rngs=nnx.Rngs(0))
    objective, params = make_discrete_objective(model, process=discrete.masked(27))
    step = training.make_train_step(objective.loss_fn, optimizer, mesh=mesh)
    ...
    tokens, info = discrete.sample(objective.model_fn(state.ema_params), key, (8, 128),
                                   process=objective.process, steps=128)

``loss_fn(params, batch, key) -> (loss, metrics)``
    ``batch[x_key]`` holds integer tokens ``x0`` of shape ``(B, L)`` (t = 0 is data, t = 1
    noise). The key is split once, ``k_loss, k_dropout = jax.random.split(key)``: ``k_loss``
    goes to the process's bound exactly as ``process.nelbo(model_fn, x0, k_loss,
    num_steps=num_steps, antithetic=antithetic)`` (time and token draws), ``k_dropout`` to
    the model's dropout layers. The loss is that negative ELBO in **nats per token**: the
    per-sequence bound summed over the batch and divided by the number of tokens (a boolean
    ``batch["mask"]`` of padding rows is honoured). ``loss="hybrid"`` uses D3PM's hybrid loss
    (``process.hybrid_loss`` with ``ce_weight``) instead. Metrics: ``nelbo`` (nats/token) and
    ``bits_per_token`` for ``loss="nelbo"``. The process computes log-probabilities and the
    bound in at least float32 whatever the model's compute dtype (bf16 / fp16 models).

    With ``num_steps=None`` this is the continuous-time bound (MDLM / MD4 for the masked
    process); an int ``T`` trains the T-step discrete-time bound (Hoogeboom et al. / D3PM).
    ``antithetic=True`` stratifies the times across the batch (each sequence's estimate stays
    unbiased). For the masked process with ``order="left_to_right"`` the bound is the exact
    negative log-likelihood: with a causal model (``TokenTransformer(causal=True)``, recorded
    as ``causal``) one forward pass scores every position (autoregressive training), otherwise
    one position per sequence is scored (``diffjax.discrete.elbo.fixed_order_nelbo``).

    Self-conditioning (``self_condition=True``, a model built with ``self_condition=True``,
    e.g. ``TokenTransformer(..., self_condition=True)``; Strudel et al. 2022): the model also
    takes ``x_self_cond``, its previous predicted distribution over the vocabulary ``(B, L,
    vocab_size)``. Every model call of the bound runs the network twice
    (`network.self_condition_two_pass`): first with zeros, whose ``p(x0 | x_t)`` (``exp`` of
    ``process.x0_log_probs`` of its logits) is taken under ``stop_gradient``; then with those
    probabilities for a random half of the sequences (each independently, probability 1/2) and
    zeros for the others; the bound is on the second output. The draws use
    ``split(fold_in(key, SELF_COND_SALT))`` -> ``(k_use, k_first)``, so the other keys, and the
    loss without the option, are unchanged.

``model_fn(params, cond=None) -> model_fn(x_t, t) -> logits (B, L, vocab_size)``
    The inference network (dropout off) for the samplers (``diffjax.discrete.sample``), the
    ELBOs (``process.nelbo``) and spell checking (``diffjax.discrete.restore``). With
    self-conditioning it is the two-pass network of (x_t, t) (every sequence gets the first
    pass's prediction), so the ELBOs bound that model.

``self_cond_model_fn(params, cond=None) -> model_fn(x_t, t, probs_prev) -> logits``
    Self-conditioning only: the network fed ``probs_prev``, for ``diffjax.discrete.sample(...,
    self_condition=True)``, which carries the previous prediction from call to call.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.discrete.processes import DiscreteProcess, MaskedProcess
from diffjax.training.objectives.network import (SELF_COND_SALT, Network, check_self_condition, masked_mean,
                                                 self_condition_two_pass, split_train_eval)

__all__ = ["DISCRETE_LOSSES", "DiscreteObjective", "make_discrete_objective"]


def __dir__():
    return sorted(__all__)


DISCRETE_LOSSES = ("nelbo", "hybrid")
"""The ``loss=`` names of ``make_discrete_objective``."""


@dataclasses.dataclass(frozen=True)
class DiscreteObjective(Network):
    """A discrete diffusion objective for one NNX token model; build it with
    :func:`make_discrete_objective`. All attributes are static; parameters are passed to the
    methods, so ``loss_fn`` and ``model_fn`` are pure and jittable."""

    train_graphdef: Any
    eval_graphdef: Any
    rest: Any
    process: DiscreteProcess
    loss: str = "nelbo"
    num_steps: Optional[int] = None
    ce_weight: float = 0.01
    antithetic: bool = True
    num_classes: Optional[int] = None
    null_class: Optional[int] = None
    x_key: str = "x"
    causal: bool = False
    self_condition: bool = False

    @property
    def vocab_size(self) -> int:
        return self.process.vocab_size

    # ------------------------------------------------------------------ the network
    def model_fn(self, params: Any, cond: Optional[jax.Array] = None):
        """A plain ``model_fn(x_t, t) -> logits`` (inference mode) for the samplers and ELBOs.
        On a class-conditional model ``cond=None`` is the null class. With self-conditioning
        the two-pass network (module docstring)."""
        if self.self_condition:
            fn = self.self_cond_model_fn(params, cond)
            return lambda x, t: self_condition_two_pass(
                lambda p: fn(x, t, p), lambda p: fn(x, t, p), lambda out: self.probs_estimate(out, x),
                self.self_cond_zeros(x))
        if cond is not None and not self.conditional:
            raise ValueError("cond was given but the model has no classes (num_classes=None).")
        if cond is None:
            return lambda x, t: self.apply(params, x, t)
        cond = jnp.asarray(cond)
        return lambda x, t: self.apply(params, x, t, jnp.broadcast_to(cond, (x.shape[0],)))

    def self_cond_model_fn(self, params: Any, cond: Optional[jax.Array] = None):
        """``model_fn(x_t, t, probs_prev) -> logits`` (inference mode): the self-conditioned
        network fed ``probs_prev`` ``(B, L, vocab_size)``, for ``diffjax.discrete.sample(...,
        self_condition=True)``."""
        if not self.self_condition:
            raise ValueError("self_cond_model_fn needs an objective built with self_condition=True")
        if cond is not None and not self.conditional:
            raise ValueError("cond was given but the model has no classes (num_classes=None).")
        if cond is None:
            return lambda x, t, p: self.apply(params, x, t, x_self_cond=p)
        cond = jnp.asarray(cond)
        return lambda x, t, p: self.apply(params, x, t, jnp.broadcast_to(cond, (x.shape[0],)), x_self_cond=p)

    def probs_estimate(self, logits: jax.Array, x_t: jax.Array) -> jax.Array:
        """``p(x0 | x_t)`` (float32, ``x_t.shape + (vocab_size,)``) implied by the network's
        ``logits``: what self-conditioning feeds back (also the samplers' carried estimate)."""
        return jnp.exp(self.process.x0_log_probs(logits, x_t)).astype(jnp.float32)

    def self_cond_zeros(self, x_t: jax.Array) -> jax.Array:
        """The zero self-conditioning input for tokens ``x_t``: ``x_t.shape + (vocab_size,)``."""
        return jnp.zeros(tuple(x_t.shape) + (self.vocab_size,), jnp.float32)

    # ------------------------------------------------------------------ the bound
    def per_sequence(self, model_fn, x0: jax.Array, key: jax.Array) -> jax.Array:
        """The training objective per sequence in nats, shape (B,): ``process.nelbo`` or
        ``process.hybrid_loss`` with this objective's options."""
        if self.loss == "hybrid":
            return self.process.hybrid_loss(model_fn, x0, key, num_steps=self.num_steps,
                                            ce_weight=self.ce_weight, antithetic=self.antithetic)
        kw = {"causal": True} if self.causal else {}
        return self.process.nelbo(model_fn, x0, key, num_steps=self.num_steps,
                                  antithetic=self.antithetic, **kw)

    def loss_fn(self, params: Any, batch: Mapping[str, jax.Array], key: jax.Array):
        """``(loss in nats/token, metrics)`` for ``training.make_train_step`` (module
        docstring)."""
        if self.x_key not in batch:
            raise ValueError(f"batch has no {self.x_key!r} entry (x_key); entries: {sorted(batch)}")
        x0 = jnp.asarray(batch[self.x_key])
        if not jnp.issubdtype(x0.dtype, jnp.integer) or x0.ndim < 2:
            raise ValueError(f"batch[{self.x_key!r}] must hold integer tokens of shape (B, L), "
                             f"got {x0.dtype} {x0.shape}")
        k_loss, k_dropout = jax.random.split(key)

        if self.self_condition:
            k_use, k_first = jax.random.split(jax.random.fold_in(key, SELF_COND_SALT))

            def model_fn(x, t):  # the two-pass rule (module docstring)
                return self_condition_two_pass(
                    lambda p: self.apply(params, x, t, train=True, rngs=k_first, x_self_cond=p),
                    lambda p: self.apply(params, x, t, train=True, rngs=k_dropout, x_self_cond=p),
                    lambda out: self.probs_estimate(out, x), self.self_cond_zeros(x), key=k_use)
        else:
            def model_fn(x, t):
                return self.apply(params, x, t, train=True, rngs=k_dropout)

        per_seq = self.per_sequence(model_fn, x0, k_loss).astype(jnp.float32)
        loss = masked_mean(per_seq, batch.get("mask")) / math.prod(x0.shape[1:])
        metrics = {}
        if self.loss == "nelbo":
            metrics = {"nelbo": loss, "bits_per_token": loss / math.log(2.0)}
        return loss, metrics


def make_discrete_objective(model: nnx.Module, *, process: DiscreteProcess,
                            loss: str = "nelbo", num_steps: Optional[int] = None,
                            ce_weight: float = 0.01, antithetic: bool = True,
                            x_key: str = "x", self_condition: bool = False):
    """Split ``model`` and build its :class:`DiscreteObjective`; returns
    ``(objective, params)`` (``params``: the ``nnx.Param`` state for
    ``training.create_train_state``).

    ``model(tokens, t)`` must return logits over ``process.vocab_size`` tokens; for the masked
    process its input vocabulary must include the mask id ``vocab_size`` (a
    :class:`diffjax.models.TokenTransformer` with ``num_extra_tokens >= 1``).
    ``self_condition=True`` trains a model built with ``self_condition=True`` with
    self-conditioning (module docstring); a ValueError names ``self_condition`` when it does not
    match the model, or for a causal model.
    """
    if not isinstance(process, DiscreteProcess):
        raise ValueError(f"process must be a diffjax.discrete process (masked(...) or "
                         f"uniform(...)), got {process!r}")
    if loss not in DISCRETE_LOSSES:
        raise ValueError(f"loss must be one of {list(DISCRETE_LOSSES)}, got {loss!r}")
    if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int)
                                  or num_steps < 1):
        raise ValueError(f"num_steps must be None (continuous time) or an int >= 1, "
                         f"got {num_steps!r}")
    if not ce_weight >= 0.0:
        raise ValueError(f"ce_weight must be >= 0, got {ce_weight!r}")
    model_vocab = getattr(model, "vocab_size", None)
    if model_vocab is not None and model_vocab != process.vocab_size:
        raise ValueError(f"the model has vocab_size={model_vocab} but the process has "
                         f"vocab_size={process.vocab_size}")
    if isinstance(process, MaskedProcess) and getattr(model, "num_extra_tokens", 1) < 1:
        raise ValueError("the masked process needs a model whose input vocabulary has the mask "
                         "token (num_extra_tokens >= 1)")
    if getattr(process, "fixed_order", False) and (loss != "nelbo" or num_steps is not None):
        raise ValueError(f"order='left_to_right' trains its exact likelihood: loss must be 'nelbo' and "
                         f"num_steps None, got loss={loss!r}, num_steps={num_steps!r}")
    causal = bool(getattr(model, "causal", False))
    if causal and not getattr(process, "fixed_order", False):
        raise ValueError(f"a causal model needs the masked process with order='left_to_right', got "
                         f"{process!r}")
    check_self_condition(model, self_condition)
    if self_condition and causal:
        raise ValueError("self_condition=True is not available for a causal (autoregressive) model")
    train_graphdef, eval_graphdef, params, rest = split_train_eval(model)
    objective = DiscreteObjective(
        train_graphdef=train_graphdef, eval_graphdef=eval_graphdef, rest=rest, process=process,
        loss=loss, num_steps=num_steps, ce_weight=float(ce_weight), antithetic=bool(antithetic),
        num_classes=getattr(model, "num_classes", None),
        null_class=getattr(model, "null_class", None), x_key=x_key, causal=causal,
        self_condition=self_condition)
    return objective, params
