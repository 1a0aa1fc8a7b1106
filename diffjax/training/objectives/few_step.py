"""Few-step objectives: MeanFlow, continuous-time consistency and progressive distillation
(the math is :mod:`diffjax.few_step`; this module is its glue to a Flax NNX model).

Each is an :class:`~diffjax.training.objectives.gaussian.Objective` (same ``loss_fn(params,
batch, key)``, ``model_fn(params, cond=None, guidance_scale=1.0)``, class conditioning with
condition dropout, masks; the key is split as ``k_loss, k_cond, k_dropout``) with its own
sampler::

    x, info = objective.sample(params, key, shape, steps=K)   # K network calls

``objective.sampler`` names that sampler (the ``sample.solver`` of a config);
``objective.likelihood`` says whether ``model_fn`` is a diffusion model whose ODE likelihood
means something.

* :class:`MeanFlowObjective` (``make_meanflow_objective``): the model, built with
  ``second_time=True``, is the average velocity ``u(z, r, t) = model(z, t, t2=t - r)`` on the
  rectified-flow path; ``model_fn`` is its instantaneous velocity ``u(z, t, t)`` (a
  ``"flow"`` prediction on ``rectified_flow``: the usual solvers and the ODE likelihood work
  on it).
* :class:`ConsistencyObjective` (``make_consistency_objective``): the consistency function is
  the x0 reading of the model's prediction; with a ``teacher`` it is consistency distillation,
  without one consistency training.
* :class:`ProgressiveObjective` (``make_progressive_objective``): a ``student_steps``-step
  DDIM student of a ``teacher`` that takes twice as many.

A ``teacher`` is a callable ``teacher(x_t, t) -> x0 estimate`` on the objective's schedule
(its parameters closed over; it is called only when ``loss_fn`` is traced).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax import few_step, solvers
from diffjax.parameterization import check_kind, convert
from diffjax.schedules import Schedule, rectified_flow
from diffjax.training.objectives.gaussian import Objective
from diffjax.training.objectives.network import masked_mean, split_train_eval

__all__ = ["FewStepObjective", "MeanFlowObjective", "ConsistencyObjective",
           "ProgressiveObjective", "make_meanflow_objective", "make_consistency_objective",
           "make_progressive_objective", "FEW_STEP_SAMPLERS"]


def __dir__():
    return sorted(__all__)


FEW_STEP_SAMPLERS = ("meanflow", "consistency", "progressive")
"""The names of the few-step samplers (``objective.sampler``), one per ``make_*_objective``."""


@dataclasses.dataclass(frozen=True)
class FewStepObjective(Objective):
    """The shared part: ``sample`` and the per-row conditioning."""

    sampler: str = ""
    teacher: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def likelihood(self) -> bool:
        return True

    def _labels(self, cond, batch: int):
        if cond is None:
            return None
        if not self.conditional:
            raise ValueError("cond was given but the model has no classes (num_classes=None).")
        return jnp.broadcast_to(jnp.asarray(cond), (batch,))

    def _teacher(self) -> Callable:
        if self.teacher is None:
            raise ValueError(f"{type(self).__name__} needs a teacher (teacher(x_t, t) -> x0)")
        return self.teacher

    def sample(self, params: Any, key, shape, *, steps: int, cond=None, x_init=None):
        """``(x, info)``: ``steps`` network calls of this objective's few-step sampler
        (``info["nfe"]``)."""
        raise NotImplementedError

    def _finish(self, per_example, aux: Mapping[str, jax.Array], mask):
        return masked_mean(per_example, mask), {k: masked_mean(v, mask) for k, v in aux.items()}


@dataclasses.dataclass(frozen=True)
class MeanFlowObjective(FewStepObjective):
    """MeanFlow (module docstring); options as in ``diffjax.few_step.meanflow_loss``."""

    average_share: float = 0.25
    time_mean: float = -0.4
    time_std: float = 1.0
    adaptive_p: float = 1.0
    adaptive_c: float = 1e-3

    def average_velocity(self, params: Any, cond=None, *, train: bool = False, rngs=None):
        """``u(z, r, t)`` as a plain function (the network with ``t2 = t - r``)."""
        def u(z, r, t):
            return self.apply(params, z, t, self._labels(cond, z.shape[0]), train=train,
                              rngs=rngs, t2=t - r)
        return u

    def loss_fn(self, params: Any, batch: Mapping[str, jax.Array], key: jax.Array):
        x0, mask, cond, k_loss, k_dropout = self.inputs(batch, key)
        u = self.average_velocity(params, cond, train=True, rngs=k_dropout)
        teacher = None if self.teacher is None else (
            lambda z, t: convert(self.teacher(z, t), z, t, self.schedule, source="x0",
                                 target="flow"))
        per_example, aux = few_step.meanflow_loss(
            u, jnp.asarray(x0), k_loss, average_share=self.average_share,
            time_mean=self.time_mean, time_std=self.time_std, adaptive_p=self.adaptive_p,
            adaptive_c=self.adaptive_c, velocity_fn=teacher)
        return self._finish(per_example, aux, mask)

    def sample(self, params: Any, key, shape, *, steps: int, cond=None, x_init=None):
        return few_step.meanflow_sample(self.average_velocity(params, cond), key, shape,
                                        steps=steps, x_init=x_init)


@dataclasses.dataclass(frozen=True)
class ConsistencyObjective(FewStepObjective):
    """Continuous-time consistency training / distillation (module docstring); options as in
    ``diffjax.few_step.consistency_loss``; ``sample_t_max`` is where sampling starts."""

    time_mean: Optional[float] = None
    time_std: float = 1.6
    tangent_c: float = 0.1
    sample_t_max: float = 1.0
    dt: Optional[float] = None

    @property
    def likelihood(self) -> bool:
        return False

    def consistency_fn(self, params: Any, cond=None):
        """``f(x, t)``: the x0 reading of the network (inference mode)."""
        def f(x, t):
            out = self.apply(params, x, t, self._labels(cond, x.shape[0]))
            return convert(out, x, t, self.schedule, source=self.prediction, target="x0")
        return f

    def loss_fn(self, params: Any, batch: Mapping[str, jax.Array], key: jax.Array):
        x0, mask, cond, k_loss, k_dropout = self.inputs(batch, key)

        def net(x, t):
            return self.apply(params, x, t, cond, train=True, rngs=k_dropout)

        per_example, aux = few_step.consistency_loss(
            net, jnp.asarray(x0), k_loss, schedule=self.schedule, prediction=self.prediction,
            teacher_x0_fn=self.teacher, t_min=1e-3 if self.t_min is None else self.t_min,
            t_max=self.t_max, time_mean=self.time_mean, time_std=self.time_std,
            tangent_c=self.tangent_c, dt=self.dt)
        return self._finish(per_example, aux, mask)

    def sample(self, params: Any, key, shape, *, steps: int, cond=None, x_init=None):
        return few_step.consistency_sample(self.consistency_fn(params, cond), key, shape,
                                           schedule=self.schedule, steps=steps,
                                           t_max=self.sample_t_max, x_init=x_init)


@dataclasses.dataclass(frozen=True)
class ProgressiveObjective(FewStepObjective):
    """One round of progressive distillation: a ``student_steps``-step DDIM student."""

    student_steps: int = 1

    def loss_fn(self, params: Any, batch: Mapping[str, jax.Array], key: jax.Array):
        x0, mask, cond, k_loss, k_dropout = self.inputs(batch, key)

        def net(x, t):
            return self.apply(params, x, t, cond, train=True, rngs=k_dropout)

        per_example, aux = few_step.progressive_loss(
            net, self._teacher(), jnp.asarray(x0), k_loss, schedule=self.schedule,
            prediction=self.prediction, student_steps=self.student_steps)
        return self._finish(per_example, aux, mask)

    def sample(self, params: Any, key, shape, *, steps: int, cond=None, x_init=None):
        """DDIM on the uniform grid ``steps`` intervals from 1 to 0, no final denoising call
        (the student's own grid when ``steps == student_steps``)."""
        return solvers.sample(self.model_fn(params, cond), key, shape, schedule=self.schedule,
                              prediction=self.prediction, solver="ddim",
                              ts=few_step.uniform_steps(int(steps)), x_init=x_init,
                              denoise_final=False)


# ------------------------------------------------------------------------------ builders
def _base(model: nnx.Module, cond_drop: float, x_key: str, label_key: str):
    if not 0.0 <= cond_drop <= 1.0:
        raise ValueError(f"cond_drop must be in [0, 1], got {cond_drop!r}")
    num_classes = getattr(model, "num_classes", None)
    if cond_drop > 0 and num_classes is None:
        raise ValueError(f"cond_drop={cond_drop} needs a class-conditional model (num_classes set)")
    train_graphdef, eval_graphdef, params, rest = split_train_eval(model)
    return params, dict(train_graphdef=train_graphdef, eval_graphdef=eval_graphdef, rest=rest,
                        num_classes=num_classes, null_class=getattr(model, "null_class", None),
                        cond_drop=float(cond_drop), x_key=x_key, label_key=label_key)


def _check_teacher(teacher, model, required: bool):
    if teacher is None:
        if required:
            raise ValueError("teacher must be given: a callable teacher(x_t, t) -> x0 estimate")
        return
    if not callable(teacher):
        raise ValueError(f"teacher must be a callable teacher(x_t, t) -> x0, got {teacher!r}")
    if getattr(model, "num_classes", None) is not None:
        raise ValueError("a teacher is supported for unconditional models only")


def _has_second_time(model: nnx.Module) -> bool:
    return any(getattr(node, "time2", None) is not None for _, node in nnx.iter_graph(model))


def make_meanflow_objective(model: nnx.Module, *, average_share: float = 0.25,
                            time_mean: float = -0.4, time_std: float = 1.0,
                            adaptive_p: float = 1.0, adaptive_c: float = 1e-3,
                            teacher: Optional[Callable] = None, cond_drop: float = 0.0,
                            x_key: str = "x", label_key: str = "label"):
    """``(MeanFlowObjective, params)``; ``model`` must be built with ``second_time=True``.
    ``teacher`` (optional): an x0 estimate on the rectified-flow path whose velocity replaces
    the conditional one."""
    if not _has_second_time(model):
        raise ValueError("MeanFlow needs a model with a second time input: build it with "
                         "second_time=True (config: model.second_time=True)")
    if not 0.0 <= average_share <= 1.0:
        raise ValueError(f"average_share must be in [0, 1], got {average_share!r}")
    if not time_std > 0:
        raise ValueError(f"time_std must be > 0, got {time_std!r}")
    if adaptive_p < 0 or not adaptive_c > 0:
        raise ValueError(f"adaptive_p must be >= 0 and adaptive_c > 0, got {adaptive_p!r}, "
                         f"{adaptive_c!r}")
    _check_teacher(teacher, model, required=False)
    params, kw = _base(model, cond_drop, x_key, label_key)
    objective = MeanFlowObjective(
        schedule=rectified_flow(), prediction="flow", loss="meanflow", sampler="meanflow",
        teacher=teacher, average_share=float(average_share), time_mean=float(time_mean),
        time_std=float(time_std), adaptive_p=float(adaptive_p), adaptive_c=float(adaptive_c),
        **kw)
    return objective, params


def make_consistency_objective(model: nnx.Module, *, schedule: Schedule, prediction: str,
                               teacher: Optional[Callable] = None, t_min: float = 1e-3,
                               t_max: float = 1.0, time_mean: Optional[float] = None,
                               time_std: float = 1.6, tangent_c: float = 0.1,
                               sample_t_max: float = 1.0, dt: Optional[float] = None,
                               cond_drop: float = 0.0, x_key: str = "x",
                               label_key: str = "label"):
    """``(ConsistencyObjective, params)``: distillation from ``teacher`` (an x0 estimate on
    ``schedule``), or consistency training without one; ``dt`` set: the discrete-time
    tangent (``diffjax.few_step.consistency_loss``)."""
    if dt is not None and not dt > 0:
        raise ValueError(f"dt must be None (continuous time) or > 0, got {dt!r}")
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a diffjax.schedules.Schedule, got "
                         f"{type(schedule).__name__}")
    check_kind(prediction)
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min!r}, t_max={t_max!r}")
    if not 0.0 < sample_t_max <= 1.0:
        raise ValueError(f"sample_t_max must be in (0, 1], got {sample_t_max!r}")
    if tangent_c < 0 or not time_std > 0:
        raise ValueError(f"tangent_c must be >= 0 and time_std > 0, got {tangent_c!r}, "
                         f"{time_std!r}")
    _check_teacher(teacher, model, required=False)
    params, kw = _base(model, cond_drop, x_key, label_key)
    objective = ConsistencyObjective(
        schedule=schedule, prediction=prediction, loss="consistency", sampler="consistency",
        teacher=teacher, t_min=float(t_min), t_max=float(t_max),
        time_mean=None if time_mean is None else float(time_mean), time_std=float(time_std),
        tangent_c=float(tangent_c), sample_t_max=float(sample_t_max),
        dt=None if dt is None else float(dt), **kw)
    return objective, params


def make_progressive_objective(model: nnx.Module, *, schedule: Schedule, prediction: str,
                               teacher: Callable, student_steps: int, cond_drop: float = 0.0,
                               x_key: str = "x", label_key: str = "label"):
    """``(ProgressiveObjective, params)``: the student of ``teacher`` (an x0 estimate on
    ``schedule`` sampled with ``2 * student_steps`` DDIM steps)."""
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a diffjax.schedules.Schedule, got "
                         f"{type(schedule).__name__}")
    check_kind(prediction)
    if isinstance(student_steps, bool) or not isinstance(student_steps, int) or student_steps < 1:
        raise ValueError(f"student_steps must be an int >= 1, got {student_steps!r}")
    _check_teacher(teacher, model, required=True)
    params, kw = _base(model, cond_drop, x_key, label_key)
    objective = ProgressiveObjective(
        schedule=schedule, prediction=prediction, loss="progressive", sampler="progressive",
        teacher=teacher, student_steps=int(student_steps), **kw)
    return objective, params
