"""UniPC against a direct transliteration of the paper's algorithm (Zhao et al. 2023, their
``multistep_uni_pc_bh_update`` with ``predict_x0=True``), against DPM-Solver++(2M), and its
orders of convergence on a single Gaussian with a closed-form ODE solution."""
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from core_oracle import gaussian, two_bumps

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "conformance"))


def reference_unipc(x0_fn, x, ts, sch, order, variant, corrector=True, lower_order_final=True):
    """numpy, float64, the paper's loop: predict with UniP, call the model at the new point,
    correct with UniC (the model value at the uncorrected point is kept); the final step is
    not corrected; the order warms up as min(order, step) and, with ``lower_order_final`` (the
    paper's default), is at most ``steps + 1 - step`` (1-based step), for predictor and corrector."""
    a = lambda t: float(sch.alpha(jnp.float64(t)))
    s = lambda t: float(sch.sigma(jnp.float64(t)))
    lam = lambda t: math.log(a(t) / s(t))
    n = len(ts) - 1
    ms, lams = [x0_fn(x, ts[0])], [lam(ts[0])]
    for k in range(n):
        t, t_next = ts[k], ts[k + 1]
        p = min(order, k + 1, n - k) if lower_order_final else min(order, k + 1)
        m0, l0 = ms[-1], lams[-1]
        h = lam(t_next) - l0
        hh = -h
        rks, d1s = [], []
        for i in range(1, p):
            rk = (lams[-(i + 1)] - l0) / h
            rks.append(rk)
            d1s.append((ms[-(i + 1)] - m0) / rk)
        rks.append(1.0)
        rks = np.asarray(rks)
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1.0
        fact = 1
        big_b = hh if variant == "bh1" else math.expm1(hh)
        rows, b = [], []
        for i in range(1, p + 1):
            rows.append(rks ** (i - 1))
            b.append(h_phi_k * fact / big_b)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / fact
        rows, b = np.stack(rows), np.asarray(b)
        x_ = s(t_next) / s(t) * x - a(t_next) * h_phi_1 * m0
        pred = 0.0
        if d1s:
            rhos_p = np.asarray([0.5]) if p == 2 else np.linalg.solve(rows[:-1, :-1], b[:-1])
            pred = sum(r * d for r, d in zip(rhos_p, d1s))
        x_new = x_ - a(t_next) * big_b * pred
        if k < n - 1:
            m_t = x0_fn(x_new, t_next)
            if corrector:
                rhos_c = np.asarray([0.5]) if p == 1 else np.linalg.solve(rows, b)
                corr = sum(r * d for r, d in zip(rhos_c[:-1], d1s)) if d1s else 0.0
                x_new = x_ - a(t_next) * big_b * (corr + rhos_c[-1] * (m_t - m0))
            ms.append(m_t)
            lams.append(lam(t_next))
        x = x_new
    return x


def model64(mix, sch):
    """The mixture's exact eps model, computed in float64 (``Mixture.model`` computes in float32)."""
    def fn(x, t):
        a, s, _, _ = sch.coefficients(t)
        return (x - a[:, None] * mix.x0_mean(x, a, s)) / s[:, None]
    return fn


@pytest.fixture(scope="module")
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("order,variant,corrector,lof", [(1, "bh2", True, True), (2, "bh2", True, True),
                                                         (3, "bh2", True, True), (3, "bh1", True, True),
                                                         (2, "bh1", True, True), (3, "bh2", False, True),
                                                         (3, "bh2", True, False)])
def test_unipc_equals_the_papers_algorithm(x64, order, variant, corrector, lof):
    gm = two_bumps()
    sch = dj.schedules.cosine()
    model = model64(gm, sch)

    def x0_fn(x, t):
        eps = np.asarray(model(jnp.asarray(x), jnp.full((x.shape[0],), t, jnp.float64)))
        return (x - float(sch.sigma(jnp.float64(t))) * eps) / float(sch.alpha(jnp.float64(t)))

    x_init = np.random.default_rng(0).standard_normal((16, 2))
    for steps in (1, 2, 3, 4, 7):
        ts = np.asarray(dj.grids.uniform_logsnr(sch, steps, 0.99, 1e-2, dtype=jnp.float64))
        ours, info = dj.sample(model, jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction="eps",
                               solver="unipc", ts=jnp.asarray(ts), x_init=jnp.asarray(x_init), denoise_final=False,
                               order=order, variant=variant, corrector=corrector, lower_order_final=lof)
        ref = reference_unipc(x0_fn, x_init, ts, sch, order, variant, corrector, lof)
        np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-9, atol=1e-9, err_msg=f"steps={steps}")
        assert int(info["nfe"]) == steps


