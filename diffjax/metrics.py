r"""Sample-quality metrics on feature arrays: Fréchet distance, KID, precision / recall.

Every function takes features as arrays of shape ``(N, D)`` (one row per example, e.g. the
2048-d pool features of InceptionV3 or the penultimate layer of a small classifier) and
computes in float64 with numpy only (no jax, flax, scipy or scikit-learn), so importing this
module is cheap. Which network gave the features is the caller's business: report it with the
figure (``fid_inception`` vs ``fd_digits_features``), together with the sample counts.

* :func:`frechet_distance`, :func:`frechet_distance_from_stats`, :func:`feature_statistics`:
  the Fréchet distance between the Gaussians fitted to two feature sets (FID when the
  features are InceptionV3's pool3).
* :func:`kernel_inception_distance`, :func:`polynomial_mmd2`: KID, the unbiased MMD² with the
  cubic polynomial kernel averaged over random subsets (Bińkowski et al. 2018).
* :func:`precision_recall`: improved precision and recall with k-NN manifolds (Kynkäänniemi
  et al. 2019).

Sample-size bias: the Fréchet distance of finite samples is biased upward (the covariance
estimates' noise only adds distance), and the bias grows as ``N`` shrinks and ``D`` grows --
two independent samples of the same distribution give a clearly positive FD, and figures
computed with different ``N`` are not comparable. Always report ``N`` with the figure. KID's
estimator is unbiased (it can be slightly negative); precision and recall depend on ``N``
through the k-NN radii.

Errors: arrays that are not 2-D, have different feature dimensions, too few rows, or
non-finite values raise ``ValueError`` naming the argument.
"""
from __future__ import annotations

import numpy as np

__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_from_stats",
           "polynomial_mmd2", "kernel_inception_distance", "precision_recall"]


def __dir__():
    return sorted(__all__)


def _features(x, name: str, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (num_examples, feature_dim), got shape "
                         f"{x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (examples), got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} has no feature columns (shape {x.shape})")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(x)))} non-finite values")
    return x


