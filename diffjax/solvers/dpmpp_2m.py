"""DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second-order multistep exponential integrator in
log-SNR, one model call per step, the first step first order. With lam = log(alpha / sigma),
h = lam_next - lam and r = h_prev / h:

    D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev,   x_next = (s_next / s) x - a_next expm1(-h) D,

as k-diffusion's ``sample_dpmpp_2m`` and diffusers' ``DPMSolverMultistepScheduler`` with
``solver_type="midpoint"``. ``dpmpp_2m_exp`` is a different second-order method: the exponential
integrator of the linear interpolant of the data estimates, integrated exactly,

    x_next = (s_next / s) x - a_next expm1(-h) x0 + a_next (h + expm1(-h)) (x0 - x0_prev) / h_prev

(diffusers' ``solver_type="heun"``). See ``_multistep.py`` for the shared update."""
import equinox as eqx

from diffjax.solvers._base import register
from diffjax.solvers._multistep import Multistep

__all__ = ["DPMpp2M", "DPMpp2MExp"]


def __dir__():
    return sorted(__all__)


@register
class DPMpp2M(Multistep):
    """DPM-Solver++(2M) as published (see the module docstring): second-order multistep, one
    model call per step. No options."""

    name = "dpmpp_2m"
    order: int = eqx.field(static=True, init=False, default=2)
    lower_order_final: bool = eqx.field(static=True, init=False, default=True)
    published: bool = eqx.field(static=True, init=False, default=True)


@register
class DPMpp2MExp(Multistep):
    """Exponential integrator of the linear interpolant (not the published DPM-Solver++(2M))."""
    name = "dpmpp_2m_exp"
    order: int = eqx.field(static=True, init=False, default=2)
    lower_order_final: bool = eqx.field(static=True, init=False, default=True)
    published: bool = eqx.field(static=True, init=False, default=False)
