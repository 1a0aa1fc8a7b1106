"""diffjax: diffusion models in JAX.

Time runs from t = 0 (data) to t = 1 (noise); x_t = alpha(t) x0 + sigma(t) eps.
The names exported here are the public API; ``README.md`` describes them and the
conventions, and every function documents its arguments in its docstring. ``KINDS`` lists the
prediction kinds a model may output (``"x0", "eps", "v", "score", "flow"``).

``import diffjax`` loads jax, equinox and numpy only: diffrax (``rk45``,
``likelihood.ode_nll``) and optax (``grids.optimize``) are imported when those run, and
``diffjax.models``, ``diffjax.training`` and ``diffjax.data`` (the ``train`` and ``data``
extras) are imported explicitly.
"""
from diffjax import discrete, editing, grids, guidance, joint, likelihood, losses, schedules, solvers
from diffjax.gaussian import GaussianProcess, gaussian
from diffjax.parameterization import KINDS, add_noise, convert
from diffjax.solvers import encode, sample

__version__ = "0.1.0"

__all__ = ["schedules", "grids", "solvers", "likelihood", "losses", "guidance", "discrete", "joint", "editing", "add_noise", "convert", "KINDS",
           "sample", "encode", "gaussian", "GaussianProcess"]


def __dir__():
    return sorted(__all__)
