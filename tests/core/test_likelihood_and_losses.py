import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from core_oracle import gaussian, two_bumps


def test_exact_divergence_likelihood_matches_the_closed_form_gaussian_density():
    g = gaussian()
    # logsnr_min = -20: alpha(1) ~ 5e-5, so the N(0, sigma(1)^2) prior is exact to ~1e-4 nats
    sch = dj.schedules.cosine(logsnr_min=-20.0, logsnr_max=10.0)
    x = jnp.asarray(g.sample(0, 8))
    t_min = 1e-2
    nll, info = dj.likelihood.ode_nll(g.model(sch), x, jax.random.PRNGKey(0), schedule=sch, prediction="eps",
                                      divergence="exact", rtol=1e-6, atol=1e-6, t_min=t_min)
    a, s = sch.alpha(t_min), sch.sigma(t_min)
    var = a**2 * g.var[0] + s**2
    exact = 0.5 * np.sum((np.asarray(x) - a * g.mu[0]) ** 2 / var + np.log(2 * np.pi * var), -1)
    np.testing.assert_allclose(nll, exact, atol=1e-3)
    np.testing.assert_allclose(nll, info["prior"] - info["divergence"], rtol=1e-6)


def test_hutchinson_variance_falls_as_one_over_probes():
    gm = two_bumps()
    sch = dj.schedules.cosine(logsnr_min=-10.0, logsnr_max=10.0)
    x = jnp.asarray(gm.sample(1, 16))
    model = gm.model(sch)

    @functools.partial(jax.jit, static_argnums=1)
    def est(key, probes):
        return dj.likelihood.ode_nll(model, x, key, schedule=sch, prediction="eps", probes=probes,
                                     rtol=1e-4, atol=1e-4, t_min=1e-2)[0]

    exact = dj.likelihood.ode_nll(model, x, jax.random.PRNGKey(0), schedule=sch, prediction="eps",
                                  divergence="exact", rtol=1e-4, atol=1e-4, t_min=1e-2)[0]
    var = {}
    for probes in (1, 4, 16):
        draws = np.stack([np.asarray(est(jax.random.PRNGKey(1000 * probes + i), probes)) for i in range(12)])
        var[probes] = draws.var(axis=0, ddof=1).mean()
        # unbiased: the average over draws and examples sits on the exact value
        assert abs(draws.mean() - float(jnp.mean(exact))) < 4 * math.sqrt(var[probes] / draws.size) + 1e-3
    assert 2.0 < var[1] / var[4] < 8.0, var
    assert 2.0 < var[4] / var[16] < 8.0, var


def test_bits_per_dim_of_the_uniform_density_is_eight_bits():
    d = 3 * 8 * 8
    nll_uniform = d * math.log(2.0)  # density 2^-D on [-1, 1]^D
    assert abs(dj.likelihood.bits_per_dim(nll_uniform, d) - 8.0) < 1e-12
    z = dj.likelihood.dequantize(jax.random.PRNGKey(0), jnp.asarray([0, 255, 128]))
    assert float(z.min()) >= -1.0 and float(z.max()) <= 1.0
    assert -1.0 <= float(z[0]) < -1.0 + 2 / 256 and 1.0 - 2 / 256 <= float(z[1]) < 1.0


def test_vdm_elbo_bounds_the_exact_nll_of_a_mixture_and_is_nearly_tight():
    gm = two_bumps()
    sch = dj.schedules.cosine(logsnr_min=-12.0, logsnr_max=12.0)
    x = jnp.asarray(gm.sample(2, 8192))
    exact = -np.asarray(gm.log_prob(x, 1.0, 0.0))  # -log p_0(x), the data density
    elbo, terms = jax.jit(lambda k: dj.losses.vdm_elbo(gm.model(sch), x, k, schedule=sch, prediction="eps",
                                                       t_min=0.0))(jax.random.PRNGKey(3))
    elbo = np.asarray(elbo)
    se = elbo.std() / math.sqrt(len(elbo))
    gap = elbo.mean() - exact.mean()
    assert gap > -3 * se, (elbo.mean(), exact.mean(), se)
    assert gap < 0.05 + 3 * se, (elbo.mean(), exact.mean(), se)
    np.testing.assert_allclose(terms["bits_per_dim"], elbo / (2 * math.log(2)), rtol=1e-6)
    # the T-step bound is looser than the continuous-time one (Kingma et al. 2021)
    disc, _ = dj.losses.vdm_elbo_discrete(gm.model(sch), x, jax.random.PRNGKey(4), schedule=sch, prediction="eps",
                                          num_steps=8, t_min=0.0)
    assert float(jnp.mean(disc)) > elbo.mean() + 3 * se


def _linear_model(kind, sch, w):
    """A fixed (wrong) eps-model x -> x @ w, expressed in the prediction kind ``kind``."""
    def fn(x, t):
        return dj.convert(x @ w, x, t, sch, source="eps", target=kind)
    return fn


