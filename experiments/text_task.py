r"""The text task of the launchers: discrete (masked / uniform) diffusion on characters.

``experiments.train``, ``experiments.sample`` and ``experiments.evaluate`` hand a config whose
``data.name`` is a text dataset (``stdlib_text``, ``text8``; see :mod:`diffjax.data.text`) to
this module::

    python -m experiments.train --config=experiments/configs/text_small.py --workdir=DIR
    python -m experiments.evaluate --workdir=DIR            # bits/char, samples, spell check
    python -m experiments.sample --workdir=DIR --num_samples=8 --output=FILE.txt \
        [--solver=first_hitting|ancestral|confidence|left_to_right --steps=64 \
         --temperature=1.0 --top_p=0.9 --prompt="the file ____ is opened"]

Config sections of a text config (``experiments/configs/text_small.py``)::

    data.name ("stdlib_text" | "text8"), .batch_size, .seq_len, .vocab ("char"), .data_dir
    model.name = "token_transformer", .dim, .depth, .heads, .mlp_ratio, .cond_dim,
         .positions, .dropout, .dtype ("float32" | "bfloat16" compute), .time_embedding
    diffusion.process ("masked" | "uniform"), .schedule ("linear" | "cosine" | "polynomial"),
         .exponent (polynomial), .loss ("nelbo" | "hybrid"), .ce_weight, .num_steps
         (0 = the continuous-time bound, T = the T-step bound), .antithetic
    sample.solver ("" = first_hitting for masked, ancestral for uniform; or any of
         diffjax.discrete.METHODS), .steps, .temperature, .top_p (0 = off), .num_samples,
         .batch_size
    eval.examples (held-out sequences, 0 = all), .batch_size, .elbo_samples (K), .elbo_steps
         (0 = continuous time), .num_samples, .spell_t (0 = off), .spell_examples,
         .spell_steps, .seed

Evaluation (``metrics.json``):

* ``bits_per_char``: the negative ELBO of the held-out split in bits per character, by the
  estimator named in ``likelihood.estimator``: the continuous-time ELBO of the run's process
  (``process.nelbo`` with ``num_steps=None``; MDLM / MD4 for masked, the CTMC limit of the
  multinomial bound for uniform), ``K = eval.elbo_samples`` time samples per sequence, times
  stratified (antithetic) across the ``K x batch`` draws of each batch. An ELBO is an upper
  bound on the model's negative log-likelihood. ``likelihood.num_tokens`` is the number of
  characters scored; ``likelihood.stderr_bits_per_char`` the Monte Carlo standard error.
  ``eval.elbo_steps = T`` uses the T-step bound (Hoogeboom et al. report T = 1000).
* ``unigram_entropy_bits``: the entropy of the held-out text's character frequencies (the
  baseline a model must beat), with the training split's entropy and the cross-entropy of
  the training frequencies on the held-out text; ``bits_below_unigram`` the difference.
* ``sample_quality``: ``word_fraction``, the share of the complete words of the samples
  (the first and last, possibly cut, word of every sequence are dropped) that occur in the
  training text, next to the same share for held-out text; samples go to
  ``eval_samples.txt``.
* ``spelling`` (uniform-process runs; Hoogeboom et al. 2021, section 5): held-out text
  corrupted by the uniform process at ``t = eval.spell_t`` (each character resampled with
  probability ``t``) and restored by the model (``diffjax.discrete.restore``, ``spell_steps``
  reverse steps, argmax); the character error rate before and after.
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from flax import nnx

from diffjax import discrete, models, training
from diffjax.data import text as dtext
from diffjax.training.discrete_objective import DiscreteObjective, make_discrete_objective
from experiments import common

PROCESSES = ("masked", "uniform")
FREE_CHAR = "_"  # marks the positions to generate in a --prompt
SAMPLES_FILE = "samples.txt"
EVAL_SAMPLES_FILE = "eval_samples.txt"


# ---------------------------------------------------------------------------- builders
def build_dataset(config, split: str):
    d = config.data
    return common.ddata.get_dataset(d.name, split, data_dir=common._opt(d.get("data_dir", "")),
                                    seq_len=int(d.seq_len), vocab=d.get("vocab", "char"))


def build_process(config, vocab_size: int):
    d = config.diffusion
    if d.process not in PROCESSES:
        raise ValueError(f"diffusion.process must be one of {list(PROCESSES)}, got {d.process!r}")
    exponent = float(d.get("exponent", 0.0)) or None
    make = discrete.masked if d.process == "masked" else discrete.uniform
    return make(vocab_size, d.schedule, exponent=exponent)


def build_model(config, info) -> nnx.Module:
    m = config.model
    if m.name != "token_transformer":
        raise ValueError(f"text configs need model.name='token_transformer', got {m.name!r}")
    masked = config.diffusion.process == "masked"
    return models.TokenTransformer(
        int(info.vocab_size), num_extra_tokens=1 if masked else 0, seq_len=int(info.shape[0]),
        dim=int(m.dim), depth=int(m.depth), heads=int(m.heads), mlp_ratio=float(m.mlp_ratio),
        dropout=float(m.dropout), cond_dim=int(m.get("cond_dim", 0)) or None,
        positions=m.get("positions", "rope"), time_embedding=m.get("time_embedding", "sinusoidal"),
        dtype=common._dtype(m.get("dtype", "float32")), rngs=nnx.Rngs(int(config.seed)))


def build_objective(config, model: nnx.Module):
    """``(DiscreteObjective, params)`` from ``config.diffusion``."""
    d = config.diffusion
    process = build_process(config, int(model.vocab_size))
    return make_discrete_objective(model, process=process, loss=d.get("loss", "nelbo"),
                                   num_steps=int(d.get("num_steps", 0)) or None,
                                   ce_weight=float(d.get("ce_weight", 0.01)),
                                   antithetic=bool(d.get("antithetic", True)))


def default_method(objective: DiscreteObjective, method: Optional[str] = None) -> str:
    """``method``, or the process's default sampler (first-hitting for masked models)."""
    if method:
        if method not in discrete.METHODS:
            raise ValueError(f"the sampler of a text model must be one of "
                             f"{list(discrete.METHODS)}, got {method!r}")
        return method
    return "first_hitting" if isinstance(objective.process, discrete.MaskedProcess) else "ancestral"


