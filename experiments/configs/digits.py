"""scikit-learn's 8x8 digits (levels 0..16): a small U-Net, under 15 minutes on 2 CPU cores.

    python -m experiments.train --config=experiments/configs/digits.py --workdir=workdirs/digits
    python -m experiments.evaluate --workdir=workdirs/digits

Data are uniformly dequantised (17 levels -> [-1, 1)), so the ODE likelihood gives a
discrete bits/dim bound. Targets (SVC on real digits, see experiments.metrics): confident
share of samples >= 0.85 x that of held-out real digits; class entropy >= 0.95 log 10.
Measured figures: ``bench/RESULTS.md``.
"""
from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.name = "digits"
    c.data.name = "digits"
    c.data.batch_size = 64
    c.data.dequantize = True

    c.model.name = "unet"
    c.model.ch = 32
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = ()  # attention in the 4x4 middle block only
    c.model.dropout = 0.0  # a short run: dropout only slows it down

    c.diffusion.schedule = "cosine"
    c.diffusion.prediction = "v"
    c.diffusion.weighting = "v"

    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 200
    c.optim.end_lr_ratio = 0.05

    c.train.num_steps = 4000
    c.train.log_every = 250
    c.train.checkpoint_every = 1000
    c.train.steps_per_call = 10  # one compiled call per 10 steps (TrainStep.run_steps)
    c.train.ema_decay = 0.999

    c.sample.solver = "dpmpp_2m"
    c.sample.steps = 50
    c.sample.num_samples = 1000
    c.sample.batch_size = 1000

    c.eval.num_samples = 1000
    c.eval.nll_examples = 359  # the whole held-out split
    c.eval.nll_batch_size = 359
    return c
