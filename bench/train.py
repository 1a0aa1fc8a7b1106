r"""Train-step benchmark: diffjax (JAX/Flax NNX) vs diffusers' PyTorch ``UNet2DModel``.

    python bench/train.py                      # both cases, both frameworks
    python bench/train.py --cases digits --steps 20
    python bench/train.py --cases digits --grad-accum 2   # 2 micro-batches per step
    python bench/train.py --steps-per-call 8              # diffjax: 8 steps per call
    python bench/train.py --repeats 1 --threads 0         # quick: one run each, every core

Cases (the same U-Net layout in both frameworks: channels, residual blocks per level, attention
resolutions, GroupNorm groups, batch):

* ``digits``: 8x8x1, ch=32, ch_mult=(1, 2), 1 residual block per level, attention in the middle
  block only, batch 128 (the ``experiments/configs/digits.py`` U-Net);
* ``unet32``: 32x32x3, ch=64, ch_mult=(1, 2, 2, 2), 2 residual blocks per level, attention at
  16x16 and in the middle, batch 32 (the DDPM CIFAR-10 layout at half width).

One train step is the same work in both: draw t and noise, x_t = alpha x0 + sigma eps (cosine
schedule), eps-prediction MSE, backward, global-norm clipping at 1, AdamW, EMA update (0.9999).
diffjax: ``make_objective`` + ``training.make_train_step`` compiled ahead of time with
``jax.jit(...).lower(...).compile()`` (compile time = lower + compile), once as shipped
(``jax``: with `diffjax.platform`'s CPU workarounds: Eigen convolutions instead of YNNPACK,
loop-friendly convolution gradients inside loops) and once without them (``jax-xla``:
``platform_tweaks=False``, XLA's defaults), for their ratio.
PyTorch: eager mode (the baseline's "compile time" column is its first, warm-up step). Each is
measured on one core (the process pinned to it, one compute thread) and with every core
(``--threads``), and the ratio compares each framework's best: on a shared, oversubscribed
machine PyTorch's OpenMP barriers can make its multi-threaded small-op workloads 20-30x slower
than one thread, which would be no fair baseline.

The machine's speed drifts (other jobs on the host: the same run has measured 1.5x faster or
slower an hour apart, and PyTorch's OpenMP threads suffer more from it than XLA's), so every
measurement is repeated ``--repeats`` times (default 3), the frameworks interleaved within
each round, and each framework's best run is compared: a slow spell then hits both sides
instead of deciding the ratio.

Figures per (case, framework), each measured in a fresh subprocess so that memory figures do
not mix: examples/s over ``--steps`` timed steps after 2 warm-up steps; compile time; peak
memory as the growth of the process's max RSS from after model construction to the end of
the run (``resource.getrusage``; for JAX this peak includes the XLA compiler's own memory),
the growth of the current RSS over the run (what stays resident: buffers, optimizer state, the
executable), and, for JAX, XLA's estimate of the step's buffers (arguments + outputs +
temporaries - aliased, from ``compiled.memory_analysis()``).

PyTorch and diffusers are needed only for the baseline; without them the script says how to
install them (``pip install torch==2.13.0 diffusers``) and reports the JAX side alone.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results as bench_results  # noqa: E402  (bench/results.py)

CASES = {
    "digits": dict(image_size=8, channels=1, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                   attn_resolutions=(), batch=128),
    "unet32": dict(image_size=32, channels=3, ch=64, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                   attn_resolutions=(16,), batch=32),
}
TORCH_HINT = ("PyTorch/diffusers are not installed; the baseline needs them (only for this "
              "benchmark):\n    pip install torch==2.13.0 diffusers")


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _rss_mib() -> float:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _groups(channels: int) -> int:
    """GroupNorm groups of diffjax's U-Net (min(C // 4, 32), lowered until it divides C)."""
    g = max(1, min(channels // 4, 32))
    while channels % g:
        g -= 1
    return g


# ----------------------------------------------------------------------------------- JAX
def run_jax(case: dict, steps: int, platform_tweaks="auto", grad_accum: int = 1,
            steps_per_call: int = 1) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from diffjax import models, schedules, training
    from diffjax.training.objectives import make_objective

    b, s, c = case["batch"], case["image_size"], case["channels"]
    model = models.UNet(c, image_size=s, ch=case["ch"], ch_mult=case["ch_mult"],
                        num_res_blocks=case["num_res_blocks"],
                        attn_resolutions=case["attn_resolutions"], dropout=0.0, rngs=nnx.Rngs(0))
    num_params = models.count_params(model)
    objective, params = make_objective(model, schedule=schedules.cosine(), prediction="eps",
                                       weighting="simple")
    opt = dict(learning_rate=1e-4, total_steps=10_000, grad_clip=1.0)
    optimizer = training.make_optimizer(opt)
    mesh = training.make_mesh()  # every device, as the launchers do
    step = training.make_train_step(objective.loss_fn, optimizer, mesh=mesh, ema_decay=0.9999,
                                    platform_tweaks=platform_tweaks, grad_accum=grad_accum)
    state = step.place(training.create_train_state(params, optimizer, rng=0))
    rng = np.random.default_rng(0)
    batch = training.shard_batch({"x": rng.uniform(-1, 1, (b, s, s, c)).astype(np.float32)}, mesh)
    jax.block_until_ready((state, batch))
    rss0, cur0 = _max_rss_mib(), _rss_mib()

    k = steps_per_call
    args = (batch,) if k == 1 else ((batch,) * k,)  # run_steps: one batch per step
    t0 = time.perf_counter()
    compiled = step.jitted(state, *args, multi=k > 1).lower(state, *args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    xla_bytes = None
    if mem is not None:
        xla_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                     + mem.temp_size_in_bytes - mem.alias_size_in_bytes)

    for _ in range(2):
        state, metrics = compiled(state, *args)
    jax.block_until_ready(metrics)
    calls = max(1, -(-steps // k))
    steps = calls * k
    t0 = time.perf_counter()
    for i in range(calls):
        state, metrics = compiled(state, *args)
        if i % 8 == 7:
            jax.block_until_ready(metrics)
    jax.block_until_ready(metrics)
    dt = time.perf_counter() - t0
    metrics = jax.tree.map(lambda m: m if k == 1 else m[-1], metrics)
    return dict(framework="jax", params=num_params, examples_per_s=b * steps / dt,
                step_ms=1e3 * dt / steps, compile_s=compile_s, peak_rss_delta_mib=_max_rss_mib() - rss0,
                end_rss_delta_mib=_rss_mib() - cur0, xla_memory_mib=None if xla_bytes is None else xla_bytes / 2**20,
                loss=float(metrics["loss"]), device=str(jax.devices()[0].platform))


# ----------------------------------------------------------------------------------- PyTorch
def run_torch(case: dict, steps: int, grad_accum: int = 1) -> dict:
    import math

    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    b, s, c = case["batch"], case["image_size"], case["channels"]
    widths = tuple(case["ch"] * m for m in case["ch_mult"])
    res = [s // 2**i for i in range(len(widths))]
    down = tuple("AttnDownBlock2D" if r in case["attn_resolutions"] else "DownBlock2D" for r in res)
    up = tuple("AttnUpBlock2D" if r in case["attn_resolutions"] else "UpBlock2D"
               for r in reversed(res))
    groups = min(_groups(w) for w in widths)
    model = UNet2DModel(
        sample_size=s, in_channels=c, out_channels=c, block_out_channels=widths,
        layers_per_block=case["num_res_blocks"], down_block_types=down, up_block_types=up,
        norm_num_groups=groups, attention_head_dim=None, dropout=0.0,
        time_embedding_type="positional", add_attention=True)
    num_params = sum(p.numel() for p in model.parameters())
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(b, c, s, s, generator=gen) * 2 - 1
    lo, hi = math.atan(math.exp(-10.0)), math.atan(math.exp(10.0))  # cosine, logsnr in [-20, 20]

    def train_step():
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for x in x0.chunk(grad_accum):  # micro-batches; gradients averaged, as in diffjax
            m = x.shape[0]
            t = torch.rand(m, generator=gen)
            theta = lo + t * (hi - lo)
            alpha, sigma = torch.cos(theta).view(m, 1, 1, 1), torch.sin(theta).view(m, 1, 1, 1)
            eps = torch.randn(x.shape, generator=gen)
            out = model(alpha * x + sigma * eps, t * 1000).sample
            loss = torch.mean((out - eps) ** 2) / grad_accum
            loss.backward()
            total = total + loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1 - 0.9999)
        return total

    model.train()
    rss0, cur0 = _max_rss_mib(), _rss_mib()
    t0 = time.perf_counter()
    train_step()
    first_s = time.perf_counter() - t0
    train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = train_step()
    dt = time.perf_counter() - t0
    return dict(framework="torch", params=num_params, examples_per_s=b * steps / dt,
                step_ms=1e3 * dt / steps, compile_s=first_s, peak_rss_delta_mib=_max_rss_mib() - rss0,
                end_rss_delta_mib=_rss_mib() - cur0, xla_memory_mib=None, loss=float(loss), threads=torch.get_num_threads(),
                versions=f"torch {torch.__version__}")


# ----------------------------------------------------------------------------------- driver
def _torch_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "diffusers"))


def _worker(framework: str, case: str, steps: int, threads: int, grad_accum: int,
            steps_per_call: int) -> None:
    if threads == 1 and hasattr(os, "sched_setaffinity"):
        # One core for real: XLA's thunk executor runs independent ops on its own threads
        # whatever the Eigen settings, so pin the process (before JAX or torch start).
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if framework == "torch":
        import torch

        torch.set_num_threads(threads or os.cpu_count())
        result = run_torch(CASES[case], steps, grad_accum)
    else:  # "jax": diffjax as shipped; "jax-xla": without diffjax.platform's workarounds
        result = run_jax(CASES[case], steps, "auto" if framework == "jax" else False,
                         grad_accum, steps_per_call)
        result["framework"] = framework
    result["threads"] = threads or os.cpu_count()
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(framework: str, case: str, steps: int, threads: int, grad_accum: int,
           steps_per_call: int) -> dict:
    """One measurement in a fresh process with ``threads`` compute threads (0: every core)."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        if threads == 1:  # XLA:CPU: no Eigen thread pool inside ops
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                "intra_op_parallelism_threads=1").strip()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", framework,
                           "--cases", case, "--steps", str(steps), "--threads", str(threads),
                           "--grad-accum", str(grad_accum),
                           "--steps-per-call", str(steps_per_call)],
                          env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{framework}/{case} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="digits,unet32", help="comma-separated: digits, unet32")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps (default: 20 for digits, 3 for unet32)")
    parser.add_argument("--frameworks", default="jax,jax-xla,torch",
                        help="jax: diffjax as shipped (diffjax.platform's CPU workarounds); "
                             "jax-xla: the same step without them (platform_tweaks=False); torch: "
                             "diffusers' UNet2DModel")
    parser.add_argument("--threads", default="1,0",
                        help="thread settings to try, comma-separated (0 = every core); the "
                             "ratio uses each framework's best")
    parser.add_argument("--grad-accum", type=int, default=1,
                        help="micro-batches per step (gradient accumulation; the batch is "
                             "unchanged) in both frameworks")
    parser.add_argument("--steps-per-call", type=int, default=1,
                        help="diffjax: train steps per compiled call (TrainStep.run_steps, one "
                             "batch per step); PyTorch (eager) is unaffected")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of measurements, frameworks interleaved within each round; "
                             "the ratio uses each framework's best run")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            parser.error(f"--cases must name cases among {sorted(CASES)}, got {c!r}")
    threads = [int(t) for t in args.threads.split(",")]
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.worker:
        _worker(args.worker, cases[0], args.steps, threads[0], args.grad_accum,
                args.steps_per_call)
        return
    frameworks = [f.strip() for f in args.frameworks.split(",")]
    if "torch" in frameworks and not _torch_available():
        print(TORCH_HINT + "\n", flush=True)
        frameworks = [f for f in frameworks if f != "torch"]
    print(f"CPU cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f} "
          f"(other processes share these cores: compare ratios, not absolute numbers)\n")
    header = (f"{'case':8} {'framework':9} {'threads':>7} {'params':>10} {'batch':>5} {'examples/s':>11} "
              f"{'step ms':>9} {'compile s':>10} {'peak RSS +MiB':>14} {'end RSS +MiB':>13} "
              f"{'XLA est. MiB':>13}")
    print(header)
    print("-" * len(header))
    results = {}
    for case in cases:
        steps = args.steps or (20 if case == "digits" else 3)
        for _ in range(args.repeats):
            for fw in frameworks:
                for th in threads:
                    r = _spawn(fw, case, steps, th, args.grad_accum, args.steps_per_call)
                    best = results.get((case, fw))
                    if best is None or r["examples_per_s"] > best["examples_per_s"]:
                        results[(case, fw)] = r
                    print(f"{case:8} {fw:9} {r['threads']:>7} {r['params']:>10,} "
                          f"{CASES[case]['batch']:>5} {r['examples_per_s']:>11.1f} "
                          f"{r['step_ms']:>9.1f} {r['compile_s']:>10.2f} "
                          f"{r['peak_rss_delta_mib']:>14.1f} {r['end_rss_delta_mib']:>13.1f} "
                          f"{_fmt(r['xla_memory_mib'], '>13.1f')}",
                          flush=True)
    print()
    for case in cases:
        if (case, "jax") in results and (case, "jax-xla") in results:
            gain = (results[(case, "jax")]["examples_per_s"]
                    / results[(case, "jax-xla")]["examples_per_s"])
            print(f"{case}: diffjax's compiler options / XLA's defaults examples/s = {gain:.2f}x")
        if (case, "jax") in results and (case, "torch") in results:
            j, t = results[(case, "jax")], results[(case, "torch")]
            print(f"{case}: diffjax / diffusers examples/s = "
                  f"{j['examples_per_s'] / t['examples_per_s']:.2f}x (best of {args.repeats} "
                  f"{j['examples_per_s']:.1f} vs {t['examples_per_s']:.1f}; thread settings: "
                  f"{j['threads']} vs {t['threads']}); peak RSS growth ratio "
                  f"{j['peak_rss_delta_mib'] / max(t['peak_rss_delta_mib'], 1e-9):.2f}; "
                  f"params {j['params']:,} vs {t['params']:,}")
    print("(torch: eager mode; its 'compile s' is the first step. JAX compile = lower + compile.)")
    summary = []
    for case in cases:
        row = ", ".join(f"{fw} {results[(case, fw)]['examples_per_s']:.1f}"
                        for fw in frameworks if (case, fw) in results)
        if (case, "jax") in results and (case, "torch") in results:
            ratio = (results[(case, "jax")]["examples_per_s"]
                     / results[(case, "torch")]["examples_per_s"])
            row += f" (diffjax/diffusers {ratio:.2f}x)"
        summary.append(f"{case}: {row}")
    bench_results.record("train", f"examples/s, best of {args.repeats}: " + "; ".join(summary))


if __name__ == "__main__":
    main()
