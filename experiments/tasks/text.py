r"""The text task: discrete (masked / uniform) diffusion on characters.

A config with ``task = "text"`` trains on a text dataset (``stdlib_text``, ``text8``; see
:mod:`diffjax.data.text`)::

    python -m experiments.train --config=experiments/configs/text_small.py --workdir=DIR
    python -m experiments.evaluate --workdir=DIR            # bits/char, samples, spell check
    python -m experiments.sample --workdir=DIR --num_samples=8 --output=FILE.txt \
        [--solver=first_hitting|ancestral|confidence|left_to_right|remdm --steps=64 \
         --temperature=1.0 --top_p=0.9 --prompt="the file ____ is opened" \
         --confidence_temperature=0.5 --remask_schedule=cap --remask_eta=0.02 \
         --judge=AR_DIR]   # --judge: FILE.json with the generative perplexity under AR_DIR

Config sections of a text config (``experiments/configs/text_small.py``)::

    data.name ("stdlib_text" | "text8" | "text_file"), .batch_size, .seq_len, .vocab ("char"),
         .data_dir; "text_file" (your own text, `diffjax.data.local`): .path (the file),
         .vocab "char" (its own characters) or "byte", e.g. ``--config=experiments/configs/
         text_small.py --config.data.name=text_file --config.data.path=FILE``
    model.name = "token_transformer", .dim, .depth, .heads, .mlp_ratio, .cond_dim,
         .positions, .dropout, .dtype ("float32" | "bfloat16" compute), .time_embedding,
         .self_condition (default False: self-conditioning, the model also gets its previous
         predicted distribution; trained with `make_discrete_objective(...,
         self_condition=True)`, sampled with ``discrete.sample(..., self_condition=True)``;
         not with order="left_to_right")
    diffusion.process ("masked" | "uniform"), .schedule ("linear" | "cosine" | "polynomial"),
         .exponent (polynomial), .loss ("nelbo" | "hybrid"), .ce_weight, .num_steps
         (0 = the continuous-time bound, T = the T-step bound), .antithetic, .order (masked:
         "random" = MDLM / MD4, or "left_to_right" = an autoregressive model: the masked
         process with a fixed order, a causal TokenTransformer, trained on its exact
         likelihood; e.g. ``--config.diffusion.order=left_to_right``)
    sample.solver ("" = first_hitting for masked, ancestral for uniform, left_to_right for
         order="left_to_right"; or any of diffjax.discrete.METHODS), .steps, .temperature,
         .top_p (0 = off), .num_samples, .batch_size, .confidence_temperature ("confidence"),
         .remask_schedule and .remask_eta ("remdm")
    eval.examples (held-out sequences, 0 = all), .batch_size, .elbo_samples (K), .elbo_steps
         (0 = continuous time), .num_samples, .spell_t (0 = off), .spell_examples,
         .spell_steps, .seed

Evaluation (``metrics.json``):

* ``bits_per_char``: for ``diffusion.order = "left_to_right"`` the exact negative
  log-likelihood of the held-out split in bits per character (``process.nll``: one forward
  pass of the causal model per batch, no Monte Carlo). Otherwise the negative ELBO, by the
  estimator named in ``likelihood.estimator``: the continuous-time ELBO of the run's process
  (``process.nelbo`` with ``num_steps=None``; MDLM / MD4 for masked, the CTMC limit of the
  multinomial bound for uniform), ``K = eval.elbo_samples`` time samples per sequence, times
  stratified (antithetic) across the ``K x batch`` draws of each batch. An ELBO is an upper
  bound on the model's negative log-likelihood. ``likelihood.num_tokens`` is the number of
  characters scored; ``likelihood.stderr_bits_per_char`` the Monte Carlo standard error.
  ``eval.elbo_steps = T`` uses the T-step bound (Hoogeboom et al. report T = 1000).
  ``experiments.evaluate --order=left_to_right`` scores a random-order masked model under the
  fixed order instead (the exact likelihood of the autoregressive model it defines; one model
  call per position), for comparison with its random-order ELBO.
* ``unigram_entropy_bits``: the entropy of the held-out text's character frequencies (the
  baseline a model must beat), with the training split's entropy and the cross-entropy of
  the training frequencies on the held-out text; ``bits_below_unigram`` the difference.
* ``sample_quality``: ``word_fraction``, the share of the complete words of the samples
  (the first and last, possibly cut, word of every sequence are dropped) that occur in the
  training text, next to the same share for held-out text; samples go to
  ``eval_samples.txt``.
* ``sample_quality.unigram_entropy_bits``: the character entropy of the samples (low values
  mean repetitive text); with ``--judge=AR_DIR`` (an autoregressive run,
  ``diffusion.order=left_to_right``, on the same data) ``generative_perplexity``, ``2 **`` the
  judge's exact bits/char of the samples (``text_metrics.generative_perplexity``).
* ``spelling`` (uniform-process runs; Hoogeboom et al. 2021, section 5): held-out text
  corrupted by the uniform process at ``t = eval.spell_t`` (each character resampled with
  probability ``t``) and restored by the model (``diffjax.discrete.restore``, ``spell_steps``
  reverse steps, argmax); the character error rate before and after.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from flax import nnx

from diffjax import discrete, models, platform
from diffjax.data import local as dlocal
from diffjax.data import text as dtext
from diffjax.training.objectives import DiscreteObjective, make_discrete_objective
from experiments import common, text_metrics
from experiments.tasks.base import Task

__all__ = ["TextTask", "PROCESSES", "build_process", "default_method", "encode_prompt",
           "generate", "sample_texts", "sample_quality", "write_texts", "SAMPLES_FILE",
           "EVAL_SAMPLES_FILE", "METRICS_FILE"]

PROCESSES = ("masked", "uniform")
FREE_CHAR = "_"  # marks the positions to generate in a --prompt
SAMPLES_FILE = "samples.txt"
EVAL_SAMPLES_FILE = "eval_samples.txt"
METRICS_FILE = "metrics.json"


def build_process(config, vocab_size: int, order: Optional[str] = None):
    """The config's process; ``order`` overrides ``diffusion.order`` (masked process only)."""
    d = config.diffusion
    if d.process not in PROCESSES:
        raise ValueError(f"diffusion.process must be one of {list(PROCESSES)}, got {d.process!r}")
    exponent = float(d.get("exponent", 0.0)) or None
    order = order or _order(config)
    if d.process == "uniform":
        if order != "random":
            raise ValueError(f"diffusion.order={order!r} needs diffusion.process='masked' (the uniform "
                             f"process has no unmasking order)")
        return discrete.uniform(vocab_size, d.schedule, exponent=exponent)
    if order not in discrete.ORDERS:
        raise ValueError(f"diffusion.order must be one of {list(discrete.ORDERS)}, got {order!r}")
    return discrete.masked(vocab_size, d.schedule, exponent=exponent, order=order)


