"""Does more steps mean less error? Every deterministic fixed-grid solver on every named grid
and schedule, with the data and exact solutions of ``tests/core/test_solver_monotonicity.py``.

    python bench/monotonicity.py [--no-record]

That test checks each solver's default grid; this script runs the same measurement on every
named grid (``uniform_t``, ``uniform_logsnr``, ``karras``, ``uniform_angle``): a Gaussian and a
two-component mixture in 2-D, float64, from t = 1 to t = 1e-3, the RMS error against the exact
probability-flow ODE solution at 3, 4, 6, 8, 16, 32 and 64 steps. A (schedule, solver, grid)
row is a violation where the error on either data set grows by more than the test's floor (1e-8)
from one step count to the next. The summary (violations per grid, and whether any default grid
has one) goes to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import jax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "core"))
sys.path.insert(0, HERE)
import results  # noqa: E402  (bench/results.py)
import test_solver_monotonicity as mono  # noqa: E402

import diffjax as dj  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    bad = collections.defaultdict(list)  # grid -> [(schedule, solver, pairs)]
    bad_default, total = [], 0
    print(f"{'solver':<14}{'schedule':<16}{'grid':<16}{'data':<7}" + "".join(f"{n:>9}" for n in mono.COUNTS))
    with jax.enable_x64(True):
        for solver in mono.SOLVERS:
            default = dj.solvers.get(solver).default_grid
            for schedule in mono.SCHEDULES:
                for grid, (eg, em) in mono.errors(solver, schedule, dj.grids.NAMES).items():
                    pairs = sorted({(a, b) for e in (eg, em) for a, b, *_ in mono.growth(e)})
                    total += 1
                    if pairs:
                        bad[grid].append((schedule, solver, pairs))
                        if grid == default:
                            bad_default.append((schedule, solver, grid, pairs))
                    for data, e in (("gauss", eg), ("mix", em)):
                        print(f"{solver:<14}{schedule:<16}{grid + ('*' if grid == default else ''):<16}{data:<7}"
                              + "".join(f"{v:9.2g}" for v in e)
                              + (f"   grows at {[(a, b) for a, b, *_ in mono.growth(e)]}" if mono.growth(e) else ""),
                              flush=True)
    n_bad = sum(len(v) for v in bad.values())
    result = (f"{n_bad}/{total} (solver, schedule, grid) combinations have an error that grows with the steps "
              f"somewhere in {'/'.join(map(str, mono.COUNTS))} (Gaussian or mixture, float64): "
              + "; ".join(f"{g} {len(v)} (up to {max(b for *_, p in v for _, b in p)} steps)" for g, v in bad.items())
              + f"; default grids: {len(bad_default)} " + (str(bad_default) if bad_default else "(none grows)"))
    print("\n" + result)
    if not args.no_record:
        results.record("monotonicity", result)


if __name__ == "__main__":
    main()
