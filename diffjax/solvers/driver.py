"""The solver driver: what ``sample``, ``encode`` and ``diffjax.editing`` share.

Each of them checks the common arguments (``check_common``), builds the solver from its name
and the call's options (``make_solver``), builds or checks the time grid (``make_grid``),
refuses a start the model cannot denoise (``check_singular_start``), wraps the model as a
``Denoiser`` and runs the solver (``integrate``, or ``run_steps`` for a fixed-grid solver).

``run_steps`` is the one time loop of every fixed-grid solver: a single ``lax.scan`` over the
grid intervals, so one compilation serves every grid of a given length and no Python loop runs
at sampling time. An optional hook edits the state after every step: ``project(x, t_next,
key) -> x`` (inpainting overwrites the known region with a fresh draw of the forward process);
with ``repeat = R > 1`` every grid step is taken R times, the state being sent back from t_next
to t by ``jump_back(x, t_next, t, key) -> x`` between passes (RePaint's resampling). After a
jump back the solver restarts from the new state, since a multistep history computed before
the jump does not belong to it (and its last entry, at t, would give a zero log-SNR step).

Keys: the i-th grid step gets the i-th key of ``split(key, n)`` and, without a hook, hands it
to the solver. With a hook it is split into R pass keys; each of the first R - 1 splits into a
pass key and a jump-back key, and a pass key splits into the solver's and the hook's.

Input checks: the initial state (``check_state``) must be a floating-point array (an integer
one is refused, not converted: it would silently round the result) and, where it is concrete,
finite; every model call goes through ``_base.call_model`` (in ``Denoiser``), so a model that
misuses ``t`` or returns the wrong shape fails when it is first traced, with a message naming
``model_fn``, the shapes it was given and the convention (no extra trace of the model). ``check_finite=True`` in ``run_steps`` /
``integrate`` carries the index of the first step whose state is not finite through the scan
(``raise_if_nonfinite`` turns it into an error once it is concrete); without it the scan body
is unchanged.

Self-conditioning: given a ``SelfConditionedDenoiser`` (``sample(..., self_condition=True)``),
``run_steps`` carries the latest data estimate x0 in the scan state next to the solver's carry
(zeros before the first call). Each step gets a fresh view ``den.at(x0_prev)``; every model call
in it (both of heun's, pc's corrector calls, through ``den.cond`` / ``den.scan``) feeds the
estimate of the call before and replaces it with its own. A jump back (``repeat > 1``) restarts
the solver but keeps the estimate. With a plain ``Denoiser`` the scan is exactly as before.
Adaptive solvers (``rk45``) cannot carry it and are refused.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.grids import named as grids
from diffjax.parameterization import check_kind
from diffjax.schedules import Schedule
from diffjax.solvers._base import SOLVERS, Denoiser, SelfConditionedDenoiser, Solver, concrete_float

__all__ = ["Denoiser", "SelfConditionedDenoiser", "check_common", "check_state", "make_solver", "make_grid",
           "check_singular_start", "check_self_condition", "ends_at_data", "integrate", "run_steps",
           "raise_if_nonfinite"]


def __dir__():
    return sorted(__all__)


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_state(x, name: str, shape=None):
    """``x`` as an array, checked: a floating-point dtype (else TypeError naming ``name``), the
    given ``shape`` if any (else ValueError) and, where ``x`` is concrete, no NaN or inf (else
    ValueError). Integer or boolean states are refused rather than converted."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array (e.g. float32), got dtype {x.dtype}; "
                        f"convert it with {name}.astype(jnp.float32)")
    if shape is not None and x.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {x.shape}")
    if _is_traced(x) or not x.size:
        return x
    with jax.ensure_compile_time_eval():  # concrete, also while an outer jit traces
        bad = int(jnp.sum(~jnp.isfinite(x)))
    if bad:
        raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or inf) of {x.size}")
    return x


