"""What every launcher shares: config files, the experiment wiring, batching.

A config (``experiments/configs/NAME.py``) names its task in ``config.task`` (see
:mod:`experiments.tasks`: ``"gaussian"`` for images and points, ``"text"`` for discrete
diffusion on characters); the task builds the dataset, model and objective from the
config's other sections. The sections every task has::

    seed                       model init / train RNG / data order
    data.name, data.batch_size (global), data.data_dir ("" = default), data.prefetch
    model.name, its widths, model.dtype ("float32" | "bfloat16" compute)
    diffusion.*                the process and the loss (task-specific)
    optim.*                    diffjax.training.make_optimizer (learning_rate, warmup_steps, ...)
    train.num_steps, .log_every, .checkpoint_every, .keep_checkpoints, .ema_decay,
         .grad_accum, .fsdp, .num_devices (0 = all), .mesh ("data:4,model:2"; "" = a
         data axis over num_devices), .steps_per_call
    sample.*, eval.*           the task's sampler and evaluation settings

The run's config is written to ``WORKDIR/config.json`` (and into every checkpoint's metadata);
``experiments.sample`` and ``experiments.evaluate`` rebuild everything from it.

Command line (``run_launcher``): ``--config=NAME`` names a built-in config
(``experiments/configs/NAME.py`` of this checkout, whatever the working directory) and a path
still works; ``--config.a.b=v`` overrides a field. Launcher errors are one line naming the
flag (no traceback), with exit status 2: an unknown config field or name lists the close
matches, a missing config file or a ``--workdir`` that is not a directory is named as such.
"""
from __future__ import annotations

import difflib
import json
import logging as pylogging
import math
import os
import sys
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections.config_flags import config_flags as _ml_config_flags

from diffjax import models, training

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


# ---------------------------------------------------------------------------- command line
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def builtin_configs() -> list:
    """The names of the built-in configs (``experiments/configs/NAME.py``), sorted."""
    return sorted(f[:-3] for f in os.listdir(CONFIGS_DIR)
                  if f.endswith(".py") and not f.startswith("_") and f != "base.py")


def _close(word: str, choices, n: int = 3) -> list:
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)


def resolve_config_path(spec: str, flag: str = "--config") -> str:
    """The config file that ``--config=spec`` means (``":arg"`` suffixes are kept).

    ``spec`` is a path (relative to the working directory, else to the checkout's root, so
    ``experiments/configs/toy.py`` works from anywhere) or the name of a built-in config
    (``toy`` or ``toy.py`` for ``experiments/configs/toy.py``).

    Raises:
      ValueError: naming ``flag`` (left out when ``flag`` is empty: absl prefixes its own), the
        built-in configs and the close matches, when no file fits.
    """
    path, sep, arg = str(spec).partition(":")
    if not path:
        raise ValueError(f"{flag} is empty; give a built-in config name ({', '.join(builtin_configs())}) "
                         f"or a path to a config file")
    name = path[:-3] if path.endswith(".py") else path
    candidates = [path]
    if not os.path.isabs(path):
        candidates.append(os.path.join(REPO_ROOT, path))
    if os.sep not in path and "/" not in path:
        candidates.append(os.path.join(CONFIGS_DIR, name + ".py"))
    for c in candidates:
        if os.path.isfile(c):
            return os.path.abspath(c) + sep + arg
    builtin = builtin_configs()
    near = _close(name, builtin) or _close(os.path.basename(name), builtin)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    what = "a directory, not a config file" if os.path.isdir(path) else "no such config file"
    prefix = f"{flag}={spec}: " if flag else ""
    raise ValueError(f"{prefix}{what} (looked in {os.getcwd()} and {REPO_ROOT}) and no built-in "
                     f"config of that name; {hint}built-in configs: {', '.join(builtin)}")


def _leaf_paths(config, prefix: str = "") -> list:
    out = []
    for k, v in config.items():
        out.append(prefix + k)
        if isinstance(v, ml_collections.ConfigDict):
            out += _leaf_paths(v, f"{prefix}{k}.")
    return out


