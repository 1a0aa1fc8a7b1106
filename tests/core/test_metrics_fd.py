"""diffjax.metrics against independent truth: the Fréchet distance's closed form for commuting
covariances and scipy's sqrtm for non-commuting ones, KID against a double loop over the
kernel, precision / recall on sets whose answer is known by hand."""
import ast
import os

import numpy as np
import pytest
import scipy.linalg

from diffjax import metrics


def _spd(rng, d):
    m = rng.standard_normal((d, d))
    return m @ m.T + 0.1 * np.eye(d)


def test_frechet_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    d = 6
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance_from_stats(mu_a, np.diag(a), mu_b, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-12)

    # Features whose sample statistics are exactly these: the zero-mean, mutually orthogonal
    # columns of a Hadamard matrix, scaled (np.cov divides by N - 1).
    n = 8
    h = scipy.linalg.hadamard(n)[:, 1:d + 1].astype(np.float64)
    fa = mu_a + h * np.sqrt(a * (n - 1) / n)
    fb = mu_b + h[::-1] * np.sqrt(b * (n - 1) / n)
    assert metrics.frechet_distance(fa, fb) == pytest.approx(expected, rel=1e-11)
    mu, cov = metrics.feature_statistics(fa)
    np.testing.assert_allclose(mu, mu_a, atol=1e-14)
    np.testing.assert_allclose(cov, np.diag(a), atol=1e-14)


def test_frechet_matches_scipy_sqrtm_on_non_commuting_covariances():
    rng = np.random.default_rng(1)
    for d in (2, 7, 30):
        mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
        ca, cb = _spd(rng, d), _spd(rng, d)
        assert np.abs(ca @ cb - cb @ ca).max() > 0.01  # really non-commuting
        root = scipy.linalg.sqrtm(ca @ cb)
        expected = (np.sum((mu_a - mu_b) ** 2) + np.trace(ca) + np.trace(cb)
                    - 2 * np.trace(root).real)
        got = metrics.frechet_distance_from_stats(mu_a, ca, mu_b, cb)
        assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)
        assert metrics.frechet_distance_from_stats(mu_b, cb, mu_a, ca) == pytest.approx(got, rel=1e-10)


def test_frechet_on_samples_symmetric_zero_and_rank_deficient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 12)) @ rng.standard_normal((12, 12))
    y = rng.standard_normal((150, 12)) + 0.3
    fd = metrics.frechet_distance(x, y)
    # Independent computation: np.mean / np.cov and scipy's sqrtm
    ca, cb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = (np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(ca) + np.trace(cb)
           - 2 * np.trace(scipy.linalg.sqrtm(ca @ cb)).real)
    assert fd == pytest.approx(ref, rel=1e-10)
    assert metrics.frechet_distance(y, x) == pytest.approx(fd, rel=1e-10)
    assert metrics.frechet_distance(x, x) <= 1e-9 * np.trace(ca)
    assert metrics.frechet_distance(x.astype(np.float32), x.astype(np.float32)) <= 1e-9 * np.trace(ca)
    # Fewer examples than features: a singular covariance still gives a finite distance, and
    # the same finite sample against itself gives 0.
    few = rng.standard_normal((5, 40))
    assert metrics.frechet_distance(few, few) <= 1e-9 * 40
    assert np.isfinite(metrics.frechet_distance(few, rng.standard_normal((6, 40))))


def test_frechet_bad_input_names_the_argument():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="features_a and features_b must have the same feature"):
        metrics.frechet_distance(x, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="features_b must be a 2-D"):
        metrics.frechet_distance(x, np.zeros(10))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="features_a holds 1 non-finite"):
        metrics.frechet_distance(bad, x)
    with pytest.raises(ValueError, match="features_a needs at least 2 rows"):
        metrics.frechet_distance(x[:1], x)
    with pytest.raises(ValueError, match="cov_b must be symmetric"):
        metrics.frechet_distance_from_stats(np.zeros(2), np.eye(2), np.zeros(2), [[1, 1], [0, 1]])


