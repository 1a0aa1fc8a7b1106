"""Sharding rules against their documented definitions: FSDP dimension choice and the
batch layout."""
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from diffjax import training
from diffjax.training.sharding import fsdp_spec


@pytest.mark.parametrize("shape, spec", [
    ((8, 8), P("data")),                 # a tie goes to the earliest dimension
    ((4, 16, 16), P(None, "data")),      # largest divisible, earliest among equals
    ((24, 64), P(None, "data")),
    ((64, 12), P("data")),               # 12 is not divisible by 8
    ((3, 5, 7), P()),                    # no divisible dimension: replicated
    ((4, 4), P()),                       # 16 elements but no dimension >= 8
    ((16,), P("data")),                  # exactly min_size elements: sharded
    ((15,), P()),                        # below min_size: replicated
])
def test_fsdp_spec_largest_divisible_dimension(shape, spec):
    assert fsdp_spec(shape, 8, min_size=16) == spec


def test_state_shardings_follow_fsdp_spec_and_replicate_without_fsdp():
    mesh = training.make_mesh(8)
    tree = {"a": np.zeros((8, 8)), "b": np.zeros((3,))}
    fsdp = training.state_shardings(tree, mesh, fsdp=True, fsdp_min_size=16)
    assert fsdp["a"].spec == P("data") and fsdp["b"].spec == P()
    plain = training.state_shardings(tree, mesh)
    assert plain["a"].spec == P() and plain["b"].spec == P()


def test_every_batch_leaf_is_split_on_its_leading_dimension():
    """1-D leaves (labels, masks) are split like images; 0-d leaves are replicated. Each of
    the 8 devices holds its contiguous block of rows."""
    mesh = training.make_mesh(8)
    batch = {"x": np.arange(32.0).reshape(16, 2), "label": np.arange(16), "t": np.float32(3)}
    out = training.shard_batch(batch, mesh)
    assert out["x"].sharding.spec == P("data") and out["label"].sharding.spec == P("data")
    assert out["t"].sharding.spec == P()
    for shard in out["label"].addressable_shards:
        i = list(mesh.devices.flat).index(shard.device)
        np.testing.assert_array_equal(np.asarray(shard.data), [2 * i, 2 * i + 1])
    assert training.batch_sharding(mesh, 1).spec == P("data")
    assert training.batch_sharding(mesh, 0).spec == P()
