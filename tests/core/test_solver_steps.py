"""Single solver steps against their published formulas, with an exact Gaussian denoiser.

For data x0 ~ N(mu, diag(v)) the denoiser is affine and known in closed form,
E[x0 | x_t] = mu + a v / (a^2 v + s^2) (x_t - a mu), so every step below is written out here in
numpy (float64) from the paper's own notation (alpha-bar for DDPM / DDIM, beta(t) for the VP SDE,
sigma~ = sigma / alpha for EDM, the exponential-integrator integral for DPM-Solver++) and
compared with what ``diffjax.sample`` / ``diffjax.encode`` return. Stochastic steps are checked by
their conditional mean and variance over many independent draws from one fixed x_t.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from core_oracle import gaussian

G = gaussian()
MU, VAR = G.mu[0], G.var[0]


def ab(sch, t):
    return float(sch.alpha(jnp.float32(t))), float(sch.sigma(jnp.float32(t)))


def x0_hat(x, a, s):
    """The exact posterior mean E[x0 | x_t = x] of the Gaussian data."""
    return MU + a * VAR / (a**2 * VAR + s**2) * (x - a * MU)


def eps_hat(x, a, s):
    return (x - a * x0_hat(x, a, s)) / s


def one_step(solver, sch, t, t_next, x, n=1, **opts):
    """n independent draws of one solver step from the fixed state x (float64 numpy)."""
    x_init = jnp.tile(jnp.asarray(x, jnp.float32)[None], (n, 1))
    out, info = dj.sample(G.model(sch), jax.random.PRNGKey(7), x_init.shape, schedule=sch, prediction="eps",
                          solver=solver, ts=jnp.asarray([t, t_next], jnp.float32), x_init=x_init,
                          denoise_final=False, **opts)
    return np.asarray(out, np.float64)


def check_moments(draws, mean, var):
    """Sample mean within 5 standard errors; sample variance within 5 of its standard errors."""
    n = draws.shape[0]
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 5 * np.sqrt(var / n) + 1e-6)
    np.testing.assert_array_less(np.abs(draws.var(0) - var), 5 * var * np.sqrt(2.0 / n) + 1e-9)


# ---------------------------------------------------------------------------------------------
# deterministic one-step updates
# ---------------------------------------------------------------------------------------------
X_T = np.asarray([1.3, -0.4])


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_deterministic_one_step_updates_match_the_published_formulas(solver):
    """EDM (Karras et al. 2022, Alg. 1) in y = x / alpha, sigma~ = sigma / alpha:
    Euler y' = y + (sigma~' - sigma~) eps(x); Heun averages eps at both ends."""
    sch = dj.schedules.cosine()
    t, tn = 0.8, 0.45
    (a, s), (an, sn) = ab(sch, t), ab(sch, tn)
    e = eps_hat(X_T, a, s)
    y_pred = X_T / a + (sn / an - s / a) * e
    want = an * y_pred
    if solver == "heun":
        e_next = eps_hat(an * y_pred, an, sn)
        want = an * (X_T / a + (sn / an - s / a) * 0.5 * (e + e_next))
    got = one_step(solver, sch, t, tn, X_T)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# stochastic steps: conditional mean and variance of x_s given a fixed x_t
# ---------------------------------------------------------------------------------------------
N_DRAWS = 20000


def ddim_moments(x, t, tn, sch, eta):
    """DDIM (Song, Meng & Ermon 2021, eq. 12 and 16) in alpha-bar notation, VP schedule:
    sigma_eta = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar'),
    x' = sqrt(abar') x0 + sqrt(1 - abar' - sigma_eta^2) eps + sigma_eta z."""
    (a, s), (an, _) = ab(sch, t), ab(sch, tn)
    abar, abar_n = a**2, an**2
    sig = eta * np.sqrt((1 - abar_n) / (1 - abar)) * np.sqrt(1 - abar / abar_n)
    mean = np.sqrt(abar_n) * x0_hat(x, a, s) + np.sqrt(1 - abar_n - sig**2) * eps_hat(x, a, s)
    return mean, np.full_like(mean, sig**2)


def ddpm_moments(x, t, tn, sch):
    """Ancestral step (Ho et al. 2020, eq. 6-7): the posterior q(x' | x_t, x0 = x0_hat) with
    beta = 1 - abar / abar',
    mean = sqrt(abar') beta / (1 - abar) x0 + sqrt(1 - beta) (1 - abar') / (1 - abar) x_t,
    var = (1 - abar') / (1 - abar) beta."""
    (a, s), (an, _) = ab(sch, t), ab(sch, tn)
    abar, abar_n = a**2, an**2
    beta = 1 - abar / abar_n
    mean = np.sqrt(abar_n) * beta / (1 - abar) * x0_hat(x, a, s) + np.sqrt(1 - beta) * (1 - abar_n) / (1 - abar) * x
    return mean, np.full_like(mean, (1 - abar_n) / (1 - abar) * beta)


@pytest.mark.parametrize("solver,eta", [("ddim", 0.4), ("ddim", 1.0), ("ddpm", None)])
def test_stochastic_step_has_the_published_mean_and_variance(solver, eta):
    sch = dj.schedules.cosine()
    t, tn = 0.7, 0.55
    opts = {} if eta is None else {"eta": eta}
    draws = one_step(solver, sch, t, tn, X_T, n=N_DRAWS, **opts)
    mean, var = ddpm_moments(X_T, t, tn, sch) if eta is None else ddim_moments(X_T, t, tn, sch, eta)
    check_moments(draws, mean, var)
    if eta == 1.0:  # eta = 1 is the DDPM posterior (Song et al. 2021, sec. 4.1)
        np.testing.assert_allclose(np.concatenate(ddim_moments(X_T, t, tn, sch, 1.0)),
                                   np.concatenate(ddpm_moments(X_T, t, tn, sch)), rtol=1e-6)


def test_euler_maruyama_step_is_the_reverse_vp_sde_step():
    """Song et al. (2021), VP SDE: beta(t) = b0 + t (b1 - b0), f = -beta / 2, g^2 = beta;
    reverse step x' = x + (f x - g^2 score) dt + g sqrt(|dt|) z with dt = t' - t < 0 and
    score = -eps / sigma."""
    b0, b1 = 0.1, 20.0
    sch = dj.schedules.linear_vp(b0, b1)
    t, tn = 0.5, 0.49
    a, s = ab(sch, t)
    beta, dt = b0 + t * (b1 - b0), tn - t
    score = -eps_hat(X_T, a, s) / s
    mean = X_T + (-0.5 * beta * X_T - beta * score) * dt
    draws = one_step("euler_maruyama", sch, t, tn, X_T, n=N_DRAWS)
    check_moments(draws, mean, np.full(2, beta * abs(dt)))


def test_predictor_corrector_step_is_langevin_then_ancestral():
    """Song et al. (2021), Alg. 5 with one corrector step: Langevin
    x~ = x + e score(x) + sqrt(2 e) z with e = 2 (snr ||z|| / ||score||)^2 (norms averaged over the
    batch; every row here is the same x, and E||z|| = sqrt(pi / 2) in 2-D), then the ancestral
    step from x~. The exact denoiser is affine, so the ancestral mean is an affine map A x~ + b:
    E[x'] = A (x + e score) + b, Var[x'] = A^2 2 e + the ancestral variance."""
    sch = dj.schedules.cosine()
    t, tn, snr = 0.7, 0.55, 0.3
    a, s = ab(sch, t)
    score = -eps_hat(X_T, a, s) / s
    e = 2.0 * (snr * np.sqrt(np.pi / 2) / np.linalg.norm(score)) ** 2
    m0, var_anc = ddpm_moments(np.zeros(2), t, tn, sch)
    slope = ddpm_moments(np.ones(2), t, tn, sch)[0] - m0
    mean = slope * (X_T + e * score) + m0
    draws = one_step("pc", sch, t, tn, X_T, n=N_DRAWS, snr=snr, corrector_steps=1)
    check_moments(draws, mean, slope**2 * 2 * e + var_anc)


# ---------------------------------------------------------------------------------------------
# DPM-Solver++ multistep, step by step
# ---------------------------------------------------------------------------------------------
def exp_integrator_step(x, lam, lam_n, an, s, sn, hist):
    """Lu et al. (2022), DPM-Solver++ in data prediction: the exact solution
    x' = (sigma' / sigma) x + alpha' int_0^h exp(u - h) x0(lam + u) du, h = lam' - lam,
    with x0(.) replaced by the Lagrange polynomial through the (lam_i, x0_i) in ``hist``;
    the integral by 32-point Gauss-Legendre quadrature."""
    h = lam_n - lam
    nodes, weights = np.polynomial.legendre.leggauss(32)
    u = 0.5 * h * (nodes + 1)
    poly = 0.0
    for i, (li, mi) in enumerate(hist):
        basis = np.ones_like(u)
        for j, (lj, _) in enumerate(hist):
            if j != i:
                basis = basis * (lam + u - lj) / (li - lj)
        poly = poly + basis[:, None] * mi[None]
    integral = 0.5 * h * np.sum((weights * np.exp(u - h))[:, None] * poly, 0)
    return sn / s * x + an * integral


def published_step(x, lam, lam_n, an, s, sn, hist, kind):
    """The published DPM-Solver++ updates, written as in k-diffusion / Lu et al.'s code (r = h_prev / h).
    2M (Alg. 2, ``sample_dpmpp_2m``): D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev, x' = (s'/s) x - a' expm1(-h) D.
    3M (``sample_dpmpp_3m_sde``, eta = 0): x' = (s'/s) x - a' expm1(-h) x0 + a' phi_2 D1 - a' phi_3 D2,
    and its order-2 steps x' += a' phi_2 (x0 - x0_1) / r."""
    h = lam_n - lam
    base = sn / s * x - an * np.expm1(-h) * hist[-1][1]
    if len(hist) == 1:
        return base
    (l1, m1), (l0, m0) = hist[-2], hist[-1]
    r0 = (l0 - l1) / h
    phi_2 = np.expm1(-h) / h + 1
    if kind == "2m":
        d = (1 + 1 / (2 * r0)) * m0 - 1 / (2 * r0) * m1
        return sn / s * x - an * np.expm1(-h) * d
    if len(hist) == 2:
        return base + an * phi_2 * (m0 - m1) / r0
    l2, m2 = hist[-3]
    r1 = (l1 - l2) / h
    d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_3 = phi_2 / h - 0.5
    return base + an * phi_2 * d1 - an * phi_3 * d2


def exp_2m_step(x, lam, lam_n, an, s, sn, hist):
    """dpmpp_2m_exp in closed form: x' = (s'/s) x - a' expm1(-h) x0 + a' (h + expm1(-h)) (x0 - x0_prev) / h_prev."""
    h = lam_n - lam
    out = sn / s * x - an * np.expm1(-h) * hist[-1][1]
    if len(hist) == 2:
        out = out + an * (h + np.expm1(-h)) * (hist[-1][1] - hist[-2][1]) / (hist[-1][0] - hist[-2][0])
    return out


def multistep_reference(x, ts, sch, solver):
    """States after every step: order min(k + 1, order) at step k (warm-up) and at most the
    number of steps left after it plus one (lower order final: order 1 on the final step, at
    most 2 on the one before it)."""
    order = 3 if solver.startswith("dpmpp_3m") else 2
    hist, states = [], []
    for k in range(len(ts) - 1):
        (a, s), (an, sn) = ab(sch, ts[k]), ab(sch, ts[k + 1])
        lam, lam_n = np.log(a / s), np.log(an / sn)
        hist.append((lam, x0_hat(x, a, s)))
        q = min(k + 1, order, len(ts) - 1 - k)
        args = (x, lam, lam_n, an, s, sn, hist[-q:])
        if solver == "dpmpp_2m":
            x = published_step(*args, "2m")
        elif solver == "dpmpp_3m":
            x = published_step(*args, "3m")
        elif solver == "dpmpp_2m_exp":
            x = exp_2m_step(*args)
            np.testing.assert_allclose(x, exp_integrator_step(*args), rtol=1e-9, atol=1e-12)
        else:
            x = exp_integrator_step(*args)
        states.append(x)
    return np.stack(states)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "dpmpp_2m_exp", "dpmpp_3m", "dpmpp_3m_exp"])
