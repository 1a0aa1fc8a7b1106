"""diffjax.training.objectives.few_step: the glue equals diffjax.few_step on the same inputs,
the samplers make exactly K network calls, and one round of progressive distillation on a
tiny model lowers its loss."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from diffjax import few_step, schedules
from diffjax.models import MLP
from diffjax.training.objectives import (ConsistencyObjective, MeanFlowObjective,
                                         make_consistency_objective, make_meanflow_objective,
                                         make_objective, make_progressive_objective)

B, D = 16, 3


def _perturb(params, seed=0, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype)
                                     for p, k in zip(leaves, keys)])


def _mlp(second_time=False, seed=0):
    return MLP(D, hidden=32, depth=2, time_embed_dim=16, second_time=second_time,
               rngs=nnx.Rngs(seed))


def _batch(seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((B, D)).astype(np.float32)}


def _key(seed):
    return jax.random.key_data(jax.random.key(seed))  # the train step hands raw key data


def test_second_time_is_off_by_default_and_changes_the_output():
    plain = _mlp()
    assert not any("time2" in str(p) for p, _ in nnx.iter_graph(plain))
    with pytest.raises(ValueError, match="second_time=True"):
        plain(jnp.ones((2, D)), 0.5, t2=0.1)
    model = _mlp(second_time=True)
    graphdef, params = nnx.split(model)
    model = nnx.merge(graphdef, _perturb(params))
    x = jnp.ones((2, D))
    np.testing.assert_allclose(model(x, 0.5), model(x, 0.5, t2=0.0), atol=0)  # None is 0
    assert float(jnp.max(jnp.abs(model(x, 0.5, t2=0.3) - model(x, 0.5)))) > 1e-4
    with pytest.raises(ValueError, match="second_time=True"):
        make_meanflow_objective(_mlp())


def test_meanflow_loss_matches_the_math_and_model_fn_is_the_instant_velocity():
    objective, params = make_meanflow_objective(_mlp(second_time=True), average_share=0.5)
    params = _perturb(params)
    batch, key = _batch(), _key(1)
    loss, metrics = jax.jit(objective.loss_fn)(params, batch, key)
    k_loss = jax.random.split(key, 3)[0]
    u = objective.average_velocity(params)
    per_example, aux = few_step.meanflow_loss(u, jnp.asarray(batch["x"]), k_loss,
                                              average_share=0.5)
    np.testing.assert_allclose(loss, jnp.mean(per_example), rtol=1e-5)
    np.testing.assert_allclose(metrics["mse"], jnp.mean(aux["mse"]), rtol=1e-5)
    assert objective.schedule == schedules.rectified_flow() and objective.prediction == "flow"
    x, t = jnp.asarray(batch["x"]), jnp.linspace(0.1, 0.9, B)
    np.testing.assert_allclose(objective.model_fn(params)(x, t), u(x, t, t), atol=1e-6)
    grads = jax.grad(lambda p: objective.loss_fn(p, batch, key)[0])(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_consistency_loss_matches_the_math():
    teacher_obj, teacher_params = make_objective(_mlp(seed=1), schedule=schedules.cosine(),
                                                 prediction="v")
    teacher_params = _perturb(teacher_params, seed=2)

    def teacher(x, t):
        from diffjax import convert
        return convert(teacher_obj.model_fn(teacher_params)(x, t), x, t, teacher_obj.schedule,
                       source="v", target="x0")

    objective, params = make_consistency_objective(_mlp(), schedule=schedules.cosine(),
                                                   prediction="v", teacher=teacher)
    params = _perturb(params)
    batch, key = _batch(), _key(3)
    loss, metrics = jax.jit(objective.loss_fn)(params, batch, key)
    k_loss = jax.random.split(key, 3)[0]
    per_example, _ = few_step.consistency_loss(
        objective.model_fn(params), jnp.asarray(batch["x"]), k_loss, schedule=objective.schedule,
        prediction="v", teacher_x0_fn=teacher)
    np.testing.assert_allclose(loss, jnp.mean(per_example), rtol=1e-5)
    assert float(loss) > 0 and np.isfinite(float(metrics["tangent_rms"]))
    assert not objective.likelihood


@pytest.mark.parametrize("kind,steps", [("meanflow", 1), ("meanflow", 3), ("consistency", 1),
                                        ("consistency", 2), ("progressive", 4)])
def test_samplers_make_exactly_k_network_calls(kind, steps, monkeypatch):
    if kind == "meanflow":
        objective, params = make_meanflow_objective(_mlp(second_time=True))
    elif kind == "consistency":
        objective, params = make_consistency_objective(_mlp(), schedule=schedules.cosine(),
                                                       prediction="v")
    else:
        objective, params = make_progressive_objective(
            _mlp(), schedule=schedules.cosine(), prediction="v", student_steps=4,
            teacher=lambda x, t: x)
    params = _perturb(params)
    calls = []
    apply = type(objective).apply

    def counting(self, *args, **kwargs):
        calls.append(1)
        return apply(self, *args, **kwargs)

    monkeypatch.setattr(type(objective), "apply", counting)
    with jax.disable_jit():  # lax.scan runs its body once per step in Python
        x, info = objective.sample(params, jax.random.key(0), (5, D), steps=steps)
    assert len(calls) == steps and int(info["nfe"]) == steps
    assert x.shape == (5, D) and bool(jnp.all(jnp.isfinite(x)))


def test_one_progressive_round_lowers_the_distillation_loss():
    schedule = schedules.cosine()
    teacher_obj, teacher_params = make_objective(_mlp(seed=1), schedule=schedule, prediction="v")
    teacher_params = _perturb(teacher_params, seed=4, scale=0.5)

    def teacher(x, t):
        from diffjax import convert
        return convert(teacher_obj.model_fn(teacher_params)(x, t), x, t, schedule, source="v",
                       target="x0")

    objective, params = make_progressive_objective(_mlp(seed=1), schedule=schedule,
                                                   prediction="v", teacher=teacher,
                                                   student_steps=2)
    params = jax.tree.map(jnp.array, teacher_params)  # the student starts as the teacher
    data = np.random.default_rng(5).standard_normal((64, D)).astype(np.float32)
    keys = [_key(100 + i) for i in range(8)]

    @jax.jit
    def held_out(p):
        return jnp.mean(jnp.stack([objective.loss_fn(p, {"x": data}, k)[0] for k in keys]))

    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, s, key):
        g = jax.grad(lambda p: objective.loss_fn(p, {"x": data}, key)[0])(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    before = float(held_out(params))
    for i in range(150):
        params, state = step(params, state, _key(i))
    after = float(held_out(params))
    assert before > 0 and after < 0.5 * before, (before, after)


def test_builders_validate_arguments():
    with pytest.raises(ValueError, match="average_share"):
        make_meanflow_objective(_mlp(second_time=True), average_share=1.5)
    with pytest.raises(ValueError, match="teacher"):
        make_progressive_objective(_mlp(), schedule=schedules.cosine(), prediction="v",
                                   teacher=None, student_steps=2)
    with pytest.raises(ValueError, match="student_steps"):
        make_progressive_objective(_mlp(), schedule=schedules.cosine(), prediction="v",
                                   teacher=lambda x, t: x, student_steps=0)
    with pytest.raises(ValueError, match="t_min"):
        make_consistency_objective(_mlp(), schedule=schedules.cosine(), prediction="v",
                                   t_min=0.5, t_max=0.2)
    assert isinstance(make_meanflow_objective(_mlp(second_time=True))[0], MeanFlowObjective)
    assert isinstance(make_consistency_objective(_mlp(), schedule=schedules.cosine(),
                                                 prediction="v")[0], ConsistencyObjective)
