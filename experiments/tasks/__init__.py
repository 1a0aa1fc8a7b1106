"""Tasks: what the launchers train, sample and evaluate, one module per family.

``config.task`` names the task of a config:

* ``"gaussian"`` (`experiments.tasks.gaussian`): Gaussian diffusion and flows on 2-D points
  and images (``toy``, ``digits``, ``digits_cond``, ``mnist``, ``cifar10``, ...);
* ``"text"`` (`experiments.tasks.text`): masked or uniform discrete diffusion on characters
  (``text_small``, ``text8``);
* ``"joint"`` (`experiments.tasks.joint`): images and their class labels from one network, a
  Gaussian process on the image and a masked one on the label (``digits_joint``).

Each is a `Task` (``experiments.tasks.base``); adding one is a module with a subclass, an
entry in ``TASKS`` and its configs.
"""
from __future__ import annotations

from diffjax.data import text as _text_data
from experiments.tasks.base import Task
from experiments.tasks.gaussian import GaussianTask
from experiments.tasks.joint import JointTask
from experiments.tasks.text import TextTask

__all__ = ["Task", "GaussianTask", "TextTask", "JointTask", "TASKS", "get", "all_tasks"]

TASKS = {"gaussian": GaussianTask(), "text": TextTask(), "joint": JointTask()}


def all_tasks() -> tuple:
    return tuple(TASKS.values())


def get(config) -> Task:
    """The task named by ``config.task``."""
    name = config.get("task", None)
    if name is None:
        # A run written before configs named their task (its config.json has no "task").
        name = "text" if config.data.name in _text_data.NAMES else "gaussian"
    if name not in TASKS:
        raise ValueError(f"config.task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]
