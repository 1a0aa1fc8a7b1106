"""Adaptive Runge-Kutta on the probability-flow ODE dx/dt = alpha' x0 + sigma' eps, by diffrax
(Dormand-Prince 5(4) ``"dopri5"`` or Tsitouras 5(4) ``"tsit5"``, PID step-size control).

Only the ends of the grid are used. ``info["nfe"]`` counts vector-field evaluations: both
methods are first-same-as-last with 7 stages, so each attempted step costs 6 new model calls,
plus the initial evaluation and the initial step-size selection.
"""
import diffrax
import jax.numpy as jnp

from diffjax.solvers._base import Solver, register

_METHODS = {"dopri5": diffrax.Dopri5, "tsit5": diffrax.Tsit5}


@register
class RK45(Solver):
    name = "rk45"
    default_grid = "uniform_t"
    default_steps = 1
    options = {"rtol": 1e-5, "atol": 1e-5, "method": "dopri5", "max_steps": 4096}

    def solve(self, den, x, ts, key, opts):
        if opts["method"] not in _METHODS:
            raise ValueError(f"method must be one of {sorted(_METHODS)}, got {opts['method']!r}")
        term = diffrax.ODETerm(lambda t, y, args: den.flow(y, t))
        sol = diffrax.diffeqsolve(
            term, _METHODS[opts["method"]](), t0=ts[0], t1=ts[-1], dt0=None, y0=x,
            stepsize_controller=diffrax.PIDController(rtol=opts["rtol"], atol=opts["atol"]),
            saveat=diffrax.SaveAt(t1=True), max_steps=int(opts["max_steps"]))
        stats = sol.stats
        attempted = stats["num_accepted_steps"] + stats["num_rejected_steps"]
        nfe = 6 * attempted + 1  # + the initial evaluation (counted against debug callbacks in the tests)
        return sol.ys[-1], jnp.asarray(nfe, jnp.int32)