def raise_if_nonfinite(bad, ts, *, what: str = "sample", final: str = "") -> None:
    """Raises FloatingPointError when ``bad`` (the index of the first grid step whose state was
    not finite, -1 if none; from ``run_steps(..., check_finite=True)``) is concrete and >= 0.
    ``ts`` is the grid that was run; index ``len(ts) - 1`` means the call described by ``final``
    (the final denoising call). A traced ``bad`` is left alone (see ``sample``'s ``check_finite``)."""
    if _is_traced(bad) or _is_traced(ts):
        return
    k = int(bad)
    if k < 0:
        return
    ts = np.asarray(ts)
    n = ts.shape[0] - 1
    if k >= n:
        raise FloatingPointError(f"{what}: non-finite values (NaN or inf) first appeared in {final} "
                                 f"(step index {k}, t={ts[-1]:.6g}); every earlier step was finite")
    raise FloatingPointError(
        f"{what}: non-finite values (NaN or inf) first appeared at step index {k} of {n}, from "
        f"t={ts[k]:.6g} to t={ts[k + 1]:.6g} (the model's output at t={ts[k]:.6g} or the solver's update "
        f"there); every earlier step was finite")


def check_common(schedule, prediction, solver: str, t_min, t_max) -> None:
    """Checks the arguments every entry point takes: the schedule, the prediction kind, the
    solver name and, where they are known at trace time, 0 <= t_min < t_max <= 1."""
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a diffjax.schedules.Schedule, got {type(schedule).__name__}")
    check_kind(prediction)
    SOLVERS.get(solver)
    lo, hi = concrete_float(t_min), concrete_float(t_max)
    for name, v in (("t_min", lo), ("t_max", hi)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {v}")
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"t_min must be < t_max, got t_min={lo}, t_max={hi}")


def make_solver(name: str, options: dict) -> Solver:
    """The solver ``name`` built from the call's options (the others keep their defaults)."""
    cls = SOLVERS.get(name)
    allowed = cls.option_defaults()
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(f"solver {name!r} got unknown option(s) {sorted(unknown)}; "
                         f"allowed: {sorted(allowed) or 'none'}")
    return cls(**options)


def make_grid(solver: Solver, schedule, *, steps, ts, t_min, t_max, grid, dtype):
    """The descending grid [t_max, ..., t_min]: ``ts`` checked, or ``steps`` intervals of the
    named ``grid`` (default: the solver's grid and step count)."""
    if ts is None:
        if steps is None:
            steps = solver.default_steps
        name = grid or solver.default_grid
        options = {} if grid else dict(solver.default_grid_options)
        if name in grids.MIRRORED:
            _check_logsnr_ends(schedule, name, t_max, t_min)
        ts = grids.get(name, schedule, steps, t_max, t_min, dtype, **options)
        lo, hi = concrete_float(t_min), concrete_float(t_max)
        rebuild = None if lo is None or hi is None else (
            lambda: grids.get(name, schedule, steps, hi, lo, dtype, **options))
        _check_grid(solver, schedule, ts, name, rebuild)
        return ts
    ts = jnp.asarray(ts, dtype)
    grids.check_ts(ts, increasing=False)
    if steps is not None and ts.shape[0] != steps + 1:
        raise ValueError(f"ts must have length steps + 1 = {steps + 1}, got {ts.shape[0]}")
    _check_grid(solver, schedule, ts, None, None)
    return ts


def _check_grid(solver: Solver, schedule, ts, name, rebuild) -> None:
    """``solver.check_grid`` on the grid's values where they are known at trace time: ``ts``
    itself, or (a grid built inside ``jit`` from Python-number ends) ``rebuild()`` evaluated
    eagerly. Skipped where the grid depends on traced values."""
    if _is_traced(ts):
        if rebuild is None:
            return
        with jax.ensure_compile_time_eval():
            ts = rebuild()
        if _is_traced(ts):
            return
    solver.check_grid(schedule, np.asarray(ts), grid=name)


def _check_logsnr_ends(schedule, grid, t_max, t_min) -> None:
    """A log-SNR grid needs a finite log-SNR at one end at least (it mirrors an infinite end)."""
    lo, hi = concrete_float(t_max), concrete_float(t_min)
    if lo is None or hi is None:
        return
    with jax.ensure_compile_time_eval():
        ends = [concrete_float(schedule.logsnr(jnp.asarray(v, jnp.float32))) for v in (lo, hi)]
    if all(e is not None and not np.isfinite(e) for e in ends):
        raise ValueError(
            f"grid {grid!r} is spaced in log-SNR, which is infinite at both t_max={lo} and t_min={hi} for "
            f"{type(schedule).__name__}; use t_min > 0 (e.g. 1e-3), t_max < 1, or grid='uniform_t'")


