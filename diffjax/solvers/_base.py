"""What every solver shares: the denoiser view of a model, the solver interface, the solver table.

A solver sees the model only through ``Denoiser``: ``den(x, t) -> (x0, eps)``, the data and
noise estimates implied by whatever kind the model predicts. Solvers never import Flax. A
solver that calls the model inside a loop or a branch of its own step uses ``den.cond`` /
``den.scan`` (``lax.cond`` / ``lax.scan`` for a plain ``Denoiser``), so that a
``SelfConditionedDenoiser`` can carry its latest data estimate through them.

A solver is an immutable pytree (``equinox.Module``) built from the call's options, e.g.
``DDIM(eta=0.3)``. Numeric options (``eta``, ``snr``, ``rtol``, ``atol``) are pytree leaves and
may be traced: changing them does not recompile. Options that set the shape of the computation
(a loop length, a method, an order) are static fields, checked when the solver is built.
``deterministic`` says whether the instance uses its key; ``encode`` accepts only deterministic
ones. The driver (``driver.py``) owns the loop; a solver only says how to take one step.

Notation (also used in the solver files): ``a, s`` are alpha(t), sigma(t); ``lam`` is *half*
the log-SNR, ``log(a / s)``; a step goes from ``t`` to ``t_next`` and ``h = lam_next - lam``.
The first-order exponential-integrator step (DDIM) is ``x_next = a_next x0 + s_next eps``; it
stays finite where alpha = 0 or logsnr is infinite, so every solver falls back to it on such a
*singular* step (rectified flow at t = 1), where its higher-order terms are undefined.
"""
from __future__ import annotations

import dataclasses
import operator
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffjax import _model_call
from diffjax.parameterization import check_kind, to_x0_eps
from diffjax.registry import Registry

__all__ = ["Denoiser", "SelfConditionedDenoiser", "Solver", "SOLVERS", "register", "concrete_float", "check_float_option", "int_option",
           "call_model", "T_CONVENTION", "first_order", "nfe"]

T_CONVENTION = ("t has shape (B,), one time per example of x (shape (B, ...)); broadcast it against x "
                "with t[:, None] (or t.reshape((-1,) + (1,) * (x.ndim - 1)))")
SELF_COND_CONVENTION = (T_CONVENTION + "; with self_condition=True the model is called as model_fn(x, t, "
                        "x0_prev), x0_prev of the shape and dtype of x (its previous data estimate, "
                        "zeros at the first call)")

SOLVERS: Registry = Registry("solver")


def register(cls):
    """Class decorator: adds a solver class to ``SOLVERS`` under its ``name``."""
    SOLVERS.add(cls.name, cls)
    return cls


def concrete_float(v):
    """A Python float if v is known at trace time, else None."""
    try:
        return float(np.asarray(v))
    except (jax.errors.TracerArrayConversionError, TypeError, ValueError):  # traced, not a number
        return None


def check_float_option(solver: str, name: str, value, *, low: float, high: float = float("inf"),
                       low_open: bool = False) -> None:
    """Checks a numeric (traceable) solver option where its value is known at trace time.

    Args:
      solver: the solver's name (for the message).
      name: the option's name.
      value: the option's value; a traced value (or a non-scalar) is not checked.
      low, high: the allowed range, ``low <= value <= high`` (``low < value`` with ``low_open``).

    Raises:
      ValueError: naming the option, when the value is concrete and NaN, infinite or out of range.
    """
    v = concrete_float(value)
    if v is None:
        return
    lo = "(" if low_open else "["
    hi = "]" if np.isfinite(high) else ")"
    allowed = f"a finite number in {lo}{low:g}, {high:g}{hi}"
    if not np.isfinite(v) or v < low or (low_open and v == low) or v > high:
        raise ValueError(f"{name} must be {allowed} (solver {solver!r}), got {v!r}")


def int_option(name: str, minimum: int) -> Callable:
    """A converter for a static integer option: a Python (or numpy) int >= minimum, else a
    ValueError naming the option. It cannot be traced: it sets the shape of the computation."""
    def convert(v):
        try:
            if isinstance(v, bool):
                raise TypeError
            out = operator.index(v)
        except TypeError:  # not an int (a traced value raises a TypeError too)
            raise ValueError(f"{name} must be an int >= {minimum} (static: it sets a loop length, so "
                             f"it cannot be traced), got {v!r}") from None
        if out < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {out}")
        return out
    return convert


