"""Shared pieces of the launchers: config -> dataset, model, objective, train state; sampling.

A config (``experiments/configs/NAME.py``) has these sections::

    seed                       model init / train RNG / data order
    data.name, data.batch_size (global), data.data_dir ("" = default), data.dequantize,
         data.random_flip, data.prefetch
    model.name ("mlp" | "unet"), its widths, model.dtype ("float32" | "bfloat16" compute),
         model.class_conditional
    diffusion.schedule (+ schedule_kwargs), .prediction, .loss, .weighting (+ weighting_kwargs),
         .t_min (0 = the loss's default), .antithetic, .importance ("" = none), .cond_drop
    optim.*                    diffjax.training.make_optimizer (learning_rate, warmup_steps, ...)
    train.num_steps, .log_every, .checkpoint_every, .keep_checkpoints, .ema_decay,
         .grad_accum, .fsdp, .num_devices (0 = all)
    sample.solver, .steps, .t_min, .grid ("" = the solver's), .num_samples, .batch_size,
         .guidance_scale, .labels ("uniform" cycles the classes on a conditional model)
    eval.num_samples, .nll_examples, .nll_batch_size, .nll_rtol, .nll_atol, .nll_probes,
         .nll_t_min, .seed

The run's config is written to ``WORKDIR/config.json`` (and into every checkpoint's metadata);
``experiments.sample`` and ``experiments.evaluate`` rebuild everything from it.
"""
from __future__ import annotations

import json
import logging as pylogging
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