def check_overrides(config, overrides, flag: str = "config") -> None:
    """Raises ``flags.IllegalFlagValueError`` (one line) when an override ``--flag.a.b`` names
    no field of ``config``, with the close matches and the fields of the section it is in."""
    for path in overrides:
        node, walked = config, []
        for part in path.split("."):
            if not isinstance(node, ml_collections.ConfigDict):
                break  # a leaf (or None) with more parts: left to ml_collections
            if part not in node:
                section = ".".join([flag] + walked)
                siblings = sorted(node.keys())
                near = [".".join(walked + [m]) for m in _close(part, siblings)]
                near = near or _close(path, _leaf_paths(config))
                hint = f"did you mean {', '.join(f'--{flag}.{m}' for m in near[:3])}? " if near else ""
                raise flags.IllegalFlagValueError(
                    f"--{flag}.{path}: {section} has no field {part!r}; {hint}fields of {section}: "
                    f"{', '.join(siblings)}")
            node = node[part]
            walked.append(part)


class _ConfigFileParser(_ml_config_flags.ConfigFileFlagParser):
    """ml_collections' config file parser, with ``--config=NAME`` for built-in configs and a
    one-line error (naming the flag) for a file that is missing or cannot be loaded."""

    def parse(self, path):
        if not isinstance(path, str):
            return super().parse(path)
        resolved = resolve_config_path(path, "")  # absl's message starts "flag --config=PATH: "
        try:
            config = super().parse(resolved)
        except AttributeError as e:  # e.g. no get_config() in the file
            raise ValueError(f"{resolved}: {e} (a config file defines get_config())") from None
        error = type(config).__name__ == "_ErrorConfig" and object.__getattribute__(config, "_error")
        if error:
            raise ValueError(f"cannot load {resolved}: {str(error).splitlines()[0]}")
        return config


class _ConfigFlag(_ml_config_flags._ConfigFlag):  # the class DEFINE_config_file builds
    """A config-file flag whose overrides are checked against the config before ml_collections
    resolves them (an unknown field is one line naming it and its close matches)."""

    def _initialize_missing_parent_fields(self, config, overrides):
        check_overrides(config, overrides, self.name)
        super()._initialize_missing_parent_fields(config, overrides)


def define_config_flag(name: str, default: str, help_string: str, flag_values=flags.FLAGS,
                       lock_config: bool = True, sys_argv=None):
    """``config_flags.DEFINE_config_file`` with built-in config names (``--config=toy``) and
    one-line errors for a missing file or an unknown field (see ``resolve_config_path`` and
    ``check_overrides``). Note that ml_collections parses the default config (and the overrides
    on the command line) when the flag is defined, if ``--NAME`` itself is not given: errors
    can then come from this call (``run_launcher`` reports them the same way)."""
    flag = _ConfigFlag(parser=_ConfigFileParser(name=name, lock_config=lock_config),
                       serializer=flags.ArgumentSerializer(), name=name, default=default,
                       help_string=help_string, flag_values=flag_values, sys_argv=sys_argv)
    # the flag belongs to the caller's module (absl's key for a script is its path), so that the
    # launcher's --help lists it
    caller = sys._getframe(1).f_globals.get("__name__", "")  # pylint: disable=protected-access
    return flags.DEFINE_flag(flag, flag_values, module_name=sys.argv[0] if caller == "__main__" else caller)


def require_positive(flag_values, *names: str) -> None:
    """Registers validators: each integer flag in ``names`` is None (its default) or >= 1."""
    for name in names:
        flags.register_validator(name, lambda v: v is None or v >= 1,
                                 message=f"--{name} must be >= 1 (leave it out for the default)",
                                 flag_values=flag_values)


def require_range(flag_values, name: str, low: float, high: float = math.inf, note: str = "") -> None:
    """Registers a validator: the float flag ``name`` (if defined) is None or finite in
    ``[low, high]``; the message names the flag and the range (plus ``note``)."""
    if name not in flag_values:
        return
    span = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
    flags.register_validator(name, lambda v: v is None or (math.isfinite(v) and low <= v <= high),
                             message=f"--{name} must be {span}{note}", flag_values=flag_values)


