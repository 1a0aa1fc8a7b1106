"""The jit train step: device-count invariance, FSDP, accumulation, non-finite skipping."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from diffjax import training
from training_helpers import OPT_CONFIG, ToyData, flat, make_loss, setup


def run(num_devices, steps=5, batch_size=16, **kwargs):
    mesh = training.make_mesh(num_devices)
    train_step, state = setup(mesh, **kwargs)
    data = ToyData(batch_size)
    losses = []
    for _ in range(steps):
        state, metrics = train_step(state, next(data))
        losses.append(float(metrics["loss"]))
    return np.array(losses), state, metrics


def assert_trees_close(a, b, tol):
    fa, fb = flat(a), flat(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        np.testing.assert_allclose(fa[k], fb[k], rtol=0, atol=tol, err_msg=k)


def test_eight_devices_match_one_device():
    assert jax.device_count() == 8
    losses1, state1, _ = run(1)
    losses8, state8, _ = run(8)
    assert state8.params["l1"]["kernel"].get_value().sharding.mesh.devices.size == 8
    np.testing.assert_allclose(losses8, losses1, rtol=0, atol=1e-5)
    assert_trees_close(state8.params, state1.params, 1e-5)
    assert_trees_close(state8.ema_params, state1.ema_params, 1e-5)
    assert int(state8.step) == int(state1.step) == 5


def test_fsdp_matches_replicated():
    losses_r, state_r, _ = run(8)
    losses_f, state_f, _ = run(8, fsdp=True)
    # Large arrays (>= 64 elements) are split on their largest divisible dimension,
    # together with their Adam moments and EMA; small ones stay replicated.
    assert state_f.params["l1"]["kernel"].get_value().sharding.spec == P(None, "data")  # (4, 32)
    assert state_f.params["l2"]["kernel"].get_value().sharding.spec == P("data")  # (32, 4)
    assert state_f.ema_params["l1"]["kernel"].get_value().sharding.spec == P(None, "data")
    assert state_f.params["l1"]["bias"].get_value().sharding.spec == P()
    np.testing.assert_allclose(losses_f, losses_r, rtol=0, atol=1e-6)
    assert_trees_close(state_f, state_r, 1e-6)


def test_grad_accumulation_matches_full_batch():
    # A key-free loss: the two half-batch gradients average to the full-batch gradient.
    losses_full, state_full, _ = run(8, steps=3, batch_size=32, noisy=False)
    losses_acc, state_acc, _ = run(8, steps=3, batch_size=32, noisy=False, grad_accum=2)
    np.testing.assert_allclose(losses_acc, losses_full, rtol=0, atol=1e-6)
    assert_trees_close(state_acc.params, state_full.params, 1e-6)
    assert_trees_close(state_acc.opt_state, state_full.opt_state, 1e-6)


def test_grad_accumulation_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="grad_accum"):
        training.make_train_step(lambda p, b, k: (0.0, {}), None, mesh=training.make_mesh(1),
                                 grad_accum=0)
    mesh = training.make_mesh(1)
    train_step, state = setup(mesh, grad_accum=3)
    with pytest.raises(ValueError, match="divisible by grad_accum=3"):
        train_step(state, next(ToyData(16)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_batch_is_skipped_and_counted(bad):
    mesh = training.make_mesh(8)
    train_step, state = setup(mesh)
    data = ToyData(16)
    for _ in range(2):
        state, _ = train_step(state, next(data))
    before = flat(state)
    poisoned = next(data)
    poisoned["x"][3, 1] = bad
    state, metrics = train_step(state, poisoned)
    after = flat(state)
    assert float(metrics["finite"]) == 0.0
    assert float(metrics["skipped"]) == 1.0
    assert int(state.skipped) == 1 and int(state.step) == 3
    for k in before:
        if k not in ("step", "skipped"):
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    # Training continues; the optimizer's own count lags the step by the skipped update.
    state, metrics = train_step(state, next(data))
    assert float(metrics["finite"]) == 1.0 and int(state.skipped) == 1
    assert np.all(np.isfinite(flat(state.params)["l1.kernel.value"]))
    assert int(flat(state.opt_state)["1.0.count"]) == 3


def test_metrics_report_learning_rate_and_grad_norm():
    mesh = training.make_mesh(2)
    train_step, state = setup(mesh)
    schedule = training.make_schedule(OPT_CONFIG)
    data = ToyData(16)
    for i in range(4):
        params, key = jax.device_get((state.params, state.rng))
        batch = next(data)
        key = jax.random.fold_in(key, i)
        grads = jax.grad(lambda p: train_step.loss_fn(p, batch, key)[0])(params)
        expected_norm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads))))
        state, metrics = train_step(state, batch)
        np.testing.assert_allclose(float(metrics["learning_rate"]), float(schedule(i)), rtol=1e-6)
        np.testing.assert_allclose(float(metrics["grad_norm"]), expected_norm, rtol=1e-5)
    # Warmup over 3 steps from 0 to the peak: 0, 1/3, 2/3 of 3e-2, then the cosine phase.
    np.testing.assert_allclose([float(schedule(i)) for i in range(3)], [0.0, 1e-2, 2e-2],
                               rtol=1e-6)


def test_shard_batch_rejects_indivisible_batch():
    mesh = training.make_mesh(8)
    with pytest.raises(ValueError, match="divisible"):
        training.shard_batch({"x": np.zeros((12, 4), np.float32)}, mesh)
    x = training.shard_batch({"x": np.arange(32.0).reshape(16, 2)}, mesh)["x"]
    assert x.sharding.spec == P("data") and len(x.addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(x), np.arange(32.0).reshape(16, 2))


def test_make_mesh_validates_and_uses_auto_axes():
    mesh = training.make_mesh(2)
    assert mesh.shape == {"data": 2}
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    with pytest.raises(ValueError, match="num_devices"):
        training.make_mesh(9)


class TinyConvNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.c1 = nnx.Conv(2, 8, (3, 3), rngs=rngs)  # plain Flax layers
        self.c2 = nnx.Conv(8, 2, (3, 3), rngs=rngs)

    def __call__(self, x):
        return self.c2(nnx.gelu(self.c1(x)))


def _conv_labels(step, state, batch):
    hlo = step.lower(state, batch).compile().as_text()
    return re.findall(r"convolution\([^\n]*dim_labels=([\w>-]+)", hlo)


def test_grad_accumulation_of_convolutions_on_cpu_runs_canonical_convolutions():
    """On CPU, the accumulation loop's convolution gradients take the loop-friendly form
    (diffjax.platform.loop_friendly_convolutions, active by default on CPU): every
    convolution of the compiled step is an NHWC/HWIO one, and the step still equals the
    full-batch step. With platform_tweaks=False the loop keeps XLA's other layouts."""
    mesh = training.make_mesh(1)
    graphdef, params, rest = training.split_model(TinyConvNet(nnx.Rngs(0)))
    loss_fn = make_loss(graphdef, rest, noisy=False)
    tx = training.make_optimizer(OPT_CONFIG)
    x = np.random.default_rng(0).standard_normal((8, 6, 6, 2)).astype(np.float32)
    results = []
    for accum in (1, 2):
        step = training.make_train_step(loss_fn, tx, mesh=mesh, ema_decay=0.99,
                                        grad_accum=accum)
        state = step.place(training.create_train_state(params, tx, rng=0))
        if accum == 2:
            assert step.platform_tweaks
            labels = _conv_labels(step, state, {"x": x})
            # 2 forward, 2 weight-gradient and 1 input-gradient convolution (not the input's)
            assert len(labels) == 5 and set(labels) == {"b01f_01io->b01f"}, labels
            off = training.make_train_step(loss_fn, tx, mesh=mesh, ema_decay=0.99,
                                           grad_accum=accum, platform_tweaks=False)
            assert not off.platform_tweaks and off.compiler_options is None
            assert set(_conv_labels(off, state, {"x": x})) != {"b01f_01io->b01f"}
        for _ in range(2):
            state, metrics = step(state, {"x": x})
        results.append((float(metrics["loss"]), state))
    assert abs(results[0][0] - results[1][0]) <= 1e-6
    assert_trees_close(results[1][1].params, results[0][1].params, 1e-6)