import diffjax
from diffjax import data as ddata
from diffjax import models, schedules, training
from diffjax.training.objectives import Objective, make_objective

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# ---------------------------------------------------------------------------- logging
class _DropLibraryInfo(pylogging.Filter):
    """Drops INFO-level chatter of Orbax (dozens of lines per checkpoint); keeps warnings."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
    """Keep the launchers' own INFO logs readable (applies to absl's logger)."""
    logger = pylogging.getLogger("absl")
    if not any(isinstance(f, _DropLibraryInfo) for f in logger.filters):
        logger.addFilter(_DropLibraryInfo())


# ---------------------------------------------------------------------------- config files
def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    path = os.path.join(workdir, CONFIG_FILE)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    return path


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir of an "
                                f"`experiments.train` run?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def _opt(value: Any) -> Any:
    """Config convention: "" (or 0 for t_min) means "not set"."""
    return None if value in ("", None) else value


def _dtype(name: str):
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


# ---------------------------------------------------------------------------- builders
def is_text(config) -> bool:
    """A text config (discrete diffusion on characters, handled by ``experiments.text_task``)."""
    return config.data.name in ddata.text.NAMES


def _text_task():
    from experiments import text_task  # imported lazily: it imports this module
    return text_task


def build_dataset(config, split: str) -> ddata.Dataset:
    d = config.data
    if is_text(config):
        return _text_task().build_dataset(config, split)
    options = {}
    if d.name not in ddata.toy.NAMES:
        options = dict(dequantize=bool(d.dequantize), random_flip=bool(d.random_flip))
    return ddata.get_dataset(d.name, split, data_dir=_opt(d.get("data_dir", "")), **options)


def build_model(config, info: ddata.DatasetInfo) -> nnx.Module:
    m = config.model
    if is_text(config):
        return _text_task().build_model(config, info)
    rngs = nnx.Rngs(int(config.seed))
    num_classes = info.num_classes if m.get("class_conditional", False) else None
    if m.get("class_conditional", False) and num_classes is None:
        raise ValueError(f"model.class_conditional=True but dataset {info.name!r} has no labels")
    dtype = _dtype(m.get("dtype", "float32"))
    common = dict(num_classes=num_classes, dropout=float(m.dropout), dtype=dtype,
                  time_embedding=m.get("time_embedding", "sinusoidal"), rngs=rngs)
    if m.name == "mlp":
        return models.MLP(int(np.prod(info.shape)), hidden=int(m.hidden), depth=int(m.depth),
                          time_embed_dim=int(m.time_embed_dim), mlp_ratio=float(m.mlp_ratio),
                          **common)
    if m.name == "unet":
        if len(info.shape) != 3:
            raise ValueError(f"model.name='unet' needs images (H, W, C); dataset {info.name!r} "
                             f"has examples of shape {info.shape}")
        return models.UNet(
            info.shape[-1], image_size=tuple(info.shape[:2]), ch=int(m.ch),
            ch_mult=tuple(int(c) for c in m.ch_mult), num_res_blocks=int(m.num_res_blocks),
            attn_resolutions=tuple(int(r) for r in m.attn_resolutions),
            resample_with_conv=bool(m.get("resample_with_conv", True)),
            scale_shift=bool(m.get("scale_shift", False)), attn_heads=int(m.get("attn_heads", 1)),
            **common)
    raise ValueError(f"model.name must be one of ['mlp', 'unet'] (or 'token_transformer' for "
                     f"the text datasets {list(ddata.text.NAMES)}), got {m.name!r}")


def build_schedule(config) -> schedules.Schedule:
    d = config.diffusion
    return schedules.get(d.schedule, **dict(d.get("schedule_kwargs", {}) or {}))


def build_objective(config, model: nnx.Module):
    """``(objective, params)`` for ``model`` from ``config.diffusion``."""
    if is_text(config):
        return _text_task().build_objective(config, model)
    d = config.diffusion
    return make_objective(
        model, schedule=build_schedule(config), prediction=d.prediction, loss=d.loss,
        weighting=d.weighting, weighting_kwargs=dict(d.get("weighting_kwargs", {}) or {}),
        t_min=_opt(d.get("t_min", 0.0) or None), antithetic=bool(d.antithetic),
        importance=_opt(d.get("importance", "")), cond_drop=float(d.get("cond_drop", 0.0)))


# ---------------------------------------------------------------------------- the experiment
class Experiment:
    """Everything a launcher needs for one config: data info, objective, optimizer, train
    step on a mesh, checkpointer, and the initial/restored train state."""

    def __init__(self, config, workdir: str, *, mesh=None):
        self.config = config
        self.workdir = os.path.abspath(workdir)
        self.train_data = build_dataset(config, "train")
        self.info = self.train_data.info
        model = build_model(config, self.info)
        self.num_params = models.count_params(model)
        self.objective, self.params = build_objective(config, model)
        opt_config = dict(config.optim)
        opt_config["total_steps"] = int(config.train.num_steps)
        if opt_config.get("warmup_steps", 0) > opt_config["total_steps"]:
            logging.warning("optim.warmup_steps=%d > train.num_steps=%d: warming up over all steps.",
                            opt_config["warmup_steps"], opt_config["total_steps"])
            opt_config["warmup_steps"] = opt_config["total_steps"]
        self.optimizer = training.make_optimizer(opt_config)
        num_devices = int(config.train.get("num_devices", 0)) or None
        self.mesh = mesh if mesh is not None else training.make_mesh(num_devices)
        self.train_step = training.make_train_step(
            self.objective.loss_fn, self.optimizer, mesh=self.mesh,
            ema_decay=float(config.train.ema_decay), grad_accum=int(config.train.grad_accum),
            fsdp=bool(config.train.fsdp), learning_rate_fn=training.make_schedule(opt_config))
        self.checkpointer = training.Checkpointer(
            os.path.join(self.workdir, CHECKPOINT_DIR),
            max_to_keep=int(config.train.keep_checkpoints),
            save_interval_steps=int(config.train.checkpoint_every), config=config)

    def fresh_state(self) -> training.TrainState:
        return training.create_train_state(self.params, self.optimizer,
                                           rng=int(self.config.seed) + 1)

    def abstract_state(self):
        shapes = jax.eval_shape(self.fresh_state)
        return self.train_step.abstract_state(shapes)

    def restore_or_init(self):
        """``(state placed on the mesh, data iterator state or None)``: the latest readable
        checkpoint in the workdir, else a fresh state at step 0."""
        if self.checkpointer.latest_step() is None:
            logging.info("No checkpoint in %s: starting from step 0 (%d parameters).",
                         self.checkpointer.directory, self.num_params)
            return self.train_step.place(self.fresh_state()), None
        restored = self.checkpointer.restore(self.abstract_state())
        logging.info("Resuming from checkpoint step %d in %s.", restored.step,
                     self.checkpointer.directory)
        return restored.state, (restored.data_state or None)

    def data_iterator(self, data_state: Optional[dict] = None):
        d = self.config.data
        return self.train_data.iterator(int(d.batch_size), seed=int(self.config.seed),
                                        prefetch=int(d.get("prefetch", 0)), state=data_state)

    def close(self):
        self.checkpointer.close()


def restore_params(config, workdir: str, *, ema: bool = True):
    """``(objective, params, info, step)`` from the latest checkpoint of ``workdir``, on a
    one-device mesh (enough for sampling and evaluation)."""
    exp = Experiment(config, workdir, mesh=training.make_mesh(1))
    try:
        if exp.checkpointer.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {exp.checkpointer.directory}; train first "
                                    f"(python -m experiments.train --workdir={workdir})")
        restored = exp.checkpointer.restore(exp.abstract_state())
    finally:
        exp.close()
    params = restored.state.ema_params if ema else restored.state.params
    return exp.objective, params, exp.info, restored.step


# ---------------------------------------------------------------------------- batching
def map_batches(fn, key, num: int, batch_size: int, *arrays):
    """``fn(key_i, *chunks) -> (rows, extra)`` over ``num`` rows, ``batch_size`` at a time.

    Every call sees the same static shapes, so ``fn`` (usually jitted) compiles once: the
    last chunk of each array in ``arrays`` (``(num, ...)`` numpy, or None, passed as None) is
    padded by repeating its rows, and the padded rows of ``rows`` (a pytree of arrays with
    a leading batch axis) are dropped. Call ``i`` gets ``fold_in(key, i)``. Returns
    ``(rows concatenated along axis 0 as numpy, [extra of every call] on the host)``.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    batch_size = int(min(batch_size, num))
    arrays = [None if a is None else np.asarray(a) for a in arrays]
    rows, extras = [], []
    for i, start in enumerate(range(0, num, batch_size)):
        n = min(batch_size, num - start)
        idx = np.resize(np.arange(start, start + n), batch_size)
        chunks = [None if a is None else a[idx] for a in arrays]
        out, extra = fn(jax.random.fold_in(key, i), *chunks)
        rows.append(jax.tree.map(lambda v: np.asarray(v)[:n], jax.device_get(out)))
        extras.append(jax.device_get(extra))
    return jax.tree.map(lambda *vs: np.concatenate(vs, axis=0), *rows), extras


