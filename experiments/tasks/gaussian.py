r"""The Gaussian task: diffusion and flows on points (toy 2-D sets) and images.

Config sections (``experiments/configs/{toy,digits,digits_cond,mnist,cifar10,...}.py``)::

    data.name (toy sets, "digits", TFDS images, "imagenet256_latents", "image_folder"),
         .dequantize, .random_flip; "image_folder" (your own PNG/JPEG files,
         `diffjax.data.local`): .path (the folder; one sub-folder per class optional) and
         .image_size (side N of the N x N images), e.g. ``--config=experiments/configs/
         cifar10.py --config.data.name=image_folder --config.data.path=DIR
         --config.data.image_size=32`` (the model's widths come from the config; any
         image_size the U-Net's levels can halve works, attn_resolutions must be among them)
    model.name ("mlp" | "unet" | "dit"), its widths, model.class_conditional
    diffusion.schedule (+ schedule_kwargs), .prediction, .loss, .weighting (+ weighting_kwargs),
         .t_min (0 = the loss's default), .antithetic, .importance ("" = none), .cond_drop;
         .loss = "meanflow" | "consistency" | "progressive" picks a few-step objective
         (`diffjax.training.objectives.few_step`) whose own sampler is sample.solver = that name
    few_step (few-step configs only): .teacher_workdir (a trained run to distill; "" = none),
         .init_from_teacher, MeanFlow's .average_share, .time_mean, .time_std, .adaptive_p,
         .adaptive_c; consistency's .dt (0 = continuous time), .tangent_c, .time_mean,
         .time_std, .sample_t_max; progressive's .student_steps
    model.second_time (MeanFlow: a second time input), model.time_scale (0 = default),
         model.input_fourier_features, .input_fourier_scale (mlp: random Fourier features
         of the input; 0 = none, the default)
    model.self_condition (mlp, unet; default False): self-conditioning (Chen et al. 2022),
         the model also gets its previous x0 estimate; trained with the two-pass rule of
         `make_objective(..., self_condition=True)` and sampled with
         ``diffjax.sample(..., self_condition=True)`` (fixed-grid solvers; not rk45), e.g.
         ``--config=experiments/configs/digits.py --config.model.self_condition=True``
    sample.solver, .steps, .t_min, .grid ("" = the solver's), .num_samples, .batch_size,
         .guidance_scale, .labels ("uniform" cycles the classes on a conditional model)
    eval.num_samples, .nll_examples, .nll_batch_size, .nll_rtol, .nll_atol, .nll_probes,
         .nll_t_min, .seed, .inception_weights ("" = no FID), .feature_cache_dir ("" = the
         feature network cache's default, `experiments.feature_net`)

``experiments.sample`` writes ``.npy`` in the dataset's original value range: toy data as raw
float32 coordinates ``(N, 2)``; digits as levels 0..16 ``(N, 8, 8, 1)``; TFDS images as
uint8 0..255 ``(N, H, W, C)``; a class-conditional model's labels go to ``FILE_labels.npy``.
``--class=K`` draws every sample from class K with classifier-free guidance ``--guidance=W``
(``uncond + W (cond - uncond)``: W = 0 is the unconditional, null-class model, W = 1 the
conditional one), through `GuidedSampler` (class and scale traced: one compilation).

``experiments.evaluate`` writes ``metrics.json``:

* bits/dim by the probability-flow ODE likelihood (``diffjax.likelihood.ode_nll``,
  Hutchinson trace estimator, adaptive Dopri5) on held-out data (the dataset's ``test``
  split). Images are evaluated on uniformly dequantised held-out data and reported as the
  discrete-data bound (with the dequantisation offset ``log(L / 2)`` per dimension); toy data
  as continuous bits/dim, ``nll / (2 log 2)``.
* sample quality (``experiments.metrics``): toy -- sliced Wasserstein-1 / data std against
  exact draws (``sw_over_std``) beside its noise floor, the same figure between two
  independent exact sample sets of the same size (``sw_over_std_floor``, mean over 5 pairs,
  and ``sw_over_std_floor_std``), and for the checkerboard the share of samples on its
  squares (``support_share``, 1 for exact samples); digits -- SVC confident-share ratio and
  class entropy; other images -- pixel statistics. Images also get feature figures against
  the training data (``experiments.image_metrics``): Fréchet distance, KID, precision /
  recall in the features of a small classifier trained on the dataset and cached
  (``fd_digits_features``, ...), and with an InceptionV3 weight file
  (``eval.inception_weights`` or ``--inception_weights=PATH``) FID (``fid_inception``, ...).
* ``eval_samples.png`` (scatter plot or sample grid) and ``eval/*`` TensorBoard scalars.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from flax import nnx

import diffjax
from diffjax import data as ddata
from diffjax import models, platform, schedules, training
from diffjax.training.objectives import (FewStepObjective, Objective, make_consistency_objective,
                                         make_meanflow_objective, make_objective,
                                         make_progressive_objective)
from experiments import common, image_metrics, metrics, plots
from experiments.tasks.base import Task

__all__ = ["GaussianTask", "GuidedSampler", "Teacher", "class_labels", "generate",
           "sample_labels", "sample_from_config", "build_schedule", "draw_batch", "METRICS_FILE"]

METRICS_FILE = "metrics.json"


def build_schedule(config) -> schedules.Schedule:
    d = config.diffusion
    return schedules.get(d.schedule, **dict(d.get("schedule_kwargs", {}) or {}))


# ---------------------------------------------------------------------------- sampling
def sample_labels(objective: Objective, config, num: int) -> Optional[np.ndarray]:
    """Labels for sampling: cycling through the classes on a conditional model with
    ``sample.labels == "uniform"``, else None (the unconditional / null-class model)."""
    if objective.conditional and config.sample.get("labels", "uniform") == "uniform":
        return (np.arange(num) % objective.num_classes).astype(np.int32)
    return None


def _sampler_kwargs(objective, solver: str, steps: int, t_min: float, grid) -> dict:
    """What `draw_batch` needs: ``{"few_step": steps}`` for a few-step objective's own
    sampler (``solver == objective.sampler``), else the arguments of ``diffjax.sample``."""
    if isinstance(objective, FewStepObjective) and solver == objective.sampler:
        return {"few_step": int(steps)}
    kw = dict(schedule=objective.schedule, prediction=objective.prediction, solver=solver,
              t_min=float(t_min), grid=common.opt(grid))
    if solver != "rk45":
        kw["steps"] = int(steps)
    return kw


def draw_batch(objective, params, key, shape, kw: dict, *, cond=None, guidance_scale=1.0,
               x_init=None):
    """``(x, info)``: one batch from the sampler ``kw`` describes (`_sampler_kwargs`). The one
    place that picks between a few-step objective's own sampler (``objective.sample``, exactly
    ``steps`` network calls; a conditional one draws from ``cond`` without guidance) and the
    ODE/SDE solvers of ``diffjax.sample`` on ``objective.model_fn``."""
    if "few_step" in kw:
        return objective.sample(params, key, shape, steps=kw["few_step"], cond=cond,
                                x_init=x_init)
    if getattr(objective, "self_condition", False):  # the sampler carries the x0 estimate
        fn = objective.self_cond_model_fn(params) if cond is None else \
            objective.self_cond_model_fn(params, cond, guidance_scale)
        return diffjax.sample(fn, key, shape, x_init=x_init, self_condition=True, **kw)
    fn = objective.model_fn(params) if cond is None else \
        objective.model_fn(params, cond, guidance_scale)
    return diffjax.sample(fn, key, shape, x_init=x_init, **kw)


def _config_sampler_kwargs(objective, config) -> dict:
    s = config.sample
    return _sampler_kwargs(objective, s.solver, int(s.steps), float(s.t_min), s.get("grid", ""))


def generate(objective: Objective, params, key, num: int, shape, *, solver: str, steps: int,
             t_min: float = 1e-3, grid: Optional[str] = None, batch_size: int = 1000,
             labels: Optional[np.ndarray] = None, guidance_scale: float = 1.0) -> np.ndarray:
    """``num`` samples in model space (numpy), drawn ``batch_size`` at a time
    (`experiments.common.map_batches`: one compilation; chunk ``i`` uses
    ``fold_in(key, i)``)."""
    batch_size = int(min(batch_size, num))
    shape = tuple(int(s) for s in shape)
    kw = _sampler_kwargs(objective, solver, steps, t_min, grid)

    @platform.jit
    def draw(params, key, cond):
        return draw_batch(objective, params, key, (batch_size,) + shape, kw, cond=cond,
                          guidance_scale=guidance_scale)[0]

    if jax.process_count() == 1:  # one device is plenty for sampling on a single host
        params = jax.device_put(params, jax.local_devices()[0])
    x, _ = common.map_batches(lambda k, cond: (draw(params, k, cond), None), key, num,
                              batch_size, labels)
    return x


def sample_from_config(objective: Objective, params, info, config, num: int, seed: int, *,
                       solver: Optional[str] = None, steps: Optional[int] = None):
    """``(model-space samples, labels or None)`` with the config's sampling settings."""
    s = config.sample
    labels = sample_labels(objective, config, num)
    x = generate(objective, params, jax.random.key(seed), num, info.shape,
                 solver=solver or s.solver, steps=int(steps or s.steps), t_min=float(s.t_min),
                 grid=s.get("grid", ""), batch_size=int(s.batch_size), labels=labels,
                 guidance_scale=float(s.get("guidance_scale", 1.0)))
    return x, labels


