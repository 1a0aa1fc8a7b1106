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


def test_checkerboard_support_share_counts_the_closed_black_squares():
    # Edges and corners of black squares count; the board's outer edge next to a white square
    # (x = 2, 0 < y < 1) and white squares' interiors do not; nothing beyond the board counts.
    on = [[1.0, 0.5], [-2.0, -2.0], [2.0, 2.0], [0.0, 0.0], [-1.0, 0.5], [0.5, 0.5], [1.5, 1.5]]
    off = [[2.0, 0.5], [0.5, 1.5], [2.0001, 1.5], [-2.5, -1.5], [1.5, 0.5], [-0.5, -1.0 - 1e-9]]
    assert metrics.checkerboard_support_share(np.array(on)) == 1.0
    assert metrics.checkerboard_support_share(np.array(off)) == 0.0
    assert metrics.checkerboard_support_share(np.array(on + off)) == pytest.approx(7 / 13)
    with pytest.raises(ValueError, match="samples must be an"):
        metrics.checkerboard_support_share(np.zeros((4, 3)))


def test_sliced_wasserstein_floor_matches_the_brownian_bridge_limit():
    """Two independent n-samples of a 1-D law F are W1 apart by about
    sqrt(2 / n) sqrt(2 / pi) int sqrt(F (1 - F)) (the empirical process tends to a Brownian
    bridge); averaged over the metric's 128 directions, divided by the std (4/3)^(1/2)."""
    n = 1000
    mean, std = metrics.sliced_wasserstein_floor("checkerboard", n, seeds=20)
    big = toy.sample("checkerboard", 100_000, seed=99).astype(np.float64)
    dirs = np.random.default_rng(0).standard_normal((2, 128))  # sliced_wasserstein's seed=0
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    edges = np.linspace(-3.0, 3.0, 3001)
    integrals = []
    for u in dirs.T:
        cdf = np.cumsum(np.histogram(big @ u, bins=edges)[0]) / len(big)
        integrals.append(np.sum(np.sqrt(cdf * (1 - cdf))) * (edges[1] - edges[0]))
    limit = math.sqrt(2 / n) * math.sqrt(2 / math.pi) * np.mean(integrals) / math.sqrt(4 / 3)
    assert mean == pytest.approx(limit, rel=0.12)  # 20 pairs: the mean's own spread is ~6%
    assert 0.1 * mean < std < 0.6 * mean
    q = metrics.toy_quality(toy.sample("checkerboard", 1000, seed=5), "checkerboard")
    assert (q["sw_over_std_floor"], q["sw_over_std_floor_std"]) == \
        metrics.sliced_wasserstein_floor("checkerboard", 1000)
    with pytest.raises(ValueError, match="name must be one of"):
        metrics.sliced_wasserstein_floor("squares", 100)


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
