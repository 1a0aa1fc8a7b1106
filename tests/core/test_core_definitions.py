"""The core Gaussian-process math against its published definitions, written out here in float64
numpy (independently of diffjax), at interior times and on schedules where alpha^2 + sigma^2 != 1.

Closed forms (t = 0 data, t = 1 noise):

* linear VP (Song et al. 2021): log alpha = -t^2 (b1 - b0)/4 - t b0/2, sigma = sqrt(1 - alpha^2)
* cosine: alpha = cos(theta), sigma = sin(theta), theta = th0 + t (th1 - th0),
  th0 = atan(exp(-logsnr_max/2)), th1 = atan(exp(-logsnr_min/2))
* VE: alpha = 1, sigma = s_min (s_max/s_min)^t
* rectified flow: alpha = 1 - t, sigma = t
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from core_oracle import gaussian


def _vp(b0=0.1, b1=20.0):
    def a(t):
        return np.exp(-0.25 * t**2 * (b1 - b0) - 0.5 * t * b0)
    return a, lambda t: np.sqrt(1.0 - a(t) ** 2)


def _cosine(lmin=-20.0, lmax=20.0):
    th0, th1 = np.arctan(np.exp(-lmax / 2)), np.arctan(np.exp(-lmin / 2))
    return (lambda t: np.cos(th0 + t * (th1 - th0))), (lambda t: np.sin(th0 + t * (th1 - th0)))


def _ve(smin=0.01, smax=50.0):
    return (lambda t: np.ones_like(t)), (lambda t: smin * (smax / smin) ** t)


def _rf():
    return (lambda t: 1.0 - t), (lambda t: t)


# name -> (library schedule, numpy alpha(t), numpy sigma(t))
CLOSED = {
    "linear_vp": (dj.schedules.linear_vp(), *_vp()),
    "linear_vp_custom": (dj.schedules.linear_vp(0.5, 8.0), *_vp(0.5, 8.0)),
    "cosine": (dj.schedules.cosine(), *_cosine()),
    "cosine_narrow": (dj.schedules.cosine(-8.0, 6.0), *_cosine(-8.0, 6.0)),
    "ve": (dj.schedules.ve(), *_ve()),
    "rectified_flow": (dj.schedules.rectified_flow(), *_rf()),
}
T = np.linspace(0.07, 0.93, 9)
H = 1e-6  # central differences of the float64 closed forms: error ~ 1e-10


def _d(f, t):
    return (f(t + H) - f(t - H)) / (2 * H)


def _logsnr(a, s, t):
    return np.log(a(t) ** 2 / s(t) ** 2)


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_schedule_values_match_their_closed_forms(name):
    sch, a, s = CLOSED[name]
    t = jnp.asarray(T, jnp.float32)
    np.testing.assert_allclose(sch.alpha(t), a(T), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sch.sigma(t), s(T), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sch.logsnr(t), _logsnr(a, s, T), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_t_of_logsnr_inverts_the_closed_form_logsnr(name):
    sch, a, s = CLOSED[name]
    lam = jnp.asarray(_logsnr(a, s, T), jnp.float32)
    np.testing.assert_allclose(sch.t_of_logsnr(lam), T, atol=2e-5)


LEARNED = dj.schedules.learned_logsnr(-9.0, 7.0, hidden=16, key=jax.random.PRNGKey(3))


def test_learned_schedule_t_of_logsnr_inverts_its_logsnr():
    # no closed form: the bisection inverse must map logsnr(t) back to t
    t = jnp.asarray(T, jnp.float32)
    np.testing.assert_allclose(jax.jit(lambda u: LEARNED.t_of_logsnr(LEARNED.logsnr(u)))(t), T, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_time_derivatives_match_finite_differences_of_the_closed_forms(name):
    # dalpha/dsigma (and coefficients) against float64 central differences of the definitions;
    # for linear_vp this checks the hand-written custom JVP of sigma
    sch, a, s = CLOSED[name]
    da, ds = _d(a, T), _d(s, T)

    @jax.jit
    def derivatives(t):  # jax.grad of sigma: reverse mode through the custom JVP
        return sch.dalpha(t), sch.dsigma(t), sch.coefficients(t), jax.vmap(jax.grad(sch.sigma))(t)

    got_da, got_ds, coeffs, grad_s = derivatives(jnp.asarray(T, jnp.float32))
    np.testing.assert_allclose(got_da, da, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_ds, ds, rtol=1e-4, atol=1e-6)
    for g, want in zip(coeffs, (a(T), s(T), da, ds)):
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_s, ds, rtol=1e-4, atol=1e-6)


def test_learned_schedule_derivatives_match_float64_finite_differences():
    # no closed form: forward-mode dalpha/dsigma against float64 central differences of alpha/sigma
    with jax.enable_x64(True):
        sch = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), LEARNED)

        @jax.jit
        def check(t):
            fd = lambda f: (f(t + 1e-6) - f(t - 1e-6)) / 2e-6  # noqa: E731
            return sch.dalpha(t), fd(sch.alpha), sch.dsigma(t), fd(sch.sigma)

        da, fd_a, ds, fd_s = check(jnp.asarray(T, jnp.float64))
        np.testing.assert_allclose(da, fd_a, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ds, fd_s, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------
# Conversions between prediction kinds
# ------------------------------------------------------------------------------------------
def _all_kinds(name, t):
    """x_t and every prediction kind from its definition, in float64 numpy."""
    _, a, s = CLOSED[name]
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((len(t), 3))
    eps = rng.standard_normal((len(t), 3))
    A, S, dA, dS = (f[:, None] for f in (a(t), s(t), _d(a, t), _d(s, t)))
    xt = A * x0 + S * eps
    return xt, {"x0": x0, "eps": eps, "v": A * eps - S * x0, "score": -eps / S, "flow": dA * x0 + dS * eps}


@pytest.mark.parametrize("name", ["linear_vp", "cosine_narrow", "ve", "rectified_flow"])
@pytest.mark.parametrize("source", dj.KINDS)
def test_conversions_match_the_definitions_at_interior_times(name, source):
    # at interior t every kind determines (x0, eps): each conversion must give the target's definition
    sch = CLOSED[name][0]
    t = np.linspace(0.1, 0.9, 9)
    xt, truth = _all_kinds(name, t)
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    for target in dj.KINDS:
        got = dj.convert(f32(truth[source]), f32(xt), f32(t), sch, source=source, target=target)
        scale = np.abs(truth[target]).max() + np.abs(truth[source]).max()
        np.testing.assert_allclose(got, truth[target], rtol=1e-4, atol=1e-5 * scale, err_msg=f"{source}->{target}")


# ------------------------------------------------------------------------------------------
# Grids
# ------------------------------------------------------------------------------------------
def test_uniform_t_grid_has_equal_steps_between_its_ends():
    ts = np.asarray(dj.grids.uniform_t(7, 0.9, 0.2))
    np.testing.assert_allclose(ts, 0.9 + (0.2 - 0.9) * np.arange(8) / 7, rtol=1e-6)


def test_karras_grid_matches_the_published_formula_in_sigma_over_alpha():
    # sigma/alpha = exp(-logsnr/2) follows (r_max^(1/rho) + i/N (r_min^(1/rho) - r_max^(1/rho)))^rho
    sch, a, s = CLOSED["cosine_narrow"]
    rho, n, t_max, t_min = 3.0, 6, 0.9, 0.1
    ts = np.asarray(dj.grids.karras(sch, n, t_max, t_min, rho=rho), np.float64)
    r = lambda u: s(u) / a(u)  # noqa: E731
    i = np.arange(n + 1) / n
    want = (r(t_max) ** (1 / rho) + i * (r(t_min) ** (1 / rho) - r(t_max) ** (1 / rho))) ** rho
    np.testing.assert_allclose(r(ts), want, rtol=2e-4)


def test_logsnr_grids_mirror_an_infinite_end():
    # VP at t_min = 0 (logsnr = +inf): interior points as if the end sat at -logsnr(t_max)
    sch, a, s = CLOSED["linear_vp"]
    ts = np.asarray(dj.grids.uniform_logsnr(sch, 8, 1.0, 0.0), np.float64)
    assert ts[0] == 1.0 and ts[-1] == 0.0
    lam1 = _logsnr(a, s, 1.0)
    np.testing.assert_allclose(_logsnr(a, s, ts[1:-1]), np.linspace(lam1, -lam1, 9)[1:-1], rtol=1e-3, atol=1e-3)
    # rectified flow at t_max = 1 (logsnr = -inf): mirrored from logsnr(t_min)
    sch, a, s = CLOSED["rectified_flow"]
    ts = np.asarray(dj.grids.uniform_logsnr(sch, 8, 1.0, 0.01), np.float64)
    assert ts[0] == 1.0 and ts[-1] == np.float32(0.01)
    lam0 = _logsnr(a, s, 0.01)
    np.testing.assert_allclose(_logsnr(a, s, ts[1:-1]), np.linspace(-lam0, lam0, 9)[1:-1], rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------------
# Loss weightings, written out from their published formulas, where alpha^2 + sigma^2 != 1
# ------------------------------------------------------------------------------------------
def _dlogsnr(name, t):
    if name == "ve":  # logsnr = -2 log sigma
        return -2.0 * math.log(50.0 / 0.01) * np.ones_like(t)
    return -2.0 / (t * (1.0 - t))  # rectified flow: logsnr = 2 log((1 - t)/t)


PUBLISHED = {
    "simple": lambda a, s, dlam: np.ones_like(a),
    "x0": lambda a, s, dlam: s**2 / a**2,  # ||x0_hat - x0||^2 = (s/a)^2 ||eps_hat - eps||^2
    "v": lambda a, s, dlam: (a**2 + s**2) ** 2 / a**2,  # Salimans & Ho: v error = (a^2+s^2)/a eps error
    "elbo": lambda a, s, dlam: -0.5 * dlam,  # VDM
    "min_snr": lambda a, s, dlam: np.minimum(a**2 / s**2, 5.0) / (a**2 / s**2),  # gamma = 5
    "sigmoid": lambda a, s, dlam: 1.0 / (1.0 + np.exp(-(2.0 - np.log(a**2 / s**2)))),  # bias = 2
    "edm": lambda a, s, dlam: 1.0 + (s / a) ** 2 / 0.5**2,  # (sigma^2 + sd^2)/(sigma sd)^2 on x0-MSE, sd = 0.5
}


@pytest.mark.parametrize("name", ["ve", "rectified_flow"])
@pytest.mark.parametrize("weighting", sorted(PUBLISHED))
def test_weightings_follow_their_published_formulas_in_every_prediction_kind(name, weighting):
    sch, a, s = CLOSED[name]
    t = np.linspace(0.1, 0.9, 16)
    A, S = a(t), s(t)
    want_w = PUBLISHED[weighting](A, S, _dlogsnr(name, t))
    rng = np.random.default_rng(1)
    x0 = jnp.asarray(rng.standard_normal((16, 3)), jnp.float32)
    bias = jnp.asarray(0.1 * rng.standard_normal((16, 3)), jnp.float32)
    for kind in ("eps", "x0", "v", "flow"):
        # a model whose eps-estimate is off by a known bias; expressed in the kind it predicts
        def model(x, tt):
            eps_hat = (x - sch.alpha(tt)[:, None] * x0) / sch.sigma(tt)[:, None] + bias
            return dj.convert(eps_hat, x, tt, sch, source="eps", target=kind)
        loss, _ = dj.losses.denoising_loss(model, x0, jax.random.PRNGKey(0), schedule=sch, prediction=kind,
                                           weighting=weighting, t=jnp.asarray(t, jnp.float32))
        want = want_w * np.mean(np.asarray(bias, np.float64) ** 2, -1)
        np.testing.assert_allclose(loss, want, rtol=2e-3, err_msg=kind)


def test_sample_time_covers_the_requested_interval():
    b, t_min, t_max = 64, 0.2, 0.6
    t = np.sort(np.asarray(dj.losses.sample_time(jax.random.PRNGKey(0), b, t_min=t_min, t_max=t_max)))
    lo = t_min + (t_max - t_min) * np.arange(b) / b
    assert np.all((t >= lo - 1e-6) & (t < lo + (t_max - t_min) / b + 1e-6)), t  # one draw in each stratum
    t = np.asarray(dj.losses.sample_time(jax.random.PRNGKey(1), 4096, antithetic=False, t_min=t_min, t_max=t_max))
    assert t.min() >= t_min and t.max() <= t_max
    assert abs(t.mean() - 0.4) < 4 * 0.4 / math.sqrt(12 * 4096)


# ------------------------------------------------------------------------------------------
# VDM bounds with a model whose eps error is known exactly: ||eps_hat - eps||^2 = D c^2
# ------------------------------------------------------------------------------------------
def _offset_eps_model(x0, c):
    th0, th1 = np.arctan(np.exp(-10.0)), np.arctan(np.exp(10.0))  # the default cosine schedule

    def fn(x, t):
        th = th0 + t[:, None] * (th1 - th0)
        return (x - jnp.cos(th) * x0) / jnp.sin(th) + c
    return (fn, *_cosine())


def test_continuous_vdm_diffusion_term_is_the_integral_of_minus_half_dlogsnr():
    # E_t[(t_max - t_min) (-lam'/2) D c^2] = D c^2 (lam(t_min) - lam(t_max)) / 2; with importance
    # sampling in logsnr every example carries exactly that value
    sch = dj.schedules.cosine()
    x0 = jax.random.normal(jax.random.PRNGKey(0), (512, 3))
    c, t_min, t_max = 0.3, 0.2, 0.7
    model, a, s = _offset_eps_model(x0, c)
    want = 3 * c**2 * (_logsnr(a, s, t_min) - _logsnr(a, s, t_max)) / 2

    @jax.jit
    def diffusion(key):
        plain = dj.losses.vdm_elbo(model, x0, key, schedule=sch, prediction="eps", t_min=t_min, t_max=t_max)
        imp = dj.losses.vdm_elbo(model, x0, key, schedule=sch, prediction="eps", t_min=t_min, t_max=t_max,
                                 importance="logsnr")
        return plain[1]["diffusion"], imp[1]["diffusion"]

    plain, imp = diffusion(jax.random.PRNGKey(1))
    np.testing.assert_allclose(float(jnp.mean(plain)), want, rtol=1e-3)
    np.testing.assert_allclose(imp, want, rtol=1e-3)


def test_vdm_prior_and_reconstruction_terms_match_their_gaussian_formulas():
    sch, a, s = CLOSED["cosine"]
    x0 = jax.random.normal(jax.random.PRNGKey(0), (4, 5))
    t_min, t_max = 0.1, 0.5
    model, _, _ = _offset_eps_model(x0, 0.0)
    _, terms = jax.jit(lambda k: dj.losses.vdm_elbo(model, x0, k, schedule=sch, prediction="eps",
                                                    t_min=t_min, t_max=t_max))(jax.random.PRNGKey(1))
    # KL(N(a1 x, s1^2 I) || N(0, s1^2 I)) and -E log N(x; z/a0, (s0/a0)^2 I)
    xf = np.asarray(x0, np.float64)
    np.testing.assert_allclose(terms["prior"], 0.5 * a(t_max) ** 2 * np.sum(xf**2, -1) / s(t_max) ** 2, rtol=1e-5)
    d, r = 5, s(t_min) / a(t_min)
    np.testing.assert_allclose(terms["reconstruction"], 0.5 * d * np.log(2 * np.pi * r**2) + 0.5 * d, rtol=1e-5)


def test_discrete_vdm_terms_are_the_t_step_formula():
    # T/2 expm1(lam(s_i) - lam(t_i)) D c^2 for one i in 1..T per example, s_i = t_min + (i-1)/T (t_max - t_min)
    sch = dj.schedules.cosine()
    x0 = jax.random.normal(jax.random.PRNGKey(0), (256, 3))
    c, n, t_min, t_max = 0.3, 4, 0.1, 0.9
    model, a, s = _offset_eps_model(x0, c)
    _, terms = jax.jit(lambda k: dj.losses.vdm_elbo_discrete(model, x0, k, schedule=sch, prediction="eps",
                                                             num_steps=n, t_min=t_min, t_max=t_max))(jax.random.PRNGKey(1))
    i = np.arange(1, n + 1)
    si = t_min + (i - 1) / n * (t_max - t_min)
    ti = si + (t_max - t_min) / n
    allowed = n / 2 * np.expm1(_logsnr(a, s, si) - _logsnr(a, s, ti)) * 3 * c**2
    got = np.asarray(terms["diffusion"], np.float64)
    rel = np.abs(got[:, None] / allowed[None] - 1.0)
    nearest = rel.argmin(1)
    assert rel.min(1).max() < 1e-3, (got[:8], allowed)
    assert sorted(set(nearest)) == list(range(n)), "every step i = 1..T must be drawn"


# ------------------------------------------------------------------------------------------
# Likelihood
# ------------------------------------------------------------------------------------------
def test_ode_nll_terms_at_t_max_below_one_follow_the_change_of_variables():
    # nll = -log N(z; 0, sigma(t_max)^2) - int div; the exact identity is
    # -log p_tmin(x) = -log p_tmax(z) - int div, with p_t = N(a mu, a^2 var + s^2) for one Gaussian.
    g = gaussian()
    sch, a, s = dj.schedules.ve(0.1, 5.0), *_ve(0.1, 5.0)
    t_min, t_max = 0.05, 0.8
    x = jnp.asarray(g.sample(0, 4))
    nll, info = dj.likelihood.ode_nll(g.model(sch), x, jax.random.PRNGKey(0), schedule=sch, prediction="eps",
                                      divergence="exact", rtol=1e-6, atol=1e-6, t_min=t_min, t_max=t_max)

    def neg_log_gauss(y, mean, var):
        return 0.5 * np.sum((y - mean) ** 2 / var + np.log(2 * np.pi * var), -1)

    z = np.asarray(info["z"], np.float64)
    xs = np.asarray(x, np.float64)
    prior = neg_log_gauss(z, 0.0, s(t_max) ** 2)
    np.testing.assert_allclose(info["prior"], prior, rtol=1e-5)
    exact_tmin = neg_log_gauss(xs, a(t_min) * g.mu[0], a(t_min) ** 2 * g.var[0] + s(t_min) ** 2)
    exact_tmax = neg_log_gauss(z, a(t_max) * g.mu[0], a(t_max) ** 2 * g.var[0] + s(t_max) ** 2)
    np.testing.assert_allclose(np.asarray(nll) - exact_tmin, prior - exact_tmax, atol=2e-3)


def test_hutchinson_divergence_is_exact_for_a_diagonal_linear_field():
    # Rademacher probes: e^T D e = trace(D) for every probe, so the estimate (a mean over probes)
    # is exactly the trace whatever the probe count
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3))
    diag = lambda y, t: y * jnp.asarray([0.5, 1.5, -0.7])  # noqa: E731
    div = dj.likelihood.divergence_fn("hutchinson", x.shape, jax.random.PRNGKey(1), probes=5)
    _, d = jax.jit(div, static_argnums=0)(diag, x, 0.5)
    np.testing.assert_allclose(d, 0.5 + 1.5 - 0.7, rtol=1e-6)


def test_dequantisation_is_uniform_within_each_bin():
    # z = 2 (x + u) / num_bins - 1 with u ~ U[0, 1): recover u and check its first two moments
    x = jnp.asarray(np.arange(4096) % 4)
    z = np.asarray(dj.likelihood.dequantize(jax.random.PRNGKey(0), x, num_bins=4), np.float64)
    u = (z + 1.0) * 4 / 2 - np.asarray(x)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / u.size)
    assert abs(u.var() - 1 / 12) < 0.01
