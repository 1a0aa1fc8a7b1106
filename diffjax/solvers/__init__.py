"""Samplers for Gaussian diffusion: ``sample`` (noise -> data) and ``encode`` (data -> noise).

Every solver is an immutable pytree (``equinox.Module``) in its own file, registered by name in
``SOLVERS``; ``get(name)`` is its class and ``get(name)(**options)`` an instance. ``sample``
and ``encode`` go through the driver (``driver.py``): check the arguments, build the solver
from the call's options, build the time grid, wrap the model as a ``Denoiser`` and run the
solver's steps in one ``lax.scan`` (or, for ``rk45``, one diffrax solve): one compilation
whatever the step count's values, no Python loop at run time.

``DETERMINISTIC`` and ``STOCHASTIC`` list the solvers by their ``deterministic`` property with
default options (``ddim`` is deterministic at its default eta = 0, stochastic otherwise).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.solvers import euler, heun, ddim, dpmpp_2m, dpmpp_3m, unipc, ipndm, deis, rk45, ddpm, euler_maruyama, pc  # noqa: F401 (registers them, in this order)
from diffjax.solvers import driver
from diffjax.solvers._base import SOLVERS, Denoiser, Solver

__all__ = ["sample", "encode", "get", "names", "driver", "Denoiser", "Solver", "SOLVERS", "DETERMINISTIC",
           "STOCHASTIC"]


def get(name: str) -> type:
    """The solver class registered as ``name``."""
    return SOLVERS.get(name)


def names() -> tuple:
    return SOLVERS.names()


DETERMINISTIC = tuple(n for n in names() if get(n)().deterministic)
STOCHASTIC = tuple(n for n in names() if n not in DETERMINISTIC)


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
        Where sigma(t_min) = 0 (t_min = 0 on VP or rectified flow) the last step is the denoising
        step x = alpha(t_min) x0(x, t) from the previous grid time, and the model is never called
        at t_min (there is nothing left to denoise); ``rk45`` refuses such a t_min.
      **solver_options: ``eta`` for ddim; ``snr``, ``corrector_steps`` for pc; ``rtol``, ``atol``,
        ``method``, ``max_steps`` for rk45. The numeric ones (eta, snr, rtol, atol) may be traced
        values (changing them does not recompile); corrector_steps, method and max_steps are static.

    Returns:
      ``(x, info)`` with ``info["nfe"]`` the number of model calls and ``info["ts"]`` the grid.
    """
    driver.check_common(schedule, prediction, solver, t_min, t_max)
    solv = driver.make_solver(solver, solver_options)
    shape = tuple(int(d) for d in shape)
    if x_init is not None:
        x_init = jnp.asarray(x_init)
        if x_init.shape != shape:
            raise ValueError(f"x_init must have shape {shape}, got {x_init.shape}")
    dtype = jnp.dtype(dtype) if dtype is not None else (x_init.dtype if x_init is not None else jnp.result_type(float))
    tdtype = jnp.promote_types(dtype, jnp.float32)
    t_end = t_min if ts is None else _last(ts)
    ts = driver.make_grid(solv, schedule, steps=steps, ts=ts, t_min=t_min, t_max=t_max, grid=grid, dtype=tdtype)
    driver.check_singular_start(schedule, prediction, ts[0])
    k_init, k_solve = jax.random.split(key)
    if x_init is None:
        x_init = schedule.sigma(ts[0]).astype(dtype) * jax.random.normal(k_init, shape, dtype)
    den = Denoiser(model_fn, schedule, prediction)
    if driver.ends_at_data(solv, schedule, t_end):
        # sigma(t_min) = 0: the model is never called there (an eps / x0 model is 0/0 at sigma = 0);
        # the last step is the denoising step x_{t_min} = alpha(t_min) D(x, t) and already is data.
        x, nfe = driver.integrate(solv, den, x_init.astype(dtype), ts[:-1], k_solve)
        x0, _ = den(x, ts[-2])
        x = (schedule.alpha(ts[-1]) * x0).astype(dtype)
        return x, {"nfe": nfe + 1, "ts": ts}
    x, nfe = driver.integrate(solv, den, x_init.astype(dtype), ts, k_solve)
    if denoise_final:
        x, _ = den(x, ts[-1])
        nfe = nfe + 1
    return x, {"nfe": nfe, "ts": ts}


def encode(model_fn, x, *, schedule, prediction, solver="dpmpp_2m", steps=None, ts=None, t_min=1e-3, t_max=1.0,
           grid=None, **solver_options):
    """Integrates the probability-flow ODE from ``t_min`` (data) up to ``t_max`` (noise).

    The inverse of ``sample(..., denoise_final=False)`` on the same grid (DDIM inversion for
    ``solver="ddim"``). ``ts`` may be given in either order; it is integrated from t_min to t_max.
    Only deterministic solvers: ``euler, heun, ddim (eta = 0), dpmpp_2m(_exp), dpmpp_3m(_exp), rk45``.
    """
    driver.check_common(schedule, prediction, solver, t_min, t_max)
    solv = driver.make_solver(solver, solver_options)
    _check_deterministic(solv, solver_options)
    x = jnp.asarray(x)
    tdtype = jnp.promote_types(x.dtype, jnp.float32)
    if ts is not None:
        ts = _descending(jnp.asarray(ts, tdtype))
    ts = driver.make_grid(solv, schedule, steps=steps, ts=ts, t_min=t_min, t_max=t_max, grid=grid, dtype=tdtype)
    den = Denoiser(model_fn, schedule, prediction)
    z, nfe = driver.integrate(solv, den, x, ts[::-1], jax.random.PRNGKey(0))
    return z, {"nfe": nfe, "ts": ts[::-1]}


def _check_deterministic(solv: Solver, options: dict) -> None:
    """encode runs the ODE backwards: refuse a solver instance that draws noise."""
    if solv.deterministic:
        return
    defaults = type(solv).option_defaults()
    if type(solv)().deterministic:  # deterministic only for some option values (ddim: eta = 0)
        need = ", ".join(f"{k}={defaults[k]:g}" if isinstance(defaults[k], float) else f"{k}={defaults[k]!r}"
                         for k in sorted(options))
        got = ", ".join(f"{k}={options[k]}" for k in sorted(options))
        raise ValueError(f"encode with {solv.name} needs {need} (deterministic), got {got}")
    raise ValueError(f"encode needs a deterministic solver, one of {list(DETERMINISTIC)}; got {solv.name!r}")


def _last(ts):
    """The last entry of an explicit grid, or None where it is traced."""
    try:
        return float(np.asarray(ts).reshape(-1)[-1])
    except (jax.errors.TracerArrayConversionError, TypeError, ValueError):
        return None


def _descending(ts):
    """An increasing grid reversed (encode accepts either order); a traced grid as given."""
    try:
        ts_np = np.asarray(ts)
        if ts_np.ndim == 1 and ts_np.shape[0] > 1 and ts_np[-1] > ts_np[0]:
            return ts[::-1]
    except jax.errors.TracerArrayConversionError:  # traced: integrated as given
        pass
    return ts
