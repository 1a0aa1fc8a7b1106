"""Masked-diffusion text samplers against steps: generative perplexity under an AR judge, unigram
entropy and corpus-word share of the samples, for every sampler at 16 ... 1024 steps.

    python bench/text_samplers.py --workdir=workdirs/text --judge=workdirs/text_ar \
        [--methods=ancestral,first_hitting,confidence,remdm] [--steps=16,64,256,1024] \
        [--extra_steps=remdm:128,512] [--num_samples=64] [--seed=0]

``--workdir`` is a trained masked run of ``experiments/configs/text_small.py`` and ``--judge``
an autoregressive run on the same corpus (``--config.diffusion.order=left_to_right``): the
judge's exact bits/char of the samples gives their generative perplexity
(``experiments.text_metrics.generative_perplexity``). Low perplexity can also mean repetitive
text, so each row carries the samples' unigram entropy and its ratio to the whole held-out text's, and the share
of the samples' words that occur in the training text. The first row scores as many held-out
sequences under the judge (the perplexity of real text). ``--extra_steps`` adds step counts for
some methods only (``remdm:128,512`` measures remasking between the common counts).

The samplers' own options are the run's ``config.sample`` (e.g. ``remask_eta``,
``remask_schedule``, ``confidence_temperature``); override them with ``--option=NAME=VALUE``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import results  # noqa: E402  (bench/results.py)

from experiments import common  # noqa: E402
from experiments.tasks import text as text_task  # noqa: E402


def _steps(s):
    return [int(v) for v in s.split(",") if v]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--judge", required=True)
    ap.add_argument("--methods", default="ancestral,first_hitting,confidence,remdm")
    ap.add_argument("--steps", default="16,64,256,1024")
    ap.add_argument("--extra_steps", default="remdm:128,512")
    ap.add_argument("--num_samples", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--option", action="append", default=[], help="NAME=VALUE sampler option")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    task = text_task.TextTask()
    config = common.load_config(args.workdir)
    options = {}
    for o in args.option:
        name, _, value = o.partition("=")
        options[name] = value if name == "remask_schedule" else float(value)
    plan = {m: _steps(args.steps) for m in args.methods.split(",")}
    for spec in filter(None, args.extra_steps.split(";")):
        method, _, counts = spec.partition(":")
        if method in plan:
            plan[method] = sorted(set(plan[method]) | set(_steps(counts)))

    held = task.build_dataset(config, "test").as_arrays(args.num_samples)["x"]
    held_texts = task.build_dataset(config, "test").info.postprocess(held)
    ref = task.judge_samples(config, held_texts, held, args.judge, batch_size=args.num_samples)
    corpus_entropy = text_task._unigram_baselines(config)["unigram_entropy_bits"]
    print(f"held-out text ({args.num_samples} sequences): generative perplexity "
          f"{ref['generative_perplexity']:.3f}, unigram entropy {ref['unigram_entropy_bits']:.3f} bits "
          f"(whole held-out text: {corpus_entropy:.3f}), corpus words {ref['word_fraction']:.3f}", flush=True)
    print(f"{'method':<15}{'steps':>6}{'calls':>7}{'gen ppl':>9}{'entropy':>9}{'ent/ref':>9}{'words':>8}{'s':>8}")
    rows = []
    for method, counts in plan.items():
        for steps in counts:
            t0 = time.perf_counter()
            texts, tokens, info = task.draw(args.workdir, args.num_samples, solver=method, steps=steps,
                                            seed=args.seed, batch_size=args.num_samples, **options)
            seconds = time.perf_counter() - t0
            q = task.judge_samples(config, texts, tokens, args.judge, batch_size=args.num_samples)
            ratio = q["unigram_entropy_bits"] / corpus_entropy
            rows.append((method, steps, int(np.max(info["nfe_per_batch"])), q["generative_perplexity"],
                         q["unigram_entropy_bits"], ratio, q["word_fraction"]))
            print(f"{method:<15}{steps:>6}{rows[-1][2]:>7}{q['generative_perplexity']:>9.3f}"
                  f"{q['unigram_entropy_bits']:>9.3f}{ratio:>9.3f}{q['word_fraction']:>8.3f}{seconds:>8.1f}",
                  flush=True)
            print("   ", texts[0][:64], flush=True)
    if not args.no_record:
        by = {}
        for m, s, calls, ppl, ent, ratio, words in rows:
            by.setdefault(m, []).append(f"{s}: {ppl:.2f}/{ent:.2f}/{words:.2f}")
        results.record("text_samplers", (
            f"{os.path.basename(os.path.normpath(args.workdir))}, {args.num_samples} samples of "
            f"{held.shape[1]} chars, judge {os.path.basename(os.path.normpath(args.judge))}; "
            f"held-out text: gen ppl {ref['generative_perplexity']:.2f}, unigram entropy "
            f"{ref['unigram_entropy_bits']:.2f} bits (whole held-out text {corpus_entropy:.3f}), words "
            f"{ref['word_fraction']:.2f}; "
            "per method, steps: gen ppl / entropy bits / corpus-word share: "
            + "; ".join(f"{m} {', '.join(v)}" for m, v in by.items())
            + (f"; options {options}" if options else "")))


if __name__ == "__main__":
    main()
