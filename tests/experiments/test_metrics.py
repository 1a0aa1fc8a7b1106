"""experiments.metrics against independent truth: the conformance oracle's sliced Wasserstein,
exact samples, and the real digits themselves."""
import math
import os
import sys

import numpy as np
import pytest

from diffjax.data import toy
from experiments import metrics

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "conformance"))
oracles = pytest.importorskip("oracles")


def test_sliced_wasserstein_matches_the_oracle():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((500, 2)), rng.standard_normal((500, 2)) + 0.5
    assert metrics.sliced_wasserstein(x, y) == pytest.approx(oracles.sliced_wasserstein(x, y), rel=1e-12)
    # A pure shift by d moves every projection by <d, u>: SW = mean |<d, u>| over directions.
    shift = np.array([1.0, 0.0])
    assert metrics.sliced_wasserstein(x, x + shift) == pytest.approx(2 / math.pi, rel=0.15)
    with pytest.raises(ValueError, match="same shape"):
        metrics.sliced_wasserstein(x, y[:10])


def test_toy_quality_on_exact_and_perturbed_samples():
    exact = metrics.toy_quality(toy.sample("checkerboard", 4000, seed=5), "checkerboard")
    assert exact["support_share"] == 1.0
    assert exact["sw_over_std"] < 0.04  # the noise floor of 4000 vs 4000 exact samples
    assert exact["data_std"] == pytest.approx(math.sqrt(4 / 3), rel=0.03)
    shifted = toy.sample("checkerboard", 4000, seed=5) + np.float32(0.5)
    bad = metrics.toy_quality(shifted, "checkerboard")
    assert bad["support_share"] < 0.6 and bad["sw_over_std"] > exact["sw_over_std"] + 0.1
    assert "support_share" not in metrics.toy_quality(toy.sample("gaussian_ring", 100), "gaussian_ring")
    # Uniform noise: half of [-2, 2]^2 is black, an eighth of [-4, 4]^2 (binomial std ~0.008).
    rng = np.random.default_rng(1)
    for half_width, share in ((2.0, 0.5), (4.0, 0.125)):
        noise = rng.uniform(-half_width, half_width, (4000, 2))
        assert metrics.toy_quality(noise, "checkerboard")["support_share"] == pytest.approx(share, abs=0.03)


def test_digits_quality_on_real_and_degenerate_digits():
    clf, held_x, held_y = metrics._digits_classifier(0)
    real = metrics.digits_quality(held_x.reshape(-1, 8, 8, 1))
    assert real["confidence_ratio"] == pytest.approx(1.0)
    assert 0.85 < real["real_confident_share"] < 0.95 and real["real_accuracy"] > 0.97
    counts = np.bincount(held_y, minlength=10) / len(held_y)
    assert real["class_entropy"] == pytest.approx(-(counts * np.log(counts)).sum(), abs=0.02)
    ones = metrics.digits_quality(np.repeat(held_x[held_y == 1][:1], 50, axis=0))
    assert ones["class_entropy"] == 0.0 and ones["class_histogram"][1] == 1.0
    with pytest.raises(ValueError, match="8x8"):
        metrics.digits_quality(np.zeros((3, 28, 28)))
