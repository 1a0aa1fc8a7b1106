"""Euler-Maruyama on the reverse-time SDE (Song et al. 2021), integrating from t down to t_next:

    dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dW_bar,   score = -eps / sigma.

The SDE is singular where alpha = 0 (f = -inf: rectified flow at t = 1); a step that starts
there is taken as the exact Gaussian-posterior (ancestral) step instead. The default grid is
uniform in log-SNR, which keeps f dt small near both ends.

Stability. Near a sharp data point (a mixture component of small variance; at the limit a point
mass, where eps = (x - alpha x0) / sigma) a step multiplies the distance to the point by
``1 - k |dt|``, with ``k = f + g^2 / sigma^2 = 2 d log sigma / dt - d log alpha / dt`` at the step's
start, where the exact SDE shrinks it. A step with ``k |dt| > 2`` (``stiffness``) enlarges it,
and a run of them makes the sample blow up: VE with sigma 0.002..80 has k = 2 log(80 / 0.002) =
21.2 at every t, so equal steps in t multiply the distance by |1 - 21.2 / steps| each, and
``steps`` <= 10 returns values of 10^3..10^6 for unit-scale data. A single large ``k |dt|``
that the next steps undo does no such harm (from t = 1 on the cosine schedule, where alpha =
4.5e-5, the first of 1000 equal steps in t has k |dt| = 35 and the next ones shrink the distance
again: the samples are right), so the criterion is the whole run's: ``growth`` is, for every
step, the product of ``|1 - k |dt||`` over it and the steps after it, the factor by which a
deviation there reaches t_min. ``sample`` refuses a grid on which it exceeds 1 (the deviation
grows instead of shrinking) with a ValueError naming ``steps``, the schedule, the step it starts
from and a number of steps at which the grid is stable, wherever the grid is known at trace time
(also under ``jit`` when ``steps``, ``t_min`` and ``t_max`` are Python numbers). A grid that
depends on traced values (a traced ``ts``, ``t_min`` or schedule parameter) is not checked: an
unstable one returns a sample that blows up silently.
"""
import jax
import jax.numpy as jnp
import numpy as np

from diffjax.solvers._base import Solver, nfe, register
from diffjax.solvers.ddim import ddim_update

__all__ = ["EulerMaruyama", "stiffness", "growth"]


def __dir__():
    return sorted(__all__)


@jax.jit
def _coefficients(schedule, t, t_next):
    k = schedule.drift(t) + schedule.diffusion2(t) / schedule.sigma(t) ** 2
    return k, (schedule.alpha(t) > 0) & (schedule.sigma(t_next) > 0)


def stiffness(schedule, ts) -> np.ndarray:
    """``k(t_i) |t_{i+1} - t_i|`` for every step of the grid ``ts`` (a concrete array), with ``k =
    f + g^2 / sigma^2`` at the step's start (module docstring); 0 for a step the solver does not
    take explicitly (from alpha = 0, the ancestral step) or that ends at sigma = 0 (``sample``'s
    final denoising step)."""
    ts = np.asarray(ts)
    with jax.ensure_compile_time_eval():
        k, taken = _coefficients(schedule, ts[:-1], ts[1:])
    k, taken = np.asarray(k, np.float64), np.asarray(taken)
    dt = np.abs(np.diff(ts.astype(np.float64)))
    return np.where(taken, np.where(np.isfinite(k), k, np.inf) * dt, 0.0)


def growth(schedule, ts) -> np.ndarray:
    """For every step i of ``ts``: the product of ``|1 - k |dt||`` (``stiffness``) over steps i,
    i + 1, ..., the last, i.e. the factor by which these explicit steps multiply a deviation from
    sharp data made before step i (the exact SDE shrinks it; a step not taken explicitly counts
    as 1)."""
    a = np.abs(1.0 - stiffness(schedule, ts))
    return np.cumprod(a[::-1])[::-1]


def _stable_steps(schedule, grid, ts) -> int:
    """A number of steps of the named ``grid`` from ts[0] to ts[-1] with ``growth`` <= 1 at every
    step (the fewest up to 10%, searched by doubling and bisection), or -1 above 2^22."""
    from diffjax.grids import named

    def ok(n):
        with jax.ensure_compile_time_eval():
            g = np.asarray(named.get(grid, schedule, n, float(ts[0]), float(ts[-1]), ts.dtype))
        return growth(schedule, g).max() <= 1.0

    lo, hi = ts.shape[0] - 1, 2 * (ts.shape[0] - 1)
    while not ok(hi):
        lo, hi = hi, 2 * hi
        if hi > 2**22:
            return -1
    while hi - lo > max(1, hi // 10):  # ok(hi); lo is not known to be ok
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


@register
class EulerMaruyama(Solver):
    """Euler-Maruyama on the reverse-time SDE (see the module docstring): stochastic, one model
    call per step. No options. Not usable by ``encode``. Refuses a concrete grid on which its
    explicit steps are unstable (module docstring)."""

    name = "euler_maruyama"
    default_grid = "uniform_logsnr"
    default_steps = 1000

    @property
    def deterministic(self) -> bool:
        return False

    def check_grid(self, schedule, ts, grid=None) -> None:
        """Refuses a grid on which ``growth`` exceeds 1 at some step (module docstring)."""
        if ts.shape[0] < 2 or ts[0] <= ts[-1]:
            return
        grow = growth(schedule, ts)
        if grow.max() <= 1.0:
            return
        n = ts.shape[0] - 1
        i = n - 1 - int(np.argmax(grow[::-1]))  # the last step from which the growth is largest
        stiff = stiffness(schedule, ts)
        named = grid or self.default_grid
        need = _stable_steps(schedule, named, ts)
        need = f"steps={need} (or more)" if need > 0 else "far more steps"
        given = f"steps={n} on grid {grid!r}" if grid else f"the given ts ({n} steps)"
        raise ValueError(
            f"euler_maruyama is unstable with {given} on {schedule}: from step index {i} (t={ts[i]:.6g} -> "
            f"t={ts[i + 1]:.6g}) to the end its explicit steps multiply a deviation from sharp data by "
            f"{grow[i]:.3g}, where the exact SDE shrinks it (a step enlarges it where (f + g^2/sigma^2) |dt| > 2; "
            f"here up to {stiff[i:].max():.3g}), so the sample blows up. Use {need} on grid {named!r}, or a "
            f"deterministic solver (e.g. 'dpmpp_2m') for few steps")

    def step(self, den, x, t, t_next, key, is_last):
        x0, eps = den(x, t)
        tt = jnp.asarray(t, den.time_dtype(x))
        sch = den.schedule
        a, s = sch.alpha(tt), sch.sigma(tt)
        f, g2 = sch.drift(tt), sch.diffusion2(tt)
        dt = jnp.asarray(t_next, tt.dtype) - tt  # negative when sampling
        regular = a > 0
        f, g2 = jnp.where(regular, f, 0.0), jnp.where(regular, g2, 0.0)
        z = jax.random.normal(key, x.shape, x.dtype)
        drift = f * x + g2 / s * eps  # f x - g^2 score
        x_em = x + drift * dt + jnp.sqrt(g2 * jnp.abs(dt)) * z
        x_next = jnp.where(regular, x_em, ddim_update(den, x, x0, eps, t, t_next, key, 1.0))
        return x_next.astype(x.dtype), nfe(1)