# ---------------------------------------------------------------------------- sampling
def sample_labels(objective: Objective, config, num: int) -> Optional[np.ndarray]:
    """Labels for sampling: cycling through the classes on a conditional model with
    ``sample.labels == "uniform"``, else None (the unconditional / null-class model)."""
    if objective.conditional and config.sample.get("labels", "uniform") == "uniform":
        return (np.arange(num) % objective.num_classes).astype(np.int32)
    return None


def generate(objective: Objective, params, key, num: int, shape, *, solver: str, steps: int,
             t_min: float = 1e-3, grid: Optional[str] = None, batch_size: int = 1000,
             labels: Optional[np.ndarray] = None, guidance_scale: float = 1.0) -> np.ndarray:
    """``num`` samples in model space (numpy), drawn ``batch_size`` at a time
    (`map_batches`: one compilation; chunk ``i`` uses ``fold_in(key, i)``)."""
    batch_size = int(min(batch_size, num))
    shape = tuple(int(s) for s in shape)
    schedule, prediction = objective.schedule, objective.prediction
    kw = dict(schedule=schedule, prediction=prediction, solver=solver, t_min=t_min,
              grid=_opt(grid))
    if solver != "rk45":
        kw["steps"] = int(steps)

    @training.compiler.jit
    def draw(params, key, cond):
        fn = objective.model_fn(params, cond, guidance_scale) if cond is not None else \
            objective.model_fn(params)
        x, _ = diffjax.sample(fn, key, (batch_size,) + shape, **kw)
        return x

    if jax.process_count() == 1:  # one device is plenty for sampling on a single host
        params = jax.device_put(params, jax.local_devices()[0])
    x, _ = map_batches(lambda k, cond: (draw(params, k, cond), None), key, num, batch_size,
                       labels)
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