def class_labels(objective, class_label: int, num: int) -> np.ndarray:
    """``num`` copies of ``class_label`` after checking it against the model's classes."""
    if not objective.conditional:
        raise ValueError(f"class={class_label} was given but the model is not class-conditional "
                         f"(train with model.class_conditional=True, e.g. configs/digits_cond.py)")
    if isinstance(class_label, bool) or not 0 <= int(class_label) < objective.num_classes:
        raise ValueError(f"class must be an int in [0, {objective.num_classes}), got {class_label!r}")
    return np.full(int(num), int(class_label), np.int32)


class GuidedSampler:
    """Class-conditional samples with classifier-free guidance, compiled once.

    ``sampler(params, key, labels, scale)`` returns ``len(labels)`` samples in model space
    (numpy), drawn ``batch_size`` at a time by ``experiments.common.map_batches``, exactly as
    `generate`. ``labels`` and ``scale`` are traced: changing the class or the guidance scale
    reuses the compiled sampler (``traces`` counts how often it was traced).
    """

    def __init__(self, objective, shape: Sequence[int], *, solver: str = "dpmpp_2m",
                 steps: int = 50, t_min: float = 1e-3, grid: Optional[str] = None,
                 batch_size: int = 1000):
        if not objective.conditional:
            raise ValueError("GuidedSampler needs a class-conditional objective (num_classes set)")
        self.objective = objective
        self.shape = tuple(int(s) for s in shape)
        self.batch_size = int(batch_size)
        self.kw = _sampler_kwargs(objective, solver, steps, t_min, grid)
        self.traces = 0
        self._draw = platform.jit(self._draw_batch)

    @classmethod
    def from_config(cls, objective, info, config, *, solver=None, steps=None, batch_size=None):
        """The run's sampler settings (``config.sample``), optionally overridden."""
        s = config.sample
        return cls(objective, info.shape, solver=solver or s.solver, steps=int(steps or s.steps),
                   t_min=float(s.t_min), grid=s.get("grid", ""),
                   batch_size=int(batch_size or s.batch_size))

    def _draw_batch(self, params, key, labels, scale):
        self.traces += 1  # Python side effect: runs once per trace, not per call
        return draw_batch(self.objective, params, key, (labels.shape[0],) + self.shape, self.kw,
                          cond=labels, guidance_scale=scale)[0]

    def __call__(self, params, key, labels, scale) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a non-empty 1-D int array, got {labels.dtype} "
                             f"{labels.shape}")
        if labels.min() < 0 or labels.max() >= self.objective.num_classes:
            raise ValueError(f"labels must be in [0, {self.objective.num_classes}), got values in "
                             f"[{labels.min()}, {labels.max()}]")
        if jax.process_count() == 1:
            params = jax.device_put(params, jax.local_devices()[0])
        scale = jnp.asarray(scale, jnp.float32)
        x, _ = common.map_batches(lambda k, chunk: (self._draw(params, k, chunk, scale), None),
                                  key, len(labels), self.batch_size, labels.astype(np.int32))
        return x


