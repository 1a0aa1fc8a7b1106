r"""Feature-based quality of image samples for ``experiments.evaluate``: Fréchet distance, KID
and k-NN precision / recall (`diffjax.metrics`) of the generated samples against the training
data, in two feature spaces.

* ``<dataset>_features`` (always, for labelled image datasets): the penultimate layer of a
  small classifier trained on the dataset itself (`experiments.feature_net`, cached), e.g.
  ``fd_digits_features``. Comparable between runs on the same dataset (same cached network),
  not with published FIDs.
* ``inception`` (only when an InceptionV3 weight file is given, ``config.eval.inception_weights``
  or ``experiments.evaluate --inception_weights=PATH``): the FID network's 2048-d pool3
  features (`diffjax.models.inception`; the weights are not shipped), ``fid_inception``.
  Images are scaled to ``[0, 1]``, grey ones repeated to 3 channels, and resized to 299x299.

Keys written (``NAME`` = ``digits_features``, ``mnist_features``, ... or ``inception``):
``fd_NAME`` (``fid_inception`` for Inception), ``kid_NAME``, ``kid_std_NAME``,
``precision_NAME``, ``recall_NAME``, ``num_samples_NAME`` (generated samples used),
``num_reference_NAME`` (real images used), and ``heldout_accuracy_NAME`` for the feature
network (its test-split accuracy).

Reference: the first ``n`` images of the ``train`` split in index order, ``n`` = the number of
samples capped at the split's size. The Fréchet distance is biased upward for small ``n`` and
depends on it (`diffjax.metrics`): compare runs only at equal ``num_samples``. KID: 100
subsets of ``min(1000, n // 2)`` rows (so its std is informative); precision / recall with
``k = 3``. With fewer than :data:`MIN_SAMPLES` samples the figures are skipped and
``feature_metrics`` says why.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from diffjax import metrics
from diffjax.data import preprocessing
from experiments import feature_net

__all__ = ["MIN_SAMPLES", "check_inception_weights", "feature_figures", "feature_net_for",
           "inception_features", "image_quality"]

MIN_SAMPLES = 10
"""Fewest samples the feature figures are computed for."""

FEATURE_NET_SEED = 0  # one network per dataset, whatever the evaluation seed


def check_inception_weights(path: Optional[str]) -> Optional[str]:
    """``None`` for an unset path (``None`` or ``""``), else the absolute path of an existing
    file; a missing file raises ``ValueError`` naming the flag and the config field."""
    if not path:
        return None
    full = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(full):
        raise ValueError(f"config.eval.inception_weights / --inception_weights={path!r}: no such "
                         f"file. It must be an InceptionV3 weight file in the .npz format of "
                         f"diffjax.models.inception (the FID weights are not shipped with "
                         f"diffjax; that module's docstring has a conversion recipe); leave it "
                         f"empty to skip FID")
    return full


def feature_figures(name: str, sample_features: np.ndarray, reference_features: np.ndarray, *,
                    seed: int = 0, fd_key: Optional[str] = None) -> dict:
    """The figures of the module docstring for one feature space ``name``; ``fd_key``
    overrides the Fréchet distance's key (default ``fd_<name>``)."""
    n, m = len(sample_features), len(reference_features)
    kid = metrics.kernel_inception_distance(sample_features, reference_features,
                                            num_subsets=100,
                                            subset_size=max(2, min(1000, min(n, m) // 2)),
                                            seed=seed)
    pr = metrics.precision_recall(reference_features, sample_features, k=3)
    return {fd_key or f"fd_{name}": metrics.frechet_distance(sample_features, reference_features),
            f"kid_{name}": kid["kid"], f"kid_std_{name}": kid["kid_std"],
            f"precision_{name}": pr["precision"], f"recall_{name}": pr["recall"],
            f"num_samples_{name}": int(n), f"num_reference_{name}": int(m)}


def _levels(dataset, num: Optional[int] = None):
    """``(images in the original range, labels or None)`` of a Dataset, in index order."""
    arrays = dataset.as_arrays(num)
    return np.asarray(dataset.postprocess(arrays["x"])), arrays.get("label")


def feature_net_for(dataset_fn: Callable[[str], object], *,
                    cache_dir: Optional[str] = None) -> feature_net.TrainedFeatureNet:
    """The cached (or newly trained) feature network of the dataset ``dataset_fn(split)``
    returns (a ``diffjax.data.Dataset``): trained on the ``train`` split, its held-out
    accuracy on ``test`` (or, where the dataset has no test split, on the last tenth of
    ``train``, which it is then not trained on)."""
    train = dataset_fn("train")
    info = train.info
    if info.num_classes is None:
        raise ValueError(f"dataset {info.name!r} has no labels: the feature network is a "
                         f"classifier")
    top = float(info.original_range[1])
    x, y = _levels(train)
    x = preprocessing.to_symmetric(x, top)
    spec = feature_net.Spec(
        dataset=info.name, shape=tuple(int(s) for s in info.shape),
        num_classes=int(info.num_classes), data_hash=feature_net.fingerprint(x, y),
        steps=feature_net.DEFAULT_STEPS.get(info.name, 3000), seed=FEATURE_NET_SEED)

    def data():
        try:
            tx, ty = _levels(dataset_fn("test"))
            return x, y, preprocessing.to_symmetric(tx, top), ty
        except (ValueError, FileNotFoundError) as err:
            logging.warning("No test split for the feature network's accuracy (%s): holding out "
                            "the last tenth of the training split.", err)
            cut = len(x) - max(1, len(x) // 10)
            return x[:cut], y[:cut], x[cut:], y[cut:]

    return feature_net.load_or_train(spec, data, cache_dir=cache_dir)


def inception_features(model, images: np.ndarray, max_value: float, *,
                       batch_size: int = 100) -> np.ndarray:
    """Pool3 features ``(N, 2048)`` of images ``(N, H, W, C)`` in the original range
    ``0..max_value`` (C = 1 or 3), ``batch_size`` at a time (one compilation)."""
    x = np.asarray(images, np.float32) / float(max_value)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1 or 3), got {x.shape}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, xb: nnx.merge(graphdef, s)(xb))
    n, b = len(x), int(min(batch_size, len(x)))
    pad = (-n) % b
    if pad:
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], np.float32)])
    out = [np.asarray(fwd(state, jnp.asarray(x[i:i + b]))) for i in range(0, len(x), b)]
    return np.concatenate(out)[:n]