def usage_error(prog: str, message: str, code: int = 2):
    """Prints ``prog: error: message`` to stderr and exits with ``code`` (a usage error)."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def run_launcher(main: Callable, define_flags: Optional[Callable] = None, *, prog: str) -> None:
    """``define_flags()`` then ``app.run(main)``, with every flag error (an unknown flag, a bad
    value, a missing config file, an unknown config field) and every ``app.UsageError`` raised
    by ``main`` printed as one line ``prog: error: ...`` (exit status 2) instead of a traceback."""
    try:
        if define_flags is not None:
            define_flags()
    except flags.Error as e:
        usage_error(prog, str(e))

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            usage_error(prog, str(e))

    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as e:
            usage_error(prog, str(e))

    app.run(guarded, flags_parser=parse)


def check_workdir(workdir: str, flag: str = "--workdir") -> str:
    """``workdir`` for a run to write into: refused (``app.UsageError`` naming ``flag``) when it
    exists and is not a directory."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise app.UsageError(f"{flag}={workdir}: exists and is not a directory")
    return workdir


def workdir_config(workdir: Optional[str], flag: str = "--workdir") -> ml_collections.ConfigDict:
    """``load_config(workdir)`` for a launcher: an ``app.UsageError`` naming ``flag`` when the
    directory is missing, is a file, or holds no ``config.json``."""
    if not workdir:
        raise app.UsageError(f"{flag} is required (the directory of an `experiments.train` run)")
    if not os.path.isdir(workdir):
        what = "is not a directory" if os.path.exists(workdir) else "does not exist"
        raise app.UsageError(f"{flag}={workdir}: {what}; give the workdir of an `experiments.train` run")
    try:
        return load_config(workdir)
    except FileNotFoundError as e:
        raise app.UsageError(f"{flag}={workdir}: {e}") from None


# (section, field, minimum) of the config fields a launcher checks before building anything
_POSITIVE_FIELDS = (("train", "num_steps"), ("train", "log_every"), ("train", "checkpoint_every"),
                    ("train", "keep_checkpoints"), ("train", "grad_accum"), ("train", "steps_per_call"),
                    ("data", "batch_size"))


def check_train_config(config, flag: str = "--config") -> None:
    """Raises ``app.UsageError`` naming the override flag (``--config.train.num_steps``) when
    a count of ``config.train`` / ``config.data`` that must be a positive int is not."""
    for section, field in _POSITIVE_FIELDS:
        if section not in config or field not in config[section]:
            continue
        v = config[section][field]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise app.UsageError(f"{flag}.{section}.{field} must be an int >= 1, got {v!r}")


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


def opt(value: Any) -> Any:
    """Config convention: "" means "not set" (None)."""
    return None if value in ("", None) else value