def _figure_title(head: str, solver: str, steps: int, quality: Optional[dict] = None) -> str:
    """A sample figure's title: the run, the sampler and, where there is one, the headline
    figure of the samples (the checkerboard's support share)."""
    title = f"{head}: {solver} {steps} steps"
    if quality and "support_share" in quality:
        title += f"; on the squares: {100 * quality['support_share']:.1f}% (exact samples: 100%)"
    return title


# ---------------------------------------------------------------------------- few-step models
class Teacher:
    """``teacher(x_t, t) -> x0 estimate`` of a trained run's EMA parameters, restored on the
    first call (when a distillation loss is traced), so that sampling a distilled run never
    needs its teacher. ``field`` names the config field that gave ``workdir`` in errors."""

    def __init__(self, task, workdir: str, schedule, *, field: str = "few_step.teacher_workdir"):
        self.task, self.workdir, self.schedule, self.field = task, workdir, schedule, field
        self._loaded = None

    def check(self):
        """Raises a ValueError naming the field unless ``workdir`` holds a trained run on
        this schedule with a checkpoint; returns the run's config."""
        where = f"{self.field}={self.workdir!r}"
        try:
            config = common.load_config(self.workdir)
        except FileNotFoundError:
            raise ValueError(f"{where} is not the workdir of a training run (no "
                             f"{common.CONFIG_FILE}); train the teacher first") from None
        ckpt = os.path.join(self.workdir, common.CHECKPOINT_DIR)
        if not os.path.isdir(ckpt) or not any(n.isdigit() for n in os.listdir(ckpt)):
            raise ValueError(f"{where} has no checkpoint in {ckpt}; train the teacher first "
                             f"(python -m experiments.train --workdir={self.workdir} ...)")
        if build_schedule(config) != self.schedule:
            raise ValueError(f"{where} was trained on the schedule {build_schedule(config)}, "
                             f"the student uses {self.schedule}: they must agree")
        return config

    def load(self):
        """``(objective, EMA params)`` of the teacher (restored once)."""
        if self._loaded is None:
            config = self.check()
            objective, params, _, step = self.task.restore_params(config, self.workdir)
            logging.info("Teacher: %s at step %d.", self.workdir, step)
            self._loaded = objective, params
        return self._loaded

    def __call__(self, x, t):
        objective, params = self.load()
        out = objective.model_fn(params)(x, t)
        return diffjax.convert(out, x, t, objective.schedule, source=objective.prediction,
                               target="x0")


