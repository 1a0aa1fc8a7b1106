import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "conformance"))


# eps and score carry no information about x0 where alpha = 0: only pairs that stay determined
DETERMINED = [(a, b) for a in dj.KINDS for b in dj.KINDS if not (a in ("eps", "score") and b not in ("eps", "score"))]


@pytest.mark.parametrize("source,target", DETERMINED)
def test_rectified_flow_conversions_are_finite_at_t_one_where_x0_is_determined(source, target):
    # at t = 1 (alpha = 0) flow, v and x0 still determine (x0, eps); eps and score do not
    sch = dj.schedules.rectified_flow()
    x0 = jnp.asarray([[0.3, -1.2]]); eps = jnp.asarray([[1.0, 0.5]])
    t = jnp.asarray([1.0])
    xt = dj.add_noise(x0, eps, t, sch)
    truth = {"x0": x0, "eps": eps, "v": -x0, "score": -eps, "flow": eps - x0}
    got = dj.convert(truth[source], xt, t, sch, source=source, target=target)
    np.testing.assert_allclose(got, truth[target], rtol=1e-6, atol=1e-6)


def test_conversion_errors_name_the_argument():
    sch = dj.schedules.cosine()
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="source must be one of"):
        dj.convert(x, x, jnp.ones(2) * 0.5, sch, source="noise", target="x0")
    with pytest.raises(ValueError, match="shape of x_t"):
        dj.convert(jnp.zeros((2, 4)), x, jnp.ones(2) * 0.5, sch, source="eps", target="x0")


@pytest.mark.parametrize("sch", [dj.schedules.linear_vp(), dj.schedules.cosine(), dj.schedules.ve(),
                                 dj.schedules.rectified_flow()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("grid", dj.grids.NAMES)
@pytest.mark.parametrize("steps", [1, 2, 7, 50, 1000])
def test_grids_are_strictly_decreasing_with_exact_ends(sch, grid, steps):
    ts = np.asarray(dj.grids.get(grid, sch, steps, 1.0, 1e-3))
    assert ts.shape == (steps + 1,) and ts.dtype == np.float32
    assert ts[0] == np.float32(1.0) and ts[-1] == np.float32(1e-3)
    assert (np.diff(ts) < 0).all(), ts


def test_uniform_logsnr_grid_is_uniform_in_logsnr():
    sch = dj.schedules.linear_vp()
    ts = dj.grids.uniform_logsnr(sch, 10, 1.0, 1e-3)
    lam = np.asarray(sch.logsnr(ts), np.float64)
    np.testing.assert_allclose(np.diff(lam), np.diff(lam).mean(), rtol=2e-3)


def test_karras_grid_matches_the_published_formula_for_ve():
    sch = dj.schedules.ve(0.002, 80.0)
    ts = dj.grids.karras(sch, 5, 1.0, 0.0, rho=7.0)
    i = np.arange(6) / 5
    sig = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(sch.sigma(ts), sig, rtol=1e-4)


def test_uniform_angle_grid_is_uniform_in_the_angle_of_alpha_and_sigma():
    """Against the conformance oracle's schedule formulas: the cosine schedule is uniform in the
    angle arctan(sigma / alpha) by construction, so uniform_angle (rho = 1) is uniform_t there; on
    every schedule arctan((sigma / alpha)^(1 / rho)) has equal steps, infinite log-SNR ends too
    (rectified flow from t = 1 to t = 0), and sample accepts those ends."""
    oracles = pytest.importorskip("oracles")
    with jax.enable_x64(True):
        ts = np.asarray(dj.grids.uniform_angle(dj.schedules.cosine(), 7, 1.0, 1e-3, dtype=jnp.float64))
        np.testing.assert_allclose(ts, np.linspace(1.0, 1e-3, 8), rtol=1e-12, atol=1e-12)
        for name, t_max, t_min in (("ve", 1.0, 0.0), ("linear_vp", 1.0, 1e-3), ("rectified_flow", 1.0, 0.0),
                                   ("rectified_flow", 0.9, 0.05)):
            sch, ref = dj.schedules.get(name), oracles.SCHEDULES[name]
            for rho, sd in ((1.0, 1.0), (2.5, 1.0), (1.0, 0.5), (1.5, 3.0)):
                ts = np.asarray(dj.grids.uniform_angle(sch, 6, t_max, t_min, rho=rho, sigma_data=sd,
                                                       dtype=jnp.float64))
                a, s, _, _ = ref.coeffs(ts)
                with np.errstate(divide="ignore"):
                    u = np.arctan((s / (a * sd)) ** (1 / rho))
                assert ts[0] == t_max and ts[-1] == t_min and np.all(np.diff(ts) < 0), (name, rho, ts)
                np.testing.assert_allclose(np.diff(u), np.diff(u).mean(), rtol=1e-9,
                                           err_msg=f"{name} rho={rho} sigma_data={sd}")
    rf = dj.schedules.rectified_flow()
    x, _ = dj.sample(lambda x, t: -x, jax.random.PRNGKey(0), (4, 2), schedule=rf, prediction="flow", solver="ddim",
                     steps=4, grid="uniform_angle", t_min=0.0, t_max=1.0)
    assert np.isfinite(np.asarray(x)).all()
    for rho in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="rho must be a finite number > 0"):
            dj.grids.uniform_angle(rf, 4, rho=rho)
        with pytest.raises(ValueError, match="sigma_data must be a finite number > 0"):
            dj.grids.uniform_angle(rf, 4, sigma_data=rho)


def test_a_solvers_default_grid_options_apply_to_its_default_grid_only():
    """unipc's default grid is uniform_angle with sigma_data = 0.5; grid='uniform_angle' named in
    the call is the plain angle grid (sigma_data = 1)."""
    sch = dj.schedules.ve(0.002, 80.0)
    assert dict(dj.solvers.get("unipc").default_grid_options) == {"sigma_data": 0.5}
    for key, grid in (("default", None), ("named", "uniform_angle")):
        seen = []

        def model(x, t):
            jax.debug.callback(lambda t: seen.append(float(t[0])), t)
            return jnp.zeros_like(x)

        dj.sample(model, jax.random.PRNGKey(0), (1, 2), schedule=sch, prediction="x0", solver="unipc",
                  steps=4, grid=grid, t_min=0.0, denoise_final=False)
        sd = 0.5 if key == "default" else 1.0
        expect = np.asarray(dj.grids.uniform_angle(sch, 4, 1.0, 0.0, sigma_data=sd))[:-1]
        np.testing.assert_allclose(seen, expect, rtol=1e-5, err_msg=key)


def test_bad_grid_arguments():
    sch = dj.schedules.cosine()
    with pytest.raises(ValueError, match="grid must be one of"):
        dj.grids.get("linear", sch, 10)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        dj.grids.uniform_t(0)
    with pytest.raises(ValueError, match="t_max must lie in"):
        dj.grids.uniform_t(4, t_max=1.5)
