r"""Evaluate a trained run: likelihood and sample quality; writes ``WORKDIR/metrics.json``.

    python -m experiments.evaluate --workdir=DIR [--num_samples=4000 --nll_examples=1000]

* bits/dim by the probability-flow ODE likelihood (``diffjax.likelihood.ode_nll``,
  Hutchinson trace estimator, adaptive Dopri5) on held-out data (the dataset's ``test``
  split). Images are evaluated on uniformly dequantised held-out data and reported as the
  discrete-data bound (with the dequantisation offset ``log(L / 2)`` per dimension); toy data
  as continuous bits/dim, ``nll / (2 log 2)``.
* sample quality (``experiments.metrics``): toy -- sliced Wasserstein-1 / data std against
  exact draws; digits -- SVC confident-share ratio and class entropy; other images -- pixel
  statistics.
* ``eval_samples.png`` (scatter plot or sample grid) and ``eval/*`` TensorBoard scalars.

Samples use the EMA parameters and the run's sampler (``config.sample``) unless overridden.
"""
from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np
from absl import app, flags, logging

from experiments import common, metrics, plots, text_task

METRICS_FILE = "metrics.json"


def define_flags() -> None:
    """The command-line flags (defined only when run as a script)."""
    flags.DEFINE_string("workdir", None, "Directory of a training run.", required=True)
    flags.DEFINE_integer("num_samples", None, "Samples for the quality figure; default: config.")
    flags.DEFINE_integer("nll_examples", None, "Held-out examples for bits/dim (0 skips it); "
                         "default: config.")
    flags.DEFINE_string("solver", None, "Sampler; default: config.")
    flags.DEFINE_integer("steps", None, "Sampler steps; default: config.")
    flags.DEFINE_integer("seed", None, "Evaluation seed; default: config.eval.seed.")
    text_task.define_evaluate_flags()  # --elbo_samples, --elbo_steps, --spell_t (text runs)


def _heldout(config, num: int, seed: int):
    """``(model-space held-out data, num_bins or None)`` for the likelihood."""
    name = config.data.name
    if name in common.ddata.toy.NAMES:
        return common.build_dataset(config, "test").as_arrays(num, seed=seed)["x"], None
    with config.unlocked():
        config.data.dequantize = True  # the discrete-data bound needs dequantised data
    test = common.build_dataset(config, "test")
    levels = test.info.original_range[1] + 1
    return test.as_arrays(num, seed=seed)["x"], int(levels)


def evaluate(workdir: str, *, num_samples=None, nll_examples=None, solver=None, steps=None,
             seed=None) -> dict:
    """Compute the metrics of ``workdir``'s latest checkpoint and write ``metrics.json``."""
    t_start = time.perf_counter()
    config = common.load_config(workdir)
    if common.is_text(config):
        return text_task.evaluate(workdir, num_samples=num_samples, nll_examples=nll_examples,
                                  solver=solver, steps=steps, seed=seed)
    ev = config.eval
    seed = int(ev.seed if seed is None else seed)
    num_samples = int(ev.num_samples if num_samples is None else num_samples)
    nll_examples = int(ev.nll_examples if nll_examples is None else nll_examples)
    objective, params, info, step = common.restore_params(config, workdir)
    out = {"step": step, "dataset": config.data.name, "config": str(config.name),
           "parameters": "ema"}

    # Sample quality.
    t0 = time.perf_counter()
    x, _ = common.sample_from_config(objective, params, info, config, num_samples, seed,
                                     solver=solver, steps=steps)
    samples = info.postprocess(x)
    out["sampler"] = {"solver": solver or config.sample.solver,
                      "steps": int(steps or config.sample.steps), "t_min": float(config.sample.t_min),
                      "seconds": time.perf_counter() - t0}
    reference = None
    if config.data.name in common.ddata.toy.NAMES:
        reference = common.build_dataset(config, "test").as_arrays(num_samples, seed=seed + 1)["x"]
    elif config.data.name != "digits":
        test = common.build_dataset(config, "test")
        reference = test.postprocess(test.as_arrays(min(num_samples, 1000))["x"])
    out["sample_quality"] = metrics.sample_quality(config.data.name, samples, reference)
    figure = plots.samples_figure(info, samples, os.path.join(workdir, "eval_samples.png"),
                                  data=reference, title=f"{config.name} step {step}")
    out["figure"] = os.path.basename(figure)

    # Likelihood.
    if nll_examples > 0:
        t0 = time.perf_counter()
        data, num_bins = _heldout(config, nll_examples, seed)
        nll = metrics.ode_bits_per_dim(
            objective, params, data, jax.random.key(seed), batch_size=int(ev.nll_batch_size),
            rtol=float(ev.nll_rtol), atol=float(ev.nll_atol), probes=int(ev.nll_probes),
            t_min=float(ev.nll_t_min), num_bins=num_bins)
        nll["seconds"] = time.perf_counter() - t0
        nll["dequantized"] = num_bins is not None
        out["likelihood"] = nll
        out["bits_per_dim"] = nll["bits_per_dim"]
    out["seconds"] = time.perf_counter() - t_start

    path = os.path.join(workdir, METRICS_FILE)
    with open(path, "w") as f:
        json.dump(out, f, indent=2, default=float)
    _tensorboard(workdir, step, out)
    logging.info("Wrote %s", path)
    return out


def _scalars(prefix: str, tree: dict):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _scalars(f"{prefix}{k}/", v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            yield f"{prefix}{k}", float(v)


def _tensorboard(workdir: str, step: int, out: dict) -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(os.path.join(workdir, common.TENSORBOARD_DIR)) as writer:
        for k, v in _scalars("eval/", {k: out[k] for k in ("sample_quality", "likelihood")
                                       if k in out}):
            writer.add_scalar(k, v, step)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.quiet_library_logs()
    FLAGS = flags.FLAGS
    if common.is_text(common.load_config(FLAGS.workdir)):
        text_task.evaluate_main(FLAGS)
        return
    out = evaluate(FLAGS.workdir, num_samples=FLAGS.num_samples, nll_examples=FLAGS.nll_examples,
                   solver=FLAGS.solver, steps=FLAGS.steps, seed=FLAGS.seed)
    headline = {k: v for k, v in out["sample_quality"].items() if not isinstance(v, list)}
    if "bits_per_dim" in out:
        headline["bits_per_dim"] = out["bits_per_dim"]
    print(f"step {out['step']}: {json.dumps(headline)}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