def _few_step_config(config):
    return config.get("few_step", None) or {}


def _teacher(task, config) -> Optional[Teacher]:
    workdir = common.opt(_few_step_config(config).get("teacher_workdir", ""))
    if workdir is None or config.diffusion.loss not in _FEW_STEP:
        return None
    return Teacher(task, workdir, build_schedule(config))


def _meanflow(task, config, model):
    f = _few_step_config(config)
    return make_meanflow_objective(
        model, average_share=float(f.get("average_share", 0.25)),
        time_mean=float(f.get("time_mean", -0.4)), time_std=float(f.get("time_std", 1.0)),
        adaptive_p=float(f.get("adaptive_p", 1.0)), adaptive_c=float(f.get("adaptive_c", 1e-3)),
        teacher=_teacher(task, config), cond_drop=float(config.diffusion.get("cond_drop", 0.0)))


def _consistency(task, config, model):
    f, d = _few_step_config(config), config.diffusion
    time_mean = f.get("time_mean", None)
    return make_consistency_objective(
        model, schedule=build_schedule(config), prediction=d.prediction,
        teacher=_teacher(task, config), t_min=float(d.get("t_min", 0.0) or 1e-3),
        time_mean=None if time_mean in (None, "") else float(time_mean),
        time_std=float(f.get("time_std", 1.6)), tangent_c=float(f.get("tangent_c", 0.1)),
        sample_t_max=float(f.get("sample_t_max", 1.0)),
        dt=None if f.get("dt", None) in (None, "", 0, 0.0) else float(f.get("dt")),
        cond_drop=float(d.get("cond_drop", 0.0)))


def _progressive(task, config, model):
    f, d = _few_step_config(config), config.diffusion
    teacher = _teacher(task, config)
    if teacher is None:
        raise ValueError("diffusion.loss='progressive' needs few_step.teacher_workdir (the run "
                         "to distill)")
    return make_progressive_objective(
        model, schedule=build_schedule(config), prediction=d.prediction, teacher=teacher,
        student_steps=int(f.get("student_steps", 1)), cond_drop=float(d.get("cond_drop", 0.0)))


# config.diffusion.loss -> builder of the few-step objective (each brings its own sampler)
_FEW_STEP = {"meanflow": _meanflow, "consistency": _consistency, "progressive": _progressive}


class _DistillExperiment(common.Experiment):
    """A run with a teacher: the teacher is restored up front (not inside the traced train
    step), and a fresh run starts from the teacher's parameters."""

    def __init__(self, task, config, workdir: str, *, mesh=None):
        super().__init__(task, config, workdir, mesh=mesh)
        self.objective.teacher.load()

    def restore_or_init(self):
        teacher = self.objective.teacher
        init = bool(_few_step_config(self.config).get("init_from_teacher", True))
        if not init or self.checkpointer.latest_step() is not None:
            return super().restore_or_init()
        _, params = teacher.load()
        mine = jax.tree.map(jnp.shape, self.params)
        theirs = jax.tree.map(jnp.shape, params)
        if jax.tree.structure(mine) != jax.tree.structure(theirs) or \
                jax.tree.leaves(mine) != jax.tree.leaves(theirs):
            raise ValueError(f"few_step.teacher_workdir={teacher.workdir!r} holds a model of "
                             f"another architecture; set few_step.init_from_teacher=False or "
                             f"copy the teacher's model section")
        logging.info("Starting from the teacher's EMA parameters (%s).", teacher.workdir)
        params = jax.tree.map(lambda p: jnp.array(p, copy=True), params)
        state = training.create_train_state(params, self.optimizer,
                                            rng=int(self.config.seed) + 1)
        return self.train_step.place(state), None


