"""UniPC (Zhao et al. 2023): the unified predictor UniP and corrector UniC, multistep, in the
data-prediction form, one model call per step (the corrector reuses the next step's call).

With lam = log(alpha / sigma), a step from t to t_next has h = lam_next - lam, hh = -h, and the
previous data estimates m_i at lam_i give r_i = (lam_i - lam) / h (negative) and the differences
D_i = (m_i - m0) / r_i. With B(h) = hh (``variant="bh1"``) or expm1(hh) (``"bh2"``),
g_1 = expm1(hh) / hh - 1, g_{k+1} = g_k / hh - 1 / (k + 1)! and b_k = k! g_k / B(h), the rows
R_k = (r_1^(k-1), ..., 1):

    UniP-p:  x_next = (s_next / s) x - a_next expm1(hh) m0 - a_next B(h) sum_i rho^p_i D_i,

rho^p solving the (p - 1) x (p - 1) leading block of R rho = b (rho^p = 1/2 at p = 2, as in the
paper's code, where UniP-2 with bh2 is DPM-Solver++(2M)). Once the model has been called at the
new point (x_next, t_next), giving m_next, the corrector

    UniC-p:  x_next^c = (s_next / s) x - a_next expm1(hh) m0
                        - a_next B(h) (sum_i rho^c_i D_i + rho^c_p (m_next - m0)),

rho^c solving the full p x p system (rho^c = 1/2 at p = 1), raises the order by one. m_next, the
estimate at the uncorrected point, is kept for the next step, so the corrector costs no model
call; the final step is not corrected (that would need a call at t_min). Here the correction is
applied at the start of the next step, as the difference x_next^c - x_next added to the current
state, so a projection hook (inpainting) that edits the state between steps keeps its edit.

Orders warm up: the predictor of the k-th step (k = 0, 1, ...) has order min(order, k + 1); with
``lower_order_final`` (the default, as in the paper's code) also at most the number of steps left
after it plus one (the final step is UniP-1, the DDIM step; the one before it has order <= 2),
and the corrector of a step has that step's order. Called without ``steps_left`` (only
``is_last`` known), only the final step is lowered. A step that touches alpha = 0 (rectified
flow at t = 1: infinite h) is the DDIM step, and neither it nor its history enters a
higher-order term.

Default grid: ``uniform_angle`` with ``sigma_data = 0.5`` (equal steps in
arctan(sigma / (0.5 alpha)): the points are densest at sigma / alpha = 0.5, the scale of data in
[-1, 1], as in EDM). RMS error against the exact ODE solution at 3 / 4 / 5 / 6 / 8 / 10 / 20
model calls on the three problems of ``bench/solvers.py``: VE 0.002..80 2-D mixture 0.16 / 0.061
/ 0.034 / 0.031 / 0.018 / 0.0092 / 0.00084 (sigma_data = 1: 0.20 / 0.12 / 0.078 / 0.063 / 0.047
/ 0.036 / 0.0074); rectified-flow 16-D mixture 0.15 / 0.068 / 0.029 / 0.018 / 0.0093 / 0.0043 /
0.00050 (sigma_data = 1: 0.20 / 0.13 / 0.085 / 0.061 / 0.036 / 0.024 / 0.0038); cosine 8-D
mixture of eight well-separated modes 0.36 / 0.32 / 0.26 / 0.22 / 0.12 / 0.063 / 0.0036 (sigma_data
= 1: 0.23 / 0.17 / 0.11 / 0.087 / 0.075 / 0.048 / 0.017: few points at high noise cost it the
choice of mode below 10 calls). sigma_data = 0.7 and rho = 1.3 were measured too and were worse on
two of the three. With the lowered final orders its error falls from 3 to 64 steps on every
problem of ``tests/core/test_solver_monotonicity.py``, where on ``uniform_logsnr`` (an earlier
default) it grew from 3 to 6 or 8 steps on each schedule.

Options (static): ``order`` (1, 2 or 3; default 3), ``variant`` (``"bh1"``, ``"bh2"``;
default ``"bh2"``), ``corrector`` (default True: UniPC; False: UniP alone).
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import NamedTuple, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp

from diffjax.solvers._base import Solver, first_order, int_option, nfe, register

__all__ = ["UniPC", "UniPCState"]


def __dir__():
    return sorted(__all__)


_VARIANTS = ("bh1", "bh2")


def _variant(v):
    if not isinstance(v, str) or v not in _VARIANTS:
        raise ValueError(f"variant must be one of {list(_VARIANTS)}, got {v!r}")
    return v


def _flag(name):
    def convert(v):
        if not isinstance(v, bool):
            raise ValueError(f"{name} must be True or False (static), got {v!r}")
        return v
    return convert


def _order(v):
    v = int_option("order", 1)(v)
    if v > 3:
        raise ValueError(f"order must be 1, 2 or 3, got {v}")
    return v


class UniPCState(NamedTuple):
    """The carry of UniPC between grid steps."""

    x: jax.Array                                       # the predicted (not yet corrected) sample
    m_prev: Tuple[jax.Array, jax.Array, jax.Array]      # data estimates at the last three grid times
    lam_prev: Tuple[jax.Array, jax.Array, jax.Array]    # their half log-SNRs (the last one first)
    count: jax.Array                                    # steps taken (valid history entries)


def _b_vector(hh, variant, n):
    """b_1..b_n and B(h) for a step with hh = -h (finite, nonzero)."""
    big_b = hh if variant == "bh1" else jnp.expm1(hh)
    g = jnp.expm1(hh) / hh - 1.0
    out = []
    for k in range(1, n + 1):
        out.append(g * math.factorial(k) / big_b)
        g = g / hh - 1.0 / math.factorial(k + 1)
    return out, big_b


def _solve(rks, b):
    """rho solving sum_i R_ki rho_i = b_k, R_ki = rks_i^(k-1), for 1, 2 or 3 unknowns (Cramer)."""
    n = len(rks)
    if n == 1:
        return [b[0]]
    if n == 2:
        r1, r2 = rks
        det = r2 - r1
        return [(b[0] * r2 - b[1]) / det, (b[1] - b[0] * r1) / det]
    mat = jnp.stack([jnp.stack([r ** k for r in rks]) for k in range(n)])
    return list(jnp.linalg.solve(mat, jnp.stack(b)))


def _coefficients(r1, r2, hh, variant):
    """rho for the predictor of orders 2, 3 and the corrector of orders 1, 2, 3 (r1, r2 < 0)."""
    b, big_b = _b_vector(hh, variant, 3)
    pred = {2: [0.5], 3: _solve([r1, r2], b[:2])}
    corr = {1: [0.5], 2: _solve([r1, 1.0], b[:2]), 3: _solve([r1, r2, 1.0], b[:3])}
    return pred, corr, big_b


def _pick(order, table, valid):
    """The coefficient list of the traced ``order`` (padded to 3 entries with zeros); zeros where
    not ``valid``."""
    out = []
    for i in range(3):
        v = 0.0
        for p, rho in table.items():
            if i < len(rho):
                v = jnp.where(order == p, rho[i], v)
        out.append(jnp.where(valid, v, 0.0))
    return out


@register
class UniPC(Solver):
    """UniPC (see the module docstring): multistep predictor-corrector, one model call per step.

    Options (static): ``order`` 1, 2 or 3 (default 3); ``variant`` ``"bh1"`` or ``"bh2"``
    (default); ``corrector`` (bool, default True: UniC after every step but the last);
    ``lower_order_final`` (bool, default True).
    """

    name = "unipc"
    default_grid = "uniform_angle"
    default_grid_options = MappingProxyType({"sigma_data": 0.5})
    default_steps = 20
    uses_steps_left = True
    order: int = eqx.field(static=True, default=3, converter=_order)
    variant: str = eqx.field(static=True, default="bh2", converter=_variant)
    corrector: bool = eqx.field(static=True, default=True, converter=_flag("corrector"))
    lower_order_final: bool = eqx.field(static=True, default=True, converter=_flag("lower_order_final"))

    @property
    def deterministic(self) -> bool:
        return True

    def init(self, den, x):
        zeros, zl = jnp.zeros_like(x), jnp.zeros((), den.time_dtype(x))
        return UniPCState(x=x, m_prev=(zeros, zeros, zeros), lam_prev=(zl, zl, zl), count=jnp.zeros((), jnp.int32))

    def state(self, carry):
        return carry.x

    def with_state(self, carry, x):
        return carry._replace(x=x)

    def _terms(self, lam, lam_next, lams, count, max_order):
        """For a step from lam to lam_next with history half log-SNRs ``lams`` (the last first)
        and ``count`` valid entries: the predictor order, its rho, the corrector's rho, B(h),
        the finite stand-ins of r_1, r_2 and whether the step is regular (finite h)."""
        h = lam_next - lam
        regular = jnp.isfinite(h) & (h != 0)
        hs = jnp.where(regular, h, 1.0)
        l1, l2 = lams[0], lams[1]
        ok1 = regular & (count >= 1) & jnp.isfinite(l1)
        ok2 = ok1 & (count >= 2) & jnp.isfinite(l2)
        r1 = jnp.where(ok1, (l1 - lam) / hs, -1.0)
        r2 = jnp.where(ok2, (l2 - lam) / hs, -2.0)
        order = jnp.where(ok2, 3, jnp.where(ok1, 2, 1))
        order = jnp.minimum(order, max_order)
        pred, corr, big_b = _coefficients(r1, r2, -hs, self.variant)
        return order, pred, corr, big_b, (r1, r2), regular

    def step(self, den, carry, t, t_next, key, is_last, steps_left=None):
        x, count = carry.x, carry.count
        m1, m2, m3 = carry.m_prev
        l1, l2, l3 = carry.lam_prev
        m0, _ = den(x, t)
        a, s, lam = den.coeffs(t, x)
        lam = lam.astype(l1.dtype)

        # lower order final: order <= steps left + 1 (this step; the previous one had one more left)
        max_order, prev_order = self.order, self.order
        if self.lower_order_final and steps_left is None:
            max_order = jnp.where(is_last, 1, self.order)
        elif self.lower_order_final:
            max_order, prev_order = jnp.minimum(self.order, steps_left + 1), jnp.minimum(self.order, steps_left + 2)
        if self.corrector:
            # UniC for the step l1 -> lam that produced x, now that m0 = model(x, t) is known:
            # x^c - x = -a B (sum_i (rho^c_i - rho^p_i) D_i + rho^c_p (m0 - m1)), at that step's order
            order, pred, corr, big_b, (r1, r2), regular = self._terms(l1, lam, (l2, l3), count - 1, prev_order)
            valid = regular & (count >= 1)
            rp = _pick(order, pred, valid & (order >= 2))
            rc = _pick(order, corr, valid)
            last = jnp.where(order == 1, rc[0], jnp.where(order == 2, rc[1], rc[2]))
            c1 = jnp.where(order >= 2, rc[0], 0.0) - rp[0]
            c2 = jnp.where(order >= 3, rc[1], 0.0) - rp[1]
            delta = c1 * (m2 - m1) / r1 + c2 * (m3 - m1) / r2 + last * (m0 - m1)
            x = (x - a * jnp.where(valid, big_b, 0.0) * delta).astype(x.dtype)

        # UniP from (x, m0) at t to t_next; the DDIM part (s_next / s) x + a_next (1 - e^-h) m0
        # through the noise estimate of the (corrected) state
        eps = jnp.where(s > 0, (x - a * m0) / jnp.where(s > 0, s, 1.0), 0.0).astype(x.dtype)
        a_n, _, lam_n = den.coeffs(t_next, x)
        order, pred, _, big_b, (r1, r2), regular = self._terms(lam, lam_n, (l1, l2), count, max_order)
        rp = _pick(order, pred, regular & (order >= 2))
        res = rp[0] * (m1 - m0) / r1 + rp[1] * (m2 - m0) / r2
        x_next = first_order(den, m0, eps, t_next, x) - (a_n * jnp.where(regular, big_b, 0.0) * res).astype(x.dtype)
        carry = UniPCState(x=x_next.astype(x.dtype), m_prev=(m0, m1, m2), lam_prev=(lam, l1, l2), count=count + 1)
        return carry, nfe(1)
