"""Samplers for Gaussian diffusion: ``sample`` (noise -> data) and ``encode`` (data -> noise).

Every solver is an immutable pytree (``equinox.Module``) in its own file, registered by name in
``SOLVERS``; ``get(name)`` is its class and ``get(name)(**options)`` an instance. ``sample``
and ``encode`` go through the driver (``driver.py``): check the arguments, build the solver
from the call's options, build the time grid, wrap the model as a ``Denoiser`` and run the
solver's steps in one ``lax.scan`` (or, for ``rk45``, one diffrax solve): one compilation
whatever the step count's values, no Python loop at run time.

``sample(..., self_condition=True)`` samples a self-conditioned model ``model_fn(x_t, t, x0_prev)``
(Chen et al. 2022): the loop carries the model's latest data estimate and feeds it to the next
call (``driver.py``); fixed-grid solvers only.

``DETERMINISTIC`` and ``STOCHASTIC`` list the solvers by their ``deterministic`` property with
default options (``ddim`` is deterministic at its default eta = 0, stochastic otherwise).
"""
from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.solvers import euler, heun, ddim, dpmpp_2m, dpmpp_3m, unipc, ipndm, deis, rk45, ddpm, euler_maruyama, pc  # noqa: F401 (registers them, in this order)
from diffjax.solvers import driver
from diffjax.solvers._base import SOLVERS, Denoiser, SelfConditionedDenoiser, Solver

__all__ = ["sample", "encode", "get", "names", "driver", "Denoiser", "SelfConditionedDenoiser", "Solver",
           "SOLVERS", "DETERMINISTIC", "STOCHASTIC"]


def __dir__():
    return sorted(__all__)


def get(name: str) -> type:
    """The solver class registered as ``name``; ``get(name)(**options)`` is an instance. Raises a
    ValueError listing the registered names (and close matches) for an unknown ``name``."""
    return SOLVERS.get(name)


def names() -> tuple:
    """The registered solver names, in registration order."""
    return SOLVERS.names()


DETERMINISTIC = tuple(n for n in names() if get(n)().deterministic)
"""The names of the solvers that draw no noise with their default options (the ones ``encode``
accepts), in registration order."""
STOCHASTIC = tuple(n for n in names() if n not in DETERMINISTIC)
"""The names of the other solvers (they draw noise at every step with their default options), in
registration order."""


