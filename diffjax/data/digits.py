"""scikit-learn's bundled 8x8 handwritten digits (offline: shipped inside scikit-learn).

1797 grey-scale images with integer levels 0..16 and labels 0..9. ``load(split)`` returns
``(images, labels)`` with images uint8 of shape ``(N, 8, 8, 1)`` (levels 0..16) and int32
labels. The split is deterministic: the examples are ordered by
``np.random.default_rng(split_seed).permutation(1797)``; the last
``round(holdout_fraction * 1797)`` of that order are ``"test"`` (held out), the rest
``"train"``; ``"all"`` is every example in scikit-learn's order. Within a split, examples
keep scikit-learn's order.

Preprocessing to ``[-1, 1]`` and back lives in :mod:`diffjax.data.preprocessing` with
``max_value = MAX_VALUE = 16`` (:func:`preprocess`, :func:`postprocess` are shortcuts).
"""

from __future__ import annotations

import functools

import numpy as np

from diffjax.data import preprocessing

__all__ = ["DigitsSource", "MAX_VALUE", "NUM_CLASSES", "SHAPE", "SPLITS", "load", "postprocess", "preprocess",
           "split_indices"]


def __dir__():
    return sorted(__all__)


MAX_VALUE = 16
"""The largest grey level of an image (levels are the integers 0..16)."""
NUM_CLASSES = 10
"""The number of classes (the digits 0..9)."""
SHAPE = (8, 8, 1)
"""The shape of one image, height x width x channels."""
SPLITS = ("train", "test", "all")
"""The split names ``load`` accepts: ``"train"`` and the held-out ``"test"`` (disjoint), and
``"all"``."""


@functools.lru_cache(maxsize=1)
def _load_all() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits  # local: scikit-learn import is slow
    except ImportError as err:
        raise ImportError("the digits dataset is scikit-learn's: pip install 'diffjax[data]'") from err

    bunch = load_digits()
    images = bunch.images.astype(np.uint8).reshape((-1,) + SHAPE)
    labels = bunch.target.astype(np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_indices(split: str, *, holdout_fraction: float = 0.2, split_seed: int = 0) -> np.ndarray:
    """Sorted indices into scikit-learn's order that make up ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}.")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction!r}.")
    n = len(_load_all()[1])
    if split == "all":
        return np.arange(n)
    order = np.random.default_rng(split_seed).permutation(n)
    n_test = int(round(holdout_fraction * n))
    part = order[n - n_test:] if split == "test" else order[:n - n_test]
    return np.sort(part)


def load(split: str = "train", *, holdout_fraction: float = 0.2,
         split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 8, 8, 1) with levels 0..16, labels int32 (N,))`` of ``split``."""
    idx = split_indices(split, holdout_fraction=holdout_fraction, split_seed=split_seed)
    images, labels = _load_all()
    return images[idx], labels[idx]


def preprocess(images: np.ndarray) -> np.ndarray:
    """Levels 0..16 -> float32 ``[-1, 1]`` (``x / 8 - 1``)."""
    return preprocessing.to_symmetric(images, MAX_VALUE)


def postprocess(x: np.ndarray, *, dequantized: bool = False) -> np.ndarray:
    """Inverse of :func:`preprocess` (or of dequantised preprocessing): uint8 levels 0..16."""
    return preprocessing.to_levels(x, MAX_VALUE, dequantized=dequantized)


class DigitsSource:
    """Random-access source of one split: ``read(idx) -> {"x": uint8 levels, "label"}``."""

    def __init__(self, split: str = "train", **kwargs):
        self.images, self.labels = load(split, **kwargs)

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {"x": self.images[indices], "label": self.labels[indices]}
