"""The joint task end to end on a tiny override of configs/digits_joint.py: train in-process, the
sample CLI's FILE.npy + FILE.labels.npy, a label-clamped draw, and evaluate's three accuracies."""
import json
import os

import numpy as np
import pytest
from flax import nnx

from launcher_helpers import run_cli  # puts the repository on sys.path

from diffjax import data as ddata, models  # noqa: E402
from experiments import evaluate, train  # noqa: E402
from experiments.configs import digits_joint  # noqa: E402
from experiments.tasks import joint as joint_task  # noqa: E402


def _tiny():
    c = digits_joint.get_config()
    c.model.ch = 8
    c.data.batch_size = 16
    c.train.num_steps, c.train.checkpoint_every, c.train.log_every, c.train.steps_per_call = 4, 4, 2, 2
    c.optim.warmup_steps = 2
    c.sample.num_samples, c.sample.batch_size, c.sample.steps = 20, 20, 3
    c.eval.num_samples, c.eval.samples_per_class, c.eval.classify_examples = 20, 2, 30
    return c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("digits_joint"))
    summary = train.run(_tiny(), workdir)
    assert summary["step"] == 4
    q = summary["quality"]
    assert q["num_samples"] == 20 and 0.0 <= q["joint_agreement"] <= 1.0
    assert os.path.getsize(os.path.join(workdir, "samples.png")) > 1000
    return workdir


def test_sample_cli_writes_images_and_labels(workdir, tmp_path):
    out = str(tmp_path / "pairs.npy")
    run_cli("experiments.sample", f"--workdir={workdir}", "--num_samples=7", f"--output={out}", "--steps=2",
            timeout=900)
    images, labels = np.load(out), np.load(str(tmp_path / "pairs.labels.npy"))
    assert images.shape == (7, 8, 8, 1) and images.dtype == np.uint8 and images.max() <= 16
    assert labels.shape == (7,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() <= 9
    assert os.path.isfile(str(tmp_path / "pairs.png"))


def test_a_clamped_label_is_every_label(workdir):
    levels, labels, step, _, _ = joint_task.JointTask().draw(workdir, 5, steps=2, class_label=3, guidance_scale=2.0)
    assert step == 4 and levels.shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(labels, 3)
    with pytest.raises(ValueError, match="class"):
        joint_task.JointTask().draw(workdir, 5, steps=2, class_label=10)


def test_evaluate_reports_the_three_accuracies(workdir):
    out = evaluate.evaluate(workdir, steps=2)
    written = json.load(open(os.path.join(workdir, "metrics.json")))
    for name in ("joint_agreement", "classification_accuracy", "conditional_accuracy"):
        assert 0.0 <= written[name] <= 1.0 and written[name] == out[name]
    assert written["classification"]["num_examples"] == 30
    assert written["joint"]["num_samples"] == 20
    assert written["conditional"]["samples_per_class"] == 2
    assert set(written["conditional"]["by_scale"]) == {"1", "2"}
    assert os.path.isfile(os.path.join(workdir, "eval_conditional.png"))


def test_the_config_builds_the_joint_unet():
    c = digits_joint.get_config()
    task = joint_task.JointTask()
    info = ddata.get_dataset("digits").info
    model = nnx.eval_shape(lambda: task.build_model(c, info))  # shapes only: nothing allocated
    assert isinstance(model, models.JointUNet) and 6e5 < models.count_params(model) < 8e5
    objective, _ = task.build_objective(c, model)
    assert objective.clean_prob == (0.2, 0.1) and objective.num_classes == 10