def _brute_mmd2(a, b):
    d = a.shape[1]
    k = lambda x, y: (sum(x[i] * y[i] for i in range(d)) / d + 1.0) ** 3  # noqa: E731
    m, n = len(a), len(b)
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_against_a_double_loop():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((7, 4)) * 1.5 + 0.2
    assert metrics.polynomial_mmd2(a, b) == pytest.approx(_brute_mmd2(a, b), rel=1e-12)
    whole = metrics.kernel_inception_distance(a, b[:6], num_subsets=3, subset_size=50)
    assert whole["subset_size"] == 6 and whole["kid_std"] == pytest.approx(0.0, abs=1e-12)
    assert whole["kid"] == pytest.approx(_brute_mmd2(a, b[:6]), rel=1e-12)
    # Subsets: the draws of numpy.random.default_rng(seed), without replacement.
    out = metrics.kernel_inception_distance(a, b, num_subsets=4, subset_size=4, seed=7)
    rng = np.random.default_rng(7)
    per = []
    for _ in range(4):
        ia, ib = rng.choice(6, 4, replace=False), rng.choice(7, 4, replace=False)
        per.append(_brute_mmd2(a[ia], b[ib]))
    assert out["kid"] == pytest.approx(np.mean(per), rel=1e-12)
    assert out["kid_std"] == pytest.approx(np.std(per), rel=1e-10)
    assert out["num_subsets"] == 4 and out["subset_size"] == 4
    with pytest.raises(ValueError, match="subset_size must be an int >= 2"):
        metrics.kernel_inception_distance(a, b, subset_size=1)


def test_kid_near_zero_for_one_distribution():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    same = metrics.kernel_inception_distance(x, y, num_subsets=20, subset_size=200)
    shifted = metrics.kernel_inception_distance(x, y + 0.5, num_subsets=20, subset_size=200)
    # MMD² of the shift for this kernel: the mean embedding moves; KID grows by orders of
    # magnitude while the same-distribution estimate stays within its own noise.
    assert abs(same["kid"]) < 3 * same["kid_std"] + 1e-3
    assert shifted["kid"] > 20 * (abs(same["kid"]) + same["kid_std"])


def test_precision_recall_known_cases():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 5))
    both = metrics.precision_recall(x, x)
    assert (both["precision"], both["recall"]) == (1.0, 1.0) and both["k"] == 3
    far = metrics.precision_recall(x, x + 100.0)
    assert (far["precision"], far["recall"]) == (0.0, 0.0)
    # Mode dropping: the generated set is one of the two real clusters.
    real = np.concatenate([x, x[:20] + 50.0])
    sub = metrics.precision_recall(real, x, batch_size=7)
    assert sub["precision"] == 1.0 and sub["recall"] == pytest.approx(40 / 60)
    assert sub["num_real"] == 60 and sub["num_generated"] == 40
    # A hand-computed 1-D case with k = 1. Real 0,1,2,3,10: radii 1,1,1,1,7. Generated
    # 0.5, 5, 17, 20: 0.5 in [0]'s ball, 5 in [10]'s, 17 on [10]'s boundary (inside), 20
    # outside -> precision 3/4. Generated radii 4.5, 4.5, 3, 3: real 0..3 lie within 4.5 of
    # 0.5, 10 is 5 from 5 and 7 from 17 -> recall 4/5.
    r = np.array([0.0, 1, 2, 3, 10])[:, None]
    g = np.array([0.5, 5, 17, 20])[:, None]
    pr = metrics.precision_recall(r, g, k=1, batch_size=2)
    assert (pr["precision"], pr["recall"]) == (0.75, 0.8)
    with pytest.raises(ValueError, match="generated_features needs at least 4 rows"):
        metrics.precision_recall(r, g[:3])
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        metrics.precision_recall(r, g, k=0)


def test_the_module_imports_numpy_only():
    path = os.path.join(os.path.dirname(metrics.__file__), "metrics.py")
    tree = ast.parse(open(path).read())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"numpy", "__future__"}, imported