def call_model(model_fn: Callable, x, t, name: str = "model_fn", convention: str = T_CONVENTION):
    """``model_fn(x, t)``, checked where it is traced (no extra trace, no FLOPs): it must return
    one floating-point array of the shape of ``x`` (``diffjax._model_call.call_model`` with the
    given ``convention``, by default ``T_CONVENTION``).

    Raises:
      ValueError: the call fails with a plain ValueError or IndexError (chained from it), or
        returns another shape; the message names ``name``, the shapes it was given and the
        ``t`` convention.
      TypeError: the call fails with a plain TypeError (chained), or returns something that is
        not a floating-point array. Other exceptions (e.g. jax's tracer errors) keep their type
        and get the call described in a note.
    """
    return _model_call.call_model(model_fn, x, t, out_shapes=[x.shape], returns="an array of the shape of x",
                                  convention=convention, name=name)


class Denoiser:
    """``model_fn(x_t, t) -> prediction`` seen as ``(x, t) -> (x0, eps)``, with schedule values.

    ``t`` is a scalar time; the model receives it broadcast to shape (B,), in float32 (or
    float64 with x64), never rounded to the dtype of ``x`` or of the model's computation. Every
    call goes through ``call_model``: a model that fails or returns the wrong shape or dtype
    raises an error naming ``model_fn`` and the ``t`` convention when it is first traced.
    """

    def __init__(self, model_fn: Callable, schedule, prediction: str):
        self.model_fn = model_fn
        self.schedule = schedule
        self.prediction = check_kind(prediction)

    def time_dtype(self, x):
        return jnp.promote_types(x.dtype, jnp.float32)

    def __call__(self, x, t):
        tb = jnp.broadcast_to(jnp.asarray(t, self.time_dtype(x)), x.shape[:1])
        out = call_model(self.model_fn, x, tb).astype(x.dtype)
        x0, eps = to_x0_eps(out, x, tb, self.schedule, self.prediction)
        return x0.astype(x.dtype), eps.astype(x.dtype)

    # schedule values at a scalar time, in the time dtype
    def coeffs(self, t, x):
        t = jnp.asarray(t, self.time_dtype(x))
        sch = self.schedule
        return sch.alpha(t), sch.sigma(t), 0.5 * sch.logsnr(t)

    def flow(self, x, t):
        """The probability-flow ODE velocity dx/dt = alpha' x0 + sigma' eps."""
        x0, eps = self(x, t)
        _, _, da, ds = self.schedule.coefficients(jnp.asarray(t, self.time_dtype(x)))
        return (da * x0 + ds * eps).astype(x.dtype)

    # the control flow a solver's step may put model calls in (a self-conditioned view threads
    # its carried estimate through them)
    def cond(self, pred, true_fn, false_fn, operand):
        """``jax.lax.cond(pred, true_fn, false_fn, operand)``, for model calls inside a branch."""
        return jax.lax.cond(pred, true_fn, false_fn, operand)

    def scan(self, f, init, xs):
        """``jax.lax.scan(f, init, xs)``, for model calls inside a loop of a step."""
        return jax.lax.scan(f, init, xs)


