"""Precomputed latents: write_latents -> get_dataset round trip, resumable iteration, and a
clear DatasetNotPreparedError for every missing piece."""
import json

import numpy as np
import pytest

from diffjax import data
from diffjax.data import latents

NAME = "imagenet256_latents"
SHAPE = (32, 32, 4)
N = 10


def _arrays(n=N, seed=0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n,) + SHAPE) * 5).astype(np.float32)
    return z, rng.integers(0, 1000, n)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    z, y = _arrays()
    latents.write_latents(root, NAME, "train", z, y, dtype="float32")
    return root, z, y


def test_round_trip_exact_values_labels_and_info(prepared):
    root, z, y = prepared
    ds = data.get_dataset(NAME, "train", data_dir=root)
    info = ds.info
    assert info.shape == SHAPE and info.dtype == "float32" and info.num_classes == 1000
    assert info.num_examples == N and info.value_range is None and info.original_range is None
    assert info.extra["scale"] == 0.18215 and info.extra["stored_dtype"] == "float32"
    batches = list(ds.iterator(4, shuffle=False, drop_remainder=False, num_epochs=1,
                               process_index=0, process_count=1))
    x = np.concatenate([b["x"][b["mask"]] for b in batches])
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    assert x.dtype == np.float32 and x.shape == (N,) + SHAPE and labels.dtype == np.int32
    np.testing.assert_array_equal(x, z * np.float32(0.18215))  # exact: scaled on read
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(ds.as_arrays()["x"], x)
    np.testing.assert_array_equal(ds.postprocess(x), x)  # latents stay latents
    on_disk = json.loads((root / NAME / "info.json").read_text())
    assert on_disk["splits"] == {"train": N} and on_disk["shape"] == list(SHAPE)
    assert (root / NAME / "train.array_record").stat().st_size >= N * latents.record_bytes(
        SHAPE, "float32")


def test_float16_storage_custom_scale_and_second_split(tmp_path):
    z, y = _arrays(6, seed=1)
    latents.write_latents(tmp_path, NAME, "train", z, y, scale=0.13025)  # float16 default
    latents.write_latents(tmp_path, NAME, "validation", z[:3], y[:3], scale=0.13025)
    info = json.loads((tmp_path / NAME / "info.json").read_text())
    assert info["dtype"] == "float16" and info["splits"] == {"train": 6, "validation": 3}
    x = data.get_dataset(NAME, "validation", data_dir=tmp_path).as_arrays()
    np.testing.assert_array_equal(
        x["x"], z[:3].astype(np.float16).astype(np.float32) * np.float32(0.13025))
    np.testing.assert_array_equal(x["label"], y[:3])
    with pytest.raises(ValueError, match="scale=0.13025.*scale=0.18215"):  # folder disagrees
        latents.write_latents(tmp_path, NAME, "test", z, y)


def test_iteration_is_deterministic_resumable_and_host_sharded(prepared):
    root, _, _ = prepared
    ds = data.get_dataset(NAME, "train", data_dir=root)
    kw = dict(seed=3, process_index=0, process_count=1)
    reference = [next(it) for it in [ds.iterator(4, **kw)] for _ in range(7)]  # 3+ epochs
    again = ds.iterator(4, prefetch=2, **kw)  # same batches, prefetch or not
    for ref in reference:
        got = next(again)
        np.testing.assert_array_equal(got["x"], ref["x"])
        np.testing.assert_array_equal(got["label"], ref["label"])
    again.close()
    assert not np.array_equal(reference[0]["label"], reference[2]["label"])  # reshuffled
    it = ds.iterator(4, **kw)
    [next(it) for _ in range(3)]
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    resumed = ds.iterator(4, state=state, **kw)
    for ref in reference[3:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["x"], ref["x"])
        np.testing.assert_array_equal(got["label"], ref["label"])
    halves = [next(ds.iterator(4, seed=3, process_index=p, process_count=2)) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["x"] for h in halves]), reference[0]["x"])


def _not_prepared(data_dir, split="train"):
    with pytest.raises(data.DatasetNotPreparedError) as err:
        data.get_dataset(NAME, split, data_dir=data_dir)
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert "diffjax.data.latents.write_latents(" in msg and repr(split) in msg
    return msg


def test_every_missing_piece_says_what_and_how(tmp_path, prepared):
    empty = tmp_path / "empty"
    msg = _not_prepared(empty)  # no folder at all
    assert f"no folder {empty / NAME}" in msg and str(empty / NAME / "info.json") in msg
    assert str(empty / NAME / "train.array_record") in msg

    (tmp_path / "no_info" / NAME).mkdir(parents=True)  # folder without info.json
    msg = _not_prepared(tmp_path / "no_info")
    assert f"no {tmp_path / 'no_info' / NAME / 'info.json'}" in msg

    root, z, y = prepared
    msg = _not_prepared(root, "validation")  # split never written
    assert "has no split 'validation'" in msg and "lists ['train']" in msg
    assert str(root / NAME / "validation.array_record") in msg

    copy = tmp_path / "copy" / NAME  # info.json copied, split file not
    copy.mkdir(parents=True)
    (copy / "info.json").write_text((root / NAME / "info.json").read_text())
    msg = _not_prepared(tmp_path / "copy")
    assert f"{copy / 'train.array_record'} is missing" in msg

    (copy / "train.array_record").write_bytes(b"not an array_record file")  # garbage
    assert "not a readable array_record file" in _not_prepared(tmp_path / "copy")

    (copy / "train.array_record").write_bytes((root / NAME / "train.array_record").read_bytes())
    info = json.loads((copy / "info.json").read_text())
    info["splits"]["train"] = N + 2  # truncated copy
    (copy / "info.json").write_text(json.dumps(info))
    assert f"has {N} records; info.json says {N + 2}" in _not_prepared(tmp_path / "copy")

    # The default data_dir is $DIFFJAX_DATA_DIR (an empty tmp dir, set by conftest).
    with pytest.raises(data.DatasetNotPreparedError, match="data_default"):
        data.get_dataset(NAME)


def test_options_and_bad_inputs_are_refused(tmp_path, prepared):
    root, z, y = prepared
    for option in ("random_flip", "dequantize", "seq_len"):
        with pytest.raises(ValueError, match=f"unknown option.*{option}.*{NAME}"):
            data.get_dataset(NAME, "train", data_dir=root, **{option: True})
    with pytest.raises(ValueError, match="split must be a plain split name"):
        data.get_dataset(NAME, "train[:90%]", data_dir=root)
    with pytest.raises(ValueError, match=r"NCHW\? transpose"):
        latents.write_latents(tmp_path, NAME, "train", z.transpose(0, 3, 1, 2), y)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1000\)"):
        latents.write_latents(tmp_path, NAME, "train", z, y + 1000)
    with pytest.raises(ValueError, match="NaN or inf after conversion to float16"):
        latents.write_latents(tmp_path, NAME, "train", z * 1e5, y)
    assert not (tmp_path / NAME / "train.array_record").exists()  # nothing half-written
    assert not list((tmp_path / NAME).glob("*.tmp"))
    with pytest.raises(ValueError, match="name must be one of"):
        latents.write_latents(tmp_path, "imagenet512_latents", "train", z, y)
    assert NAME in data.NAMES and "latents" in data.__all__