def _same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b} must have the same feature dimension, got "
                         f"{a.shape[1]} and {b.shape[1]}")


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, cov)`` of ``features`` ``(N, D)``, N >= 2: the mean ``(D,)`` and the unbiased
    (``ddof=1``) covariance ``(D, D)``, float64 -- the statistics FID stores."""
    x = _features(features, "features")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of a symmetric matrix (negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _check_stats(mu, cov, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu, cov = np.asarray(mu, np.float64), np.asarray(cov, np.float64)
    if mu.ndim != 1:
        raise ValueError(f"mu_{name} must be 1-D (feature_dim,), got shape {mu.shape}")
    if cov.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"cov_{name} must have shape {(mu.shape[0], mu.shape[0])} to match "
                         f"mu_{name}, got {cov.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
        raise ValueError(f"mu_{name} / cov_{name} hold non-finite values")
    scale = max(float(np.max(np.abs(cov))), 1e-300)
    if np.max(np.abs(cov - cov.T)) > 1e-6 * scale:
        raise ValueError(f"cov_{name} must be symmetric (max |cov - cov.T| = "
                         f"{float(np.max(np.abs(cov - cov.T))):.3g})")
    return mu, (cov + cov.T) / 2


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    r"""Fréchet (2-Wasserstein²) distance between ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)``:

    ``||mu_a - mu_b||² + tr(cov_a) + tr(cov_b) - 2 tr((cov_a cov_b)^{1/2})``.

    The trace of the matrix square root is computed without a non-symmetric ``sqrtm``:
    ``cov_a cov_b`` is similar to the symmetric PSD matrix ``S = cov_a^{1/2} cov_b
    cov_a^{1/2}`` (``cov_a^{1/2}`` by ``eigh``), so ``tr((cov_a cov_b)^{1/2}) = sum_i
    sqrt(lambda_i(S))`` with ``S``'s eigenvalues from ``eigh`` (float64). Eigenvalues that
    round below 0 (singular covariances, e.g. fewer examples than features) are clipped to 0;
    no imaginary parts or diagonal offsets (pytorch-fid's ``sqrtm`` fallback) are needed. A
    result that rounds below 0 is returned as 0.

    Args:
      mu_a, mu_b: means, shape ``(D,)``.
      cov_a, cov_b: symmetric covariances, shape ``(D, D)`` (asymmetry beyond 1e-6 of the
        largest entry raises ``ValueError``).

    Returns:
      The distance as a Python float (>= 0). See the module docstring on its sample-size
      bias when the statistics come from samples.
    """
    mu_a, cov_a = _check_stats(mu_a, cov_a, "a")
    mu_b, cov_b = _check_stats(mu_b, cov_b, "b")
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"mu_a and mu_b must have the same feature dimension, got "
                         f"{mu_a.shape[0]} and {mu_b.shape[0]}")
    root_a = _psd_sqrt(cov_a)
    s = root_a @ cov_b @ root_a
    eig = np.linalg.eigvalsh((s + s.T) / 2)
    trace_sqrt = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    return max(fd, 0.0)


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (FID when the
    features are InceptionV3 pool3 features).

    Args:
      features_a, features_b: ``(N_a, D)`` and ``(N_b, D)`` arrays, ``N >= 2`` each; any real
        dtype (computed in float64).

    Returns:
      :func:`frechet_distance_from_stats` of their :func:`feature_statistics` (mean and
      ``ddof=1`` covariance). Symmetric in its arguments; 0 for identical sets. Biased upward
      for small ``N`` (module docstring): report ``N`` with it.
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    _same_dim(a, b, "features_a", "features_b")
    return frechet_distance_from_stats(*feature_statistics(a), *feature_statistics(b))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_from_kernels(k_aa: np.ndarray, k_bb: np.ndarray, k_ab: np.ndarray) -> float:
    m, n = k_aa.shape[0], k_bb.shape[0]
    term_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    term_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(term_a + term_b - 2.0 * k_ab.sum() / (m * n))


def polynomial_mmd2(features_a, features_b) -> float:
    r"""Unbiased MMD² between two feature sets with the cubic polynomial kernel
    ``k(x, y) = (x . y / D + 1)^3``:

    ``sum_{i != j} k(a_i, a_j) / (m (m-1)) + sum_{i != j} k(b_i, b_j) / (n (n-1))
    - 2 sum_{i, j} k(a_i, b_j) / (m n)``.

    Args:
      features_a, features_b: ``(m, D)`` and ``(n, D)``, ``m, n >= 2``.

    Returns:
      A float; unbiased, so it scatters around 0 (also below) for two samples of one
      distribution.
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    _same_dim(a, b, "features_a", "features_b")
    return _mmd2_from_kernels(_poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b))


