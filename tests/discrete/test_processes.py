"""Schedules, marginals, exact posteriors and the SUBS parameterisation against closed forms
and enumeration (float32 unless stated)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax.discrete as dd

SCHEDULES = [("linear", None), ("cosine", None), ("polynomial", 3.0), ("polynomial", 0.5)]


def ref_alpha(name, p, t):
    """The published formulas, float64: MDLM linear, MD4 cosine, MD4 polynomial."""
    t = np.asarray(t, np.float64)
    if name == "linear":
        return 1.0 - t
    if name == "cosine":
        return 1.0 - np.cos(0.5 * np.pi * (1.0 - t))
    return 1.0 - t**p


def ref_one_minus_alpha(name, p, t):
    t = np.asarray(t, np.float64)
    if name == "linear":
        return t
    if name == "cosine":
        return np.cos(0.5 * np.pi * (1.0 - t))
    return t**p


@pytest.mark.parametrize("name,p", SCHEDULES)
def test_schedule_matches_closed_form_and_is_accurate_at_both_ends(name, p):
    s = dd.schedules.get(name, p)
    t = np.linspace(0, 1, 101, dtype=np.float32)
    a = np.asarray(s.alpha(jnp.asarray(t)))
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, ref_alpha(name, p, t), atol=2e-7)
    assert a[0] == 1.0 and a[-1] == 0.0 and np.all(np.diff(a) <= 0)
    # log space: relative accuracy of 1 - alpha near t = 0 and of alpha near t = 1
    tt = np.array([1e-6, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-6], np.float32)
    np.testing.assert_allclose(np.exp(s.log1m_alpha(jnp.asarray(tt))), ref_one_minus_alpha(name, p, tt), rtol=2e-4)
    np.testing.assert_allclose(np.exp(s.log_alpha(jnp.asarray(tt))), ref_alpha(name, p, tt), rtol=2e-4)


@pytest.mark.parametrize("name,p", SCHEDULES)
def test_schedule_rates_are_the_derivatives(name, p):
    s = dd.schedules.get(name, p)
    t = jnp.asarray([0.05, 0.3, 0.6, 0.9], jnp.float32)
    da = jax.vmap(jax.grad(s.alpha))(t)
    a = s.alpha(t)
    np.testing.assert_allclose(s.dlog_alpha(t), da / a, rtol=1e-4)
    np.testing.assert_allclose(s.dlog1m_alpha(t), -da / (1 - a), rtol=1e-4)


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="schedule"):
        dd.masked(4, schedule="sigmoid")
    with pytest.raises(ValueError, match="exponent"):
        dd.uniform(4, schedule="linear", exponent=2.0)
    with pytest.raises(ValueError, match="vocab_size"):
        dd.masked(1)
    with pytest.raises(ValueError, match="x0"):
        dd.masked(4).sample_marginal(jax.random.PRNGKey(0), jnp.zeros((2, 3)), jnp.ones(2))


def test_processes_are_immutable_pytrees():
    proc = dd.masked(5, "polynomial", exponent=3.0)
    leaves, tree = jax.tree_util.tree_flatten(proc)
    assert [float(v) for v in leaves] == [3.0]
    assert jax.tree_util.tree_unflatten(tree, leaves).mask_id == 5
    out = jax.jit(lambda p, t: p.alpha(t))(proc, jnp.float32(0.5))
    np.testing.assert_allclose(out, 1 - 0.5**3, rtol=1e-6)
    with pytest.raises(Exception):
        proc.vocab_size = 3


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_marginal_corruption_rates(kind):
    V, t = 5, 0.37
    proc = getattr(dd, kind)(V, "cosine")
    x0 = jax.random.randint(jax.random.PRNGKey(0), (400, 100), 0, V)
    xt = np.asarray(proc.sample_marginal(jax.random.PRNGKey(1), x0, jnp.full((400,), t, jnp.float32)))
    x0 = np.asarray(x0)
    a = ref_alpha("cosine", None, t)
    if kind == "masked":
        m = xt == V
        assert abs(m.mean() - (1 - a)) < 0.006
        np.testing.assert_array_equal(xt[~m], x0[~m])
    else:
        assert xt.max() < V
        assert abs((xt == x0).mean() - (a + (1 - a) / V)) < 0.006
        # a resampled token is uniform over the vocabulary: each other token equally often
        other = np.bincount(((xt - x0) % V)[xt != x0], minlength=V)[1:]
        assert np.ptp(other) / other.mean() < 0.08


def transition_matrices(kind, V, name, p, s, t):
    """(q(x_s | x0), q(x_t | x_s), q(x_t | x0)) as float64 matrices, from the schedule formulas."""
    a_s, a_t = ref_alpha(name, p, s), ref_alpha(name, p, t)
    n = V + 1 if kind == "masked" else V

    def from_data(a):  # rows: x0 in [0, V)
        if kind == "masked":
            m = np.zeros((V, n))
            m[np.arange(V), np.arange(V)] = a
            m[:, V] = 1 - a
            return m
        return a * np.eye(V) + (1 - a) / V

    keep = a_t / a_s
    if kind == "masked":
        step = np.zeros((n, n))
        step[np.arange(V), np.arange(V)] = keep
        step[:V, V] = 1 - keep
        step[V, V] = 1.0
    else:
        step = keep * np.eye(V) + (1 - keep) / V
    return from_data(a_s), step, from_data(a_t)


@pytest.mark.parametrize("kind", ["masked", "uniform"])
@pytest.mark.parametrize("name,p", SCHEDULES[:3])
def test_posterior_is_bayes_rule_and_marginalises_correctly(kind, name, p):
    V = 3
    proc = getattr(dd, kind)(V, name, exponent=p)
    n = proc.num_states
    pairs = np.array(list(itertools.product(range(V), range(n))), np.int32)  # (x0, x_t)
    x0, xt = jnp.asarray(pairs[:, :1]), jnp.asarray(pairs[:, 1:])
    posterior, marginal = jax.jit(proc.posterior), jax.jit(proc.marginal_log_probs)
    for s, t in [(0.0, 0.3), (0.2, 0.5), (0.6, 0.95), (0.5, 1.0), (0.1, 0.1001)]:
        q_s, step, q_t = transition_matrices(kind, V, name, p, s, t)
        post = np.exp(np.asarray(posterior(xt, x0, jnp.float32(s), jnp.float32(t))))[:, 0]  # (pairs, n)
        assert post.dtype == np.float32
        for (a, j), row in zip(pairs, post):
            if q_t[a, j] == 0:
                continue
            bayes = step[:, j] * q_s[a] / q_t[a, j]  # q(x_t | x_s) q(x_s | x0) / q(x_t | x0)
            np.testing.assert_allclose(row, bayes, atol=3e-6)
        # sum_{x_t} q(x_s | x_t, x0) q(x_t | x0) = q(x_s | x0), all with diffjax's own marginals
        qt = np.exp(np.asarray(marginal(x0[:, 0], jnp.float32(t))))[np.arange(len(pairs)), pairs[:, 1]]
        mixed = np.zeros((V, n))
        np.add.at(mixed, pairs[:, 0], qt[:, None] * post)
        qs = np.exp(np.asarray(marginal(jnp.arange(V), jnp.float32(s))))
        np.testing.assert_allclose(mixed, qs, atol=3e-6)


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_posterior_of_probabilities_is_the_mixture_of_token_posteriors(kind):
    V, B = 4, 6
    proc = getattr(dd, kind)(V)
    probs = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (B, 1, V)) * 2)
    xt = jnp.arange(B).reshape(B, 1) % proc.num_states
    s, t = jnp.linspace(0.1, 0.6, B), jnp.linspace(0.3, 0.9, B)
    posterior = jax.jit(proc.posterior)
    got = np.exp(np.asarray(posterior(xt, probs, s, t)))
    per_token = np.stack([np.exp(np.asarray(posterior(xt, jnp.full((B, 1), l), s, t))) for l in range(V)], -1)
    want = (per_token * np.asarray(probs)[:, :, None, :]).sum(-1)
    np.testing.assert_allclose(got, want, atol=3e-6)


def test_masked_posterior_reveals_everything_at_s_zero():
    proc = dd.masked(4)
    xt = jnp.asarray([[4, 1]])
    probs = jax.nn.softmax(jnp.asarray([[[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 0.0, 0.0]]]))
    post = np.exp(np.asarray(proc.posterior(xt, probs, 0.0, 0.7)))
    assert post[0, 0, 4] == 0.0  # zero probability on the mask
    np.testing.assert_allclose(post[0, 0, :4], probs[0, 0], rtol=1e-6)
    np.testing.assert_array_equal(post[0, 1], [0, 1, 0, 0, 0])  # unmasked tokens are kept


def test_subs_gives_the_mask_zero_probability_and_carries_unmasked_tokens():
    V = 5
    x_t = jnp.asarray([[5, 2, 5, 0]])
    logits = jax.random.normal(jax.random.PRNGKey(0), (1, 4, V + 1)) * 3
    logits = logits.at[..., V].set(50.0)  # the model loves the mask token
    logp = dd.subs(logits, x_t, V)
    p = np.exp(np.asarray(logp))
    assert logp.shape == (1, 4, V)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[0, 0], jax.nn.softmax(logits[0, 0, :V]), rtol=1e-5)
    np.testing.assert_array_equal(p[0, 1], np.eye(V)[2])
    np.testing.assert_array_equal(p[0, 3], np.eye(V)[0])
    assert np.all(np.isfinite(np.asarray(logp)))
    with pytest.raises(ValueError, match="vocab_size"):
        dd.subs(logits[..., :3], x_t, V)


def test_float32_in_float32_out_and_float64_under_x64():
    proc = dd.uniform(4, "cosine")
    x0 = jnp.asarray([[0, 1, 2]])
    posterior = jax.jit(proc.posterior)
    assert proc.alpha(jnp.float32(0.3)).dtype == jnp.float32
    assert posterior(x0, x0, jnp.float32(0.1), jnp.float32(0.3)).dtype == jnp.float32
    with jax.enable_x64(True):
        assert proc.alpha(jnp.float64(0.3)).dtype == jnp.float64
        assert posterior(x0, x0, jnp.float64(0.1), jnp.float64(0.3)).dtype == jnp.float64