def sample(model_fn, key, shape, *, schedule, prediction, solver="dpmpp_2m", steps=None, ts=None, t_min=1e-3,
           t_max=1.0, x_init=None, denoise_final=True, grid=None, dtype=None, check_finite=False,
           self_condition=False, **solver_options):
    """Draws samples by integrating from ``t_max`` (noise) down to ``t_min``.

    Args:
      model_fn: ``model_fn(x_t, t) -> prediction`` of kind ``prediction`` and of the shape of
        ``x_t``; ``x_t`` has shape (B, ...) and ``t`` shape (B,), one time per example
        (broadcast it with ``t[:, None]``). Its call is checked where it is first traced: a
        failure or a wrong output shape raises a ValueError (a non-float output a TypeError)
        naming ``model_fn``, the shapes it was given and this convention, chained from the
        original error.
      key: a ``jax.random`` key (initial noise and, for stochastic solvers, the step noise).
      shape: the batch shape ``(B, ...)``.
      schedule: a ``diffjax.schedules.Schedule``.
      prediction: one of ``"x0", "eps", "v", "score", "flow"``.
      solver: a name in ``diffjax.solvers.names()``.
      steps: the number of steps (grid intervals) on the named grid, an int >= 1; default
        ``None`` is the solver's own count (``diffjax.solvers.get(name).default_steps``):
        DEFAULT_STEPS_TABLE.
        ``rk45`` is adaptive and uses only the grid's ends.
      ts: an explicit descending grid ``[t_max, ..., t_min]`` of length steps + 1 (then
        ``t_min`` / ``t_max`` are ignored for the grid).
      t_min, t_max: the ends of the default grid, ``0 <= t_min < t_max <= 1`` (defaults 1e-3
        and 1.0; ValueError otherwise where they are concrete). ``t_max = 1`` is pure noise;
        ``t_min = 0`` is allowed where sigma(0) = 0 for fixed-grid solvers (see ``denoise_final``).
      grid: the name of the grid when ``ts`` is not given (``uniform_t``, ``uniform_logsnr``,
        ``karras``, ``uniform_angle``); default: the solver's
        (``diffjax.solvers.get(name).default_grid`` built with its ``default_grid_options``;
        ``uniform_angle`` for most, with ``sigma_data=0.5`` for unipc). A grid named here gets
        its own defaults.
      x_init: the state at t_max, a floating-point array of ``shape``; default
        ``sigma(t_max) * N(0, I)``. An integer (or boolean) x_init is refused with a TypeError
        (not converted: convert it yourself, ``x_init.astype(jnp.float32)``); a concrete x_init
        holding NaN or inf raises a ValueError. Under ``jax.jit`` a traced x_init is not checked
        for values.
      denoise_final: return the model's x0 estimate at t_min (one more model call) instead of x_{t_min}.
        Where sigma(t_min) = 0 (t_min = 0 on VP or rectified flow) the last step is the denoising
        step x = alpha(t_min) x0(x, t) from the previous grid time, and the model is never called
        at t_min (there is nothing left to denoise); ``rk45`` refuses such a t_min.
      dtype: the dtype of the state and of the result (e.g. ``jnp.float32``, ``jnp.bfloat16``;
        float64 needs ``jax_enable_x64``). Default: ``x_init``'s dtype, else the default float
        dtype (float32). Times are kept in at least float32 whatever ``dtype`` is.
      check_finite: default False (no extra work in the compiled loop). When True the loop also
        records the first step after which the state holds a NaN or inf (from ``x_init``, the
        model's output or the update) and, when the result is concrete, raises a
        ``FloatingPointError`` naming that step's index and its times t -> t_next (or the final
        denoising call). Under an outer ``jax.jit`` nothing can be raised: the index is returned
        as ``info["nonfinite_step"]`` (an int32, -1 when every step was finite) for the caller
        to check (e.g. with ``jax.experimental.checkify.check``).
      self_condition: default False. True samples a self-conditioned model: ``model_fn`` is then
        called as ``model_fn(x_t, t, x0_prev)``, ``x0_prev`` (of the shape and dtype of the state)
        being the data estimate x0 implied by the model's previous output (zeros at the first
        call). The loop carries it from call to call, after every call (heun's two per step, pc's
        corrector calls, the final denoising call included). Fixed-grid solvers only (``rk45`` is
        refused). A model that ignores ``x0_prev`` gives exactly the samples of the plain call.
      **solver_options: ``eta`` for ddim (in [0, 1]); ``snr`` (> 0), ``corrector_steps`` (int >= 0)
        for pc; ``order`` for unipc, ipndm, deis; ``variant``, ``corrector``, ``lower_order_final``
        for unipc; ``rtol``, ``atol``, ``method``, ``max_steps`` for rk45. The numeric ones (eta,
        snr, rtol, atol) may be traced values (changing them does not recompile; concrete values
        are range-checked, traced ones are not); the others are static. An unknown option or a
        concrete value out of range raises a ValueError naming it.

    Returns:
      ``(x, info)`` with ``info["nfe"]`` the number of model calls, ``info["ts"]`` the grid and,
      with ``check_finite``, ``info["nonfinite_step"]``.

    Raises:
      ValueError / TypeError: bad arguments (each message names the argument and what is allowed).
      FloatingPointError: with ``check_finite=True``, a non-finite state (concrete result only).
    """
    driver.check_common(schedule, prediction, solver, t_min, t_max)
    solv = driver.make_solver(solver, solver_options)
    if not isinstance(self_condition, (bool, np.bool_)):
        raise ValueError(f"self_condition must be True or False, got {self_condition!r}")
    shape = _check_shape(shape)
    if x_init is not None:
        x_init = driver.check_state(x_init, "x_init", shape)
    dtype = jnp.dtype(dtype) if dtype is not None else (x_init.dtype if x_init is not None else jnp.result_type(float))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating-point dtype (e.g. jnp.float32), got {dtype}")
    tdtype = jnp.promote_types(dtype, jnp.float32)
    t_end = t_min if ts is None else _last(ts)
    ts = driver.make_grid(solv, schedule, steps=steps, ts=ts, t_min=t_min, t_max=t_max, grid=grid, dtype=tdtype)
    driver.check_singular_start(schedule, prediction, ts[0])
    k_init, k_solve = jax.random.split(key)
    if x_init is None:
        x_init = schedule.sigma(ts[0]).astype(dtype) * jax.random.normal(k_init, shape, dtype)
    den = (SelfConditionedDenoiser if self_condition else Denoiser)(model_fn, schedule, prediction)
    driver.check_self_condition(solv, den)
    if driver.ends_at_data(solv, schedule, t_end):
        # sigma(t_min) = 0: the model is never called there (an eps / x0 model is 0/0 at sigma = 0);
        # the last step is the denoising step x_{t_min} = alpha(t_min) D(x, t) and already is data.
        x, nfe, *bad = driver.integrate(solv, den, x_init.astype(dtype), ts[:-1], k_solve, check_finite=check_finite)
        x0, _ = den(x, ts[-2])
        x = (schedule.alpha(ts[-1]) * x0).astype(dtype)
        info = {"nfe": nfe + 1, "ts": ts}
        if check_finite:
            _finish_check(bad[0], x, ts.shape[0] - 2, ts, info, "sample", "the final denoising step")
        return x, info
    x, nfe, *bad = driver.integrate(solv, den, x_init.astype(dtype), ts, k_solve, check_finite=check_finite)
    if denoise_final:
        x, _ = den(x, ts[-1])
        nfe = nfe + 1
    info = {"nfe": nfe, "ts": ts}
    if check_finite:
        _finish_check(bad[0], x, ts.shape[0] - 1, ts, info, "sample",
                      f"the final denoising call at t_min={_last(ts)}")
    return x, info


