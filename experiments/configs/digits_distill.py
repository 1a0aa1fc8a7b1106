"""Consistency distillation (sCM) of the ``digits.py`` teacher: 1-, 2- and 4-step digits.

    python -m experiments.train --config=experiments/configs/digits.py --workdir=workdirs/digits
    python -m experiments.train --config=experiments/configs/digits_distill.py \\
        --workdir=workdirs/digits_distill --config.few_step.teacher_workdir=workdirs/digits
    python -m experiments.evaluate --workdir=workdirs/digits_distill --steps=2

``few_step.teacher_workdir`` is the teacher's run (its latest checkpoint's EMA parameters; a
workdir without a checkpoint is refused with an error naming this field). The student has the
teacher's U-Net and schedule and starts from its parameters (see ``toy_consistency.py``).
Targets at 2 network calls: SVC confidence ratio >= 0.85, class entropy >= 0.95 log 10.
Measured figures: ``bench/RESULTS.md``.
"""
import ml_collections

from experiments.configs import digits


def get_config():
    c = digits.get_config()
    c.name = "digits_distill"
    c.diffusion.loss = "consistency"
    c.few_step = ml_collections.ConfigDict(dict(
        teacher_workdir="workdirs/digits", init_from_teacher=True, tangent_c=0.1,
        time_mean=ml_collections.FieldReference(None, field_type=float), time_std=1.6,
        sample_t_max=1.0, dt=0.02))

    c.optim.learning_rate = 1e-4
    c.optim.warmup_steps = 100
    c.train.num_steps = 4000
    c.train.checkpoint_every = 2000

    c.sample.solver = "consistency"
    c.sample.steps = 2
    c.eval.nll_examples = 0
    return c