def image_quality(samples: np.ndarray, dataset_fn: Callable[[str], object], *, seed: int = 0,
                  inception_weights: Optional[str] = None,
                  cache_dir: Optional[str] = None) -> dict:
    """The feature figures (module docstring) of ``samples`` (original range, ``(N, H, W, C)``)
    against the training data of ``dataset_fn`` (``split -> diffjax.data.Dataset``).

    ``seed``: KID's subset draws. ``inception_weights``: path of an InceptionV3 weight file
    (None / ``""``: no Inception figures; a missing file raises ``ValueError``).
    ``cache_dir``: the feature network cache's base directory (None / ``""``: the default of
    `experiments.feature_net`).
    """
    weights = check_inception_weights(inception_weights)
    samples = np.asarray(samples)
    n = len(samples)
    if n < MIN_SAMPLES:
        return {"feature_metrics": f"skipped: {n} samples < {MIN_SAMPLES}"}
    train = dataset_fn("train")
    info = train.info
    top = float(info.original_range[1])
    reference, _ = _levels(train, n)
    out = {}
    if info.num_classes is None:
        out["feature_metrics"] = f"no {info.name}_features: the dataset has no labels"
    else:
        t0 = time.perf_counter()
        net = feature_net_for(dataset_fn, cache_dir=cache_dir)
        name = f"{info.name}_features"
        out.update(feature_figures(name, net.features(preprocessing.to_symmetric(samples, top)),
                                   net.features(preprocessing.to_symmetric(reference, top)),
                                   seed=seed))
        out[f"heldout_accuracy_{name}"] = net.heldout_accuracy
        logging.info("%s figures in %.1f s (feature network %s).", name,
                     time.perf_counter() - t0, "trained" if net.trained else "from the cache")
    if weights is not None:
        from diffjax.models import inception  # only with weights: builds a 22M-parameter net

        t0 = time.perf_counter()
        model = inception.load_inception(weights)
        out.update(feature_figures("inception", inception_features(model, samples, top),
                                   inception_features(model, reference, top), seed=seed,
                                   fd_key="fid_inception"))
        logging.info("Inception figures in %.1f s.", time.perf_counter() - t0)
    return out
