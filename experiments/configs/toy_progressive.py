"""One round of progressive distillation (Salimans & Ho 2022) of a checkerboard model.

    python -m experiments.train --config=experiments/configs/toy_progressive.py \\
        --workdir=workdirs/toy_pd8 --config.few_step.teacher_workdir=workdirs/toy \\
        --config.few_step.student_steps=8
    python -m experiments.train --config=experiments/configs/toy_progressive.py \\
        --workdir=workdirs/toy_pd4 --config.few_step.teacher_workdir=workdirs/toy_pd8 \\
        --config.few_step.student_steps=4                     # the next round, and so on

The student (the teacher's network and schedule, started from its EMA parameters) learns to
do in one DDIM step of length 1/N (N = ``few_step.student_steps``) what the teacher does in
two of length 1/2N; each round halves N with the previous round as the teacher.
``sample.solver = "progressive"``: DDIM on the uniform grid of ``sample.steps`` intervals
from t = 1 to 0, exactly that many network calls (set it to the student's N).
"""
import ml_collections

from experiments.configs import toy


def get_config():
    c = toy.get_config()
    c.name = "toy_progressive"
    c.diffusion.loss = "progressive"
    c.few_step = ml_collections.ConfigDict(dict(
        teacher_workdir="workdirs/toy", init_from_teacher=True, student_steps=8))

    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = 100
    c.train.num_steps = 2000
    c.train.checkpoint_every = 1000

    c.sample.solver = "progressive"
    c.sample.steps = c.few_step.get_ref("student_steps")
    c.eval.nll_examples = 0
    return c
