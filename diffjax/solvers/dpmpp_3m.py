"""DPM-Solver++(3M): third-order multistep exponential integrator in log-SNR. One model call per
step; orders 1 and 2 on the first two steps, and order 2 on the final step (lower order at the
final step, for stability at few steps). See ``_multistep.py`` for the update.

``dpmpp_3m`` is the published update (Lu et al. 2022's code ``multistep_dpm_solver_third_update``,
k-diffusion ``sample_dpmpp_3m_sde`` with eta = 0, diffusers' order-3 multistep): with
r0 = h0 / h, r1 = h1 / h, D1_0 = (x0 - x0_1) / r0, D1_1 = (x0_1 - x0_2) / r1,
D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r0 + r1),
phi_2 = expm1(-h) / h + 1, phi_3 = phi_2 / h - 1/2:

    x_next = (s_next / s) x - a_next expm1(-h) x0 + a_next phi_2 D1 - a_next phi_3 D2.

``dpmpp_3m_exp`` integrates the quadratic interpolant of the data estimates exactly (its
quadratic term is twice the published one)."""
import equinox as eqx

from diffjax.solvers._base import register
from diffjax.solvers._multistep import Multistep

__all__ = ["DPMpp3M", "DPMpp3MExp"]


def __dir__():
    return sorted(__all__)


@register
class DPMpp3M(Multistep):
    """DPM-Solver++(3M) as published (see the module docstring): third-order multistep, one model
    call per step, lower order on the first two steps and the last. No options."""

    name = "dpmpp_3m"
    order: int = eqx.field(static=True, init=False, default=3)
    lower_order_final: bool = eqx.field(static=True, init=False, default=True)
    published: bool = eqx.field(static=True, init=False, default=True)


@register
class DPMpp3MExp(Multistep):
    """Exponential integrator of the quadratic interpolant (not the published DPM-Solver++(3M))."""
    name = "dpmpp_3m_exp"
    order: int = eqx.field(static=True, init=False, default=3)
    lower_order_final: bool = eqx.field(static=True, init=False, default=True)
    published: bool = eqx.field(static=True, init=False, default=False)
