"""get_dataset / get_iterator: one entry point, metadata, toy streams."""
import numpy as np
import pytest

import diffjax.data as data
from diffjax.data import toy


def test_names_and_unknown_name():
    assert set(data.NAMES) == set(toy.NAMES) | {
        "digits", "mnist", "fashion_mnist", "cifar10", "text8", "stdlib_text",
        "imagenet256_latents", "image_folder", "text_file"}
    with pytest.raises(ValueError, match="name must be one of.*stdlib_text"):
        data.get_dataset("imagenet64")
    with pytest.raises(ValueError, match="unknown option.*two_moons"):
        data.get_dataset("two_moons", dequantize=True)
    with pytest.raises(ValueError, match="split must be one of"):
        data.get_dataset("two_moons", "validation")


def test_toy_stream_is_exact_fresh_and_resumable():
    ds = data.get_dataset("two_moons", "train")
    info = ds.info
    assert info.shape == (2,) and info.num_examples is None and info.num_classes is None
    it = ds.iterator(256, seed=3, process_index=0, process_count=1)
    batches = [next(it)["x"] for _ in range(5)]
    assert batches[0].shape == (256, 2) and batches[0].dtype == np.float32
    assert not np.array_equal(batches[0], batches[1])  # fresh draws every step
    # Each batch is an exact draw: toy.sample with the step's seed.
    np.testing.assert_array_equal(batches[2], toy.sample("two_moons", 256, seed=[0, 3, 2]))
    resumed = data.get_iterator("two_moons", batch_size=256, seed=0, state=it.get_state(),
                                process_index=0, process_count=1)
    np.testing.assert_array_equal(next(resumed)["x"], next(it)["x"])
    test = data.get_dataset("two_moons", "test").as_arrays(100)["x"]
    assert test.shape == (100, 2) and not np.array_equal(test, ds.as_arrays(100)["x"])
    np.testing.assert_array_equal(ds.postprocess(test), test)


def test_default_process_index_comes_from_jax():
    it = data.get_iterator("checkerboard", batch_size=8)  # single process: all 8 rows
    assert next(it)["x"].shape == (8, 2)


def test_digits_metadata_and_eval_arrays():
    ds = data.get_dataset("digits", "test", dequantize=True)
    info = ds.info
    assert (info.shape, info.dtype, info.value_range, info.original_range, info.num_classes) == (
        (8, 8, 1), "float32", (-1.0, 1.0), (0, 16), 10)
    arrays = ds.as_arrays()
    assert arrays["x"].shape == (info.num_examples, 8, 8, 1)
    np.testing.assert_array_equal(arrays["x"], ds.as_arrays()["x"])  # deterministic noise
    images, labels = data.digits.load("test")
    np.testing.assert_array_equal(ds.postprocess(arrays["x"]), images)
    np.testing.assert_array_equal(arrays["label"], labels)
    with pytest.raises(TypeError, match="iterator"):
        iter(ds)


def test_describe_matches_the_dataset_without_reading_it(tmp_path):
    """`describe` (for compiling configs whose data is elsewhere) gives the metadata the
    dataset itself reports: shapes, dtypes, classes, vocabularies and ranges."""
    from diffjax.data import latents

    rng = np.random.default_rng(0)
    latents.write_latents(tmp_path, "imagenet256_latents", "train",
                          rng.standard_normal((3, 32, 32, 4)).astype(np.float32), [0, 5, 999])
    letters = np.frombuffer(b" abcdefghijklmnopqrstuvwxyz", np.uint8)
    (tmp_path / "text8").write_bytes(letters[rng.integers(0, 27, 4000)].tobytes())
    cases = [("two_moons", {}, {}), ("digits", {"dequantize": True}, {}),
             ("text8", {"seq_len": 32, "vocab": "byte"}, {"data_dir": tmp_path}),
             ("imagenet256_latents", {}, {"data_dir": tmp_path})]
    for name, options, where in cases:
        described = data.describe(name, "train", **options)
        actual = data.get_dataset(name, "train", **where, **options).info
        for field in ("name", "split", "shape", "dtype", "value_range", "original_range",
                      "num_classes", "vocab_size"):
            assert getattr(described, field) == getattr(actual, field), (name, field)
    # TFDS images: the spec, nothing read (no data_dir holds them here).
    cifar = data.describe("cifar10", dequantize=True, random_flip=True)
    assert cifar.shape == (32, 32, 3) and cifar.num_classes == 10
    assert cifar.original_range == (0, 255) and cifar.num_examples is None
    with pytest.raises(ValueError, match="unknown option"):
        data.describe("cifar10", seq_len=3)