# ---------------------------------------------------------------------------- prompts
def encode_prompt(prompt: str, seq_len: int, vocab_size: int) -> np.ndarray:
    """A prompt -> ``x_init`` of shape ``(seq_len,)``: its characters are kept, ``_`` and every
    position after the prompt are generated (value ``vocab_size``, the mask id).

    ``"the module"`` is a prefix; ``"the ____ module"`` asks for infilling. Letters are
    lower-cased; any other character than a-z, space and ``_`` raises ValueError.
    """
    prompt = prompt.lower()
    if len(prompt) > seq_len:
        raise ValueError(f"prompt has {len(prompt)} characters, more than seq_len={seq_len}")
    bad = sorted(set(prompt) - set(dtext.CHARS) - {FREE_CHAR})
    if bad:
        raise ValueError(f"prompt may only hold a-z, space and {FREE_CHAR!r} (to generate); "
                         f"got {bad}")
    x = np.full((seq_len,), vocab_size, np.int32)
    for i, ch in enumerate(prompt):
        if ch != FREE_CHAR:
            x[i] = dtext.CHARS.index(ch)
    return x


# ---------------------------------------------------------------------------- sampling
def generate(objective: DiscreteObjective, params, key, num: int, seq_len: int, *, method: str,
             steps: int, temperature: float = 1.0, top_p: Optional[float] = None,
             x_init: Optional[np.ndarray] = None, batch_size: int = 64):
    """``(tokens (num, seq_len) numpy, model calls per batch (list))``, drawn ``batch_size`` at
    a time (``experiments.common.map_batches``: one compilation, chunk ``i`` uses
    ``fold_in(key, i)``). ``x_init`` (seq_len,): prompt with mask ids at free positions."""
    method = default_method(objective, method)
    batch_size = int(min(batch_size, num))
    shape = (batch_size, int(seq_len))
    init = None
    if x_init is not None:
        init = jnp.broadcast_to(jnp.asarray(x_init, jnp.int32), shape)

    @jax.jit
    def draw(params, key, temperature, top_p):
        return discrete.sample(objective.model_fn(params), key, shape, process=objective.process,
                               steps=int(steps), x_init=init, temperature=temperature,
                               top_p=top_p, method=method)

    params = jax.device_put(params, jax.local_devices()[0])
    top = None if not top_p else jnp.float32(top_p)

    def call(k):
        x, info = draw(params, k, jnp.float32(temperature), top)
        return x, info["nfe"]

    tokens, nfes = common.map_batches(call, key, num, batch_size)
    return tokens, [int(v) for v in nfes]


@functools.lru_cache(maxsize=4)
def _train_words(name: str, data_dir: str) -> frozenset:
    raw = dtext.split_text(name, "train", data_dir=data_dir or None).decode("ascii")
    return frozenset(raw.split())


