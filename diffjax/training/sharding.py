"""Device meshes, shardings and multi-host input feeding.

One mesh axis, ``data``: the global batch is split along its leading dimension over
``data``; parameters (and everything else in the train state) are replicated, or, with
FSDP, large arrays are split along ``data`` on their largest divisible dimension. The same
code runs on one CPU, 8 simulated CPU devices, a GPU node or a multi-host TPU pod: jit over
a `jax.sharding.Mesh` with `NamedSharding`, never `pmap`.

Multi-host: call `maybe_initialize_distributed(True)` first; each process then reads only
its own share of the data (``global_batch // jax.process_count()`` examples) and
`shard_batch` assembles the global array with `jax.make_array_from_process_local_data`.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

__all__ = [
    "DATA_AXIS",
    "make_mesh",
    "replicated",
    "batch_sharding",
    "fsdp_spec",
    "state_shardings",
    "with_shardings",
    "shard_batch",
    "local_batch_size",
    "maybe_initialize_distributed",
]


def make_mesh(num_devices: Optional[int] = None, *, axis_name: str = DATA_AXIS,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh named ``axis_name`` over the first ``num_devices`` devices (all by default).

    Axes are `AxisType.Auto` (jax >= 0.7 defaults `jax.make_mesh` to Explicit axes, which
    would change the typing rules of every array in the train step).
    """
    devices = list(jax.devices() if devices is None else devices)
    if num_devices is None:
        num_devices = len(devices)
    if not isinstance(num_devices, (int, np.integer)) or not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"num_devices must be an int in [1, {len(devices)}] (the available devices), "
            f"got {num_devices!r}")
    return jax.make_mesh((int(num_devices),), (axis_name,), axis_types=(AxisType.Auto,),
                         devices=devices[:num_devices])


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 1, *, axis_name: str = DATA_AXIS) -> NamedSharding:
    """Leading dimension split over ``axis_name``; scalars replicated."""
    return NamedSharding(mesh, P(axis_name) if ndim >= 1 else P())


def fsdp_spec(shape: Sequence[int], num_shards: int, *, min_size: int,
              axis_name: str = DATA_AXIS) -> P:
    """PartitionSpec sharding ``shape`` on its largest dimension divisible by ``num_shards``.

    Arrays with fewer than ``min_size`` elements, or without a divisible dimension, are
    replicated (``P()``). Ties go to the earliest dimension.
    """
    size = int(np.prod(shape)) if len(shape) else 1
    if num_shards <= 1 or size < min_size:
        return P()
    best = None
    for i, d in enumerate(shape):
        if d % num_shards == 0 and d >= num_shards and (best is None or d > shape[best]):
            best = i
    if best is None:
        return P()
    return P(*([None] * best + [axis_name]))


def state_shardings(tree: Any, mesh: Mesh, *, fsdp: bool = False, fsdp_min_size: int = 2**18,
                    axis_name: str = DATA_AXIS) -> Any:
    """A pytree of `NamedSharding` matching ``tree`` (arrays or `jax.ShapeDtypeStruct`).

    Replicated everywhere unless ``fsdp``: then every leaf with at least ``fsdp_min_size``
    elements is split along ``axis_name`` on its largest divisible dimension. The rule
    depends on the leaf's shape only, so parameters, EMA parameters and the optimizer's
    moment estimates of one parameter all get the same layout.
    """
    if fsdp_min_size < 0:
        raise ValueError(f"fsdp_min_size must be >= 0, got {fsdp_min_size!r}")
    n = mesh.shape[axis_name]

    def one(x):
        if not fsdp:
            return replicated(mesh)
        return NamedSharding(mesh, fsdp_spec(np.shape(x), n, min_size=fsdp_min_size,
                                             axis_name=axis_name))

    return jax.tree.map(one, tree)


def with_shardings(tree: Any, shardings: Any) -> Any:
    """`jax.ShapeDtypeStruct` leaves carrying ``shardings``: an abstract restore target."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)


def local_batch_size(global_batch_size: int) -> int:
    """Examples this process feeds per step (the global batch split evenly over processes)."""
    n = jax.process_count()
    if global_batch_size % n:
        raise ValueError(f"global_batch_size={global_batch_size} must be divisible by the "
                         f"number of processes ({n})")
    return global_batch_size // n


def shard_batch(batch: Any, mesh: Mesh, *, axis_name: str = DATA_AXIS) -> Any:
    """Assemble global arrays sharded on ``axis_name`` from this process's local batch.

    Each process passes only its own examples (leading dimension = local batch size); the
    global batch is their concatenation in process order. Leaves that already are
    `jax.Array`s with the right sharding pass through; 0-d leaves are replicated.
    """

    def one(x):
        x_ndim = np.ndim(x)
        sharding = batch_sharding(mesh, x_ndim, axis_name=axis_name)
        if isinstance(x, jax.Array) and getattr(x, "sharding", None) == sharding:
            return x
        x = np.asarray(x)
        if x_ndim == 0:
            return jax.device_put(x, sharding)
        global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
        if global_shape[0] % mesh.shape[axis_name]:
            raise ValueError(
                f"batch leading dimension {global_shape[0]} (global) must be divisible by the "
                f"'{axis_name}' mesh axis size {mesh.shape[axis_name]}")
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(one, batch)


def maybe_initialize_distributed(flag: bool, **kwargs) -> bool:
    """Call `jax.distributed.initialize(**kwargs)` when ``flag`` is true (multi-host jobs).

    On TPU pods and SLURM/Open MPI clusters the arguments are auto-detected; elsewhere pass
    ``coordinator_address``, ``num_processes`` and ``process_id``. Returns whether it ran.
    Must be called before any other JAX call touches the devices.
    """
    if not flag:
        return False
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())
    return True
