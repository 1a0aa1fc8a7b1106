r"""Accelerator throughput: train steps and sampling of real configs on synthetic batches,
measured, beside the compiler's estimate (`diffjax.training.aot`).

    python bench/gpu.py                                   # cifar10 U-Net and DiT-B/2, bf16
    python bench/gpu.py --cases=dit_b2 --steps=50 --batch=256
    python bench/gpu.py --tiny --steps=3                  # any machine: tiny models (tests)

For each config (``--cases``: names in ``experiments/configs``): the launchers' train step
(``experiments.common.build_train_step``, the config's dtype) over a ``data`` mesh of every
local device, on synthetic batches of the config's shapes (no dataset is read), ``--steps``
timed steps after a compiled warm-up; then the config's sampler (solver, steps, guidance) on
``sample.batch_size`` examples per device. Reported per case:

* train: examples/s, ms per step, FLOPs per step (XLA's count of the compiled step), MFU
  against the chip's bf16 peak (``aot.CHIPS``: H100/H200 989 TFLOP/s dense), and the
  compiler's estimate of the same step (``aot.compile_and_analyze``: the roofline bound
  max(flops / peak, bytes / HBM bandwidth) on GPU) with its MFU;
* sampler: samples/s and ms per batch.

On a CPU (no chip entry) MFU and the estimate are not reported. ``--tiny`` shrinks every model
to a few thousand parameters, for checking the script anywhere. Appends one row to
``bench/RESULTS.md`` (``--norecord`` to skip).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from ml_collections import config_flags  # noqa: E402,F401  (config files import it)

import results as bench_results  # noqa: E402  (bench/results.py)
from diffjax import training  # noqa: E402
from diffjax.training import aot  # noqa: E402
from diffjax.training import sharding as shd  # noqa: E402
from experiments import common, tasks  # noqa: E402

TINY = {"unet": dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=()),
        "dit": dict(dim=32, depth=1, heads=2),
        "mlp": dict(hidden=32, depth=1),
        "token_transformer": dict(dim=32, depth=1, heads=2, cond_dim=16)}


def load_config(name: str, *, tiny: bool = False):
    """``experiments/configs/NAME.py``'s config; ``tiny``: a few-thousand-parameter model,
    small batches and 2 sampler steps."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    path = os.path.join(REPO, "experiments", "configs", name + ".py")
    if not os.path.exists(path):
        raise SystemExit(f"--cases: no config {path}")
    spec = importlib.util.spec_from_file_location(f"config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if tiny:
        config.model.update(TINY.get(config.model.name, {}))
        config.data.batch_size = 2 * jax.device_count()
        config.sample.batch_size = 2
        config.sample.steps = 2
        if config.task == "text":
            config.data.seq_len = 16
    return config


def _synthetic_batch(info, batch: int, key) -> dict:
    kx, kl = jax.random.split(key)
    if np.dtype(info.dtype).kind == "i":
        x = jax.random.randint(kx, (batch,) + tuple(info.shape), 0, info.vocab_size)
    else:
        x = jax.random.normal(kx, (batch,) + tuple(info.shape))
    out = {"x": np.asarray(x)}
    if info.num_classes:
        out["label"] = np.asarray(jax.random.randint(kl, (batch,), 0, info.num_classes))
    return out


def _timed(fn, n: int) -> float:
    """Seconds per call of ``fn`` (which returns something to block on) over ``n`` calls."""
    jax.block_until_ready(fn())  # warm-up (compiled already; first-call dispatch costs)
    start = time.perf_counter()
    out = None
    for _ in range(n):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / n


def run_case(name: str, *, steps: int, batch: int = 0, tiny: bool = False,
             sample_calls: int = 3) -> dict:
    config = load_config(name, tiny=tiny)
    task = tasks.get(config)
    info = task.dataset_info(config)
    model = task.build_model(config, info)
    objective, params = task.build_objective(config, model)
    mesh = training.make_mesh()
    optimizer, schedule = common.build_optimizer(config)
    step = common.build_train_step(config, objective, optimizer, mesh, learning_rate_fn=schedule)
    state = step.place(training.create_train_state(params, optimizer, rng=0))
    global_batch = int(batch or config.data.batch_size)
    data = shd.shard_batch(_synthetic_batch(info, global_batch, jax.random.key(1)), mesh)
    devices = jax.devices()
    try:
        chip = aot.chip_for(devices[0])
    except ValueError:
        chip = None
    # The compiler's view of the step (flops, and the estimate where the chip is known).
    jitted = step.jitted(state, data)
    compiled = jitted.lower(state, data).compile()
    cost = compiled.cost_analysis() or {}
    flops = float(cost.get("flops", 0.0)) * len(devices)
    estimate = None
    if chip is not None:
        estimate = aot.compile_and_analyze(jitted, state, data, chip=chip, chips=len(devices))

    holder = {"state": state}

    def one_step():
        holder["state"], metrics = compiled(holder["state"], data)
        return metrics["loss"]

    seconds = _timed(one_step, steps)
    out = {"case": name, "params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
           "global_batch": global_batch, "step_ms": 1e3 * seconds,
           "examples_per_s": global_batch / seconds, "flops_per_step": flops,
           "mfu": aot.mfu(flops, seconds, len(devices), chip) if chip else None,
           "est_step_ms": 1e3 * estimate.est_step_seconds if estimate else None,
           "est_mfu": estimate.est_mfu if estimate else None,
           "estimate_source": estimate.estimate_source if estimate else None}

    per_device = int(config.sample.batch_size)
    num = per_device * len(devices)
    fn, args = task.sample_fn(config, objective, info, num)
    params_sh = step.state_shardings(holder["state"]).ema_params
    arg_sh = tuple(shd.batch_sharding(mesh, np.ndim(a)) for a in args)
    draw = jax.jit(fn, in_shardings=(params_sh, shd.replicated(mesh)) + arg_sh)
    placed = tuple(jax.device_put(a, s) for a, s in zip(args, arg_sh))
    keys = iter(jax.random.split(jax.random.key(2), sample_calls + 1))
    sample_seconds = _timed(lambda: draw(holder["state"].ema_params, next(keys), *placed),
                            sample_calls)
    out.update(sample_batch=num, sample_ms=1e3 * sample_seconds,
               samples_per_s=num / sample_seconds, solver=config.sample.get("solver", ""),
               sample_steps=int(config.sample.steps))
    return out


def describe(r: dict) -> str:
    mfu = f", MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else ""
    est = (f"; estimate {r['est_step_ms']:.2f} ms ({r['estimate_source']}, MFU "
           f"{100 * r['est_mfu']:.1f}%)" if r["est_step_ms"] is not None else "")
    return (f"{r['case']}: {r['params'] / 1e6:.2f}M params, batch {r['global_batch']}: "
            f"{r['examples_per_s']:.1f} examples/s, {r['step_ms']:.2f} ms/step, "
            f"{r['flops_per_step'] / 1e12:.4f} TFLOP/step{mfu}{est}; sampler "
            f"{r['solver'] or 'default'} x{r['sample_steps']}: {r['samples_per_s']:.1f} "
            f"samples/s ({r['sample_ms']:.1f} ms per batch of {r['sample_batch']})")


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="cifar10,dit_b2", help="comma-separated config names")
    p.add_argument("--steps", type=int, default=20, help="timed train steps per case")
    p.add_argument("--batch", type=int, default=0, help="global batch (default: the config's)")
    p.add_argument("--tiny", action="store_true", help="tiny models (any machine)")
    p.add_argument("--norecord", action="store_true", help="do not append to RESULTS.md")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    devices = jax.devices()
    print(f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})")
    results = []
    for name in filter(None, args.cases.split(",")):
        r = run_case(name, steps=args.steps, batch=args.batch, tiny=args.tiny)
        print(describe(r), flush=True)
        results.append(r)
    if not args.norecord:
        bench_results.record("gpu", f"{len(devices)} x {devices[0].device_kind}: "
                             + " // ".join(describe(r) for r in results),
                             argv=[sys.argv[0]] + list(argv if argv is not None else sys.argv[1:]))
    return results


if __name__ == "__main__":
    main()
