"""Training infrastructure, independent of what is trained.

* `state`: `TrainState` pytree (params, optimizer state, EMA, step, RNG, skip counter).
* `optim`: AdamW + warmup/cosine + clipping from a config; EMA with warmup.
* `sharding`: a ``data`` (x ``model``) mesh, NamedShardings (replicated / FSDP over ``data``,
  attention heads and MLP units over ``model`` from the parameters' logical axis names),
  multi-host batches.
* `step`: `make_train_step` -- one jit over the mesh, grad accumulation, non-finite skipping
  (backend workarounds from `diffjax.platform`, behind ``platform_tweaks``).
* `checkpoint`: Orbax `Checkpointer` -- async, keep-N, SIGTERM, resharding restores.
* `loop`: `train`, a thin loop with logging, TensorBoard and checkpoints.
* `aot`: compiling for TPU slices that are not attached (``from diffjax.training import
  aot``): the compiler's cost, memory and collectives of a step.
* `objectives`: `make_objective` (an NNX model + schedule + prediction + loss) and
  `make_discrete_objective` (+ a discrete process) -> the pure ``loss_fn(params, batch,
  key)`` of the train step and ``model_fn(params)`` for the samplers.
"""
from diffjax.training.checkpoint import (CheckpointMismatchError, Checkpointer, Restored,
                                         library_versions)
from diffjax.training.loop import TrainResult, train
from diffjax.training.objectives import (DiscreteObjective, Objective, make_discrete_objective,
                                         make_objective)
from diffjax.training.optim import ema_decay_at, ema_update, make_optimizer, make_schedule
from diffjax.training.sharding import (batch_sharding, local_batch_size, make_mesh,
                                       maybe_initialize_distributed, parse_mesh_shape,
                                       replicated, shard_batch, state_shardings,
                                       with_shardings)
from diffjax.training.state import TrainState, as_raw_key, create_train_state, split_model
from diffjax.training.step import TrainStep, make_train_step

__all__ = [
    "checkpoint", "loop", "objectives", "optim", "sharding", "state", "step",
    "CheckpointMismatchError", "Checkpointer", "Restored", "library_versions",
    "TrainResult", "train",
    "DiscreteObjective", "Objective", "make_discrete_objective", "make_objective",
    "ema_decay_at", "ema_update", "make_optimizer", "make_schedule",
    "batch_sharding", "local_batch_size", "make_mesh", "maybe_initialize_distributed",
    "parse_mesh_shape", "replicated", "shard_batch", "state_shardings", "with_shardings",
    "TrainState", "as_raw_key", "create_train_state", "split_model",
    "TrainStep", "make_train_step",
]


def __dir__():
    return sorted(__all__)
