"""Adaptive Runge-Kutta on the probability-flow ODE dx/dt = alpha' x0 + sigma' eps, by diffrax
(Dormand-Prince 5(4) ``"dopri5"`` or Tsitouras 5(4) ``"tsit5"``, PID step-size control).

Only the ends of the grid are used: there is no single step, so the driver's projection hook
does not apply. ``rtol`` and ``atol`` are traced values; ``method`` and ``max_steps`` (an
int >= 1, the bound of diffrax's loop) are static. ``info["nfe"]`` counts vector-field
evaluations: both methods are first-same-as-last with 7 stages, so each attempted step costs 6
new model calls, plus the initial evaluation and the initial step-size selection.
"""
import diffrax
import equinox as eqx
import jax.numpy as jnp

from diffjax.solvers._base import Solver, int_option, register

_METHODS = {"dopri5": diffrax.Dopri5, "tsit5": diffrax.Tsit5}


def _method(name):
    if not isinstance(name, str) or name not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {name!r}")
    return name


@register
class RK45(Solver):
    name = "rk45"
    default_grid = "uniform_t"
    default_steps = 1
    fixed_grid = False
    rtol: float = 1e-5
    atol: float = 1e-5
    method: str = eqx.field(static=True, default="dopri5", converter=_method)
    max_steps: int = eqx.field(static=True, default=4096, converter=int_option("max_steps", 1))

    @property
    def deterministic(self) -> bool:
        return True

    def solve(self, den, x, ts):
        term = diffrax.ODETerm(lambda t, y, args: den.flow(y, t))
        sol = diffrax.diffeqsolve(
            term, _METHODS[self.method](), t0=ts[0], t1=ts[-1], dt0=None, y0=x,
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            saveat=diffrax.SaveAt(t1=True), max_steps=self.max_steps)
        stats = sol.stats
        attempted = stats["num_accepted_steps"] + stats["num_rejected_steps"]
        nfe = 6 * attempted + 1  # + the initial evaluation (counted against debug callbacks in the tests)
        return sol.ys[-1], jnp.asarray(nfe, jnp.int32)
