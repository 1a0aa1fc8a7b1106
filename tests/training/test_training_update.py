"""The train step's arithmetic against updates written out by hand.

A linear least-squares model with plain SGD (``optax.sgd``, no clipping), whose gradient has
a closed form, so every quantity the step produces (averaged micro-batch gradients,
parameters after the update, EMA, grad norm, the per-step and per-micro-batch keys, the
learning-rate metric after a skipped step) is recomputed here in numpy from the formulas of
`diffjax.training.step`'s docstring, independently of the step's own code.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffjax import training

N, D, LR = 8, 3, 0.5
W0 = np.array([0.3, -0.7, 1.1], np.float32)


def weights(key, n):
    """Per-example loss weights drawn from the step's key (key-dependent loss)."""
    return 1.0 + jax.random.uniform(key, (n,))


def make_loss(noisy):
    def loss_fn(params, batch, key):
        x, y = batch["x"], batch["y"]
        r = weights(key, x.shape[0]) if noisy else 1.0
        loss = jnp.mean(r * 0.5 * (x @ params["w"] - y) ** 2)
        return loss, {}

    return loss_fn


def closed_form(w, x, y, r):
    """(loss, gradient) of mean(r * (x w - y)^2 / 2): gradient mean(r (x w - y) x)."""
    res = x.astype(np.float64) @ w - y
    return np.mean(r * 0.5 * res ** 2), np.mean((r * res)[:, None] * x, axis=0)


def batches(count, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((N, D)).astype(np.float32),
             "y": rng.standard_normal(N).astype(np.float32)} for _ in range(count)]


def make(noisy=False, grad_accum=1, ema_decay=0.9, ema_warmup=True, learning_rate_fn=None):
    step = training.make_train_step(make_loss(noisy), optax.sgd(LR), mesh=training.make_mesh(2),
                                    ema_decay=ema_decay, ema_warmup=ema_warmup,
                                    grad_accum=grad_accum, learning_rate_fn=learning_rate_fn)
    state = training.create_train_state({"w": jnp.asarray(W0)}, optax.sgd(LR), rng=7)
    return step, step.place(state)


@pytest.mark.parametrize("grad_accum", [1, 2, 4])
def test_accumulated_gradient_is_the_full_batch_average(grad_accum):
    """Without clipping, with A micro-batches the update and grad_norm equal those of the
    closed-form full-batch gradient (micro-batch gradients averaged, not summed)."""
    step, state = make(grad_accum=grad_accum)
    w = W0.astype(np.float64)
    for batch in batches(2):
        loss, g = closed_form(w, batch["x"], batch["y"], 1.0)
        state, metrics = step(state, batch)
        w = w - LR * g
        np.testing.assert_allclose(float(metrics["grad_norm"]), np.linalg.norm(g), rtol=1e-5)
        np.testing.assert_allclose(float(metrics["loss"]), loss, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(state.params["w"]), w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_keys_fold_step_then_micro_batch_and_micro_batches_are_strided(grad_accum):
    """Step t uses key_t = fold_in(rng, t) (t counts skipped steps too); micro-batch j gets
    fold_in(key_t, j) and rows j, j + A, ... . The first batch is non-finite (skipped), so
    the learning-rate metric is the schedule at the number of updates applied before."""
    schedule = lambda count: 0.1 + 0.01 * count  # only read by the metric
    step, state = make(noisy=True, grad_accum=grad_accum, learning_rate_fn=schedule)
    rng = jax.random.key_data(jax.random.key(7))
    data = batches(3, seed=1)
    data[0]["x"][0, 0] = np.nan
    w, applied = W0.astype(np.float64), 0
    for t, batch in enumerate(data):
        state, metrics = step(state, batch)
        np.testing.assert_allclose(float(metrics["learning_rate"]), schedule(applied), rtol=1e-6)
        if t == 0:
            assert float(metrics["finite"]) == 0.0
            np.testing.assert_array_equal(np.asarray(state.params["w"]), W0)
            continue
        key_t = jax.random.fold_in(rng, t)
        losses, grads = [], []
        for j in range(grad_accum):
            key = jax.random.fold_in(key_t, j) if grad_accum > 1 else key_t
            rows = slice(j, None, grad_accum)
            r = np.asarray(weights(key, N // grad_accum), np.float64)
            loss, g = closed_form(w, batch["x"][rows], batch["y"][rows], r)
            losses.append(loss)
            grads.append(g)
        w = w - LR * np.mean(grads, axis=0)
        applied += 1
        np.testing.assert_allclose(float(metrics["loss"]), np.mean(losses), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(state.params["w"]), w, rtol=1e-5, atol=1e-6)
    assert int(state.step) == 3 and int(state.skipped) == 1


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_averages_the_updated_parameters(warmup):
    """EMA after step t: d_t * ema + (1 - d_t) * p_{t+1}, with p_{t+1} the parameters after
    the update and d_t = min(0.9, (1 + t) / (10 + t)) with warm-up (0.1 at t = 0, 2/11 at
    t = 1), 0.9 without."""
    step, state = make(ema_decay=0.9, ema_warmup=warmup)
    ema = W0.astype(np.float64)
    for t, batch in enumerate(batches(2, seed=2)):
        before = np.asarray(state.params["w"], np.float64)
        state, _ = step(state, batch)
        after = np.asarray(state.params["w"], np.float64)
        assert np.abs(after - before).max() > 0.05  # a real update to average in
        d = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        ema = d * ema + (1 - d) * after
        np.testing.assert_allclose(np.asarray(state.ema_params["w"]), ema, rtol=1e-5,
                                   atol=1e-6, err_msg=f"step {t}")


def test_non_finite_gradient_with_finite_loss_is_skipped():
    """sqrt(|x w|) at x = 0: the loss is 0 but its gradient is 0/0 = NaN; the update is
    skipped (params, EMA and optimizer state kept) and counted."""

    def loss_fn(params, batch, key):
        return jnp.mean(jnp.sqrt(jnp.abs(batch["x"] @ params["w"]))), {}

    tx = optax.sgd(LR)
    step = training.make_train_step(loss_fn, tx, mesh=training.make_mesh(2), ema_decay=0.9)
    state = step.place(training.create_train_state({"w": jnp.asarray(W0)}, tx, rng=0))
    state, metrics = step(state, {"x": np.zeros((N, D), np.float32)})
    assert float(metrics["loss"]) == 0.0 and not np.isfinite(float(metrics["grad_norm"]))
    assert float(metrics["finite"]) == 0.0 and int(state.skipped) == 1 and int(state.step) == 1
    np.testing.assert_array_equal(np.asarray(state.params["w"]), W0)
    np.testing.assert_array_equal(np.asarray(state.ema_params["w"]), W0)
