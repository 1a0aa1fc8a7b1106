"""The text task as an autoregressive model: ``--config.diffusion.order=left_to_right`` trains a
causal Transformer on the exact likelihood of the fixed-order masked process, ``evaluate`` writes
its exact bits/char (checked against the one-call-per-position computation), and a random-order
model can be scored under the fixed order (``--order=left_to_right``)."""
import json
import math
import os
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from launcher_helpers import run_cli  # puts the repository on sys.path

from diffjax.data import text as dtext  # noqa: E402
from experiments import common, train  # noqa: E402
from experiments.configs import text_small  # noqa: E402
from experiments.tasks import text as text_task  # noqa: E402
from test_text_launchers import SEQ_LEN, TINY_FLAGS  # noqa: E402

TASK = text_task.TextTask()


@pytest.fixture(scope="module")
def ar_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("text_ar"))
    run_cli("experiments.train", "--config=experiments/configs/text_small.py", f"--workdir={workdir}",
            "--config.diffusion.order=left_to_right", "--config.train.num_steps=4", *TINY_FLAGS)
    return workdir


def test_the_order_switch_trains_a_causal_model_sampled_left_to_right(ar_run):
    config = common.load_config(ar_run)
    assert config.diffusion.order == "left_to_right"
    objective, params, info, step = TASK.restore_params(config, ar_run)
    assert step == 4 and objective.causal and objective.process.fixed_order
    assert text_task.default_method(objective) == "left_to_right"
    texts, _, settings = TASK.draw(ar_run, 3, steps=SEQ_LEN)  # one token per step
    assert settings["method"] == "left_to_right" and settings["nfe_per_batch"] == [SEQ_LEN]
    assert len(texts) == 3 and all(len(t) == SEQ_LEN for t in texts)
    with pytest.raises(ValueError, match=f"steps={SEQ_LEN - 1}: .* >= the sequence length {SEQ_LEN}"):
        TASK.draw(ar_run, 3, steps=SEQ_LEN - 1)  # several tokens per call: masked predecessors


def test_evaluate_writes_the_exact_bits_per_char(ar_run):
    out = TASK.evaluate(ar_run, num_samples=2, elbo_samples=3)
    m = json.load(open(os.path.join(ar_run, text_task.METRICS_FILE)))
    assert m["bits_per_char"] == out["bits_per_char"] and m["order"] == "left_to_right"
    assert m["likelihood"]["estimator"].startswith("exact fixed-order") and "unigram_entropy_bits" in m
    # the one-pass score equals the per-position one (one model call per state), and no Monte Carlo
    config = common.load_config(ar_run)
    objective, params, _, _ = TASK.restore_params(config, ar_run)
    tokens = TASK.build_dataset(config, "test").as_arrays(int(config.eval.examples))["x"]
    per_state = jax.jit(lambda p, x: objective.process.nll(objective.model_fn(p), x))(params, tokens)
    bits = float(np.mean(np.asarray(per_state, np.float64))) / (SEQ_LEN * math.log(2))
    assert m["bits_per_char"] == pytest.approx(bits, rel=1e-5)
    assert TASK.evaluate(ar_run, num_samples=0, seed=7)["bits_per_char"] == pytest.approx(bits, rel=1e-5)
    with pytest.raises(ValueError, match="causal"):
        TASK.evaluate(ar_run, num_samples=0, order="random")


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    """A random-order masked run trained in-process for 2 steps."""
    workdir = str(tmp_path_factory.mktemp("text_random"))
    config = text_small.get_config()
    with config.unlocked():
        config.data.batch_size, config.data.seq_len = 8, SEQ_LEN
        config.model.update(dim=16, depth=1, heads=2, cond_dim=8)
        config.train.update(num_steps=2, checkpoint_every=2, log_every=2)
        config.optim.warmup_steps = 1
        config.sample.update(steps=8, num_samples=2, batch_size=2)
        config.eval.update(examples=16, batch_size=16, num_samples=0)
    train.run(config, workdir)
    return workdir


def test_a_random_order_model_is_scored_under_the_fixed_order(random_run):
    exact = TASK.evaluate(random_run, order="left_to_right")
    assert exact["order"] == "random"  # the run's own order; bits/char scored under the fixed one
    assert exact["likelihood"]["estimator"].startswith("exact fixed-order")
    assert f"{SEQ_LEN} model calls" in exact["likelihood"]["estimator"]
    assert 3.0 < exact["bits_per_char"] < 6.0  # near log2(27) = 4.75 after two steps


def test_remasking_samples_are_judged_by_the_autoregressive_run(random_run, ar_run, tmp_path):
    output = str(tmp_path / "remdm.txt")
    flags = SimpleNamespace(workdir=random_run, output=output, num_samples=6, solver="remdm", steps=24, seed=0,
                            temperature=None, top_p=None, prompt="", batch_size=None, confidence_temperature=None,
                            remask_schedule="rescale", remask_eta=0.5, judge=ar_run)
    TASK.sample_main(flags)
    report = json.load(open(str(tmp_path / "remdm.json")))
    texts = open(output).read().splitlines()
    assert report["sampler"]["method"] == "remdm" and report["sampler"]["remask_eta"] == 0.5
    assert report["sampler"]["remask_schedule"] == "rescale" and set(report["sampler"]["nfe_per_batch"]) == {24}
    # generative perplexity: 2 ** the judge's exact bits/char of the written samples
    config = common.load_config(ar_run)
    judge, params, info, _ = TASK.restore_params(config, ar_run)
    tokens = np.asarray([[dtext.CHARS.index(c) for c in line] for line in texts], np.int32)
    nll = jax.jit(lambda p, x: judge.process.nll(judge.model_fn(p), x))(params, tokens)
    bits = float(np.mean(np.asarray(nll, np.float64))) / (SEQ_LEN * math.log(2))
    assert report["generative_perplexity"] == pytest.approx(2.0**bits, rel=1e-4)
    counts = np.unique(list("".join(texts)), return_counts=True)[1] / (6 * SEQ_LEN)
    assert report["unigram_entropy_bits"] == pytest.approx(float(-(counts * np.log2(counts)).sum()))
    assert 0.0 <= report["word_fraction"] <= 1.0 and report["judge"] == os.path.abspath(ar_run)
    with pytest.raises(ValueError, match="judge"):
        TASK.judge_samples(common.load_config(random_run), texts, tokens, random_run)


def test_the_uniform_process_has_no_order():
    config = text_small.get_config()
    with config.unlocked():
        config.diffusion.process, config.diffusion.order = "uniform", "left_to_right"
    with pytest.raises(ValueError, match="diffusion.order"):
        text_task.build_process(config, 27)
