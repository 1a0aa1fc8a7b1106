"""Class-conditional CIFAR-10 32x32 for classifier-free guidance, for GPU/TPU.

    python -m experiments.train --config=experiments/configs/cifar10_cond.py --workdir=DIR \
        --config.data.data_dir=gs://.../tensorflow_datasets [--distributed]
    python -m experiments.sample --workdir=DIR --class=3 --guidance=2 --num_samples=100

The U-Net of ``cifar10.py`` (DDPM cifar10 size, bfloat16 compute) with a class embedding
(10 classes + the null class 10); labels are dropped to the null class with probability
``diffusion.cond_drop = 0.1`` (Ho & Salimans 2022 use 0.1-0.2). ``sample.guidance_scale`` is the
scale of the launchers' own samples (1 = the conditional model); ``--guidance=W`` overrides it.
"""
from experiments.configs import cifar10


def get_config():
    c = cifar10.get_config()
    c.name = "cifar10_cond"

    c.model.class_conditional = True
    c.diffusion.cond_drop = 0.1

    c.sample.guidance_scale = 1.0
    c.sample.labels = "uniform"  # no class given: cycle through the 10 classes
    return c