def _order(config) -> str:
    return config.diffusion.get("order", "random") or "random"


def default_method(objective: DiscreteObjective, method: Optional[str] = None) -> str:
    """``method``, or the process's default sampler (first-hitting for masked models,
    left-to-right for the fixed order)."""
    if method:
        if method not in discrete.METHODS:
            raise ValueError(f"the sampler of a text model must be one of "
                             f"{list(discrete.METHODS)}, got {method!r}")
        return method
    if getattr(objective.process, "fixed_order", False):
        return "left_to_right"
    return "first_hitting" if isinstance(objective.process, discrete.MaskedProcess) else "ancestral"


# ---------------------------------------------------------------------------- prompts
def encode_prompt(prompt: str, seq_len: int, vocab_size: int,
                  alphabet: Optional[str] = None) -> np.ndarray:
    """A prompt -> ``x_init`` of shape ``(seq_len,)``: its characters are kept, ``_`` and every
    position after the prompt are generated (value ``vocab_size``, the mask id).

    ``"the module"`` is a prefix; ``"the ____ module"`` asks for infilling. Letters are
    lower-cased; any other character than a-z, space and ``_`` raises ValueError. With
    ``alphabet`` (a ``text_file``'s ``info.extra["alphabet"]``: id ``k`` is ``alphabet[k]``)
    the characters are looked up there as they are, and any character outside it (but ``_``)
    raises ValueError.
    """
    if alphabet is not None:
        return _encode_prompt_in(prompt, seq_len, vocab_size, alphabet, "characters of the training file")
    return _encode_prompt_in(prompt.lower(), seq_len, vocab_size, dtext.CHARS, "a-z, space")