def ends_at_data(solver: Solver, schedule, t_end) -> bool:
    """True where sigma(t_end) = 0 is known at trace time (t_min = 0 on VP or rectified flow), also
    inside ``jit`` when t_end is a Python number: ``sample`` then takes the last step as the
    denoising step and never calls the model there. An adaptive solver evaluates the model at the
    end of its interval: it refuses such a t_min."""
    t = concrete_float(t_end)
    if t is None:
        return False
    with jax.ensure_compile_time_eval():
        s_end = concrete_float(schedule.sigma(jnp.asarray(t, jnp.float32)))
    if s_end is None or s_end != 0.0:
        return False
    if not solver.fixed_grid:
        raise ValueError(f"t_min={t} has sigma = 0 for {type(schedule).__name__}, where "
                         f"{solver.name!r} would call the model (x0 / eps are 0/0 there); use t_min > 0 "
                         f"(e.g. 1e-3) or a fixed-grid solver")
    return True


def check_singular_start(schedule, prediction, t_max) -> None:
    """eps / score predictions say nothing about x0 where alpha = 0: refuse when that is known."""
    t = concrete_float(t_max)
    if prediction not in ("eps", "score") or t is None:
        return
    if concrete_float(schedule.alpha(jnp.asarray(t, jnp.float32))) == 0.0:
        raise ValueError(
            f"prediction={prediction!r} cannot be converted to x0 where alpha = 0 (t_max={t} for "
            f"{type(schedule).__name__}); use a 'flow', 'v' or 'x0' model, or a t_max where alpha > 0")


def integrate(solver: Solver, den: Denoiser, x, ts, key, *, check_finite: bool = False):
    """Runs the solver from ts[0] to ts[-1] (either direction of time); returns (x, nfe), or
    (x, nfe, first non-finite step or -1) with ``check_finite`` (an adaptive solver is one step)."""
    if solver.fixed_grid:
        return run_steps(solver, den, x, ts, key, check_finite=check_finite)
    check_self_condition(solver, den)
    x, nfe = solver.solve(den, x, ts)
    if check_finite:
        return x, nfe, jnp.where(jnp.all(jnp.isfinite(x)), -1, 0).astype(jnp.int32)
    return x, nfe


def run_steps(solver: Solver, den: Denoiser, x, ts, key, *, project: Optional[Callable] = None, repeat: int = 1,
              jump_back: Optional[Callable] = None, check_finite: bool = False):
    """Runs a fixed-grid solver over ``ts`` in one ``lax.scan``; returns (x, nfe).

    ``project(x, t_next, key) -> x``, if given, replaces the state after every step. ``repeat``
    (an int >= 1) takes every grid step that many times, with ``jump_back(x, t_next, t, key)
    -> x`` between passes; both need ``project``. nfe counts every pass. With ``check_finite``
    the scan also carries the index of the first step after which the state holds a NaN or inf
    (-1 if none) and the result is ``(x, nfe, first_bad_step)``; without it the scan body does
    no extra work.

    With a ``SelfConditionedDenoiser`` ``den`` the scan also carries the latest data estimate (see
    the module docstring), starting from ``den``'s (zeros if it holds none); afterwards ``den``
    holds the estimate of the run's last model call.
    """
    if not solver.fixed_grid:
        raise ValueError(f"run_steps needs a fixed-grid solver; {solver.name!r} has no single step")
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
    if project is None and (repeat != 1 or jump_back is not None):
        raise ValueError("repeat and jump_back need a project hook")
    if repeat > 1 and jump_back is None:
        raise ValueError(f"repeat={repeat} needs jump_back(x, t_next, t, key) -> x")
    self_cond = isinstance(den, SelfConditionedDenoiser)
    if self_cond:
        solver = _SelfConditioned(solver)
    advance = _plain(solver, den) if project is None else _hooked(solver, den, project, repeat, jump_back)
    n = ts.shape[0] - 1
    keys = jax.random.split(key, n)
    is_last = jnp.arange(n) == n - 1
    last = (is_last, (n - 1 - jnp.arange(n)).astype(jnp.int32))  # and the steps left after each

    if check_finite:
        def body(state, inp):
            carry, nfe, bad = state
            t, t_next, k, last, i = inp
            carry, used = advance(carry, t, t_next, k, last)
            ok = jnp.all(jnp.isfinite(solver.state(carry)))
            bad = jnp.where((bad < 0) & ~ok, i, bad)
            return (carry, nfe + used, bad), None

        init = (solver.init(den, x), jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))
        (carry, nfe, bad), _ = jax.lax.scan(body, init, (ts[:-1], ts[1:], keys, last,
                                                         jnp.arange(n, dtype=jnp.int32)))
        if self_cond:
            den.x0_prev = carry[1]
        return solver.state(carry), nfe, bad

    def body(state, inp):
        carry, nfe = state
        t, t_next, k, last = inp
        carry, used = advance(carry, t, t_next, k, last)
        return (carry, nfe + used), None

    init = (solver.init(den, x), jnp.zeros((), jnp.int32))
    (carry, nfe), _ = jax.lax.scan(body, init, (ts[:-1], ts[1:], keys, last))
    if self_cond:
        den.x0_prev = carry[1]
    return solver.state(carry), nfe


