"""The text launchers end to end on a tiny text_small override: train (CLI) and resume, evaluate
(bits/char with the named estimator, token count, unigram entropy), sample text with a prompt
(CLI); a uniform-process run with the spell check; the configs."""
import json
import math
import os

import numpy as np
import pytest
from flax import nnx

from launcher_helpers import checkpoint_steps, run_cli  # puts the repository on sys.path

from diffjax.data import text as dtext  # noqa: E402
from diffjax import data as ddata, models  # noqa: E402
from experiments import common, evaluate, train  # noqa: E402
from experiments.tasks import text as text_task  # noqa: E402
from experiments.configs import text8, text_small  # noqa: E402

SEQ_LEN = 16
TINY = dict(batch_size=8, seq_len=SEQ_LEN, dim=16, depth=1, heads=2, cond_dim=8)
TINY_FLAGS = [
    f"--config.data.batch_size={TINY['batch_size']}", f"--config.data.seq_len={SEQ_LEN}",
    f"--config.model.dim={TINY['dim']}", f"--config.model.depth={TINY['depth']}",
    f"--config.model.heads={TINY['heads']}", f"--config.model.cond_dim={TINY['cond_dim']}",
    "--config.train.checkpoint_every=2", "--config.train.log_every=2",
    "--config.optim.warmup_steps=1", "--config.sample.steps=8", "--config.sample.num_samples=4",
    "--config.sample.batch_size=4", "--config.eval.examples=32", "--config.eval.batch_size=16",
    "--config.eval.num_samples=4", "--config.eval.spell_examples=16",
]


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory):
    """A masked run trained by the CLI for 4 steps, then resumed in-process to 6."""
    workdir = str(tmp_path_factory.mktemp("text"))
    first = run_cli("experiments.train", "--config=experiments/configs/text_small.py",
                    f"--workdir={workdir}", "--config.train.num_steps=4", *TINY_FLAGS)
    steps_first = checkpoint_steps(workdir)
    config = common.load_config(workdir)
    with config.unlocked():
        config.train.num_steps = 6
    summary = train.run(config, workdir)
    return dict(workdir=workdir, first=first, steps_first=steps_first, summary=summary)


def test_train_cli_checkpoints_resumes_and_writes_text(masked_run):
    workdir, summary = masked_run["workdir"], masked_run["summary"]
    assert masked_run["steps_first"] == [2, 4]
    assert "final metrics:" in masked_run["first"].stdout
    assert summary["start_step"] == 4 and summary["step"] == 6  # resumed, not restarted
    assert checkpoint_steps(workdir) == [4, 6]
    config = json.load(open(os.path.join(workdir, common.CONFIG_FILE)))
    assert config["diffusion"]["process"] == "masked" and config["data"]["seq_len"] == SEQ_LEN
    metrics = summary["train_metrics"]
    assert np.isfinite(metrics["loss"]) and metrics["bits_per_token"] == pytest.approx(
        metrics["loss"] / math.log(2), rel=1e-5)
    lines = open(os.path.join(workdir, text_task.SAMPLES_FILE)).read().splitlines()
    assert len(lines) == 4 and all(len(line) == SEQ_LEN for line in lines)
    assert all(set(line) <= set(dtext.CHARS) for line in lines)
    assert summary["sampler"]["method"] == "first_hitting"  # the masked process's default
    assert 0.0 <= summary["quality"]["word_fraction"] <= 1.0