def _encode_prompt_in(prompt: str, seq_len: int, vocab_size: int, alphabet: str, allowed: str) -> np.ndarray:
    """``encode_prompt`` with id ``k`` = ``alphabet[k]``; ``allowed`` describes the alphabet in errors."""
    if len(prompt) > seq_len:
        raise ValueError(f"prompt has {len(prompt)} characters, more than seq_len={seq_len}")
    index = {ch: k for k, ch in enumerate(alphabet)}
    bad = sorted(set(prompt) - set(index) - {FREE_CHAR})
    if bad:
        raise ValueError(f"prompt may only hold {allowed} and {FREE_CHAR!r} (to generate); got {bad}")
    x = np.full((seq_len,), vocab_size, np.int32)
    for i, ch in enumerate(prompt):
        if ch != FREE_CHAR:
            x[i] = index[ch]
    return x


# ---------------------------------------------------------------------------- sampling
def _sampling_model(objective: DiscreteObjective, params):
    """``(model_fn, extra keyword arguments of discrete.sample)``: a self-conditioned model is
    sampled as ``model_fn(x, t, probs_prev)`` with ``self_condition=True``."""
    if getattr(objective, "self_condition", False):
        return objective.self_cond_model_fn(params), {"self_condition": True}
    return objective.model_fn(params), {}


def generate(objective: DiscreteObjective, params, key, num: int, seq_len: int, *, method: str,
             steps: int, temperature: float = 1.0, top_p: Optional[float] = None,
             x_init: Optional[np.ndarray] = None, batch_size: int = 64, **options):
    """``(tokens (num, seq_len) numpy, model calls per batch (list))``, drawn ``batch_size`` at
    a time (``experiments.common.map_batches``: one compilation, chunk ``i`` uses
    ``fold_in(key, i)``). ``x_init`` (seq_len,): prompt with mask ids at free positions.
    ``options``: further keyword arguments of ``diffjax.discrete.sample``
    (``confidence_temperature``, ``remask_schedule``, ``remask_eta``)."""
    method = default_method(objective, method)
    if getattr(objective, "causal", False) and int(steps) < int(seq_len):
        # a causal model reads the tokens before each position; revealing several positions in
        # one step would feed it masked predecessors, a state it never saw in training
        raise ValueError(f"steps={int(steps)}: an autoregressive (causal) model samples one token "
                         f"per model call, so steps must be >= the sequence length {int(seq_len)}")
    batch_size = int(min(batch_size, num))
    shape = (batch_size, int(seq_len))
    init = None
    if x_init is not None:
        init = jnp.broadcast_to(jnp.asarray(x_init, jnp.int32), shape)

    @platform.jit
    def draw(params, key, temperature, top_p):
        fn, extra = _sampling_model(objective, params)
        return discrete.sample(fn, key, shape, process=objective.process,
                               steps=int(steps), x_init=init, temperature=temperature,
                               top_p=top_p, method=method, **options, **extra)

    params = jax.device_put(params, jax.local_devices()[0])
    top = None if not top_p else jnp.float32(top_p)

    def call(k):
        x, info = draw(params, k, jnp.float32(temperature), top)
        return x, info["nfe"]

    tokens, nfes = common.map_batches(call, key, num, batch_size)
    return tokens, [int(v) for v in nfes]


