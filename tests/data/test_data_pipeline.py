"""The common iterator: exact resume, host shards, epochs, padding."""
import json

import numpy as np
import pytest

from diffjax.data import pipeline


class ArraySource:
    """Example i is the integer i (so batches reveal exactly which examples they hold)."""

    def __init__(self, n):
        self.n = n
        self.reads = []

    def __len__(self):
        return self.n

    def read(self, indices):
        self.reads.append(np.array(indices))
        return {"x": np.asarray(indices, np.int64), "label": np.asarray(indices) % 3}


def noisy_augment(batch, rngs):
    return {**batch, "noise": np.array([rng.random() for rng in rngs])}


def _take(it, k):
    return [next(it) for _ in range(k)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resume_equals_uninterrupted(prefetch):
    kwargs = dict(global_batch_size=8, seed=7, augment=noisy_augment)
    reference = _take(pipeline.source_iterator(ArraySource(29), **kwargs), 12)  # 3 batches/epoch
    it = pipeline.source_iterator(ArraySource(29), prefetch=prefetch, **kwargs)
    head = _take(it, 5)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    assert state == {"seed": 7, "epoch": 1, "position": 2}
    fresh = pipeline.source_iterator(ArraySource(29), prefetch=prefetch, **kwargs)
    fresh.set_state(state)
    _assert_batches_equal(head + _take(fresh, 7), reference)
    # Construction-time state does the same, and the state's seed wins.
    again = pipeline.source_iterator(ArraySource(29), global_batch_size=8, seed=0,
                                     augment=noisy_augment, state=state)
    _assert_batches_equal(_take(again, 7), reference[5:])


def test_epochs_are_fresh_permutations():
    it = pipeline.source_iterator(ArraySource(24), global_batch_size=6, seed=1)
    epochs = [np.concatenate([b["x"] for b in _take(it, 4)]) for _ in range(3)]
    for e in epochs:
        np.testing.assert_array_equal(np.sort(e), np.arange(24))
    assert not np.array_equal(epochs[0], epochs[1])
    ordered = pipeline.source_iterator(ArraySource(24), global_batch_size=6, seed=1, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in _take(ordered, 4)]),
                                  np.arange(24))
    other_seed = pipeline.source_iterator(ArraySource(24), global_batch_size=6, seed=2)
    assert not np.array_equal(np.concatenate([b["x"] for b in _take(other_seed, 4)]), epochs[0])


@pytest.mark.parametrize("process_count", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_host_shards_disjoint_covering_and_host_count_invariant(process_count, drop_remainder):
    n, batch = 50, 12
    single = pipeline.source_iterator(ArraySource(n), global_batch_size=batch, seed=3,
                                      drop_remainder=drop_remainder, augment=noisy_augment,
                                      num_epochs=1)
    single_batches = list(single)
    hosts = []
    for p in range(process_count):
        src = ArraySource(n)
        it = pipeline.source_iterator(src, global_batch_size=batch, seed=3,
                                      drop_remainder=drop_remainder, augment=noisy_augment,
                                      num_epochs=1, process_index=p,
                                      process_count=process_count)
        hosts.append((src, list(it)))
    steps = n // batch if drop_remainder else -(-n // batch)
    seen = []
    for p, (src, batches) in enumerate(hosts):
        assert len(batches) == steps
        # Each host reads exactly the examples of its own rows, nothing else.
        np.testing.assert_array_equal(np.concatenate(src.reads), np.concatenate(
            [b["x"] for b in batches]))
        for b in batches:
            assert b["x"].shape == (batch // process_count,)
            valid = b.get("mask", np.ones(len(b["x"]), bool))
            seen.append(b["x"][valid])
    seen = np.concatenate(seen)
    assert len(seen) == len(set(seen.tolist()))  # disjoint
    expected = steps * batch if drop_remainder else n
    assert len(seen) == expected  # covering (up to the dropped remainder)
    # Concatenating hosts in process order gives the single-host global batch (with augment).
    for step in range(steps):
        for key in single_batches[step]:
            np.testing.assert_array_equal(
                np.concatenate([hosts[p][1][step][key] for p in range(process_count)]),
                single_batches[step][key])


def test_padding_mask_on_last_batch():
    batches = list(pipeline.source_iterator(ArraySource(10), global_batch_size=4, seed=0,
                                            shuffle=False, drop_remainder=False, num_epochs=1))
    assert [b["x"].shape for b in batches] == [(4,)] * 3
    np.testing.assert_array_equal(batches[-1]["mask"], [True, True, False, False])
    np.testing.assert_array_equal(batches[-1]["x"][:2], [8, 9])
    assert all(b["mask"].all() for b in batches[:-1])


def test_num_epochs_stops_and_validation_errors():
    two_epochs = pipeline.source_iterator(ArraySource(10), global_batch_size=3, num_epochs=2)
    assert len(list(two_epochs)) == 6
    with pytest.raises(ValueError, match="divisible by process_count"):
        pipeline.source_iterator(ArraySource(10), global_batch_size=3, process_count=2)
    with pytest.raises(ValueError, match="process_index"):
        pipeline.source_iterator(ArraySource(10), global_batch_size=4, process_index=2,
                                 process_count=2)
    with pytest.raises(ValueError, match="fewer examples than one global batch"):
        pipeline.source_iterator(ArraySource(3), global_batch_size=4)
    it = pipeline.source_iterator(ArraySource(10), global_batch_size=2)
    with pytest.raises(ValueError, match="keys"):
        it.set_state({"epoch": 0, "position": 0})
    with pytest.raises(ValueError, match="steps_per_epoch"):
        it.set_state({"seed": 0, "epoch": 0, "position": 6})


def test_stream_iterator_resume_and_hosts():
    def draw(seed, step):
        return {"x": np.random.default_rng([seed, step]).standard_normal((8, 2))}

    reference = _take(pipeline.stream_iterator(draw, global_batch_size=8, seed=5), 6)
    it = pipeline.stream_iterator(draw, global_batch_size=8, seed=5)
    _take(it, 4)
    state = it.get_state()
    assert state == {"seed": 5, "epoch": 0, "position": 4}
    resumed = pipeline.stream_iterator(draw, global_batch_size=8, seed=5, state=state)
    _assert_batches_equal(_take(resumed, 2), reference[4:])
    halves = [_take(pipeline.stream_iterator(draw, global_batch_size=8, seed=5,
                                             process_index=p, process_count=2), 6)
              for p in range(2)]
    for step in range(6):
        np.testing.assert_array_equal(
            np.concatenate([halves[0][step]["x"], halves[1][step]["x"]]), reference[step]["x"])


def test_augmentation_generator_is_that_of_the_epoch_and_position():
    """Row i of batch b in epoch e is augmented with example_rng(seed, e, b * B + i), the
    generator of its epoch and global position: the noise is fresh every epoch."""
    it = pipeline.source_iterator(ArraySource(8), global_batch_size=4, seed=5, shuffle=False,
                                  augment=noisy_augment, num_epochs=2)
    batches = list(it)
    assert len(batches) == 4
    for k, batch in enumerate(batches):
        epoch, b = divmod(k, 2)
        want = [pipeline.example_rng(5, epoch, b * 4 + i).random() for i in range(4)]
        np.testing.assert_array_equal(batch["noise"], want)
    assert not np.array_equal(batches[0]["noise"], batches[2]["noise"])
