"""The joint image + label objective: one network for a product process (``diffjax.joint``) with a
Gaussian process on the image and a masked process on the class label.

The network is a :class:`diffjax.models.JointUNet`-like model,
``model(x_t, labels_t, t, t_label) -> (prediction, label logits)``, with the label's mask token
``num_classes``. ``make_joint_objective(model, process=product(gaussian(...), masked(K)))``
returns ``(objective, params)``; the objective gives the two pure functions the rest of diffjax
consumes:

``loss_fn(params, batch, key) -> (loss, metrics)``
    ``batch[x_key]`` holds the images ``x0`` (B, H, W, C), ``batch[label_key]`` the labels (B,).
    Each modality gets its own time (UniDiffuser, Bao et al. 2023), so the network learns every
    conditional at once: the image time ``t`` ~ U[t_min, 1] and the label time ``t_label`` ~
    U(0, 1] are drawn independently (each stratified across the batch when ``antithetic``);
    then, independently per example, the image is given clean (t = 0) with probability
    ``clean_prob[0]`` and the label with probability ``clean_prob[1]``. The image is noised by
    the Gaussian part, the label masked by the masked part (with probability
    ``1 - alpha(t_label)``), and the network called once. The loss per example is

        image term (skipped where the image is given)
        + label_weight * label term (non-zero only where the label is masked),

    the image term being ``diffjax.losses.denoising_error`` with ``weighting`` (the loss of
    ``diffjax.losses.denoising_loss``), the label term the cross-entropy
    ``-log p(label | x_t, labels_t)`` (``label_loss="ce"``) or the masked process's
    continuous-time ELBO integrand, ``-alpha'/(1 - alpha)`` times it (``"nelbo"``; for a
    single token its weight 1 / t has an infinite variance near t = 0 under the linear
    schedule). A boolean ``batch["mask"]`` (padding rows) is honoured. Metrics:
    ``image_loss``, ``label_loss`` (means over the whole batch) and ``mse_eps``.

    The key is split once: ``k_t, k_tl, k_clean, k_eps, k_label, k_dropout``.

``model_fn(params) -> model_fn(xs, ts) -> outs``
    The inference network (dropout off) in the convention of ``diffjax.joint``:
    ``xs = (x_t, labels_t)``, ``ts = (t, t_label)``, ``outs = (prediction, logits)``, for
    ``diffjax.joint.sample`` and ``process.nelbo``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax import losses
from diffjax.discrete.elbo import stratified_uniform
from diffjax.discrete.processes import MaskedProcess
from diffjax.gaussian import GaussianProcess
from diffjax.joint.processes import ProductProcess
from diffjax.parameterization import add_noise
from diffjax.training.objectives.network import masked_mean, split_train_eval

__all__ = ["JOINT_LABEL_LOSSES", "JointObjective", "make_joint_objective"]


def __dir__():
    return sorted(__all__)


JOINT_LABEL_LOSSES = ("ce", "nelbo")
"""The ``label_loss=`` names of ``make_joint_objective``."""


@dataclasses.dataclass(frozen=True)
class JointObjective:
    """The joint image + label objective of one NNX model; build it with
    :func:`make_joint_objective` (module docstring). All attributes are static; parameters are
    passed to the methods, so ``loss_fn`` and ``model_fn`` are pure and jittable."""

    train_graphdef: Any
    eval_graphdef: Any
    rest: Any
    process: ProductProcess
    weighting: str = "simple"
    weighting_kwargs: Mapping[str, float] = dataclasses.field(default_factory=dict)
    label_loss: str = "ce"
    label_weight: float = 1.0
    clean_prob: tuple = (0.0, 0.0)
    t_min: float = 1e-5
    antithetic: bool = True
    x_key: str = "x"
    label_key: str = "label"

    @property
    def image_process(self) -> GaussianProcess:
        return self.process.parts[0]

    @property
    def label_process(self) -> MaskedProcess:
        return self.process.parts[1]

    @property
    def num_classes(self) -> int:
        return self.label_process.vocab_size

    # ------------------------------------------------------------------ the network
    def apply(self, params: Any, x, labels, t, t_label, *, train: bool = False, rngs: Any = None):
        """The raw network output ``(prediction, logits)`` (training variant if ``train``)."""
        graphdef = self.train_graphdef if train else self.eval_graphdef
        model = nnx.merge(graphdef, params, self.rest)
        return model(x, labels, t, t_label, rngs=rngs)

    def model_fn(self, params: Any):
        """A plain ``model_fn(xs, ts) -> (prediction, logits)`` (inference mode) for
        ``diffjax.joint.sample``."""
        def fn(xs, ts):
            x, labels = xs
            t, t_label = ts
            return self.apply(params, x, labels, t, t_label)
        return fn

    # ------------------------------------------------------------------ the loss
    def loss_fn(self, params: Any, batch: Mapping[str, jax.Array], key: jax.Array):
        """``(loss, metrics)`` for ``training.make_train_step`` (module docstring)."""
        for k in (self.x_key, self.label_key):
            if k not in batch:
                raise ValueError(f"batch has no {k!r} entry; entries: {sorted(batch)}")
        x0 = batch[self.x_key]
        labels = jnp.asarray(batch[self.label_key]).astype(jnp.int32)
        mask = batch.get("mask")
        B = x0.shape[0]
        k_t, k_tl, k_clean, k_eps, k_label, k_dropout = jax.random.split(key, 6)
        tdtype = jnp.promote_types(x0.dtype, jnp.float32)
        t = losses.sample_time(k_t, B, antithetic=self.antithetic, t_min=self.t_min, t_max=1.0, dtype=tdtype)
        t_label = 1.0 - stratified_uniform(k_tl, B, tdtype, self.antithetic)  # in (0, 1]
        u = jax.random.uniform(k_clean, (2, B), tdtype)
        image_given = u[0] < self.clean_prob[0]
        t = jnp.where(image_given, 0.0, t)
        t_label = jnp.where(u[1] < self.clean_prob[1], 0.0, t_label)

        schedule = self.image_process.schedule
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        x_t = add_noise(x0, eps, t, schedule)
        labels_t = self.label_process.sample_marginal(k_label, labels, t_label)
        out, logits = self.apply(params, x_t, labels_t, t, t_label, train=True, rngs=k_dropout)

        # where the image is given, its term is dropped; the weights are evaluated at a safe time
        t_safe = jnp.where(image_given, 0.5, t)
        image_term, mse = losses.denoising_error(out, x0, eps, x_t, t_safe, schedule=schedule,
                                                 prediction=self.image_process.prediction,
                                                 weighting=self.weighting, **dict(self.weighting_kwargs))
        image_term = jnp.where(image_given, 0.0, image_term)
        lp = self.label_process
        logp = lp.x0_log_probs(logits, labels_t)
        if self.label_loss == "nelbo":
            label_term = lp.continuous_integrand(labels, labels_t, logp, t_label)
        else:
            ce = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
            label_term = jnp.where(labels_t == lp.mask_id, ce, 0.0)
        loss = masked_mean(image_term + self.label_weight * label_term, mask)
        metrics = {"image_loss": masked_mean(image_term, mask), "label_loss": masked_mean(label_term, mask),
                   "mse_eps": masked_mean(jnp.where(image_given, 0.0, mse), mask)}
        return loss, metrics


def make_joint_objective(model: nnx.Module, *, process: ProductProcess, weighting: str = "simple",
                         weighting_kwargs: Optional[Mapping[str, float]] = None, label_loss: str = "ce",
                         label_weight: float = 1.0, clean_prob=(0.0, 0.0), t_min: float = 1e-5,
                         antithetic: bool = True, x_key: str = "x", label_key: str = "label"):
    """Split ``model`` and build its :class:`JointObjective`; returns ``(objective, params)``.

    ``process``: ``diffjax.joint.product(diffjax.gaussian(schedule, prediction),
    diffjax.discrete.masked(K))`` (the image part first); ``model(x, labels, t, t_label)`` must
    return ``(prediction, logits over K)`` and take the mask token K (``model.num_classes ==
    K``). ``clean_prob``: ``(image, label)`` probabilities of giving that part clean (t = 0),
    each in [0, 1). Bad arguments raise a ValueError naming them.
    """
    if not (isinstance(process, ProductProcess) and process.num_parts == 2
            and isinstance(process.parts[0], GaussianProcess) and isinstance(process.parts[1], MaskedProcess)
            and not getattr(process.parts[1], "fixed_order", False)):
        raise ValueError(f"process must be diffjax.joint.product(gaussian(...), masked(K)) (an image and a "
                         f"label), got {process!r}")
    if weighting not in losses.WEIGHTINGS:
        raise ValueError(f"weighting must be one of {list(losses.WEIGHTINGS)}, got {weighting!r}")
    if label_loss not in JOINT_LABEL_LOSSES:
        raise ValueError(f"label_loss must be one of {list(JOINT_LABEL_LOSSES)}, got {label_loss!r}")
    if not label_weight >= 0.0:
        raise ValueError(f"label_weight must be >= 0, got {label_weight!r}")
    clean_prob = tuple(float(p) for p in clean_prob)
    if len(clean_prob) != 2 or not all(0.0 <= p < 1.0 for p in clean_prob):
        raise ValueError(f"clean_prob must be two probabilities in [0, 1) (image, label), got {clean_prob!r}")
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must be in [0, 1), got {t_min!r}")
    K = process.parts[1].vocab_size
    if getattr(model, "num_classes", None) != K:
        raise ValueError(f"the model must predict the process's {K} labels (num_classes={K}, mask token {K}), "
                         f"got num_classes={getattr(model, 'num_classes', None)!r}")
    train_graphdef, eval_graphdef, params, rest = split_train_eval(model)
    objective = JointObjective(
        train_graphdef=train_graphdef, eval_graphdef=eval_graphdef, rest=rest, process=process,
        weighting=weighting, weighting_kwargs=dict(weighting_kwargs or {}), label_loss=label_loss,
        label_weight=float(label_weight), clean_prob=clean_prob, t_min=float(t_min),
        antithetic=bool(antithetic), x_key=x_key, label_key=label_key)
    return objective, params
