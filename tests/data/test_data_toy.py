"""Toy samplers against closed-form statistics of their defining distributions."""
import numpy as np
import pytest

from diffjax.data import toy

N = 200_000


def _close(estimate, truth, se, k=6.0):
    """|estimate - truth| within k standard errors."""
    assert abs(estimate - truth) <= k * se, (estimate, truth, se)


@pytest.mark.parametrize("name", toy.NAMES)
def test_deterministic_per_seed_and_fresh_across_seeds(name):
    a = toy.sample(name, 1000, seed=3)
    assert a.shape == (1000, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, toy.sample(name, 1000, seed=3))
    assert not np.array_equal(a, toy.sample(name, 1000, seed=4))
    np.testing.assert_array_equal(toy.sample(name, 5, seed=[1, 2]),
                                  toy.sample(name, 5, seed=[1, 2]))
    assert toy.sample(name, 0).shape == (0, 2)


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match="gaussian_ring.*two_moons.*swiss_roll.*checkerboard"):
        toy.sample("spiral", 10, 0)
    with pytest.raises(ValueError, match="n must be"):
        toy.sample("two_moons", -1, 0)


def test_gaussian_ring():
    x = toy.sample("gaussian_ring", N, seed=0).astype(np.float64)
    r, s, k = toy.RING_RADIUS, toy.RING_STD, toy.RING_COMPONENTS
    sq = (x ** 2).sum(1)
    # E|x|^2 = R^2 + 2 s^2; Var|x|^2 = Var|c + s z|^2 = 4 R^2 s^2 + 4 s^4.
    _close(sq.mean(), r ** 2 + 2 * s ** 2, np.sqrt((4 * r ** 2 * s ** 2 + 4 * s ** 4) / N))
    angles = 2 * np.pi * np.arange(k) / k
    centres = r * np.stack([np.cos(angles), np.sin(angles)], 1)
    nearest = np.argmin(((x[:, None] - centres) ** 2).sum(-1), 1)
    counts = np.bincount(nearest, minlength=k)
    chi2 = ((counts - N / k) ** 2 / (N / k)).sum()
    assert chi2 < 30.0  # 7 dof: P(chi2 > 30) ~ 1e-4
    resid = x - centres[nearest]
    _close(resid.std(), s, s / np.sqrt(2 * N) * 2)
    np.testing.assert_allclose(np.cov(x.T), (r ** 2 / 2 + s ** 2) * np.eye(2), atol=0.05)


def test_two_moons_moments_and_shape():
    x = toy.sample("two_moons", N, seed=1).astype(np.float64)
    # Closed forms with theta ~ U[0, pi]: E cos = 0, E sin = 2/pi, E cos^2 = E sin^2 = 1/2,
    # E sin cos = 0. Upper u = (cos, sin), lower l = (1 - cos, 1/2 - sin), mixture 1/2 each.
    e_sin = 2 / np.pi
    m_up = np.array([0.0, e_sin])
    m_lo = np.array([1.0, 0.5 - e_sin])
    second_up = np.array([[0.5, 0.0], [0.0, 0.5]])
    # E[l l^T]: E(1-cos)^2 = 1.5, E(1-cos)(1/2-sin) = 1/2 - e_sin, E(1/2-sin)^2 = 1/4 - e_sin + 1/2
    second_lo = np.array([[1.5, 0.5 - e_sin], [0.5 - e_sin, 0.75 - e_sin]])
    mean = (m_up + m_lo) / 2
    cov = (second_up + second_lo) / 2 - np.outer(mean, mean) + toy.MOONS_NOISE ** 2 * np.eye(2)
    np.testing.assert_allclose(mean + toy.MOONS_SHIFT, 0.0, atol=1e-12)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=6 * np.sqrt(cov.diagonal().max() / N))
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.01)
    # Every point lies within 5 sigma of one of the two (shifted) unit half circles.
    y = x - np.asarray(toy.MOONS_SHIFT)
    d_up = np.abs(np.hypot(y[:, 0], y[:, 1]) - 1)
    d_lo = np.abs(np.hypot(y[:, 0] - 1, y[:, 1] - 0.5) - 1)
    assert np.mean(np.minimum(d_up, d_lo) < 5 * toy.MOONS_NOISE) > 0.999


def test_swiss_roll_radius_and_spiral():
    x = toy.sample("swiss_roll", N, seed=2).astype(np.float64)
    a, b = toy.SWISS_ROLL_T_RANGE
    c, s = toy.SWISS_ROLL_SCALE, toy.SWISS_ROLL_NOISE
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.02)  # shift = minus the exact mean
    y = x - np.asarray(toy.SWISS_ROLL_SHIFT)
    e_t2 = (a * a + a * b + b * b) / 3  # E t^2 for t ~ U[a, b]
    sq = (y ** 2).sum(1)
    _close(sq.mean(), e_t2 / c ** 2 + 2 * s ** 2, sq.std() / np.sqrt(N))
    # On the spiral the angle equals the radius times the scale (mod 2 pi).
    t_hat = c * np.hypot(y[:, 0], y[:, 1])
    mismatch = np.abs(np.angle(np.exp(1j * (np.arctan2(y[:, 1], y[:, 0]) - t_hat))))
    # Noise moves t_hat by c * s radially and the angle by at most s / r_min tangentially.
    sd = np.hypot(c * s, s / (a / c))
    assert np.mean(mismatch < 4.5 * sd) > 0.999  # off-spiral points would fill [0, pi]
    assert t_hat.min() > a - 1 and t_hat.max() < b + 1


def test_checkerboard_occupancy_and_uniformity():
    x = toy.sample("checkerboard", N, seed=3).astype(np.float64)
    cells = np.floor(x).astype(int)
    assert np.all((cells >= -2) & (cells <= 1))
    assert np.all((cells.sum(1) % 2) == 0)  # only black squares are occupied
    squares = {tuple(sq) for sq in toy.checkerboard_squares().astype(int)}
    assert len(squares) == 8
    keys, counts = np.unique(cells, axis=0, return_counts=True)
    assert {tuple(k) for k in keys} == squares
    chi2 = ((counts - N / 8) ** 2 / (N / 8)).sum()
    assert chi2 < 30.0
    frac = x - cells
    _close(frac.mean(), 0.5, np.sqrt(1 / 12 / (2 * N)))
    _close(frac.var(), 1 / 12, np.sqrt(1 / 180 / (2 * N)))  # Var of U^2-type statistic
    np.testing.assert_allclose(x.var(0), 4 / 3, atol=0.02)