def encode(model_fn, x, *, schedule, prediction, solver="dpmpp_2m", steps=None, ts=None, t_min=1e-3, t_max=1.0,
           grid=None, check_finite=False, **solver_options):
    """Integrates the probability-flow ODE from ``t_min`` (data) up to ``t_max`` (noise).

    The inverse of ``sample(..., denoise_final=False)`` on the same grid (DDIM inversion for
    ``solver="ddim"``). ``ts`` may be given in either order; it is integrated from t_min to t_max.
    Only deterministic solvers: ``euler, heun, ddim (eta = 0), dpmpp_2m(_exp), dpmpp_3m(_exp), unipc,
    ipndm, deis, rk45``.

    Args:
      model_fn: as in ``sample`` (checked the same way).
      x: the data, a floating-point array (B, ...); its dtype is the state's. An integer x is
        refused (TypeError); a concrete x holding NaN or inf raises a ValueError.
      schedule, prediction, solver, steps, ts, t_min, t_max, grid, **solver_options: as in
        ``sample`` (default steps: the solver's own count).
      check_finite: as in ``sample``: False (default) adds no work; True raises a
        ``FloatingPointError`` naming the first step (index and times, counted from t_min) whose
        state is not finite, or under an outer jit returns it as ``info["nonfinite_step"]``.

    Returns:
      ``(z, info)``: the state at t_max, ``info["nfe"]`` and ``info["ts"]`` (ascending).
    """
    driver.check_common(schedule, prediction, solver, t_min, t_max)
    solv = driver.make_solver(solver, solver_options)
    _check_deterministic(solv, solver_options)
    x = driver.check_state(x, "x")
    _check_shape(x.shape, "x.shape")
    tdtype = jnp.promote_types(x.dtype, jnp.float32)
    if ts is not None:
        ts = _descending(jnp.asarray(ts, tdtype))
    ts = driver.make_grid(solv, schedule, steps=steps, ts=ts, t_min=t_min, t_max=t_max, grid=grid, dtype=tdtype)
    den = Denoiser(model_fn, schedule, prediction)
    z, nfe, *bad = driver.integrate(solv, den, x, ts[::-1], jax.random.PRNGKey(0), check_finite=check_finite)
    info = {"nfe": nfe, "ts": ts[::-1]}
    if check_finite:
        _finish_check(bad[0], z, None, ts[::-1], info, "encode", "")
    return z, info


def _check_shape(shape, name: str = "shape") -> tuple:
    """``shape`` as a tuple of ints (B, ...) with B >= 1."""
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints (B, ...), got {shape!r}") from None
    if len(shape) < 1 or min(shape) < 1:
        raise ValueError(f"{name} must be (B, ...) with every size >= 1, got {shape}")
    return shape


def _finish_check(bad, x, final_index, ts, info, what, final):
    """Folds the final call (index ``final_index``, if any) into the first non-finite step, stores
    it as ``info["nonfinite_step"]`` and raises where it is concrete."""
    if final_index is not None:
        bad = jnp.where((bad < 0) & ~jnp.all(jnp.isfinite(x)), final_index, bad).astype(jnp.int32)
    info["nonfinite_step"] = bad
    driver.raise_if_nonfinite(bad, ts, what=what, final=final)


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


if sample.__doc__:  # the default step counts, from the solver table (absent under python -OO)
    sample.__doc__ = sample.__doc__.replace("DEFAULT_STEPS_TABLE", textwrap.fill(
        ", ".join(f"{n} {get(n).default_steps}" for n in names()), 92, subsequent_indent=" " * 8))
