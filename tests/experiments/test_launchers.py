"""The absl launchers end to end on tiny config overrides: train (CLI), resume, sample to .npy in
the original value range, evaluate to metrics.json; the digits path in-process; the configs."""
import glob
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from launcher_helpers import checkpoint_steps, run_cli  # puts the repository on sys.path

from diffjax import data as ddata, models  # noqa: E402
from experiments import common, evaluate, train  # noqa: E402
from experiments import metrics as experiments_metrics  # noqa: E402
from experiments.tasks import gaussian  # noqa: E402
from experiments.configs import cifar10, digits, mnist, toy  # noqa: E402

TINY_TOY = [
    "--config.data.batch_size=32", "--config.model.hidden=16", "--config.model.depth=1",
    "--config.model.time_embed_dim=8", "--config.train.checkpoint_every=10",
    "--config.train.log_every=5", "--config.optim.warmup_steps=2",
    "--config.sample.num_samples=64", "--config.sample.batch_size=64", "--config.sample.steps=4",
    "--config.eval.num_samples=64", "--config.eval.nll_examples=16",
    "--config.eval.nll_batch_size=16", "--config.eval.nll_rtol=1e-3", "--config.eval.nll_atol=1e-3",
]


def test_cli_trains_resumes_samples_and_evaluates(tmp_path):
    """One test (not a shared fixture) so that pytest-xdist never runs the CLI chain twice."""
    workdir = str(tmp_path / "toy")
    args = ("--config=experiments/configs/toy.py", f"--workdir={workdir}", *TINY_TOY)

    # 1. Train 20 steps: checkpoints at 10 and 20, config, figure, summary, TensorBoard.
    run_cli("experiments.train", *args, "--config.train.num_steps=20")
    first = json.load(open(os.path.join(workdir, "train_summary.json")))
    assert first["start_step"] == 0 and first["step"] == 20
    assert checkpoint_steps(workdir) == [10, 20]

    # 2. The same command with more steps continues from step 20, not from 0.
    second = run_cli("experiments.train", *args, "--config.train.num_steps=30")
    summary = json.load(open(os.path.join(workdir, "train_summary.json")))
    assert summary["start_step"] == 20 and summary["step"] == 30
    assert "Resuming from checkpoint step 20" in second.stderr
    assert checkpoint_steps(workdir) == [20, 30]  # keep_checkpoints=2
    data_state = json.load(open(os.path.join(workdir, common.CHECKPOINT_DIR, "30", "data",
                                             "metadata")))
    assert data_state == {"seed": 0, "epoch": 0, "position": 30}  # iterator position restored
    config = json.load(open(os.path.join(workdir, common.CONFIG_FILE)))
    assert config["train"]["num_steps"] == 30 and config["model"]["hidden"] == 16
    assert os.path.getsize(os.path.join(workdir, "samples.png")) > 1000
    assert glob.glob(os.path.join(workdir, common.TENSORBOARD_DIR, "events.out.tfevents.*"))
    quality = summary["quality"]
    assert quality["num_samples"] == 64 and np.isfinite(quality["sw_over_std"])
    assert "final metrics:" in second.stdout

    # 3. Samples in the original range: raw float32 coordinates, and their scatter plot.
    out = tmp_path / "s.npy"
    sampled = run_cli("experiments.sample", f"--workdir={workdir}", "--num_samples=50",
                      f"--output={out}", "--solver=euler", "--steps=3", "--seed=1")
    x = np.load(out)
    assert x.shape == (50, 2) and x.dtype == np.float32 and np.all(np.isfinite(x))
    assert x.std() > 0.1  # not collapsed to the (zero) initial output
    png = tmp_path / "s.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert f"wrote {png}" in sampled.stdout

    # 4. metrics.json with likelihood and sample quality.
    evaluated = run_cli("experiments.evaluate", f"--workdir={workdir}")
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert metrics["step"] == 30 and metrics["dataset"] == "checkerboard"
    quality = metrics["sample_quality"]
    assert {"sliced_wasserstein", "sw_over_std", "data_std", "support_share"} <= set(quality)
    assert quality["num_samples"] == 64
    # W1's noise floor: two independent sets of 64 exact samples (metrics' own tests check it).
    assert (quality["sw_over_std_floor"], quality["sw_over_std_floor_std"]) == \
        pytest.approx(experiments_metrics.sliced_wasserstein_floor("checkerboard", 64))
    assert f"{100 * quality['support_share']:.1f}% of the samples on the squares" in evaluated.stdout
    assert f"noise floor {quality['sw_over_std_floor']:.4f}" in evaluated.stdout
    lik = metrics["likelihood"]
    assert lik["num_examples"] == 16 and lik["dim"] == 2 and lik["num_bins"] is None
    assert np.isfinite(metrics["bits_per_dim"])
    np.testing.assert_allclose(metrics["bits_per_dim"], lik["nll_nats"] / (2 * np.log(2)), rtol=1e-9)
    assert os.path.getsize(os.path.join(workdir, "eval_samples.png")) > 1000


