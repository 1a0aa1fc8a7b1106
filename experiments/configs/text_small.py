"""Character-level discrete diffusion on the offline standard-library corpus, on 2 CPU cores.

    python -m experiments.train --config=experiments/configs/text_small.py --workdir=workdirs/text
    python -m experiments.train --config=experiments/configs/text_small.py \
        --config.diffusion.process=uniform --workdir=workdirs/text_uniform
    python -m experiments.evaluate --workdir=workdirs/text     # bits/char, samples, spell check
    python -m experiments.sample --workdir=workdirs/text --num_samples=8 --output=/tmp/s.txt
    python -m experiments.train --config=experiments/configs/text_small.py \
        --config.diffusion.order=left_to_right --workdir=workdirs/text_ar   # autoregressive

A small bidirectional Transformer (``TokenTransformer``, adaLN time conditioning) on 64-char
chunks of ``stdlib_text`` (the English docstrings and comments of this Python's standard
library, 27 symbols; see ``diffjax.data.text``). ``diffusion.process`` is ``"masked"``
(absorbing, continuous-time MDLM/MD4 bound) or ``"uniform"`` (multinomial, Hoogeboom et al.;
its continuous-time bound). ``diffusion.order="left_to_right"`` makes it an autoregressive
model: the masked process with a fixed left-to-right order and a causal Transformer, trained
and evaluated on its exact likelihood (``experiments.tasks.text``). Target: held-out
bits/char at least 0.8 below the corpus unigram entropy (4.11 bits/char) for both processes,
in under 15 minutes of training on 2 CPU cores; uniform-process runs are also evaluated on spell checking. Held-out text is the
last 5% of the corpus. Measured figures: ``bench/RESULTS.md``.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.task = "text"
    c.name = "text_small"
    c.data = ml_collections.ConfigDict(dict(
        name="stdlib_text", batch_size=64, seq_len=64, vocab="char", data_dir="", prefetch=2,
        path=""))

    c.model = ml_collections.ConfigDict(dict(
        name="token_transformer", dim=128, depth=4, heads=4, mlp_ratio=4.0, cond_dim=64,
        positions="rope", dropout=0.0, dtype="float32", time_embedding="sinusoidal",
        self_condition=False))

    c.diffusion = ml_collections.ConfigDict(dict(
        process="masked", schedule="linear", exponent=0.0, loss="nelbo", ce_weight=0.01,
        num_steps=0, antithetic=True, order="random"))

    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 100
    c.optim.end_lr_ratio = 0.05
    c.optim.weight_decay = 0.0

    c.train.num_steps = 1500
    c.train.log_every = 100
    c.train.checkpoint_every = 500
    c.train.ema_decay = 0.995

    c.sample = ml_collections.ConfigDict(dict(
        solver="", steps=64, temperature=1.0, top_p=0.0, num_samples=16, batch_size=16,
        confidence_temperature=0.0, remask_schedule="cap", remask_eta=0.02))

    c.eval = ml_collections.ConfigDict(dict(
        examples=0, batch_size=128, elbo_samples=16, elbo_steps=0, num_samples=32,
        spell_t=0.1, spell_examples=256, spell_steps=1, seed=1))
    return c
