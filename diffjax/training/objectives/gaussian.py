"""The Gaussian objective: the glue between a Flax NNX denoiser and the train step / samplers.

Models know nothing about noise; an :class:`Objective` does. It holds the model's graph
definitions (a training variant with dropout active and an inference variant without), the
noise schedule, the prediction kind and the loss, and turns parameters into the two pure
functions the rest of diffjax consumes::

    objective, params = make_objective(model, schedule=schedules.cosine(), prediction="v",
                                       weighting="sigmoid")
    step = training.make_train_step(objective.loss_fn, optimizer, mesh=mesh)
    ...
    x, _ = diffjax.sample(objective.model_fn(state.ema_params), key, shape,
                          schedule=objective.schedule, prediction=objective.prediction)

``loss_fn(params, batch, key) -> (loss, metrics)``
    ``batch[x_key]`` is the clean data ``x0`` (shape ``(B, ...)``; t = 0 is data, t = 1 noise).
    The key is split once, ``k_loss, k_cond, k_dropout = jax.random.split(key, 3)``:
    ``k_loss`` goes to the diffjax loss (time and noise draws, exactly as
    ``diffjax.losses.denoising_loss(model_fn, x0, k_loss, ...)``), ``k_cond`` to the condition
    dropout and ``k_dropout`` to the model's dropout layers. So for a model without dropout and
    without conditioning the loss equals ``mean(denoising_loss(model_fn, x0, k_loss, ...)[0])``.
    A boolean ``batch["mask"]`` (padding rows of a last partial batch) is honoured: masked rows
    do not count.

    Losses (``loss=``):

    * ``"denoising"``: ``diffjax.losses.denoising_loss`` with the named ``weighting``;
    * ``"flow_matching"``: ``diffjax.losses.flow_matching_loss`` along the objective's schedule
      (``prediction="flow"``; with ``rectified_flow`` the target is ``eps - x0``);
    * ``"elbo"``: ``diffjax.losses.vdm_elbo``, trained in bits/dim of the continuous data.

    Class conditioning: when the model has classes (``model.num_classes`` is not None) the
    labels ``batch[label_key]`` are fed to it, each replaced by the model's null class with
    probability ``cond_drop`` (``diffjax.guidance.drop_condition``) so that the same network
    learns the unconditional model for classifier-free guidance.

    Self-conditioning (``self_condition=True``, a model built with ``self_condition=True``;
    Chen et al. 2022): the model also takes ``x_self_cond``, its previous estimate of x0. Every
    model call of the loss runs the network twice (`network.self_condition_two_pass`): first
    with zeros, whose output is converted to an x0 estimate (``diffjax.parameterization.
    to_x0_eps`` with the objective's schedule and prediction; a non-finite value, e.g. an eps
    model at alpha = 0, becomes 0) under ``stop_gradient``; then with that estimate for a
    random half of the examples (each independently, probability 1/2) and zeros for the others.
    The loss is on the second output. The draws use ``split(fold_in(key, SELF_COND_SALT))`` ->
    ``(k_use, k_first)`` (``k_first``: the first pass's dropout), so the other keys, and the
    loss without the option, are unchanged.

``model_fn(params, cond=None, guidance_scale=1.0) -> model_fn(x_t, t)``
    The inference network (dropout off) as a plain callable for ``diffjax.sample``,
    ``diffjax.encode`` and ``diffjax.likelihood.ode_nll``. On a class-conditional model
    ``cond=None`` is the null class (the unconditional model); ``cond`` labels ``(B,)`` with
    ``guidance_scale != 1`` give classifier-free guidance
    (``diffjax.guidance.classifier_free_batched``, both branches in one batched call). With
    self-conditioning it is the two-pass function of (x_t, t) above (every example gets the
    first pass's estimate): what ``diffjax.likelihood.ode_nll`` and the other users of a plain
    ``model_fn(x_t, t)`` see.

``self_cond_model_fn(params, cond=None, guidance_scale=1.0) -> model_fn(x_t, t, x0_prev)``
    Self-conditioning only: the network fed ``x0_prev`` as its self-conditioning input (guided
    as ``model_fn``), for ``diffjax.sample(..., self_condition=True)``, which carries the x0
    estimate of each call to the next::

        x, _ = diffjax.sample(objective.self_cond_model_fn(params), key, shape,
                              schedule=objective.schedule, prediction=objective.prediction,
                              self_condition=True)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax import guidance, losses
from diffjax.parameterization import check_kind, to_x0_eps
from diffjax.schedules import Schedule
from diffjax.training.objectives.network import (SELF_COND_SALT, Network, check_self_condition, masked_mean,
                                                 self_condition_two_pass, split_train_eval)

__all__ = ["LOSSES", "Objective", "make_objective"]


def __dir__():
    return sorted(__all__)


LOSSES = ("denoising", "flow_matching", "elbo")
"""The ``loss=`` names of ``make_objective``."""


@dataclasses.dataclass(frozen=True)
class Objective(Network):
    """A diffusion objective for one NNX model; build it with :func:`make_objective`.

    All attributes are static (graph definitions, schedule, options); parameters are passed
    to the methods, so ``loss_fn`` and ``model_fn`` are pure and jittable.
    """

    train_graphdef: Any
    eval_graphdef: Any
    rest: Any
    schedule: Schedule
    prediction: str
    loss: str = "denoising"
    weighting: str = "simple"
    weighting_kwargs: Mapping[str, float] = dataclasses.field(default_factory=dict)
    t_min: Optional[float] = None
    t_max: float = 1.0
    antithetic: bool = True
    importance: Optional[str] = None
    num_classes: Optional[int] = None
    null_class: Optional[int] = None
    cond_drop: float = 0.0
    x_key: str = "x"
    label_key: str = "label"
    self_condition: bool = False

    # ------------------------------------------------------------------ the network
    def model_fn(self, params: Any, cond: Optional[jax.Array] = None,
                 guidance_scale: float = 1.0):
        """A plain ``model_fn(x_t, t) -> prediction`` (inference mode) for the samplers; with
        self-conditioning the two-pass network (module docstring)."""
        if self.self_condition:
            fn = self.self_cond_model_fn(params, cond, guidance_scale)
            return lambda x, t: self_condition_two_pass(
                lambda p: fn(x, t, p), lambda p: fn(x, t, p), lambda out: self.x0_estimate(out, x, t),
                jnp.zeros_like(x))
        if cond is None:
            return lambda x, t: self.apply(params, x, t)
        if not self.conditional:
            raise ValueError("cond was given but the model has no classes (num_classes=None).")
        cond = jnp.asarray(cond)
        if isinstance(guidance_scale, (int, float)) and guidance_scale == 1.0:
            return lambda x, t: self.apply(params, x, t, jnp.broadcast_to(cond, (x.shape[0],)))
        return guidance.classifier_free_batched(
            lambda x, t, c: self.apply(params, x, t, c), cond, self.null_class, guidance_scale)

    def self_cond_model_fn(self, params: Any, cond: Optional[jax.Array] = None,
                           guidance_scale: float = 1.0):
        """``model_fn(x_t, t, x0_prev) -> prediction`` (inference mode): the self-conditioned
        network fed ``x0_prev``, for ``diffjax.sample(..., self_condition=True)``. ``cond`` and
        ``guidance_scale`` as in `model_fn` (both guidance branches see ``x0_prev``)."""
        if not self.self_condition:
            raise ValueError("self_cond_model_fn needs an objective built with self_condition=True")
        if cond is None:
            return lambda x, t, p: self.apply(params, x, t, x_self_cond=p)
        if not self.conditional:
            raise ValueError("cond was given but the model has no classes (num_classes=None).")
        cond = jnp.asarray(cond)
        if isinstance(guidance_scale, (int, float)) and guidance_scale == 1.0:
            return lambda x, t, p: self.apply(params, x, t, jnp.broadcast_to(cond, (x.shape[0],)),
                                              x_self_cond=p)

        def guided(x, t, p):
            def net(x2, t2, c):  # both branches in one batch: rows 2i, 2i + 1 are example i
                p2 = p if x2.shape[0] == p.shape[0] else jnp.repeat(p, x2.shape[0] // p.shape[0], axis=0)
                return self.apply(params, x2, t2, c, x_self_cond=p2)
            return guidance.classifier_free_batched(net, cond, self.null_class, guidance_scale)(x, t)
        return guided

    def x0_estimate(self, out: jax.Array, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """The clean-data estimate a network output of the objective's prediction kind implies
        at (x_t, t), in the dtype of ``x_t``, non-finite values (an eps model where alpha = 0)
        replaced by 0: what self-conditioning feeds back."""
        x0, _ = to_x0_eps(out, x_t, t, self.schedule, self.prediction)
        return jnp.where(jnp.isfinite(x0), x0, 0.0).astype(x_t.dtype)

    # ------------------------------------------------------------------ the loss
    def inputs(self, batch: Mapping[str, jax.Array], key: jax.Array):
        """``(x0, mask or None, labels or None, k_loss, k_dropout)`` of a batch: the key is
        split once, ``k_loss, k_cond, k_dropout = jax.random.split(key, 3)``, and ``k_cond``
        drops labels to the null class with probability ``cond_drop``."""
        if self.x_key not in batch:
            raise ValueError(f"batch has no {self.x_key!r} entry (x_key); entries: {sorted(batch)}")
        x0 = batch[self.x_key]
        mask = batch.get("mask")
        k_loss, k_cond, k_dropout = jax.random.split(key, 3)
        cond = None
        if self.conditional:
            if self.label_key not in batch:
                raise ValueError(f"the model is class-conditional but the batch has no "
                                 f"{self.label_key!r} entry (label_key); entries: {sorted(batch)}")
            cond = jnp.asarray(batch[self.label_key]).astype(jnp.int32)
            if self.cond_drop > 0:
                cond = guidance.drop_condition(k_cond, cond, self.cond_drop, self.null_class)
        return x0, mask, cond, k_loss, k_dropout

    def loss_fn(self, params: Any, batch: Mapping[str, jax.Array], key: jax.Array):
        """``(loss, metrics)`` for ``training.make_train_step`` (see the module docstring)."""
        x0, mask, cond, k_loss, k_dropout = self.inputs(batch, key)

        if self.self_condition:
            k_use, k_first = jax.random.split(jax.random.fold_in(key, SELF_COND_SALT))

            def model_fn(x, t):  # the two-pass rule (module docstring)
                return self_condition_two_pass(
                    lambda p: self.apply(params, x, t, cond, train=True, rngs=k_first, x_self_cond=p),
                    lambda p: self.apply(params, x, t, cond, train=True, rngs=k_dropout, x_self_cond=p),
                    lambda out: self.x0_estimate(out, x, t), jnp.zeros_like(x), key=k_use)
        else:
            def model_fn(x, t):
                return self.apply(params, x, t, cond, train=True, rngs=k_dropout)

        kw = dict(antithetic=self.antithetic, t_max=self.t_max)
        if self.t_min is not None:
            kw["t_min"] = self.t_min
        metrics = {}
        if self.loss == "elbo":
            _, terms = losses.vdm_elbo(model_fn, x0, k_loss, schedule=self.schedule,
                                       prediction=self.prediction, importance=self.importance, **kw)
            per_example = terms["bits_per_dim"]
            for name in ("diffusion", "prior", "reconstruction"):
                metrics[f"elbo_{name}"] = masked_mean(terms[name], mask)
        else:
            if self.loss == "flow_matching":
                per_example, aux = losses.flow_matching_loss(
                    model_fn, x0, k_loss, schedule=self.schedule, importance=self.importance, **kw)
            else:
                per_example, aux = losses.denoising_loss(
                    model_fn, x0, k_loss, schedule=self.schedule, prediction=self.prediction,
                    weighting=self.weighting, importance=self.importance, **kw,
                    **dict(self.weighting_kwargs))
            metrics["mse_eps"] = masked_mean(aux["mse_eps"], mask)
        loss = masked_mean(per_example, mask)
        return loss, metrics


def make_objective(model: nnx.Module, *, schedule: Schedule, prediction: str,
                   loss: str = "denoising", weighting: str = "simple",
                   weighting_kwargs: Optional[Mapping[str, float]] = None,
                   t_min: Optional[float] = None, t_max: float = 1.0, antithetic: bool = True,
                   importance: Optional[str] = None, cond_drop: float = 0.0, x_key: str = "x",
                   label_key: str = "label", self_condition: bool = False):
    """Split ``model`` and build its :class:`Objective`; returns ``(objective, params)``.

    ``params`` is the ``nnx.Param`` state (the trainable parameters, for
    ``training.create_train_state``); everything else of the model (e.g. a fixed Fourier
    kernel) stays in ``objective.rest``. ``t_min=None`` keeps the loss function's default.
    ``self_condition=True`` trains a model built with ``self_condition=True`` with
    self-conditioning (module docstring); a ValueError names ``self_condition`` when it does not
    match the model.
    """
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a diffjax.schedules.Schedule, got {type(schedule).__name__}")
    check_kind(prediction)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if loss == "flow_matching" and prediction != "flow":
        raise ValueError(f"loss='flow_matching' needs prediction='flow', got {prediction!r}")
    if weighting not in losses.WEIGHTINGS:
        raise ValueError(f"weighting must be one of {list(losses.WEIGHTINGS)}, got {weighting!r}")
    if not 0.0 <= cond_drop <= 1.0:
        raise ValueError(f"cond_drop must be in [0, 1], got {cond_drop!r}")
    num_classes = getattr(model, "num_classes", None)
    null_class = getattr(model, "null_class", None)
    if cond_drop > 0 and num_classes is None:
        raise ValueError(f"cond_drop={cond_drop} needs a class-conditional model (num_classes set)")
    check_self_condition(model, self_condition)
    train_graphdef, eval_graphdef, params, rest = split_train_eval(model)
    objective = Objective(
        train_graphdef=train_graphdef, eval_graphdef=eval_graphdef, rest=rest, schedule=schedule,
        prediction=prediction, loss=loss, weighting=weighting,
        weighting_kwargs=dict(weighting_kwargs or {}), t_min=t_min, t_max=t_max,
        antithetic=antithetic, importance=importance, num_classes=num_classes,
        null_class=null_class, cond_drop=float(cond_drop), x_key=x_key, label_key=label_key,
        self_condition=self_condition)
    return objective, params
