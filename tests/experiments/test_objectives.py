"""diffjax.training.objectives: the loss glue is pure, equals diffjax.losses on the same inputs,
and handles condition dropout, guidance, masks and dropout layers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax import guidance, losses, schedules
from diffjax.models import MLP
from diffjax.training.objectives import make_objective

B, D = 16, 3


def _perturb(params, seed=0, scale=0.3):
    """Random values everywhere (zero-initialised output layers make fresh models output 0)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype)
                                     for p, k in zip(leaves, keys)])


def _setup(num_classes=None, dropout=0.0, **kwargs):
    model = MLP(D, hidden=32, depth=2, time_embed_dim=16, num_classes=num_classes, dropout=dropout,
                rngs=nnx.Rngs(0))
    kwargs.setdefault("schedule", schedules.cosine())
    kwargs.setdefault("prediction", "v")
    objective, params = make_objective(model, **kwargs)
    return objective, _perturb(params), model


def _batch(seed=0, labels=False):
    rng = np.random.default_rng(seed)
    batch = {"x": rng.standard_normal((B, D)).astype(np.float32)}
    if labels:
        batch["label"] = rng.integers(0, 4, B).astype(np.int32)
    return batch


def _key(seed):
    return jax.random.key_data(jax.random.key(seed))  # the train step hands raw key data


@pytest.mark.parametrize("prediction,weighting", [("v", "v"), ("eps", "simple"), ("x0", "sigmoid"),
                                                  ("eps", "min_snr")])
def test_loss_matches_denoising_loss(prediction, weighting):
    objective, params, _ = _setup(prediction=prediction, weighting=weighting)
    batch, key = _batch(), _key(3)
    loss, metrics = jax.jit(objective.loss_fn)(params, batch, key)

    k_loss = jax.random.split(key, 3)[0]
    model_fn = objective.model_fn(params)  # no dropout: train and eval networks agree
    per_example, aux = losses.denoising_loss(model_fn, jnp.asarray(batch["x"]), k_loss,
                                             schedule=objective.schedule, prediction=prediction,
                                             weighting=weighting)
    np.testing.assert_allclose(loss, jnp.mean(per_example), rtol=1e-6)
    np.testing.assert_allclose(metrics["mse_eps"], jnp.mean(aux["mse_eps"]), rtol=1e-6)
    assert float(loss) > 0


