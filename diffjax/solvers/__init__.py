"""Samplers for Gaussian diffusion: ``sample`` (noise -> data) and ``encode`` (data -> noise).

Every solver is a small class in its own file, registered by name; ``sample`` and ``encode``
build the time grid, wrap the model as a ``Denoiser`` and run the solver's steps in one
``lax.scan`` (or, for ``rk45``, one diffrax solve): one compilation whatever the step count's
values, no Python loop at run time.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffjax import grids
from diffjax.parameterization import check_kind
from diffjax.schedules import Schedule
from diffjax.solvers import ddim, ddpm, dpmpp_2m, dpmpp_3m, euler, euler_maruyama, heun, pc, rk45  # noqa: F401 (register)
from diffjax.solvers._base import Denoiser, Solver, get, names

__all__ = ["sample", "encode", "get", "names", "Denoiser", "Solver", "DETERMINISTIC", "STOCHASTIC"]

DETERMINISTIC = ("euler", "heun", "ddim", "dpmpp_2m", "dpmpp_3m", "rk45")
STOCHASTIC = ("ddpm", "euler_maruyama", "pc")


def _concrete(v):
    """A Python float if v is known at trace time, else None."""
    try:
        return float(np.asarray(v))
    except Exception:
        return None


def _check_common(schedule, prediction, solver, t_min, t_max):
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a diffjax.schedules.Schedule, got {type(schedule).__name__}")
    check_kind(prediction)
    solv = get(solver)
    lo, hi = _concrete(t_min), _concrete(t_max)
    for name, v in (("t_min", lo), ("t_max", hi)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {v}")
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"t_min must be < t_max, got t_min={lo}, t_max={hi}")
    return solv


def _options(solv: Solver, options: dict):
    unknown = set(options) - set(solv.options)
    if unknown:
        allowed = sorted(solv.options) or "none"
        raise ValueError(f"solver {solv.name!r} got unknown option(s) {sorted(unknown)}; allowed: {allowed}")
    return {**solv.options, **options}


def _grid(solv, schedule, steps, ts, t_min, t_max, grid, dtype):
    if ts is None:
        if steps is None:
            steps = solv.default_steps
        return grids.get(grid or solv.default_grid, schedule, steps, t_max, t_min, dtype)
    ts = jnp.asarray(ts, dtype)
    grids.check_ts(ts, increasing=False)
    if steps is not None and ts.shape[0] != steps + 1:
        raise ValueError(f"ts must have length steps + 1 = {steps + 1}, got {ts.shape[0]}")
    return ts


def _check_singular_start(schedule, prediction, t_max):
    """eps / score predictions say nothing about x0 where alpha = 0: refuse when that is known."""
    t = _concrete(t_max)
    if prediction not in ("eps", "score") or t is None:
        return
    if _concrete(schedule.alpha(jnp.asarray(t, jnp.float32))) == 0.0:
        raise ValueError(
            f"prediction={prediction!r} cannot be converted to x0 where alpha = 0 (t_max={t} for "
            f"{type(schedule).__name__}); use a 'flow', 'v' or 'x0' model, or a t_max where alpha > 0")


def sample(model_fn, key, shape, *, schedule, prediction, solver="dpmpp_2m", steps=None, ts=None, t_min=1e-3,
           t_max=1.0, x_init=None, denoise_final=True, grid=None, dtype=None, **solver_options):
    """Draws samples by integrating from ``t_max`` (noise) down to ``t_min``.

    Args:
      model_fn: ``model_fn(x_t, t) -> prediction`` of kind ``prediction``; t has shape (B,).
      key: a ``jax.random`` key (initial noise and, for stochastic solvers, the step noise).
      shape: the batch shape ``(B, ...)``.
      schedule: a ``diffjax.schedules.Schedule``.
      prediction: one of ``"x0", "eps", "v", "score", "flow"``.
      solver: a name in ``diffjax.solvers.names()``.
      steps / ts: number of steps on the solver's default grid, or an explicit descending grid
        ``[t_max, ..., t_min]`` of length steps + 1.
      grid: the name of the grid when ``ts`` is not given (``uniform_t``, ``uniform_logsnr``, ``karras``).
      x_init: the state at t_max; default ``sigma(t_max) * N(0, I)``.
      denoise_final: return the model's x0 estimate at t_min (one more model call) instead of x_{t_min}.
      **solver_options: e.g. ``eta`` for ddim, ``snr`` for pc, ``rtol``/``atol`` for rk45; numeric
        options may be traced values (changing them does not recompile).

    Returns:
      ``(x, info)`` with ``info["nfe"]`` the number of model calls and ``info["ts"]`` the grid.
    """
    solv = _check_common(schedule, prediction, solver, t_min, t_max)
    opts = _options(solv, solver_options)
    shape = tuple(int(d) for d in shape)
    if x_init is not None:
        x_init = jnp.asarray(x_init)
        if x_init.shape != shape:
            raise ValueError(f"x_init must have shape {shape}, got {x_init.shape}")
    dtype = jnp.dtype(dtype) if dtype is not None else (x_init.dtype if x_init is not None else jnp.result_type(float))
    tdtype = jnp.promote_types(dtype, jnp.float32)
    ts = _grid(solv, schedule, steps, ts, t_min, t_max, grid, tdtype)
    _check_singular_start(schedule, prediction, ts[0])
    k_init, k_solve = jax.random.split(key)
    if x_init is None:
        x_init = schedule.sigma(ts[0]).astype(dtype) * jax.random.normal(k_init, shape, dtype)
    den = Denoiser(model_fn, schedule, prediction)
    x, nfe = solv.solve(den, x_init.astype(dtype), ts, k_solve, opts)
    if denoise_final:
        x, _ = den(x, ts[-1])
        nfe = nfe + 1
    return x, {"nfe": nfe, "ts": ts}


def encode(model_fn, x, *, schedule, prediction, solver="dpmpp_2m", steps=None, ts=None, t_min=1e-3, t_max=1.0,
           grid=None, **solver_options):
    """Integrates the probability-flow ODE from ``t_min`` (data) up to ``t_max`` (noise).

    The inverse of ``sample(..., denoise_final=False)`` on the same grid (DDIM inversion for
    ``solver="ddim"``). ``ts`` may be given in either order; it is integrated from t_min to t_max.
    Only deterministic solvers: ``euler, heun, ddim (eta = 0), dpmpp_2m, dpmpp_3m, rk45``.
    """
    solv = _check_common(schedule, prediction, solver, t_min, t_max)
    if solv.name not in DETERMINISTIC:
        raise ValueError(f"encode needs a deterministic solver, one of {list(DETERMINISTIC)}; got {solver!r}")
    opts = _options(solv, solver_options)
    if solv.name == "ddim":
        eta = _concrete(opts["eta"])
        if eta is None or eta != 0.0:
            raise ValueError(f"encode with ddim needs eta=0 (deterministic), got eta={opts['eta']}")
    x = jnp.asarray(x)
    tdtype = jnp.promote_types(x.dtype, jnp.float32)
    if ts is not None:
        ts = jnp.asarray(ts, tdtype)
        try:
            ts_np = np.asarray(ts)
            if ts_np.ndim == 1 and ts_np.shape[0] > 1 and ts_np[-1] > ts_np[0]:
                ts = ts[::-1]
        except Exception:
            pass
    ts = _grid(solv, schedule, steps, ts, t_min, t_max, grid, tdtype)
    den = Denoiser(model_fn, schedule, prediction)
    z, nfe = solv.solve(den, x, ts[::-1], jax.random.PRNGKey(0), opts)
    return z, {"nfe": nfe, "ts": ts[::-1]}
