r"""Train a diffusion model from a config; then sample, write a figure and a metrics line.

    python -m experiments.train                              # toy default -> ./workdirs/toy
    python -m experiments.train --config=digits --workdir=/tmp/digits     # experiments/configs/digits.py
    python -m experiments.train --config=experiments/configs/toy.py --config.train.num_steps=500

``--config`` takes the name of a built-in config (``experiments/configs/NAME.py``) or a path.
A bad flag (an unknown config field, a missing config file, ``--workdir`` naming a file,
``--config.train.num_steps=0``) is reported in one line naming it, with exit status 2.

A run resumes automatically from the latest checkpoint in ``WORKDIR/checkpoints`` (params,
EMA, optimizer state, step, RNG and data-iterator position), so re-running the same command
after an interruption -- or with a larger ``--config.train.num_steps`` -- continues where it
stopped. ``config.task`` picks what is trained (`experiments.tasks`). Outputs in the workdir:
``config.json``, ``checkpoints/``, ``tensorboard/`` (event files), the task's samples
(``samples.png``: a scatter plot of 2-D samples vs data or an image grid; ``samples.txt`` for
text) and ``train_summary.json`` (the final metrics line). ``--distributed`` calls
``jax.distributed.initialize()`` first (multi-host jobs; each host reads its own data shard).
On TPU pods and SLURM / Open MPI clusters its arguments are detected; elsewhere give them,
e.g. two processes on one machine (CPU; the tests run exactly this)::

    python -m experiments.train --distributed --coordinator_address=localhost:12345 \
        --num_processes=2 --process_id=0 --workdir=/tmp/run &   # and --process_id=1
"""
from __future__ import annotations

import json
import os
import time

import jax
from absl import app, flags, logging

from diffjax import training
from experiments import common, tasks

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(_HERE, "configs", "toy.py")


def define_flags(flag_values=flags.FLAGS) -> None:
    """The command-line flags, into ``flag_values`` (defined only when run as a script, so
    that the launcher modules can be imported together)."""
    kw = dict(flag_values=flag_values)
    common.define_config_flag(
        "config", DEFAULT_CONFIG, "Training config: a built-in name (experiments/configs/NAME.py: "
        + ", ".join(common.builtin_configs()) + ") or a path to a config file.", **kw)
    flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, figures). "
                        "Default: ./workdirs/<config.name>.", **kw)
    flags.DEFINE_bool("distributed", False,
                      "Call jax.distributed.initialize() (multi-host training).", **kw)
    flags.DEFINE_string("coordinator_address", None,
                        "With --distributed: host:port of process 0's coordinator service "
                        "(default: JAX_COORDINATOR_ADDRESS or the cluster's auto-detection).",
                        **kw)
    flags.DEFINE_integer("num_processes", None,
                         "With --distributed: the number of processes (default: auto-detected).",
                         **kw)
    flags.DEFINE_integer("process_id", None,
                         "With --distributed: this process's index in [0, num_processes) "
                         "(default: auto-detected).", **kw)


def distributed_kwargs(flag_values) -> dict:
    """``jax.distributed.initialize`` arguments from the flags that were given; they need
    ``--distributed``."""
    names = ("coordinator_address", "num_processes", "process_id")
    given = {n: getattr(flag_values, n) for n in names if getattr(flag_values, n) is not None}
    if given and not flag_values.distributed:
        raise app.UsageError(f"--{'/--'.join(given)} only apply with --distributed.")
    return given


def default_workdir(config) -> str:
    return os.path.join("workdirs", str(config.name))


def run(config, workdir: str) -> dict:
    """Train (or resume) to ``config.train.num_steps``, then sample; returns the summary."""
    t_start = time.perf_counter()
    task = tasks.get(config)
    common.save_config(config, workdir)
    exp = task.experiment(config, workdir)
    try:
        state, data_state = exp.restore_or_init()
        start_step = int(state.step)
        batches = exp.data_iterator(data_state)
        result = training.train(
            exp.train_step, state, batches, num_steps=int(config.train.num_steps),
            checkpointer=exp.checkpointer, data_state_fn=batches.get_state,
            logdir=os.path.join(exp.workdir, common.TENSORBOARD_DIR),
            log_every=int(config.train.log_every),
            steps_per_call=int(config.train.get("steps_per_call", 1)))
        batches.close()
        train_seconds = time.perf_counter() - t_start
        summary = {"config": str(config.name), "dataset": config.data.name,
                   "num_params": exp.num_params, "start_step": start_step, "step": result.step,
                   "preempted": result.preempted, "train_seconds": train_seconds,
                   "train_metrics": result.metrics}
        if result.preempted:
            return summary
        summary.update(task.final_samples(exp, result.state.ema_params, seed=int(config.seed)))
    finally:
        exp.close()
    summary["total_seconds"] = time.perf_counter() - t_start
    line = {"step": summary["step"], "loss": summary["train_metrics"].get("loss"),
            **{k: v for k, v in summary["quality"].items() if not isinstance(v, list)},
            "total_seconds": round(summary["total_seconds"], 1)}
    logging.info("final metrics: %s", json.dumps(line))
    if jax.process_index() == 0:
        print("final metrics:", json.dumps(line), flush=True)
        with open(os.path.join(exp.workdir, "train_summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=float)
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.quiet_library_logs()
    FLAGS = flags.FLAGS
    training.maybe_initialize_distributed(FLAGS.distributed, **distributed_kwargs(FLAGS))
    config = FLAGS.config
    common.check_train_config(config)
    workdir = common.check_workdir(FLAGS.workdir or default_workdir(config))
    logging.info("config %s -> workdir %s; %d devices (%s)", config.name, os.path.abspath(workdir),
                 jax.device_count(), jax.devices()[0].platform)
    run(config, workdir)


if __name__ == "__main__":
    common.run_launcher(main, define_flags, prog="experiments.train")