def test_multistep_states_match_their_published_updates_at_every_step(solver):
    """Every intermediate state (what the model sees at each grid time) and the final state of a
    6-step run on a non-uniform grid, against each variant's own update in float64 numpy: the
    published DPM-Solver++(2M) / (3M) (k-diffusion's formulas), and the ``_exp`` variants that
    integrate the linear / quadratic interpolant of the data estimates exactly (closed form for
    2M, Gauss-Legendre quadrature of the Lagrange polynomial for 3M). Checks the first-order first
    step, the second-order second step, the full-order steps and the lower-order final step."""
    sch = dj.schedules.cosine()
    ts = np.asarray([0.9, 0.75, 0.55, 0.4, 0.3, 0.22, 0.1], np.float32)
    x_init = np.asarray([[1.3, -0.4], [-0.6, 2.0]])
    seen = {}
    base = G.model(sch)

    def spy(x, t):
        jax.debug.callback(lambda tt, xx: seen.__setitem__(float(np.asarray(tt)[0]), np.asarray(xx)), t, x)
        return base(x, t)

    out, _ = dj.sample(spy, jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction="eps", solver=solver,
                       ts=jnp.asarray(ts), x_init=jnp.asarray(x_init, jnp.float32), denoise_final=False)
    jax.effects_barrier()
    got = np.stack([seen[float(t)] for t in ts[1:-1]] + [np.asarray(out)])
    want = np.stack([multistep_reference(xi, ts, sch, solver) for xi in x_init], 1)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_published_and_exp_multistep_variants_differ():
    """The two second-order (and third-order) updates are different methods: on the grid above
    they differ by 10x the tolerance of the step test or more."""
    sch = dj.schedules.cosine()
    ts = np.asarray([0.9, 0.75, 0.55, 0.4, 0.3, 0.22, 0.1])
    x = np.asarray([1.3, -0.4])
    for a, b in (("dpmpp_2m", "dpmpp_2m_exp"), ("dpmpp_3m", "dpmpp_3m_exp")):
        assert np.abs(multistep_reference(x, ts, sch, a) - multistep_reference(x, ts, sch, b)).max() > 2e-4, (a, b)


