"""Orbax checkpoints for bit-exact resumes.

A checkpoint at step ``N`` (the state after ``N`` train steps) is a directory ``DIR/N`` with
three items:

* ``state``: the whole `TrainState` (params, EMA, optimizer state, step, RNG, skip counter),
  saved with ``ocp.args.StandardSave``;
* ``data``: the data iterator's position, an opaque JSON-able dict (``ocp.args.JsonSave``);
* ``meta``: the run's config and library versions (``ocp.args.JsonSave``).

Saves are asynchronous (device-to-host copy blocks, writing runs in the background) and
atomic: Orbax writes into a temporary directory and renames it on commit, so a process killed
mid-save leaves the previous step as the latest committed one. ``max_to_keep`` steps are kept.
On a local or network file system (any path not starting with ``gs://``) Orbax's default is
``AtomicRenameTemporaryPath``: the rename of ``N.orbax-checkpoint-tmp*`` to ``N`` is the commit,
and a step directory counts as committed when its name has no temporary suffix; the
``commit_success.txt`` written just before the rename is informational and is not checked, so a
step whose file was deleted still restores. Only on ``gs://`` paths (``CommitFileTemporaryPath``,
in-place writes) is a step committed exactly when it holds ``commit_success.txt``.

Restores take an abstract target (``jax.ShapeDtypeStruct`` leaves with shardings of the
*current* mesh, e.g. `TrainStep.abstract_state`), so a checkpoint written on 8 devices
restores on 1 or 2. Before restoring, the stored array metadata is compared with the target;
mismatched shapes or entries raise `CheckpointMismatchError` naming them. A latest step that
cannot be read (partial or corrupt files) is skipped with a warning and the previous
committed step is used.

SIGTERM (preemption): in a single process, `Checkpointer.install_sigterm_handler` makes
`Checkpointer.preemption_reached` true at the next call boundary, where the loop saves
unconditionally, waits for the write and stops. In a multi-process run a SIGTERM may reach
one host only, and a host that stops to save alone leaves the others waiting in its
collectives forever (seen: two processes hung after one got SIGTERM). There the signal is
left to ``jax.distributed``'s preemption service, which tells every host, and
`Checkpointer.preemption_reached` is its sync point: the same step on every host.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import signal
import threading
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

__all__ = ["Checkpointer", "Restored", "CheckpointMismatchError", "library_versions",
           "tree_paths"]


def __dir__():
    return sorted(__all__)


_ITEMS = ("state", "data", "meta")


class CheckpointMismatchError(ValueError):
    """A checkpoint's arrays do not match the restore target (e.g. a different config)."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """What `Checkpointer.restore` returns."""

    step: int
    state: Any
    data_state: dict
    meta: dict


def library_versions() -> dict:
    """Installed versions of the libraries a checkpoint depends on."""
    out = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "diffjax"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _jsonable(x: Any) -> Any:
    if hasattr(x, "to_dict"):  # ml_collections.ConfigDict
        x = x.to_dict()
    return json.loads(json.dumps(x, default=repr))