def word_fraction(texts, words: frozenset) -> dict:
    """Share of the complete words of ``texts`` found in ``words`` (the first and last word of
    each text, which may be cut, are dropped)."""
    inner = [w for t in texts for w in t.split()[1:-1]]
    found = sum(w in words for w in inner)
    return {"word_fraction": found / max(len(inner), 1), "num_words": len(inner)}


def sample_quality(config, texts, test=None) -> dict:
    """Word statistics of ``texts`` next to those of as many held-out sequences (``test``: the
    test-split dataset if already built)."""
    words = _train_words(config.data.name, str(config.data.get("data_dir", "")))
    out = word_fraction(texts, words)
    test = build_dataset(config, "test") if test is None else test
    ref = test.info.postprocess(test.as_arrays(len(texts))["x"])
    out["heldout_word_fraction"] = word_fraction(ref, words)["word_fraction"]
    out["num_samples"] = len(texts)
    return out


def _sample_settings(config, objective, method=None, steps=None, temperature=None, top_p=None):
    s = config.sample
    return dict(method=default_method(objective, method or s.get("solver", "")),
                steps=int(steps or s.steps),
                temperature=float(s.temperature if temperature is None else temperature),
                top_p=float(s.top_p if top_p is None else top_p) or None)


def sample_texts(config, objective: DiscreteObjective, params, info, num: int, key, *,
                 batch_size=None, x_init=None, **overrides):
    """``(texts, tokens, sampler settings with the model calls per batch)``: ``num`` samples
    with ``config.sample``'s settings (``overrides``: method, steps, temperature, top_p)."""
    settings = _sample_settings(config, objective, **overrides)
    tokens, nfes = generate(objective, params, key, num, int(info.shape[0]), x_init=x_init,
                            batch_size=int(batch_size or config.sample.batch_size), **settings)
    return info.postprocess(tokens), tokens, {**settings, "nfe_per_batch": nfes}


def write_texts(path: str, texts) -> None:
    with open(path, "w") as f:
        f.write("\n".join(texts) + "\n")


def final_samples(exp: common.Experiment, params, *, seed: int) -> dict:
    """The end of ``experiments.train`` for text: samples to ``samples.txt`` and their word
    statistics."""
    config = exp.config
    t0 = time.perf_counter()
    texts, _, sampler = sample_texts(config, exp.objective, params, exp.info,
                                     int(config.sample.num_samples), jax.random.key(seed))
    seconds = time.perf_counter() - t0
    quality = sample_quality(config, texts)
    if jax.process_index() == 0:
        write_texts(os.path.join(exp.workdir, SAMPLES_FILE), texts)
        for line in texts[:4]:
            logging.info("sample: %s", line)
    return {"sample_seconds": seconds, "quality": quality, "sampler": sampler}


# ---------------------------------------------------------------------------- the ELBO
def bits_per_char(objective: DiscreteObjective, params, tokens: np.ndarray, key, *,
                  elbo_samples: int = 4, num_steps: Optional[int] = None,
                  batch_size: int = 64) -> dict:
    """The negative ELBO of ``tokens`` (N, L) in bits per character (module docstring).

    Each batch of ``B`` sequences is tiled ``K = elbo_samples`` times and scored by one call
    of ``process.nelbo(model_fn, x0, key, num_steps, antithetic=True)`` on the ``K B`` rows,
    so the times of the ``K B`` draws are stratified; each sequence's bound is the mean of
    its K draws. Returns the estimate, its standard error and the token count.
    """
    if elbo_samples < 1:
        raise ValueError(f"elbo_samples must be >= 1, got {elbo_samples}")
    tokens = np.asarray(tokens, np.int32)
    n, seq_len = tokens.shape
    K = int(elbo_samples)
    process = objective.process

    @jax.jit
    def score(params, x0, key):
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
    estimator = ("continuous-time ELBO" if num_steps is None else f"{num_steps}-step ELBO")
    return {"estimator": f"{estimator} of the {type(process).__name__}, {K} time samples per "
                         f"sequence, antithetic (stratified) times",
            "bits_per_char": float(per_seq.mean()),
            "stderr_bits_per_char": float(per_seq.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
            "nats_per_token": float(per_seq.mean() * math.log(2.0)),
            "elbo_samples": K, "num_steps": num_steps, "antithetic": True,
            "num_sequences": int(n), "seq_len": int(seq_len), "num_tokens": int(n * seq_len)}


def unigram_baselines(config) -> dict:
    name, data_dir = config.data.name, common._opt(config.data.get("data_dir", ""))
    train = np.frombuffer(dtext.split_text(name, "train", data_dir=data_dir), np.uint8)
    test = np.frombuffer(dtext.split_text(name, "test", data_dir=data_dir), np.uint8)
    p = np.bincount(train, minlength=256).astype(np.float64)
    p /= p.sum()
    q = np.bincount(test, minlength=256) / len(test)
    seen = q > 0
    cross = float(-(q[seen] * np.log2(np.maximum(p[seen], 1e-300))).sum())
    return {"unigram_entropy_bits": dtext.unigram_entropy_bits(test),
            "unigram_entropy_bits_train": dtext.unigram_entropy_bits(train),
            "unigram_cross_entropy_bits": cross}


# ---------------------------------------------------------------------------- spell checking
def spell_check(objective: DiscreteObjective, params, tokens: np.ndarray, key, *, t: float,
                steps: int = 1, batch_size: int = 64) -> dict:
    """Corrupt ``tokens`` with the uniform process at time ``t`` and restore them with the
    model (``discrete.restore``, ``steps`` reverse steps, argmax); character error rates."""
    if not isinstance(objective.process, discrete.UniformProcess):
        raise ValueError("spell checking needs a uniform-process model "
                         "(diffusion.process='uniform')")
    if not 0.0 < t < 1.0:
        raise ValueError(f"spell_t must be in (0, 1), got {t}")
    tokens = np.asarray(tokens, np.int32)
    process = objective.process

    @jax.jit
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
            "example": {"original": dtext.decode(tokens[0]), "corrupted": dtext.decode(noisy[0]),
                        "restored": dtext.decode(fixed[0])}}


