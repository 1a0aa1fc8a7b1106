"""More steps are never worse: for every deterministic fixed-grid solver on its default grid and
every schedule, the error against the exact probability-flow ODE solution does not grow from 3
to 4, 6, 8, 16, 32 and 64 steps.

Data (float64, from t = 1 to t = 1e-3; alpha(1) = 0 for rectified flow): a Gaussian
N((0.5, -1), diag(0.5, 0.1)), whose ODE solution is affine per dimension (closed form), and a
sharper two-component mixture, solved by scipy's DOP853 at rtol 1e-11 -- both with the exact
models of ``shared/conformance/oracles.py`` (their own schedule formulas, not diffjax's). One
``sample`` call runs both data sets (the first rows see the Gaussian's model, the others the
mixture's), and the grid is an argument of the compiled function (one compilation per step
count). The error is the RMS distance to the exact solution at t_min, for each data set; it may
grow by at most ``FLOOR`` (the reference's and float64's accuracy) from one step count to the
next. ``errors(solver, schedule, grids)`` also measures the other named grids (``python
bench/monotonicity.py`` records them): ``uniform_logsnr`` and ``karras`` are not monotone at few
steps for any solver here.
"""
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "conformance"))
oracles = pytest.importorskip("oracles")

COUNTS = (3, 4, 6, 8, 16, 32, 64)
T_MAX, T_MIN = 1.0, 1e-3
FLOOR = 1e-8
N_GAUSS, N_MIX = 8, 16
GAUSS = oracles.GaussianMixture(np.ones(1), np.array([[0.5, -1.0]]), np.array([[0.5, 0.1]]))
MIX = oracles.GaussianMixture(np.array([0.3, 0.7]), np.array([[-1.0, 0.5], [0.8, -0.3]]),
                              np.array([[0.05, 0.1], [0.2, 0.08]]))
SCHEDULES = {"cosine": (dj.schedules.cosine(), "eps"), "linear_vp": (dj.schedules.linear_vp(), "eps"),
             "ve": (dj.schedules.ve(), "x0"), "rectified_flow": (dj.schedules.rectified_flow(), "flow")}
SOLVERS = tuple(s for s in dj.solvers.DETERMINISTIC if dj.solvers.get(s).fixed_grid)


@functools.lru_cache(maxsize=None)
def problem(schedule):
    """(x_init, exact solution at T_MIN, model_fn) for the Gaussian rows and the mixture rows."""
    ref = oracles.SCHEDULES[schedule]
    (a1, s1, _, _), (a0, s0, _, _) = ref.coeffs(np.float64(T_MAX)), ref.coeffs(np.float64(T_MIN))
    rng = np.random.default_rng(0)
    mu, var = GAUSS.means[0], GAUSS.variances[0]
    xg = a1 * mu + s1 * rng.standard_normal((N_GAUSS, 2))
    exact_g = a0 * mu + (xg - a1 * mu) * np.sqrt((a0**2 * var + s0**2) / (a1**2 * var + s1**2))
    xm = a1 * MIX.means[rng.integers(0, 2, N_MIX)] + s1 * rng.standard_normal((N_MIX, 2))
    exact_m = MIX.reference_ode(xm, T_MAX, T_MIN, ref)
    prediction = SCHEDULES[schedule][1]
    fg, fm = GAUSS.model_fn(ref, prediction), MIX.model_fn(ref, prediction)

    def model(x, t):
        return jnp.concatenate([fg(x[:N_GAUSS], t[:N_GAUSS]), fm(x[N_GAUSS:], t[N_GAUSS:])])

    return np.concatenate([xg, xm]), (exact_g, exact_m), model


def errors(solver, schedule, grids=None):
    """{grid: (Gaussian errors, mixture errors) at COUNTS} for the named ``grids`` (default: the
    solver's default grid); the solver's default grid is built with its default options."""
    sch, prediction = SCHEDULES[schedule]
    x_init, (exact_g, exact_m), model = problem(schedule)
    cls = dj.solvers.get(solver)
    grids = grids or (cls.default_grid,)
    out = {g: ([], []) for g in grids}
    for n in COUNTS:
        run = jax.jit(lambda ts: dj.sample(model, jax.random.PRNGKey(0), x_init.shape, schedule=sch,
                                           prediction=prediction, solver=solver, ts=ts, x_init=jnp.asarray(x_init),
                                           denoise_final=False)[0])
        for g in grids:
            options = dict(cls.default_grid_options) if g == cls.default_grid else {}
            x = np.asarray(run(dj.grids.get(g, sch, n, T_MAX, T_MIN, jnp.float64, **options)))
            out[g][0].append(float(np.sqrt(np.mean((x[:N_GAUSS] - exact_g) ** 2))))
            out[g][1].append(float(np.sqrt(np.mean((x[N_GAUSS:] - exact_m) ** 2))))
    return out


def growth(errs):
    """The step-count pairs (and errors) where the error grows by more than FLOOR."""
    return [(COUNTS[i], COUNTS[i + 1], errs[i], errs[i + 1]) for i in range(len(errs) - 1)
            if errs[i + 1] > errs[i] + FLOOR]


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("solver", SOLVERS)
def test_error_never_grows_with_the_number_of_steps(solver, schedule):
    with jax.enable_x64(True):
        errs = errors(solver, schedule)
    bad = {(g, data): growth(e) for g, (eg, em) in errs.items() for data, e in (("gaussian", eg), ("mixture", em))
           if growth(e)}
    assert not bad, bad
