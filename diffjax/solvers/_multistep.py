"""Multistep exponential integrators in the data-prediction form (DPM-Solver++, Lu et al. 2022).

The probability-flow ODE has the exact solution, with lam = log(alpha / sigma) and h = lam_next - lam,

    x_next = (s_next / s) x + a_next * int_0^h exp(u - h) x0(lam + u) du.

A k-th order step replaces x0(lam + u) by the polynomial through the current and the k - 1
previous data estimates (Newton form on the points u = 0, -h0, -(h0 + h1)) and integrates it
exactly against exp(u - h), with the moments

    M_0 = 1 - exp(-h),  M_j = h^j - j M_{j-1}.

The zeroth-order part is the DDIM step a_next x0 + s_next eps, finite everywhere; the
higher-order terms are used only where h and the past step sizes are finite (not on a step that
touches alpha = 0). Works in either direction of time (h < 0 when encoding).
"""
import jax.numpy as jnp

from diffjax.solvers._base import Solver, first_order, nfe


class Multistep(Solver):
    order = 2
    lower_order_final = False
    default_grid = "uniform_logsnr"
    default_steps = 25

    def init(self, den, x, opts):
        zeros, zl = jnp.zeros_like(x), jnp.zeros((), den.time_dtype(x))
        # carry: state, previous two data estimates and their half log-SNRs, how many are valid
        return (x, zeros, zeros, zl, zl, jnp.zeros((), jnp.int32))

    def state(self, carry):
        return carry[0]

    def with_state(self, carry, x):
        return (x,) + tuple(carry[1:])

    def step(self, den, carry, t, t_next, key, is_last, opts):
        x, m1, m2, lam1, lam2, count = carry
        m0, eps = den(x, t)
        _, _, lam = den.coeffs(t, x)
        a_n, _, lam_n = den.coeffs(t_next, x)
        h, h0, h1 = lam_n - lam, lam - lam1, lam1 - lam2

        ok2 = jnp.isfinite(h) & jnp.isfinite(h0) & (count >= 1) & (self.order >= 2)
        ok3 = ok2 & jnp.isfinite(h1) & (count >= 2) & (self.order >= 3)
        if self.lower_order_final:
            ok3 = ok3 & ~is_last
        # finite stand-ins where a branch is not taken (keeps values and gradients NaN-free)
        hs, h0s, h1s = jnp.where(ok2, h, 1.0), jnp.where(ok2, h0, 1.0), jnp.where(ok3, h1, 1.0)
        em1 = jnp.expm1(-hs)
        mom1 = hs + em1
        mom2 = hs * hs - 2.0 * mom1
        d01 = (m0 - m1) / h0s
        d12 = (m1 - m2) / h1s
        d012 = (d01 - d12) / (h0s + h1s)
        corr2 = mom1 * d01
        corr3 = mom1 * (d01 + h0s * d012) + mom2 * d012
        corr = jnp.where(ok3, corr3, jnp.where(ok2, corr2, 0.0))
        x_next = first_order(den, m0, eps, t_next, x) + (a_n * corr).astype(x.dtype)
        carry = (x_next.astype(x.dtype), m0, m1, lam.astype(lam1.dtype), lam1, count + 1)
        return carry, nfe(1)