def _short(e: Exception, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _key_str(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def tree_paths(tree: Any, is_leaf=None) -> dict:
    """``{"a.b.0.c": leaf}``: dotted key paths, Orbax's naming of checkpointed arrays."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {".".join(_key_str(k) for k in path): leaf for path, leaf in flat}


def _compare(stored: Mapping[str, Any], target: Mapping[str, Any]) -> list:
    problems = []
    for name in sorted(set(stored) | set(target)):
        if name not in stored:
            problems.append(f"{name}: missing from checkpoint (target shape "
                            f"{tuple(np.shape(target[name]))})")
        elif name not in target:
            problems.append(f"{name}: in checkpoint (shape {tuple(stored[name].shape)}) but "
                            f"not in target")
        elif tuple(stored[name].shape) != tuple(np.shape(target[name])):
            problems.append(f"{name}: checkpoint shape {tuple(stored[name].shape)} != target "
                            f"shape {tuple(np.shape(target[name]))}")
    return problems


class Checkpointer:
    """A thin layer over ``ocp.CheckpointManager`` for train states.

    Args:
      directory: where step directories go (created if missing).
      max_to_keep: number of most recent steps kept (None keeps all).
      save_interval_steps: `maybe_save` saves when ``step % save_interval_steps == 0``.
      async_save: write in a background thread (the device-to-host copy still blocks).
      config: the run's config (dict or ConfigDict), stored as JSON with every step.
    """

    def __init__(self, directory: str, *, max_to_keep: Optional[int] = 3,
                 save_interval_steps: int = 1000, async_save: bool = True,
                 config: Any = None):
        if not isinstance(save_interval_steps, int) or save_interval_steps < 1:
            raise ValueError(f"save_interval_steps must be an int >= 1, got "
                             f"{save_interval_steps!r}")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be None or >= 1, got {max_to_keep!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.save_interval_steps = save_interval_steps
        self.config = {} if config is None else _jsonable(config)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=save_interval_steps,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})
        self._preempt = threading.Event()
        self._previous_handler = None
        self._last_saved = None

    # ------------------------------------------------------------------ saving
    def save(self, step: int, state: Any, data_state: Optional[dict] = None, *,
             force: bool = False) -> bool:
        """Start saving ``state`` as step ``step``; returns whether a save started.

        Without ``force`` only steps that are multiples of ``save_interval_steps`` are saved.
        A step that already exists is never rewritten. Returns once the arrays are copied to
        host memory: the caller may donate ``state`` right after.
        """
        step = int(step)
        if not force and step % self.save_interval_steps:
            return False
        if step == self._last_saved:
            return False
        latest = self.manager.latest_step()
        if latest is not None and step <= latest:
            if step != latest:
                logging.warning("Not saving step %d: %s already holds the later step %d",
                                step, self.directory, latest)
            return False
        meta = {"step": step, "config": self.config, "versions": library_versions(),
                "process_count": jax.process_count(), "device_count": jax.device_count()}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(_jsonable({} if data_state is None else dict(data_state))),
            meta=ocp.args.JsonSave(meta),
        )
        saved = self.manager.save(step, args=args, force=True)
        if saved:
            self._last_saved = step
            logging.info("Saving checkpoint step %d to %s", step, self.directory)
        return saved

    def maybe_save(self, step: int, state: Any, data_state: Optional[dict] = None, *,
                   preempted: bool = False) -> bool:
        """Save on the interval, or, when ``preempted`` (`preemption_reached`),
        unconditionally and synchronously."""
        if preempted:
            saved = self.save(step, state, data_state, force=True)
            self.wait()
            logging.warning("Preemption: checkpoint step %d committed to %s; stopping.",
                            step, self.directory)
            return saved
        return self.save(step, state, data_state)

    def wait(self) -> None:
        """Block until pending asynchronous saves are committed."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
        self.uninstall_sigterm_handler()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ preemption
    def install_sigterm_handler(self) -> None:
        """On SIGTERM, request a save at the next step boundary (see `preemption_reached`).

        Must be called from the main thread. The previous handler is restored by
        `uninstall_sigterm_handler` / `close`. In a multi-process run this installs nothing:
        ``jax.distributed``'s preemption service handles SIGTERM on every host (a Python
        handler would replace its own and let one host stop alone).
        """
        if jax.process_count() > 1:
            logging.info("SIGTERM is left to jax.distributed's preemption service: a signal "
                         "to any process stops all %d at the same step, after a checkpoint.",
                         jax.process_count())
            return

        def handler(signum, frame):
            logging.warning("SIGTERM received: saving a checkpoint at the next step boundary, "
                            "then exiting.")
            self._preempt.set()

        previous = signal.signal(signal.SIGTERM, handler)
        if self._previous_handler is None:
            self._previous_handler = previous

    def uninstall_sigterm_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def request_preemption(self) -> None:
        """What the SIGTERM handler does: ask for a save-and-stop at the next boundary
        (single process; in a multi-process run use the preemption service, see
        `preemption_reached`)."""
        self._preempt.set()

    def preemption_reached(self, step: int, steps_done: int = 1) -> bool:
        """Whether to save and stop now, after a call that ran the ``steps_done`` steps
        ending at ``step``.

        One process: a SIGTERM arrived (`install_sigterm_handler`) or `request_preemption`
        was called. Several processes: ``jax.distributed``'s preemption sync point is one of
        those steps. The service agrees on one step for all hosts once any of them is
        notified, so every process must call this after every call, with the same steps.
        """
        if jax.process_count() == 1:
            return self._preempt.is_set()
        reached = False
        for s in range(int(step) - int(steps_done) + 1, int(step) + 1):
            # every step is reported (no short cut): the service expects each one
            reached = bool(self.manager.reached_preemption(s)) or reached
        return reached

    # ------------------------------------------------------------------ restoring
    def all_steps(self) -> list:
        """Committed steps, ascending."""
        return sorted(self.manager.all_steps())

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def check_compatible(self, step: int, target: Any) -> None:
        """Raise `CheckpointMismatchError` if step ``step``'s arrays differ from ``target``."""
        stored = self._stored_arrays(step)
        problems = _compare(stored, tree_paths(target))
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint step {step} in {self.directory} does not match the restore target "
                f"(was it written with a different config? An entry of the same size in another "
                f"layout, e.g. an attention kernel saved before kernels kept a head axis, "
                f"restores with restore(..., reshape=True)); mismatched entries:\n  "
                + "\n  ".join(problems))

    def stored_shapes(self, step: Optional[int] = None) -> dict:
        """``{"a.b.0.c": shape}`` of the arrays saved at ``step`` (default: the latest)."""
        step = self.latest_step() if step is None else int(step)
        return {k: tuple(v.shape) for k, v in self._stored_arrays(step).items()}

    def _stored_arrays(self, step: int) -> dict:
        metadata = self.manager.item_metadata(step)
        state_md = metadata["state"] if metadata is not None else None
        state_md = getattr(state_md, "tree", state_md)
        if state_md is None:
            raise FileNotFoundError(f"no readable state metadata for step {step}")
        return tree_paths(state_md, is_leaf=lambda x: hasattr(x, "shape"))

    def restore(self, target: Any, step: Optional[int] = None, *,
                reshape: bool = False) -> Restored:
        """Restore onto ``target`` (a pytree of ``jax.ShapeDtypeStruct`` with shardings).

        ``step=None`` takes the latest committed step that can be read, falling back (with a
        warning) past partial or corrupt ones. An explicit ``step`` is restored or raises.
        Raises `CheckpointMismatchError` when shapes or entries differ from ``target``, and
        `FileNotFoundError` when there is no readable checkpoint.

        ``reshape=True`` accepts an entry whose shape differs from the target's but holds as
        many elements, reshaping it in row-major order: for a parameter whose layout changed
        by a reshape only (attention kernels written before they kept a head axis, ``(D,
        3D)`` -> ``(D, 3, heads, D / heads)``, are restored this way).
        """
        self.manager.reload()
        steps = self.all_steps()
        if step is not None:
            if int(step) not in steps:
                raise FileNotFoundError(f"checkpoint step {step} not found in {self.directory}; "
                                        f"committed steps: {steps}")
            return self._restore_step(int(step), target, reshape)
        if not steps:
            raise FileNotFoundError(f"no committed checkpoint in {self.directory}")
        errors = []
        for s in reversed(steps):
            try:
                restored = self._restore_step(s, target, reshape)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # partial / corrupt files: fall back to an older step
                errors.append(f"step {s}: {type(e).__name__}: {e}")
                logging.warning(
                    "Checkpoint step %d in %s is unreadable (%s: %s); falling back to the "
                    "previous committed step.", s, self.directory, type(e).__name__,
                    _short(e))
                continue
            if errors:
                logging.warning("Restored checkpoint step %d from %s after skipping %d "
                                "unreadable newer step(s).", s, self.directory, len(errors))
            return restored
        raise FileNotFoundError(f"no readable checkpoint in {self.directory}:\n  "
                                + "\n  ".join(errors))

    def _restore_step(self, step: int, target: Any, reshape: bool = False) -> Restored:
        saved_shape = {}
        if reshape:
            stored = self._stored_arrays(step)
            for name, leaf in tree_paths(target).items():
                old = tuple(stored[name].shape) if name in stored else None
                if old is not None and old != tuple(np.shape(leaf)) and \
                        int(np.prod(old)) == int(np.prod(np.shape(leaf))):
                    saved_shape[name] = old
            if saved_shape:
                logging.warning("Restoring %d entries reshaped from their saved layout: %s",
                                len(saved_shape), ", ".join(sorted(saved_shape)))

        def as_saved(path, leaf):
            name = ".".join(_key_str(k) for k in path)
            if name not in saved_shape:
                return leaf
            mesh = getattr(getattr(leaf, "sharding", None), "mesh", None)
            sharding = NamedSharding(mesh, P()) if mesh is not None else None
            return jax.ShapeDtypeStruct(saved_shape[name], leaf.dtype, sharding=sharding)

        load_target = jax.tree_util.tree_map_with_path(as_saved, target)
        self.check_compatible(step, load_target)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(load_target),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ))
        state = out["state"]
        if saved_shape:
            def to_target(path, value, leaf):
                if ".".join(_key_str(k) for k in path) not in saved_shape:
                    return value
                value = jnp.reshape(value, np.shape(leaf))
                sharding = getattr(leaf, "sharding", None)
                return jax.device_put(value, sharding) if sharding is not None else value
            state = jax.tree_util.tree_map_with_path(to_target, state, target)
        logging.info("Restored checkpoint step %d from %s", step, self.directory)
        return Restored(step=step, state=state, data_state=dict(out["data"] or {}),
                        meta=dict(out["meta"] or {}))
