r"""Evaluate a trained run; writes ``WORKDIR/metrics.json``.

    python -m experiments.evaluate --workdir=DIR [--num_samples=4000 --nll_examples=1000]

The run's task (`experiments.tasks`, from its ``config.json``) computes the metrics with the
EMA parameters and the run's sampler (``config.sample``) unless overridden: Gaussian runs
report ODE bits/dim and sample quality and draw ``eval_samples.png``
(`experiments.tasks.gaussian`; toy data: sliced W1 / std beside its noise floor, the same
figure between two independent exact sample sets of the same size, and for the checkerboard
the share of samples on its squares); text runs report held-out bits/char, word statistics of
samples and, for the uniform process, spell checking (`experiments.tasks.text`).
"""
from __future__ import annotations

from absl import app, flags

from experiments import common, tasks


def define_flags(flag_values=flags.FLAGS) -> None:
    """The command-line flags (defined only when run as a script): the shared ones, then
    every task's own."""
    kw = dict(flag_values=flag_values)
    flags.DEFINE_string("workdir", None, "Directory of a training run.", required=True, **kw)
    flags.DEFINE_integer("num_samples", None, "Samples for the quality figures; default: "
                         "config.", **kw)
    flags.DEFINE_integer("nll_examples", None, "Held-out examples for the likelihood (0 skips "
                         "bits/dim; for text 0 = all); default: config.", **kw)
    flags.DEFINE_string("solver", None, "Sampler; default: config.", **kw)
    flags.DEFINE_integer("steps", None, "Sampler steps; default: config.", **kw)
    flags.DEFINE_integer("seed", None, "Evaluation seed; default: config.eval.seed.", **kw)
    common.require_positive(flag_values, "num_samples", "steps")
    for task in tasks.all_tasks():
        task.define_evaluate_flags(flag_values)


def evaluate(workdir: str, **overrides) -> dict:
    """The metrics of ``workdir``'s latest checkpoint, by its task; writes ``metrics.json``."""
    return tasks.get(common.load_config(workdir)).evaluate(workdir, **overrides)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.quiet_library_logs()
    FLAGS = flags.FLAGS
    tasks.get(common.workdir_config(FLAGS.workdir)).evaluate_main(FLAGS)


if __name__ == "__main__":
    common.run_launcher(main, define_flags, prog="experiments.evaluate")
