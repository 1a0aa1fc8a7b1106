"""Deterministic, checkpointable, per-host sharded batch iteration.

Every dataset in :mod:`diffjax.data` is iterated by one :class:`DataIterator`. Its design is
an index permutation in numpy, chosen so that every batch is a *pure function* of three
integers, ``(seed, epoch, position)``:

* Epoch ``e`` visits the ``N`` examples in the order
    ``perm_e = np.random.default_rng([seed, e]).permutation(N)`` (``arange(N)`` without shuffling),
    so every epoch has a fresh, reproducible order.
* Global batch ``b`` of epoch ``e`` is ``perm_e[b * B:(b + 1) * B]`` (``B`` = global batch size).
    With ``drop_remainder=True`` an epoch has ``N // B`` batches; otherwise ``ceil(N / B)`` and
    the last one is padded to ``B`` rows (repeating its first example) with a boolean ``"mask"``
    entry that is False on padding rows, so shapes stay static.
* Host ``p`` of ``P`` (``process_index``/``process_count``) reads only rows
    ``[p * B/P, (p + 1) * B/P)`` of each global batch. Concatenating the hosts' batches in
    ``process_index`` order gives exactly the single-host global batch, for any ``P`` that
    divides ``B``; within an epoch the hosts' index sets are disjoint and together cover every
    example once (up to the dropped remainder).
* Random augmentation (flips, dequantisation noise) of the example at global position ``g``
    of epoch ``e`` uses ``example_rng(seed, e, g)``, so it too is independent of ``P``.

The iterator's complete state is ``{"seed": int, "epoch": int, "position": int}`` (position =
batches already delivered in the current epoch): a tiny JSON-serialisable dict that a
checkpoint stores next to the model; ``set_state`` (or ``state=`` at construction) resumes
with exactly the batches an uninterrupted run would have produced. Because batches are pure
functions of the state, prefetching in a background thread changes nothing about them, and
the reported state always refers to what the consumer has received.

Why not grain's ``IndexSampler`` + ``ShardOptions``: grain (0.2.18) first splits the record
range into contiguous per-host shards and shuffles within each shard, so the global batch
depends on the number of hosts, and its iterator state is tied to its worker layout. The
design here keeps grain's conventions (``get_state``/``set_state``, random-access sources with
``__len__`` and ``__getitems__`` -- TFDS array_record data sources qualify as they are) while
making the global batch independent of the host count.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

__all__ = ["Batch", "DataIterator", "DatasetInfo", "MappedSource", "RandomAccessSource", "STATE_KEYS",
           "check_sharding", "epoch_permutation", "example_rng", "host_slice", "read_all", "shard_indices",
           "source_iterator", "stream_iterator", "steps_per_epoch"]


def __dir__():
    return sorted(__all__)


Batch = dict[str, np.ndarray]
"""The type of a batch: a dict from entry names (``"x"``, ``"label"``, ``"mask"``) to numpy
arrays whose first axis is the example."""
STATE_KEYS = ("seed", "epoch", "position")
"""The keys of an iterator's state dict (``DataIterator.get_state()``): the seed, the epoch and
the batches already delivered in that epoch."""

# Stream tags keep the random streams of different purposes apart.
_SHUFFLE_TAG = 0
_AUGMENT_TAG = 1


class RandomAccessSource(Protocol):
    """A finite dataset: ``len(source)`` examples, read in batches by index."""

    def __len__(self) -> int:
        ...

    def read(self, indices: np.ndarray) -> Batch:
        """Returns a dict of arrays whose leading axis follows ``indices``."""
        ...


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a training loop needs to know about a dataset.

    Attributes:
        name: dataset name as given to ``get_dataset``.
        split: split name.
        shape: shape of one example's ``"x"``.
        dtype: dtype of ``"x"`` (``float32`` for continuous data, ``int32`` for tokens).
        value_range: ``(low, high)`` of ``"x"`` as delivered (``(-1, 1)`` for images, token ids
            ``(0, vocab_size - 1)`` for text, ``None`` for unbounded toy coordinates).
        original_range: ``(low, high)`` of the data before preprocessing (``(0, 16)`` digits,
            ``(0, 255)`` images), or ``None`` where nothing was rescaled.
        num_classes: number of labels (``"label"`` key present) or ``None``.
        vocab_size: token vocabulary size for text, else ``None``.
        num_examples: examples in this split, ``None`` for infinite (exact-sampler) datasets.
        postprocess: the inverse transform from model space to the original range (images:
            integer levels; text: decoded strings; toy: identity).
        extra: dataset-specific facts (e.g. the text corpus size in characters).
    """

    name: str
    split: str
    shape: tuple[int, ...]
    dtype: str
    value_range: tuple[float, float] | None
    original_range: tuple[float, float] | None
    num_classes: int | None
    vocab_size: int | None
    num_examples: int | None
    postprocess: Callable[[np.ndarray], Any]
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_sharding(global_batch_size: int, process_index: int, process_count: int) -> int:
    """Validates the batch/host arguments and returns the per-host batch size."""
    global_batch_size = _check_int("global_batch_size", global_batch_size, 1)
    process_count = _check_int("process_count", process_count, 1)
    process_index = _check_int("process_index", process_index, 0)
    if process_index >= process_count:
        raise ValueError(
                f"process_index must be in [0, process_count={process_count}), "
                f"got {process_index}.")
    if global_batch_size % process_count:
        raise ValueError(
                f"global_batch_size={global_batch_size} must be divisible by "
                f"process_count={process_count}.")
    return global_batch_size // process_count


