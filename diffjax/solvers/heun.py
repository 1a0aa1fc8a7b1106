"""Heun's method (EDM, Karras et al. 2022): an Euler step in (s~ = sigma/alpha, y = x/alpha), then
the trapezoidal correction with the noise estimate at the end point. Second order, two model
calls per step; a step that starts where alpha = 0 takes the first-order limit (one call).
"""
import jax
import jax.numpy as jnp

from diffjax.solvers._base import Solver, nfe, register
from diffjax.solvers.euler import euler_update


@register
class Heun(Solver):
    name = "heun"
    default_grid = "uniform_logsnr"
    default_steps = 25

    @property
    def deterministic(self) -> bool:
        return True

    def step(self, den, x, t, t_next, key, is_last):
        x0, eps = den(x, t)
        x_pred = euler_update(den, x, x0, eps, t, t_next)
        a, s, _ = den.coeffs(t, x)
        a_n, s_n, _ = den.coeffs(t_next, x)
        regular = a > 0

        def correct(_):
            _, eps_next = den(x_pred, t_next)
            ds = s_n - a_n / jnp.where(regular, a, 1.0) * s  # alpha_next (s~_next - s~)
            return (x_pred + 0.5 * ds * (eps_next - eps)).astype(x.dtype)

        x_next = jax.lax.cond(regular, correct, lambda _: x_pred, None)
        return x_next, nfe(1) + regular.astype(jnp.int32)
