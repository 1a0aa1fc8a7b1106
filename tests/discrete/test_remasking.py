"""The ReMDM remasking sampler and the confidence sampler's ordering temperature, against the
exact joint of a 3-token, length-4 Markov chain (the conformance oracle) and closed forms."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax.discrete as dd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "conformance"))
oracles = pytest.importorskip("oracles")

J = oracles.markov_joint(vocab_size=3, length=4, seed=0)
MASKED = dd.masked(3)
EXACT = J.masked_model_fn(MASKED.mask_id)
B = 20_000


def run(steps, key, batch=B, model=EXACT, **kw):
    fn = jax.jit(lambda k: dd.sample(model, k, (batch, 4), process=MASKED, steps=steps, **kw))
    x, info = fn(jax.random.PRNGKey(key))
    return np.asarray(x), info


def tv_noise_floor(n, draws=20, seed=0):
    """Mean total variation between the truth and the histogram of n exact draws from it."""
    rng = np.random.default_rng(seed)
    return float(np.mean([0.5 * np.abs(rng.multinomial(n, J.probs) / n - J.probs).sum() for _ in range(draws)]))


@pytest.mark.parametrize("schedule,eta", [("cap", 0.05), ("rescale", 0.2)])
def test_remasking_sampler_draws_the_joint_with_more_steps_than_tokens(schedule, eta):
    floor = tv_noise_floor(B)
    assert floor < 0.01  # well below the 0.05 tolerance
    x, info = run(64, 1, method="remdm", remask_schedule=schedule, remask_eta=eta)
    assert x.min() >= 0 and x.max() < 3  # nothing left masked
    assert oracles.total_variation(J, x) <= 0.05
    # tokens were remasked and redrawn: more changes than the B * 4 reveals
    assert int(np.asarray(info["changed"]).sum()) > 1.5 * B * 4 and int(info["nfe"]) == 64


def test_remasking_with_eta_zero_is_the_ancestral_sampler_with_the_same_key():
    x_init = jnp.full((512, 4), MASKED.mask_id).at[:, 1].set(2)
    steps = 16  # more steps than tokens
    anc, anc_info = run(steps, 2, batch=512, x_init=x_init)
    for schedule in ("cap", "rescale"):
        fn = jax.jit(lambda k, eta: dd.sample(EXACT, k, (512, 4), process=MASKED, steps=steps, x_init=x_init,
                                              method="remdm", remask_schedule=schedule, remask_eta=eta))
        x, info = fn(jax.random.PRNGKey(2), 0.0)
        np.testing.assert_array_equal(np.asarray(x), anc)
        np.testing.assert_array_equal(np.asarray(info["changed"]), np.asarray(anc_info["changed"]))
        assert not np.array_equal(np.asarray(fn(jax.random.PRNGKey(2), 0.5)[0]), anc)  # eta acts, traced


@pytest.mark.parametrize("schedule,eta", [("cap", 0.1), ("rescale", 0.5)])
def test_remasking_keeps_the_forward_masking_fraction_and_the_prompt(schedule, eta):
    # A model that ignores its input: after each step t_k -> t_{k+1} a free token is masked with
    # probability 1 - alpha(t_{k+1}) = t_{k+1} (linear schedule), remasking or not.
    n, L, steps = 4000, 8, 24
    model = lambda x, t: jnp.zeros(x.shape + (3,))  # noqa: E731
    x_init = jnp.full((n, L), MASKED.mask_id).at[:, 0].set(1)
    fn = jax.jit(lambda k: dd.sample(model, k, (n, L), process=MASKED, steps=steps, method="remdm", x_init=x_init,
                                     remask_schedule=schedule, remask_eta=eta, return_trajectory=True)[1])
    info = fn(jax.random.PRNGKey(3))
    traj = np.asarray(info["trajectory"])
    assert np.all(traj[:, :, 0] == 1)
    masked = (traj[:, :, 1:] == MASKED.mask_id).mean(axis=(1, 2))
    t = 1.0 - np.arange(steps + 1) / steps
    np.testing.assert_allclose(masked, t, atol=4 * np.sqrt(0.25 / (n * (L - 1))))
    remasked = (traj[:-1] != MASKED.mask_id) & (traj[1:] == MASKED.mask_id)
    assert remasked[:, :, 1:].sum() > 0.1 * n  # it did remask


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_confidence_temperature_draws_the_order_from_the_confidences(tau):
    # Two positions whose greedy tokens have probabilities 0.9 and 0.5; one is revealed at the
    # first of two steps, position 0 with probability 0.9**(1/tau) / (0.9**(1/tau) + 0.5**(1/tau)).
    p = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2]])
    model = lambda x, t: jnp.broadcast_to(jnp.log(jnp.asarray(p, jnp.float32)), x.shape + (3,))  # noqa: E731
    n = 20_000
    fn = jax.jit(lambda k, tau: dd.sample(model, k, (n, 2), process=MASKED, steps=2, method="confidence",
                                          temperature=0.0, confidence_temperature=tau, return_trajectory=True)[1])
    first = np.asarray(fn(jax.random.PRNGKey(4), tau)["trajectory"])[1]
    assert np.all((first != MASKED.mask_id).sum(1) == 1)
    freq = (first[:, 0] != MASKED.mask_id).mean()
    want = 1.0 if tau == 0 else 0.9 ** (1 / tau) / (0.9 ** (1 / tau) + 0.5 ** (1 / tau))
    assert abs(freq - want) < 4 * np.sqrt(0.25 / n) + 1e-9


def test_confidence_at_high_temperature_is_a_random_order_and_draws_the_joint():
    # With one token per step and the exact conditionals any order that ignores the drawn
    # tokens samples the joint; the greedy confidence order does not.
    hot, _ = run(4, 5, method="confidence", confidence_temperature=1e4)
    greedy, _ = run(4, 5, method="confidence")
    assert oracles.total_variation(J, hot) < 0.03
    assert oracles.total_variation(J, greedy) > 0.1


def test_bad_remasking_and_ordering_options_name_the_argument():
    kw = dict(process=MASKED, steps=4)
    with pytest.raises(ValueError, match="remask_eta"):
        dd.sample(EXACT, jax.random.PRNGKey(0), (2, 4), method="remdm", remask_eta=1.5, **kw)
    with pytest.raises(ValueError, match="remask_schedule"):
        dd.sample(EXACT, jax.random.PRNGKey(0), (2, 4), method="remdm", remask_schedule="loop", **kw)
    with pytest.raises(ValueError, match="confidence_temperature"):
        dd.sample(EXACT, jax.random.PRNGKey(0), (2, 4), method="confidence", confidence_temperature=-1.0, **kw)
    with pytest.raises(ValueError, match="masked"):
        dd.sample(EXACT, jax.random.PRNGKey(0), (2, 4), process=dd.uniform(3), steps=4, method="remdm")
    assert "remdm" in dd.METHODS
