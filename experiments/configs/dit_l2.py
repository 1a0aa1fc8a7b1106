"""Class-conditional DiT-L/2 on ImageNet 256x256 VAE latents: 457.8M parameters (paper: 458M).

    python -m experiments.train --config=experiments/configs/dit_l2.py --workdir=DIR \
        --config.data.data_dir=/path/to/latents [--distributed] \
        [--config.train.mesh=data:N,model:M] [--config.train.fsdp=True]

dim 1024, depth 24, heads 16, patch 2; everything else (data, bfloat16, AdamW 1e-4, batch
256, EMA 0.9999, linear_vp + eps, cond_drop 0.1, dpmpp_2m 50 steps at guidance 1.5) is the
shared DiT config described in ``dit_b2.py`` (``get_dit_config``), including what the data
needs (``diffjax.data.latents.write_latents``) and the mesh / FSDP flags.
"""
from experiments.configs.dit_b2 import get_dit_config


def get_config():
    return get_dit_config("L/2")
