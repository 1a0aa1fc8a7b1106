"""Optimizer config, learning-rate schedule and EMA against closed forms."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from diffjax import training


def test_schedule_warmup_then_cosine_closed_form():
    config = ml_collections.ConfigDict(dict(learning_rate=2.0, warmup_steps=4, total_steps=14,
                                            end_lr_ratio=0.1))
    schedule = training.make_schedule(config)
    for t in range(0, 20):
        if t < 4:
            want = 2.0 * t / 4
        else:
            frac = min((t - 4) / 10, 1.0)
            want = 0.2 + 0.5 * (2.0 - 0.2) * (1 + math.cos(math.pi * frac))
        np.testing.assert_allclose(float(schedule(t)), want, rtol=1e-6, atol=1e-7, err_msg=t)


@pytest.mark.parametrize("bad, name", [
    (dict(total_steps=10), "learning_rate"),
    (dict(learning_rate=1e-3), "total_steps"),
    (dict(learning_rate=-1.0, total_steps=10), "learning_rate"),
    (dict(learning_rate=1e-3, total_steps=10, warmup_steps=11), "warmup_steps"),
    (dict(learning_rate=1e-3, total_steps=10, grad_clip=-1.0), "grad_clip"),
])
def test_bad_config_names_the_field(bad, name):
    with pytest.raises(ValueError, match=name):
        training.make_optimizer(bad)


def test_weight_decay_skips_biases_and_clipping_bounds_the_update():
    params = {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full((3,), 2.0)}
    tx = training.make_optimizer(dict(learning_rate=0.1, total_steps=10, weight_decay=0.5,
                                      grad_clip=1.0))
    state = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, state, params)
    # Zero gradients: Adam's step is 0, AdamW decay is -lr * wd * param on kernels only.
    np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(updates["bias"], 0.0)
    # Huge gradient: clipped to global norm 1, then Adam's first step is lr * sign(g).
    tx = training.make_optimizer(dict(learning_rate=0.1, total_steps=10, grad_clip=1.0))
    huge = {"kernel": jnp.full((2, 3), 1e6), "bias": jnp.full((3,), -1e6)}
    updates, _ = tx.update(huge, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.1, rtol=1e-4)
    np.testing.assert_allclose(updates["bias"], 0.1, rtol=1e-4)


def test_ema_warmup_and_update():
    for t in [0, 1, 5, 100, 10**6]:
        want = min(0.999, (1 + t) / (10 + t))
        np.testing.assert_allclose(float(training.ema_decay_at(t, 0.999)), want, rtol=1e-6)
    assert float(training.ema_decay_at(0, 0.9, warmup=False)) == pytest.approx(0.9)
    ema = {"w": jnp.array([1.0, -2.0])}
    new = training.ema_update(ema, {"w": jnp.array([3.0, 2.0])}, 0.75)
    np.testing.assert_allclose(new["w"], [0.75 * 1 + 0.25 * 3, 0.75 * -2 + 0.25 * 2])
    with pytest.raises(ValueError, match="decay"):
        training.ema_decay_at(0, 1.5)


@pytest.mark.parametrize("grad, clip", [([3.0, 4.0, 0.0, 12.0], 1.0),   # norm 13: clipped
                                        ([0.3, -0.4, 0.0, 1.2], 2.0)])  # norm 1.3: kept
def test_clipped_first_adam_step_written_out(grad, clip):
    """First AdamW step from the config at constant learning rate, eps = 1 (so the update
    is not just a sign and shows the clipping): g' = g * min(1, clip / |g|_2),
    m_hat = g', v_hat = g'^2, update = -lr * g' / (|g'| + eps) (no decay on a bias)."""
    lr, eps = 0.1, 1.0
    g = np.array(grad)
    gc = g * min(1.0, clip / np.linalg.norm(g))
    tx = training.make_optimizer(dict(learning_rate=lr, total_steps=10, end_lr_ratio=1.0,
                                      eps=eps, grad_clip=clip))
    params = {"b": jnp.zeros(4)}
    updates, _ = tx.update({"b": jnp.asarray(g, jnp.float32)}, tx.init(params), params)
    np.testing.assert_allclose(updates["b"], -lr * gc / (np.abs(gc) + eps), rtol=1e-5,
                               atol=1e-7)


def test_decay_all_decays_biases_too():
    """decay_all=True: zero gradients give the decoupled decay -lr * wd * param on every
    array, biases included."""
    params = {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full((3,), -4.0)}
    tx = training.make_optimizer(dict(learning_rate=0.1, total_steps=10, weight_decay=0.5,
                                      decay_all=True))
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(updates["bias"], -0.1 * 0.5 * -4.0, rtol=1e-6)
