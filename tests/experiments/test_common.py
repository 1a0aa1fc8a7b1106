"""experiments.common.map_batches: the one chunked loop behind the launchers' samplers,
likelihoods, inpainting and text ELBOs."""
import jax
import numpy as np
import pytest

from launcher_helpers import REPO  # noqa: F401  (puts the repository on sys.path)

from experiments import common  # noqa: E402


def test_map_batches_pads_trims_and_folds_keys():
    key = jax.random.key(3)
    x = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    labels = np.arange(7, dtype=np.int32) * 10
    seen = []

    def fn(k, xb, lb):
        seen.append((xb.shape, lb.shape, xb[:, 0].tolist()))
        noise = jax.random.uniform(k, (len(xb),))
        return (xb.sum(1) + lb, noise), len(seen)

    (rows, noise), extras = common.map_batches(fn, key, 7, 3, x, labels)
    # Static shapes: three calls of 3 rows, the last padded by repeating its own row.
    assert [s[:2] for s in seen] == [((3, 2), (3,))] * 3
    assert seen[2][2] == [12.0, 12.0, 12.0]
    np.testing.assert_array_equal(rows, x.sum(1) + labels)  # padded rows dropped, order kept
    assert extras == [1, 2, 3]
    expect = np.concatenate([np.asarray(jax.random.uniform(jax.random.fold_in(key, i), (3,)))
                             for i in range(3)])[:7]
    np.testing.assert_array_equal(noise, expect)  # call i uses fold_in(key, i)


def test_map_batches_without_arrays_and_small_num():
    out, extras = common.map_batches(lambda k: (np.ones((3, 2)), None), jax.random.key(0), 3, 8)
    assert out.shape == (3, 2) and extras == [None]  # batch_size capped at num: one call
    with pytest.raises(ValueError, match="num must be >= 1"):
        common.map_batches(lambda k: (np.ones(1), None), jax.random.key(0), 0, 8)
