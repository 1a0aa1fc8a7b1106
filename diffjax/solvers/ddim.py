"""DDIM (Song, Meng & Ermon 2021) for any Gaussian schedule, with stochasticity eta in [0, 1].

    x_next = a_next x0 + sqrt(s_next^2 - c^2) eps + c z,   c = eta s_next sqrt(1 - exp(-2 h)),

h = lam_next - lam (half log-SNR). eta = 0 is the deterministic first-order exponential
integrator of the probability-flow ODE; eta = 1 samples the exact Gaussian posterior
q(x_next | x_t, x0 = x0_hat), i.e. ancestral DDPM sampling. eta is a traced value; the solver
counts as deterministic only when eta is known to be 0. A concrete eta outside [0, 1] (or NaN)
raises a ValueError naming ``eta``; a traced one is not checked.

Default grid: ``uniform_angle`` (equal steps in arctan(sigma / alpha)); see ``euler.py``, whose
step is DDIM's with eta = 0.
"""
import jax
import jax.numpy as jnp

from diffjax.solvers._base import Solver, check_float_option, concrete_float, nfe, register

__all__ = ["DDIM", "ddim_update"]


def __dir__():
    return sorted(__all__)


def ddim_update(den, x, x0, eps, t, t_next, key, eta):
    """One DDIM step of ``x`` from ``t`` to ``t_next`` with stochasticity ``eta`` (the update of
    the module docstring), given the denoiser ``den``'s estimates ``x0``, ``eps`` at ``(x, t)``;
    ``key`` draws the fresh noise ``z`` (unused in effect where ``eta = 0``). ``eta = 1`` is the
    ancestral (DDPM) step. Returns the state in ``x``'s dtype."""
    _, _, lam = den.coeffs(t, x)
    a_n, s_n, lam_n = den.coeffs(t_next, x)
    h = lam_n - lam
    frac = -jnp.expm1(-2.0 * h)  # 1 - exp(-2h), = 1 where h = inf
    eta = jnp.asarray(eta, s_n.dtype)
    c = eta * s_n * jnp.sqrt(jnp.clip(frac, 0.0, 1.0))
    keep = jnp.sqrt(jnp.clip(s_n**2 - c**2, 0.0))
    z = jax.random.normal(key, x.shape, x.dtype)
    return (a_n * x0 + keep * eps + c * z).astype(x.dtype)


@register
class DDIM(Solver):
    """DDIM (see the module docstring): first order, one model call per step. Option ``eta``
    in [0, 1] (default 0, the deterministic probability-flow step; 1 is ancestral sampling)."""

    name = "ddim"
    default_grid = "uniform_angle"
    default_steps = 100
    eta: float = 0.0

    def __check_init__(self):
        check_float_option(self.name, "eta", self.eta, low=0.0, high=1.0)

    @property
    def deterministic(self) -> bool:
        return concrete_float(self.eta) == 0.0

    def step(self, den, x, t, t_next, key, is_last):
        x0, eps = den(x, t)
        return ddim_update(den, x, x0, eps, t, t_next, key, self.eta), nfe(1)
