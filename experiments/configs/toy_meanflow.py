"""MeanFlow on the 2-D checkerboard: one- and few-step generation trained from scratch.

    python -m experiments.train --config=experiments/configs/toy_meanflow.py --workdir=workdirs/toy_meanflow
    python -m experiments.sample --workdir=workdirs/toy_meanflow --steps=1 --output=/tmp/mf.npy
    python -m experiments.evaluate --workdir=workdirs/toy_meanflow --steps=2

The residual MLP of ``toy.py`` with a second time input (``model.second_time``: the interval
t - r) is the average velocity u(z, r, t) on the rectified-flow path; ``sample.solver =
"meanflow"`` takes ``sample.steps`` equal steps z_r = z_t - (t - r) u (exactly that many network
calls). ``--solver=euler --steps=50`` integrates its instantaneous velocity u(z, t, t) instead.
Measured figures: ``bench/RESULTS.md`` (``bench/few_step.py``).
"""
import ml_collections

from experiments.configs import toy


def get_config():
    c = toy.get_config()
    c.name = "toy_meanflow"
    c.model.second_time = True
    # The points alone, sampled down to t_min = 1e-3 (toy.py's Fourier features and final
    # t_min are measured for its v-prediction model, not for MeanFlow).
    c.model.input_fourier_features = 0
    c.sample.t_min = 1e-3
    # The loss differentiates the network in t (jax.jvp): at the sinusoidal embedding's
    # default scale (1000 t) that derivative is dominated by the fast features and training
    # stalls; a slower embedding keeps it useful (bench/RESULTS.md: 1000, 100, 20 on the toy).
    c.model.time_scale = 100.0

    c.diffusion.schedule = "rectified_flow"
    c.diffusion.prediction = "flow"
    c.diffusion.loss = "meanflow"
    c.diffusion.weighting = "native"
    # diffjax.few_step.meanflow_loss: half the batch on r < t, the rest r = t (the paper's
    # 0.25 was worse at 1 step here); logit-normal times; adaptive weight 1 / (mse + c)^p.
    c.few_step = ml_collections.ConfigDict(dict(
        average_share=0.5, time_mean=-0.4, time_std=1.0, adaptive_p=1.0, adaptive_c=1e-3,
        teacher_workdir=""))

    c.train.num_steps = 8000
    c.train.checkpoint_every = 2000

    c.sample.solver = "meanflow"
    c.sample.steps = 1
    c.eval.nll_examples = 0  # the ODE likelihood of u(z, t, t) works but is not the point here
    return c
