"""Time steps fitted to a model: the grid on which a few-step solve best matches a many-step one.

``optimize`` draws a batch of starting noises, solves the probability-flow ODE from each with
many steps (the reference), and fits the interior points of a ``steps``-step grid so that the
chosen solver, run on that grid from the same noises, lands as close as possible to the
reference (mean squared distance; the approach of LD3 / GITS-style step selection). The grid is
parameterised monotonically: the fractions ``softmax(z)`` of the log-SNR range between the
ends, so every iterate is a strictly decreasing grid from exactly ``t_max`` to exactly
``t_min``; ``z`` starts at the solver's default grid and is fitted with Adam, all
``iterations`` in one compiled ``lax.scan``. The best grid seen is returned. optax (a core
dependency) is imported when ``optimize`` runs, not with ``diffjax``.

This module sits above the solvers (it runs them); the rest of ``diffjax.grids`` sits below.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from diffjax.grids.named import _logsnr_ends

__all__ = ["optimize"]


def __dir__():
    return sorted(__all__)


def optimize(model_fn, key, shape, *, schedule, prediction, steps, solver="unipc", t_min=1e-3, t_max=1.0,
             grid=None, reference_solver="unipc", reference_steps=128, iterations=200, learning_rate=0.05,
             denoise_final=True, dtype=jnp.float32, **solver_options):
    """Fits a ``steps``-step grid to ``model_fn`` for ``solver``; returns ``ts`` (descending,
    length steps + 1, from t_max to t_min) to pass as ``sample(..., ts=ts)``.

    Args:
      model_fn, schedule, prediction: as for ``diffjax.sample``.
      key: a ``jax.random`` key for the batch of starting noises.
      shape: the batch shape ``(B, ...)`` of the noises fitted on (a few hundred points for
        low-dimensional data, tens of images).
      steps: the number of solver steps (an int >= 1).
      solver, **solver_options: the few-step solver the grid is fitted for (deterministic).
      t_min, t_max: the ends of the grid (kept exactly).
      grid: the grid to start from (default: the solver's default grid).
      reference_solver, reference_steps: the many-step solution fitted to.
      iterations, learning_rate: Adam's budget.
      denoise_final: as for ``sample``: fit the grid for samples that end with the final denoising
        call (the default of ``sample``) or without it.
      dtype: of the noises and the solves.
    """
    import optax  # pylint: disable=import-outside-toplevel  (not loaded by `import diffjax`)

    from diffjax.solvers import driver, sample  # the solvers sit below this module, not below diffjax.grids

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    if not isinstance(reference_steps, int) or isinstance(reference_steps, bool) or reference_steps <= steps:
        raise ValueError(f"reference_steps must be an int > steps = {steps}, got {reference_steps!r}")
    driver.check_common(schedule, prediction, solver, t_min, t_max)
    solv = driver.make_solver(solver, solver_options)
    if not solv.fixed_grid:
        raise ValueError(f"solver {solver!r} is adaptive: it has no grid to fit")
    if not solv.deterministic:
        raise ValueError(f"solver must be deterministic (its grid is fitted to the ODE solution), got {solver!r}")
    shape = tuple(int(d) for d in shape)
    tdtype = jnp.promote_types(dtype, jnp.float32)
    ts0 = driver.make_grid(solv, schedule, steps=steps, ts=None, t_min=t_min, t_max=t_max, grid=grid, dtype=tdtype)

    k_noise, _ = jax.random.split(key)
    x_init = (schedule.sigma(ts0[0]) * jax.random.normal(k_noise, shape, tdtype)).astype(dtype)
    common = dict(schedule=schedule, prediction=prediction, x_init=x_init, denoise_final=denoise_final, dtype=dtype)
    x_ref, _ = sample(model_fn, key, shape, solver=reference_solver, steps=reference_steps, t_min=t_min,
                      t_max=t_max, **common)
    x_ref = jax.lax.stop_gradient(x_ref)

    lo, hi = _logsnr_ends(schedule, t_max, t_min, tdtype)
    span = hi - lo

    def grid_of(z):
        frac = jnp.concatenate([jnp.zeros((1,), tdtype), jnp.cumsum(jax.nn.softmax(z))])
        ts = schedule.t_of_logsnr(lo + frac * span).astype(tdtype)
        return ts.at[0].set(t_max).at[-1].set(t_min)

    def loss_fn(z):
        x, _ = sample(model_fn, key, shape, solver=solver, ts=grid_of(z), **common, **solver_options)
        return jnp.mean(jnp.square((x - x_ref).astype(jnp.float32)))

    # start at the default grid: z = log of its log-SNR increments (finite stand-ins at infinite ends)
    lam0 = jnp.clip(schedule.logsnr(ts0), jnp.minimum(lo, hi), jnp.maximum(lo, hi))
    lam0 = lam0.at[0].set(lo).at[-1].set(hi)
    z0 = jnp.log(jnp.maximum(jnp.diff(lam0) / span, 1e-6)).astype(jnp.float32)
    opt = optax.adam(learning_rate)

    @jax.jit
    def fit(z0):
        def body(state, _):
            z, opt_state, best_z, best = state
            loss, g = jax.value_and_grad(loss_fn)(z)
            ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(g))
            better = ok & (loss < best)
            best_z, best = jnp.where(better, z, best_z), jnp.where(better, loss, best)
            updates, new_opt = opt.update(jnp.where(ok, g, 0.0), opt_state, z)
            return (optax.apply_updates(z, updates), new_opt, best_z, best), loss

        init = (z0, opt.init(z0), z0, jnp.asarray(jnp.inf, jnp.float32))
        (z, _, best_z, best), losses = jax.lax.scan(body, init, None, length=iterations)
        final = loss_fn(z)
        return jnp.where(jnp.isfinite(final) & (final < best), z, best_z)

    return grid_of(fit(z0))
