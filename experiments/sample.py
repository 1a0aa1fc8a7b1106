r"""Draw samples from a trained run (EMA parameters) and save them as ``.npy``.

    python -m experiments.sample --workdir=DIR --num_samples=N --output=FILE.npy \
        [--solver=dpmpp_2m --steps=50 --seed=0 --guidance_scale=1.5]
    python -m experiments.sample --workdir=DIR --class=K --guidance=W ...   # conditional models

Samples are written in the dataset's original value range: toy data as raw float32
coordinates ``(N, 2)``; digits as uint8 levels 0..16 ``(N, 8, 8, 1)``; TFDS images as uint8
0..255 ``(N, H, W, C)``. For a class-conditional model the labels (cycling through the
classes) go to ``FILE_labels.npy``. The sampler defaults to the run's config
(``config.sample``). Text runs (``experiments.text_task``) write one sample per line to a
text file (default ``WORKDIR/samples.txt``) and take ``--temperature``, ``--top_p`` and
``--prompt``; ``--solver`` is then one of ancestral, first_hitting, confidence, left_to_right.

Class-conditional models: ``--class=K`` draws every sample from class K, with classifier-free
guidance ``--guidance=W`` (an alias of ``--guidance_scale``; ``uncond + W (cond - uncond)``:
W = 0 is the unconditional, null-class model, W = 1 the conditional one, default: config).
Without ``--class`` the labels cycle through the classes (0, 1, ..., 9, 0, ...: uniform), as
the run's ``config.sample.labels = "uniform"`` says. With ``--class`` sampling goes through
``experiments.guidance_eval.GuidedSampler`` (class and scale traced: one compilation).
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import app, flags, logging

from experiments import common, guidance_eval
from experiments import text_task


def define_flags() -> None:
    """The command-line flags (defined only when run as a script)."""
    text_task.define_sample_flags()  # --temperature, --top_p, --prompt (text runs)
    flags.DEFINE_string("workdir", None, "Directory of a training run.", required=True)
    flags.DEFINE_integer("num_samples", 1000, "Number of samples.")
    flags.DEFINE_string("output", None, "Output .npy file (default WORKDIR/samples.npy).")
    flags.DEFINE_string("solver", None, "Sampler (diffjax.solvers.names()); default: config.")
    flags.DEFINE_integer("steps", None, "Sampler steps; default: config.")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_float("guidance_scale", None,
                       "Classifier-free guidance scale (conditional models); default: config.")
    flags.DEFINE_integer("batch_size", None, "Samples per compiled call; default: config.")
    flags.DEFINE_integer("class", None, "Class-conditional models: draw every sample from this "
                         "class; default: cycle through the classes.")
    flags.DEFINE_alias("guidance", "guidance_scale")


def draw(workdir: str, num_samples: int, *, solver=None, steps=None, seed: int = 0,
         guidance_scale=None, batch_size=None, class_label=None):
    """``(samples in the original range, labels or None, step)`` from ``workdir``'s latest
    checkpoint (EMA parameters)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    config = common.load_config(workdir)
    with config.unlocked():
        if guidance_scale is not None:
            config.sample.guidance_scale = float(guidance_scale)
        if batch_size is not None:
            config.sample.batch_size = int(batch_size)
    objective, params, info, step = common.restore_params(config, workdir)
    if class_label is not None:
        labels = guidance_eval.class_labels(objective, class_label, num_samples)
        sampler = guidance_eval.GuidedSampler.from_config(objective, info, config, solver=solver,
                                                          steps=steps)
        x = sampler(params, jax.random.key(seed), labels, float(config.sample.guidance_scale))
        return info.postprocess(x), labels, step
    x, labels = common.sample_from_config(objective, params, info, config, num_samples, seed,
                                          solver=solver, steps=steps)
    return info.postprocess(x), labels, step


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.quiet_library_logs()
    FLAGS = flags.FLAGS
    if common.is_text(common.load_config(FLAGS.workdir)):  # text: discrete samplers, .txt out
        text_task.sample_main(FLAGS)
        return
    output = FLAGS.output or os.path.join(FLAGS.workdir, "samples.npy")
    t0 = time.perf_counter()
    samples, labels, step = draw(FLAGS.workdir, FLAGS.num_samples, solver=FLAGS.solver,
                                 steps=FLAGS.steps, seed=FLAGS.seed,
                                 guidance_scale=FLAGS.guidance_scale, batch_size=FLAGS.batch_size,
                                 class_label=FLAGS["class"].value)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    np.save(output, samples)
    if labels is not None:
        np.save(os.path.splitext(output)[0] + "_labels.npy", labels)
    logging.info("Wrote %d samples %s %s (checkpoint step %d) to %s in %.1f s", len(samples),
                 samples.shape, samples.dtype, step, output, time.perf_counter() - t0)
    print(f"wrote {output}: shape {samples.shape}, dtype {samples.dtype}, "
          f"range [{samples.min()}, {samples.max()}], step {step}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