def kernel_inception_distance(features_a, features_b, *, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> dict:
    """KID (Bińkowski et al. 2018): :func:`polynomial_mmd2` averaged over random subsets.

    Each of ``num_subsets`` subsets draws ``m = min(subset_size, N_a, N_b)`` rows of each set
    without replacement (``numpy.random.default_rng(seed)``); the unbiased MMD² of the pair is
    computed per subset. With ``m`` equal to both set sizes every subset is the full sets
    (MMD² is permutation invariant) and ``kid_std`` is 0.

    Args:
      features_a, features_b: ``(N_a, D)`` and ``(N_b, D)``, at least 2 rows each.
      num_subsets: number of subsets, >= 1 (default 100, as in the reference code).
      subset_size: rows per subset, >= 2 (default 1000); capped at the smaller set.
      seed: seed of the subset draws.

    Returns:
      ``{"kid": mean MMD², "kid_std": standard deviation (ddof=0) of the subsets' MMD² -- the
      spread of one subset's estimate, not a standard error, "num_subsets": int,
      "subset_size": m}``.
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    _same_dim(a, b, "features_a", "features_b")
    if isinstance(num_subsets, bool) or int(num_subsets) != num_subsets or num_subsets < 1:
        raise ValueError(f"num_subsets must be an int >= 1, got {num_subsets!r}")
    if isinstance(subset_size, bool) or int(subset_size) != subset_size or subset_size < 2:
        raise ValueError(f"subset_size must be an int >= 2, got {subset_size!r}")
    m = int(min(subset_size, len(a), len(b)))
    rng = np.random.default_rng(seed)
    # Small sets: the full kernel matrices once, each subset indexes them.
    full = max(len(a), len(b)) <= 4096
    if full:
        k_aa, k_bb, k_ab = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
    mmds = np.empty(int(num_subsets))
    for s in range(int(num_subsets)):
        ia = rng.choice(len(a), m, replace=False)
        ib = rng.choice(len(b), m, replace=False)
        if full:
            mmds[s] = _mmd2_from_kernels(k_aa[np.ix_(ia, ia)], k_bb[np.ix_(ib, ib)],
                                         k_ab[np.ix_(ia, ib)])
        else:
            x, y = a[ia], b[ib]
            mmds[s] = _mmd2_from_kernels(_poly_kernel(x, x), _poly_kernel(y, y),
                                         _poly_kernel(x, y))
    return {"kid": float(mmds.mean()), "kid_std": float(mmds.std()),
            "num_subsets": int(num_subsets), "subset_size": m}


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.clip(d2, 0.0, None)


def _knn_radii2(x: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    """Squared distance of each row of ``x`` to its k-th nearest other row."""
    out = np.empty(len(x))
    for start in range(0, len(x), batch_size):
        d2 = _sq_dists(x[start:start + batch_size], x)
        # index k of the sorted row: index 0 is the point itself (distance 0)
        out[start:start + batch_size] = np.partition(d2, k, axis=1)[:, k]
    return out


def _covered(queries: np.ndarray, ref: np.ndarray, radii2: np.ndarray,
             batch_size: int) -> np.ndarray:
    """Whether each query lies in some ball ``||q - ref_j||² <= radii2_j``."""
    out = np.empty(len(queries), bool)
    for start in range(0, len(queries), batch_size):
        d2 = _sq_dists(queries[start:start + batch_size], ref)
        out[start:start + batch_size] = np.any(d2 <= radii2[None, :], axis=1)
    return out


def precision_recall(real_features, generated_features, *, k: int = 3,
                     batch_size: int = 1000) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    The manifold of a feature set is the union of balls centred on its points, each with the
    radius of the distance to the point's ``k``-th nearest neighbour in the same set (the point
    itself not counted). Precision is the share of generated points inside the real manifold
    (sample fidelity); recall is the share of real points inside the generated manifold
    (coverage). A point on a ball's boundary counts as inside. Euclidean distances are
    computed blockwise (``batch_size`` rows at a time) in float64.

    Args:
      real_features: ``(N_r, D)``, ``N_r > k``.
      generated_features: ``(N_g, D)``, ``N_g > k``.
      k: neighbour rank of the radii, >= 1 (default 3, as in the paper).
      batch_size: rows per distance block, >= 1 (memory ``batch_size * N * 8`` bytes).

    Returns:
      ``{"precision": float, "recall": float, "k": k, "num_real": N_r,
      "num_generated": N_g}``; both shares lie in [0, 1]. Identical sets give 1 and 1.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    k, batch_size = int(k), int(batch_size)
    real = _features(real_features, "real_features", min_rows=k + 1)
    gen = _features(generated_features, "generated_features", min_rows=k + 1)
    _same_dim(real, gen, "real_features", "generated_features")
    precision = _covered(gen, real, _knn_radii2(real, k, batch_size), batch_size).mean()
    recall = _covered(real, gen, _knn_radii2(gen, k, batch_size), batch_size).mean()
    return {"precision": float(precision), "recall": float(recall), "k": k,
            "num_real": int(len(real)), "num_generated": int(len(gen))}