def dtype(name: str):
    """The compute dtype named by ``model.dtype``."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


# ---------------------------------------------------------------------------- train-time pieces
def build_optimizer(config):
    """``(optimizer, learning-rate schedule)`` from ``config.optim`` over
    ``config.train.num_steps`` steps."""
    opt_config = dict(config.optim)
    opt_config["total_steps"] = int(config.train.num_steps)
    if opt_config["total_steps"] < 1:
        raise ValueError(f"train.num_steps must be >= 1, got {config.train.num_steps!r}")
    if opt_config.get("warmup_steps", 0) > opt_config["total_steps"]:
        logging.warning("optim.warmup_steps=%d > train.num_steps=%d: warming up over all steps.",
                        opt_config["warmup_steps"], opt_config["total_steps"])
        opt_config["warmup_steps"] = opt_config["total_steps"]
    return training.make_optimizer(opt_config), training.make_schedule(opt_config)


def build_mesh(config, devices=None):
    """The device mesh of ``config.train``: ``mesh`` (e.g. ``"data:4,model:2"``) when set,
    else a ``data`` axis over ``num_devices`` devices (0 = all)."""
    t = config.train
    if opt(t.get("mesh", "")):
        return training.make_mesh(shape=t.mesh, devices=devices)
    return training.make_mesh(int(t.get("num_devices", 0)) or None, devices=devices)


def build_train_step(config, objective, optimizer, mesh, *, learning_rate_fn=None,
                     fsdp=None):
    """The train step of ``config.train`` for ``objective`` on ``mesh`` (``fsdp`` overrides
    ``train.fsdp``)."""
    t = config.train
    return training.make_train_step(
        objective.loss_fn, optimizer, mesh=mesh, ema_decay=float(t.ema_decay),
        grad_accum=int(t.grad_accum), fsdp=bool(t.fsdp if fsdp is None else fsdp),
        learning_rate_fn=learning_rate_fn)


# ---------------------------------------------------------------------------- the experiment
class Experiment:
    """Everything a launcher needs for one config and its task (`experiments.tasks`): data
    info, objective, optimizer, train step on a mesh, checkpointer, and the initial/restored
    train state."""

    def __init__(self, task, config, workdir: str, *, mesh=None):
        self.task = task
        self.config = config
        self.workdir = os.path.abspath(workdir)
        self.train_data = task.build_dataset(config, "train")
        self.info = self.train_data.info
        model = task.build_model(config, self.info)
        self.num_params = models.count_params(model)
        self.objective, self.params = task.build_objective(config, model)
        self.optimizer, schedule = build_optimizer(config)
        self.mesh = mesh if mesh is not None else build_mesh(config)
        self.train_step = build_train_step(config, self.objective, self.optimizer, self.mesh,
                                           learning_rate_fn=schedule)
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
        restored = restore_state(self.checkpointer, self.abstract_state())
        logging.info("Resuming from checkpoint step %d in %s.", restored.step,
                     self.checkpointer.directory)
        return restored.state, (restored.data_state or None)

    def data_iterator(self, data_state: Optional[dict] = None):
        d = self.config.data
        return self.train_data.iterator(int(d.batch_size), seed=int(self.config.seed),
                                        prefetch=int(d.get("prefetch", 0)), state=data_state)

    def close(self):
        self.checkpointer.close()


_ATTENTION_KERNELS = (".attn.qkv.kernel", ".attn.qkv.bias", ".attn.out.kernel")


def restore_state(checkpointer, target):
    """``checkpointer.restore(target)``; a checkpoint whose only differences are attention
    kernels in the layout before they kept a head axis (``(D, 3D)``, ``(3D,)``, ``(D, D)``;
    the same numbers in row-major order) is restored reshaped, with a warning."""
    try:
        return checkpointer.restore(target)
    except training.CheckpointMismatchError:
        stored = checkpointer.stored_shapes()
        wanted = {k: tuple(np.shape(v)) for k, v in training.checkpoint.tree_paths(target).items()}
        differ = [k for k in wanted if stored.get(k, wanted[k]) != wanted[k]]
        legacy = set(stored) == set(wanted) and differ and all(
            k.removesuffix(".value").endswith(_ATTENTION_KERNELS)
            and len(stored[k]) < len(wanted[k])
            and math.prod(stored[k]) == math.prod(wanted[k]) for k in differ)
        if not legacy:
            raise
        logging.warning("%s holds %d attention kernels in the layout before kernels kept a "
                        "head axis; restoring them reshaped.", checkpointer.directory,
                        len(differ))
        return checkpointer.restore(target, reshape=True)


def restore_params(task, config, workdir: str, *, ema: bool = True):
    """``(objective, params, info, step)`` from the latest checkpoint of ``workdir``, on a
    one-device mesh (enough for sampling and evaluation)."""
    exp = Experiment(task, config, workdir, mesh=training.make_mesh(1))
    try:
        if exp.checkpointer.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {exp.checkpointer.directory}; train first "
                                    f"(python -m experiments.train --workdir={workdir})")
        restored = restore_state(exp.checkpointer, exp.abstract_state())
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


# ---------------------------------------------------------------------------- evaluation
def _scalars(prefix: str, tree: dict):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _scalars(f"{prefix}{k}/", v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            yield f"{prefix}{k}", float(v)


def write_eval_scalars(workdir: str, step: int, tree: dict) -> None:
    """The finite numbers of ``tree`` (nested dicts) as TensorBoard scalars ``eval/a/b``."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR)) as writer:
        for k, v in _scalars("eval/", tree):
            writer.add_scalar(k, v, step)


def write_json(path: str, tree: dict) -> None:
    with open(path, "w") as f:
        json.dump(tree, f, indent=2, default=float)
