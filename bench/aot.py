r"""Compile a config's train step and sampler for a TPU slice that is not attached; report
cost, memory and collectives (`diffjax.training.aot`).

    python bench/aot.py --config=cifar10 --topology=v5e:2x2 --json=/tmp/a.json
    python bench/aot.py --config=dit_xl2 --topology=v5e:4x4 --fsdp
    python bench/aot.py --config=dit_b2 --topology=v5p:2x2x4 --mesh=data:8,model:2 --batch=256
    python bench/aot.py --config=path/to/my_config.py --config.model.depth=2

``--config`` is the launchers' flag (``experiments.common.define_config_flag``): the name of a
built-in config (``experiments/configs/NAME.py``) or a path to a config file, with
``--config.X=Y`` overrides; a bad flag or config is one line naming it (``run_launcher``).
Nothing is allocated: the model, the train state and the
batch exist as shapes only, laid out on a mesh of the topology's abstract chips (``--mesh``,
default ``data:<all chips>``; ``--fsdp`` shards the state over ``data``). The train step is the
launchers' (``experiments.common.build_train_step``: bf16 as configured, EMA, clipping,
``grad_accum``); the sampler is the config's (solver and steps, classifier-free guidance for
class-conditional models) on ``sample.batch_size`` examples per ``data`` shard, with the EMA
parameters whole on every ``data`` shard (gathered once from FSDP shards).

FLOPs are model FLOPs, the usual count for MFU: for the train step 3 x XLA's count of one
forward pass on the batch (forward + backward; the optimizer and any recomputation not
counted), for the sampler model calls x one call's count. XLA's count of the compiled
programs themselves would miss work: it counts a loop body once, and the TPU compiler
decomposes FSDP's gathered matmuls into loops of collective permutes.

Prints one row for the train step and one for the sampler, writes ``--json`` with the keys
``config, topology, chips, params, global_batch, flops_per_step, est_step_seconds,
estimate_source, est_mfu, hbm_per_chip_bytes, hbm_capacity_bytes, compile_seconds,
collectives`` and the same under ``sampler``, and appends both rows to ``bench/RESULTS.md``
(``--norecord`` to skip). A program that does not fit the chip's HBM is reported as such.
Needs libtpu (``pip install -e '.[tpu]'``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host compiles; no TPU is attached
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

import results as bench_results  # noqa: E402  (bench/results.py)
from diffjax import training  # noqa: E402
from diffjax.training import aot  # noqa: E402
from diffjax.training import sharding as shd  # noqa: E402
from diffjax.training.objectives.network import split_train_eval  # noqa: E402
from experiments import common, tasks  # noqa: E402

KEYS = ("config", "topology", "chips", "params", "global_batch", "flops_per_step",
        "est_step_seconds", "estimate_source", "est_mfu", "hbm_per_chip_bytes",
        "hbm_capacity_bytes", "compile_seconds", "collectives")


def _abstract_batch(info, global_batch: int, sharding_fn) -> dict:
    batch = {"x": jax.ShapeDtypeStruct((global_batch,) + tuple(info.shape), np.dtype(info.dtype))}
    if info.num_classes:
        batch["label"] = jax.ShapeDtypeStruct((global_batch,), np.dtype(np.int32))
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding_fn(v))
            for k, v in batch.items()}


def analyze(config, topology: str, *, mesh: str = "", fsdp=None, batch: int = 0,
            sampler: bool = True, train: bool = True, devices=None) -> dict:
    """The report of ``config`` on ``topology`` (see the module docstring), as a dict with
    :data:`KEYS` (``config`` is ``config.name``) and ``sampler``. ``devices`` replaces the
    topology's chips (e.g. CPU devices in tests); the chip table entry still comes from
    ``topology``."""
    chip = aot.chip_for(topology)
    devices = aot.topology_devices(topology) if devices is None else list(devices)
    the_mesh = (training.make_mesh(shape=mesh, devices=devices) if mesh
                else training.make_mesh(devices=devices))
    chips = the_mesh.size
    task = tasks.get(config)
    info = task.dataset_info(config)
    model = nnx.eval_shape(lambda: task.build_model(config, info))
    objective, params = task.build_objective(config, model)
    # The state that is not a parameter (fixed Fourier kernels, ...) is a constant of the
    # programs, so it needs its values; built under jit, the unused parameters are dropped.
    objective = dataclasses.replace(objective, rest=jax.jit(
        lambda: split_train_eval(task.build_model(config, info))[3])())
    num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
    optimizer, schedule = common.build_optimizer(config)
    step = common.build_train_step(config, objective, optimizer, the_mesh,
                                   learning_rate_fn=schedule, fsdp=fsdp)
    shapes = jax.eval_shape(lambda p: training.create_train_state(p, optimizer, rng=0), params)
    state = step.abstract_state(shapes)
    global_batch = int(batch or config.data.batch_size)
    data_batch = _abstract_batch(
        info, global_batch, lambda v: shd.batch_sharding(the_mesh, len(v.shape)))
    out = {"config": config.name, "topology": topology, "params": num_params,
           "global_batch": global_batch, "chips": chips}
    extra = {}
    whole = shd.state_shardings(state.ema_params, the_mesh, fsdp=False)
    ema = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state.ema_params)
    if train:
        report = aot.compile_and_analyze(step.jitted(state, data_batch), state, data_batch,
                                         chip=chip, chips=chips)
        if report.est_step_seconds is not None:
            # Model FLOPs: forward + backward = 3 forward passes on the batch (the usual MFU
            # count: no optimizer, no recomputation; independent of how the step is split).
            x = data_batch["x"]
            report = report.with_flops(
                3 * _call_flops(objective, the_mesh, whole, ema, x.shape, x.dtype), chip)
        out.update(report.as_dict())
        extra["train"] = report
    if sampler:
        per_shard = int(config.sample.batch_size)
        sample_batch = per_shard * the_mesh.shape[shd.DATA_AXIS]
        fn, args = task.sample_fn(config, objective, info, sample_batch)
        # The EMA parameters, whole on every data shard (split over `model` if there is
        # one): a sampler gathers FSDP shards once, not at every model call.
        param_sh = whole
        arg_sh = tuple(shd.batch_sharding(the_mesh, np.ndim(a)) for a in args)
        jitted = jax.jit(fn, in_shardings=(param_sh, shd.replicated(the_mesh)) + arg_sh,
                         out_shardings=shd.batch_sharding(the_mesh, len(args[0].shape)))
        key = jax.eval_shape(lambda: jax.random.key(0))
        abstract_args = tuple(jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype)
                              for a in args)
        rep = aot.compile_and_analyze(jitted, ema, key, *abstract_args, chip=chip, chips=chips)
        if rep.est_step_seconds is not None:  # XLA counts the solver loop's body once
            rep = rep.with_flops(_sampler_flops(task, config, objective, info, the_mesh,
                                                param_sh, ema, abstract_args[0]), chip)
        out["sampler"] = {"config": config.name, "topology": topology, "params": num_params,
                          "global_batch": sample_batch, **rep.as_dict()}
        extra["sampler"] = rep
    return out, extra


def _call_flops(objective, mesh, param_sh, params, x_shape, dtype) -> float:
    """XLA's FLOPs of one model call on a batch of ``x_shape`` (parameters whole on every
    data shard: no loop-decomposed collective matmuls to hide work), over all chips."""
    xs = jax.ShapeDtypeStruct(tuple(x_shape), dtype)
    ts = jax.ShapeDtypeStruct(tuple(x_shape[:1]), np.dtype(np.float32))
    call = jax.jit(lambda p, x, t: objective.model_fn(p)(x, t),
                   in_shardings=(param_sh, shd.batch_sharding(mesh, len(xs.shape)),
                                 shd.batch_sharding(mesh, 1)))
    cost = call.lower(params, xs, ts).compile().cost_analysis() or {}
    return float(cost.get("flops", 0.0)) * mesh.size


def _sampler_flops(task, config, objective, info, mesh, param_sh, ema, x) -> float:
    """Model calls of one draw x the FLOPs of one call on the whole sample batch (twice the
    batch under classifier-free guidance), over all chips."""
    guided = objective.conditional and float(config.sample.get("guidance_scale", 1.0)) != 1.0
    shape = (x.shape[0] * (2 if guided else 1),) + tuple(x.shape[1:])
    return (task.sample_nfe(config, objective, info)
            * _call_flops(objective, mesh, param_sh, ema, shape, x.dtype))


def _gib(b):
    return "-" if b is None else f"{b / 2**30:.2f}"


def row(name: str, r: dict, report) -> str:
    """One table row: what ran, flops, the estimate and its source, MFU, HBM, compile time."""
    if not report.fits and report.est_step_seconds is None:
        return (f"{name}: DOES NOT FIT: the compiler refused it "
                f"(needs {_gib(report.hbm_per_chip_bytes)} of {_gib(r['hbm_capacity_bytes'])} "
                f"GiB per chip) -- {report.error.splitlines()[0][:200]}")
    fit = "fits" if report.fits else "DOES NOT FIT"
    colls = ", ".join(f"{k} {v}" for k, v in r["collectives"].items()) or "none"
    return (f"{name}: {r['params'] / 1e6:.1f}M params, batch {r['global_batch']}, "
            f"{r['flops_per_step'] / 1e12:.3f} TFLOP/step, est {r['est_step_seconds'] * 1e3:.2f}"
            f" ms ({r['estimate_source']}; roofline {report.roofline_seconds * 1e3:.2f} ms), "
            f"MFU {100 * r['est_mfu']:.1f}%, HBM {_gib(r['hbm_per_chip_bytes'])}/"
            f"{_gib(r['hbm_capacity_bytes'])} GiB per chip ({fit}), compile "
            f"{r['compile_seconds']:.0f} s, collectives: {colls}")


FLAGS = flags.FLAGS


def define_flags():
    common.define_config_flag(
        "config", None, "The config, as the launchers take it: a built-in name (experiments/configs/NAME.py: "
        + ", ".join(common.builtin_configs()) + ") or a path to a config file; --config.X=Y overrides a field.")
    flags.DEFINE_string("topology", "v5e:2x2", "TPU topology, e.g. v5e:4x4, v5p:2x2x4.")
    flags.DEFINE_string("mesh", "", "Mesh shape, e.g. data:8,model:2 (default: data over all "
                        "chips).")
    flags.DEFINE_bool("fsdp", None, "Shard the train state over data (default: train.fsdp).")
    flags.DEFINE_integer("batch", 0, "Global train batch (default: data.batch_size).")
    flags.DEFINE_bool("sampler", True, "Also compile the sampler.")
    flags.DEFINE_bool("train", True, "Compile the train step (--notrain: the sampler only).")
    flags.DEFINE_string("json", "", "Write the report here.")
    flags.DEFINE_integer("top", 0, "Also print the N costliest source ops of each program "
                         "(the compiler's cycle estimates, loop bodies times their trips).")
    flags.DEFINE_string("hlo_dir", "", "Write the compiled HLO text of each program here.")
    flags.DEFINE_bool("record", True, "Append the rows to bench/RESULTS.md.")


def main(argv):
    del argv
    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config is required (a built-in name, e.g. --config=dit_b2, or a path to a config "
                             "file)")
    out, reports = analyze(config, FLAGS.topology, mesh=FLAGS.mesh, fsdp=FLAGS.fsdp,
                           batch=FLAGS.batch, sampler=FLAGS.sampler, train=FLAGS.train)
    mesh = FLAGS.mesh or f"data:{out['chips']}"
    fsdp = config.train.fsdp if FLAGS.fsdp is None else FLAGS.fsdp
    label = f"{config.name} on {FLAGS.topology} [{mesh}{', fsdp' if fsdp else ''}]"
    lines = [row(f"{label} train step", out, reports["train"])] if "train" in reports else []
    if "sampler" in out:
        s = config.sample
        lines.append(row(f"{label} sampler ({s.get('solver', '') or 'default'}, {s.steps} "
                         f"steps)", out["sampler"], reports["sampler"]))
    for line in lines:
        print(line)
    for what, report in reports.items():
        if FLAGS.hlo_dir and report.hlo:
            os.makedirs(FLAGS.hlo_dir, exist_ok=True)
            with open(os.path.join(FLAGS.hlo_dir, f"{config.name}_{what}.hlo"), "w") as f:
                f.write(report.hlo)
        if FLAGS.top and report.hlo and report.est_step_seconds:
            cycles = aot.hlo_cycles(report.hlo) or 1
            print(f"  costliest ops of the {what} program (share of the compiler's cycles):")
            for c, op in aot.top_instructions(report.hlo, FLAGS.top):
                print(f"    {100 * c / cycles:5.1f}%  {op}")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(out, f, indent=2)
    if FLAGS.record:
        bench_results.record("aot", " // ".join(lines))


if __name__ == "__main__":
    common.run_launcher(main, define_flags, prog="bench/aot.py")
