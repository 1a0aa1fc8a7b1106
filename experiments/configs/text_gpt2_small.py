"""text8 masked diffusion with a GPT-2-small-sized Transformer (123.9M parameters), for TPU/GPU.

    python -m experiments.train --config=experiments/configs/text_gpt2_small.py \
        --workdir=DIR --config.data.data_dir=/path/to/dir/with/text8 [--distributed] \
        [--config.train.mesh=data:N,model:M] [--config.train.fsdp=True]
    python -m experiments.evaluate --workdir=DIR

The ``text8.py`` setting (MDLM / MD4: continuous-time masked bound, linear schedule, 27
characters, rotary positions, bfloat16 compute) scaled to 1024-character chunks and GPT-2
sizes (``SIZES``):

    small   dim 768,  depth 12, heads 12, cond_dim 672   123.9M  (GPT-2: 124M)   this file
    medium  dim 1024, depth 24, heads 16, cond_dim 320   350.4M  (GPT-2: 350M)   text_gpt2_medium.py

A 27-symbol vocabulary has almost no embedding parameters (GPT-2 spends 39M on its 50257
tokens), so the adaLN time modulation, ``6 * dim * cond_dim`` per block, is widened to make
up the difference (``cond_dim`` above; the counts are measured with ``nnx.eval_shape``).
Global batch 512 x 1024 characters (GPT-2's 0.5M tokens per step), AdamW with warmup and
cosine decay to 0.1x, peak 3e-4 (small) / 1.5e-4 (medium, halved as GPT-3 does from 125M to
350M), EMA 0.9999. Data: the user's ``text8`` or ``text8.zip`` in ``data.data_dir`` (default
``$DIFFJAX_DATA_DIR``, else ``~/.cache/diffjax``); nothing is downloaded, and a missing file
stops training at once with ``FileNotFoundError`` naming the expected paths.
``--config.train.mesh=data:N,model:M`` picks a data x model device mesh ("" = all devices on
the data axis), ``--config.train.fsdp=True`` shards the train state (parameters, EMA,
optimizer moments) over the data axis.
"""
import ml_collections

from experiments.configs import text8

# size -> (dim, depth, heads, cond_dim, peak learning rate)
SIZES = {"small": (768, 12, 12, 672, 3e-4), "medium": (1024, 24, 16, 320, 1.5e-4)}


def get_gpt2_config(size: str) -> ml_collections.ConfigDict:
    """The shared config of the module docstring for ``size`` in ``SIZES``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    dim, depth, heads, cond_dim, lr = SIZES[size]
    c = text8.get_config()
    c.name = f"text_gpt2_{size}"
    c.data.seq_len = 1024
    c.data.batch_size = 512
    c.data.vocab = "char"

    c.model.dim, c.model.depth, c.model.heads, c.model.cond_dim = dim, depth, heads, cond_dim
    c.model.mlp_ratio = 4.0
    c.model.dtype = "bfloat16"

    c.optim.learning_rate = lr
    c.optim.warmup_steps = 2500
    c.optim.end_lr_ratio = 0.1
    c.optim.weight_decay = 0.0

    c.train.num_steps = 1_000_000
    c.train.ema_decay = 0.9999

    c.sample.num_samples = 32
    c.sample.batch_size = 32
    c.eval.batch_size = 64
    c.eval.num_samples = 32
    return c


def get_config():
    return get_gpt2_config("small")
