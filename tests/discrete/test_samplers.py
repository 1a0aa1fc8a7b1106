"""Samplers against the exact joint of a 3-token, length-4 Markov chain."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax.discrete as dd
from discrete_oracle import markov

J = markov(vocab_size=3, length=4, seed=0)
MASKED = dd.masked(3)
EXACT = J.masked_model(MASKED.mask_id)
B = 20_000


def run(method, steps, key, model=EXACT, process=MASKED, batch=B, **kw):
    fn = jax.jit(lambda k: dd.sample(model, k, (batch, 4), process=process, steps=steps, method=method, **kw))
    x, info = fn(jax.random.PRNGKey(key))
    return np.asarray(x), info


def test_ancestral_never_changes_an_unmasked_token():
    # An adversarial model that always prefers a token other than any given one.
    def model(x, t):
        return 20.0 * jax.nn.one_hot((x + 1) % 3, 3) - 10.0

    x_init = jnp.full((64, 4), MASKED.mask_id).at[:, 1].set(jnp.arange(64) % 3)
    x, info = jax.jit(lambda k: dd.sample(model, k, (64, 4), process=MASKED, steps=16, x_init=x_init,
                                          return_trajectory=True))(jax.random.PRNGKey(0))
    traj = np.asarray(info["trajectory"])
    assert traj.shape == (17, 64, 4)
    np.testing.assert_array_equal(traj[0], x_init)
    np.testing.assert_array_equal(traj[-1], np.asarray(x))
    visible = traj[:-1] != MASKED.mask_id
    assert np.all(traj[1:][visible] == traj[:-1][visible])  # once revealed, a token never changes
    np.testing.assert_array_equal(np.asarray(x)[:, 1], np.arange(64) % 3)  # the prompt is kept
    assert np.all(np.asarray(x) < 3)
    assert int(np.asarray(info["changed"]).sum()) == 64 * 3 and int(info["nfe"]) == 16


def test_first_hitting_draws_the_ancestral_distribution_with_fewer_model_calls():
    # With 3 steps ancestral sampling is far from the joint: first-hitting must match *it*.
    anc, anc_info = run("ancestral", 3, 1)
    fh, fh_info = run("first_hitting", 3, 2)
    assert J.tv(anc) > 0.2
    assert 0.5 * np.abs(J.histogram(anc) - J.histogram(fh)).sum() < 0.035
    assert int(anc_info["nfe"]) == 3 and int(fh_info["nfe"]) <= 3
    # with many steps it draws the joint, in at most L = 4 model calls instead of 128
    fh, fh_info = run("first_hitting", 128, 3)
    assert J.tv(fh) < 0.04 and 1 <= int(fh_info["nfe"]) <= 4
    assert int(np.asarray(fh_info["changed"]).sum()) == B * 4


def test_first_hitting_keeps_the_prompt_and_samples_the_conditional():
    x_init = jnp.full((B, 4), MASKED.mask_id).at[:, 2].set(1)
    x, info = run("first_hitting", 64, 4, x_init=x_init)
    assert np.all(x[:, 2] == 1) and int(info["nfe"]) <= 3
    cond = np.where(J.states[:, 2] == 1, J.probs, 0.0)
    assert J.tv(x, cond / cond.sum()) < 0.04


def test_uniform_ancestral_sampling_draws_the_joint_and_keeps_given_tokens():
    proc = dd.uniform(3)
    model = J.uniform_model(proc.alpha)
    x, info = run("ancestral", 64, 5, model=model, process=proc, batch=12_000)
    assert x.max() < 3 and J.tv(x) < 0.035  # exact as steps -> infinity (0.010 at 64 steps, B = 20000)
    assert np.asarray(info["changed"]).shape == (64,)
    # given tokens (anything but the free marker vocab_size) are kept; the conditional is only
    # approximate for uniform noise (replacement method), so only the kept tokens are checked
    x_init = jnp.full((16, 4), proc.mask_id).at[:, 0].set(2)
    x, _ = jax.jit(lambda k: dd.sample(model, k, (16, 4), process=proc, steps=8, x_init=x_init))(jax.random.PRNGKey(6))
    assert np.all(np.asarray(x)[:, 0] == 2) and np.asarray(x).max() < 3


def test_left_to_right_decoding_is_exact_with_the_exact_model():
    x, info = run("left_to_right", 4, 6)
    assert J.tv(x) < 0.03
    np.testing.assert_array_equal(np.asarray(info["changed"]), [B] * 4)  # one token per sequence per step


def test_confidence_ordering_reveals_the_most_confident_tokens_first():
    # Position i's prediction gets sharper with i, so greedy confidence decoding goes right to left.
    sharp = jnp.asarray([0.5, 1.0, 2.0, 4.0])

    def model(x, t):
        return jnp.broadcast_to(sharp[:, None] * jnp.asarray([1.0, 0.0, -1.0]), x.shape + (3,))

    fn = jax.jit(lambda k: dd.sample(model, k, (8, 4), process=dd.masked(3, "cosine"), steps=4, method="confidence",
                                     temperature=0.0, return_trajectory=True))
    x, info = fn(jax.random.PRNGKey(7))
    traj = np.asarray(info["trajectory"])
    first_revealed = np.argmax(traj != 3, axis=0)  # step index at which each position appears
    assert np.all(np.diff(first_revealed, axis=1) <= 0)
    np.testing.assert_array_equal(np.asarray(x), 0)
    # the cosine schedule's counts: floor(4 (1 - alpha(t))) masked tokens remain at t = 3/4, 1/2, 1/4, 0
    remaining = np.floor(4 * np.sin(0.5 * np.pi * np.array([1.0, 0.75, 0.5, 0.25, 0.0])) + 1e-4)
    np.testing.assert_array_equal((traj == 3).sum(-1)[:, 0], remaining)


def test_temperature_and_top_p_are_traced():
    traces = []
    logits = jnp.log(jnp.asarray([0.6, 0.3, 0.1]))

    def model(x, t):
        traces.append(1)
        return jnp.broadcast_to(logits, x.shape + (3,))

    for method in ("ancestral", "first_hitting"):
        traces.clear()
        fn = jax.jit(lambda k, temp, top_p: dd.sample(model, k, (16, 4), process=MASKED, steps=8, method=method,
                                                      temperature=temp, top_p=top_p)[0])
        for temp, top in [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5)]:
            jax.block_until_ready(fn(jax.random.PRNGKey(0), temp, top))
        assert len(traces) == 1, method
        # and the values act: greedy picks token 0 everywhere, top_p = 0.5 keeps only token 0
        assert np.all(np.asarray(fn(jax.random.PRNGKey(1), 0.0, 1.0)) == 0)
        assert np.all(np.asarray(fn(jax.random.PRNGKey(2), 1.0, 0.5)) == 0)
        assert len(traces) == 1


def test_greedy_one_step_sampling_returns_the_per_position_argmax():
    fn = jax.jit(lambda k, temp, top_p: dd.sample(EXACT, k, (8, 4), process=MASKED, steps=1,
                                                  temperature=temp, top_p=top_p)[0])
    x = np.asarray(fn(jax.random.PRNGKey(8), 0.0, 1.0))
    np.testing.assert_array_equal(x, np.broadcast_to(np.argmax(J.marginals(), axis=1), (8, 4)))
    np.testing.assert_array_equal(np.asarray(fn(jax.random.PRNGKey(9), 1.0, 1e-3)), x)


def clock_model(t_start, steps, vocab_size):
    """A model whose prediction is the grid index k of the time t = t_k it is called at (a
    one-hot at token k): each generated token records the step at which it was revealed."""
    def model(x, t):
        k = jnp.round(steps * (1.0 - t / t_start)).astype(jnp.int32)
        onehot = jnp.arange(vocab_size) == k[:, None, None]
        return jnp.where(jnp.broadcast_to(onehot, x.shape + (vocab_size,)), 0.0, -1e9)

    return model


@pytest.mark.parametrize("method", ["ancestral", "first_hitting"])
def test_reveal_step_distribution_from_a_partial_start(method):
    # Started at t_start < 1 from all-masked tokens, a token is revealed at step k (between t_k
    # and t_{k+1}) with probability (c_k - c_{k+1}) / c_0, c_k = 1 - alpha(t_k) = sin(pi t_k / 2)
    # (MD4's cosine, written out here), and the model is called at t_k, the step's start time.
    t_start, steps, L, n = 0.6, 4, 8, 4000
    proc = dd.masked(steps, "cosine")
    fn = jax.jit(lambda k: dd.sample(clock_model(t_start, steps, steps), k, (n, L), process=proc, steps=steps,
                                     method=method, t_start=t_start)[0])
    x = np.asarray(fn(jax.random.PRNGKey(10))).ravel()
    c = np.sin(0.5 * np.pi * t_start * (1.0 - np.arange(steps + 1) / steps))
    want = (c[:-1] - c[1:]) / c[0]
    freq = np.bincount(x, minlength=steps + 1) / x.size
    assert freq[steps] == 0  # every token revealed, none left masked
    np.testing.assert_allclose(freq[:steps], want, atol=4 * np.sqrt(0.25 / x.size))


def test_left_to_right_reveals_a_prefix_with_the_schedule_counts():
    # Left-to-right: after every step the revealed tokens are exactly the leftmost ones, and
    # floor(L (1 - alpha(t_{k+1})) / (1 - alpha(t_start))) stay masked (cosine, t_start = 0.8).
    L, steps, t_start = 8, 3, 0.8
    model = lambda x, t: jnp.zeros(x.shape + (3,))  # noqa: E731
    fn = jax.jit(lambda k: dd.sample(model, k, (4, L), process=dd.masked(3, "cosine"), steps=steps,
                                     method="left_to_right", t_start=t_start, return_trajectory=True)[1])
    traj = np.asarray(fn(jax.random.PRNGKey(11))["trajectory"])
    c = np.sin(0.5 * np.pi * t_start * (1.0 - np.arange(steps + 1) / steps))
    remaining = np.floor(L * c / c[0] + 1e-4).astype(int)  # [8, 6, 3, 0]; the linear schedule's: [8, 5, 2, 0]
    still_masked = np.arange(L)[None, :] >= (L - remaining)[:, None]  # the rightmost `remaining` positions
    for b in range(4):
        np.testing.assert_array_equal(traj[:, b] == 3, still_masked)


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="method"):
        dd.sample(EXACT, jax.random.PRNGKey(0), (2, 4), process=MASKED, steps=4, method="beam")
    with pytest.raises(ValueError, match="masked"):
        dd.sample(EXACT, jax.random.PRNGKey(0), (2, 4), process=dd.uniform(3), steps=4, method="first_hitting")
    with pytest.raises(ValueError, match="steps"):
        dd.sample(EXACT, jax.random.PRNGKey(0), (2, 4), process=MASKED, steps=0)
    with pytest.raises(ValueError, match="x_init"):
        dd.sample(EXACT, jax.random.PRNGKey(0), (2, 4), process=MASKED, steps=4, x_init=jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(ValueError, match="t_start"):
        dd.sample(EXACT, jax.random.PRNGKey(0), (2, 4), process=MASKED, steps=4, t_start=1.5)
