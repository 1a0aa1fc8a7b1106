r"""Draw samples from a trained run (EMA parameters) and write them to a file.

    python -m experiments.sample --workdir=DIR --num_samples=N --output=FILE.npy \
        [--solver=dpmpp_2m --steps=50 --seed=0 --batch_size=B]
    python -m experiments.sample --workdir=DIR --class=K --guidance=W ...   # conditional models
    python -m experiments.sample --workdir=DIR --output=FILE.txt --prompt="the ___ is"  # text

The run's task (`experiments.tasks`, from its ``config.json``) draws and writes the samples:
Gaussian runs write ``.npy`` in the dataset's original value range (``--class``,
``--guidance`` for class-conditional models; `experiments.tasks.gaussian`), text runs one
sample per line (``--temperature``, ``--top_p``, ``--prompt``; `experiments.tasks.text`).
The sampler and its steps default to the run's config (``config.sample``).
"""
from __future__ import annotations

from absl import app, flags

from experiments import common, tasks


def define_flags(flag_values=flags.FLAGS) -> None:
    """The command-line flags (defined only when run as a script): the shared ones, then
    every task's own."""
    kw = dict(flag_values=flag_values)
    flags.DEFINE_string("workdir", None, "Directory of a training run.", required=True, **kw)
    flags.DEFINE_integer("num_samples", 1000, "Number of samples.", **kw)
    flags.DEFINE_string("output", None, "Output file (default: WORKDIR/samples.npy, or "
                        "samples.txt for text).", **kw)
    flags.DEFINE_string("solver", None, "Sampler (diffjax.solvers.names() or, for text, "
                        "diffjax.discrete.METHODS); default: config.", **kw)
    flags.DEFINE_integer("steps", None, "Sampler steps; default: config.", **kw)
    flags.DEFINE_integer("seed", 0, "Sampling seed.", **kw)
    flags.DEFINE_integer("batch_size", None, "Samples per compiled call; default: config.", **kw)
    for task in tasks.all_tasks():
        task.define_sample_flags(flag_values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.quiet_library_logs()
    FLAGS = flags.FLAGS
    tasks.get(common.load_config(FLAGS.workdir)).sample_main(FLAGS)


if __name__ == "__main__":
    define_flags()
    app.run(main)
