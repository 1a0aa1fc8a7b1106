"""CIFAR-10 32x32 (TFDS, prepared offline): the DDPM++ / DDPM cifar10-sized U-Net, for GPU/TPU.

    python -m experiments.train --config=experiments/configs/cifar10.py --workdir=DIR \
        --config.data.data_dir=gs://.../tensorflow_datasets [--distributed]

ch=128, ch_mult=(1, 2, 2, 2), 2 residual blocks per level, attention at 16x16, dropout 0.1
(35.7M parameters); bfloat16 compute (parameters, time embedding, normalisation statistics,
softmax and the output head stay float32). Batch 128 split over every device of the mesh.
"""
from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.name = "cifar10"
    c.data.name = "cifar10"
    c.data.batch_size = 128
    c.data.dequantize = True
    c.data.random_flip = True
    c.data.prefetch = 4

    c.model.name = "unet"
    c.model.ch = 128
    c.model.ch_mult = (1, 2, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (16,)
    c.model.dropout = 0.1
    c.model.dtype = "bfloat16"

    c.diffusion.schedule = "cosine"
    c.diffusion.prediction = "v"
    c.diffusion.weighting = "v"

    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 5000
    c.optim.grad_clip = 1.0

    c.train.num_steps = 800_000
    c.train.log_every = 1000
    c.train.checkpoint_every = 10_000
    c.train.keep_checkpoints = 3
    c.train.ema_decay = 0.9999

    c.sample.solver = "dpmpp_2m"
    c.sample.steps = 50
    c.sample.num_samples = 1000
    c.sample.batch_size = 250

    c.eval.num_samples = 1000
    c.eval.nll_examples = 1000
    c.eval.nll_batch_size = 100
    return c