@pytest.mark.parametrize("weighting,direct", [
    ("simple", lambda p, x0, eps, a, s: np.mean((p["eps"] - eps) ** 2, -1)),
    ("x0", lambda p, x0, eps, a, s: np.mean((p["x0"] - x0) ** 2, -1)),
    ("v", lambda p, x0, eps, a, s: np.mean((p["v"] - (a * eps - s * x0)) ** 2, -1)),
])
@pytest.mark.parametrize("kind", ["eps", "x0", "v", "flow"])
def test_named_weightings_equal_the_direct_mse_in_any_prediction_kind(weighting, direct, kind):
    sch = dj.schedules.linear_vp()
    w = jnp.asarray([[0.9, 0.2, 0.0], [0.1, 1.1, 0.3], [0.0, -0.2, 0.8]])
    x0 = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    t = jnp.linspace(0.05, 0.95, 64)
    key = jax.random.PRNGKey(1)
    loss, aux = dj.losses.denoising_loss(_linear_model(kind, sch, w), x0, key, schedule=sch, prediction=kind,
                                         weighting=weighting, t=t)
    eps = (aux["x_t"] - sch.alpha(t)[:, None] * x0) / sch.sigma(t)[:, None]
    e_hat = aux["x_t"] @ w
    a, s = np.asarray(sch.alpha(t))[:, None], np.asarray(sch.sigma(t))[:, None]
    preds = {"eps": np.asarray(e_hat), "x0": np.asarray((aux["x_t"] - s * e_hat) / a)}
    preds["v"] = a * preds["eps"] - s * preds["x0"]
    np.testing.assert_allclose(loss, direct(preds, np.asarray(x0), np.asarray(eps), a, s), rtol=2e-4, atol=1e-6)


def test_flow_matching_loss_is_the_rectified_flow_regression():
    x0 = jax.random.normal(jax.random.PRNGKey(0), (32, 2))
    model = lambda x, t: 2.0 * x - t[:, None]  # noqa: E731
    t = jnp.linspace(0.0, 1.0, 32)
    loss, aux = dj.losses.flow_matching_loss(model, x0, jax.random.PRNGKey(1), t=t)
    eps = (aux["x_t"] - (1 - t)[:, None] * x0) / jnp.where(t > 0, t, 1.0)[:, None]
    direct = jnp.mean((model(aux["x_t"], t) - (eps - x0)) ** 2, -1)
    np.testing.assert_allclose(loss[1:], direct[1:], rtol=1e-4, atol=1e-5)


def test_importance_sampling_in_logsnr_keeps_the_expectation():
    sch = dj.schedules.cosine()
    w = jnp.asarray([[0.7, 0.1], [0.2, 0.9]])
    model = _linear_model("eps", sch, w)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (16384, 2))
    base = dj.losses.denoising_loss(model, x0, jax.random.PRNGKey(1), schedule=sch, prediction="eps",
                                    weighting="sigmoid", t_min=1e-3)[0]
    imp = dj.losses.denoising_loss(model, x0, jax.random.PRNGKey(2), schedule=sch, prediction="eps",
                                   weighting="sigmoid", t_min=1e-3, importance="logsnr")[0]
    se = math.sqrt(float(jnp.var(base)) / base.size + float(jnp.var(imp)) / imp.size)
    assert abs(float(jnp.mean(base)) - float(jnp.mean(imp))) < 4 * se


def test_antithetic_times_are_stratified_and_reduce_variance():
    t = np.sort(np.asarray(dj.losses.sample_time(jax.random.PRNGKey(0), 8)))
    assert np.all((t >= np.arange(8) / 8) & (t < np.arange(1, 9) / 8))
    sch = dj.schedules.cosine()
    gm = two_bumps()
    x = jnp.asarray(gm.sample(0, 256))
    f = jax.jit(lambda k, anti: jnp.mean(dj.losses.vdm_elbo(gm.model(sch), x, k, schedule=sch, prediction="eps",
                                                             antithetic=anti, t_min=1e-3)[0]), static_argnums=1)
    v_iid = np.var([float(f(jax.random.PRNGKey(i), False)) for i in range(16)])
    v_anti = np.var([float(f(jax.random.PRNGKey(i), True)) for i in range(16)])
    assert v_anti < v_iid, (v_anti, v_iid)


def test_loss_errors_name_the_argument():
    sch = dj.schedules.cosine()
    x0 = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="weighting must be one of"):
        dj.losses.denoising_loss(lambda x, t: x, x0, jax.random.PRNGKey(0), schedule=sch, prediction="eps",
                                 weighting="snr")
    with pytest.raises(ValueError, match="model_fn must return"):
        dj.losses.denoising_loss(lambda x, t: x[:, :1], x0, jax.random.PRNGKey(0), schedule=sch, prediction="eps")


def test_gaussian_process_posterior_marginalises_to_the_forward_marginal():
    # int q(x_s | x_t, x0) q(x_t | x0) dx_t = q(x_s | x0) = N(alpha_s x0, sigma_s^2), in closed form:
    # E[mean] = alpha_s x0 and Var(mean over x_t) + posterior var = sigma_s^2.
    proc = dj.gaussian(dj.schedules.linear_vp())
    x0 = jnp.asarray([[0.7, -1.3]])
    s, t = jnp.asarray([0.3]), jnp.asarray([0.6])
    a_t, s_t = proc.alpha(t)[0], proc.sigma(t)[0]
    m_xt = proc.posterior(jnp.ones((1, 2)), x0, s, t)[0] - proc.posterior(jnp.zeros((1, 2)), x0, s, t)[0]  # d mean/d x_t
    mean_at_mean, std = proc.posterior(a_t * x0, x0, s, t)
    np.testing.assert_allclose(mean_at_mean, proc.alpha(s)[0] * x0, rtol=1e-5)
    np.testing.assert_allclose(m_xt**2 * s_t**2 + std**2, proc.sigma(s)[0] ** 2, rtol=1e-5)
    # and the ELBO through the process interface is the VDM bound
    gm = two_bumps()
    x = jnp.asarray(gm.sample(0, 64))
    a = proc.nelbo(gm.model(proc.schedule), x, jax.random.PRNGKey(0))
    b, _ = dj.losses.vdm_elbo(gm.model(proc.schedule), x, jax.random.PRNGKey(0), schedule=proc.schedule,
                              prediction="eps")
    np.testing.assert_allclose(a, b, rtol=1e-6)