def test_unip_2_with_bh2_is_dpm_solver_pp_2m(x64):
    gm = two_bumps()
    sch = dj.schedules.linear_vp()
    x_init = jnp.asarray(np.random.default_rng(2).standard_normal((32, 2)))
    kw = dict(schedule=sch, prediction="eps", steps=9, grid="uniform_angle", x_init=x_init, denoise_final=False)
    a, _ = dj.sample(model64(gm, sch), jax.random.PRNGKey(0), x_init.shape, solver="dpmpp_2m", **kw)
    b, _ = dj.sample(model64(gm, sch), jax.random.PRNGKey(0), x_init.shape, solver="unipc", order=2, corrector=False,
                     **kw)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order,corrector,expected", [(1, True, 2), (2, True, 3), (3, True, 3), (2, False, 2),
                                                      (3, False, 2)])
def test_unipc_order_of_convergence(x64, order, corrector, expected):
    """UniP-p has local error O(h^(p+1)) and UniC raises it by one (the paper's Theorem 3.3); the
    warm-up steps (orders 1, 2, ... from the first step) bound the global order: UniP-p converges
    at order min(p, 2), UniPC-p at min(p + 1, 3)."""
    g = gaussian()
    sch = dj.schedules.cosine(logsnr_min=-12.0, logsnr_max=12.0)
    mu, v = g.mu[0], g.var[0]
    x_init = jnp.asarray(np.random.default_rng(1).standard_normal((64, 2)))
    t_min, t_max = 0.05, 0.95
    a0, s0 = (float(c) for c in (sch.alpha(t_min), sch.sigma(t_min)))
    a1, s1 = (float(c) for c in (sch.alpha(t_max), sch.sigma(t_max)))
    exact = a0 * mu + (np.asarray(x_init) - a1 * mu) * np.sqrt((a0**2 * v + s0**2) / (a1**2 * v + s1**2))
    errs = []
    for steps in (40, 80):
        x, _ = dj.sample(model64(g, sch), jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction="eps",
                         solver="unipc", steps=steps, t_min=t_min, t_max=t_max, x_init=x_init, denoise_final=False,
                         order=order, corrector=corrector, lower_order_final=False)
        errs.append(np.abs(np.asarray(x) - exact).max())
    observed = np.log2(errs[0] / errs[1])
    assert observed > expected - 0.3, (errs, observed)


def test_unipc_options_are_checked():
    sch = dj.schedules.cosine()
    m = gaussian().model(sch)
    k = jax.random.PRNGKey(0)
    for opts, msg in ((dict(order=4), "order must be 1, 2 or 3"), (dict(order=0), "order must be an int >= 1"),
                      (dict(variant="bh3"), "variant must be one of"), (dict(corrector=1), "corrector must be True"),
                      (dict(lower_order_final="yes"), "lower_order_final must be True")):
        with pytest.raises(ValueError, match=msg):
            dj.sample(m, k, (2, 2), schedule=sch, prediction="eps", solver="unipc", steps=3, **opts)


def test_default_grid_meets_the_few_step_targets_on_the_ve_mixture(x64):
    """The protocol of ``bench/solvers.py`` (VE 0.002..80, the conformance oracle's standard 2-D
    mixture and its exact denoiser, starts at sigma = 80, RMS error against the exact ODE
    solution): unipc on its default grid (uniform_angle, sigma_data = 0.5) is within the targets
    of 6.5e-2 at 5 and 1e-2 at 10 model calls, and at least 1.5x better than on the plain angle
    grid (sigma_data = 1: 0.078 and 0.036)."""
    oracles = pytest.importorskip("oracles")
    gm = oracles.standard_mixture(dim=2, seed=0)
    ref = oracles.RefSchedule("ve", dict(sigma_min=0.002, sigma_max=80.0))
    sch = dj.schedules.ve(0.002, 80.0)
    x_init = 80.0 * np.random.default_rng(0).standard_normal((256, 2))
    exact = gm.reference_ode(x_init, 1.0, 0.0, ref)
    model = gm.model_fn(ref, "x0")

    def error(steps, grid=None):
        x, info = dj.sample(model, jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction="x0",
                            solver="unipc", steps=steps, grid=grid, t_min=0.0, x_init=jnp.asarray(x_init),
                            denoise_final=False)
        assert int(info["nfe"]) == steps
        return float(np.sqrt(np.mean((np.asarray(x) - exact) ** 2)))

    for steps, target in ((5, 6.5e-2), (10, 1e-2)):
        err, plain = error(steps), error(steps, "uniform_angle")
        assert err <= target, (steps, err)
        assert err * 1.5 <= plain, (steps, err, plain)
