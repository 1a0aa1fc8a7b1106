"""Metrics of the text task: held-out bits/char, unigram baselines, word statistics and
spell checking (see `experiments.tasks.text` for where each lands in ``metrics.json``)."""
from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from diffjax import discrete, platform
from diffjax.data import text as dtext
from diffjax.training.objectives import DiscreteObjective
from experiments import common

__all__ = ["bits_per_char", "generative_perplexity", "unigram_baselines", "token_unigram_baselines",
           "word_fraction", "train_words", "spell_check"]

def bits_per_char(objective: DiscreteObjective, params, tokens: np.ndarray, key, *,
                  elbo_samples: int = 4, num_steps: Optional[int] = None,
                  batch_size: int = 64, process=None) -> dict:
    """The negative ELBO of ``tokens`` (N, L) in bits per character (module docstring).

    Each batch of ``B`` sequences is tiled ``K = elbo_samples`` times and scored by one call
    of ``process.nelbo(model_fn, x0, key, num_steps, antithetic=True)`` on the ``K B`` rows,
    so the times of the ``K B`` draws are stratified; each sequence's bound is the mean of
    its K draws. Under a masked process with ``order="left_to_right"`` the score is instead
    the exact negative log-likelihood ``process.nll`` (one forward pass per batch for a causal
    model, one per position otherwise; ``elbo_samples``, ``num_steps`` and ``key`` unused).
    ``process``: score under this process instead of ``objective.process`` (e.g. a
    random-order model under the fixed order). Returns the estimate, its standard error (over
    the sequences) and the token count.
    """
    if elbo_samples < 1:
        raise ValueError(f"elbo_samples must be >= 1, got {elbo_samples}")
    tokens = np.asarray(tokens, np.int32)
    n, seq_len = tokens.shape
    K = int(elbo_samples)
    process = objective.process if process is None else process
    exact = bool(getattr(process, "fixed_order", False))
    if objective.causal and not exact:
        raise ValueError("a causal model scores only the fixed order: process must be a masked "
                         "process with order='left_to_right'")

    @platform.jit
    def score(params, x0, key):
        if exact:
            return process.nll(objective.model_fn(params), x0, causal=objective.causal)
        tiled = jnp.tile(x0, (K, 1))  # row k * B + b is a copy of sequence b
        nelbo = process.nelbo(objective.model_fn(params), tiled, key, num_steps=num_steps,
                              antithetic=True)
        return nelbo.reshape(K, -1).mean(0)

    params = jax.device_put(params, jax.local_devices()[0])
    per_seq, _ = common.map_batches(lambda k, x0: (score(params, x0, k), None), key, n,
                                    batch_size, tokens)
    per_seq = per_seq.astype(np.float64) / (seq_len * math.log(2.0))
    if not np.all(np.isfinite(per_seq)):
        raise FloatingPointError("the ELBO is not finite on the held-out data")
    if exact:
        how = "one causal forward pass" if objective.causal else f"{seq_len} model calls"
        return {"estimator": f"exact fixed-order (left-to-right) log-likelihood of the "
                             f"MaskedProcess, {how} per sequence",
                "bits_per_char": float(per_seq.mean()),
                "stderr_bits_per_char": float(per_seq.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
                "nats_per_token": float(per_seq.mean() * math.log(2.0)), "order": "left_to_right",
                "num_sequences": int(n), "seq_len": int(seq_len), "num_tokens": int(n * seq_len)}
    estimator = ("continuous-time ELBO" if num_steps is None else f"{num_steps}-step ELBO")
    return {"estimator": f"{estimator} of the {type(process).__name__}, {K} time samples per "
                         f"sequence, antithetic (stratified) times",
            "bits_per_char": float(per_seq.mean()),
            "stderr_bits_per_char": float(per_seq.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
            "nats_per_token": float(per_seq.mean() * math.log(2.0)),
            "elbo_samples": K, "num_steps": num_steps, "antithetic": True,
            "num_sequences": int(n), "seq_len": int(seq_len), "num_tokens": int(n * seq_len)}


def generative_perplexity(judge: DiscreteObjective, params, tokens: np.ndarray, *,
                          batch_size: int = 64) -> dict:
    """Generative perplexity of sampled ``tokens`` (N, L) under an autoregressive ``judge``
    (a masked process with ``order="left_to_right"``, usually a causal model trained on the
    same corpus): ``2 ** bits`` with ``bits`` the judge's exact negative log-likelihood of
    the samples in bits per character (``bits_per_char``). Low values can also mean
    repetitive samples: report it with the samples' unigram entropy."""
    if not getattr(judge.process, "fixed_order", False):
        raise ValueError("the judge must be an autoregressive model: a masked process with "
                         "order='left_to_right' (diffusion.order='left_to_right')")
    lik = bits_per_char(judge, params, tokens, jax.random.key(0), batch_size=batch_size)
    return {"generative_perplexity": float(2.0 ** lik["bits_per_char"]),
            "judge_bits_per_char": lik["bits_per_char"],
            "judge_stderr_bits_per_char": lik["stderr_bits_per_char"],
            "judged_sequences": lik["num_sequences"]}


def unigram_baselines(name: str, data_dir: Optional[str] = None) -> dict:
    """Entropy of the held-out text's character frequencies (the baseline a model must
    beat), the training split's, and the cross-entropy of the training frequencies on the
    held-out text, in bits per character."""
    train = np.frombuffer(dtext.split_text(name, "train", data_dir=data_dir), np.uint8)
    test = np.frombuffer(dtext.split_text(name, "test", data_dir=data_dir), np.uint8)
    return token_unigram_baselines(train, test)


def token_unigram_baselines(train: np.ndarray, test: np.ndarray) -> dict:
    """`unigram_baselines` of two token streams (integer ids of any vocabulary), in bits per
    token."""
    train, test = np.ravel(train), np.ravel(test)
    if train.size == 0 or test.size == 0:
        raise ValueError("train and test must not be empty.")
    symbols, ids = np.unique(np.concatenate([train, test]), return_inverse=True)
    ids = ids.reshape(-1)
    p = np.bincount(ids[:train.size], minlength=len(symbols)) / train.size
    q = np.bincount(ids[train.size:], minlength=len(symbols)) / test.size
    seen = q > 0
    cross = float(-(q[seen] * np.log2(np.maximum(p[seen], 1e-300))).sum())
    return {"unigram_entropy_bits": dtext.unigram_entropy_bits(test),
            "unigram_entropy_bits_train": dtext.unigram_entropy_bits(train),
            "unigram_cross_entropy_bits": cross}



@functools.lru_cache(maxsize=4)
def train_words(name: str, data_dir: str) -> frozenset:
    """The set of words of the training split of text dataset ``name``."""
    raw = dtext.split_text(name, "train", data_dir=data_dir or None).decode("ascii")
    return frozenset(raw.split())


def word_fraction(texts, words: frozenset) -> dict:
    """Share of the complete words of ``texts`` found in ``words`` (the first and last word of
    each text, which may be cut, are dropped)."""
    inner = [w for t in texts for w in t.split()[1:-1]]
    found = sum(w in words for w in inner)
    return {"word_fraction": found / max(len(inner), 1), "num_words": len(inner)}


# ---------------------------------------------------------------------------- spell checking
def spell_check(objective: DiscreteObjective, params, tokens: np.ndarray, key, *, t: float,
                steps: int = 1, batch_size: int = 64, decode=None) -> dict:
    """Corrupt ``tokens`` with the uniform process at time ``t`` and restore them with the
    model (``discrete.restore``, ``steps`` reverse steps, argmax); character error rates.
    ``decode(ids) -> str`` turns one sequence into the example's text (default: the
    27-symbol character vocabulary, ``diffjax.data.text.decode``)."""
    decode = dtext.decode if decode is None else decode
    if not isinstance(objective.process, discrete.UniformProcess):
        raise ValueError("spell checking needs a uniform-process model "
                         "(diffusion.process='uniform')")
    if not 0.0 < t < 1.0:
        raise ValueError(f"spell_t must be in (0, 1), got {t}")
    tokens = np.asarray(tokens, np.int32)
    process = objective.process

    @platform.jit
    def run(params, x0, key):
        k_c, k_r = jax.random.split(key)
        noisy = discrete.corrupt(k_c, x0, t, process)
        fixed, _ = discrete.restore(objective.model_fn(params), k_r, noisy, t, process=process,
                                    steps=int(steps), temperature=0.0)
        return noisy, fixed

    (noisy, fixed), _ = common.map_batches(lambda k, x0: (run(params, x0, k), None), key,
                                           len(tokens), batch_size, tokens)
    before = float(discrete.character_error_rate(noisy, tokens))
    after = float(discrete.character_error_rate(fixed, tokens))
    return {"t": float(t), "steps": int(steps), "num_chars": int(tokens.size),
            "cer_before": before, "cer_after": after,
            "example": {"original": decode(tokens[0]), "corrupted": decode(noisy[0]),
                        "restored": decode(fixed[0])}}