def _sample_settings(config, objective, method=None, steps=None, temperature=None, top_p=None,
                     confidence_temperature=None, remask_schedule=None, remask_eta=None):
    s = config.sample

    def pick(value, name, default):
        return s.get(name, default) if value is None else value

    method = default_method(objective, method or s.get("solver", ""))
    settings = dict(method=method, steps=int(steps or s.steps),
                    temperature=float(pick(temperature, "temperature", 1.0)),
                    top_p=float(pick(top_p, "top_p", 0.0)) or None)
    if method == "confidence":
        settings["confidence_temperature"] = float(pick(confidence_temperature, "confidence_temperature", 0.0))
    if method == "remdm":
        settings.update(remask_schedule=str(pick(remask_schedule, "remask_schedule", "cap")),
                        remask_eta=float(pick(remask_eta, "remask_eta", 0.02)))
    return settings


def sample_texts(config, objective: DiscreteObjective, params, info, num: int, key, *,
                 batch_size=None, x_init=None, **overrides):
    """``(texts, tokens, sampler settings with the model calls per batch)``: ``num`` samples
    with ``config.sample``'s settings (``overrides``: method, steps, temperature, top_p). A causal
    (autoregressive) model samples in as many steps as the sequence has tokens unless ``steps`` is
    given; fewer steps are refused."""
    if getattr(objective, "causal", False) and not overrides.get("steps"):
        overrides["steps"] = int(info.shape[0])  # autoregressive: one token per model call
    settings = _sample_settings(config, objective, **overrides)
    tokens, nfes = generate(objective, params, key, num, int(info.shape[0]), x_init=x_init,
                            batch_size=int(batch_size or config.sample.batch_size), **settings)
    return info.postprocess(tokens), tokens, {**settings, "nfe_per_batch": nfes}


def sample_quality(config, texts, test, tokens=None) -> dict:
    """Word statistics of ``texts`` next to those of as many held-out sequences (``test``:
    the test-split dataset); with ``tokens`` (the samples' ids) also the samples' unigram
    entropy in bits per character (``unigram_entropy_bits``)."""
    words = _train_words(config)
    out = text_metrics.word_fraction(texts, words)
    ref = test.info.postprocess(test.as_arrays(len(texts))["x"])
    out["heldout_word_fraction"] = text_metrics.word_fraction(ref, words)["word_fraction"]
    out["num_samples"] = len(texts)
    if tokens is not None:
        out["unigram_entropy_bits"] = dtext.unigram_entropy_bits(np.asarray(tokens))
    return out


def _split_tokens(config, split: str) -> np.ndarray:
    """The whole token stream of ``split`` of a ``text_file`` config."""
    d = config.data
    return dlocal.TextFileSource(d.path, split, seq_len=1, vocab=d.get("vocab", "char")).tokens


def _train_words(config) -> frozenset:
    """The words of the training text (for ``word_fraction``)."""
    d = config.data
    if d.name not in dlocal.TEXT_NAMES:
        return text_metrics.train_words(d.name, str(d.get("data_dir", "")))
    source = dlocal.TextFileSource(d.path, "train", seq_len=1, vocab=d.get("vocab", "char"))
    return frozenset(source.decode(source.tokens).split())


def _unigram_baselines(config) -> dict:
    d = config.data
    if d.name not in dlocal.TEXT_NAMES:
        return text_metrics.unigram_baselines(d.name, common.opt(d.get("data_dir", "")))
    return text_metrics.token_unigram_baselines(_split_tokens(config, "train"),
                                                _split_tokens(config, "test"))


def write_texts(path: str, texts) -> None:
    with open(path, "w") as f:
        f.write("\n".join(texts) + "\n")


