"""The few-step configs through the launchers on tiny overrides: train a few steps (from a
teacher's workdir where they distill), sample with --steps=K in exactly K network calls,
evaluate; a teacher workdir without a checkpoint is refused naming the config field."""
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from launcher_helpers import run_cli  # puts the repository on sys.path

from diffjax import data as ddata  # noqa: E402
from diffjax.training.objectives import FewStepObjective  # noqa: E402
from experiments import evaluate, train  # noqa: E402
from experiments.configs import (digits, digits_distill, digits_meanflow, toy,  # noqa: E402
                                 toy_consistency, toy_meanflow, toy_progressive)
from experiments.tasks import gaussian  # noqa: E402


def _tiny(c, steps):
    c.data.batch_size = 32
    c.model.hidden, c.model.depth, c.model.time_embed_dim = 16, 1, 8
    c.train.num_steps, c.train.checkpoint_every, c.train.log_every = steps, steps, steps
    c.optim.warmup_steps = 2
    c.sample.num_samples, c.sample.batch_size = 64, 64
    c.eval.num_samples, c.eval.nll_examples = 64, 0
    return c


def _count_calls(objective_cls, monkeypatch):
    calls = []
    apply = objective_cls.apply

    def counting(self, *args, **kwargs):
        calls.append(1)
        return apply(self, *args, **kwargs)

    monkeypatch.setattr(objective_cls, "apply", counting)
    return calls


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny toy teacher (10 steps), shared by the distillation tests of this module."""
    workdir = str(tmp_path_factory.mktemp("teacher") / "toy")
    train.run(_tiny(toy.get_config(), 10), workdir)
    return workdir


def test_consistency_distills_a_toy_teacher(teacher, tmp_path, monkeypatch):
    c = _tiny(toy_consistency.get_config(), 4)
    c.few_step.teacher_workdir = teacher
    workdir = str(tmp_path / "cm")
    summary = train.run(c, workdir)
    assert summary["step"] == 4 and {"sw_over_std", "support_share"} <= set(summary["quality"])
    assert np.isfinite(summary["train_metrics"]["loss"])

    task = gaussian.GaussianTask()
    objective, params, info, _ = task.restore_params(c, workdir)
    assert isinstance(objective, FewStepObjective) and objective.sampler == "consistency"
    # The student started from the teacher: after 4 small steps it is still close to it.
    t_params = task.restore_params(_tiny(toy.get_config(), 10), teacher)[1]
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                         params, t_params)
    assert max(jax.tree.leaves(diffs)) < 0.05

    for k in (1, 2):
        assert task.sample_nfe(_with_steps(c, k), objective, info) == k
        calls = _count_calls(type(objective), monkeypatch)
        with jax.disable_jit():
            x, labels, _ = task.draw(workdir, 8, steps=k)
        monkeypatch.undo()
        assert len(calls) == k and x.shape == (8, 2) and labels is None
    metrics = evaluate.evaluate(workdir, num_samples=64, steps=2)
    assert metrics["sampler"]["steps"] == 2 and "likelihood" not in metrics
    assert {"sw_over_std", "support_share"} <= set(metrics["sample_quality"])


def test_progressive_distills_a_toy_teacher(teacher, tmp_path):
    task = gaussian.GaussianTask()
    c = _tiny(toy_progressive.get_config(), 4)
    c.few_step.teacher_workdir, c.few_step.student_steps = teacher, 4
    workdir = str(tmp_path / "pd")
    summary = train.run(c, workdir)
    assert summary["step"] == 4 and c.sample.steps == 4  # the sampler follows student_steps
    objective, _, info, _ = task.restore_params(c, workdir)
    assert task.sample_nfe(c, objective, info) == 4


def _with_steps(c, k):
    c = c.copy_and_resolve_references()
    c.sample.steps = k
    return c


def test_meanflow_cli_trains_and_samples_in_k_calls(tmp_path, monkeypatch):
    workdir = str(tmp_path / "mf")
    run_cli("experiments.train", "--config=experiments/configs/toy_meanflow.py",
            f"--workdir={workdir}", "--config.data.batch_size=32", "--config.model.hidden=16",
            "--config.model.depth=1", "--config.model.time_embed_dim=8",
            "--config.train.num_steps=10", "--config.train.checkpoint_every=10",
            "--config.train.log_every=5", "--config.optim.warmup_steps=2",
            "--config.sample.num_samples=64", "--config.sample.batch_size=64")
    summary = json.load(open(os.path.join(workdir, "train_summary.json")))
    assert summary["step"] == 10 and np.isfinite(summary["train_metrics"]["loss"])
    out = tmp_path / "s.npy"
    run_cli("experiments.sample", f"--workdir={workdir}", "--num_samples=50", f"--output={out}",
            "--steps=3")
    x = np.load(out)
    assert x.shape == (50, 2) and x.dtype == np.float32 and np.all(np.isfinite(x))

    task = gaussian.GaussianTask()
    objective = task.restore_params(gaussian.common.load_config(workdir), workdir)[0]
    calls = _count_calls(type(objective), monkeypatch)
    with jax.disable_jit():
        task.draw(workdir, 8, steps=3)
    assert len(calls) == 3


def test_missing_teacher_checkpoint_names_the_field(tmp_path):
    c = digits_distill.get_config()
    c.few_step.teacher_workdir = str(tmp_path / "nothing")
    with pytest.raises(ValueError, match="few_step.teacher_workdir"):
        train.run(c, str(tmp_path / "run"))
    # A workdir with a config but no checkpoint.
    os.makedirs(tmp_path / "empty")
    gaussian.common.save_config(digits.get_config(), str(tmp_path / "empty"))
    c.few_step.teacher_workdir = str(tmp_path / "empty")
    with pytest.raises(ValueError, match="few_step.teacher_workdir=.*no checkpoint"):
        train.run(c, str(tmp_path / "run2"))


@pytest.mark.parametrize("module,sampler", [
    (toy_meanflow, "meanflow"), (toy_consistency, "consistency"),
    (toy_progressive, "progressive"), (digits_meanflow, "meanflow"),
    (digits_distill, "consistency")])
def test_few_step_configs_build(module, sampler):
    c = module.get_config()
    assert c.sample.solver == sampler and c.eval.nll_examples == 0
    name = "checkerboard" if c.data.name == "checkerboard" else "digits"
    info = ddata.get_dataset(name).info
    task = gaussian.GaussianTask()
    model = nnx.eval_shape(lambda: task.build_model(c, info))
    objective, _ = task.build_objective(c, model)  # the teacher is not touched here
    assert isinstance(objective, FewStepObjective) and objective.sampler == sampler
    assert bool(c.model.get("second_time", False)) == (sampler == "meanflow")
    if sampler != "meanflow":  # distillation keeps the teacher's model and schedule
        base = toy.get_config() if name == "checkerboard" else digits.get_config()
        assert c.model.to_dict() == base.model.to_dict()
        assert c.diffusion.schedule == base.diffusion.schedule