def test_loss_is_pure_and_depends_on_the_key():
    objective, params, _ = _setup()
    batch = _batch()
    fn = jax.jit(objective.loss_fn)
    a, b = fn(params, batch, _key(1)), objective.loss_fn(params, batch, _key(1))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    assert float(fn(params, batch, _key(1))[0]) == float(a[0])
    assert float(fn(params, batch, _key(2))[0]) != float(a[0])
    grads = jax.grad(lambda p: objective.loss_fn(p, batch, _key(1))[0])(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_flow_matching_and_elbo_losses():
    sched = schedules.rectified_flow()
    objective, params, _ = _setup(schedule=sched, prediction="flow", loss="flow_matching")
    batch, key = _batch(), _key(4)
    loss, _ = objective.loss_fn(params, batch, key)
    want, _ = losses.flow_matching_loss(objective.model_fn(params), jnp.asarray(batch["x"]),
                                        jax.random.split(key, 3)[0], schedule=sched)
    np.testing.assert_allclose(loss, jnp.mean(want), rtol=1e-6)

    objective, params, _ = _setup(loss="elbo")
    loss, metrics = objective.loss_fn(params, batch, key)
    _, terms = losses.vdm_elbo(objective.model_fn(params), jnp.asarray(batch["x"]),
                               jax.random.split(key, 3)[0], schedule=objective.schedule,
                               prediction="v")
    np.testing.assert_allclose(loss, jnp.mean(terms["bits_per_dim"]), rtol=1e-6)
    assert {"elbo_diffusion", "elbo_prior", "elbo_reconstruction"} <= set(metrics)


def test_condition_dropout_uses_the_null_class():
    batch, key = _batch(labels=True), _key(5)
    drop_all, params, model = _setup(num_classes=4, cond_drop=1.0)
    keep_all, _, _ = _setup(num_classes=4, cond_drop=0.0)
    assert drop_all.null_class == model.null_class == 4
    null_batch = dict(batch, label=np.full(B, 4, np.int32))
    np.testing.assert_allclose(drop_all.loss_fn(params, batch, key)[0],
                               keep_all.loss_fn(params, null_batch, key)[0], rtol=1e-6)
    assert float(keep_all.loss_fn(params, batch, key)[0]) != float(keep_all.loss_fn(params, null_batch, key)[0])

    # p = 0.5: exactly the labels guidance.drop_condition drops with k_cond get the null class.
    half, _, _ = _setup(num_classes=4, cond_drop=0.5)
    k_cond = jax.random.split(key, 3)[1]
    dropped = np.asarray(guidance.drop_condition(k_cond, jnp.asarray(batch["label"]), 0.5, 4))
    assert 0 < np.sum(dropped == 4) < B
    np.testing.assert_allclose(half.loss_fn(params, batch, key)[0],
                               keep_all.loss_fn(params, dict(batch, label=dropped), key)[0], rtol=1e-6)


def test_model_fn_conditioning_and_guidance():
    objective, params, _ = _setup(num_classes=4, cond_drop=0.1)
    x = jnp.asarray(_batch()["x"])
    t = jnp.linspace(0.1, 0.9, B)
    labels = jnp.arange(B) % 4
    cond = objective.apply(params, x, t, labels)
    uncond = objective.apply(params, x, t, jnp.full((B,), 4))
    np.testing.assert_allclose(objective.model_fn(params)(x, t), uncond, rtol=1e-6)
    np.testing.assert_allclose(objective.model_fn(params, labels)(x, t), cond, rtol=1e-6)
    # Guided outputs come from one batched call of 2B rows: equal up to float rounding.
    np.testing.assert_allclose(objective.model_fn(params, labels, 0.0)(x, t), uncond, atol=1e-5)
    np.testing.assert_allclose(objective.model_fn(params, labels, 3.0)(x, t),
                               uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)


def test_dropout_is_on_in_the_loss_and_off_for_sampling():
    objective, params, _ = _setup(dropout=0.5)
    batch, key = _batch(), _key(1)
    k_loss, _, k_dropout = jax.random.split(key, 3)
    loss = objective.loss_fn(params, batch, key)[0]

    def train_fn(x, t):
        return objective.apply(params, x, t, train=True, rngs=k_dropout)

    want = losses.denoising_loss(train_fn, jnp.asarray(batch["x"]), k_loss,
                                 schedule=objective.schedule, prediction="v")[0]
    np.testing.assert_allclose(loss, jnp.mean(want), rtol=1e-6)
    inference = losses.denoising_loss(objective.model_fn(params), jnp.asarray(batch["x"]), k_loss,
                                      schedule=objective.schedule, prediction="v")[0]
    assert not np.isclose(float(loss), float(jnp.mean(inference)))  # dropout was active

    x, t = jnp.asarray(batch["x"]), jnp.full((B,), 0.5)
    f = objective.model_fn(params)
    np.testing.assert_array_equal(f(x, t), f(x, t))  # deterministic at inference
    a = objective.apply(params, x, t, train=True, rngs=jax.random.key(0))
    b = objective.apply(params, x, t, train=True, rngs=jax.random.key(1))
    assert not np.allclose(a, b)


def test_masked_rows_do_not_count():
    objective, params, _ = _setup()
    batch = _batch()
    mask = np.arange(B) < B - 4
    other = batch["x"].copy()
    other[~mask] = 100.0
    a = objective.loss_fn(params, dict(batch, mask=mask), _key(0))[0]
    b = objective.loss_fn(params, {"x": other, "mask": mask}, _key(0))[0]
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_bad_arguments_raise():
    model = MLP(D, hidden=8, depth=1, time_embed_dim=8, rngs=nnx.Rngs(0))
    sched = schedules.cosine()
    with pytest.raises(ValueError, match="loss must be one of"):
        make_objective(model, schedule=sched, prediction="v", loss="l1")
    with pytest.raises(ValueError, match="prediction"):
        make_objective(model, schedule=sched, prediction="noise")
    with pytest.raises(ValueError, match="weighting must be one of"):
        make_objective(model, schedule=sched, prediction="v", weighting="snr")
    with pytest.raises(ValueError, match="cond_drop"):
        make_objective(model, schedule=sched, prediction="v", cond_drop=0.1)
    with pytest.raises(ValueError, match="flow_matching"):
        make_objective(model, schedule=sched, prediction="v", loss="flow_matching")
    objective, params = make_objective(model, schedule=sched, prediction="v")
    with pytest.raises(ValueError, match="'x'"):
        objective.loss_fn(params, {"image": np.zeros((2, D), np.float32)}, _key(0))


def test_time_draw_options_reach_the_loss():
    """antithetic=False and a [t_min, t_max] window are the time draw of the loss: the
    objective equals denoising_loss with those options, and not the default draw."""
    objective, params, _ = _setup(antithetic=False, t_min=0.2, t_max=0.6)
    batch, key = _batch(), _key(6)
    k_loss = jax.random.split(key, 3)[0]
    x0 = jnp.asarray(batch["x"])
    loss = objective.loss_fn(params, batch, key)[0]

    def reference(**kw):
        return jnp.mean(losses.denoising_loss(objective.model_fn(params), x0, k_loss,
                                              schedule=objective.schedule, prediction="v",
                                              **kw)[0])

    np.testing.assert_allclose(loss, reference(antithetic=False, t_min=0.2, t_max=0.6),
                               rtol=1e-6)
    assert not np.isclose(float(loss), float(reference(antithetic=True, t_min=0.2, t_max=0.6)))
    assert not np.isclose(float(loss), float(reference(antithetic=False)))


def test_masked_loss_is_the_mean_over_valid_rows():
    """With a mask, the loss is the plain mean of the per-example losses of the valid rows
    (sum over valid rows / their count), the per-example losses being those of the full
    batch under the same key."""
    objective, params, _ = _setup()
    batch, key = _batch(), _key(2)
    mask = np.arange(B) % 4 != 3  # 12 of 16 rows valid
    loss, metrics = objective.loss_fn(params, dict(batch, mask=mask), key)
    per_example, aux = losses.denoising_loss(
        objective.model_fn(params), jnp.asarray(batch["x"]), jax.random.split(key, 3)[0],
        schedule=objective.schedule, prediction="v")
    np.testing.assert_allclose(loss, np.asarray(per_example)[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["mse_eps"], np.asarray(aux["mse_eps"])[mask].mean(),
                               rtol=1e-6)
