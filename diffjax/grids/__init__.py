"""Time discretisations for sampling: descending grids ``[t_max, ..., t_min]`` of length steps + 1.

* ``uniform_t``, ``uniform_logsnr``, ``karras``, ``uniform_angle``: closed-form grids by name (``named``); a
  sampler builds them from ``grid=`` and ``steps=``; ``NAMES`` lists them, ``GRIDS`` is their
  registry, ``get(name, schedule, steps, ...)`` builds one and ``check_ts`` checks a grid.
* ``optimize``: a grid fitted to a model and a solver (``optimize``), passed to a sampler as
  ``ts=``.
"""
from diffjax.grids.named import GRIDS, NAMES, check_ts, get, karras, uniform_angle, uniform_logsnr, uniform_t
from diffjax.grids.optimize import optimize

__all__ = ["uniform_t", "uniform_logsnr", "karras", "uniform_angle", "get", "NAMES", "GRIDS", "check_ts", "optimize"]


def __dir__():
    return sorted(__all__)
