"""The accelerator-sized configs (DiT-B/2, L/2, XL/2 on ImageNet latents; GPT-2-sized text8
masked diffusion): they load through the launcher's flags, their parameter counts (from shapes
only, nothing allocated) match the published sizes, and without data a launch stops at once
with the not-prepared message. A tiny DiT override trains, checkpoints and samples end to end
on a synthetic latents folder."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags
from flax import nnx

from launcher_helpers import REPO, checkpoint_steps, cli_env, run_cli  # puts REPO on sys.path

from diffjax import data as ddata, models  # noqa: E402
from diffjax.data import latents  # noqa: E402
from experiments import common, tasks, train  # noqa: E402

LATENTS = "imagenet256_latents"
# config file -> (published parameter count, relative tolerance)
CONFIGS = {
    "dit_b2": (130e6, 0.02), "dit_l2": (458e6, 0.02), "dit_xl2": (675e6, 0.02),
    "text_gpt2_small": (124e6, 0.10), "text_gpt2_medium": (350e6, 0.10),
}


def _path(name):
    return os.path.join(REPO, "experiments", "configs", f"{name}.py")


def load_config(name, *overrides):
    """The config exactly as ``python -m experiments.train --config=... [overrides]`` sees it
    (the launcher's own flags; ``config_flags`` reads the overrides from ``sys.argv``)."""
    argv = ["experiments.train", f"--config={_path(name)}", *overrides]
    saved, sys.argv = sys.argv, argv
    try:
        flag_values = flags.FlagValues()
        train.define_flags(flag_values)
        flag_values(argv)
        return flag_values.config
    finally:
        sys.argv = saved


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A few synthetic latents and a small text8 file (enough for every split at 1024)."""
    root = tmp_path_factory.mktemp("large_data")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((16, 32, 32, 4)).astype(np.float32) / 0.18215
    latents.write_latents(root, LATENTS, "train", z, rng.integers(0, 1000, 16))
    letters = np.frombuffer(b" abcdefghijklmnopqrstuvwxyz", np.uint8)
    (root / "text8").write_bytes(letters[rng.integers(0, 27, 24_000)].tobytes())
    return root


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_loads_and_has_the_published_size(name, data_dir):
    published, rtol = CONFIGS[name]
    config = load_config(name, f"--config.data.data_dir={data_dir}")
    task = tasks.get(config)
    assert config.model.dtype == "bfloat16" and config.train.mesh == ""
    info = task.build_dataset(config, "train").info
    model = nnx.eval_shape(lambda: task.build_model(config, info))  # shapes only
    n = models.count_params(model)
    print(f"{name}: {n} parameters ({n / 1e6:.1f}M; published {published / 1e6:.0f}M)")
    assert abs(n - published) <= rtol * published, n
    if name.startswith("dit"):
        assert info.shape == (32, 32, 4) and info.num_classes == 1000
        assert config.data.batch_size == 256 and config.diffusion.cond_drop == 0.1
        assert config.sample.solver == "dpmpp_2m" and config.sample.steps == 50
        assert config.sample.guidance_scale == 1.5 and config.sample.batch_size == 32
        assert config.optim.learning_rate == 1e-4 and config.optim.weight_decay == 0.0
        assert config.train.ema_decay == 0.9999 and model.num_classes == 1000
    else:
        assert info.shape == (1024,) and info.vocab_size == 27 and model.seq_len == 1024
        assert config.diffusion.process == "masked"


def _expected_error(name, empty):
    if name.startswith("dit"):
        return ddata.DatasetNotPreparedError, str(empty / LATENTS / "info.json")
    return FileNotFoundError, str(empty / "text8.zip")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_without_data_the_dataset_says_how_to_prepare(name, tmp_path):
    empty = tmp_path / "empty"
    config = load_config(name, f"--config.data.data_dir={empty}")
    error, path = _expected_error(name, empty)
    with pytest.raises(error) as err:
        tasks.get(config).build_dataset(config, "train")
    assert path in str(err.value)
    if name.startswith("dit"):
        assert "diffjax.data.latents.write_latents(" in str(err.value)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_launch_without_data_fails_fast_with_the_message(name, tmp_path):
    empty = tmp_path / "empty"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", f"--config={_path(name)}",
         f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={empty}"],
        cwd=REPO, env=cli_env(1), capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    error, path = _expected_error(name, empty)
    assert proc.returncode != 0 and seconds < 60, (seconds, proc.stderr[-3000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert error.__name__ in proc.stderr and path in proc.stderr, proc.stderr[-3000:]
    # It stops while building the dataset, before anything is compiled or run by JAX.
    assert "jax/_src" not in proc.stderr and "XlaRuntimeError" not in proc.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
    if name.startswith("dit"):
        assert "write_latents(" in proc.stderr
    else:
        assert last.startswith("FileNotFoundError: text8 not found")


def test_tiny_dit_trains_checkpoints_and_samples(data_dir, tmp_path):
    workdir = tmp_path / "dit"
    proc = run_cli(
        "experiments.train", f"--config={_path('dit_b2')}", f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}", "--config.data.prefetch=0",
        "--config.model.dim=32", "--config.model.depth=1", "--config.model.heads=2",
        "--config.model.dtype=float32",  # bfloat16 compiles slower on CPU; shapes are the point
        "--config.data.batch_size=8", "--config.train.num_steps=2",
        "--config.train.checkpoint_every=2", "--config.train.log_every=1",
        "--config.optim.warmup_steps=1", "--config.sample.num_samples=4",
        "--config.sample.batch_size=4", "--config.sample.steps=2", timeout=240)
    assert "final metrics:" in proc.stdout
    assert checkpoint_steps(workdir) == [2]
    summary = json.loads((workdir / "train_summary.json").read_text())
    assert summary["step"] == 2 and summary["dataset"] == LATENTS
    assert np.isfinite(summary["train_metrics"]["loss"])
    quality = summary["quality"]
    assert quality["num_samples"] == 4 and np.isfinite(quality["latent_std"])
    assert not (workdir / "samples.png").exists()  # latents are not drawn as images
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["name"] == "dit" and config["model"]["dim"] == 32
    # Evaluation of a latent run: sample moments, no figure (latents need the VAE).
    out = tasks.get(common.load_config(str(workdir))).evaluate(
        str(workdir), num_samples=4, nll_examples=0, steps=2)
    assert out["step"] == 2 and out["sample_quality"]["num_samples"] == 4
    assert "figure" not in out and not (workdir / "eval_samples.png").exists()
