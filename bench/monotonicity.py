"""Does more steps mean less error? Every deterministic fixed-grid solver, grid and schedule on an
exact Gaussian, from t = 1 (alpha = 0 on the VP schedules and rectified flow) to t = 1e-3.

    python bench/monotonicity.py [--no-record]

Data N((0.5, -1), diag(0.5, 0.1)); 256 starts; the exact probability-flow ODE solution is
affine per dimension, x(t0) = a0 mu + (x1 - a1 mu) sqrt((a0^2 v + s0^2) / (a1^2 v + s1^2)); float64.
For 3, 4, 6, 8, 16, 32 and 64 steps the RMS error is printed, and a row is a violation where the
error grows by more than 5% from one step count to the next (above a floor of 1e-6). The summary
(violations per schedule and the step pairs where they happen) goes to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import diffjax as dj  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import results  # noqa: E402  (bench/results.py)

COUNTS = (3, 4, 6, 8, 16, 32, 64)
GRIDS = ("uniform_t", "uniform_logsnr", "karras")
MU, VAR = np.array([0.5, -1.0]), np.array([0.5, 0.1])
T_MIN, T_MAX = 1e-3, 1.0


def gaussian_model(schedule, prediction):
    """The exact model of N(MU, diag(VAR)) for ``prediction``."""
    def fn(x, t):
        a = schedule.alpha(t)[:, None].astype(x.dtype)
        s = schedule.sigma(t)[:, None].astype(x.dtype)
        x0 = MU + a * VAR * (x - a * MU) / (a**2 * VAR + s**2)
        eps = (x - a * x0) / s
        out = {"x0": x0, "eps": eps}
        if prediction in out:
            return out[prediction]
        return dj.convert(x0, x, t, schedule, source="x0", target=prediction)
    return fn


def solvers():
    """The deterministic fixed-grid solvers (rk45 chooses its own steps)."""
    return [name for name in dj.solvers.DETERMINISTIC if dj.solvers.get(name).fixed_grid]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    schedules = {"cosine": ("eps", dj.schedules.cosine()), "linear_vp": ("eps", dj.schedules.linear_vp()),
                 "ve": ("x0", dj.schedules.ve()), "rectified_flow": ("flow", dj.schedules.rectified_flow())}
    bad = collections.defaultdict(list)
    total = 0
    print(f"{'schedule':<15}{'solver':<14}{'grid':<15}" + "".join(f"{n:>9}" for n in COUNTS))
    for sname, (pred, sch) in schedules.items():
        a0, s0 = (float(c) for c in (sch.alpha(jnp.float64(T_MIN)), sch.sigma(jnp.float64(T_MIN))))
        a1, s1 = (float(c) for c in (sch.alpha(jnp.float64(T_MAX)), sch.sigma(jnp.float64(T_MAX))))
        x_init = s1 * np.random.default_rng(1).standard_normal((256, 2)) + a1 * MU
        exact = a0 * MU + (x_init - a1 * MU) * np.sqrt((a0**2 * VAR + s0**2) / (a1**2 * VAR + s1**2))
        model = gaussian_model(sch, pred)
        for solver in solvers():
            for grid in GRIDS:
                errs = []
                for n in COUNTS:
                    x, _ = dj.sample(model, jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction=pred,
                                     solver=solver, steps=n, grid=grid, t_min=T_MIN, t_max=T_MAX,
                                     x_init=jnp.asarray(x_init), denoise_final=False)
                    errs.append(float(np.sqrt(np.mean((np.asarray(x) - exact) ** 2))))
                viol = [(COUNTS[i], COUNTS[i + 1]) for i in range(len(errs) - 1)
                        if errs[i + 1] > 1.05 * errs[i] and errs[i + 1] > 1e-6]
                total += 1
                if viol:
                    bad[sname].append((solver, grid, viol))
                print(f"{sname:<15}{solver:<14}{grid:<15}" + "".join(f"{e:9.2g}" for e in errs)
                      + (f"   grows at {viol}" if viol else ""), flush=True)
    n_bad = sum(len(v) for v in bad.values())
    pairs = collections.Counter(p for v in bad.values() for _, _, viol in v for p in viol)
    result = (f"{n_bad}/{total} (schedule, solver, grid) combinations have an error that grows with the steps "
              f"somewhere in {'/'.join(map(str, COUNTS))}: " + "; ".join(f"{k} {len(v)}" for k, v in bad.items())
              + "; at step pairs " + ", ".join(f"{a}->{b}: {c}" for (a, b), c in sorted(pairs.items())))
    print("\n" + result)
    if not args.no_record:
        results.record("monotonicity", result)


if __name__ == "__main__":
    main()
