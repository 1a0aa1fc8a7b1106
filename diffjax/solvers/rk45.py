"""Adaptive Runge-Kutta on the probability-flow ODE dx/dt = alpha' x0 + sigma' eps, by diffrax
(Dormand-Prince 5(4) ``"dopri5"`` or Tsitouras 5(4) ``"tsit5"``, PID step-size control).

Only the ends of the grid are used: there is no single step, so the driver's projection hook
does not apply. ``rtol`` and ``atol`` (the PID controller's relative and absolute tolerances)
are traced values: a concrete one must be finite and > 0, else a ValueError names it (a traced one
is not checked); ``method`` and ``max_steps`` (an int >= 1, the bound of diffrax's loop) are
static. diffrax is imported when a solve runs, not with ``diffjax``. ``info["nfe"]`` counts vector-field
evaluations: both methods are first-same-as-last with 7 stages, so each attempted step costs 6
new model calls, plus the initial evaluation and the initial step-size selection.
"""
import math

import equinox as eqx
import jax.numpy as jnp

from diffjax.solvers._base import Solver, concrete_float, int_option, register

__all__ = ["RK45"]


def __dir__():
    return sorted(__all__)


_METHODS = {"dopri5": "Dopri5", "tsit5": "Tsit5"}  # diffrax class names


def _method(name):
    if not isinstance(name, str) or name not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {name!r}")
    return name


def _check_tolerance(name, value):
    """A concrete tolerance must be a finite number > 0; a traced one is not checked."""
    v = concrete_float(value)
    if v is not None and not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name} must be a finite number > 0 (solver 'rk45'), got {v!r}")


@register
class RK45(Solver):
    """Adaptive Dormand-Prince / Tsitouras 5(4) on the probability-flow ODE, by diffrax.

    Options: ``rtol``, ``atol`` (finite, > 0; default 1e-5 each), ``method`` (``"dopri5"`` or
    ``"tsit5"``), ``max_steps`` (int >= 1, default 4096). Uses only the ends of the grid.
    """
    name = "rk45"
    default_grid = "uniform_t"
    default_steps = 1
    fixed_grid = False
    rtol: float = 1e-5
    atol: float = 1e-5
    method: str = eqx.field(static=True, default="dopri5", converter=_method)
    max_steps: int = eqx.field(static=True, default=4096, converter=int_option("max_steps", 1))

    def __check_init__(self):
        _check_tolerance("rtol", self.rtol)
        _check_tolerance("atol", self.atol)

    @property
    def deterministic(self) -> bool:
        return True

    def solve(self, den, x, ts):
        import diffrax  # pylint: disable=import-outside-toplevel  (only rk45 solves need it)

        term = diffrax.ODETerm(lambda t, y, args: den.flow(y, t))
        sol = diffrax.diffeqsolve(
            term, getattr(diffrax, _METHODS[self.method])(), t0=ts[0], t1=ts[-1], dt0=None, y0=x,
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            saveat=diffrax.SaveAt(t1=True), max_steps=self.max_steps)
        stats = sol.stats
        attempted = stats["num_accepted_steps"] + stats["num_rejected_steps"]
        nfe = 6 * attempted + 1  # + the initial evaluation (counted against debug callbacks in the tests)
        return sol.ys[-1], jnp.asarray(nfe, jnp.int32)