def check_self_condition(solver: Solver, den: Denoiser) -> None:
    """Refuses (ValueError naming ``self_condition``) a self-conditioned model with an adaptive
    solver: its steps run inside diffrax, where the estimate cannot be carried."""
    if isinstance(den, SelfConditionedDenoiser) and not solver.fixed_grid:
        raise ValueError(f"self_condition=True needs a fixed-grid solver (the sampler carries the model's "
                         f"previous x0 estimate from step to step); {solver.name!r} is adaptive")


class _SelfConditioned:
    """A fixed-grid solver seen by the scan with the latest data estimate in its carry:
    ``(the solver's carry, x0_prev)``. Each step runs the solver on a fresh
    ``den.at(x0_prev)`` and keeps the estimate of its last model call."""

    def __init__(self, solver: Solver):
        self.solver = solver
        self.name, self.fixed_grid = solver.name, solver.fixed_grid
        self.uses_steps_left = solver.uses_steps_left

    def init(self, den, x):
        return self.solver.init(den, x), den.initial(x)

    def restart(self, den, carry, x):
        """The solver restarted from ``x`` (a jump back), the estimate kept."""
        return self.solver.init(den, x), carry[1]

    def step(self, den, carry, t, t_next, key, is_last, **kw):
        inner, x0_prev = carry
        view = den.at(x0_prev)
        inner, used = self.solver.step(view, inner, t, t_next, key, is_last, **kw)
        return (inner, view.x0_prev.astype(x0_prev.dtype)), used

    def state(self, carry):
        return self.solver.state(carry[0])

    def with_state(self, carry, x):
        return self.solver.with_state(carry[0], x), carry[1]


def _restart(solver, den, carry, x):
    """The carry after a jump back to ``x``: the solver restarted (a multistep history does not
    belong to the new state); a self-conditioning estimate is kept."""
    if isinstance(solver, _SelfConditioned):
        return solver.restart(den, carry, x)
    return solver.init(den, x)


def _step(solver, den, carry, t, t_next, key, last):
    """``solver.step`` with ``last = (is_last, steps_left)``; ``steps_left`` only where the solver
    takes it (``uses_steps_left``)."""
    is_last, left = last
    if solver.uses_steps_left:
        return solver.step(den, carry, t, t_next, key, is_last, steps_left=left)
    return solver.step(den, carry, t, t_next, key, is_last)


def _plain(solver, den):
    def advance(carry, t, t_next, key, last):
        return _step(solver, den, carry, t, t_next, key, last)
    return advance


def _hooked(solver, den, project, repeat, jump_back):
    """One grid step as ``repeat`` passes of (step, project), jumping back between passes."""
    def step_and_project(carry, t, t_next, key, last):
        k_step, k_project = jax.random.split(key)
        carry, used = _step(solver, den, carry, t, t_next, k_step, last)
        return solver.with_state(carry, project(solver.state(carry), t_next, k_project)), used

    def advance(carry, t, t_next, key, last):
        keys = jax.random.split(key, repeat)
        used = jnp.zeros((), jnp.int32)
        if repeat > 1:
            def pass_and_jump_back(state, k):
                carry, used = state
                k_pass, k_back = jax.random.split(k)
                carry, u = step_and_project(carry, t, t_next, k_pass, last)
                x_back = jump_back(solver.state(carry), t_next, t, k_back)
                return (_restart(solver, den, carry, x_back), used + u), None

            (carry, used), _ = jax.lax.scan(pass_and_jump_back, (carry, used), keys[:-1])
        carry, u = step_and_project(carry, t, t_next, keys[-1], last)
        return carry, used + u
    return advance
