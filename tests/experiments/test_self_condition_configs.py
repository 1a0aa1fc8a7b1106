"""``config.model.self_condition`` reaches the model, the objective and the samplers of the
digits (U-Net) and text (TokenTransformer) tasks, survives the saved config, and is refused
where it has no meaning. (The CLI chain train -> sample -> evaluate with the flag is the same
code path as without it; these tests check the switch in-process on tiny models.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax
from diffjax import data as ddata
from diffjax import discrete
from launcher_helpers import REPO  # noqa: F401  (puts the repository on sys.path)

from experiments import common  # noqa: E402
from experiments.configs import digits, text_small  # noqa: E402
from experiments.tasks import gaussian  # noqa: E402
from experiments.tasks import text as text_task  # noqa: E402


def _perturb(params, scale=0.1):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype)
                                     for p, k in zip(leaves, keys)])


def _tiny_digits(**model):
    c = digits.get_config()
    c.model.ch, c.model.ch_mult = 8, (1,)
    c.sample.solver, c.sample.steps = "euler", 2
    for k, v in model.items():
        setattr(c.model, k, v)
    return c


def test_digits_config_switch_reaches_model_objective_and_sampler(tmp_path):
    assert digits.get_config().model.self_condition is False  # off by default
    c = _tiny_digits(self_condition=True)
    common.save_config(c, str(tmp_path))
    c = common.load_config(str(tmp_path))  # as experiments.sample / evaluate read it
    assert c.model.self_condition is True
    task, info = gaussian.GaussianTask(), ddata.get_dataset("digits").info
    model = task.build_model(c, info)
    assert model.self_condition and model.conv_in.in_features == 2
    objective, params = task.build_objective(c, model)
    assert objective.self_condition
    params = _perturb(params)
    kw = gaussian._config_sampler_kwargs(objective, c)
    shape = (2,) + tuple(info.shape)
    x, _ = jax.jit(lambda p: gaussian.draw_batch(objective, p, jax.random.key(1), shape, kw))(params)
    # the sampler carries the estimate: draw_batch is diffjax.sample(..., self_condition=True) ...
    ref, _ = jax.jit(lambda p: diffjax.sample(objective.self_cond_model_fn(p), jax.random.key(1), shape,
                                              self_condition=True, **kw))(params)
    np.testing.assert_allclose(np.asarray(x), np.asarray(ref), rtol=1e-5, atol=1e-5)
    # ... not the two-pass network of (x, t) without a carry
    two_pass, _ = jax.jit(lambda p: diffjax.sample(objective.model_fn(p), jax.random.key(1), shape, **kw))(params)
    assert not np.allclose(np.asarray(x), np.asarray(two_pass), atol=1e-4)


def test_gaussian_config_refuses_self_condition_without_meaning():
    task, info = gaussian.GaussianTask(), ddata.get_dataset("digits").info
    c = _tiny_digits(self_condition=True)
    c.model.name, c.model.patch_size, c.model.dim, c.model.depth, c.model.heads = "dit", 2, 8, 1, 2
    with pytest.raises(ValueError, match="model.self_condition=True needs model.name 'mlp' or 'unet'"):
        task.build_model(c, info)
    c = _tiny_digits(self_condition=True)
    c.diffusion.loss = "meanflow"
    c.model.second_time = True
    with pytest.raises(ValueError, match="model.self_condition=True is for the diffusion losses"):
        task.build_objective(c, task.build_model(c, info))
    # an old workdir's config without the field: off
    c = _tiny_digits()
    del c.model["self_condition"]
    assert not task.build_model(c, info).self_condition


def _tiny_text(**diffusion):
    c = text_small.get_config()
    c.data.seq_len = 8
    c.model.dim, c.model.depth, c.model.heads, c.model.cond_dim = 16, 1, 2, 8
    c.model.self_condition = True
    c.sample.steps = 4
    for k, v in diffusion.items():
        setattr(c.diffusion, k, v)
    return c


@pytest.mark.parametrize("process", ["masked", "uniform"])
def test_text_config_switch_reaches_model_objective_and_sampler(process):
    assert text_small.get_config().model.self_condition is False
    c = _tiny_text(process=process)
    task = text_task.TextTask()
    info = ddata.get_dataset("stdlib_text", "test", seq_len=8).info
    model = task.build_model(c, info)
    assert model.self_condition and model.self_cond_proj is not None
    objective, params = task.build_objective(c, model)
    assert objective.self_condition
    params = _perturb(params, scale=0.3)
    fn, (x_init,) = task.sample_fn(c, objective, info, 3)
    x = jax.jit(fn)(params, jax.random.key(2), x_init)
    settings = text_task._sample_settings(c, objective)
    ref, _ = jax.jit(lambda p: discrete.sample(objective.self_cond_model_fn(p), jax.random.key(2), (3, 8),
                                               process=objective.process, x_init=jnp.asarray(x_init),
                                               self_condition=True, **settings))(params)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(ref))
    tokens, nfes = text_task.generate(objective, params, jax.random.key(3), 2, 8, method=settings["method"],
                                      steps=4, batch_size=2)
    assert tokens.shape == (2, 8) and nfes == [4] and np.all(np.asarray(tokens) < objective.vocab_size)


def test_text_config_refuses_self_condition_with_the_fixed_order():
    c = _tiny_text(order="left_to_right")
    info = ddata.get_dataset("stdlib_text", "test", seq_len=8).info
    with pytest.raises(ValueError, match="model.self_condition=True is not available with diffusion.order"):
        text_task.TextTask().build_model(c, info)
