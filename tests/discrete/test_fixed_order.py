"""Autoregression as fixed-order masked diffusion (order="left_to_right"), against enumeration.

Every sequence of a tiny vocabulary and length is scored, and the fixed-order likelihood is
compared with probabilities written out here in numpy: an explicit joint (whose exact
conditionals make the chain rule give back -log p(x)), a toy model whose conditionals are a
table, and the normalisation sum_x p(x) = 1 of any model's fixed-order likelihood.
"""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax.discrete as dd
from diffjax import models
from diffjax.discrete.processes import MaskedProcess
from diffjax.training.objectives import make_discrete_objective
from discrete_oracle import markov

K, L = 3, 4
J = markov(vocab_size=K, length=L, seed=0)
ALL = jnp.asarray(J.states)  # all K**L sequences
AR = dd.masked(K, order="left_to_right")


def toy_tables(seed=0):
    """Logits of position i: W[i, previous token] + t U[i] (the previous token of position 0,
    or a masked one, is index K)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.5, (L, K + 1, K)), rng.normal(0, 2.0, (L, K))


def toy_model(W, U):
    W, U = jnp.asarray(W, jnp.float32), jnp.asarray(U, jnp.float32)

    def fn(x_t, t):
        prev = jnp.concatenate([jnp.full_like(x_t[:, :1], K), x_t[:, :-1]], axis=1)
        return W[jnp.arange(L)[None], prev] + t[:, None, None] * U[None]

    return fn


def toy_brute_force_nll(W, U):
    """-log p(x) of every sequence, in float64: position k is predicted from the state with
    x_0..x_{k-1} revealed at t_k = 1 - k / L (the linear schedule's state time)."""
    out = np.zeros(len(J.states))
    for n, x in enumerate(J.states):
        for k in range(L):
            prev = K if k == 0 else x[k - 1]
            logits = W[k, prev] + (1.0 - k / L) * U[k]
            out[n] -= logits[x[k]] - np.log(np.exp(logits).sum())
    return out


@pytest.mark.parametrize("schedule", ["linear", "cosine", "polynomial"])
def test_the_forward_process_reveals_a_prefix_of_ceil_L_alpha(schedule):
    proc = dd.masked(K, schedule, order="left_to_right")
    t = np.concatenate([np.linspace(0.0, 1.0, 97), np.random.default_rng(1).uniform(size=200)])
    alpha = {"linear": 1 - t, "cosine": 1 - np.sin(np.pi * t / 2), "polynomial": 1 - t**2}[schedule]
    for length in (1, 4, 7, 64):
        n = np.asarray(proc.num_revealed(jnp.asarray(t, jnp.float32), length))
        want = np.ceil(length * alpha - 1e-4).astype(int)  # counts within 1e-4 of an integer are that integer
        np.testing.assert_array_equal(n, want)
        k = np.arange(length + 1)
        np.testing.assert_array_equal(np.asarray(proc.num_revealed(proc.state_time(k, length), length)), k)
    x0 = jnp.asarray(J.sample(2, 64))
    tt = jnp.asarray(np.random.default_rng(3).uniform(size=64), jnp.float32)
    x_t = np.asarray(proc.sample_marginal(jax.random.PRNGKey(0), x0, tt))
    n = np.asarray(proc.num_revealed(tt, L))
    revealed = np.arange(L)[None] < n[:, None]
    np.testing.assert_array_equal(x_t, np.where(revealed, np.asarray(x0), K))


def test_nll_of_the_exact_conditionals_is_minus_log_p():
    # The exact p(x0_k | x_<k) of the joint make the chain rule give -log p(x) for every sequence.
    nll = np.asarray(AR.nll(J.masked_model(AR.mask_id), ALL))
    np.testing.assert_allclose(nll, J.nll(J.states), atol=2e-5)


def nll_error(process):
    W, U = toy_tables()
    nll = np.asarray(process.nll(toy_model(W, U), ALL), np.float64)
    return float(np.abs(nll - toy_brute_force_nll(W, U)).max()), float(np.exp(-nll).sum())


def test_nll_of_a_toy_model_equals_brute_force_enumeration():
    err, total = nll_error(AR)
    assert err < 2e-5
    assert total == pytest.approx(1.0, abs=1e-5)  # a normalised distribution over the K**L sequences


@pytest.mark.parametrize("shift", [1, -1])
def test_an_off_by_one_reveal_count_fails_the_enumeration(monkeypatch, shift):
    true_count = MaskedProcess.num_revealed

    def mutant(self, t, length):
        return jnp.clip(true_count(self, t, length) + shift, 0, length)

    monkeypatch.setattr(MaskedProcess, "num_revealed", mutant)
    err, _ = nll_error(dd.masked(K, order="left_to_right"))
    assert err > 0.1


def test_one_position_estimate_averages_to_the_exact_nll():
    # L copies of a sequence with stratified times draw every position k exactly once.
    W, U = toy_tables(1)
    model = toy_model(W, U)
    x0 = jnp.asarray(J.sample(4, 6))
    exact = np.asarray(AR.nll(model, x0))
    estimate = jax.jit(lambda x, key: AR.nelbo(model, jnp.tile(x, (L, 1)), key))
    for i in range(len(x0)):
        est = np.asarray(estimate(x0[i:i + 1], jax.random.PRNGKey(i)))
        np.testing.assert_allclose(est.mean(), exact[i], rtol=1e-5)
    # and i.i.d. positions are unbiased: the mean over many draws of one sequence
    est = np.asarray(AR.nelbo(model, jnp.repeat(x0[:1], 4000, axis=0), jax.random.PRNGKey(9), antithetic=False))
    assert abs(est.mean() - exact[0]) < 4 * est.std() / math.sqrt(est.size)


def random_transformer(causal, seed=0):
    """A tiny TokenTransformer with every parameter drawn at random (numpy, no compilation):
    the real initialisation has a zero output layer, i.e. uniform predictions."""
    abstract = nnx.eval_shape(lambda: models.TokenTransformer(K, seq_len=L, dim=16, depth=2, heads=2, cond_dim=8,
                                                              causal=causal, rngs=nnx.Rngs(0)))
    graphdef, shapes = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(0.0, 0.3, a.shape), a.dtype), shapes)
    return lambda x, t: nnx.merge(graphdef, params)(x, t)