def _tiny_digits():
    """The digits config with a tiny MLP instead of the U-Net (whose construction is covered by
    test_configs_build): the point is the launcher's data path, value ranges and metrics."""
    c = digits.get_config()
    c.model.name, c.model.hidden, c.model.depth, c.model.time_embed_dim = "mlp", 16, 1, 8
    c.data.batch_size = 16
    c.train.num_steps, c.train.checkpoint_every, c.train.log_every = 3, 3, 3
    c.sample.num_samples, c.sample.batch_size, c.sample.steps = 20, 20, 3
    c.eval.nll_batch_size, c.eval.nll_rtol, c.eval.nll_atol = 8, 1e-3, 1e-3
    return c


def test_digits_train_sample_evaluate_in_process(tmp_path):
    workdir = str(tmp_path / "digits")
    summary = train.run(_tiny_digits(), workdir)
    assert summary["step"] == 3 and summary["start_step"] == 0
    assert {"confidence_ratio", "class_entropy", "confident_share"} <= set(summary["quality"])

    levels, labels, step = gaussian.GaussianTask().draw(workdir, 12, solver="ddim", steps=3)
    assert step == 3 and labels is None
    assert levels.shape == (12, 8, 8, 1) and levels.dtype == np.uint8
    assert levels.min() >= 0 and levels.max() <= 16
    grid = gaussian.GaussianTask().sample_figure(
        levels, str(tmp_path / "d.png"), info=ddata.get_dataset("digits").info,
        config=common.load_config(workdir), step=step)  # what experiments.sample writes
    assert grid == str(tmp_path / "d.png") and os.path.getsize(grid) > 1000

    metrics = evaluate.evaluate(workdir, num_samples=30, nll_examples=8)
    lik = metrics["likelihood"]
    assert lik["num_bins"] == 17 and lik["dequantized"] and lik["dim"] == 64
    # The discrete bound adds log2(17 / 2) bits per dimension to the continuous NLL.
    np.testing.assert_allclose(lik["bits_per_dim"],
                               lik["nll_nats"] / (64 * np.log(2)) + np.log2(17 / 2), rtol=1e-9)
    assert 0 <= metrics["sample_quality"]["class_entropy"] <= np.log(10) + 1e-9
    assert os.path.isfile(os.path.join(workdir, "metrics.json"))


@pytest.mark.parametrize("module,params", [(toy, (1e3, 1e6)), (digits, (1e4, 1e7)),
                                           (mnist, (1e6, 2e7)), (cifar10, (3e7, 4e7))])
def test_configs_build(module, params):
    c = module.get_config()
    info = ddata.get_dataset("checkerboard" if c.data.name == "checkerboard" else "digits").info
    if c.data.name in ("mnist", "cifar10"):
        spec = ddata.tfds.DATASETS[c.data.name]
        info = info.__class__(**{**info.__dict__, "name": c.data.name, "shape": spec.shape,
                                 "num_classes": spec.num_classes})
    model = nnx.eval_shape(lambda: gaussian.GaussianTask().build_model(c, info))
    n = models.count_params(model)
    assert params[0] < n < params[1], n
    gaussian.build_schedule(c)
    assert c.train.num_steps >= 1 and c.sample.solver


def test_tfds_config_without_data_says_how_to_prepare(tmp_path):
    c = cifar10.get_config()
    c.data.data_dir = str(tmp_path)
    with pytest.raises(ddata.tfds.DatasetNotPreparedError, match="cifar10") as err:
        train.run(c, str(tmp_path / "run"))
    assert str(tmp_path) in str(err.value) and "tfds build cifar10" in str(err.value)
