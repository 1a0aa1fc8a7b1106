"""Multistep exponential integrators in the data-prediction form (DPM-Solver++, Lu et al. 2022).

The probability-flow ODE has the exact solution, with lam = log(alpha / sigma) and h = lam_next - lam,

    x_next = (s_next / s) x + a_next * int_0^h exp(u - h) x0(lam + u) du.

A k-th order step replaces x0(lam + u) by the polynomial through the current and the k - 1
previous data estimates (Newton form on the points u = 0, -h0, -(h0 + h1)) and integrates it
exactly against exp(u - h), with the moments

    M_0 = 1 - exp(-h),  M_j = h^j - j M_{j-1}.

This exact integral of the interpolant is the ``*_exp`` variants (``dpmpp_2m_exp``, ``dpmpp_3m_exp``;
diffusers' ``solver_type="heun"`` for order 2). The published DPM-Solver++ (``published = True``:
``dpmpp_2m``, ``dpmpp_3m``; Lu et al. 2022 Alg. 2, k-diffusion ``sample_dpmpp_2m`` /
``sample_dpmpp_3m_sde`` with eta = 0, diffusers' ``solver_type="midpoint"``) replaces the
order-2 term M_1 d01 by h M_0 d01 / 2, i.e. with r = h0 / h,

    x_next = (s_next / s) x - a_next expm1(-h) ((1 + 1/(2r)) x0 - 1/(2r) x0_prev),

and the order-3 quadratic term M_2 d012 by M_2 d012 / 2 (the phi_3 term of their code); its
order-2 warm-up and final steps use M_1 d01, as k-diffusion's 3M does.

The zeroth-order part is the DDIM step a_next x0 + s_next eps, finite everywhere; the
higher-order terms are used only where h and the past step sizes are finite (not on a step that
touches alpha = 0). Works in either direction of time (h < 0 when encoding).

The loop carry is a ``MultistepState``: the sample, the two previous data estimates with their
half log-SNRs, and how many of those are valid (the first steps warm up at lower order). With
``lower_order_final`` (every solver here) a step's order is at most the number of steps left
after it plus one: the final step is first order, the one before it at most second order, as in
the reference code of UniPC (and of DPM-Solver++ below 10 steps): the polynomial extrapolation of
the data estimate over the last, long log-SNR steps of the default grid overshoots. Called
without ``steps_left`` (only ``is_last`` known), only the final step is lowered, to order 1.
``order`` (1, 2 or 3), ``lower_order_final`` and ``published`` are static, set by the subclass, not options.

Default grid: ``uniform_angle`` (equal steps in arctan(sigma / alpha), see ``diffjax.grids``),
with the lowered final orders below. Measured as the RMS error against the exact ODE solution on
the three problems of ``bench/solvers.py`` (the VE mixture, the cosine 8-D mixture, the
rectified-flow 16-D mixture) and on the Gaussian and mixture of
``tests/core/test_solver_monotonicity.py`` with every schedule, it is the grid on which the error
of every solver here falls from 3 to 64 steps; on ``uniform_logsnr`` (the former default) and
``karras`` it grows somewhere between 3 and 16 steps for each of them (by up to 10x for the 3M
solvers; later too for some: 2M on karras from 16 to 32, unipc on uniform_logsnr from 32 to 64), and ``uniform_angle`` with rho = 1.5 still let it grow by 4-60%
between 6 and 16 steps. On the VE mixture of ``bench/solvers.py`` the 3M solvers lost to
``uniform_logsnr`` at 10 and 20 steps (0.037 / 0.0081 against 0.028 / 0.0045) and gained
2.6-4.4x at 4-6 steps. The cost: the first and last steps of the angle grid stay O(1) long in log-SNR as the
steps grow (only their angle shrinks), which caps the observed order near 2; on a cosine Gaussian
at 64 steps dpmpp_3m_exp's error is 30x that on ``uniform_logsnr`` (1.5e-3 against 5.3e-5).
For many steps of a third-order solver on smooth data, pass ``grid="uniform_logsnr"``.
"""
from typing import NamedTuple, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp

from diffjax.solvers._base import Solver, first_order, nfe


class MultistepState(NamedTuple):
    """The carry of a multistep solver between grid steps."""

    x: jax.Array                           # the sample at the current grid time
    x0_prev: Tuple[jax.Array, jax.Array]   # data estimates of the last and second-to-last step
    lam_prev: Tuple[jax.Array, jax.Array]  # their half log-SNRs
    count: jax.Array                       # how many steps were taken (past estimates that are valid)


class Multistep(Solver):
    order: int = eqx.field(static=True, init=False, default=2)
    lower_order_final: bool = eqx.field(static=True, init=False, default=False)
    published: bool = eqx.field(static=True, init=False, default=False)
    default_grid = "uniform_angle"
    default_steps = 25
    uses_steps_left = True

    def __check_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"order must be 1, 2 or 3, got {self.order!r}")

    @property
    def deterministic(self) -> bool:
        return True

    def init(self, den, x):
        zeros, zl = jnp.zeros_like(x), jnp.zeros((), den.time_dtype(x))
        return MultistepState(x=x, x0_prev=(zeros, zeros), lam_prev=(zl, zl), count=jnp.zeros((), jnp.int32))

    def state(self, carry):
        return carry.x

    def with_state(self, carry, x):
        return carry._replace(x=x)

    def step(self, den, carry, t, t_next, key, is_last, steps_left=None):
        x, count = carry.x, carry.count
        (m1, m2), (lam1, lam2) = carry.x0_prev, carry.lam_prev
        m0, eps = den(x, t)
        _, _, lam = den.coeffs(t, x)
        a_n, _, lam_n = den.coeffs(t_next, x)
        h, h0, h1 = lam_n - lam, lam - lam1, lam1 - lam2

        ok2 = jnp.isfinite(h) & jnp.isfinite(h0) & (count >= 1) & (self.order >= 2)
        ok3 = ok2 & jnp.isfinite(h1) & (count >= 2) & (self.order >= 3)
        if self.lower_order_final:  # order <= steps left + 1: 1 on the final step, 2 on the one before
            left = jnp.where(is_last, 0, 2) if steps_left is None else steps_left
            ok2, ok3 = ok2 & (left >= 1), ok3 & (left >= 2)
        # finite stand-ins where a branch is not taken (keeps values and gradients NaN-free)
        hs, h0s, h1s = jnp.where(ok2, h, 1.0), jnp.where(ok2, h0, 1.0), jnp.where(ok3, h1, 1.0)
        em1 = jnp.expm1(-hs)
        mom1 = hs + em1
        mom2 = hs * hs - 2.0 * mom1
        d01 = (m0 - m1) / h0s
        d12 = (m1 - m2) / h1s
        d012 = (d01 - d12) / (h0s + h1s)
        if self.published and self.order == 2:
            corr2 = (-0.5 * hs * em1) * d01  # h M_0 / 2: the midpoint D = (1 + 1/(2r)) x0 - x0_prev / (2r)
        else:
            corr2 = mom1 * d01
        quad = 0.5 * mom2 if self.published else mom2  # published 3M: -phi_3 D2 = M_2 d012 / 2
        corr3 = mom1 * (d01 + h0s * d012) + quad * d012
        corr = jnp.where(ok3, corr3, jnp.where(ok2, corr2, 0.0))
        x_next = first_order(den, m0, eps, t_next, x) + (a_n * corr).astype(x.dtype)
        carry = MultistepState(x=x_next.astype(x.dtype), x0_prev=(m0, m1), lam_prev=(lam.astype(lam1.dtype), lam1),
                               count=count + 1)
        return carry, nfe(1)