def steps_per_epoch(num_examples: int, global_batch_size: int, drop_remainder: bool) -> int:
    """Number of global batches in one epoch."""
    if drop_remainder:
        return num_examples // global_batch_size
    return -(-num_examples // global_batch_size)


def epoch_permutation(num_examples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the examples."""
    if not shuffle:
        return np.arange(num_examples, dtype=np.int64)
    rng = np.random.default_rng([_SHUFFLE_TAG, seed, epoch])
    return rng.permutation(num_examples)


def host_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
    """Rows of each global batch that host ``process_index`` reads."""
    per_host = check_sharding(global_batch_size, process_index, process_count)
    return slice(process_index * per_host, (process_index + 1) * per_host)


def shard_indices(
    num_examples: int,
    global_batch_size: int,
    *,
    seed: int,
    epoch: int,
    position: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    permutation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Example indices of this host's part of global batch ``position`` of ``epoch``.

    Returns:
        ``(indices, positions, valid)``: dataset indices to read, their positions within the
        epoch (for per-example randomness), and a boolean mask that is False on padding rows
        (only the last batch of an epoch with ``drop_remainder=False`` has padding).
    """
    n_steps = steps_per_epoch(num_examples, global_batch_size, drop_remainder)
    if not 0 <= position < n_steps:
        raise ValueError(f"position must be in [0, {n_steps}) for this epoch, got {position}.")
    if permutation is None:
        permutation = epoch_permutation(num_examples, seed, epoch, shuffle)
    rows = host_slice(global_batch_size, process_index, process_count)
    positions = position * global_batch_size + np.arange(rows.start, rows.stop)
    valid = positions < num_examples
    # Padding rows repeat the first example of the global batch (always valid).
    positions = np.where(valid, positions, position * global_batch_size)
    return permutation[positions], positions, valid


def example_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """Generator for the random augmentation of one example (independent of the host count)."""
    return np.random.default_rng([_AUGMENT_TAG, seed, epoch, int(position)])


class DataIterator:
    """Iterator over this host's batches, resumable from ``get_state()``.

    Args:
        batch_fn: ``batch_fn(seed, epoch, position) -> dict of numpy arrays`` -- a pure function
            (the same arguments always give the same batch).
        seed: data seed (shuffling and augmentation).
        steps_per_epoch: batches per epoch, or ``None`` for an endless single epoch (streams).
        num_epochs: stop after this many epochs (``None``: never stop).
        prefetch: number of batches computed ahead in a background thread (0: none).
        state: a state from ``get_state()`` to resume from (its seed wins over ``seed``).
    """

    def __init__(self, batch_fn: Callable[[int, int, int], Batch], *, seed: int,
                 steps_per_epoch: int | None = None, num_epochs: int | None = None,
                 prefetch: int = 0, state: Mapping[str, int] | None = None):
        if steps_per_epoch is not None and _check_int("steps_per_epoch", steps_per_epoch, 0) == 0:
            raise ValueError("steps_per_epoch is 0: the dataset has fewer examples than one "
                             "global batch; lower the batch size or use drop_remainder=False.")
        if num_epochs is not None:
            _check_int("num_epochs", num_epochs, 1)
        self._batch_fn = batch_fn
        self._steps_per_epoch = steps_per_epoch
        self._num_epochs = num_epochs
        self._prefetch = _check_int("prefetch", prefetch, 0)
        self._executor = None
        self._pending: collections.deque = collections.deque()
        self._seed, self._epoch, self._position = _check_int("seed", seed, 0), 0, 0
        if state is not None:
            self.set_state(state)

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, int]:
        """The complete iterator state: ``{"seed", "epoch", "position"}`` as Python ints."""
        return {"seed": self._seed, "epoch": self._epoch, "position": self._position}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continues from ``state`` (as returned by ``get_state``, possibly via a checkpoint)."""
        if not isinstance(state, Mapping) or set(state) != set(STATE_KEYS):
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"state must be a dict with keys {list(STATE_KEYS)}, got {got}.")
        seed, epoch, position = (_check_int(k, np.asarray(state[k]).item(), 0) for k in STATE_KEYS)
        if self._steps_per_epoch is not None and position > self._steps_per_epoch:
            raise ValueError(f"state position={position} exceeds steps_per_epoch="
                             f"{self._steps_per_epoch}; was it saved with another batch size?")
        self._pending.clear()
        self._seed, self._epoch, self._position = seed, epoch, position

    # -- iteration ---------------------------------------------------------------------------
    def _normalise(self, epoch: int, position: int) -> tuple[int, int] | None:
        """Moves past the end of an epoch; ``None`` when the iteration is over."""
        if self._steps_per_epoch is not None and position >= self._steps_per_epoch:
            epoch, position = epoch + 1, 0
        if self._num_epochs is not None and epoch >= self._num_epochs:
            return None
        return epoch, position

    def _upcoming(self, count: int) -> list[tuple[int, int]]:
        out, epoch, position = [], self._epoch, self._position
        while len(out) < count:
            nxt = self._normalise(epoch, position)
            if nxt is None:
                break
            out.append(nxt)
            epoch, position = nxt[0], nxt[1] + 1
        return out

    def __iter__(self) -> "DataIterator":
        return self

    def __next__(self) -> Batch:
        upcoming = self._upcoming(1 + self._prefetch)
        if not upcoming:
            raise StopIteration
        key = upcoming[0]
        if self._prefetch:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, "diffjax-data")
            # Drop stale prefetches (after set_state), then top the queue up.
            while self._pending and self._pending[0][0] != key:
                self._pending.popleft()
            queued = {k for k, _ in self._pending}
            for k in upcoming:
                if k not in queued:
                    self._pending.append((k, self._executor.submit(self._batch_fn, self._seed, *k)))
            batch = self._pending.popleft()[1].result()
        else:
            batch = self._batch_fn(self._seed, *key)
        self._epoch, self._position = key[0], key[1] + 1
        return batch

    def close(self) -> None:
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # pylint: disable=broad-except
            pass


def source_iterator(
    source: RandomAccessSource,
    *,
    global_batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    augment: Callable[[Batch, Sequence[np.random.Generator]], Batch] | None = None,
    prefetch: int = 0,
    state: Mapping[str, int] | None = None,
) -> DataIterator:
    """A :class:`DataIterator` over a finite random-access source (see the module docstring).

    ``augment(batch, rngs)`` gets one ``example_rng`` per row and must be a pure function of
    them. With ``drop_remainder=False`` every batch carries a boolean ``"mask"``.
    """
    num_examples = len(source)
    check_sharding(global_batch_size, process_index, process_count)
    n_steps = steps_per_epoch(num_examples, global_batch_size, drop_remainder)
    cache: dict[tuple[int, int], np.ndarray] = {}

    def permutation(seed: int, epoch: int) -> np.ndarray:
        if (seed, epoch) not in cache:
            cache.clear()
            cache[(seed, epoch)] = epoch_permutation(num_examples, seed, epoch, shuffle)
        return cache[(seed, epoch)]

    def batch_fn(seed: int, epoch: int, position: int) -> Batch:
        indices, positions, valid = shard_indices(
                num_examples, global_batch_size, seed=seed, epoch=epoch, position=position,
                shuffle=shuffle, drop_remainder=drop_remainder, process_index=process_index,
                process_count=process_count, permutation=permutation(seed, epoch))
        batch = dict(source.read(indices))
        if augment is not None:
            batch = augment(batch, [example_rng(seed, epoch, g) for g in positions])
        if not drop_remainder:
            batch["mask"] = valid
        return batch

    return DataIterator(batch_fn, seed=seed, steps_per_epoch=n_steps, num_epochs=num_epochs,
                        prefetch=prefetch, state=state)


def stream_iterator(
    global_batch_fn: Callable[[int, int], Batch],
    *,
    global_batch_size: int,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 0,
    state: Mapping[str, int] | None = None,
) -> DataIterator:
    """An endless :class:`DataIterator` over fresh draws (exact samplers).

    ``global_batch_fn(seed, step)`` draws the whole global batch for step ``step``; each host
    keeps its rows, so hosts see disjoint parts of the same global batch. The epoch stays 0
    and the position counts steps.
    """
    rows = host_slice(global_batch_size, process_index, process_count)

    def batch_fn(seed: int, epoch: int, position: int) -> Batch:
        del epoch  # always 0 for streams
        return {k: v[rows] for k, v in global_batch_fn(seed, position).items()}

    return DataIterator(batch_fn, seed=seed, steps_per_epoch=None, prefetch=prefetch,
                        state=state)


class MappedSource:
    """``source`` with a deterministic per-batch function applied after every read."""

    def __init__(self, source: RandomAccessSource, fn: Callable[[Batch], Batch]):
        self.source, self.fn = source, fn

    def __len__(self) -> int:
        return len(self.source)

    def read(self, indices: np.ndarray) -> Batch:
        return self.fn(self.source.read(indices))


def read_all(source: RandomAccessSource, batch_size: int = 1024) -> Batch:
    """Every example of a finite source, in index order (for evaluation)."""
    n = len(source)
    parts = [source.read(np.arange(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

