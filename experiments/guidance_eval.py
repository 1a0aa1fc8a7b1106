r"""Classifier-free guidance and inpainting on a class-conditional digits run; writes
``WORKDIR/guidance_metrics.json``.

    python -m experiments.guidance_eval --workdir=DIR [--scales=0,1,3 --samples_per_class=100 \
        --inpaint_examples=0 --solver=dpmpp_2m --steps=50]

* **Class match.** For every guidance scale ``w`` (``uncond + w (cond - uncond)``: 0 is the
  unconditional model, 1 the conditional one) the sampler draws ``samples_per_class`` digits of
  each class; an RBF-kernel SVC (scikit-learn defaults) trained on the real digits of the
  training split classifies them, and ``class_match`` is the share assigned to the requested
  class. All scales use the same noise (one key), so they differ only by the guidance. Also
  reported: the mean per-pixel standard deviation of the levels within a class (``diversity``;
  guidance trades it for class fidelity).
* **Inpainting.** The top half of every held-out digit (the dataset's ``test`` split, unseen by
  the diffusion model and by the classifier) is known; ``diffjax.editing.inpaint`` (replacement
  method, optional RePaint resampling) fills the bottom half with the null-class (unconditional)
  model. ``known_pixels_exact`` checks that the known half comes back bit for bit (model space)
  and level for level (0..16); the classifier's accuracy against the true labels is reported on
  the inpainted digits, on the real full digits and on the top halves with a blank bottom half.

Sampling goes through `experiments.tasks.gaussian.GuidedSampler`, which takes the labels and
the guidance scale as traced arguments: one compilation serves every class and scale
(``sampler.traces`` counts the traces). ``experiments.sample --class=K`` uses it as well.
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

import diffjax
from diffjax.data import digits as ddigits
from diffjax import platform
from experiments import common
from experiments.tasks.gaussian import GaussianTask, GuidedSampler

METRICS_FILE = "guidance_metrics.json"
DEFAULTS = dict(scales=(0.0, 1.0, 3.0), samples_per_class=100, inpaint_examples=0,
                inpaint_solver="ddpm", inpaint_steps=50, inpaint_resample=10, seed=2)

__all__ = ["digits_classifier", "class_match", "top_half_mask",
           "inpaint", "inpaint_heldout", "evaluate_guidance", "METRICS_FILE"]


# ---------------------------------------------------------------------------- class match
@functools.lru_cache(maxsize=2)
def digits_classifier(split_seed: int = 0, holdout_fraction: float = 0.2):
    """An RBF SVC (scikit-learn defaults) fitted on the real digits of the ``train`` split, on
    levels 0..16 flattened to 64 features."""
    from sklearn.svm import SVC

    images, labels = ddigits.load("train", split_seed=split_seed, holdout_fraction=holdout_fraction)
    return SVC(kernel="rbf").fit(images.reshape(len(images), -1).astype(np.float64), labels)


def _predict(clf, levels: np.ndarray) -> np.ndarray:
    return clf.predict(np.asarray(levels, np.float64).reshape(len(levels), -1))


def class_match(levels: np.ndarray, labels: np.ndarray, clf=None) -> dict:
    """Share of digit samples (levels 0..16) that ``clf`` assigns to their requested class,
    overall and per class, and the mean within-class per-pixel standard deviation."""
    clf = digits_classifier() if clf is None else clf
    labels = np.asarray(labels)
    pred = _predict(clf, levels)
    classes = np.unique(labels)
    flat = np.asarray(levels, np.float64).reshape(len(levels), -1)
    return {"class_match": float(np.mean(pred == labels)),
            "per_class": [float(np.mean(pred[labels == k] == k)) for k in classes],
            "diversity": float(np.mean([flat[labels == k].std(axis=0).mean() for k in classes])),
            "num_samples": int(len(labels))}


# ---------------------------------------------------------------------------- inpainting
def top_half_mask(shape: Sequence[int]) -> np.ndarray:
    """Boolean mask of one example of ``shape`` (H, W, C): True (known) on the top H // 2 rows."""
    rows = np.arange(shape[0]) < shape[0] // 2
    return np.broadcast_to(rows.reshape((-1,) + (1,) * (len(shape) - 1)), tuple(shape)).copy()


