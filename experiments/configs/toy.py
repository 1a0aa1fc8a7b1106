"""2-D toy default: a residual MLP on the checkerboard, trained in minutes on 2 CPU cores.

    python -m experiments.train                       # this config, workdir ./workdirs/toy
    python -m experiments.evaluate --workdir=workdirs/toy

Target: sliced Wasserstein-1 / data std <= 0.05 on 4000 samples (noise floor ~0.02).
Measured figures: ``bench/RESULTS.md``.
"""
from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.name = "toy"
    c.data.name = "checkerboard"
    c.data.batch_size = 256

    c.model.name = "mlp"
    c.model.hidden = 128
    c.model.depth = 3
    c.model.time_embed_dim = 64

    c.diffusion.schedule = "cosine"
    c.diffusion.prediction = "v"
    c.diffusion.weighting = "v"

    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 200
    c.optim.end_lr_ratio = 0.05

    c.train.num_steps = 4000
    c.train.log_every = 500
    c.train.checkpoint_every = 2000
    c.train.ema_decay = 0.999

    c.sample.solver = "dpmpp_2m"
    c.sample.steps = 50
    c.sample.num_samples = 4000
    c.sample.batch_size = 4000

    c.eval.num_samples = 4000
    c.eval.nll_examples = 1000
    c.eval.nll_batch_size = 1000
    return c
