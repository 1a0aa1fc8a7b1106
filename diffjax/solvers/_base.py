"""What every solver shares: the denoiser view of a model, the step loop, and the registry.

A solver sees the model only through ``Denoiser``: ``den(x, t) -> (x0, eps)``, the data and
noise estimates implied by whatever kind the model predicts. Solvers never import Flax.

Notation (also used in the solver files): ``a, s`` are alpha(t), sigma(t); ``lam`` is *half*
the log-SNR, ``log(a / s)``; a step goes from ``t`` to ``t_next`` and ``h = lam_next - lam``.
The first-order exponential-integrator step (DDIM) is ``x_next = a_next x0 + s_next eps``; it
stays finite where alpha = 0 or logsnr is infinite, so every solver falls back to it on such a
*singular* step (rectified flow at t = 1), where its higher-order terms are undefined.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from diffjax.parameterization import check_kind, to_x0_eps

__all__ = ["Denoiser", "Solver", "register", "get", "names", "run_steps"]


class Denoiser:
    """``model_fn(x_t, t) -> prediction`` seen as ``(x, t) -> (x0, eps)``, with schedule values.

    ``t`` is a scalar time; the model receives it broadcast to shape (B,), in float32 (or
    float64 with x64), never rounded to the dtype of ``x`` or of the model's computation.
    """

    def __init__(self, model_fn: Callable, schedule, prediction: str):
        self.model_fn = model_fn
        self.schedule = schedule
        self.prediction = check_kind(prediction)

    def time_dtype(self, x):
        return jnp.promote_types(x.dtype, jnp.float32)

    def __call__(self, x, t):
        tb = jnp.broadcast_to(jnp.asarray(t, self.time_dtype(x)), x.shape[:1])
        out = self.model_fn(x, tb)
        if not hasattr(out, "shape") or out.shape != x.shape:
            raise ValueError(
                f"model_fn must return an array of the shape of x {x.shape} (a {self.prediction!r} prediction), "
                f"got {getattr(out, 'shape', type(out).__name__)}")
        out = out.astype(x.dtype)
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


class Solver:
    """A fixed-grid solver: ``init`` builds the loop carry, ``step`` advances one grid interval.

    Class attributes: ``name``; ``stochastic`` (uses its key); ``default_grid`` (a name in
    ``diffjax.grids``); ``options`` (keyword options with their defaults; values may be traced).
    """

    name: str = ""
    stochastic: bool = False
    default_grid: str = "uniform_logsnr"
    options: dict = {}

    def init(self, den: Denoiser, x, opts):
        return x

    def step(self, den: Denoiser, carry, t, t_next, key, is_last, opts):
        raise NotImplementedError

    def state(self, carry):
        """The sample x held in the loop carry."""
        return carry

    def with_state(self, carry, x):
        """The carry with its sample replaced by x (inpainting projects the state between steps)."""
        return x

    def solve(self, den, x, ts, key, opts):
        """Runs the steps over the grid ``ts`` in one ``lax.scan``; returns (x, nfe)."""
        return run_steps(self, den, x, ts, key, opts)


def run_steps(solver: Solver, den: Denoiser, x, ts, key, opts):
    n = ts.shape[0] - 1
    keys = jax.random.split(key, n)
    is_last = jnp.arange(n) == n - 1

    def body(state, inp):
        carry, nfe = state
        t, t_next, k, last = inp
        carry, used = solver.step(den, carry, t, t_next, k, last, opts)
        return (carry, nfe + used), None

    init = (solver.init(den, x, opts), jnp.zeros((), jnp.int32))
    (carry, nfe), _ = jax.lax.scan(body, init, (ts[:-1], ts[1:], keys, is_last))
    return solver.state(carry), nfe


_REGISTRY: dict[str, Solver] = {}


def register(cls):
    _REGISTRY[cls.name] = cls()
    return cls


def names():
    return tuple(_REGISTRY)


def get(name: str) -> Solver:
    if name not in _REGISTRY:
        raise ValueError(f"solver must be one of {sorted(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def first_order(den, x0, eps, t_next, x):
    """DDIM / first-order exponential-integrator step: a(t_next) x0 + s(t_next) eps."""
    a_n, s_n, _ = den.coeffs(t_next, x)
    return (a_n * x0 + s_n * eps).astype(x.dtype)


def nfe(k):
    return jnp.asarray(k, jnp.int32)
