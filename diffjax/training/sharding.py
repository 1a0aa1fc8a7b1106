"""Device meshes, shardings and multi-host input feeding.

Two mesh axes:

* ``data``: the global batch is split along its leading dimension over ``data``; the train
  state is replicated over it, or, with FSDP, arrays of at least ``fsdp_min_size`` elements
  are split along ``data`` on their largest divisible dimension (gathered inside the step).
* ``model`` (optional, size 1 when absent): tensor parallelism for Transformers. Models
  name the axes of their parameters (``logical_axes`` metadata, e.g. ``("embed", "mlp")``
  on an MLP's first kernel, see ``diffjax.models.layers.axes``) and :data:`LOGICAL_RULES`
  maps names to mesh axes: attention heads and MLP hidden units are split over ``model``
  (Megatron-style column/row parallelism; XLA inserts the all-reduces). Parameters without
  names are replicated over ``model``.

Parameters, EMA parameters and the optimizer's moments of one parameter carry the same
metadata and shape, so they get the same layout. The same code runs on one CPU, 8 simulated
CPU devices, a GPU node or a multi-host TPU pod: jit over a `jax.sharding.Mesh` with
`NamedSharding`, never `pmap`. ``make_mesh(shape="data:4,model:2")`` builds the 2-D mesh.

Multi-host: call `maybe_initialize_distributed(True)` first; each process then reads only
its own share of the data (``global_batch // jax.process_count()`` examples) and
`shard_batch` assembles the global array with `jax.make_array_from_process_local_data`.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
"""The mesh axis over which batches (and FSDP parameters) are split."""
MODEL_AXIS = "model"
"""The mesh axis over which attention heads and MLP units are split (tensor parallelism)."""
MESH_AXES = (DATA_AXIS, MODEL_AXIS)
LOGICAL_AXES = "logical_axes"  # the parameter metadata naming each dimension
LOGICAL_RULES: Mapping[str, str] = {"heads": MODEL_AXIS, "mlp": MODEL_AXIS}
"""Logical axis name -> mesh axis. Names not listed (``"embed"``, ``"head_dim"``, ...) are
not split by name (FSDP may still split them over ``data``)."""

__all__ = [
    "DATA_AXIS",
    "MODEL_AXIS",
    "LOGICAL_RULES",
    "parse_mesh_shape",
    "make_mesh",
    "replicated",
    "batch_sharding",
    "fsdp_spec",
    "param_spec",
    "state_shardings",
    "with_shardings",
    "shard_batch",
    "local_batch_size",
    "maybe_initialize_distributed",
]


def __dir__():
    return sorted(__all__)


def parse_mesh_shape(shape: Union[str, Mapping[str, int]]) -> dict[str, int]:
    """``"data:4,model:2"`` (or a mapping) -> ``{"data": 4, "model": 2}``, validated: axis
    names from ``("data", "model")``, each at most once, sizes positive ints, ``data``
    required."""
    if isinstance(shape, str):
        out = {}
        for part in filter(None, (p.strip() for p in shape.split(","))):
            name, sep, size = part.partition(":")
            name = name.strip()
            if not sep or not size.strip().isdigit():
                raise ValueError(f"mesh shape must look like 'data:4,model:2'; got {shape!r}")
            if name in out:
                raise ValueError(f"mesh shape names axis {name!r} twice: {shape!r}")
            out[name] = int(size)
    else:
        out = {str(k): v for k, v in dict(shape).items()}
    for name, size in out.items():
        if name not in MESH_AXES:
            raise ValueError(f"mesh axis {name!r} is not one of {MESH_AXES} (in {shape!r})")
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
            raise ValueError(f"mesh axis {name!r} needs a positive int size; got {size!r}")
    if DATA_AXIS not in out:
        raise ValueError(f"mesh shape {shape!r} has no {DATA_AXIS!r} axis")
    return {name: int(out[name]) for name in MESH_AXES if name in out}


def make_mesh(num_devices: Optional[int] = None, *, axis_name: str = DATA_AXIS,
              devices: Optional[Sequence[jax.Device]] = None,
              shape: Union[str, Mapping[str, int], None] = None) -> Mesh:
    """A 1-D mesh named ``axis_name`` over the first ``num_devices`` devices (all by
    default), or, with ``shape`` (e.g. ``"data:4,model:2"``, see `parse_mesh_shape`), a mesh
    with those axes over the first ``prod(sizes)`` devices.

    Axes are `AxisType.Auto` (jax >= 0.7 defaults `jax.make_mesh` to Explicit axes, which
    would change the typing rules of every array in the train step). ``devices`` may be
    abstract (e.g. from a TPU topology description, for compiling without the chips).
    """
    devices = list(jax.devices() if devices is None else devices)
    if shape is not None and str(shape) != "":
        if num_devices is not None:
            raise ValueError("pass num_devices or shape, not both")
        sizes = parse_mesh_shape(shape)
        n = int(np.prod(list(sizes.values())))
        if n > len(devices):
            raise ValueError(f"mesh shape {shape!r} needs {n} devices; {len(devices)} "
                             f"available")
        return Mesh(np.asarray(devices[:n], dtype=object).reshape(tuple(sizes.values())),
                    tuple(sizes), axis_types=(AxisType.Auto,) * len(sizes))
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
              axis_name: str = DATA_AXIS, taken: Sequence[int] = ()) -> P:
    """PartitionSpec sharding ``shape`` on its largest dimension divisible by ``num_shards``
    (dimensions in ``taken``, already split over another mesh axis, are not candidates).

    Arrays with fewer than ``min_size`` elements, or without a divisible dimension, are
    replicated (``P()``). Ties go to the earliest dimension.
    """
    size = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if num_shards <= 1 or size < min_size:
        return P()
    best = None
    for i, d in enumerate(shape):
        if i in taken:
            continue
        if d % num_shards == 0 and d >= num_shards and (best is None or d > shape[best]):
            best = i
    if best is None:
        return P()
    return P(*([None] * best + [axis_name]))


def _logical_axes(leaf: Any) -> Optional[tuple]:
    get = getattr(leaf, "get_metadata", None)  # an nnx.Variable (Param, optimizer moment)
    return get().get(LOGICAL_AXES) if callable(get) else None


def param_spec(shape: Sequence[int], mesh: Mesh, *, logical_axes: Optional[Sequence] = None,
               fsdp: bool = False, fsdp_min_size: int = 2**18, axis_name: str = DATA_AXIS,
               rules: Mapping[str, str] = LOGICAL_RULES, name: str = "a parameter") -> P:
    """The PartitionSpec of one state array: its named dimensions on the mesh axes
    ``rules`` gives them (when the mesh has that axis with size > 1), then, with ``fsdp``,
    the largest remaining dimension divisible by the ``axis_name`` size over that axis
    (arrays of at least ``fsdp_min_size`` elements).

    Raises:
      ValueError: a named dimension does not divide by its mesh axis (e.g. 6 heads on a
        ``model`` axis of 4), or ``logical_axes`` has the wrong length.
    """
    shape = tuple(int(d) for d in shape)
    spec: list = [None] * len(shape)
    if logical_axes is not None:
        if len(logical_axes) != len(shape):
            raise ValueError(f"{name}: logical axes {tuple(logical_axes)} do not match its "
                             f"shape {shape}")
        for i, logical in enumerate(logical_axes):
            axis = rules.get(logical) if logical is not None else None
            if axis is None or mesh.shape.get(axis, 1) == 1:
                continue
            if shape[i] % mesh.shape[axis]:
                raise ValueError(
                    f"{name}: dimension {i} ({logical!r}, size {shape[i]}) is not divisible "
                    f"by the {axis!r} mesh axis of size {mesh.shape[axis]}; choose a mesh "
                    f"whose {axis!r} size divides it")
            spec[i] = axis
    if fsdp:
        data = fsdp_spec(shape, mesh.shape.get(axis_name, 1), min_size=fsdp_min_size,
                         axis_name=axis_name,
                         taken=[i for i, a in enumerate(spec) if a is not None])
        if len(data):
            spec[len(data) - 1] = axis_name
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def state_shardings(tree: Any, mesh: Mesh, *, fsdp: bool = False, fsdp_min_size: int = 2**18,
                    axis_name: str = DATA_AXIS,
                    rules: Mapping[str, str] = LOGICAL_RULES) -> Any:
    """A pytree of `NamedSharding` matching ``tree`` (arrays or `jax.ShapeDtypeStruct`,
    possibly inside ``nnx.Variable``s carrying ``logical_axes`` metadata); see `param_spec`.

    Without FSDP and without a ``model`` axis everything is replicated. The rule depends on
    the leaf's metadata and shape only, so parameters, EMA parameters and the optimizer's
    moment estimates of one parameter all get the same layout.
    """
    if fsdp_min_size < 0:
        raise ValueError(f"fsdp_min_size must be >= 0, got {fsdp_min_size!r}")

    def is_variable(x):
        return callable(getattr(x, "get_metadata", None)) and hasattr(x, "replace")

    def one(path, x):
        logical = _logical_axes(x)
        value = x.get_value() if is_variable(x) else x
        spec = param_spec(np.shape(value), mesh, logical_axes=logical, fsdp=fsdp,
                          fsdp_min_size=fsdp_min_size, axis_name=axis_name, rules=rules,
                          name=jax.tree_util.keystr(path))
        sharding = NamedSharding(mesh, spec)
        return x.replace(sharding) if is_variable(x) else sharding

    return jax.tree_util.tree_map_with_path(one, tree, is_leaf=is_variable)


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
