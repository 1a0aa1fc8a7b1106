"""text8 masked diffusion at paper scale (MDLM / MD4 setting) for a GPU/TPU host.

    python -m experiments.train --config=experiments/configs/text8.py --workdir=workdirs/text8 \
        --config.data.data_dir=/path/to/dir/with/text8
    python -m experiments.evaluate --workdir=workdirs/text8

Data: the user's local ``text8`` or ``text8.zip`` in ``data.data_dir`` (default
``$DIFFJAX_DATA_DIR``, else ``~/.cache/diffjax``); nothing is downloaded, and a missing file
raises ``FileNotFoundError`` naming the expected paths. Standard 90M/5M/5M split, 27 symbols,
256-character chunks. Model: a 12-layer, 768-wide bidirectional Transformer (about 85M
parameters) with rotary positions, adaLN time conditioning (128-wide, as MDLM) and bf16
compute; the continuous-time masked bound with a linear schedule. Published references for this
setting: MDLM/MD4 report <= 1.40 bits/char, Hoogeboom et al.'s multinomial diffusion 1.72.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.task = "text"
    c.name = "text8"
    c.data = ml_collections.ConfigDict(dict(
        name="text8", batch_size=512, seq_len=256, vocab="char", data_dir="", prefetch=2,
        path=""))

    c.model = ml_collections.ConfigDict(dict(
        name="token_transformer", dim=768, depth=12, heads=12, mlp_ratio=4.0, cond_dim=128,
        positions="rope", dropout=0.0, dtype="bfloat16", time_embedding="sinusoidal",
        self_condition=False))

    c.diffusion = ml_collections.ConfigDict(dict(
        process="masked", schedule="linear", exponent=0.0, loss="nelbo", ce_weight=0.01,
        num_steps=0, antithetic=True, order="random"))

    c.optim.learning_rate = 3e-4
    c.optim.warmup_steps = 2500
    c.optim.end_lr_ratio = 0.1
    c.optim.weight_decay = 0.0
    c.optim.b2 = 0.999
    c.optim.grad_clip = 1.0

    c.train.num_steps = 1_000_000
    c.train.log_every = 1000
    c.train.checkpoint_every = 10_000
    c.train.keep_checkpoints = 3
    c.train.ema_decay = 0.9999

    c.sample = ml_collections.ConfigDict(dict(
        solver="", steps=1000, temperature=1.0, top_p=0.0, num_samples=64, batch_size=64,
        confidence_temperature=0.0, remask_schedule="cap", remask_eta=0.02))

    c.eval = ml_collections.ConfigDict(dict(
        examples=0, batch_size=256, elbo_samples=4, elbo_steps=0, num_samples=64,
        spell_t=0.1, spell_examples=1024, spell_steps=1, seed=1))
    return c
