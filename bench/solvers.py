"""Solver benchmark: accuracy against the exact ODE solution, compile time, and per-step overhead.

    python bench/solvers.py [--quick] [--no-record]   (only a complete run appends to RESULTS.md)

1. Accuracy (the protocol of issue 2): VE schedule with sigma_min = 0.002, sigma_max = 80;
   ``standard_mixture(dim=2, seed=0)`` from ``shared/conformance/oracles.py`` with its exact x0
   denoiser; 256 starts x_init = 80 N(0, I) at t = 1; each deterministic solver integrates to
   t = 0 (sigma_min) on its default grid, and the RMS error against ``reference_ode`` (scipy
   DOP853, rtol 1e-11) is printed for 5, 10, 20, 40 and 80 model calls. Stochastic solvers do
   not converge to the ODE solution; for them the sliced Wasserstein-1 distance of 4000
   samples to 4000 exact data samples is printed instead (0.01-0.02 is the sampling noise floor).
   rk45 is adaptive: its row sweeps the tolerance and prints the NFE it used.
2. Compile time of ``jit(sample)`` versus the number of steps (flat: one scan body).
3. Run time per step with a tiny MLP denoiser against a bare hand-written ``lax.scan`` Euler loop
   over the same model, timed in the same process (ratio; target <= 1.2).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)  # accuracy in float64; the timing part uses float32 explicitly

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import diffjax as dj  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
for cand in (os.path.join(HERE, "..", "..", "shared", "conformance"), os.path.join(HERE, "..", "shared", "conformance")):
    if os.path.exists(os.path.join(cand, "oracles.py")):
        sys.path.insert(0, cand)
        break
from oracles import RefSchedule, sliced_wasserstein, standard_mixture  # noqa: E402

sys.path.insert(0, HERE)
import results  # noqa: E402  (bench/results.py)

NFES = (5, 10, 20, 40, 80)


def _fixed_grid_solvers(deterministic):
    """The fixed-grid solvers (rk45 has its own row) whose default instance is (not) deterministic."""
    out = []
    for name in dj.solvers.names():
        solver = dj.solvers.get(name)()
        if solver.fixed_grid and solver.deterministic == deterministic:
            out.append(name)
    return tuple(out)


DETERMINISTIC = _fixed_grid_solvers(True)
STOCHASTIC = _fixed_grid_solvers(False)
CALLS_PER_STEP = {"heun": 2, "pc": 2}


def accuracy(quick=False):
    gm = standard_mixture(dim=2, seed=0)
    ref_s = RefSchedule("ve", dict(sigma_min=0.002, sigma_max=80.0))
    sch = dj.schedules.ve(0.002, 80.0)
    model = gm.model_fn(ref_s, "x0")
    x_init = 80.0 * np.random.default_rng(0).standard_normal((256, 2))
    t0 = time.perf_counter()
    ref = gm.reference_ode(x_init, 1.0, 0.0, ref_s)
    print(f"reference ODE (DOP853) in {time.perf_counter() - t0:.1f}s")

    def run(solver, steps=None, key=0, shape=None, **kw):
        xi = None if shape else jnp.asarray(x_init)
        x, info = dj.sample(model, jax.random.PRNGKey(key), shape or x_init.shape, schedule=sch, prediction="x0",
                            solver=solver, steps=steps, t_min=0.0, t_max=1.0, x_init=xi, denoise_final=False, **kw)
        return np.asarray(x), int(info["nfe"])

    print("\n== RMS error vs the exact ODE solution at sigma_min (VE 0.002..80, 256 starts) ==")
    print(f"{'solver':<16}" + "".join(f"{'NFE=' + str(n):>14}" for n in NFES))
    best = {}
    for solver in DETERMINISTIC:
        row = []
        for n in NFES:
            steps = max(1, n // CALLS_PER_STEP.get(solver, 1))
            x, used = run(solver, steps)
            err = float(np.sqrt(np.mean((x - ref) ** 2)))
            best[(solver, n)] = err
            row.append(f"{err:10.3g} ({used:>2})" if used != n else f"{err:14.3g}")
        print(f"{solver:<16}" + "".join(f"{c:>14}" for c in row))
    row = []
    for tol in (1e-2, 1e-3, 1e-4, 1e-5, 1e-7):
        x, used = run("rk45", rtol=tol, atol=tol)
        row.append(f"tol {tol:.0e}: {float(np.sqrt(np.mean((x - ref) ** 2))):.3g} @ {used} NFE")
    print(f"{'rk45':<16}" + "; ".join(row))
    b10 = min((best[(s, 10)], s) for s in DETERMINISTIC)
    print(f"\nbest at 10 NFE: {b10[1]} with RMS {b10[0]:.3g} (target <= 3e-2; k-diffusion's best 6.7e-2, "
          f"ratio {b10[0] / 6.7e-2:.2f}x)")

    if quick:
        return best
    truth = gm.sample(np.random.default_rng(1), 4000)
    print("\n== stochastic solvers: sliced W1 of 4000 samples to exact data samples (noise floor ~0.01-0.02) ==")
    print(f"{'solver':<16}" + "".join(f"{'NFE=' + str(n):>14}" for n in NFES + (320,)))
    for solver in STOCHASTIC:
        row = []
        for n in NFES + (320,):
            steps = max(1, n // CALLS_PER_STEP.get(solver, 1))
            x, used = run(solver, steps, key=3, shape=(4000, 2))
            row.append(f"{sliced_wasserstein(x, truth):14.3g}")
        print(f"{solver:<16}" + "".join(row))
    return best


def compile_times():
    gm = standard_mixture(dim=2, seed=0)
    ref_s = RefSchedule("ve", dict(sigma_min=0.002, sigma_max=80.0))
    sch = dj.schedules.ve(0.002, 80.0)
    model = gm.model_fn(ref_s, "x0")
    print("\n== compile time of jit(sample) vs number of steps (float32, 256 x 2) ==")
    x = jnp.zeros((256, 2), jnp.float32)
    for solver in ("euler", "heun", "dpmpp_3m", "pc"):
        times = []
        for steps in (10, 100, 1000):
            f = jax.jit(lambda key, x, s=steps, solver=solver: dj.sample(
                model, key, x.shape, schedule=sch, prediction="x0", solver=solver, steps=s, x_init=x)[0])
            t0 = time.perf_counter()
            f.lower(jax.random.PRNGKey(0), x).compile()
            times.append(time.perf_counter() - t0)
        print(f"{solver:<10} steps 10/100/1000: " + " / ".join(f"{t:.2f}s" for t in times)
              + f"   (1000 vs 10: {times[2] / times[0]:.2f}x)")


def overhead():
    """diffjax's euler vs a bare lax.scan Euler loop over the same tiny MLP (float32)."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    d, hdim, batch, steps = 2, 64, 256, 2000
    w1 = jax.random.normal(k1, (d + 1, hdim), jnp.float32) / float(np.sqrt(d + 1))
    w2 = jax.random.normal(k2, (hdim, hdim), jnp.float32) / float(np.sqrt(hdim))
    w3 = jax.random.normal(k3, (hdim, d), jnp.float32) / float(np.sqrt(hdim)) * 0.1

    def mlp(x, t):  # an eps-prediction network
        h = jnp.tanh(jnp.concatenate([x, t[:, None].astype(x.dtype)], axis=-1) @ w1)
        return jnp.tanh(h @ w2) @ w3

    sch = dj.schedules.ve(0.002, 80.0)
    ts = dj.grids.uniform_logsnr(sch, steps, 1.0, 0.0)
    sig = sch.sigma(ts)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (batch, d), jnp.float32) * 80.0

    @jax.jit
    def bare(x):
        def body(x, i):
            t = jnp.full((batch,), ts[i])
            return x + (sig[i + 1] - sig[i]) * mlp(x, t), None
        return jax.lax.scan(body, x, jnp.arange(steps))[0]

    @jax.jit
    def ours(x):
        return dj.sample(mlp, jax.random.PRNGKey(0), x.shape, schedule=sch, prediction="eps", solver="euler",
                         ts=ts, x_init=x, denoise_final=False)[0]

    np.testing.assert_allclose(np.asarray(bare(x0)), np.asarray(ours(x0)), rtol=1e-3, atol=1e-3)

    def timeit(f, reps=7):
        f(x0).block_until_ready()
        best = np.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            f(x0).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        return best

    tb, to = timeit(bare), timeit(ours)
    print("\n== run time per step, tiny MLP (2-64-64-2), batch 256, 2000 steps, float32 ==")
    print(f"bare lax.scan Euler: {1e6 * tb / steps:.2f} us/step; diffjax euler: {1e6 * to / steps:.2f} us/step; "
          f"ratio {to / tb:.2f}x (target <= 1.2)")
    return to / tb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="accuracy table only, no stochastic rows (not recorded)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    best = accuracy(args.quick)
    table = "; ".join(f"{s} " + "/".join(f"{best[(s, n)]:.2g}" for n in NFES) for s in DETERMINISTIC)
    result = f"RMS error vs the exact ODE at NFE {'/'.join(map(str, NFES))}: {table}"
    if not args.quick:
        compile_times()
        result += f"; euler loop / bare lax.scan time {overhead():.2f}x"
    if args.quick or args.no_record:  # only a complete run is recorded
        print(f"\n(not recorded) {result}")
        return
    results.record("solvers", result)


if __name__ == "__main__":
    main()
