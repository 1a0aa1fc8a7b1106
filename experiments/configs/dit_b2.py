"""Class-conditional DiT-B/2 on ImageNet 256x256 VAE latents (Peebles & Xie 2023), for TPU/GPU.

    python -m experiments.train --config=experiments/configs/dit_b2.py --workdir=DIR \
        --config.data.data_dir=/path/to/latents [--distributed] \
        [--config.train.mesh=data:N,model:M] [--config.train.fsdp=True]
    python -m experiments.sample --workdir=DIR --class=207 --guidance=4 --num_samples=16

Data: ``imagenet256_latents`` (``diffjax.data.latents``), ImageNet encoded once by the
Stable-Diffusion VAE into (32, 32, 4) latents times 0.18215, prepared by the user with
``diffjax.data.latents.write_latents`` in ``<data_dir>/imagenet256_latents/`` (nothing is
downloaded; without it training stops at once with ``DatasetNotPreparedError`` saying how
to write it). Model: DiT with 2x2 patches (256 tokens), adaLN-Zero, class embedding with a
null class for classifier-free guidance (labels dropped with p = ``diffusion.cond_drop`` =
0.1), bfloat16 compute. Sizes (``VARIANTS``; counts measured with ``nnx.eval_shape``, the
paper's in brackets, which also count DiT's learned-sigma output channels):

    B/2   dim 768,  depth 12, heads 12    130.3M  (130M)   this file
    L/2   dim 1024, depth 24, heads 16    457.8M  (458M)   dit_l2.py
    XL/2  dim 1152, depth 28, heads 16    674.8M  (675M)   dit_xl2.py

Training as DiT: AdamW at a constant 1e-4 (``end_lr_ratio=1``; a short warmup, not in the
paper, shields the first bfloat16 steps), no weight decay, global batch 256, EMA 0.9999,
400K steps (the paper's model-comparison length; XL/2 reaches FID 2.27 after 7M). Diffusion:
``linear_vp`` with ``prediction="eps"`` and the simple loss, the continuous-time form of DiT's
own DDPM setting (linear betas 1e-4..0.02 over 1000 steps), so results compare with the paper.
Samples: ``dpmpp_2m``, 50 steps, guidance scale 1.5 (the paper's FID setting); the launcher
writes no figure for latents (decode the ``.npy`` of ``experiments.sample`` with the VAE:
``vae.decode(x / 0.18215)``). ``--config.train.mesh=data:N,model:M`` picks a data x model
device mesh ("" = all devices on the data axis), ``--config.train.fsdp=True`` shards the
train state (parameters, EMA, optimizer moments) over the data axis.
"""
import ml_collections

from experiments.configs.base import get_base_config

# variant -> (dim, depth, heads); patch size 2, MLP ratio 4 for all.
VARIANTS = {"B/2": (768, 12, 12), "L/2": (1024, 24, 16), "XL/2": (1152, 28, 16)}


def get_dit_config(variant: str) -> ml_collections.ConfigDict:
    """The shared DiT config of the module docstring for ``variant`` in ``VARIANTS``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    dim, depth, heads = VARIANTS[variant]
    c = get_base_config()
    c.name = "dit_" + variant.lower().replace("/", "")
    c.data.name = "imagenet256_latents"
    c.data.batch_size = 256
    c.data.prefetch = 4

    c.model = ml_collections.ConfigDict(dict(
        name="dit", class_conditional=True, patch_size=2, dim=dim, depth=depth, heads=heads,
        mlp_ratio=4.0, dropout=0.0, dtype="bfloat16", time_embedding="sinusoidal"))

    c.diffusion.schedule = "linear_vp"
    c.diffusion.prediction = "eps"
    c.diffusion.weighting = "simple"
    c.diffusion.cond_drop = 0.1

    c.optim.learning_rate = 1e-4
    c.optim.warmup_steps = 1000
    c.optim.end_lr_ratio = 1.0
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0

    c.train.num_steps = 400_000
    c.train.log_every = 1000
    c.train.checkpoint_every = 10_000
    c.train.keep_checkpoints = 3
    c.train.ema_decay = 0.9999

    c.sample.solver = "dpmpp_2m"
    c.sample.steps = 50
    c.sample.guidance_scale = 1.5
    c.sample.labels = "uniform"
    c.sample.num_samples = 64
    c.sample.batch_size = 32

    c.eval.num_samples = 64
    c.eval.nll_examples = 0
    return c


def get_config():
    return get_dit_config("B/2")
