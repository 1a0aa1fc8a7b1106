"""scikit-learn digits: splits, value ranges, exact round trips through preprocessing."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from diffjax.data import digits, get_dataset, preprocessing


def test_splits_deterministic_disjoint_covering():
    train_idx = digits.split_indices("train")
    test_idx = digits.split_indices("test")
    assert len(train_idx) + len(test_idx) == 1797
    assert not set(train_idx) & set(test_idx)
    assert len(test_idx) == round(0.2 * 1797)
    np.testing.assert_array_equal(train_idx, digits.split_indices("train"))
    half = digits.split_indices("test", holdout_fraction=0.5)
    assert len(half) == round(0.5 * 1797)
    with pytest.raises(ValueError, match="split must be one of"):
        digits.split_indices("valid")


def test_load_matches_sklearn_and_ranges():
    images, labels = digits.load("all")
    ref = load_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[..., 0], ref.images)
    np.testing.assert_array_equal(labels, ref.target)
    assert images.min() == 0 and images.max() == 16
    x_test, y_test = digits.load("test")
    idx = digits.split_indices("test")
    np.testing.assert_array_equal(x_test[..., 0], ref.images[idx])
    np.testing.assert_array_equal(y_test, ref.target[idx])


def test_preprocess_round_trip():
    images, _ = digits.load("all")
    x = digits.preprocess(images)
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(x, images / 8.0 - 1.0)
    np.testing.assert_array_equal(digits.postprocess(x), images)
    # Dequantised values land in level x's bin [2x/17 - 1, 2(x+1)/17 - 1) and invert exactly.
    u = np.random.default_rng(0).random(images.shape)
    y = preprocessing.dequantize(images, u, digits.MAX_VALUE)
    assert y.min() >= -1.0 and y.max() < 1.0
    np.testing.assert_array_equal(digits.postprocess(y, dequantized=True), images)
    # Out-of-range model samples are clipped, not wrapped.
    np.testing.assert_array_equal(digits.postprocess(np.array([-3.0, 3.0])), [0, 16])


def test_get_dataset_digits_batches_and_flips():
    plain = get_dataset("digits", "train")
    assert plain.info.shape == (8, 8, 1) and plain.info.num_classes == 10
    assert plain.info.original_range == (0, 16) and plain.info.num_examples == 1438
    batch = next(plain.iterator(64, seed=0, process_index=0, process_count=1))
    assert batch["x"].shape == (64, 8, 8, 1) and batch["label"].shape == (64,)
    assert batch["x"].min() >= -1 and batch["x"].max() <= 1
    images, labels = digits.load("train")
    # Without shuffling, one epoch in order is the split itself.
    it = plain.iterator(719, seed=0, shuffle=False, process_index=0, process_count=1)
    np.testing.assert_array_equal(plain.postprocess(np.concatenate([next(it)["x"], next(it)["x"]])),
                                  images)
    flipped = get_dataset("digits", "train", random_flip=True)
    b = next(flipped.iterator(256, seed=1, shuffle=False, process_index=0, process_count=1))
    raw = images[:256]
    same = np.all(flipped.postprocess(b["x"]) == raw, axis=(1, 2, 3))
    mirrored = np.all(flipped.postprocess(b["x"]) == raw[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored)
    asym = ~np.all(raw == raw[:, :, ::-1], axis=(1, 2, 3))
    frac = mirrored[asym & ~same].size / asym.sum()
    assert 0.35 < frac < 0.65  # p = 1/2 over ~256 examples
    with pytest.raises(ValueError, match="unknown option.*allowed"):
        get_dataset("digits", "train", seq_len=3)
