"""Categorical draws exact in the tails, temperature and nucleus filtering."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import diffjax.discrete as dd
from diffjax.discrete.draws import uniform_01

V_ZIPF, N_ZIPF = 50_000, 1_000_000


def grouped_chi2_pvalue(counts, expected, edges):
    """Chi-squared test of counts against expected, pooling categories [edges[i], edges[i+1])."""
    obs = np.add.reduceat(counts, edges[:-1])
    exp = np.add.reduceat(expected, edges[:-1])
    chi2 = ((obs - exp) ** 2 / exp).sum()
    return stats.chi2.sf(chi2, len(obs) - 1)


def equal_mass_edges(expected, per_bin):
    cum = np.cumsum(expected)
    edges = np.unique(np.searchsorted(cum, np.arange(0, cum[-1], per_bin), side="right"))
    return np.concatenate([[0], edges[edges > 0][:-1], [len(expected)]])


@pytest.fixture(scope="module")
def zipf_draws():
    p = 1.0 / np.arange(1, V_ZIPF + 1)
    p /= p.sum()
    draw = jax.jit(lambda key, logits: dd.categorical(key, logits, shape=(N_ZIPF,)))

    def counts(logits):
        return np.bincount(np.asarray(draw(jax.random.PRNGKey(0), jnp.asarray(logits, jnp.float32))), minlength=V_ZIPF)

    return p, counts


def test_categorical_is_exact_in_the_tails_of_a_50000_token_zipf(zipf_draws):
    # Float32 Gumbel-max (or a float32 inverse CDF) cannot resolve tokens of probability ~1e-6
    # next to tokens of probability ~0.09; the tree sampler must, even pooled over the tail.
    p, counts = zipf_draws
    c = counts(np.log(p))
    expected = N_ZIPF * p
    assert c.sum() == N_ZIPF
    fine = equal_mass_edges(expected, 200.0)  # ~5000 bins of >= 200 expected draws
    log_bins = np.unique(np.concatenate([[0], 2 ** np.arange(16), [V_ZIPF]]))  # rank octaves
    assert grouped_chi2_pvalue(c, expected, fine) > 1e-3
    assert grouped_chi2_pvalue(c, expected, log_bins) > 1e-3
    tail = p < 1e-5  # ~41 000 tokens, 15% of the mass, each drawn ~1-9 times
    assert abs(c[tail].sum() - expected[tail].sum()) < 4 * np.sqrt(expected[tail].sum())


def test_the_tail_test_detects_a_three_percent_tail_bias(zipf_draws):
    # The same test must reject a sampler whose tokens of probability < 1e-5 are 3% too rare.
    p, counts = zipf_draws
    biased = np.where(p < 1e-5, p * 0.97, p)
    c = counts(np.log(biased / biased.sum()))
    log_bins = np.unique(np.concatenate([[0], 2 ** np.arange(16), [V_ZIPF]]))
    assert grouped_chi2_pvalue(c, N_ZIPF * p, log_bins) < 1e-6


def test_categorical_batches_and_never_draws_impossible_tokens():
    logits = jnp.asarray([[0.0, -jnp.inf, 1.0, -2.0, 0.5],
                          [dd.mask_value(jnp.float32), 3.0, 3.0, -30.0, 0.0],
                          [0.0, 0.0, 0.0, 0.0, 0.0]])
    n = 30_000
    draws = np.asarray(jax.jit(lambda k: dd.categorical(k, logits, shape=(n, 3)))(jax.random.PRNGKey(1)))
    assert draws.shape == (n, 3)
    p = np.asarray(jax.nn.softmax(logits, axis=-1))
    for row in range(3):
        freq = np.bincount(draws[:, row], minlength=5) / n
        assert np.all(freq[p[row] == 0] == 0)
        assert np.all(np.abs(freq - p[row]) <= 4 * np.sqrt(p[row] * (1 - p[row]) / n) + 1e-12)
    assert jax.eval_shape(lambda: dd.categorical(jax.random.PRNGKey(2), logits)).shape == (3,)
    one_hot = jnp.where(jnp.arange(7) == 4, 0.0, -jnp.inf)
    assert np.all(np.asarray(jax.jit(lambda k: dd.categorical(k, one_hot, shape=(100,)))(jax.random.PRNGKey(3))) == 4)


def test_uniform_01_has_full_relative_precision_near_zero():
    u = np.asarray(jax.jit(lambda k: uniform_01(k, (2**20,)))(jax.random.PRNGKey(4)))
    assert u.min() > 0 and u.max() <= 1 and abs(u.mean() - 0.5) < 2e-3
    small = u[u < 2.0**-12]  # ~256 values; jax.random.uniform would give multiples of 2**-23 here
    assert len(small) > 150
    assert np.mean(small * 2.0**23 != np.round(small * 2.0**23)) > 0.9


def test_temperature_and_top_p_closed_forms():
    logp = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    np.testing.assert_allclose(np.exp(dd.apply_temperature(logp, 1.0)), np.exp(logp), rtol=1e-6)
    np.testing.assert_allclose(np.exp(dd.apply_temperature(logp, 0.5)), jax.nn.softmax(2 * logp), rtol=1e-6)
    np.testing.assert_array_equal(np.exp(dd.apply_temperature(logp, 0.0)), [[1, 0, 0, 0]])
    # the nucleus is the smallest set of top tokens with mass >= top_p
    np.testing.assert_allclose(np.exp(dd.top_p_filter(logp, 0.7)), [[0.625, 0.375, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(np.exp(dd.top_p_filter(logp, 0.8)), [[0.625, 0.375, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(np.exp(dd.top_p_filter(logp, 0.81)), [[0.5, 0.3, 0.15, 0]] / np.float32(0.95), rtol=1e-6)
    np.testing.assert_allclose(np.exp(dd.top_p_filter(logp, 0.01)), [[1, 0, 0, 0]])
    np.testing.assert_allclose(np.exp(dd.top_p_filter(logp, 1.0)), np.exp(logp), rtol=1e-6)
    # traced values: one compilation for every temperature and top_p
    traces = []

    @jax.jit
    def adjust(logp, temperature, top_p):
        traces.append(1)
        return dd.adjust_log_probs(logp, temperature, top_p)

    for temp, top in [(1.0, 1.0), (0.5, 0.7), (0.0, 0.9), (2.0, 0.2)]:
        jax.block_until_ready(adjust(logp, temp, top))
    assert len(traces) == 1
