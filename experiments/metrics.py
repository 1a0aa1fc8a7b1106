"""Evaluation figures: sample quality (toy: sliced Wasserstein; digits: a classifier) and
bits/dim by the probability-flow ODE likelihood.

* ``sliced_wasserstein(x, y)``: mean 1-Wasserstein distance over 128 random unit directions
  (equal sample counts), the same formula as the conformance oracle.
* ``toy_quality``: SW-1 between model samples and as many exact draws from
  ``diffjax.data.toy.sample``, divided by the data's standard deviation (mean over the two
  coordinates), beside its noise floor (``sliced_wasserstein_floor``: the same figure between
  two independent exact sample sets of the same size, about 0.02-0.03 for 4000). For the
  checkerboard also the share of samples on the support (``checkerboard_support_share``; 1
  for exact samples), which SW-1 is lenient about: blurred square edges cost little transport.
* ``digits_quality``: an RBF-kernel SVC with Platt-scaled probabilities (scikit-learn,
  ``SVC(probability=True)``) is trained on one half of the 1797 real digits; it reports the share
  of samples it classifies with confidence >= 0.8, the same share on the other, held-out real
  half (about 0.89), their ratio, and the entropy of the predicted-class histogram over the
  samples (log 10 = 2.303 for perfectly balanced classes). ``digits_predict`` gives its
  predicted classes (the judge of generated (image, label) pairs, ``experiments.tasks.joint``).
* ``ode_bits_per_dim``: ``diffjax.likelihood.ode_nll`` (Hutchinson) on held-out data; for
  dequantised discrete data the bound adds the bin volume (``diffjax.likelihood.bits_per_dim``).
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Optional

import numpy as np

from diffjax import likelihood
from diffjax.data import toy
from diffjax import platform
from experiments.common import map_batches

__all__ = ["sliced_wasserstein", "sliced_wasserstein_floor", "checkerboard_support_share",
           "toy_quality", "digits_quality", "digits_predict", "pixel_statistics", "sample_quality",
           "ode_bits_per_dim"]


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, projections: int = 128, seed: int = 0) -> float:
    """Mean 1-Wasserstein distance over random 1-D projections (equal sample counts)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must be (N, D) arrays of the same shape, got {x.shape} and {y.shape}")
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((x.shape[1], projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    px, py = np.sort(x @ dirs, axis=0), np.sort(y @ dirs, axis=0)
    return float(np.abs(px - py).mean())


def checkerboard_support_share(samples: np.ndarray) -> float:
    """The share of ``samples`` ``(N, 2)`` that lie on the checkerboard's support: the closed
    black unit squares ``[i, i+1] x [j, j+1]`` (``i, j`` in ``-2..1``, ``i + j`` even) of
    `diffjax.data.toy` (1 for exact samples; a point on a square's edge or corner counts)."""
    x = np.asarray(samples, np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"samples must be an (N, 2) array, got shape {x.shape}")
    lo = toy.checkerboard_squares()  # (8, 2) lower-left corners
    on = np.all((x[:, None, :] >= lo) & (x[:, None, :] <= lo + 1.0), axis=-1).any(axis=1)
    return float(on.mean())


@functools.lru_cache(maxsize=16)
def sliced_wasserstein_floor(name: str, num: int, *, seeds: int = 5) -> tuple:
    """``(mean, std)`` over ``seeds`` pairs of the SW-1 / data std between two independent sets
    of ``num`` exact draws of toy set ``name``: what a perfect model scores on ``num`` samples
    (``toy_quality``'s ``sw_over_std`` is at the floor when it is within a few std of the mean)."""
    toy.check_name(name)
    if not isinstance(num, int) or num < 2 or not isinstance(seeds, int) or seeds < 2:
        raise ValueError(f"num and seeds must be ints >= 2, got num={num!r}, seeds={seeds!r}")
    figures = []
    for i in range(seeds):
        a = toy.sample(name, num, seed=[7919, i, 0])
        b = toy.sample(name, num, seed=[7919, i, 1])
        figures.append(sliced_wasserstein(a, b) / float(b.std(axis=0).mean()))
    return float(np.mean(figures)), float(np.std(figures, ddof=1))


def toy_quality(samples: np.ndarray, name: str, *, seed: int = 12345) -> dict:
    """SW-1 of ``samples`` against as many exact draws of toy set ``name``, SW / std and its
    noise floor (``sw_over_std_floor`` +- ``sw_over_std_floor_std``, `sliced_wasserstein_floor`);
    for the checkerboard also ``support_share`` (`checkerboard_support_share`)."""
    samples = np.asarray(samples)
    reference = toy.sample(name, len(samples), seed=seed)
    sw = sliced_wasserstein(samples, reference)
    std = float(reference.std(axis=0).mean())
    out = {"sliced_wasserstein": sw, "data_std": std, "sw_over_std": sw / std,
           "num_samples": int(len(samples))}
    if len(samples) >= 2:
        out["sw_over_std_floor"], out["sw_over_std_floor_std"] = \
            sliced_wasserstein_floor(name, int(len(samples)))
    if name == "checkerboard":
        out["support_share"] = checkerboard_support_share(samples)
    return out


@functools.lru_cache(maxsize=2)
def _digits_classifier(seed: int = 0):
    """``(fitted SVC, held-out images (N, 64) levels, held-out labels)`` on one half of the digits."""
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    bunch = load_digits()
    perm = np.random.default_rng(seed).permutation(len(bunch.target))
    half = len(perm) // 2
    fit, held = perm[:half], perm[half:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn >= 1.9 deprecates probability=
        clf = SVC(kernel="rbf", probability=True, random_state=seed)
        clf.fit(bunch.data[fit], bunch.target[fit])
    return clf, bunch.data[held], bunch.target[held]


def _confidence(clf, x: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        proba = clf.predict_proba(x)
    return proba.max(axis=1), clf.classes_[proba.argmax(axis=1)]


def digits_quality(levels: np.ndarray, *, threshold: float = 0.8, seed: int = 0) -> dict:
    """Classifier-based quality of digit samples given as levels 0..16, shape (N, 8, 8[, 1])."""
    levels = np.asarray(levels, np.float64).reshape(len(levels), -1)
    if levels.shape[1] != 64:
        raise ValueError(f"levels must hold 8x8 digits, got {levels.shape[1]} values per example")
    clf, real_x, real_y = _digits_classifier(seed)
    conf, pred = _confidence(clf, levels)
    real_conf, real_pred = _confidence(clf, real_x)
    share, real_share = float(np.mean(conf >= threshold)), float(np.mean(real_conf >= threshold))
    hist = np.bincount(pred.astype(int), minlength=10) / len(pred)
    nz = hist[hist > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    return {"confident_share": share, "real_confident_share": real_share,
            "confidence_ratio": share / real_share, "class_entropy": entropy,
            "class_entropy_over_log10": entropy / math.log(10.0),
            "class_histogram": hist.tolist(),
            "real_accuracy": float(np.mean(real_pred == real_y)),
            "num_samples": int(len(levels)), "threshold": threshold}


def digits_predict(levels: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """The class ``digits_quality``'s SVC assigns to each digit given as levels 0..16,
    shape (N, 8, 8[, 1]); int64 (N,)."""
    levels = np.asarray(levels, np.float64).reshape(len(levels), -1)
    if levels.shape[1] != 64:
        raise ValueError(f"levels must hold 8x8 digits, got {levels.shape[1]} values per example")
    clf, _, _ = _digits_classifier(seed)
    return _confidence(clf, levels)[1].astype(np.int64)


def pixel_statistics(samples: np.ndarray, reference: np.ndarray) -> dict:
    """Mean and standard deviation of the values of samples and reference data (a sanity check
    for datasets without an offline quality metric)."""
    s, r = np.asarray(samples, np.float64), np.asarray(reference, np.float64)
    return {"sample_mean": float(s.mean()), "sample_std": float(s.std()),
            "data_mean": float(r.mean()), "data_std": float(r.std()), "num_samples": int(len(s))}


def sample_quality(name: str, samples: np.ndarray, reference: Optional[np.ndarray] = None) -> dict:
    """The sample-quality figures for dataset ``name``, from samples in the original range."""
    if name in toy.NAMES:
        return toy_quality(samples, name)
    if name == "digits":
        return digits_quality(samples)
    if reference is None:
        raise ValueError(f"dataset {name!r} has no offline quality metric; pass reference= data")
    return pixel_statistics(samples, reference)


def ode_bits_per_dim(objective, params, x: np.ndarray, key, *, batch_size: int = 500,
                     rtol: float = 1e-5, atol: float = 1e-5, probes: int = 1, t_min: float = 1e-3,
                     num_bins: Optional[int] = None) -> dict:
    """Mean ODE negative log-likelihood of ``x`` (model space), in nats and bits/dim.

    ``num_bins`` set: ``x`` is uniformly dequantised discrete data on [-1, 1] with that many
    levels, and ``bits_per_dim`` is the discrete-data bound with the dequantisation offset
    (``diffjax.likelihood.bits_per_dim``); otherwise it is the continuous ``nll / (D log 2)``.
    """
    x = np.asarray(x, np.float32)
    n = len(x)
    dim = int(np.prod(x.shape[1:]))

    @platform.jit
    def nll_batch(params, xb, key):
        nll, info = likelihood.ode_nll(objective.model_fn(params), xb, key,
                                       schedule=objective.schedule, prediction=objective.prediction,
                                       divergence="hutchinson", probes=probes, rtol=rtol, atol=atol,
                                       t_min=t_min)
        return nll, info["nfe"]

    nll, nfes = map_batches(lambda k, xb: nll_batch(params, xb, k), key, n, batch_size, x)
    nll = nll.astype(np.float64)
    if not np.all(np.isfinite(nll)):
        raise FloatingPointError(f"non-finite ODE NLL for {np.sum(~np.isfinite(nll))} of {n} examples")
    mean = float(nll.mean())
    if num_bins is not None:
        bpd = float(likelihood.bits_per_dim(mean, dim, num_bins=num_bins, data_range=2.0))
    else:
        bpd = mean / (dim * math.log(2.0))
    return {"nll_nats": mean, "nll_nats_stderr": float(nll.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
            "bits_per_dim": bpd, "num_examples": n, "dim": dim, "num_bins": num_bins,
            "nfe_per_batch": float(np.mean([int(v) for v in nfes]))}