def inpaint(objective, params, x_known: np.ndarray, mask: np.ndarray, key, *, solver: str = "ddpm",
            steps: int = 100, resample: int = 1, batch_size: int = 500) -> np.ndarray:
    """``diffjax.editing.inpaint`` over ``x_known`` (model space, ``(N, ...)``) in fixed-size
    chunks (one compilation); ``mask`` (one example's shape, True = known) is shared. On a
    class-conditional model the null-class (unconditional) model fills the unknown region."""
    x_known = np.asarray(x_known, np.float32)
    mask = jnp.asarray(np.broadcast_to(mask, x_known.shape[1:]))

    @platform.jit
    def fill(params, key, xb):
        x, _ = diffjax.editing.inpaint(objective.model_fn(params), key, xb, mask[None],
                                       schedule=objective.schedule, prediction=objective.prediction,
                                       solver=solver, steps=steps, resample=resample)
        return x

    x, _ = common.map_batches(lambda k, xb: (fill(params, k, xb), None), key, len(x_known),
                              batch_size, x_known)
    return x


def inpaint_heldout(objective, params, info, config, key, *, num: int = 0, solver: str = "ddpm",
                    steps: int = 100, resample: int = 1, clf=None) -> tuple[dict, dict]:
    """Inpaint the bottom half of the first ``num`` held-out digits (0: all); returns
    ``(metrics, arrays)`` with arrays ``real``, ``inpainted`` (levels), ``mask``, ``label``."""
    test = GaussianTask().build_dataset(config, "test")
    batch = test.as_arrays(int(num) or None, seed=int(config.eval.seed))
    x_known, labels = np.asarray(batch["x"]), np.asarray(batch["label"])
    mask = top_half_mask(info.shape)
    t0 = time.perf_counter()
    x = inpaint(objective, params, x_known, mask, key, solver=solver, steps=steps,
                resample=resample, batch_size=int(config.sample.batch_size))
    seconds = time.perf_counter() - t0
    real, filled = info.postprocess(x_known), info.postprocess(x)
    known = np.broadcast_to(mask, x.shape)
    blank = np.where(known, real, 0).astype(real.dtype)
    clf = digits_classifier() if clf is None else clf
    metrics = {
        "known_pixels_exact": bool(np.array_equal(x[known], x_known[known])
                                   and np.array_equal(filled[known], real[known])),
        "accuracy_inpainted": float(np.mean(_predict(clf, filled) == labels)),
        "accuracy_real": float(np.mean(_predict(clf, real) == labels)),
        "accuracy_top_half_blank_bottom": float(np.mean(_predict(clf, blank) == labels)),
        "mean_abs_level_error_filled": float(np.abs(filled[~known].astype(float)
                                                    - real[~known].astype(float)).mean()),
        "num_examples": int(len(labels)), "solver": solver, "steps": int(steps),
        "resample": int(resample), "seconds": seconds}
    return metrics, {"real": real, "inpainted": filled, "mask": mask, "label": labels}


# ---------------------------------------------------------------------------- the evaluation
def _settings(config, **overrides) -> dict:
    s = dict(DEFAULTS)
    s.update({k: v for k, v in dict(config.get("guidance_eval", {}) or {}).items()})
    s.update({k: v for k, v in overrides.items() if v is not None})
    s["scales"] = tuple(float(w) for w in s["scales"])
    return s