# ---------------------------------------------------------------------------- the task
class TextTask(Task):
    """Masked or uniform discrete diffusion on characters (module docstring)."""

    name = "text"

    # ---------------------------------------------------------------- building
    def data_options(self, config) -> dict:
        d = config.data
        options = dict(seq_len=int(d.seq_len), vocab=d.get("vocab", "char"))
        if d.name in dlocal.TEXT_NAMES:  # the user's file: data.path
            options["path"] = d.get("path", "")
        return options

    def build_model(self, config, info) -> nnx.Module:
        m = config.model
        if m.name != "token_transformer":
            raise ValueError(f"text configs need model.name='token_transformer', got {m.name!r}")
        masked = config.diffusion.process == "masked"
        if m.get("self_condition", False) and masked and _order(config) == "left_to_right":
            raise ValueError("model.self_condition=True is not available with diffusion.order="
                             "'left_to_right' (a causal model is scored in one pass)")
        return models.TokenTransformer(
            int(info.vocab_size), num_extra_tokens=1 if masked else 0, seq_len=int(info.shape[0]),
            causal=masked and _order(config) == "left_to_right",
            dim=int(m.dim), depth=int(m.depth), heads=int(m.heads), mlp_ratio=float(m.mlp_ratio),
            dropout=float(m.dropout), cond_dim=int(m.get("cond_dim", 0)) or None,
            positions=m.get("positions", "rope"),
            time_embedding=m.get("time_embedding", "sinusoidal"),
            self_condition=bool(m.get("self_condition", False)),
            dtype=common.dtype(m.get("dtype", "float32")), rngs=nnx.Rngs(int(config.seed)))

    def build_objective(self, config, model: nnx.Module):
        d = config.diffusion
        process = build_process(config, int(model.vocab_size))
        return make_discrete_objective(model, process=process, loss=d.get("loss", "nelbo"),
                                       num_steps=int(d.get("num_steps", 0)) or None,
                                       ce_weight=float(d.get("ce_weight", 0.01)),
                                       antithetic=bool(d.get("antithetic", True)),
                                       self_condition=bool(config.model.get("self_condition", False)))

    # ---------------------------------------------------------------- train
    def sample_fn(self, config, objective, info, batch_size: int):
        settings = _sample_settings(config, objective)
        shape = (int(batch_size), int(info.shape[0]))
        free = objective.process.vocab_size  # the id of a position to generate

        def fn(params, key, x_init):
            model_fn, extra = _sampling_model(objective, params)
            return discrete.sample(model_fn, key, shape, process=objective.process, x_init=x_init,
                                   **settings, **extra)[0]
        return fn, (np.full(shape, free, np.int32),)

    def sample_nfe(self, config, objective, info) -> int:
        settings = _sample_settings(config, objective)
        vocab = objective.process.vocab_size
        _, out = discrete.sample(lambda x, t: jnp.zeros(x.shape + (vocab,)), jax.random.key(0),
                                 (1, int(info.shape[0])), process=objective.process, **settings)
        return int(out["nfe"])

    def final_samples(self, exp: common.Experiment, params, *, seed: int) -> dict:
        """Samples to ``samples.txt`` and their word statistics."""
        config = exp.config
        t0 = time.perf_counter()
        texts, _, sampler = sample_texts(config, exp.objective, params, exp.info,
                                         int(config.sample.num_samples), jax.random.key(seed))
        seconds = time.perf_counter() - t0
        quality = sample_quality(config, texts, self.build_dataset(config, "test"))
        if jax.process_index() == 0:
            write_texts(os.path.join(exp.workdir, SAMPLES_FILE), texts)
            for line in texts[:4]:
                logging.info("sample: %s", line)
        return {"sample_seconds": seconds, "quality": quality, "sampler": sampler}

    # ---------------------------------------------------------------- sample
    def define_sample_flags(self, flag_values) -> None:
        kw = dict(flag_values=flag_values)
        flags.DEFINE_float("temperature", None, "Text: sampling temperature (0 = greedy); "
                           "default: config.sample.temperature.", **kw)
        flags.DEFINE_float("top_p", None, "Text: nucleus sampling mass (0 = off); default: "
                           "config.sample.top_p.", **kw)
        flags.DEFINE_string("prompt", "", "Text: characters to keep; '_' and every position "
                            "after the prompt are generated (prefix: 'the file'; infilling: "
                            "'the ___ is').", **kw)
        flags.DEFINE_float("confidence_temperature", None, "Text, solver=confidence: temperature "
                           "of the unmasking order (0 = greedy); default: config.sample.", **kw)
        flags.DEFINE_enum("remask_schedule", None, ["cap", "rescale"], "Text, solver=remdm: the "
                          "remasking schedule; default: config.sample.", **kw)
        flags.DEFINE_float("remask_eta", None, "Text, solver=remdm: eta in [0, 1] (0 = no "
                           "remasking); default: config.sample.", **kw)
        flags.DEFINE_string("judge", "", "Text: workdir of an autoregressive run "
                            "(diffusion.order=left_to_right) on the same data; the samples' "
                            "generative perplexity under it, their unigram entropy and word "
                            "share go to OUTPUT's .json next to the text.", **kw)

    def draw(self, workdir: str, num_samples: int, *, solver=None, steps=None, seed: int = 0,
             temperature=None, top_p=None, prompt: str = "", batch_size=None, **options):
        """``(texts, tokens, info)`` sampled from ``workdir``'s latest checkpoint (EMA);
        ``options``: ``confidence_temperature``, ``remask_schedule``, ``remask_eta``."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        config = common.load_config(workdir)
        objective, params, info, step = self.restore_params(config, workdir)
        alphabet = info.extra.get("alphabet") if info.name in dlocal.TEXT_NAMES else None
        if prompt and info.name in dlocal.TEXT_NAMES and alphabet is None:
            raise ValueError("prompt needs a character vocabulary; this text_file run uses "
                             "data.vocab='byte'")
        x_init = (encode_prompt(prompt, int(info.shape[0]), objective.vocab_size, alphabet)
                  if prompt else None)
        texts, tokens, sampler = sample_texts(
            config, objective, params, info, num_samples, jax.random.key(seed),
            batch_size=batch_size, x_init=x_init, method=solver, steps=steps,
            temperature=temperature, top_p=top_p, **options)
        return texts, tokens, {**sampler, "step": step}

    def judge_samples(self, config, texts, tokens, judge: str, *, batch_size: int = 64) -> dict:
        """Quality of samples (``texts`` and their ids ``tokens``) of a run with ``config``:
        ``sample_quality`` (word share, unigram entropy) and the generative perplexity under
        the autoregressive run in ``judge`` (``text_metrics.generative_perplexity``)."""
        jconfig = common.load_config(judge)
        judge_obj, judge_params, judge_info, judge_step = self.restore_params(jconfig, judge)
        if not getattr(judge_obj.process, "fixed_order", False):
            raise ValueError(f"--judge={judge!r} must be an autoregressive run "
                             f"(diffusion.order='left_to_right'), not order={_order(jconfig)!r}")
        tokens = np.asarray(tokens, np.int32)
        data = [(c.data.name, c.data.get("vocab", "char"), c.data.get("path", "")) for c in (jconfig, config)]
        if data[0] != data[1] or int(tokens.max(initial=0)) >= judge_obj.vocab_size:
            raise ValueError(f"--judge={judge!r} was trained on data (name, vocab, path) = {data[0]}; "
                             f"the samples are of {data[1]}")
        if tokens.shape[1] > int(judge_info.shape[0]):
            raise ValueError(f"--judge={judge!r} has seq_len {judge_info.shape[0]}, shorter than "
                             f"the samples ({tokens.shape[1]})")
        out = sample_quality(config, texts, self.build_dataset(config, "test"), tokens)
        out.update(text_metrics.generative_perplexity(judge_obj, judge_params, tokens,
                                                      batch_size=batch_size))
        out.update(judge=os.path.abspath(judge), judge_step=judge_step)
        return out

    def sample_main(self, F) -> None:
        output = F.output or os.path.join(F.workdir, SAMPLES_FILE)
        t0 = time.perf_counter()
        options = {k: getattr(F, k) for k in ("confidence_temperature", "remask_schedule",
                                               "remask_eta")}
        texts, tokens, info = self.draw(F.workdir, F.num_samples, solver=F.solver, steps=F.steps,
                                        seed=F.seed, temperature=F.temperature, top_p=F.top_p,
                                        prompt=F.prompt, batch_size=F.batch_size, **options)
        seconds = time.perf_counter() - t0
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        write_texts(output, texts)
        for line in texts:
            print(line)
        print(f"wrote {output}: {len(texts)} samples, {info['method']} {info['steps']} steps, "
              f"model calls per batch {info['nfe_per_batch']}, step {info['step']}, "
              f"{seconds:.1f} s", flush=True)
        if F.judge:
            config = common.load_config(F.workdir)
            quality = self.judge_samples(config, texts, tokens, F.judge)
            report = os.path.splitext(output)[0] + ".json"
            common.write_json(report, {"sampler": info, "sample_seconds": seconds, **quality})
            print(f"wrote {report}: " + json.dumps(
                {k: quality[k] for k in ("generative_perplexity", "unigram_entropy_bits",
                                         "word_fraction")}), flush=True)

    # ---------------------------------------------------------------- evaluate
    def define_evaluate_flags(self, flag_values) -> None:
        kw = dict(flag_values=flag_values)
        flags.DEFINE_integer("elbo_samples", None, "Text: time samples K per held-out sequence "
                             "for bits/char; default: config.eval.elbo_samples.", **kw)
        flags.DEFINE_integer("elbo_steps", None, "Text: 0 = continuous-time ELBO, T = the "
                             "T-step ELBO; default: config.eval.elbo_steps.", **kw)
        flags.DEFINE_float("spell_t", None, "Text (uniform process): corruption time of the "
                           "spell check, 0 skips it; default: config.eval.spell_t.", **kw)
        flags.DEFINE_string("judge", "", "Text: workdir of an autoregressive run "
                            "(diffusion.order=left_to_right) on the same data; the samples' "
                            "generative perplexity under it goes to sample_quality.", **kw)
        flags.DEFINE_enum("order", None, list(discrete.ORDERS), "Text (masked process): score the "
                          "held-out text under this unmasking order; default: the run's "
                          "diffusion.order. 'left_to_right' on a random-order model: the exact "
                          "likelihood of the autoregressive model it defines (one model call per "
                          "position).", **kw)

    def evaluate(self, workdir: str, *, num_samples=None, nll_examples=None, solver=None,
                 steps=None, seed=None, elbo_samples=None, elbo_steps=None,
                 spell_t=None, order=None, judge: str = "") -> dict:
        """Bits/char, samples and spell checking of ``workdir``'s latest checkpoint (EMA
        parameters); writes ``metrics.json`` and ``eval_samples.txt``. ``order``: the
        unmasking order bits/char is scored under (default: the run's ``diffusion.order``);
        ``judge``: an autoregressive run's workdir, the samples' generative perplexity under it
        (``judge_samples``)."""
        t_start = time.perf_counter()
        config = common.load_config(workdir)
        ev = config.eval
        seed = int(ev.seed if seed is None else seed)
        num_samples = int(ev.num_samples if num_samples is None else num_samples)
        examples = int(ev.examples if nll_examples is None else nll_examples)
        elbo_samples = int(ev.elbo_samples if elbo_samples is None else elbo_samples)
        elbo_steps = int(ev.elbo_steps if elbo_steps is None else elbo_steps) or None
        spell_t = float(ev.spell_t if spell_t is None else spell_t)
        objective, params, info, step = self.restore_params(config, workdir)
        scoring = objective.process
        if order and order != _order(config):
            if objective.causal:
                raise ValueError(f"--order={order!r}: this run's model is causal (trained with "
                                 f"diffusion.order='left_to_right') and scores only that order")
            scoring = build_process(config, objective.vocab_size, order=order)
        out = {"step": step, "dataset": config.data.name, "config": str(config.name),
               "process": config.diffusion.process, "order": _order(config), "parameters": "ema"}
        out.update(_unigram_baselines(config))

        t0 = time.perf_counter()
        test = self.build_dataset(config, "test")  # read once for the ELBO, samples, spelling
        tokens = test.as_arrays(examples or None)["x"]
        lik = text_metrics.bits_per_char(objective, params, tokens, jax.random.key(seed),
                                         elbo_samples=elbo_samples, num_steps=elbo_steps,
                                         batch_size=int(ev.batch_size), process=scoring)
        lik["seconds"] = time.perf_counter() - t0
        out["likelihood"] = lik
        out["bits_per_char"] = lik["bits_per_char"]
        out["num_tokens"] = lik["num_tokens"]
        out["bits_below_unigram"] = out["unigram_entropy_bits"] - lik["bits_per_char"]

        if num_samples > 0:
            t0 = time.perf_counter()
            texts, sample_tokens, sampler = sample_texts(config, objective, params, info, num_samples,
                                                         jax.random.key(seed + 1), method=solver,
                                                         steps=steps)
            out["sampler"] = {**sampler, "seconds": time.perf_counter() - t0}
            if judge:
                out["sample_quality"] = self.judge_samples(config, texts, sample_tokens, judge,
                                                           batch_size=int(ev.batch_size))
            else:
                out["sample_quality"] = sample_quality(config, texts, test, sample_tokens)
            out["samples"] = texts[:8]
            write_texts(os.path.join(workdir, EVAL_SAMPLES_FILE), texts)

        if spell_t > 0 and isinstance(objective.process, discrete.UniformProcess):
            t0 = time.perf_counter()
            tokens = test.as_arrays(int(ev.spell_examples) or None)["x"]
            out["spelling"] = text_metrics.spell_check(
                objective, params, tokens, jax.random.key(seed + 2), t=spell_t,
                steps=int(ev.spell_steps), batch_size=int(ev.batch_size),
                decode=lambda ids: test.info.postprocess(np.asarray(ids)[None])[0])
            out["spelling"]["seconds"] = time.perf_counter() - t0
        out["seconds"] = time.perf_counter() - t_start

        common.write_json(os.path.join(workdir, METRICS_FILE), out)
        scalars = {"bits_per_char": out.get("bits_per_char"),
                   "word_fraction": out.get("sample_quality", {}).get("word_fraction"),
                   "cer_before": out.get("spelling", {}).get("cer_before"),
                   "cer_after": out.get("spelling", {}).get("cer_after")}
        common.write_eval_scalars(workdir, step,
                                  {k: v for k, v in scalars.items() if v is not None})
        return out

    def evaluate_main(self, F) -> dict:
        out = self.evaluate(F.workdir, num_samples=F.num_samples, nll_examples=F.nll_examples,
                            solver=F.solver, steps=F.steps, seed=F.seed,
                            elbo_samples=F.elbo_samples, elbo_steps=F.elbo_steps,
                            spell_t=F.spell_t, order=F.order, judge=F.judge)
        headline = {k: out[k] for k in ("bits_per_char", "unigram_entropy_bits",
                                        "bits_below_unigram", "num_tokens") if k in out}
        if "likelihood" in out:
            headline["estimator"] = out["likelihood"]["estimator"]
        if "sample_quality" in out:
            headline["word_fraction"] = out["sample_quality"]["word_fraction"]
            if "generative_perplexity" in out["sample_quality"]:
                headline["generative_perplexity"] = out["sample_quality"]["generative_perplexity"]
        if "spelling" in out:
            headline.update(cer_before=out["spelling"]["cer_before"],
                            cer_after=out["spelling"]["cer_after"])
        print(f"step {out['step']}: {json.dumps(headline)}")
        for line in out.get("samples", [])[:4]:
            print("sample:", line)
        return out