class SelfConditionedDenoiser(Denoiser):
    """A self-conditioned model ``model_fn(x_t, t, x0_prev) -> prediction`` seen as a
    ``Denoiser``: every call feeds the model ``x0_prev``, the data estimate x0 of the call before
    (zeros, of the shape and dtype of x, at the first call), and then holds its own x0 estimate
    as the new ``x0_prev`` (self-conditioning, Chen et al. 2022).

    The estimate lives in the Python object while a step is traced; whatever loops carries it
    through its own carry: the driver's ``lax.scan`` over the grid (``driver.run_steps``) and,
    inside a solver's step, ``cond`` / ``scan`` (heun's correction, pc's corrector). Build one
    per loop iteration with ``at(x0_prev)``. After ``driver.run_steps`` the object given to it
    holds the estimate of the last call of the run (for ``sample``'s final denoising call).
    """

    def __init__(self, model_fn: Callable, schedule, prediction: str, x0_prev=None):
        super().__init__(model_fn, schedule, prediction)
        self.x0_prev = x0_prev

    def at(self, x0_prev) -> "SelfConditionedDenoiser":
        """A fresh view of the same model holding ``x0_prev``."""
        return SelfConditionedDenoiser(self.model_fn, self.schedule, self.prediction, x0_prev)

    def initial(self, x):
        """The estimate the next call feeds: ``x0_prev``, or zeros like ``x`` if none yet."""
        return jnp.zeros_like(x) if self.x0_prev is None else self.x0_prev.astype(x.dtype)

    def __call__(self, x, t):
        tb = jnp.broadcast_to(jnp.asarray(t, self.time_dtype(x)), x.shape[:1])
        prev = self.initial(x)
        out = call_model(lambda x_, t_: self.model_fn(x_, t_, prev), x, tb,
                         convention=SELF_COND_CONVENTION).astype(x.dtype)
        x0, eps = to_x0_eps(out, x, tb, self.schedule, self.prediction)
        x0, eps = x0.astype(x.dtype), eps.astype(x.dtype)
        self.x0_prev = x0
        return x0, eps

    def cond(self, pred, true_fn, false_fn, operand):
        """``lax.cond`` with the carried estimate: both branches start from the current one and
        the taken branch's last estimate is held afterwards."""
        start = self.x0_prev

        def branch(fn):
            def run(op):
                self.x0_prev = start
                out = fn(op)
                return out, self.x0_prev
            return run

        if start is None:
            raise ValueError("SelfConditionedDenoiser.cond needs a current estimate (call the model "
                             "first, or build the view with at(x0_prev))")
        out, self.x0_prev = jax.lax.cond(pred, branch(true_fn), branch(false_fn), operand)
        return out

    def scan(self, f, init, xs):
        """``lax.scan`` with the carried estimate threaded through the loop's carry."""
        if self.x0_prev is None:
            raise ValueError("SelfConditionedDenoiser.scan needs a current estimate (call the model "
                             "first, or build the view with at(x0_prev))")

        def body(carry, x):
            c, self.x0_prev = carry
            c, y = f(c, x)
            return (c, self.x0_prev), y

        (out, self.x0_prev), ys = jax.lax.scan(body, (init, self.x0_prev), xs)
        return out, ys


class Solver(eqx.Module):
    """A solver: its options are the dataclass fields (with their defaults).

    A fixed-grid solver (``fixed_grid = True``) advances one grid interval per ``step``;
    ``init`` builds the loop carry from the sample x, ``state`` reads x back, ``with_state``
    replaces it (the driver's projection hook). An adaptive solver (``fixed_grid = False``)
    has no single step and integrates the whole interval in ``solve(den, x, ts)``.

    Class attributes: ``name`` (its key in ``SOLVERS``); ``default_grid`` (a name in
    ``diffjax.grids``); ``default_grid_options`` (the options of that grid when it is the
    default, e.g. ``{"sigma_data": 0.5}``; a grid named in the call gets its own defaults);
    ``default_steps``; ``fixed_grid``; ``uses_steps_left`` (the driver then passes
    ``steps_left`` to ``step``).
    """

    name: ClassVar[str] = ""
    default_grid: ClassVar[str] = "uniform_logsnr"
    default_grid_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    uses_steps_left: ClassVar[bool] = False
    default_steps: ClassVar[int] = 100
    fixed_grid: ClassVar[bool] = True

    @classmethod
    def option_defaults(cls) -> dict:
        """The options a user may pass, with their defaults."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.init}

    @property
    def deterministic(self) -> bool:
        """True if this instance never uses its key (so it can be run backwards by ``encode``).
        An option that decides it and is traced counts as stochastic."""
        raise NotImplementedError

    def init(self, den: Denoiser, x):
        return x

    def step(self, den: Denoiser, carry, t, t_next, key, is_last):
        """One grid interval from t to t_next: returns (carry, model calls used). ``is_last``
        says whether it is the final interval; a solver with ``uses_steps_left`` also takes
        ``steps_left=``, the number of intervals after this one (an int32 scalar; a caller that
        does not know it may leave it out, and the solver then only knows ``is_last``)."""
        raise NotImplementedError

    def state(self, carry):
        """The sample x held in the loop carry."""
        return carry

    def with_state(self, carry, x):
        """The carry with its sample replaced by x."""
        return x

    def solve(self, den: Denoiser, x, ts):
        """Adaptive solvers only: integrates from ts[0] to ts[-1]; returns (x, nfe)."""
        raise NotImplementedError

    def check_grid(self, schedule, ts, grid=None) -> None:
        """Refuses (ValueError) a grid this solver cannot take on ``schedule``. ``ts`` is a concrete
        numpy array (the driver skips the check where the grid is traced); ``grid`` is the name
        it was built from, None for an explicit ``ts``. Every grid is accepted by default."""


def first_order(den, x0, eps, t_next, x):
    """DDIM / first-order exponential-integrator step: a(t_next) x0 + s(t_next) eps."""
    a_n, s_n, _ = den.coeffs(t_next, x)
    return (a_n * x0 + s_n * eps).astype(x.dtype)


def nfe(k):
    return jnp.asarray(k, jnp.int32)
