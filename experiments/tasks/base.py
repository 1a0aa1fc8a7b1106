"""The interface every task implements; the launchers call nothing else.

A task is one family of experiments: what data it reads, which model and objective it
trains, how it samples and how it is evaluated. ``experiments.train``, ``experiments.sample``
and ``experiments.evaluate`` look the task up from ``config.task`` and call these methods in
order, so adding a task is one module (a subclass) plus its configs.
"""
from __future__ import annotations

from typing import Any

from diffjax import data as ddata
from experiments import common

__all__ = ["Task"]


class Task:
    """Base class: subclasses implement every method that raises `NotImplementedError`."""

    name: str = ""

    # ---------------------------------------------------------------- building
    def data_options(self, config) -> dict:
        """The options of ``diffjax.data.get_dataset`` for ``config.data`` (besides its name
        and ``data_dir``)."""
        raise NotImplementedError

    def build_dataset(self, config, split: str):
        """A ``diffjax.data.Dataset`` for ``split`` (``"train"`` or ``"test"``)."""
        d = config.data
        return ddata.get_dataset(d.name, split, data_dir=common.opt(d.get("data_dir", "")),
                                 **self.data_options(config))

    def dataset_info(self, config):
        """The ``DatasetInfo`` of the config's training data from shapes alone, without
        reading the data (``bench/aot.py`` compiles configs whose data is elsewhere)."""
        return ddata.describe(config.data.name, "train", **self.data_options(config))

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

    def sample_fn(self, config, objective, info, batch_size: int):
        """``(fn, args)``: the config's sampler as one function for ahead-of-time
        compilation (``bench/aot.py``). ``fn(params, key, x_init, *rest)`` draws
        ``batch_size`` samples starting from ``x_init``; ``args = (x_init, *rest)`` are example
        arrays of those inputs, each with a leading batch axis (so they can be split over the
        ``data`` mesh axis)."""
        raise NotImplementedError

    def sample_nfe(self, config, objective, info) -> int:
        """Model calls of one draw of the config's sampler (a guided call counts once), for
        counting a sampler's FLOPs as calls x one model call."""
        raise NotImplementedError

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
