"""MeanFlow on scikit-learn's 8x8 digits: the U-Net of ``digits.py`` with a second time input,
trained from scratch for one- and few-step sampling.

    python -m experiments.train --config=experiments/configs/digits_meanflow.py --workdir=workdirs/digits_meanflow
    python -m experiments.evaluate --workdir=workdirs/digits_meanflow --steps=2

Targets (as ``digits.py``, at 2 network calls): SVC confidence ratio >= 0.85, class entropy
>= 0.95 log 10. Measured figures: ``bench/RESULTS.md``.
"""
import ml_collections

from experiments.configs import digits


def get_config():
    c = digits.get_config()
    c.name = "digits_meanflow"
    c.model.second_time = True
    # The loss differentiates the network in t (jax.jvp): at the sinusoidal embedding's
    # default scale (1000 t) that derivative is dominated by the fast features and training
    # stalls; a slower embedding keeps it useful (bench/RESULTS.md: 1000, 100, 20 on the toy).
    c.model.time_scale = 100.0

    c.diffusion.schedule = "rectified_flow"
    c.diffusion.prediction = "flow"
    c.diffusion.loss = "meanflow"
    c.diffusion.weighting = "native"
    c.few_step = ml_collections.ConfigDict(dict(
        average_share=0.5, time_mean=-0.4, time_std=1.0, adaptive_p=1.0, adaptive_c=1e-3,
        teacher_workdir=""))

    c.train.num_steps = 8000
    c.train.checkpoint_every = 2000

    c.sample.solver = "meanflow"
    c.sample.steps = 2
    c.eval.nll_examples = 0
    return c
