"""The interface every task implements; the launchers call nothing else.

A task is one family of experiments: what data it reads, which model and objective it
trains, how it samples and how it is evaluated. ``experiments.train``, ``experiments.sample``
and ``experiments.evaluate`` look the task up from ``config.task`` and call these methods in
order, so adding a task is one module (a subclass) plus its configs.
"""
from __future__ import annotations

from typing import Any

from experiments import common

__all__ = ["Task"]


class Task:
    """Base class: subclasses implement every method that raises `NotImplementedError`."""

    name: str = ""

    # ---------------------------------------------------------------- building
    def build_dataset(self, config, split: str):
        """A ``diffjax.data.Dataset`` for ``split`` (``"train"`` or ``"test"``)."""
        raise NotImplementedError

    def build_model(self, config, info):
        """The Flax NNX model for a dataset with ``info`` (``DatasetInfo``)."""
        raise NotImplementedError

    def build_objective(self, config, model) -> tuple[Any, Any]:
        """``(objective, params)``: the objective's ``loss_fn`` is what the train step runs."""
        raise NotImplementedError

    def experiment(self, config, workdir: str, *, mesh=None) -> common.Experiment:
        """The train-time wiring of this task for ``config`` (data, model, train step,
        checkpoints)."""
        return common.Experiment(self, config, workdir, mesh=mesh)

    def restore_params(self, config, workdir: str, *, ema: bool = True):
        """``(objective, params, info, step)`` of ``workdir``'s latest checkpoint."""
        return common.restore_params(self, config, workdir, ema=ema)

    # ---------------------------------------------------------------- the launchers
    def final_samples(self, exp: common.Experiment, params, *, seed: int) -> dict:
        """The end of ``experiments.train``: samples, a figure or text file in the workdir,
        and ``{"quality": {...}, "sample_seconds": s, ...}`` for the summary."""
        raise NotImplementedError

    def define_sample_flags(self, flag_values) -> None:
        """This task's own flags of ``experiments.sample`` (the shared ones are defined by
        the launcher)."""

    def sample_main(self, flag_values) -> None:
        """``experiments.sample`` for a run of this task: draw, write the output, print."""
        raise NotImplementedError

    def define_evaluate_flags(self, flag_values) -> None:
        """This task's own flags of ``experiments.evaluate``."""

    def evaluate(self, workdir: str, **overrides) -> dict:
        """Compute the metrics of ``workdir``'s latest checkpoint, write ``metrics.json``."""
        raise NotImplementedError

    def evaluate_main(self, flag_values) -> dict:
        """``experiments.evaluate`` for a run of this task: evaluate and print a headline."""
        raise NotImplementedError
