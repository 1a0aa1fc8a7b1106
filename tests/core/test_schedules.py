import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diffjax as dj

ENDS = jnp.asarray([0.0, 1e-7, 1 - 1e-7, 1.0], jnp.float32)
SCHEDULES = {
    "linear_vp": dj.schedules.linear_vp(),
    "cosine": dj.schedules.cosine(),
    "ve": dj.schedules.ve(),
    "rectified_flow": dj.schedules.rectified_flow(),
    "learned": dj.schedules.learned_logsnr(),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_endpoint_values_and_gradients_are_finite(name):
    sch = SCHEDULES[name]
    for fn in ("alpha", "sigma"):
        v = getattr(sch, fn)(ENDS)
        assert v.dtype == jnp.float32 and np.isfinite(np.asarray(v)).all(), (fn, v)
        g = jax.vmap(jax.grad(getattr(sch, fn)))(ENDS)
        assert not np.isnan(np.asarray(g)).any(), (fn, g)
        # interior points next to the ends: finite derivatives
        assert np.isfinite(np.asarray(g[1:3])).all(), (fn, g)
    lam = np.asarray(sch.logsnr(ENDS))
    assert not np.isnan(lam).any()
    assert np.isfinite(lam[1:3]).all()
    # logsnr may only be infinite at an exact end, with the right sign
    assert lam[0] > 0 or np.isfinite(lam[0]) and lam[-1] < 0 or np.isfinite(lam[-1])
    dl = np.asarray(jax.vmap(jax.grad(sch.logsnr))(ENDS[1:3]))
    assert np.isfinite(dl).all() and (dl < 0).all()
    for fn in ("drift", "diffusion2"):
        v = np.asarray(getattr(sch, fn)(ENDS[1:3]))
        assert np.isfinite(v).all(), (fn, v)


def test_vp_and_rectified_flow_logsnr_are_infinite_exactly_where_sigma_or_alpha_vanish():
    vp, rf = SCHEDULES["linear_vp"], SCHEDULES["rectified_flow"]
    assert float(vp.logsnr(0.0)) == np.inf and float(rf.logsnr(0.0)) == np.inf
    assert float(rf.logsnr(1.0)) == -np.inf


@pytest.mark.parametrize("name", ["linear_vp", "cosine", "ve", "rectified_flow"])
def test_sde_coefficients_match_their_definitions(name):
    # f = d log alpha / dt, g^2 = d sigma^2/dt - 2 f sigma^2, by finite differences in float64 numpy
    sch = SCHEDULES[name]
    t = np.linspace(0.05, 0.95, 7)
    h = 1e-3
    a = lambda u: np.asarray(sch.alpha(jnp.asarray(u, jnp.float32)), np.float64)  # noqa: E731
    s = lambda u: np.asarray(sch.sigma(jnp.asarray(u, jnp.float32)), np.float64)  # noqa: E731
    f_fd = (np.log(a(t + h)) - np.log(a(t - h))) / (2 * h)
    g2_fd = (s(t + h) ** 2 - s(t - h) ** 2) / (2 * h) - 2 * f_fd * s(t) ** 2
    np.testing.assert_allclose(sch.drift(jnp.asarray(t, jnp.float32)), f_fd, rtol=2e-2, atol=1e-3)
    np.testing.assert_allclose(sch.diffusion2(jnp.asarray(t, jnp.float32)), g2_fd, rtol=2e-2, atol=1e-3)


def test_learned_schedule_endpoints_stay_pinned_after_optimizer_steps():
    sch = dj.schedules.learned_logsnr(logsnr_min=-10.0, logsnr_max=6.0, hidden=64, key=jax.random.PRNGKey(1))
    opt = optax.adam(0.3)
    state = opt.init(sch)
    t = jnp.linspace(0.0, 1.0, 33)

    def loss(s):  # pull the curve far from linear
        return jnp.mean((s.logsnr(t) - 6.0 * jnp.cos(3.0 * t)) ** 2)

    before = np.asarray(sch.logsnr(t))
    for _ in range(20):
        g = jax.grad(loss)(sch)
        upd, state = opt.update(g, state, sch)
        sch = optax.apply_updates(sch, upd)
    after = np.asarray(sch.logsnr(t))
    assert np.abs(after - before).max() > 0.5, "the optimiser must have moved the schedule"
    assert float(sch.logsnr(0.0)) == 6.0 and float(sch.logsnr(1.0)) == -10.0
    assert (np.diff(after) <= 0).all(), "logsnr must stay monotone"
    # alpha^2 + sigma^2 = 1 (variance preserving) and the inverse is exact
    np.testing.assert_allclose(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, 1.0, rtol=1e-5)
    mid = jnp.linspace(0.05, 0.95, 9)
    np.testing.assert_allclose(sch.t_of_logsnr(sch.logsnr(mid)), mid, atol=1e-4)


@pytest.mark.parametrize("bad", [dict(beta_min=1.0, beta_max=0.5)])
def test_bad_schedule_arguments_are_refused(bad):
    with pytest.raises(ValueError, match="beta_min"):
        dj.schedules.linear_vp(**bad)
    with pytest.raises(ValueError, match="sigma_min"):
        dj.schedules.ve(sigma_min=0.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        dj.schedules.get("linear")


def test_schedule_factories_refuse_infinite_or_nan_bounds_and_a_bad_hidden_width():
    inf, nan = float("inf"), float("nan")
    cases = [(dj.schedules.linear_vp, dict(beta_max=inf), "linear_vp needs finite 0 <= beta_min < beta_max"),
             (dj.schedules.linear_vp, dict(beta_min=nan), "linear_vp needs finite"),
             (dj.schedules.cosine, dict(logsnr_min=-inf), "cosine needs finite logsnr_min < logsnr_max"),
             (dj.schedules.cosine, dict(logsnr_max=nan), "cosine needs finite"),
             (dj.schedules.ve, dict(sigma_max=inf), "ve needs finite 0 < sigma_min < sigma_max"),
             (dj.schedules.learned_logsnr, dict(logsnr_min=-inf), "logsnr_min and logsnr_max must be finite"),
             (dj.schedules.learned_logsnr, dict(logsnr_min=1.0, logsnr_max=0.0), "logsnr_min must be < logsnr_max"),
             (dj.schedules.learned_logsnr, dict(hidden=0), "hidden must be an int >= 1, got 0"),
             (dj.schedules.learned_logsnr, dict(hidden=2.0), "hidden must be an int >= 1, got 2.0")]
    for factory, kwargs, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            factory(**kwargs)
    # the documented endpoints of the defaults
    t = jnp.asarray([0.0, 1.0])
    np.testing.assert_allclose(dj.schedules.linear_vp().log_alpha(t), [0.0, -(0.1 + 20.0) / 4], rtol=1e-6)
    np.testing.assert_allclose(dj.schedules.cosine().logsnr(t), [20.0, -20.0], rtol=1e-3)
    np.testing.assert_allclose(dj.schedules.ve().sigma(t), [0.01, 50.0], rtol=1e-5)
    np.testing.assert_allclose(dj.schedules.learned_logsnr(hidden=3).logsnr(t), [5.0, -13.3], rtol=1e-6)
