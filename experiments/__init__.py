"""Launchers (absl + ml_collections) for training, sampling and evaluating diffjax models.

    python -m experiments.train [--config=experiments/configs/NAME.py] [--workdir=DIR]
    python -m experiments.sample --workdir=DIR --num_samples=N --output=FILE.npy
    python -m experiments.evaluate --workdir=DIR

Configs live in ``experiments/configs`` (``toy``, ``digits``, ``digits_cond``,
``digits_joint``, ``mnist``, ``cifar10``, ``cifar10_cond``, ``text_small``, ``text8``, and for
accelerators ``dit_b2``, ``dit_l2``, ``dit_xl2``, ``text_gpt2_small``, ``text_gpt2_medium``); ``config.task`` names
the task that builds, samples and evaluates it (:mod:`experiments.tasks`). Shared pieces:
:mod:`experiments.common` (config files, the experiment wiring, batching),
:mod:`experiments.metrics`, :mod:`experiments.text_metrics` and :mod:`experiments.plots`.
"""
