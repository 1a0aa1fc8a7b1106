import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj


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


def test_bad_grid_arguments():
    sch = dj.schedules.cosine()
    with pytest.raises(ValueError, match="grid must be one of"):
        dj.grids.get("linear", sch, 10)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        dj.grids.uniform_t(0)
    with pytest.raises(ValueError, match="t_max must lie in"):
        dj.grids.uniform_t(4, t_max=1.5)
