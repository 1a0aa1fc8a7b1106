"""DPM-Solver++(3M): third-order multistep exponential integrator in log-SNR. One model call per
step; orders 1 and 2 on the first two steps, and order 2 on the final step (lower order at the
final step, for stability at few steps). See ``_multistep.py`` for the update."""
import equinox as eqx

from diffjax.solvers._base import register
from diffjax.solvers._multistep import Multistep


@register
class DPMpp3M(Multistep):
    name = "dpmpp_3m"
    order: int = eqx.field(static=True, init=False, default=3)
    lower_order_final: bool = eqx.field(static=True, init=False, default=True)