# ---------------------------------------------------------------------------------------------
# the ends of sampling: initial noise, and encoding in the reverse direction
# ---------------------------------------------------------------------------------------------
def flow_map(x, sch, t_from, t_to):
    """The probability-flow ODE solution for Gaussian data (core_oracle's closed form)."""
    (a0, s0), (a1, s1) = ab(sch, t_from), ab(sch, t_to)
    return a1 * MU + (x - a0 * MU) * np.sqrt((a1**2 * VAR + s1**2) / (a0**2 * VAR + s0**2))


def test_default_initial_noise_has_the_prior_scale():
    """Without x_init, x(t_max) ~ N(0, sigma(t_max)^2): with VE (sigma(1) = 20) the flow maps it
    to the Gaussian with mean flow_map(0) and std sigma(t_max) * the flow's slope."""
    sch = dj.schedules.ve(0.01, 20.0)
    n, t_min = 8000, 0.05
    x, _ = dj.sample(G.model(sch), jax.random.PRNGKey(3), (n, 2), schedule=sch, prediction="eps",
                     solver="dpmpp_2m", steps=30, t_min=t_min, denoise_final=False)
    x = np.asarray(x, np.float64)
    mean = flow_map(np.zeros(2), sch, 1.0, t_min)
    std = 20.0 * (flow_map(np.ones(2), sch, 1.0, t_min) - mean)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 5 * std / np.sqrt(n))
    np.testing.assert_allclose(x.std(0), std, rtol=0.05)


