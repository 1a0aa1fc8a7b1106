"""Self-conditioning in the discrete samplers (``discrete.sample(..., self_condition=True)``).

A hand-written ``model_fn(x, t, probs_prev)`` records every call; call k must receive exactly
``exp(process.x0_log_probs(logits of call k - 1, x of call k - 1))`` (zeros at the first call)
for every method of both processes. A model that ignores ``probs_prev`` gives exactly the plain
samples. Bad input: the errors name the argument.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax.discrete as dd

V, SHAPE = 4, (3, 5)
MASKED, UNIFORM, L2R = dd.masked(V), dd.uniform(V), dd.masked(V, order="left_to_right")


def net(x, t, p):
    """Deterministic logits (B, L, V) that depend on the tokens, the time and ``p``."""
    base = jax.nn.one_hot(x % V, V) * 1.5 + 0.3 * jnp.arange(V) * t[:, None, None]
    return base + 2.0 * jnp.roll(p, 1, axis=-1) - 0.5 * p


def probs_of(process, call):
    x, t, p = (jnp.asarray(v) for v in call)
    return np.asarray(jnp.exp(process.x0_log_probs(net(x, t, p), x)))


CASES = [(MASKED, "ancestral"), (MASKED, "first_hitting"), (MASKED, "confidence"), (MASKED, "remdm"),
         (UNIFORM, "ancestral"), (L2R, "left_to_right")]


@pytest.mark.parametrize("process,method", CASES, ids=[f"{type(p).__name__}-{m}" for p, m in CASES])
def test_every_call_gets_the_prediction_of_the_call_before(process, method, record_calls):
    model_fn, calls = record_calls(net)
    # temperature != 1: the carried prediction is the model's, before temperature
    x, info = dd.sample(model_fn, jax.random.key(0), SHAPE, process=process, steps=5, method=method,
                        temperature=0.5, self_condition=True)
    jax.effects_barrier()
    assert len(calls) == int(info["nfe"]) >= 2
    np.testing.assert_array_equal(calls[0][2], np.zeros(SHAPE + (V,), np.float32))
    for k in range(1, len(calls)):
        assert calls[k][2].dtype == np.float32 and calls[k][2].shape == SHAPE + (V,)
        np.testing.assert_allclose(calls[k][2], probs_of(process, calls[k - 1]), rtol=1e-5, atol=1e-6,
                                   err_msg=f"call {k} did not get the prediction of call {k - 1}")
        np.testing.assert_allclose(calls[k][2].sum(-1), 1.0, rtol=1e-5)  # a distribution per token


@pytest.mark.parametrize("process,method", CASES, ids=[f"{type(p).__name__}-{m}" for p, m in CASES])
def test_a_model_that_ignores_the_prediction_gives_the_plain_samples(process, method):
    def plain(x, t):
        return net(x, t, jnp.zeros(x.shape + (V,)))

    kw = dict(process=process, steps=5, method=method, temperature=0.9)
    a, ia = dd.sample(plain, jax.random.key(1), SHAPE, **kw)
    b, ib = dd.sample(lambda x, t, p: plain(x, t), jax.random.key(1), SHAPE, self_condition=True, **kw)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ia["changed"]), np.asarray(ib["changed"]))
    assert int(ia["nfe"]) == int(ib["nfe"])


def test_trajectory_and_prompt_with_self_condition():
    x_init = jnp.full(SHAPE, MASKED.mask_id).at[:, 0].set(2)
    x, info = dd.sample(net, jax.random.key(2), SHAPE, process=MASKED, steps=4, x_init=x_init,
                        return_trajectory=True, self_condition=True)
    assert info["trajectory"].shape == (5,) + SHAPE
    np.testing.assert_array_equal(np.asarray(x)[:, 0], 2)
    assert np.all(np.asarray(x) < V)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="self_condition must be True or False"):
        dd.sample(net, jax.random.key(0), SHAPE, process=MASKED, steps=3, self_condition=1)
    with pytest.raises(TypeError, match=r"model_fn failed.*model_fn\(x, t, probs_prev\)"):
        dd.sample(lambda x, t: jnp.zeros(x.shape + (V,)), jax.random.key(0), SHAPE, process=MASKED, steps=3,
                  self_condition=True)
    with pytest.raises(ValueError, match="model_fn must return"):
        dd.sample(lambda x, t, p: p[..., :2], jax.random.key(0), SHAPE, process=MASKED, steps=3,
                  self_condition=True)
