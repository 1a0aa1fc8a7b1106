"""TFDS path against tiny array_record datasets written locally; missing data fails fast."""
import json

import numpy as np
import pytest

from diffjax.data import get_dataset, tfds as dtfds


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    dtfds.write_synthetic_dataset(root, "mnist", {"train": 20, "test": 6}, seed=0)
    dtfds.write_synthetic_dataset(root, "cifar10", {"train": 12, "test": 4}, seed=1)
    return root


def _raw(name, split, data_dir):
    source = dtfds.data_source(name, split, data_dir)
    return (np.stack([np.asarray(r["image"]) for r in source]),
            np.array([r["label"] for r in source]))


def test_mnist_reads_through_array_record_without_tensorflow(data_dir):
    import importlib.util
    assert importlib.util.find_spec("tensorflow") is None  # the point of this path
    ds = get_dataset("mnist", "train", data_dir=data_dir)
    assert ds.info.shape == (28, 28, 1) and ds.info.num_classes == 10
    assert ds.info.original_range == (0, 255) and ds.info.num_examples == 20
    images, labels = _raw("mnist", "train", data_dir)
    assert images.dtype == np.uint8 and images.shape == (20, 28, 28, 1)
    batches = list(ds.iterator(8, shuffle=False, drop_remainder=False, num_epochs=1,
                               process_index=0, process_count=1))
    x = np.concatenate([b["x"][b["mask"]] for b in batches])
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(x, (images / 127.5 - 1.0).astype(np.float32))
    np.testing.assert_array_equal(ds.postprocess(x), images)
    np.testing.assert_array_equal(np.concatenate([b["label"][b["mask"]] for b in batches]), labels)


def test_cifar10_dequantize_flip_and_resume(data_dir):
    ds = get_dataset("cifar10", "train", data_dir=data_dir, dequantize=True, random_flip=True)
    images, _ = _raw("cifar10", "train", data_dir)
    assert ds.info.shape == (32, 32, 3)
    kw = dict(seed=4, shuffle=False, process_index=0, process_count=1)
    b = next(ds.iterator(12, **kw))
    assert b["x"].min() >= -1 and b["x"].max() < 1
    levels = ds.postprocess(b["x"])  # floor inverse of (x + u) / 256
    same = np.all(levels == images, axis=(1, 2, 3))
    mirrored = np.all(levels == images[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and same.any() and mirrored.any()
    # Noise is genuinely continuous: not on the plain grid.
    assert not np.allclose(b["x"], np.round((b["x"] + 1) * 127.5) / 127.5 - 1)
    reference = [next(it) for it in [ds.iterator(4, **kw)] for _ in range(7)]
    it = ds.iterator(4, **kw)
    [next(it) for _ in range(4)]
    resumed = ds.iterator(4, state=it.get_state(), **kw)
    for ref in reference[4:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["x"], ref["x"])
        np.testing.assert_array_equal(got["label"], ref["label"])
    # Two hosts together see the single-host global batch.
    halves = [next(ds.iterator(4, seed=4, process_index=p, process_count=2)) for p in range(2)]
    single = next(ds.iterator(4, seed=4, process_index=0, process_count=1))
    np.testing.assert_array_equal(np.concatenate([h["x"] for h in halves]), single["x"])


def _forbid_tfds_builders(monkeypatch):
    import tensorflow_datasets as tfds

    def forbidden(*args, **kwargs):
        raise AssertionError("TFDS builder code was touched for a missing dataset")

    monkeypatch.setattr(tfds, "builder", forbidden)
    monkeypatch.setattr(tfds, "builder_from_directory", forbidden)


def test_missing_dataset_error_names_dataset_dir_and_fix(tmp_path, monkeypatch):
    _forbid_tfds_builders(monkeypatch)  # the check happens on disk, before any TFDS code
    empty = tmp_path / "empty_data_dir"
    with pytest.raises(dtfds.DatasetNotPreparedError) as err:
        get_dataset("fashion_mnist", "train", data_dir=empty)
    msg = str(err.value)
    assert "'fashion_mnist'" in msg and str(empty) in msg
    assert f"tfds build fashion_mnist --data_dir={empty} --file_format=array_record" in msg
    assert isinstance(err.value, FileNotFoundError)
    # Default data_dir comes from TFDS_DATA_DIR (set to an empty tmp dir by conftest).
    with pytest.raises(dtfds.DatasetNotPreparedError, match="tfds_default"):
        get_dataset("mnist", "train")


def test_tfrecord_copy_and_missing_split(tmp_path, data_dir, monkeypatch):
    version_dir = tmp_path / "cifar10" / "3.0.2"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text(json.dumps(
        {"name": "cifar10", "fileFormat": "tfrecord", "splits": [{"name": "train"}]}))
    _forbid_tfds_builders(monkeypatch)
    with pytest.raises(dtfds.DatasetNotPreparedError, match="tfrecord.*array_record"):
        get_dataset("cifar10", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split must name splits of mnist"):
        get_dataset("mnist", "validation", data_dir=data_dir)
    with pytest.raises(ValueError, match="name must be one of"):
        get_dataset("imagenet", "train", data_dir=data_dir)


def test_threaded_read_preserves_order(data_dir):
    idx = np.array([11, 0, 5, 3, 3, 9, 1, 7, 2, 10])
    one = dtfds.TfdsImageSource("cifar10", "train", data_dir, num_threads=1).read(idx)
    four = dtfds.TfdsImageSource("cifar10", "train", data_dir, num_threads=4).read(idx)
    images, labels = _raw("cifar10", "train", data_dir)
    for got in (one, four):
        np.testing.assert_array_equal(got["x"], images[idx])
        np.testing.assert_array_equal(got["label"], labels[idx])
