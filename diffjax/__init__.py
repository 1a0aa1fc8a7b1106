"""diffjax: diffusion models in JAX.

Time runs from t = 0 (data) to t = 1 (noise); x_t = alpha(t) x0 + sigma(t) eps.
The names exported here are the public API; ``README.md`` describes them and the
conventions, and every function documents its arguments in its docstring.
"""
from diffjax import discrete, editing, grids, guidance, likelihood, losses, schedules, solvers
from diffjax.gaussian import GaussianProcess, gaussian
from diffjax.parameterization import KINDS, add_noise, convert
from diffjax.solvers import encode, sample

__version__ = "0.1.0"

__all__ = ["schedules", "grids", "solvers", "likelihood", "losses", "guidance", "discrete", "editing", "add_noise", "convert", "KINDS",
           "sample", "encode", "gaussian", "GaussianProcess"]