def test_run_steps_equals_single_steps():
    """Several steps in one compiled call (a scan) give the states and metrics of calling
    the step on each batch in turn, on 8 devices, including a skipped non-finite batch."""
    mesh = training.make_mesh(8)
    step, state = setup(mesh)
    data = ToyData(16, poison=(2,))
    batches = [next(data) for _ in range(4)]
    singles = []
    for b in batches:
        state, metrics = step(state, b)
        singles.append(metrics)
    step2, state2 = setup(mesh)
    state2, stacked = step2.run_steps(state2, batches)
    assert stacked["loss"].shape == (4,)
    for k in ("loss", "grad_norm", "finite", "skipped"):
        np.testing.assert_allclose(stacked[k], [float(m[k]) for m in singles], rtol=0,
                                   atol=1e-6, err_msg=k)
    assert float(stacked["skipped"][-1]) == 1.0
    assert_trees_close(state2, state, 1e-6)
    with pytest.raises(ValueError, match="at least one batch"):
        step2.run_steps(state2, [])


def test_train_step_with_and_without_the_platform_tweaks_agree():
    """diffjax.platform's compiler options and convolution rewrite change how the step is
    compiled, not what it computes."""
    mesh = training.make_mesh(2)
    results = []
    for tweaks in ("auto", False):
        step, state = setup(mesh, platform_tweaks=tweaks)
        data = ToyData(16)
        for _ in range(3):
            state, metrics = step(state, next(data))
        results.append((float(metrics["loss"]), flat(state.params), step.compiler_options))
    (loss_a, params_a, options_a), (loss_b, params_b, options_b) = results
    assert options_a and options_b is None
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    for k in params_a:
        np.testing.assert_allclose(params_a[k], params_b[k], rtol=0, atol=1e-6, err_msg=k)


def test_a_refused_compiler_option_is_a_clear_compile_error():
    step, state = setup(training.make_mesh(1), compiler_options={"xla_no_such_option": 1})
    with pytest.raises(Exception, match="xla_no_such_option"):
        step(state, next(ToyData(16)))
