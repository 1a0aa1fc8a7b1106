"""Ancestral sampling (Ho et al. 2020), for any Gaussian schedule and grid: each step samples
the exact Gaussian posterior q(x_next | x_t, x0) at the model's estimate x0 = x0_hat(x_t, t),

    mean = a_next x0 + s_next exp(-h) eps_hat,  var = s_next^2 (1 - exp(-2 h)),

which is DDIM with eta = 1 (h = lam_next - lam, half log-SNR).
"""
from diffjax.solvers._base import Solver, nfe, register
from diffjax.solvers.ddim import ddim_update

__all__ = ["DDPM"]


def __dir__():
    return sorted(__all__)


@register
class DDPM(Solver):
    """Ancestral sampling (DDIM with eta = 1; see the module docstring): stochastic, one model call
    per step. No options. Not usable by ``encode``."""

    name = "ddpm"
    default_grid = "uniform_t"
    default_steps = 1000

    @property
    def deterministic(self) -> bool:
        return False

    def step(self, den, x, t, t_next, key, is_last):
        x0, eps = den(x, t)
        return ddim_update(den, x, x0, eps, t, t_next, key, 1.0), nfe(1)
