"""Dtype policy, dropout modes, pure-function use under jit/grad, and accounting helpers."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.models import MLP, UNet, count_params, flops_per_example
from diffjax.models.layers import dropout_rngs
from models_helpers import (
    LABELS, MODELS, VOCAB, forward, make_input, make_model, maxabs, random_model, strong,
)


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("name", MODELS)
def test_bf16_compute_keeps_float32_params_time_and_output(name):
    m32 = random_model(name)
    m16 = random_model(name, dtype=jnp.bfloat16, seed=1)
    nnx.update(m16, nnx.state(m32, nnx.Param))  # the same parameters
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(m16, nnx.Param)))
    # Same input at the two ends of time, 1e-3 apart (the same number in bfloat16).
    x = np.repeat(make_input(name, batch=1), 4, axis=0)
    t = np.array([0.0, 1e-3, 1.0 - 1e-3, 1.0])
    y32, y16 = forward(m32, x, t, LABELS), forward(m16, x, t, LABELS)
    assert y16.dtype == jnp.float32 and np.all(np.isfinite(y16))
    assert _rel_err(y16, y32) < 0.03  # measured 0.2-1% on these configurations
    scale = maxabs(y16)
    assert maxabs(y16[0], y16[1]) > 1e-3 * scale
    assert maxabs(y16[2], y16[3]) > 1e-3 * scale


def _target(name):
    shape = (4, 8, VOCAB) if name == "tokens" else make_input(name).shape
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _pure_train_loss(name):
    """A training-mode model (dropout 0.1) as a pure function: ``(graphdef, params)`` and
    the jitted ``value_and_grad`` of a squared-error loss in ``(params, dropout_key)``."""
    model = random_model(name)
    model.train()
    graphdef, params = nnx.split(model)
    x, t, cond = strong(make_input(name), np.array([0.1, 0.5, 0.9, 1.0]), LABELS)
    target = jnp.asarray(_target(name))

    def loss_fn(params, key):
        out = nnx.merge(graphdef, params)(x, t, cond, rngs=key)
        return jnp.mean((out - target) ** 2)

    return model, params, jax.jit(jax.value_and_grad(loss_fn))


@pytest.mark.parametrize("name", MODELS)
def test_pure_function_under_jit_and_grad(name):
    model, params, value_and_grad = _pure_train_loss(name)
    key = jax.random.key(0)
    loss, grads = value_and_grad(params, key)
    # (Checks in numpy: per-leaf jnp ops would compile once per parameter shape.)
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(np.sum(g ** 2)) for g in leaves) > 0
    # A short step against the gradient lowers the loss (same dropout key), and the pure
    # calls left the model object untouched.
    lr = 1e-2 / np.sqrt(sum(float(np.sum(g ** 2)) for g in leaves))
    stepped = jax.tree.map(lambda p, g: jnp.asarray(np.asarray(p) - lr * np.asarray(g)),
                           params, grads)
    assert float(value_and_grad(stepped, key)[0]) < float(loss)
    assert all(np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(params)))


@pytest.mark.parametrize("name", MODELS)
def test_dropout_only_in_training_mode(name):
    model, params, value_and_grad = _pure_train_loss(name)
    train_loss = lambda seed: float(value_and_grad(params, jax.random.key(seed))[0])
    assert train_loss(0) == train_loss(0)  # explicit keys: reproducible
    assert train_loss(0) != train_loss(1)  # fresh masks per key
    with pytest.raises(ValueError, match="rngs=key"):
        model(make_input(name), 0.5, LABELS)  # training mode, no key
    model = nnx.clone(model)
    model.eval()
    x, t = make_input(name), np.array([0.1, 0.5, 0.9, 1.0])
    e1, e2 = forward(model, x, t, LABELS), forward(model, x, t, LABELS)
    np.testing.assert_array_equal(e1, e2)
    eval_loss = float(np.mean((e1 - _target(name)) ** 2))
    assert abs(eval_loss - train_loss(0)) > 1e-6 * eval_loss
    # A model built without dropout needs no key in training mode.
    no_drop = random_model(name, dropout=0.0)
    no_drop.train()
    assert dropout_rngs(no_drop, None) is None


def test_count_params_closed_form_and_abstract():
    model = make_model("mlp")  # MLP(2, hidden=32, depth=2, time_embed_dim=16, num_classes=3)
    time_mlp = (16 * 16 + 16) * 2
    classes = (3 + 1) * 16  # three classes and the null class
    proj_in = 2 * 32 + 32
    block = (16 * 3 * 32 + 3 * 32) + (32 * 64 + 64) + (64 * 32 + 32)
    head = (16 * 2 * 32 + 2 * 32) + (32 * 2 + 2)
    assert count_params(model) == time_mlp + classes + proj_in + 2 * block + head
    abstract = nnx.eval_shape(lambda: MLP(2, hidden=32, depth=2, time_embed_dim=16,
                                          num_classes=3, rngs=nnx.Rngs(0)))
    assert count_params(abstract) == count_params(model)


def test_ddpm_cifar10_size_matches_published_count():
    # Ho et al. (2020): the CIFAR-10 model (ch=128, ch_mult=(1,2,2,2), 2 res blocks,
    # attention at 16x16) has 35.7M parameters. Counted abstractly: nothing is allocated.
    abstract = nnx.eval_shape(lambda: UNet(3, image_size=32, ch=128, ch_mult=(1, 2, 2, 2),
                                           attn_resolutions=(16,), rngs=nnx.Rngs(0)))
    assert abs(count_params(abstract) - 35.7e6) < 0.1e6


def test_flops_per_example_mlp_against_dense_count():
    model = make_model("mlp")
    # Every Linear kernel of the MLP is applied once per example: 2 FLOPs per weight.
    kernels = [p for path, p in nnx.to_flat_state(nnx.state(model, nnx.Param))
               if path[-1] == "kernel"]
    dense = 2 * sum(k.size for k in kernels)
    fwd = flops_per_example(model, (8, 2))
    assert dense <= fwd <= 1.5 * dense
    train = flops_per_example(model, (8, 2), train=True)
    assert 2.0 * fwd <= train <= 4.0 * fwd
    with pytest.raises(ValueError, match="batch axis"):
        flops_per_example(model, (2,))


@pytest.mark.parametrize("shape,groups", [((3, 4, 5, 12), 3), ((2, 7, 8), 8), ((2, 6, 6, 16), 1)])
def test_group_norm_matches_float64_formula_and_flax(shape, groups):
    """diffjax's GroupNorm (per-channel sums first) equals the textbook definition computed in
    float64 numpy and flax's nnx.GroupNorm, in values and in gradients (reverse and forward
    mode), for non-trivial scale and bias."""
    from diffjax.models.layers import GroupNorm

    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3 + 2).astype(np.float32)
    c = shape[-1]
    scale, bias = rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    ours = GroupNorm(c, num_groups=groups, epsilon=1e-6, rngs=nnx.Rngs(0))
    theirs = nnx.GroupNorm(c, num_groups=groups, epsilon=1e-6, rngs=nnx.Rngs(0))
    for m in (ours, theirs):
        m.scale[...], m.bias[...] = jnp.asarray(scale), jnp.asarray(bias)

    xg = x.astype(np.float64).reshape(shape[0], -1, groups, c // groups)
    mean = xg.mean(axis=(1, 3), keepdims=True)
    var = xg.var(axis=(1, 3), keepdims=True)
    want = ((xg - mean) / np.sqrt(var + 1e-6)).reshape(shape) * scale + bias
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), want, atol=2e-5)

    w = jnp.asarray(rng.normal(size=shape).astype(np.float32))

    def loss(m, x):
        return jnp.sum(m(x) * w)

    g_ours = jax.grad(loss, argnums=(0, 1))(ours, jnp.asarray(x))
    g_theirs = jax.grad(loss, argnums=(0, 1))(theirs, jnp.asarray(x))
    np.testing.assert_allclose(g_ours[1], g_theirs[1], atol=2e-5)
    np.testing.assert_allclose(g_ours[0].scale[...], g_theirs[0].scale[...], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(g_ours[0].bias[...], g_theirs[0].bias[...], rtol=1e-4, atol=1e-4)
    # Forward mode (used by ODE likelihoods) agrees with reverse mode: <J v, w> = <v, J^T w>.
    v = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    _, jv = jax.jvp(lambda x: ours(x), (jnp.asarray(x),), (v,))
    np.testing.assert_allclose(float(jnp.sum(jv * w)), float(jnp.sum(g_ours[1] * v)), rtol=1e-4)


def test_group_norm_rejects_groups_that_do_not_divide_channels():
    from diffjax.models.layers import GroupNorm, group_norm

    with pytest.raises(ValueError, match="num_groups=5 must divide num_features=12"):
        GroupNorm(12, num_groups=5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="groups=5"):
        group_norm(jnp.ones((2, 3, 12)), jnp.ones(12), jnp.zeros(12), 5)
