"""DPM-Solver++(2M): second-order multistep exponential integrator in log-SNR (Lu et al. 2022).
One model call per step; the first step is first order. See ``_multistep.py`` for the update."""
import equinox as eqx

from diffjax.solvers._base import register
from diffjax.solvers._multistep import Multistep


@register
class DPMpp2M(Multistep):
    name = "dpmpp_2m"
    order: int = eqx.field(static=True, init=False, default=2)