def test_a_causal_transformer_scores_a_whole_sequence_in_one_pass():
    def both(model):
        fn = jax.jit(lambda x: (AR.nll(model, x, causal=True), AR.nll(model, x)))
        return [np.asarray(v, np.float64) for v in fn(ALL)]

    one_pass, per_state = both(random_transformer(causal=True))
    np.testing.assert_allclose(one_pass, per_state, rtol=1e-5)
    assert np.exp(-one_pass).sum() == pytest.approx(1.0, abs=1e-4)
    assert one_pass.std() > 0.3  # not the uniform model of initialisation
    # a bidirectional model read in one pass sees the tokens it predicts
    leaky, per_state = both(random_transformer(causal=False))
    assert np.abs(leaky - per_state).max() > 0.1


def test_causal_logits_depend_on_the_prefix_only_and_not_on_time():
    model = jax.jit(random_transformer(causal=True, seed=2))
    x = jnp.asarray(J.sample(5, 8))
    base = np.asarray(model(x, jnp.full((8,), 0.3)))
    for k in range(L):
        changed = x.at[:, k:].set((x[:, k:] + 1) % K)
        out = np.asarray(model(changed, jnp.full((8,), 0.9)))
        np.testing.assert_allclose(out[:, :k + 1], base[:, :k + 1], atol=1e-5)
        if k < L - 1:
            assert np.abs(out[:, k + 1:] - base[:, k + 1:]).max() > 1e-3


def test_the_causal_objective_trains_the_exact_nll():
    model = nnx.eval_shape(lambda: models.TokenTransformer(K, seq_len=L, dim=16, depth=1, heads=2, causal=True,
                                                           rngs=nnx.Rngs(0)))
    objective, shapes = make_discrete_objective(model, process=AR)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(0.0, 0.3, a.shape), a.dtype), shapes)
    x0 = jnp.asarray(J.sample(7, 16))
    loss, _ = jax.jit(objective.loss_fn)(params, {"x": x0}, jax.random.PRNGKey(0))
    exact = np.asarray(jax.jit(lambda p: AR.nll(objective.model_fn(p), x0))(params))  # L calls, one per state
    assert float(loss) == pytest.approx(exact.mean() / L, rel=1e-5)
    with pytest.raises(ValueError, match="order='left_to_right'"):
        make_discrete_objective(model, process=dd.masked(K))
    with pytest.raises(ValueError, match="loss"):
        make_discrete_objective(model, process=AR, loss="hybrid")


def test_left_to_right_sampling_of_the_fixed_order_process_draws_the_joint():
    fn = jax.jit(lambda k: dd.sample(J.masked_model(AR.mask_id), k, (20_000, L), process=AR, steps=L,
                                     method="left_to_right")[0])
    assert J.tv(np.asarray(fn(jax.random.PRNGKey(0)))) < 0.03


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="order"):
        dd.masked(K, order="right_to_left")
    with pytest.raises(ValueError, match="nelbo"):
        dd.masked(K).nll(J.masked_model(K), ALL)
    with pytest.raises(ValueError, match="num_steps"):
        AR.nelbo(J.masked_model(K), ALL, jax.random.PRNGKey(0), num_steps=8)
    with pytest.raises(ValueError, match="causal"):
        dd.masked(K).nelbo(J.masked_model(K), ALL, jax.random.PRNGKey(0), causal=True)
    with pytest.raises(ValueError, match="method='ancestral'.*left_to_right"):
        dd.sample(J.masked_model(K), jax.random.PRNGKey(0), (2, L), process=AR, steps=4)
    with pytest.raises(ValueError, match="num_extra_tokens"):
        models.TokenTransformer(K, num_extra_tokens=0, seq_len=L, causal=True, rngs=nnx.Rngs(0))
