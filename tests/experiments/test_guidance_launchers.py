"""Class-conditional digits through the launchers on a tiny override: train, sample with
--class/--guidance (CLI) in the original range, one compilation for every class and guidance
scale, the exact unconditional limit at guidance 0, inpainting that keeps the known pixels, the
guidance evaluation, and the conditional configs."""
import json
import os
import types

import jax
import numpy as np
import pytest
from flax import nnx

from launcher_helpers import run_cli  # puts the repository on sys.path

from diffjax import data as ddata, models  # noqa: E402
from diffjax.data import digits as ddigits  # noqa: E402
from experiments import common, guidance_eval, train  # noqa: E402
from experiments.tasks import gaussian  # noqa: E402
from experiments.configs import cifar10_cond, digits_cond  # noqa: E402


def _tiny_config():
    """digits_cond with a tiny conditional MLP instead of the U-Net (whose construction is
    covered by test_conditional_configs_build): the point is the launchers' conditional path."""
    c = digits_cond.get_config()
    c.model.name, c.model.hidden, c.model.depth, c.model.time_embed_dim = "mlp", 16, 1, 8
    c.data.batch_size = 16
    c.optim.warmup_steps = 1
    c.train.num_steps, c.train.checkpoint_every, c.train.log_every = 3, 3, 3
    c.sample.num_samples, c.sample.batch_size, c.sample.steps = 20, 20, 3
    c.guidance_eval.samples_per_class, c.guidance_eval.inpaint_examples = 2, 8
    c.guidance_eval.inpaint_steps = 3
    return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("digits_cond"))
    summary = train.run(_tiny_config(), workdir)
    config = common.load_config(workdir)
    objective, params, info, step = gaussian.GaussianTask().restore_params(config, workdir)
    return types.SimpleNamespace(workdir=workdir, summary=summary, config=config,
                                 objective=objective, params=params, info=info, step=step)


def test_conditional_run_trains_with_condition_dropout(run):
    assert run.summary["step"] == 3 and run.step == 3
    assert run.objective.conditional and run.objective.num_classes == 10
    assert run.objective.null_class == 10 and 0.1 <= run.objective.cond_drop <= 0.2
    assert 0 < run.summary["quality"]["num_samples"] == 20


def test_sample_cli_with_class_and_guidance_writes_levels(run, tmp_path):
    out = tmp_path / "s.npy"
    run_cli("experiments.sample", f"--workdir={run.workdir}", "--class=7", "--guidance=3",
            "--num_samples=12", "--steps=3", f"--output={out}")
    x, labels = np.load(out), np.load(tmp_path / "s_labels.npy")
    assert x.shape == (12, 8, 8, 1) and x.dtype == np.uint8 and 0 <= x.min() and x.max() <= 16
    assert np.all(labels == 7)
    # the CLI path is GaussianTask.draw: the same draw in-process gives the same levels
    levels, _, _ = gaussian.GaussianTask().draw(run.workdir, 12, steps=3, guidance_scale=3.0, class_label=7)
    np.testing.assert_array_equal(levels, x)


def test_class_validation():
    with pytest.raises(ValueError, match="class must be"):
        gaussian.class_labels(types.SimpleNamespace(conditional=True, num_classes=10), 10, 4)
    with pytest.raises(ValueError, match="not class-conditional"):
        gaussian.class_labels(types.SimpleNamespace(conditional=False, num_classes=None), 1, 4)
    np.testing.assert_array_equal(
        gaussian.class_labels(types.SimpleNamespace(conditional=True, num_classes=10), 3, 4), 3)


