"""models.JointUNet and training.objectives.make_joint_objective: shapes, the mask token, and
what the loss counts (given parts drop out, the label term is the masked labels' cross-entropy)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax
from diffjax import discrete, joint, models, schedules
from diffjax.training.objectives import make_joint_objective

K = 10


def _unet(**kw):
    return models.JointUNet(1, num_classes=K, image_size=8, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                            attn_resolutions=(), dropout=0.0, rngs=nnx.Rngs(0), **kw)


def _process():
    return joint.product(diffjax.gaussian(schedules.cosine(), "v"), discrete.masked(K))


def test_joint_unet_shapes_dtypes_and_mask_token():
    m = _unet()
    assert m.mask_token == K
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
    out, logits = nnx.jit(lambda m, *a: m(*a))(m, x, jnp.asarray([0, K, 7]), jnp.asarray([0.1, 0.5, 1.0]),
                                               jnp.asarray([0.0, 1.0, 0.3]))
    assert out.shape == (3, 8, 8, 1) and out.dtype == jnp.float32
    assert logits.shape == (3, K) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(logits, 0.0)  # zero-initialised head: uniform logits
    with pytest.raises(ValueError, match="cond labels"):
        m(x, jnp.asarray([0, K + 1, 7]), 0.5, 0.5)
    with pytest.raises(ValueError, match="labels"):
        m(x, jnp.zeros((3, 1), jnp.int32), 0.5, 0.5)


def test_joint_unet_sees_the_label_and_its_time():
    m = _unet()
    # give the head and output non-zero weights so that the inputs can show
    params = nnx.state(m, nnx.Param)
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params)
    nnx.update(m, params)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    f = nnx.jit(lambda m, labels, t_label: m(x, labels, jnp.full((2,), 0.5), t_label))  # one compilation
    base = f(m, jnp.asarray([3, 3]), jnp.asarray([0.5, 0.5]))
    for other in (f(m, jnp.asarray([K, K]), jnp.asarray([0.5, 0.5])), f(m, jnp.asarray([3, 3]), jnp.asarray([0.9, 0.9]))):
        assert not np.allclose(base[0], other[0]) and not np.allclose(base[1], other[1])


class _Constant(nnx.Module):
    """(prediction 0, logits 0) whatever the input: the loss's bookkeeping in closed form."""

    def __init__(self):
        self.num_classes = K
        self.w = nnx.Param(jnp.zeros(()))

    def __call__(self, x, labels, t, t_label, *, rngs=None):
        return jnp.zeros_like(x) + self.w, jnp.zeros(labels.shape + (K,)) + self.w


def _batch(B):
    rng = np.random.default_rng(0)
    return {"x": jnp.asarray(rng.uniform(-1, 1, (B, 8, 8, 1)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, K, B), jnp.int32)}


def test_the_label_term_is_the_cross_entropy_of_the_masked_labels():
    B = 4000
    batch = _batch(B)
    for clean_label in (0.0, 0.4):
        obj, params = make_joint_objective(_Constant(), process=_process(), weighting="v",
                                           clean_prob=(0.0, clean_label))
        _, metrics = obj.loss_fn(params, batch, jax.random.key(0))
        masked_share = 0.5 * (1 - clean_label)  # label masked with probability t_label ~ U(0, 1]
        assert float(metrics["label_loss"]) / math.log(K) == pytest.approx(masked_share, abs=0.03)


def test_a_given_image_drops_out_of_the_image_term():
    B = 4000
    batch = _batch(B)
    key = jax.random.key(1)
    loss = {}
    for p in (0.0, 0.6):
        obj, params = make_joint_objective(_Constant(), process=_process(), weighting="v", clean_prob=(p, 0.0))
        _, metrics = obj.loss_fn(params, batch, key)
        loss[p] = float(metrics["image_loss"])
    # the same key: the rows that are not given have the same times and noise
    assert loss[0.6] / loss[0.0] == pytest.approx(0.4, abs=0.05)


def test_the_objective_trains_a_joint_unet_and_feeds_the_joint_sampler():
    m = _unet()
    obj, params = make_joint_objective(m, process=_process(), weighting="v", clean_prob=(0.2, 0.1))
    batch = _batch(16)
    (loss, metrics), grads = jax.jit(jax.value_and_grad(obj.loss_fn, has_aux=True))(params, batch, jax.random.key(0))
    assert np.isfinite(float(loss)) and set(metrics) == {"image_loss", "label_loss", "mse_eps"}
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    obj_nelbo, _ = make_joint_objective(m, process=_process(), label_loss="nelbo")
    assert np.isfinite(float(jax.jit(obj_nelbo.loss_fn)(params, batch, jax.random.key(0))[0]))
    (x, y), _ = joint.sample(obj.model_fn(params), jax.random.key(0), ((4, 8, 8, 1), (4,)), process=obj.process,
                             steps=3)
    assert x.shape == (4, 8, 8, 1) and y.shape == (4,)


def test_bad_objective_arguments_are_named():
    m = _unet()
    with pytest.raises(ValueError, match="process"):
        make_joint_objective(m, process=discrete.masked(K))
    with pytest.raises(ValueError, match="clean_prob"):
        make_joint_objective(m, process=_process(), clean_prob=(1.0, 0.0))
    with pytest.raises(ValueError, match="label_loss"):
        make_joint_objective(m, process=_process(), label_loss="mse")
    with pytest.raises(ValueError, match="num_classes"):
        make_joint_objective(m, process=joint.product(diffjax.gaussian(schedules.cosine()), discrete.masked(3)))
