"""``diffjax.grids.optimize``: a grid fitted to a model beats the grid it started from
(uniform_logsnr) on starting noises it was not fitted on, measured against the exact ODE solution
of a Gaussian mixture."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from core_oracle import two_bumps


def _error(model, sch, x_init, ts, exact, solver):
    x, _ = dj.sample(model, jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction="eps", solver=solver,
                     ts=ts, x_init=x_init, denoise_final=False)
    return float(np.sqrt(np.mean((np.asarray(x) - exact) ** 2)))


@pytest.mark.parametrize("solver,steps", [("ddim", 3), ("unipc", 4)])
def test_fitted_grid_beats_the_default_on_held_out_noise(solver, steps):
    gm = two_bumps()
    sch = dj.schedules.cosine()
    model = gm.model(sch, "eps")
    t_min = 1e-3
    ts = dj.grids.optimize(model, jax.random.PRNGKey(1), (128, 2), schedule=sch, prediction="eps", steps=steps,
                           solver=solver, t_min=t_min, grid="uniform_logsnr", denoise_final=False, iterations=60,
                           learning_rate=0.1)
    ts_np = np.asarray(ts)
    assert ts.shape == (steps + 1,) and ts_np[0] == 1.0 and ts_np[-1] == np.float32(t_min)
    assert np.all(np.diff(ts_np) < 0)
    # held out: other starting noises; the truth is a 1000-step solve (its error is < 1e-4 here)
    x_init = jnp.asarray(np.random.default_rng(7).standard_normal((256, 2)), jnp.float32)
    exact, _ = dj.sample(model, jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction="eps",
                         solver="dpmpp_2m", steps=1000, t_min=t_min, x_init=x_init, denoise_final=False)
    exact = np.asarray(exact)
    default = dj.solvers.driver.make_grid(dj.solvers.get(solver)(), sch, steps=steps, ts=None, t_min=t_min,
                                          t_max=1.0, grid="uniform_logsnr", dtype=jnp.float32)
    e_default = _error(model, sch, x_init, default, exact, solver)
    e_fitted = _error(model, sch, x_init, ts, exact, solver)
    assert e_fitted < 0.8 * e_default, (e_fitted, e_default, ts_np)


def test_optimize_refuses_what_it_cannot_fit():
    gm = two_bumps()
    sch = dj.schedules.cosine()
    kw = dict(schedule=sch, prediction="eps")
    m, k = gm.model(sch), jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        dj.grids.optimize(m, k, (4, 2), steps=0, **kw)
    with pytest.raises(ValueError, match="reference_steps must be an int > steps"):
        dj.grids.optimize(m, k, (4, 2), steps=8, reference_steps=8, **kw)
    with pytest.raises(ValueError, match="must be deterministic"):
        dj.grids.optimize(m, k, (4, 2), steps=4, solver="ddpm", **kw)
    with pytest.raises(ValueError, match="adaptive"):
        dj.grids.optimize(m, k, (4, 2), steps=4, solver="rk45", **kw)
    with pytest.raises(ValueError, match="solver must be one of"):
        dj.grids.optimize(m, k, (4, 2), steps=4, solver="unpic", **kw)
