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


def test_checkpoints_with_attention_kernels_of_the_old_layout_restore_reshaped(tmp_path):
    """Attention kernels used to be (D, 3D) / (3D,) / (D, D); they now keep a head axis. The
    same numbers in row-major order: a checkpoint of the old layout restores, reshaped, and
    any other mismatch is still refused."""
    import optax
    from flax import nnx

    from diffjax import models, training

    model = models.TokenTransformer(11, seq_len=8, dim=16, depth=1, heads=2, cond_dim=8,
                                    rngs=nnx.Rngs(0))
    _, params, _ = training.split_model(model)
    optimizer = optax.adam(1e-3)
    state = training.create_train_state(params, optimizer, rng=0)

    def old_layout(path, x):
        name = jax.tree_util.keystr(path)
        if "['attn']['qkv']['kernel']" in name:
            return x.reshape(x.shape[0], -1)   # (D, 3, H, D/H) -> (D, 3D)
        if "['attn']['out']['kernel']" in name:
            return x.reshape(-1, x.shape[-1])  # (H, D/H, D) -> (D, D)
        if "['attn']['qkv']['bias']" in name:
            return x.reshape(-1)               # (3, H, D/H) -> (3D,)
        return x

    old = jax.tree_util.tree_map_with_path(old_layout, state)
    shapes = {jax.tree_util.keystr(p): x.shape
              for p, x in jax.tree_util.tree_flatten_with_path(old)[0]}
    assert shapes[".params['backbone']['blocks'][0]['attn']['qkv']['kernel'].value"] == (16, 48)
    with training.Checkpointer(tmp_path / "old") as ckpt:
        assert ckpt.save(3, old, force=True)
    mesh = training.make_mesh(1)
    step = training.make_train_step(lambda p, b, k: (0.0, {}), optimizer, mesh=mesh)
    target = step.abstract_state(jax.eval_shape(lambda: state))
    checkpointer = training.Checkpointer(tmp_path / "old")
    with pytest.raises(training.CheckpointMismatchError, match=r"reshape=True"):
        checkpointer.restore(target)
    restored = common.restore_state(checkpointer, target)
    assert restored.step == 3
    for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A different model (other widths) is not a layout change: still refused.
    other = models.TokenTransformer(11, seq_len=8, dim=16, depth=1, heads=2, cond_dim=4,
                                    rngs=nnx.Rngs(0))
    _, other_params, _ = training.split_model(other)
    other_target = step.abstract_state(jax.eval_shape(
        lambda: training.create_train_state(other_params, optimizer, rng=0)))
    with pytest.raises(training.CheckpointMismatchError):
        common.restore_state(checkpointer, other_target)
