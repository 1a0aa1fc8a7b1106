"""Continuous-time consistency distillation (sCM) of the ``toy.py`` teacher on the checkerboard.

    python -m experiments.train                                    # the teacher, workdirs/toy
    python -m experiments.train --config=experiments/configs/toy_consistency.py \\
        --workdir=workdirs/toy_consistency --config.few_step.teacher_workdir=workdirs/toy
    python -m experiments.evaluate --workdir=workdirs/toy_consistency --steps=1

The student is the teacher's network (same model and schedule, started from the teacher's EMA
parameters); its consistency function is the x0 reading of its v-prediction (for the cosine
schedule f = alpha x - sigma v, TrigFlow's parameterisation), trained so that f is constant
along the teacher's probability-flow ODE (diffjax.few_step.consistency_loss, with tangent
normalisation). ``few_step.dt = 0.02``: the tangent is a finite difference along the teacher's
DDIM step over dt (discrete-time consistency distillation); ``dt = 0`` takes the exact jvp
tangent (continuous time, sCM), which on this teacher's fast sinusoidal time embedding (scale
1000) is mostly noise and does not train (``bench/RESULTS.md``). ``sample.solver = "consistency"``: f at t = 1, then for each further step
re-noise to the next time and apply f again (``sample.steps`` network calls).
``few_step.teacher_workdir=""`` trains without a teacher (consistency training along the
conditional velocity) from ``few_step.init_from_teacher=False`` scratch weights.
Measured figures: ``bench/RESULTS.md`` (``bench/few_step.py``).
"""
import ml_collections

from experiments.configs import toy


def get_config():
    c = toy.get_config()
    c.name = "toy_consistency"
    c.diffusion.loss = "consistency"
    c.few_step = ml_collections.ConfigDict(dict(
        teacher_workdir="workdirs/toy", init_from_teacher=True, tangent_c=0.1,
        time_mean=ml_collections.FieldReference(None, field_type=float), time_std=1.6,
        sample_t_max=1.0, dt=0.02))

    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 100
    c.train.num_steps = 4000
    c.train.checkpoint_every = 2000

    c.sample.solver = "consistency"
    c.sample.steps = 1
    c.eval.nll_examples = 0  # a consistency model has no probability-flow likelihood
    return c
