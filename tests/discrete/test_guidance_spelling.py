"""Classifier-free guidance on logits; spell checking (corrupt, restore, character error rate)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax.discrete as dd
from discrete_oracle import markov


def test_guidance_interpolates_and_extrapolates_in_log_space():
    c = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5)) * 2
    u = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 5)) * 2
    lc, lu = jax.nn.log_softmax(c), jax.nn.log_softmax(u)
    guide = jax.jit(dd.guide_logits)
    np.testing.assert_allclose(guide(c, u, 1.0), lc, atol=1e-5)
    np.testing.assert_allclose(guide(c, u, 0.0), lu, atol=1e-5)
    np.testing.assert_allclose(guide(c, u, 2.5), jax.nn.log_softmax(lu + 2.5 * (lc - lu)), atol=1e-5)
    # a token impossible in both branches stays impossible, without NaN, also with -inf logits
    c2, u2 = c.at[..., 0].set(-jnp.inf), u.at[..., 0].set(-jnp.inf)
    out = np.asarray(guide(c2, u2, 3.0))
    assert np.all(np.isfinite(out)) and np.all(np.exp(out[..., 0]) == 0)
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=1e-5)
    # half-precision logits are mixed in float32
    assert guide(c.astype(jnp.bfloat16), u.astype(jnp.bfloat16), 2.0).dtype == jnp.float32


def test_batched_guidance_matches_two_calls_in_one_model_call():
    W = jax.random.normal(jax.random.PRNGKey(2), (4, 6))
    calls = []

    def model(x, t, cond):  # cond in {0, 1, 2}; 3 is the null condition
        calls.append(x.shape[0])
        return W[cond][:, None, :] * (x[..., None] + 1.0) * t[:, None, None]

    x = jax.random.randint(jax.random.PRNGKey(3), (5, 7), 0, 6)
    t = jnp.full((5,), 0.5)
    cond = jnp.asarray([0, 1, 2, 1, 0])
    ref = dd.classifier_free(lambda x, t: model(x, t, cond), lambda x, t: model(x, t, jnp.full_like(cond, 3)), 1.7)
    want = ref(x, t)
    calls.clear()
    fn = jax.jit(lambda x, t, w: dd.classifier_free_batched(model, cond, 3, w)(x, t))
    np.testing.assert_allclose(fn(x, t, 1.7), want, atol=1e-5)
    assert 10 in calls  # the guided branch is one call on the doubled batch
    np.testing.assert_allclose(fn(x, t, 1.0), jax.nn.log_softmax(model(x, t, cond)), atol=1e-5)


def test_spell_checking_with_the_exact_denoiser_lowers_the_character_error_rate():
    J = markov(vocab_size=3, length=4, seed=0)
    proc = dd.uniform(3)
    model = J.uniform_model(proc.alpha)
    x0 = jnp.asarray(J.sample(10, 20_000))
    t = 0.2
    noisy = dd.corrupt(jax.random.PRNGKey(11), x0, t, proc)
    cer_noisy = float(dd.character_error_rate(noisy, x0))
    assert abs(cer_noisy - (1 - float(proc.alpha(t))) * 2 / 3) < 0.006  # resampled to another token
    fixed, info = jax.jit(lambda k, x: dd.restore(model, k, x, t, process=proc))(jax.random.PRNGKey(12), noisy)
    assert int(info["nfe"]) == 1
    cer_fixed = float(dd.character_error_rate(fixed, x0))
    # the per-token posterior argmax is the Bayes-optimal correction: it cannot do worse than leaving x_t
    assert cer_fixed < 0.6 * cer_noisy, (cer_noisy, cer_fixed)
    per_seq = dd.character_error_rate(fixed, x0, per_sequence=True)
    assert per_seq.shape == (20_000,) and abs(float(per_seq.mean()) - cer_fixed) < 1e-6


def test_character_error_rate_of_strings_is_the_edit_distance_rate():
    assert dd.character_error_rate("sitting", "kitten") == pytest.approx(3 / 6)
    assert dd.character_error_rate("the cat", "the cat") == 0.0
    assert dd.character_error_rate(["helo", "wrld"], ["hello", "world"]) == pytest.approx(2 / 10)
    np.testing.assert_allclose(dd.character_error_rate(["ab", "xy"], ["ab", "ab"], per_sequence=True), [0, 1])
    with pytest.raises(ValueError):
        dd.character_error_rate("abc", jnp.zeros(3))