# ---------------------------------------------------------------------------- evaluate
def define_evaluate_flags() -> None:
    """The text-only flags of ``experiments.evaluate``."""
    flags.DEFINE_integer("elbo_samples", None, "Text: time samples K per held-out sequence "
                         "for bits/char; default: config.eval.elbo_samples.")
    flags.DEFINE_integer("elbo_steps", None, "Text: 0 = continuous-time ELBO, T = the T-step "
                         "ELBO; default: config.eval.elbo_steps.")
    flags.DEFINE_float("spell_t", None, "Text (uniform process): corruption time of the spell "
                       "check, 0 skips it; default: config.eval.spell_t.")


def evaluate(workdir: str, *, num_samples=None, nll_examples=None, solver=None, steps=None,
             seed=None, elbo_samples=None, elbo_steps=None, spell_t=None) -> dict:
    """Bits/char, samples and spell checking of ``workdir``'s latest checkpoint (EMA
    parameters); writes ``metrics.json`` and ``eval_samples.txt``."""
    t_start = time.perf_counter()
    config = common.load_config(workdir)
    ev = config.eval
    seed = int(ev.seed if seed is None else seed)
    num_samples = int(ev.num_samples if num_samples is None else num_samples)
    examples = int(ev.examples if nll_examples is None else nll_examples)
    elbo_samples = int(ev.elbo_samples if elbo_samples is None else elbo_samples)
    elbo_steps = int(ev.elbo_steps if elbo_steps is None else elbo_steps) or None
    spell_t = float(ev.spell_t if spell_t is None else spell_t)
    objective, params, info, step = common.restore_params(config, workdir)
    out = {"step": step, "dataset": config.data.name, "config": str(config.name),
           "process": config.diffusion.process, "parameters": "ema"}
    out.update(unigram_baselines(config))

    t0 = time.perf_counter()
    test = build_dataset(config, "test")  # read once for the ELBO, samples and spell check
    tokens = test.as_arrays(examples or None)["x"]
    lik = bits_per_char(objective, params, tokens, jax.random.key(seed),
                        elbo_samples=elbo_samples, num_steps=elbo_steps,
                        batch_size=int(ev.batch_size))
    lik["seconds"] = time.perf_counter() - t0
    out["likelihood"] = lik
    out["bits_per_char"] = lik["bits_per_char"]
    out["num_tokens"] = lik["num_tokens"]
    out["bits_below_unigram"] = out["unigram_entropy_bits"] - lik["bits_per_char"]

    if num_samples > 0:
        t0 = time.perf_counter()
        texts, _, sampler = sample_texts(config, objective, params, info, num_samples,
                                         jax.random.key(seed + 1), method=solver, steps=steps)
        out["sampler"] = {**sampler, "seconds": time.perf_counter() - t0}
        out["sample_quality"] = sample_quality(config, texts, test)
        out["samples"] = texts[:8]
        write_texts(os.path.join(workdir, EVAL_SAMPLES_FILE), texts)

    if spell_t > 0 and isinstance(objective.process, discrete.UniformProcess):
        t0 = time.perf_counter()
        tokens = test.as_arrays(int(ev.spell_examples) or None)["x"]
        out["spelling"] = spell_check(objective, params, tokens, jax.random.key(seed + 2),
                                      t=spell_t, steps=int(ev.spell_steps),
                                      batch_size=int(ev.batch_size))
        out["spelling"]["seconds"] = time.perf_counter() - t0
    out["seconds"] = time.perf_counter() - t_start

    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(out, f, indent=2, default=float)
    _tensorboard(workdir, step, out)
    return out