def test_evaluate_cli_reports_bits_per_char(masked_run):
    workdir = masked_run["workdir"]
    proc = run_cli("experiments.evaluate", f"--workdir={workdir}", "--elbo_samples=2")
    m = json.load(open(os.path.join(workdir, "metrics.json")))
    lik = m["likelihood"]
    assert m["step"] == 6 and m["process"] == "masked" and "bits_per_char" in proc.stdout
    assert lik["estimator"].startswith("continuous-time ELBO") and lik["elbo_samples"] == 2
    assert m["num_tokens"] == lik["num_tokens"] == 32 * SEQ_LEN
    # A 6-step model is still close to the uniform guess log2(27) = 4.75 bits/char.
    assert 3.5 < m["bits_per_char"] < 6.0 and lik["stderr_bits_per_char"] > 0
    held_out = dtext.split_text("stdlib_text", "test")
    assert m["unigram_entropy_bits"] == pytest.approx(dtext.unigram_entropy_bits(held_out))
    assert m["unigram_cross_entropy_bits"] >= m["unigram_entropy_bits"] - 1e-9
    assert m["bits_below_unigram"] == pytest.approx(m["unigram_entropy_bits"] - m["bits_per_char"])
    assert m["sample_quality"]["num_samples"] == 4 and "spelling" not in m  # masked: no spell check
    assert len(open(os.path.join(workdir, text_task.EVAL_SAMPLES_FILE)).read().splitlines()) == 4


def test_sample_cli_writes_text_and_keeps_the_prompt(masked_run, tmp_path):
    out = tmp_path / "s.txt"
    proc = run_cli("experiments.sample", f"--workdir={masked_run['workdir']}", "--num_samples=3",
                   f"--output={out}", "--solver=confidence", "--steps=4", "--top_p=0.9",
                   "--temperature=0.8", "--prompt=the __ is")
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(len(line) == SEQ_LEN for line in lines)
    for line in lines:
        assert line[:4] == "the " and line[6:9] == " is"  # prompt kept, '_' filled in
        assert lines[0] in proc.stdout
    assert "confidence 4 steps" in proc.stdout


def test_uniform_run_spell_checks(tmp_path):
    c = text_small.get_config()
    c.diffusion.process = "uniform"
    c.data.batch_size, c.data.seq_len = TINY["batch_size"], SEQ_LEN
    for k in ("dim", "depth", "heads", "cond_dim"):
        c.model[k] = TINY[k]
    c.train.num_steps = c.train.checkpoint_every = 2
    c.optim.warmup_steps = 1
    c.sample.num_samples = c.sample.batch_size = 4
    c.sample.steps = 4
    c.eval.elbo_samples, c.eval.spell_t = 1, 0.2
    workdir = str(tmp_path / "uniform")
    summary = train.run(c, workdir)
    assert summary["sampler"]["method"] == "ancestral"  # the uniform process's default
    m = evaluate.evaluate(workdir, num_samples=0, nll_examples=16)  # dispatched to the text task
    assert m["process"] == "uniform" and m["num_tokens"] == 16 * SEQ_LEN
    assert np.isfinite(m["bits_per_char"])
    spell = m["spelling"]
    assert spell["t"] == 0.2 and spell["num_chars"] == 256 * SEQ_LEN
    # Each character is resampled with probability t and changes with probability t * 26/27.
    assert abs(spell["cer_before"] - 0.2 * 26 / 27) < 0.03
    assert 0.0 <= spell["cer_after"] <= 1.0
    assert len(spell["example"]["corrupted"]) == SEQ_LEN


@pytest.mark.parametrize("module,params", [(text_small, (2e5, 3e6)), (text8, (6e7, 1.2e8))])
def test_text_configs_build(module, params):
    c = module.get_config()
    assert c.diffusion.process in text_task.PROCESSES and c.data.name in dtext.NAMES
    info = ddata.get_dataset("stdlib_text", "test", seq_len=int(c.data.seq_len)).info
    model = nnx.eval_shape(lambda: text_task.TextTask().build_model(c, info))
    n = models.count_params(model)
    assert params[0] < n < params[1], n
    assert model.seq_len == c.data.seq_len


def test_text8_config_without_the_file_names_the_path(tmp_path):
    c = text8.get_config()
    c.data.data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="text8") as err:
        train.run(c, str(tmp_path / "run"))
    assert str(tmp_path / "text8.zip") in str(err.value)
