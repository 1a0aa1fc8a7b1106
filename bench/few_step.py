"""Few-step models against their teacher: train (if needed), evaluate at K network calls, record.

    python bench/few_step.py --baseline=workdirs/toy \\
        --run=toy_meanflow:workdirs/toy_meanflow \\
        --run=toy_consistency:workdirs/toy_consistency:few_step.teacher_workdir=workdirs/toy \\
        --steps=1,2

Each ``--run=CONFIG:WORKDIR[:FIELD=VALUE,...]`` is trained with ``python -m experiments.train
--config=experiments/configs/CONFIG.py --workdir=WORKDIR --config.FIELD=VALUE ...`` unless the
workdir already holds a finished run (``train_summary.json``; ``--retrain`` trains anyway, resuming
from its checkpoints), then evaluated with ``experiments.evaluate``'s code at every ``--steps``
count of its own few-step sampler (exactly that many network calls). ``--baseline`` workdirs are
evaluated with their config's sampler (e.g. the 50-step teacher). Sample quality only (no
likelihood): toy sets -- sliced W1 / std and the share of samples on the checkerboard's squares;
digits -- the SVC confidence ratio and class entropy / log 10. One row per run (training time
from its ``train_summary.json``) goes to ``bench/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import results  # noqa: E402


def _train(config: str, workdir: str, overrides: list[str]) -> float:
    cmd = [sys.executable, "-m", "experiments.train", f"--config=experiments/configs/{config}.py",
           f"--workdir={workdir}"] + [f"--config.{o}" for o in overrides]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - t0


def _quality(q: dict) -> str:
    if "sw_over_std" in q:
        s = f"SW1/std {q['sw_over_std']:.4f}"
        return s + (f", on squares {q['support_share']:.3f}" if "support_share" in q else "")
    if "confidence_ratio" in q:
        return (f"SVC ratio {q['confidence_ratio']:.3f}, entropy "
                f"{q['class_entropy_over_log10']:.3f} log 10")
    return json.dumps({k: v for k, v in q.items() if not isinstance(v, list)})


def _evaluate(workdir: str, steps, num_samples) -> tuple[dict, float]:
    from experiments.tasks import gaussian

    t0 = time.perf_counter()
    out = gaussian.GaussianTask().evaluate(workdir, steps=steps, nll_examples=0,
                                           num_samples=num_samples)
    return out, time.perf_counter() - t0


def _summary(workdir: str) -> dict:
    path = os.path.join(workdir, "train_summary.json")
    return json.load(open(path)) if os.path.isfile(path) else {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", default=[],
                   help="CONFIG:WORKDIR[:FIELD=VALUE,...] (repeatable)")
    p.add_argument("--baseline", action="append", default=[],
                   help="a trained workdir evaluated with its config's sampler (repeatable)")
    p.add_argument("--steps", default="1,2", help="network calls to evaluate at, e.g. 1,2,4")
    p.add_argument("--num_samples", type=int, default=None, help="default: config.eval")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--norecord", action="store_true", help="print, do not append to RESULTS.md")
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",") if s]
    parts = []
    for spec in args.run:
        config, workdir, *rest = spec.split(":")
        overrides = [o for o in ":".join(rest).split(",") if o]
        if args.retrain or not _summary(workdir):
            _train(config, workdir, overrides)
        summary = _summary(workdir)
        figures = []
        for k in steps:
            out, _ = _evaluate(workdir, k, args.num_samples)
            figures.append(f"{k} call{'s' if k > 1 else ''}: {_quality(out['sample_quality'])}")
            print(f"{config} {workdir} K={k}: {_quality(out['sample_quality'])}", flush=True)
        label = f"{config} [{os.path.basename(os.path.normpath(workdir))}" + \
            (f": {', '.join(overrides)}]" if overrides else "]")
        parts.append(f"{label} ({summary.get('step')} steps, training "
                     f"{summary.get('train_seconds', float('nan')):.0f} s): " + "; ".join(figures))
    for workdir in args.baseline:
        out, _ = _evaluate(workdir, None, args.num_samples)
        s = out["sampler"]
        summary = _summary(workdir)
        parts.append(f"baseline {out['config']} ({out['step']} steps, training "
                     f"{summary.get('train_seconds', float('nan')):.0f} s) {s['solver']} "
                     f"{s['steps']} steps: {_quality(out['sample_quality'])}")
        print(parts[-1], flush=True)
    result = (f"{args.num_samples or 'config.eval.num_samples'} samples per figure; "
              + " // ".join(parts))
    if args.norecord:
        print(result)
    else:
        import jax  # noqa: F401  (results.machine reads the backend)
        results.record("few_step", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