def _tensorboard(workdir: str, step: int, out: dict) -> None:
    from tensorboardX import SummaryWriter

    scalars = {"bits_per_char": out.get("bits_per_char"),
               "word_fraction": out.get("sample_quality", {}).get("word_fraction"),
               "cer_before": out.get("spelling", {}).get("cer_before"),
               "cer_after": out.get("spelling", {}).get("cer_after")}
    with SummaryWriter(os.path.join(workdir, common.TENSORBOARD_DIR)) as writer:
        for k, v in scalars.items():
            if v is not None:
                writer.add_scalar(f"eval/{k}", v, step)


def evaluate_main(FLAGS) -> dict:
    out = evaluate(FLAGS.workdir, num_samples=FLAGS.num_samples, nll_examples=FLAGS.nll_examples,
                   solver=FLAGS.solver, steps=FLAGS.steps, seed=FLAGS.seed,
                   elbo_samples=FLAGS.elbo_samples, elbo_steps=FLAGS.elbo_steps,
                   spell_t=FLAGS.spell_t)
    headline = {k: out[k] for k in ("bits_per_char", "unigram_entropy_bits",
                                    "bits_below_unigram", "num_tokens") if k in out}
    if "likelihood" in out:
        headline["estimator"] = out["likelihood"]["estimator"]
    if "sample_quality" in out:
        headline["word_fraction"] = out["sample_quality"]["word_fraction"]
    if "spelling" in out:
        headline.update(cer_before=out["spelling"]["cer_before"],
                        cer_after=out["spelling"]["cer_after"])
    print(f"step {out['step']}: {json.dumps(headline)}")
    for line in out.get("samples", [])[:4]:
        print("sample:", line)
    return out


# ---------------------------------------------------------------------------- sample
def define_sample_flags() -> None:
    """The text-only flags of ``experiments.sample``."""
    flags.DEFINE_float("temperature", None, "Text: sampling temperature (0 = greedy); "
                       "default: config.sample.temperature.")
    flags.DEFINE_float("top_p", None, "Text: nucleus sampling mass (0 = off); default: "
                       "config.sample.top_p.")
    flags.DEFINE_string("prompt", "", "Text: characters to keep; '_' and every position after "
                        "the prompt are generated (prefix: 'the file'; infilling: 'the ___ is').")


def draw(workdir: str, num_samples: int, *, solver=None, steps=None, seed: int = 0,
         temperature=None, top_p=None, prompt: str = "", batch_size=None):
    """``(texts, tokens, info)`` sampled from ``workdir``'s latest checkpoint (EMA)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    config = common.load_config(workdir)
    objective, params, info, step = common.restore_params(config, workdir)
    x_init = (encode_prompt(prompt, int(info.shape[0]), objective.vocab_size) if prompt
              else None)
    texts, tokens, sampler = sample_texts(
        config, objective, params, info, num_samples, jax.random.key(seed),
        batch_size=batch_size, x_init=x_init, method=solver, steps=steps,
        temperature=temperature, top_p=top_p)
    return texts, tokens, {**sampler, "step": step}


def sample_main(FLAGS) -> list:
    output = FLAGS.output or os.path.join(FLAGS.workdir, SAMPLES_FILE)
    t0 = time.perf_counter()
    texts, _, info = draw(FLAGS.workdir, FLAGS.num_samples, solver=FLAGS.solver,
                          steps=FLAGS.steps, seed=FLAGS.seed, temperature=FLAGS.temperature,
                          top_p=FLAGS.top_p, prompt=FLAGS.prompt, batch_size=FLAGS.batch_size)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_texts(output, texts)
    for line in texts:
        print(line)
    print(f"wrote {output}: {len(texts)} samples, {info['method']} {info['steps']} steps, "
          f"model calls per batch {info['nfe_per_batch']}, step {info['step']}, "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return texts