def _perturbed(params, seed=0, scale=0.3):
    """The run's parameters plus noise: a network far from its zero-initialised output head,
    whose classes make a visible difference after only 3 training steps."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype)
                                     for p, k in zip(leaves, keys)])


def test_guidance_scales_and_classes_share_one_compilation(run):
    sampler = gaussian.GuidedSampler(run.objective, run.info.shape, solver="ddim", steps=3,
                                          batch_size=8)
    key = jax.random.key(0)
    params = _perturbed(run.params)
    labels = np.arange(10) % 10  # 10 labels, chunks of 8: padding and fold_in per chunk
    draws = {w: sampler(params, key, labels, w) for w in (0.0, 1.0, 3.0, 16.0)}
    draws["other classes"] = sampler(params, key, (labels + 5) % 10, 3.0)
    assert sampler.traces == 1
    # guidance 0 is the unconditional (null-class) model: the requested class is ignored...
    np.testing.assert_allclose(sampler(params, key, (labels + 5) % 10, 0.0), draws[0.0],
                               atol=1e-6)
    assert sampler.traces == 1
    # ...while at guidance 1 and 3 it matters
    assert np.abs(draws["other classes"] - draws[3.0]).max() > 1e-2
    assert np.abs(draws[1.0] - draws[0.0]).max() > 1e-2
    # the same draws as the launchers' own sampler (gaussian.generate) at the same scale
    ref = gaussian.generate(run.objective, params, key, 10, run.info.shape, solver="ddim", steps=3,
                          batch_size=8, labels=labels, guidance_scale=3.0)
    np.testing.assert_allclose(draws[3.0], ref, atol=1e-5)


def test_inpainting_keeps_the_known_top_half_exactly(run):
    metrics, arrays = guidance_eval.inpaint_heldout(run.objective, run.params, run.info, run.config,
                                                    jax.random.key(1), num=12, steps=3)
    real, labels = ddigits.load("test")  # independent of the dataset pipeline
    real, labels = real[:12], labels[:12]
    mask = np.broadcast_to(arrays["mask"], real.shape)
    assert mask[:, :4].all() and not mask[:, 4:].any()
    np.testing.assert_array_equal(arrays["real"], real)
    np.testing.assert_array_equal(arrays["inpainted"][mask], real[mask])
    np.testing.assert_array_equal(arrays["label"], labels)
    assert arrays["inpainted"].dtype == np.uint8 and arrays["inpainted"].max() <= 16
    assert np.any(arrays["inpainted"][~mask] != real[~mask])  # the bottom half is generated
    assert metrics["known_pixels_exact"] is True and metrics["num_examples"] == 12
    # the SVC trained on the real training digits recognises the real held-out ones
    assert metrics["accuracy_real"] >= 11 / 12


def test_guidance_evaluation_writes_rates(run):
    out = guidance_eval.evaluate_guidance(run.workdir, steps=3)
    written = json.load(open(os.path.join(run.workdir, guidance_eval.METRICS_FILE)))
    assert set(written["guidance"]) == {"0", "1", "3"} and written["step"] == 3
    assert out["sampler_traces"] == 1  # three scales, one compilation
    for g in written["guidance"].values():
        assert g["num_samples"] == 20 and len(g["per_class"]) == 10
        assert np.isclose(g["class_match"], np.mean(g["per_class"]))
    inp = written["inpainting"]
    assert inp["known_pixels_exact"] and inp["num_examples"] == 8
    assert 0 <= inp["accuracy_inpainted"] <= 1 and inp["accuracy_real"] >= 7 / 8


@pytest.mark.parametrize("module,params", [(digits_cond, (1e5, 1e7)), (cifar10_cond, (3e7, 4e7))])
def test_conditional_configs_build(module, params):
    c = module.get_config()
    assert c.model.class_conditional and 0.1 <= c.diffusion.cond_drop <= 0.2
    info = ddata.get_dataset("digits").info
    if c.data.name == "cifar10":
        spec = ddata.tfds.DATASETS["cifar10"]
        info = info.__class__(**{**info.__dict__, "name": "cifar10", "shape": spec.shape,
                                 "num_classes": spec.num_classes})
    model = nnx.eval_shape(lambda: gaussian.GaussianTask().build_model(c, info))
    assert model.num_classes == 10 and model.null_class == 10
    assert params[0] < models.count_params(model) < params[1]