# ---------------------------------------------------------------------------- the task
class GaussianTask(Task):
    """Gaussian diffusion / flow matching on points and images (module docstring)."""

    name = "gaussian"

    # ---------------------------------------------------------------- building
    def data_options(self, config) -> dict:
        d = config.data
        if d.name in ddata.latents.NAMES:  # no image options; one set to True is refused
            return {k: True for k in ("dequantize", "random_flip") if d.get(k, False)}
        if d.name in ddata.toy.NAMES:
            return {}
        options = dict(dequantize=bool(d.dequantize), random_flip=bool(d.random_flip))
        if d.name in ddata.local.IMAGE_NAMES:  # the user's folder: data.path, data.image_size
            options.update(path=d.get("path", ""), image_size=int(d.get("image_size", 0)))
        return options

    def build_model(self, config, info: ddata.DatasetInfo) -> nnx.Module:
        m = config.model
        rngs = nnx.Rngs(int(config.seed))
        num_classes = info.num_classes if m.get("class_conditional", False) else None
        if m.get("class_conditional", False) and num_classes is None:
            raise ValueError(f"model.class_conditional=True but dataset {info.name!r} has no "
                             f"labels")
        kw = dict(num_classes=num_classes, dropout=float(m.dropout),
                  dtype=common.dtype(m.get("dtype", "float32")),
                  time_embedding=m.get("time_embedding", "sinusoidal"), rngs=rngs)
        if m.get("second_time", False):  # MeanFlow's t - r (off: the models as before)
            kw["second_time"] = True
        if m.get("time_scale", 0.0):  # 0: the embedding's default (1000 for sinusoidal)
            kw["time_scale"] = float(m.time_scale)
        if m.get("self_condition", False):  # off: the models as before
            if m.name not in ("mlp", "unet"):
                raise ValueError(f"model.self_condition=True needs model.name 'mlp' or 'unet', got "
                                 f"{m.name!r}")
            kw["self_condition"] = True
        if m.name == "mlp":
            if m.get("input_fourier_features", 0):  # 0: x alone (the MLP's default)
                kw.update(input_fourier_features=int(m.input_fourier_features),
                          input_fourier_scale=float(m.get("input_fourier_scale", 1.0)))
            return models.MLP(int(np.prod(info.shape)), hidden=int(m.hidden), depth=int(m.depth),
                              time_embed_dim=int(m.time_embed_dim),
                              mlp_ratio=float(m.mlp_ratio), **kw)
        if m.name == "unet":
            if len(info.shape) != 3:
                raise ValueError(f"model.name='unet' needs images (H, W, C); dataset "
                                 f"{info.name!r} has examples of shape {info.shape}")
            return models.UNet(
                info.shape[-1], image_size=tuple(info.shape[:2]), ch=int(m.ch),
                ch_mult=tuple(int(c) for c in m.ch_mult), num_res_blocks=int(m.num_res_blocks),
                attn_resolutions=tuple(int(r) for r in m.attn_resolutions),
                resample_with_conv=bool(m.get("resample_with_conv", True)),
                scale_shift=bool(m.get("scale_shift", False)),
                attn_heads=int(m.get("attn_heads", 1)), **kw)
        if m.name == "dit":
            if len(info.shape) != 3:
                raise ValueError(f"model.name='dit' needs images or latents (H, W, C); dataset "
                                 f"{info.name!r} has examples of shape {info.shape}")
            return models.PatchTransformer(
                info.shape[-1], image_size=tuple(info.shape[:2]), patch_size=int(m.patch_size),
                dim=int(m.dim), depth=int(m.depth), heads=int(m.heads),
                mlp_ratio=float(m.mlp_ratio), **kw)
        raise ValueError(f"model.name must be one of ['mlp', 'unet', 'dit'] for task "
                         f"'gaussian' (the text task takes 'token_transformer'), got {m.name!r}")

    def build_objective(self, config, model: nnx.Module):
        """The objective ``config.diffusion.loss`` names: the diffusion losses of
        `make_objective`, or a few-step objective (``"meanflow"``, ``"consistency"``,
        ``"progressive"``) with the options of ``config.few_step`` (`_FEW_STEP`). A teacher
        (``few_step.teacher_workdir``) is restored only when the loss is first traced."""
        d = config.diffusion
        self_condition = bool(config.model.get("self_condition", False))
        if d.loss in _FEW_STEP:
            if self_condition:
                raise ValueError(f"model.self_condition=True is for the diffusion losses, not "
                                 f"diffusion.loss={d.loss!r}")
            return _FEW_STEP[d.loss](self, config, model)
        return make_objective(
            model, schedule=build_schedule(config), prediction=d.prediction, loss=d.loss,
            weighting=d.weighting, weighting_kwargs=dict(d.get("weighting_kwargs", {}) or {}),
            t_min=d.get("t_min", 0.0) or None, antithetic=bool(d.antithetic),
            importance=common.opt(d.get("importance", "")),
            cond_drop=float(d.get("cond_drop", 0.0)), self_condition=self_condition)

    def experiment(self, config, workdir: str, *, mesh=None) -> common.Experiment:
        """Training: a run with a teacher checks the teacher's workdir first and starts from
        the teacher's parameters (``few_step.init_from_teacher``, default True)."""
        teacher = _teacher(self, config)
        if teacher is None:
            return common.Experiment(self, config, workdir, mesh=mesh)
        teacher.check()
        return _DistillExperiment(self, config, workdir, mesh=mesh)

    def sample_fn(self, config, objective, info, batch_size: int):
        s = config.sample
        kw = _config_sampler_kwargs(objective, config)
        shape = (int(batch_size),) + tuple(int(d) for d in info.shape)
        x_init = np.zeros(shape, np.float32)
        if not objective.conditional:
            def fn(params, key, x_init):
                return draw_batch(objective, params, key, shape, kw, x_init=x_init)[0]
            return fn, (x_init,)
        scale = float(s.get("guidance_scale", 1.0))

        def guided(params, key, x_init, labels):
            return draw_batch(objective, params, key, shape, kw, cond=labels,
                              guidance_scale=scale, x_init=x_init)[0]
        return guided, (x_init, np.zeros(shape[:1], np.int32))

    def sample_nfe(self, config, objective, info) -> int:
        kw = _config_sampler_kwargs(objective, config)
        if "few_step" in kw:
            return kw["few_step"]
        _, out = diffjax.sample(lambda x, t: jnp.zeros_like(x), jax.random.key(0),
                                (1,) + tuple(int(d) for d in info.shape), **kw)
        return int(out["nfe"])

    def reference(self, config, num: int, seed: int) -> Optional[np.ndarray]:
        """Held-out data to compare ``num`` samples with (original range): exact draws for
        the toy sets, up to 1000 test images for TFDS images and image folders (the training
        images for a folder too small to hold out any), None for digits (their metrics use a
        classifier instead) and for latents (no decoder, no metric here)."""
        name = config.data.name
        if name in ddata.toy.NAMES:
            return self.build_dataset(config, "test").as_arrays(num, seed=seed)["x"]
        if name == "digits" or name in ddata.latents.NAMES:
            return None
        try:
            test = self.build_dataset(config, "test")
        except ddata.local.EmptySplitError as err:
            logging.warning("%s Comparing the samples with the training images instead.", err)
            test = self.build_dataset(config, "train")
        return test.postprocess(test.as_arrays(min(num, 1000))["x"])

    def samples_and_quality(self, config, objective, params, info, num: int, seed: int, *,
                            solver=None, steps=None):
        """``(samples in the original range, reference or None, quality dict, seconds)``."""
        t0 = time.perf_counter()
        x, _ = sample_from_config(objective, params, info, config, num, seed, solver=solver,
                                  steps=steps)
        samples = info.postprocess(x)
        seconds = time.perf_counter() - t0
        reference = self.reference(config, len(samples), seed + 1)
        if config.data.name in ddata.latents.NAMES:
            # Quality needs the VAE decoder (and FID features), which diffjax does not have:
            # only the moments of the latents (the scale factor makes the data's std about 1).
            quality = {"num_samples": int(len(samples)), "latent_mean": float(samples.mean()),
                       "latent_std": float(samples.std())}
        else:
            quality = metrics.sample_quality(config.data.name, samples, reference)
        return samples, reference, quality, seconds

    # ---------------------------------------------------------------- train
    def final_samples(self, exp: common.Experiment, params, *, seed: int) -> dict:
        config = exp.config
        samples, reference, quality, seconds = self.samples_and_quality(
            config, exp.objective, params, exp.info, int(config.sample.num_samples), seed)
        if exp.info.name in ddata.latents.NAMES:  # 4-channel latents are not an image
            logging.info("No samples.png for latents (decoding needs the VAE); draw them with "
                         "`python -m experiments.sample --workdir=%s` and decode them.",
                         exp.workdir)
        elif jax.process_index() == 0:
            path = os.path.join(exp.workdir, "samples.png")
            plots.samples_figure(exp.info, samples, path, data=reference,
                                 title=_figure_title(config.name, config.sample.solver,
                                                     config.sample.steps, quality))
            logging.info("Wrote %s", path)
        return {"sample_seconds": seconds, "quality": quality}

    # ---------------------------------------------------------------- sample
    def define_sample_flags(self, flag_values) -> None:
        kw = dict(flag_values=flag_values)
        flags.DEFINE_float("guidance_scale", None, "Class-conditional models: classifier-free "
                           "guidance scale; default: config.", **kw)
        flags.DEFINE_integer("class", None, "Class-conditional models: draw every sample from "
                             "this class; default: cycle through the classes.", **kw)
        flags.DEFINE_alias("guidance", "guidance_scale", **kw)

    def draw(self, workdir: str, num_samples: int, *, solver=None, steps=None, seed: int = 0,
             guidance_scale=None, batch_size=None, class_label=None):
        """``(samples in the original range, labels or None, step)`` from ``workdir``'s
        latest checkpoint (EMA parameters)."""
        return self._draw(workdir, num_samples, solver=solver, steps=steps, seed=seed,
                          guidance_scale=guidance_scale, batch_size=batch_size,
                          class_label=class_label)[:3]

    def _draw(self, workdir: str, num_samples: int, *, solver=None, steps=None, seed: int = 0,
              guidance_scale=None, batch_size=None, class_label=None):
        """`draw`'s ``(samples, labels, step)`` followed by the run's ``info`` and config."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        config = common.load_config(workdir)
        with config.unlocked():
            if guidance_scale is not None:
                config.sample.guidance_scale = float(guidance_scale)
            if batch_size is not None:
                config.sample.batch_size = int(batch_size)
        objective, params, info, step = self.restore_params(config, workdir)
        if class_label is not None:
            labels = class_labels(objective, class_label, num_samples)
            sampler = GuidedSampler.from_config(objective, info, config, solver=solver,
                                                steps=steps)
            x = sampler(params, jax.random.key(seed), labels,
                        float(config.sample.guidance_scale))
            return info.postprocess(x), labels, step, info, config
        x, labels = sample_from_config(objective, params, info, config, num_samples, seed,
                                       solver=solver, steps=steps)
        return info.postprocess(x), labels, step, info, config

    def sample_figure(self, samples, path: str, *, info, config, step: int, solver=None,
                      steps=None, seed: int = 0, class_label=None) -> Optional[str]:
        """Writes the figure of ``samples`` (original range) to ``path``: a scatter plot
        against as many exact draws for 2-D toy data (titled with the checkerboard's support
        share), an image grid of the first 100 for images; returns ``path``, or None for
        latents (drawing them needs the VAE decoder)."""
        if config.data.name in ddata.latents.NAMES:
            logging.info("No figure for latents (decoding needs the VAE).")
            return None
        reference = (self.reference(config, len(samples), seed + 1)
                     if config.data.name in ddata.toy.NAMES else None)
        quality = ({"support_share": metrics.checkerboard_support_share(samples)}
                   if config.data.name == "checkerboard" else None)
        head = f"{config.name} step {step}" + ("" if class_label is None else
                                                 f", class {class_label}")
        return plots.samples_figure(
            info, samples, path, data=reference,
            title=_figure_title(head, solver or config.sample.solver,
                                int(steps or config.sample.steps), quality))

    def sample_main(self, F) -> None:
        output = F.output or os.path.join(F.workdir, "samples.npy")
        t0 = time.perf_counter()
        samples, labels, step, info, config = self._draw(
            F.workdir, F.num_samples, solver=F.solver, steps=F.steps, seed=F.seed,
            guidance_scale=F.guidance_scale, batch_size=F.batch_size,
            class_label=F["class"].value)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        np.save(output, samples)
        if labels is not None:
            np.save(os.path.splitext(output)[0] + "_labels.npy", labels)
        logging.info("Wrote %d samples %s %s (checkpoint step %d) to %s in %.1f s",
                     len(samples), samples.shape, samples.dtype, step, output,
                     time.perf_counter() - t0)
        png = None
        if F.get_flag_value("png", True):
            png = self.sample_figure(samples, os.path.splitext(output)[0] + ".png", info=info,
                                     config=config, step=step, solver=F.solver, steps=F.steps,
                                     seed=F.seed, class_label=F["class"].value)
            if png is not None:
                logging.info("Wrote %s", png)
        print(f"wrote {output}: shape {samples.shape}, dtype {samples.dtype}, "
              f"range [{samples.min()}, {samples.max()}], step {step}")
        if png is not None:
            print(f"wrote {png}")

    # ---------------------------------------------------------------- evaluate
    def define_evaluate_flags(self, flag_values) -> None:
        flags.DEFINE_string("inception_weights", None, "Image runs: an InceptionV3 weight file "
                            "(.npz, diffjax.models.inception; not shipped) for FID; default: "
                            "config.eval.inception_weights (\"\": no FID).",
                            flag_values=flag_values)

    def _heldout(self, config, num: int, seed: int):
        """``(model-space held-out data, num_bins or None)`` for the likelihood."""
        if config.data.name in ddata.toy.NAMES + ddata.latents.NAMES:  # continuous data
            return self.build_dataset(config, "test").as_arrays(num, seed=seed)["x"], None
        with config.unlocked():
            config.data.dequantize = True  # the discrete-data bound needs dequantised data
        test = self.build_dataset(config, "test")
        levels = test.info.original_range[1] + 1
        return test.as_arrays(num, seed=seed)["x"], int(levels)

    def evaluate(self, workdir: str, *, num_samples=None, nll_examples=None, solver=None,
                 steps=None, seed=None, inception_weights=None) -> dict:
        t_start = time.perf_counter()
        config = common.load_config(workdir)
        ev = config.eval
        seed = int(ev.seed if seed is None else seed)
        inception_weights = image_metrics.check_inception_weights(  # before the sampling
            ev.get("inception_weights", "") if inception_weights is None else inception_weights)
        num_samples = int(ev.num_samples if num_samples is None else num_samples)
        nll_examples = int(ev.nll_examples if nll_examples is None else nll_examples)
        objective, params, info, step = self.restore_params(config, workdir)
        out = {"step": step, "dataset": config.data.name, "config": str(config.name),
               "parameters": "ema"}

        samples, reference, quality, seconds = self.samples_and_quality(
            config, objective, params, info, num_samples, seed, solver=solver, steps=steps)
        out["sampler"] = {"solver": solver or config.sample.solver,
                          "steps": int(steps or config.sample.steps),
                          "t_min": float(config.sample.t_min), "seconds": seconds}
        out["sample_quality"] = quality
        if len(info.shape) == 3 and config.data.name not in ddata.latents.NAMES:  # images
            quality.update(image_metrics.image_quality(
                samples, lambda split: self.build_dataset(config, split), seed=seed,
                inception_weights=inception_weights,
                cache_dir=common.opt(ev.get("feature_cache_dir", ""))))
        if config.data.name not in ddata.latents.NAMES:  # latents need the VAE to be drawn
            figure = plots.samples_figure(info, samples,
                                          os.path.join(workdir, "eval_samples.png"),
                                          data=reference,
                                          title=_figure_title(f"{config.name} step {step}",
                                                              out["sampler"]["solver"],
                                                              out["sampler"]["steps"], quality))
            out["figure"] = os.path.basename(figure)

        if nll_examples > 0 and not getattr(objective, "likelihood", True):
            logging.info("No ODE likelihood for a %s model (its network is not a diffusion "
                         "model).", type(objective).__name__)
        elif nll_examples > 0:
            t0 = time.perf_counter()
            data, num_bins = self._heldout(config, nll_examples, seed)
            nll = metrics.ode_bits_per_dim(
                objective, params, data, jax.random.key(seed),
                batch_size=int(ev.nll_batch_size), rtol=float(ev.nll_rtol),
                atol=float(ev.nll_atol), probes=int(ev.nll_probes), t_min=float(ev.nll_t_min),
                num_bins=num_bins)
            nll["seconds"] = time.perf_counter() - t0
            nll["dequantized"] = num_bins is not None
            out["likelihood"] = nll
            out["bits_per_dim"] = nll["bits_per_dim"]
        out["seconds"] = time.perf_counter() - t_start

        common.write_json(os.path.join(workdir, METRICS_FILE), out)
        common.write_eval_scalars(workdir, step, {k: out[k] for k in ("sample_quality",
                                                                      "likelihood") if k in out})
        logging.info("Wrote %s", os.path.join(workdir, METRICS_FILE))
        return out

    def evaluate_main(self, F) -> dict:
        out = self.evaluate(F.workdir, num_samples=F.num_samples, nll_examples=F.nll_examples,
                            solver=F.solver, steps=F.steps, seed=F.seed,
                            inception_weights=F.inception_weights)
        headline = {k: v for k, v in out["sample_quality"].items() if not isinstance(v, list)}
        if "bits_per_dim" in out:
            headline["bits_per_dim"] = out["bits_per_dim"]
        print(f"step {out['step']}: {json.dumps(headline)}")
        q = out["sample_quality"]
        if "sw_over_std_floor" in q:
            on = (f"{100 * q['support_share']:.1f}% of the samples on the squares (exact "
                  f"samples: 100%); " if "support_share" in q else "")
            print(f"{out['dataset']}: {on}sliced W1 / std {q['sw_over_std']:.4f}, noise floor "
                  f"{q['sw_over_std_floor']:.4f} +- {q['sw_over_std_floor_std']:.4f} (two sets "
                  f"of {q['num_samples']} exact samples)")
        return out
