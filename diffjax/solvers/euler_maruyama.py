"""Euler-Maruyama on the reverse-time SDE (Song et al. 2021), integrating from t down to t_next:

    dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dW_bar,   score = -eps / sigma.

The SDE is singular where alpha = 0 (f = -inf: rectified flow at t = 1); a step that starts
there is taken as the exact Gaussian-posterior (ancestral) step instead. The default grid is
uniform in log-SNR, which keeps f dt small near both ends.
"""
import jax
import jax.numpy as jnp

from diffjax.solvers._base import Solver, nfe, register
from diffjax.solvers.ddim import ddim_update

__all__ = ["EulerMaruyama"]


def __dir__():
    return sorted(__all__)


@register
class EulerMaruyama(Solver):
    """Euler-Maruyama on the reverse-time SDE (see the module docstring): stochastic, one model
    call per step. No options. Not usable by ``encode``."""

    name = "euler_maruyama"
    default_grid = "uniform_logsnr"
    default_steps = 1000

    @property
    def deterministic(self) -> bool:
        return False

    def step(self, den, x, t, t_next, key, is_last):
        x0, eps = den(x, t)
        tt = jnp.asarray(t, den.time_dtype(x))
        sch = den.schedule
        a, s = sch.alpha(tt), sch.sigma(tt)
        f, g2 = sch.drift(tt), sch.diffusion2(tt)
        dt = jnp.asarray(t_next, tt.dtype) - tt  # negative when sampling
        regular = a > 0
        f, g2 = jnp.where(regular, f, 0.0), jnp.where(regular, g2, 0.0)
        z = jax.random.normal(key, x.shape, x.dtype)
        drift = f * x + g2 / s * eps  # f x - g^2 score
        x_em = x + drift * dt + jnp.sqrt(g2 * jnp.abs(dt)) * z
        x_next = jnp.where(regular, x_em, ddim_update(den, x, x0, eps, t, t_next, key, 1.0))
        return x_next.astype(x.dtype), nfe(1)