@pytest.mark.parametrize("increasing", [True, False])
def test_encode_integrates_the_flow_from_data_to_noise_in_either_grid_order(increasing):
    """encode maps data at t_min to the closed-form flow solution at t_max, whichever order the
    grid is given in."""
    sch = dj.schedules.cosine()
    t_min, t_max = 1e-2, 0.9
    x0 = np.asarray(G.sample(0, 16), np.float64)
    lam = np.linspace(float(sch.logsnr(t_max)), float(sch.logsnr(t_min)), 41)  # uniform in logsnr
    ts = np.asarray(sch.t_of_logsnr(jnp.asarray(lam)))
    ts = ts[::-1] if increasing else ts
    z, info = dj.encode(G.model(sch), jnp.asarray(x0, jnp.float32), schedule=sch, prediction="eps",
                        solver="dpmpp_2m", ts=jnp.asarray(ts, jnp.float32), t_min=t_min, t_max=t_max)
    np.testing.assert_allclose(np.asarray(z), flow_map(x0, sch, t_min, t_max), atol=5e-3)
    assert int(info["nfe"]) == 40


# ---------------------------------------------------------------------------------------------
# the Gaussian process object
# ---------------------------------------------------------------------------------------------
def test_gaussian_process_posterior_is_the_ddpm_posterior():
    """q(x_s | x_t, x0) of ``dj.gaussian`` against Ho et al. (2020) eq. 7 in alpha-bar notation
    (VP schedule; s < t)."""
    sch = dj.schedules.cosine()
    proc = dj.gaussian(sch)
    x_t, x0 = jnp.asarray([[0.3, -1.2], [2.0, 0.1]]), jnp.asarray([[1.0, 0.5], [-0.7, 0.2]])
    s, t = jnp.asarray([0.3, 0.5]), jnp.asarray([0.6, 0.55])
    mean, std = proc.posterior(x_t, x0, s, t)
    abar_s, abar_t = (np.asarray(sch.alpha(v), np.float64)[:, None] ** 2 for v in (s, t))
    beta = 1 - abar_t / abar_s
    want_mean = (np.sqrt(abar_s) * beta / (1 - abar_t) * np.asarray(x0)
                 + np.sqrt(1 - beta) * (1 - abar_s) / (1 - abar_t) * np.asarray(x_t))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.broadcast_to(std, mean.shape),
                               np.broadcast_to(np.sqrt((1 - abar_s) / (1 - abar_t) * beta), mean.shape), rtol=1e-5)
