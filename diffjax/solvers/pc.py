"""Predictor-corrector sampling (Song et al. 2021): at each grid time, ``corrector_steps`` steps
of Langevin dynamics with the model's score, then an ancestral predictor step to the next time.

Langevin step size by the signal-to-noise rule of Song et al.: eps_l = 2 (snr ||z|| / ||score||)^2
with both norms averaged over the batch (as in their code; per-example norms are too noisy in
low dimension), x <- x + eps_l score + sqrt(2 eps_l) z. ``snr`` is a traced value;
``corrector_steps`` (an int >= 0) is static, the length of the Langevin loop. A concrete ``snr``
must be finite and > 0 (``corrector_steps=0`` turns the corrector off), else a ValueError names
it. Model calls per grid step: 1 + corrector_steps.
"""
import equinox as eqx
import jax
import jax.numpy as jnp

from diffjax.solvers._base import Solver, check_float_option, int_option, nfe, register
from diffjax.solvers.ddim import ddim_update

__all__ = ["PC"]


def __dir__():
    return sorted(__all__)


def _norm(v):
    return jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=-1))


@register
class PC(Solver):
    """Predictor-corrector sampling (see the module docstring): ``corrector_steps`` Langevin steps
    at the current time, then an ancestral (DDIM eta = 1) step; always stochastic. Options
    ``snr`` (> 0, default 0.05) and ``corrector_steps`` (int >= 0, default 1); 1 +
    ``corrector_steps`` model calls per grid step."""

    name = "pc"
    default_grid = "uniform_logsnr"
    default_steps = 500
    snr: float = 0.05
    corrector_steps: int = eqx.field(static=True, default=1, converter=int_option("corrector_steps", 0))

    def __check_init__(self):
        check_float_option(self.name, "snr", self.snr, low=0.0, low_open=True)

    @property
    def deterministic(self) -> bool:
        return False

    def step(self, den, x, t, t_next, key, is_last):
        k_corr, k_pred = jax.random.split(key)
        n_corr = self.corrector_steps
        _, s, _ = den.coeffs(t, x)

        def langevin(x, k):
            _, eps = den(x, t)
            score = -eps / s
            z = jax.random.normal(k, x.shape, x.dtype)
            ratio = self.snr * jnp.mean(_norm(z)) / jnp.maximum(jnp.mean(_norm(score)), 1e-20)
            step = (2.0 * ratio**2).astype(x.dtype)
            return (x + step * score + jnp.sqrt(2.0 * step) * z).astype(x.dtype), None

        x, _ = den.scan(langevin, x, jax.random.split(k_corr, n_corr))  # lax.scan; threads a self-cond estimate
        x0, eps = den(x, t)
        return ddim_update(den, x, x0, eps, t, t_next, k_pred, 1.0), nfe(1 + n_corr)
