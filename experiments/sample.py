r"""Draw samples from a trained run (EMA parameters) and write them to a file.

    python -m experiments.sample --workdir=DIR --num_samples=N --output=FILE.npy \
        [--solver=dpmpp_2m --steps=50 --seed=0 --batch_size=B]
    python -m experiments.sample --workdir=DIR --class=K --guidance=W ...   # conditional models
    python -m experiments.sample --workdir=DIR --output=FILE.txt --prompt="the ___ is"  # text

The run's task (`experiments.tasks`, from its ``config.json``) draws and writes the samples:
Gaussian runs write ``.npy`` in the dataset's original value range (``--class``,
``--guidance`` for class-conditional models; `experiments.tasks.gaussian`) and, next to it,
a figure ``FILE.png`` (2-D toy data: a scatter plot of the samples beside as many exact
draws, titled with the checkerboard's support share; images: a grid of the first 100 titled
"100 of N samples"; none for latents; ``--nopng`` skips it); text runs write one sample per
line (``--temperature``, ``--top_p``, ``--prompt``; `experiments.tasks.text`), no figure.
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
                        "samples.txt for text); Gaussian runs also write the figure FILE.png "
                        "next to FILE.npy.", **kw)
    flags.DEFINE_boolean("png", True, "Gaussian runs: also write the samples' figure (2-D "
                         "data: scatter against exact data; images: grid) to OUTPUT's name "
                         "with .png; text runs write none.", **kw)
    flags.DEFINE_string("solver", None, "Sampler (diffjax.solvers.names() or, for text, "
                        "diffjax.discrete.METHODS); default: config.", **kw)
    flags.DEFINE_integer("steps", None, "Sampler steps; default: config.", **kw)
    flags.DEFINE_integer("seed", 0, "Sampling seed.", **kw)
    flags.DEFINE_integer("batch_size", None, "Samples per compiled call; default: config.", **kw)
    common.require_positive(flag_values, "num_samples", "steps", "batch_size")
    for task in tasks.all_tasks():
        task.define_sample_flags(flag_values)
    common.require_range(flag_values, "temperature", 0.0, note=" (0 = greedy)")
    common.require_range(flag_values, "top_p", 0.0, 1.0, note=" (0 = off)")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.quiet_library_logs()
    FLAGS = flags.FLAGS
    tasks.get(common.workdir_config(FLAGS.workdir)).sample_main(FLAGS)


if __name__ == "__main__":
    common.run_launcher(main, define_flags, prog="experiments.sample")
