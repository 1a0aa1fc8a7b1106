"""Solver benchmark: accuracy against the exact ODE solution, compile time, and per-step overhead.

    python bench/solvers.py [--quick] [--no-record]   (only a complete run appends to RESULTS.md)

1. Accuracy: VE schedule with sigma_min = 0.002, sigma_max = 80; ``standard_mixture(dim=2,
   seed=0)`` from the conformance oracles with its exact x0 denoiser; 256 starts x_init = 80 N(0, I)
   at t = 1; each deterministic solver integrates to t = 0 (sigma_min) on its default grid, and the
   RMS error against ``reference_ode`` (scipy DOP853, rtol 1e-11) is printed for 3, 4, 5, 6, 8, 10
   and 20 model calls; then the same with ``grids.optimize`` (fitted on 256 other starting noises),
   and, to check that defaults carry over, the default grids on two other mixtures and schedules. Stochastic solvers do
   not converge to the ODE solution; for them the sliced Wasserstein-1 distance of 4000
   samples to 4000 exact data samples is printed instead (0.01-0.02 is the sampling noise floor;
   "refused": euler_maruyama refuses a grid on which its explicit steps are unstable).
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

NFES = (3, 4, 5, 6, 8, 10, 20)
KDIFF_BEST = {5: 1.30e-1, 10: 6.7e-2}  # k-diffusion's best solver on this protocol (its default grids)
TARGETS = {"default 5": 6.5e-2, "default 10": 1.0e-2, "optimized 5": 3e-2}
OPTIMIZE = ("ddim", "dpmpp_2m", "unipc", "ipndm", "deis")  # solvers fitted with grids.optimize


# the fixed-grid solvers (rk45 has its own row), deterministic and stochastic
DETERMINISTIC = tuple(s for s in dj.solvers.DETERMINISTIC if dj.solvers.get(s).fixed_grid)
STOCHASTIC = dj.solvers.STOCHASTIC
CALLS_PER_STEP = {"heun": 2, "pc": 2}


class Problem:
    """A Gaussian mixture with its exact denoiser, a schedule and 256 starts at t_max with their
    exact ODE solutions at t_min (scipy DOP853, rtol 1e-11)."""

    def __init__(self, name, gm, ref_schedule, schedule, prediction, t_min, t_max=1.0, seed=0):
        self.name, self.gm, self.sch, self.prediction = name, gm, schedule, prediction
        self.t_min, self.t_max = t_min, t_max
        self.model = gm.model_fn(ref_schedule, prediction)
        s_max = float(schedule.sigma(jnp.float64(t_max)))
        self.x_init = s_max * np.random.default_rng(seed).standard_normal((256, gm.dim))
        self.ref = gm.reference_ode(self.x_init, t_max, t_min, ref_schedule)

    def error(self, solver, steps=None, ts=None, **kw):
        x, info = dj.sample(self.model, jax.random.PRNGKey(0), self.x_init.shape, schedule=self.sch,
                            prediction=self.prediction, solver=solver, steps=steps, ts=ts, t_min=self.t_min,
                            t_max=self.t_max, x_init=jnp.asarray(self.x_init), denoise_final=False, **kw)
        return float(np.sqrt(np.mean((np.asarray(x) - self.ref) ** 2))), int(info["nfe"])

    def fitted_grid(self, solver, steps):
        """grids.optimize on 256 other starting noises (key 1), fitted without the exact solution."""
        return dj.grids.optimize(self.model, jax.random.PRNGKey(1), self.x_init.shape, schedule=self.sch,
                                 prediction=self.prediction, steps=steps, solver=solver, t_min=self.t_min,
                                 t_max=self.t_max, denoise_final=False, dtype=jnp.float64)


def main_problem():
    """The protocol of the solver issues: VE 0.002..80, the standard 2-D mixture, t 1 -> 0."""
    return Problem("VE 0.002..80, standard 2-D mixture, x0 model", standard_mixture(dim=2, seed=0),
                   RefSchedule("ve", dict(sigma_min=0.002, sigma_max=80.0)), dj.schedules.ve(0.002, 80.0), "x0", 0.0)


def other_problems():
    """Other data and schedules, to check that defaults chosen on the main problem carry over."""
    return [
        Problem("cosine VP, 8-D mixture of 8 (std 0.15, scale 1.5), eps model", standard_mixture(8, 1, 8, 1.5, 0.15),
                RefSchedule("cosine", {}), dj.schedules.cosine(), "eps", 1e-3),
        Problem("rectified flow, 16-D mixture of 3 (std 0.5, scale 0.5), flow model", standard_mixture(16, 2, 3, 0.5, 0.5),
                RefSchedule("rectified_flow", {}), dj.schedules.rectified_flow(), "flow", 1e-3, t_max=0.999),
    ]


def _table(problem, solvers, nfes, title):
    print(f"\n== {title}: {problem.name}; RMS error vs the exact ODE solution (256 starts) ==")
    print(f"{'solver':<16}" + "".join(f"{'NFE=' + str(n):>12}" for n in nfes))
    out = {}
    for solver in solvers:
        row = []
        for n in nfes:
            steps = max(1, n // CALLS_PER_STEP.get(solver, 1))
            err, used = problem.error(solver, steps)
            out[(solver, n)] = err
            row.append(f"{err:8.3g} ({used:>2})" if used != n else f"{err:12.3g}")
        print(f"{solver:<16}" + "".join(f"{c:>12}" for c in row), flush=True)
    return out


def accuracy(quick=False, optimize=True):
    t0 = time.perf_counter()
    prob = main_problem()
    print(f"reference ODE (DOP853) in {time.perf_counter() - t0:.1f}s")
    best = _table(prob, DETERMINISTIC, NFES, "default grids")
    row = []
    for tol in (1e-2, 1e-3, 1e-4, 1e-5, 1e-7):
        err, used = prob.error("rk45", rtol=tol, atol=tol)
        row.append(f"tol {tol:.0e}: {err:.3g} @ {used} NFE")
    print(f"{'rk45':<16}" + "; ".join(row))
    fitted = {}
    if optimize:
        print("\n== the same with grids.optimize (fitted on 256 other starting noises) ==")
        print(f"{'solver':<16}" + "".join(f"{'NFE=' + str(n):>12}" for n in NFES))
        for solver in (s for s in OPTIMIZE if s in DETERMINISTIC):
            row = []
            for n in NFES:
                t1 = time.perf_counter()
                err, _ = prob.error(solver, ts=prob.fitted_grid(solver, n))
                fitted[(solver, n)] = err
                row.append(f"{err:12.3g}")
            print(f"{solver:<16}" + "".join(row) + f"   (fit {time.perf_counter() - t1:.0f}s at NFE 20)", flush=True)
    summary = []
    for n in (5, 10):
        e, s = min((best[(s, n)], s) for s in DETERMINISTIC)
        summary.append(f"best at {n} NFE on its default grid: {s} {e:.3g} (target <= {TARGETS[f'default {n}']:.2g}; "
                       f"{e / KDIFF_BEST[n]:.2f}x k-diffusion's best {KDIFF_BEST[n]:.2g})")
    if fitted:
        e, s = min((fitted[(s, 5)], s) for s in OPTIMIZE if (s, 5) in fitted)
        summary.append(f"best at 5 NFE with grids.optimize: {s} {e:.3g} (target <= {TARGETS['optimized 5']:.2g})")
    print("\n" + "\n".join(summary))
    if quick:
        return best, fitted, summary
    for other in other_problems():
        _table(other, DETERMINISTIC, (3, 5, 10, 20, 40), "other data")

    gm = prob.gm
    truth = gm.sample(np.random.default_rng(1), 4000)
    print("\n== stochastic solvers: sliced W1 of 4000 samples to exact data samples (noise floor ~0.01-0.02) ==")
    print(f"{'solver':<16}" + "".join(f"{'NFE=' + str(n):>12}" for n in NFES + (320,)))
    for solver in STOCHASTIC:
        row = []
        for n in NFES + (320,):
            steps = max(1, n // CALLS_PER_STEP.get(solver, 1))
            try:
                x, _ = dj.sample(prob.model, jax.random.PRNGKey(3), (4000, 2), schedule=prob.sch,
                                 prediction=prob.prediction, solver=solver, steps=steps, t_min=prob.t_min,
                                 t_max=prob.t_max, denoise_final=False)
            except ValueError as e:  # euler_maruyama refuses the grids on which it is unstable
                assert "unstable" in str(e), e
                row.append(f"{'refused':>12}")
                continue
            row.append(f"{sliced_wasserstein(np.asarray(x), truth):12.3g}")
        print(f"{solver:<16}" + "".join(row))
    return best, fitted, summary


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
    ap.add_argument("--quick", action="store_true", help="the main accuracy tables only (not recorded)")
    ap.add_argument("--no-optimize", action="store_true", help="skip the grids.optimize table (not recorded)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    best, fitted, summary = accuracy(args.quick, not args.no_optimize)
    table = "; ".join(f"{s} " + "/".join(f"{best[(s, n)]:.2g}" for n in NFES) for s in DETERMINISTIC)
    result = f"RMS error vs the exact ODE at NFE {'/'.join(map(str, NFES))}, default grids: {table}"
    if fitted:
        result += "; with grids.optimize: " + "; ".join(
            f"{s} " + "/".join(f"{fitted[(s, n)]:.2g}" for n in NFES) for s in OPTIMIZE if (s, 5) in fitted)
    result += "; " + "; ".join(summary)
    if not args.quick:
        compile_times()
        result += f"; euler loop / bare lax.scan time {overhead():.2f}x"
    if args.quick or args.no_record or args.no_optimize:  # only a complete run is recorded
        print(f"\n(not recorded) {result}")
        return
    results.record("solvers", result)


if __name__ == "__main__":
    main()