def evaluate_guidance(workdir: str, *, scales=None, samples_per_class=None, inpaint_examples=None,
                      inpaint_steps=None, inpaint_resample=None, solver=None, steps=None,
                      seed=None, write: bool = True) -> dict:
    """Class-match rates per guidance scale and inpainting figures of ``workdir``'s latest
    checkpoint (EMA parameters); settings default to ``config.guidance_eval``."""
    t_start = time.perf_counter()
    config = common.load_config(workdir)
    if config.data.name != "digits":
        raise ValueError(f"guidance_eval needs a digits run (its classifier is trained on the "
                         f"real digits); {workdir!r} was trained on {config.data.name!r}")
    s = _settings(config, scales=scales, samples_per_class=samples_per_class,
                  inpaint_examples=inpaint_examples, inpaint_steps=inpaint_steps,
                  inpaint_resample=inpaint_resample, seed=seed)
    objective, params, info, step = GaussianTask().restore_params(config, workdir)
    sampler = GuidedSampler.from_config(objective, info, config, solver=solver, steps=steps)
    key = jax.random.key(int(s["seed"]))
    labels = np.repeat(np.arange(objective.num_classes), int(s["samples_per_class"]))
    clf = digits_classifier()
    out = {"step": step, "config": str(config.name), "parameters": "ema",
           "sampler": {"solver": sampler.kw["solver"], "steps": sampler.kw.get("steps"),
                       "t_min": sampler.kw["t_min"]},
           "guidance": {}}
    for w in s["scales"]:
        t0 = time.perf_counter()
        levels = info.postprocess(sampler(params, jax.random.fold_in(key, 0), labels, w))
        out["guidance"][f"{w:g}"] = {**class_match(levels, labels, clf),
                                     "seconds": time.perf_counter() - t0}
        logging.info("guidance %g: class match %.4f", w, out["guidance"][f"{w:g}"]["class_match"])
    out["sampler_traces"] = sampler.traces
    out["inpainting"], _ = inpaint_heldout(
        objective, params, info, config, jax.random.fold_in(key, 1), num=int(s["inpaint_examples"]),
        solver=str(s["inpaint_solver"]), steps=int(s["inpaint_steps"]),
        resample=int(s["inpaint_resample"]), clf=clf)
    out["seconds"] = time.perf_counter() - t_start
    if write:
        with open(os.path.join(workdir, METRICS_FILE), "w") as f:
            json.dump(out, f, indent=2, default=float)
    return out


def define_flags() -> None:
    """The command-line flags (defined only when run as a script)."""
    flags.DEFINE_string("workdir", None, "Directory of a class-conditional digits run.",
                        required=True)
    flags.DEFINE_list("scales", None, "Guidance scales; default: config.guidance_eval.scales.")
    flags.DEFINE_integer("samples_per_class", None, "Samples per class and scale.")
    flags.DEFINE_integer("inpaint_examples", None, "Held-out digits to inpaint (0: all).")
    flags.DEFINE_integer("inpaint_steps", None, "Inpainting sampler steps.")
    flags.DEFINE_integer("inpaint_resample", None, "RePaint resampling per step (1: none).")
    flags.DEFINE_string("solver", None, "Sampler for the class-match samples; default: config.")
    flags.DEFINE_integer("steps", None, "Sampler steps; default: config.")
    flags.DEFINE_integer("seed", None, "Seed; default: config.guidance_eval.seed.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.quiet_library_logs()
    F = flags.FLAGS
    out = evaluate_guidance(
        F.workdir, scales=None if F.scales is None else [float(w) for w in F.scales],
        samples_per_class=F.samples_per_class, inpaint_examples=F.inpaint_examples,
        inpaint_steps=F.inpaint_steps, inpaint_resample=F.inpaint_resample, solver=F.solver,
        steps=F.steps, seed=F.seed)
    rates = {w: round(g["class_match"], 4) for w, g in out["guidance"].items()}
    inp = out["inpainting"]
    print(f"step {out['step']}: class match by guidance scale {json.dumps(rates)}; inpainting: "
          f"known pixels exact={inp['known_pixels_exact']}, accuracy inpainted "
          f"{inp['accuracy_inpainted']:.4f} vs real {inp['accuracy_real']:.4f} (top half only "
          f"{inp['accuracy_top_half_blank_bottom']:.4f}); {out['seconds']:.0f} s")


if __name__ == "__main__":
    define_flags()
    app.run(main)
