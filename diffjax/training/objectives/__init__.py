"""Objectives: a Flax NNX model plus what it is trained for, turned into the two pure
functions the rest of diffjax consumes -- ``loss_fn(params, batch, key)`` for the train step
and ``model_fn(params)`` for the samplers.

* `network`: the part every objective shares (the model split once into training and
  inference variants; the raw forward pass).
* `gaussian`: `make_objective` -- schedule, prediction kind and loss (denoising, flow
  matching, VDM ELBO), class conditioning with condition dropout.
* `discrete`: `make_discrete_objective` -- a masked or uniform discrete process and its bound.
* `joint`: `make_joint_objective` -- an image and its class label with one network, for a
  product process (``diffjax.joint``: Gaussian on the image, masked on the label).
* `few_step`: `make_meanflow_objective`, `make_consistency_objective`,
  `make_progressive_objective` -- few-step generators with their own samplers.

``LOSSES``, ``DISCRETE_LOSSES``, ``JOINT_LABEL_LOSSES`` and ``FEW_STEP_SAMPLERS`` list the names the
factories accept.
"""
from diffjax.training.objectives.discrete import (DISCRETE_LOSSES, DiscreteObjective,
                                                  make_discrete_objective)
from diffjax.training.objectives.few_step import (FEW_STEP_SAMPLERS, ConsistencyObjective,
                                                  FewStepObjective, MeanFlowObjective,
                                                  ProgressiveObjective,
                                                  make_consistency_objective,
                                                  make_meanflow_objective,
                                                  make_progressive_objective)
from diffjax.training.objectives.gaussian import LOSSES, Objective, make_objective
from diffjax.training.objectives.joint import JOINT_LABEL_LOSSES, JointObjective, make_joint_objective
from diffjax.training.objectives.network import Network

__all__ = ["LOSSES", "Objective", "make_objective", "DISCRETE_LOSSES", "DiscreteObjective",
           "make_discrete_objective", "Network", "FEW_STEP_SAMPLERS", "FewStepObjective",
           "MeanFlowObjective", "ConsistencyObjective", "ProgressiveObjective",
           "make_meanflow_objective", "make_consistency_objective", "make_progressive_objective",
           "JOINT_LABEL_LOSSES", "JointObjective", "make_joint_objective"]


def __dir__():
    return sorted(__all__)
