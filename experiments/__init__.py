"""Launchers (absl + ml_collections) for training, sampling and evaluating diffjax models.

    python -m experiments.train [--config=experiments/configs/NAME.py] [--workdir=DIR]
    python -m experiments.sample --workdir=DIR --num_samples=N --output=FILE.npy
    python -m experiments.evaluate --workdir=DIR

Configs live in ``experiments/configs`` (``toy``, ``digits``, ``mnist``, ``cifar10``); shared
helpers in :mod:`experiments.common`, :mod:`experiments.metrics` and :mod:`experiments.plots`.
"""
