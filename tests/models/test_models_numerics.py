"""Dtype policy, dropout modes, pure-function use under jit/grad, and accounting helpers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.models import MLP, UNet, count_params, flops_per_example
from diffjax.models.layers import dropout_rngs
from models_helpers import MODELS, forward, make_input, make_model, maxabs, perturb, strong


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("name", MODELS)
def test_bf16_compute_keeps_float32_params_time_and_output(name):
    m32 = perturb(make_model(name))
    m16 = make_model(name, dtype=jnp.bfloat16)
    nnx.update(m16, nnx.state(m32, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(m16, nnx.Param)))
    # Same input at the two ends of time, 1e-3 apart (the same number in bfloat16).
    x = jnp.repeat(make_input(name, batch=1), 4, axis=0)
    t = jnp.array([0.0, 1e-3, 1.0 - 1e-3, 1.0])
    y32, y16 = forward(m32, x, t), forward(m16, x, t)
    assert y16.dtype == jnp.float32 and np.all(np.isfinite(y16))
    assert _rel_err(y16, y32) < 0.03  # measured 0.2-1% on these configurations
    scale = maxabs(y16)
    assert maxabs(y16[0], y16[1]) > 1e-3 * scale
    assert maxabs(y16[2], y16[3]) > 1e-3 * scale


@pytest.mark.parametrize("name", ["unet", "tokens"])
def test_dropout_only_in_training_mode(name):
    model = perturb(make_model(name))  # dropout=0.1
    x, t, _ = strong(make_input(name), np.full(4, 0.4))
    train_fwd = nnx.jit(lambda m, x, t, key: m(x, t, rngs=key))
    model.train()
    a = train_fwd(model, x, t, jax.random.key(0))
    b = train_fwd(model, x, t, jax.random.key(1))
    a2 = train_fwd(model, x, t, jax.random.key(0))
    assert maxabs(a, b) > 1e-4  # fresh masks per key
    np.testing.assert_array_equal(a, a2)  # explicit keys: reproducible
    with pytest.raises(ValueError, match="rngs=key"):
        model(x, t)
    model.eval()
    e1, e2 = forward(model, x, t), forward(model, x, t)
    np.testing.assert_array_equal(e1, e2)
    assert maxabs(e1, a) > 1e-4
    # A model built without dropout needs no key in training mode.
    no_drop = make_model(name, dropout=0.0)
    no_drop.train()
    assert dropout_rngs(no_drop, None) is None


@pytest.mark.parametrize("name", MODELS)
def test_pure_function_under_jit_and_grad(name):
    model = make_model(name)  # dropout=0.1, num_classes=3; at init: zero output layer
    model.train()
    graphdef, params = nnx.split(model)
    x = make_input(name)
    t = jnp.array([0.1, 0.5, 0.9, 1.0])
    cond = jnp.array([0, 1, 3, 2])
    target_rng = np.random.default_rng(0)

    def loss_fn(params, key):
        out = nnx.merge(graphdef, params)(x, t, cond, rngs=key)
        target = jnp.asarray(target_rng.standard_normal(out.shape), jnp.float32)
        return jnp.mean((out - target) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    key = jax.random.key(0)
    loss, grads = value_and_grad(params, key)
    # (Checks in numpy: per-leaf jnp ops would compile once per parameter shape.)
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(np.sum(g ** 2)) for g in leaves) > 0
    # One SGD step lowers the loss (same dropout key), and the pure calls left the model
    # object untouched.
    stepped = jax.tree.map(lambda p, g: jnp.asarray(np.asarray(p) - 0.1 * np.asarray(g)),
                           params, grads)
    assert float(value_and_grad(stepped, key)[0]) < float(loss)
    assert all(np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(params)))

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
