"""MNIST 28x28 (TFDS, prepared offline in data.data_dir as array_record): a U-Net for GPU/TPU.

    python -m experiments.train --config=experiments/configs/mnist.py --workdir=DIR \
        --config.data.data_dir=~/tensorflow_datasets

A missing dataset stops the run with an error that says how to prepare it (diffjax never
downloads). Class-conditional with 10% condition dropout (classifier-free guidance).
"""
from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.name = "mnist"
    c.data.name = "mnist"
    c.data.batch_size = 128
    c.data.dequantize = True
    c.data.prefetch = 2

    c.model.name = "unet"
    c.model.ch = 64
    c.model.ch_mult = (1, 2, 2)  # 28 -> 14 -> 7
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (14,)
    c.model.dropout = 0.1
    c.model.class_conditional = True
    c.model.dtype = "float32"  # "bfloat16" compute on accelerators

    c.diffusion.schedule = "cosine"
    c.diffusion.prediction = "v"
    c.diffusion.weighting = "v"
    c.diffusion.cond_drop = 0.1

    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 1000
    c.optim.grad_clip = 1.0

    c.train.num_steps = 60_000
    c.train.log_every = 500
    c.train.checkpoint_every = 5000
    c.train.keep_checkpoints = 3
    c.train.ema_decay = 0.9999

    c.sample.solver = "dpmpp_2m"
    c.sample.steps = 50
    c.sample.num_samples = 1000
    c.sample.batch_size = 500
    c.sample.guidance_scale = 1.5

    c.eval.num_samples = 1000
    c.eval.nll_examples = 1000
    c.eval.nll_batch_size = 250
    return c
