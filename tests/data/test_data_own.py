"""The user's own data (diffjax.data.local): image folders and text files written to tmp_path.

Resize/crop against hand-computed pixels, EXIF orientation, grayscale/RGB, labels from class
folders, the every-20th-file and last-5% held-out splits, text round trips, deterministic and
resumable iteration, every error (type, argument, flag, path), and one tiny end-to-end run of
each launcher task."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from diffjax import data as ddata
from diffjax.data import local

RNG = np.random.default_rng(0)
TEXT = ("Grüße aus Köln — naïve café, 東京 ✓ and plain ascii words here.\n" * 40)[:1010]


def _png(path, array, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path, **kw)
    return path


def _pixels(ds):
    """Every example of a dataset as integer levels (plain scaling, no randomness)."""
    return ds.postprocess(ds.as_arrays()["x"])


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """Two class folders, 11 images each (PNG and JPEG, various sizes): 22 files, so the
    held-out split is file 19 of the sorted order (b/08.png)."""
    root = tmp_path_factory.mktemp("images")
    for c in ("b", "a"):  # written out of order: labels follow the sorted names
        for i in range(11):
            if i == 3:  # a constant-colour JPEG
                _png(str(root / c / "03.jpg"), np.full((16, 16, 3), (200, 40, 90)), quality=95)
            else:
                _png(str(root / c / f"{i:02d}.png"),
                     RNG.integers(0, 256, (8 + i % 3, 9 + i % 4, 3)))
    (root / "a" / "notes.txt").write_text("ignored")
    _png(str(root / ".hidden" / "x.png"), np.zeros((8, 8, 3)))  # hidden: ignored
    return root


def test_image_folder_shapes_labels_and_split(class_folder):
    train = ddata.get_dataset("image_folder", "train", path=str(class_folder), image_size=4)
    test = ddata.get_dataset("image_folder", "test", path=str(class_folder), image_size=4)
    info = train.info
    assert info.shape == (4, 4, 3) and info.num_classes == 2 and info.original_range == (0, 255)
    assert info.extra["class_names"] == ("a", "b") and info.extra["num_files"] == 22
    files = train.source.source.files + test.source.source.files
    assert len(train.source) == 21 and len(test.source) == 1
    assert test.source.source.files[0].relative_to(class_folder).as_posix() == "b/08.png"
    assert sorted(f.relative_to(class_folder).as_posix() for f in files) == sorted(
        [f"a/{i:02d}.png" for i in range(11) if i != 3] + ["a/03.jpg", "b/03.jpg"]
        + [f"b/{i:02d}.png" for i in range(11) if i != 3])
    batch = next(train.iterator(6, seed=0, process_index=0, process_count=1))
    assert batch["x"].shape == (6, 4, 4, 3) and batch["x"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and -1 <= batch["x"].min() <= batch["x"].max() <= 1
    labels = train.as_arrays()["label"]
    np.testing.assert_array_equal(labels, [0] * 11 + [1] * 10)
    # The constant-colour JPEG decodes to its colour (lossy: within a few levels).
    jpeg = _pixels(train)[3]
    assert np.abs(jpeg.astype(int) - [200, 40, 90]).max() <= 3
    assert ddata.describe("image_folder", path=str(class_folder), image_size=4).shape == (4, 4, 3)


def test_resize_crop_and_orientation_by_hand(tmp_path):
    # 8 x 12 RGB with 2 x 2 blocks (a, a+2 / a+2, a): halved once by BOX (block mean a+1),
    # 4 x 6 is already the size, the central columns 1..4 are kept.
    a = RNG.integers(0, 250, (4, 6, 3))
    big = np.zeros((8, 12, 3), np.uint8)
    big[0::2, 0::2] = big[1::2, 1::2] = a
    big[0::2, 1::2] = big[1::2, 0::2] = a + 2
    tall = RNG.integers(0, 256, (9, 4, 3))  # shorter side 4: rows (9 - 4) // 2 = 2.. kept
    flat = np.full((2, 3, 3), 77)  # upsampled by BICUBIC to 4 x 6: a constant stays constant
    rotated = RNG.integers(0, 256, (4, 6, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    _png(str(tmp_path / "0.png"), big)
    _png(str(tmp_path / "1.png"), tall)
    _png(str(tmp_path / "2.png"), flat)
    _png(str(tmp_path / "3.png"), rotated, exif=exif)
    ds = ddata.get_dataset("image_folder", "all", path=str(tmp_path), image_size=4)
    assert ds.info.num_classes is None and "label" not in ds.as_arrays()
    got = _pixels(ds)
    np.testing.assert_array_equal(got[0], (a + 1)[:, 1:5])
    np.testing.assert_array_equal(got[1], tall[2:6])
    np.testing.assert_array_equal(got[2], np.full((4, 4, 3), 77))
    np.testing.assert_array_equal(got[3], np.rot90(rotated, -1)[1:5])  # 6 x 4 after rotation


def test_grayscale_folder_keeps_one_channel_mixed_becomes_rgb(tmp_path):
    gray = RNG.integers(0, 256, (5, 4))
    _png(str(tmp_path / "gray" / "0.png"), gray)
    _png(str(tmp_path / "gray" / "1.png"), gray.T)
    ds = ddata.get_dataset("image_folder", "all", path=str(tmp_path / "gray"), image_size=4)
    assert ds.info.shape == (4, 4, 1)
    np.testing.assert_array_equal(_pixels(ds)[0, ..., 0], gray[0:4])
    _png(str(tmp_path / "mixed" / "0.png"), gray)
    _png(str(tmp_path / "mixed" / "1.png"), RNG.integers(0, 256, (4, 4, 3)))
    ds = ddata.get_dataset("image_folder", "all", path=str(tmp_path / "mixed"), image_size=4)
    assert ds.info.shape == (4, 4, 3)
    np.testing.assert_array_equal(_pixels(ds)[0], np.repeat(gray[0:4, :, None], 3, -1))
    # 16-bit grayscale is scaled to 8 bits: round(v / 257).
    wide = np.array([[0, 257, 514, 65535]] * 4, np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(local.load_image(tmp_path / "wide.png", 4, 1)[..., 0],
                                  [[0, 1, 2, 255]] * 4)


@pytest.mark.parametrize("cache", [True, False])
def test_image_iteration_is_deterministic_and_resumes(class_folder, cache):
    kw = dict(path=str(class_folder), image_size=4, dequantize=True, random_flip=True,
              cache=cache)
    ds = ddata.get_dataset("image_folder", "train", **kw)
    it = ds.iterator(4, seed=3, process_index=0, process_count=1)
    first = [next(it) for _ in range(3)]
    state = it.get_state()
    rest = [next(it) for _ in range(3)]  # crosses the epoch end (5 batches of 4 per epoch)
    again = ddata.get_dataset("image_folder", "train", **kw).iterator(
        4, seed=3, process_index=0, process_count=1)
    for want, got in zip(first, [next(again) for _ in range(3)]):
        np.testing.assert_array_equal(want["x"], got["x"])
        np.testing.assert_array_equal(want["label"], got["label"])
    resumed = ds.iterator(4, state=json.loads(json.dumps(state)), process_index=0,
                          process_count=1)
    for want, got in zip(rest, [next(resumed) for _ in range(3)]):
        np.testing.assert_array_equal(want["x"], got["x"])


def test_image_folder_errors(tmp_path, class_folder):
    get = ddata.get_dataset
    with pytest.raises(ValueError, match=r"path \(--config.data.path\) is required"):
        get("image_folder", path="", image_size=4)
    with pytest.raises(FileNotFoundError, match="nope.*does not exist"):
        get("image_folder", path=str(tmp_path / "nope"), image_size=4)
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="file.png.*is not a directory"):
        get("image_folder", path=str(tmp_path / "file.png"), image_size=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*no images.*'\.png', '\.jpg', '\.jpeg'"):
        get("image_folder", path=str(tmp_path / "empty"), image_size=4)
    (tmp_path / "text_only").mkdir()
    (tmp_path / "text_only" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no images.*1 other file"):
        get("image_folder", path=str(tmp_path / "text_only"), image_size=4)
    for bad in (0, -3, None, 2.5, True):
        with pytest.raises(ValueError, match=r"image_size \(--config.data.image_size\) must be"):
            get("image_folder", path=str(class_folder), image_size=bad)
    with pytest.raises(ValueError, match="split must be one of"):
        get("image_folder", "validation", path=str(class_folder), image_size=4)
    corrupt = tmp_path / "corrupt"
    _png(str(corrupt / "0.png"), np.zeros((4, 4)))
    (corrupt / "1.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"cannot read image .*corrupt/1\.png"):
        get("image_folder", "all", path=str(corrupt), image_size=4)
    truncated = tmp_path / "truncated"
    _png(str(truncated / "0.png"), RNG.integers(0, 256, (8, 8, 3)))
    (truncated / "0.png").write_bytes((truncated / "0.png").read_bytes()[:70])
    ds = get("image_folder", "all", path=str(truncated), image_size=4)  # the header is fine
    with pytest.raises(ValueError, match=r"cannot read image .*truncated/0\.png"):
        ds.as_arrays()
    with pytest.raises(local.EmptySplitError, match="too few for a 'test' split"):
        get("image_folder", "test", path=str(truncated), image_size=4)
    mixed = tmp_path / "mixed"
    _png(str(mixed / "top.png"), np.zeros((4, 4)))
    _png(str(mixed / "cls" / "0.png"), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="both images.*and class sub-folders"):
        get("image_folder", path=str(mixed), image_size=4)


# -- text files ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    return path


def test_text_file_char_split_alphabet_and_round_trip(text_path):
    assert len(TEXT) == 1010  # 5% = 50.5 characters, rounded up: 51 held out
    train = ddata.get_dataset("text_file", "train", path=str(text_path), seq_len=32)
    test = ddata.get_dataset("text_file", "test", path=str(text_path), seq_len=32)
    alphabet = "".join(sorted(set(TEXT)))
    assert train.info.extra["alphabet"] == alphabet == test.info.extra["alphabet"]
    assert train.info.vocab_size == len(alphabet) and train.info.shape == (32,)
    assert train.info.extra["num_tokens"] == 959 and test.info.extra["num_tokens"] == 51
    assert len(train.source) == 959 // 32 and len(test.source) == 1
    x = train.as_arrays()["x"]
    assert x.dtype == np.int32 and x.min() >= 0 and x.max() < len(alphabet)
    assert "".join(train.postprocess(x)) == TEXT[:959 // 32 * 32]
    assert test.postprocess(test.as_arrays()["x"]) == [TEXT[959:959 + 32]]
    assert alphabet[int(x[0, 0])] == TEXT[0]
    described = ddata.describe("text_file", path=str(text_path), seq_len=32)
    assert described.vocab_size == len(alphabet) and described.extra["alphabet"] == alphabet


def test_text_file_bytes_split_and_iteration(text_path):
    data = TEXT.encode("utf-8")
    assert len(data) == 1223  # 5% = 61.15 bytes: 61 held out
    boundary = 1223 - 61
    kw = dict(path=str(text_path), seq_len=16, vocab="byte")
    train, test = (ddata.get_dataset("text_file", s, **kw) for s in ("train", "test"))
    assert train.info.vocab_size == 256 and "alphabet" not in train.info.extra
    assert train.info.extra["num_tokens"] == boundary and test.info.extra["num_tokens"] == 61
    chunks = train.as_arrays()["x"]
    assert len(chunks) == boundary // 16
    assert chunks.astype(np.uint8).tobytes() == data[:len(chunks) * 16]
    np.testing.assert_array_equal(test.as_arrays()["x"][0],
                                  np.frombuffer(data[boundary:boundary + 16], np.uint8))
    # A chunk that starts inside a multi-byte character decodes with U+FFFD in its place.
    cut = data.index("ü".encode()) + 1
    row = np.frombuffer(data[cut:cut + 15], np.uint8)[None]  # ends before "—"
    assert train.postprocess(row)[0] == "\ufffd" + "ße aus Köln "
    it = train.iterator(4, seed=1, process_index=0, process_count=1)
    batches = [next(it)["x"] for _ in range(2)]
    resumed = train.iterator(4, state=it.get_state(), process_index=0, process_count=1)
    fresh = train.iterator(4, seed=1, process_index=0, process_count=1)
    [next(fresh) for _ in range(2)]
    np.testing.assert_array_equal(next(resumed)["x"], next(fresh)["x"])
    np.testing.assert_array_equal(batches[0], train.iterator(4, seed=1, process_index=0,
                                                             process_count=1).__next__()["x"])


def test_text_file_errors(tmp_path, text_path):
    get = ddata.get_dataset
    with pytest.raises(ValueError, match=r"text_file: path \(--config.data.path\) is required"):
        get("text_file", seq_len=8)
    with pytest.raises(FileNotFoundError, match="missing.txt.*does not exist"):
        get("text_file", path=str(tmp_path / "missing.txt"), seq_len=8)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        get("text_file", path=str(tmp_path), seq_len=8)
    (tmp_path / "empty.txt").write_bytes(b"")
    for vocab in ("char", "byte"):
        with pytest.raises(ValueError, match="empty.txt.*is empty"):
            get("text_file", path=str(tmp_path / "empty.txt"), seq_len=8, vocab=vocab)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café ".encode("latin-1") * 100)
    with pytest.raises(ValueError, match=r"latin1.txt.*not valid UTF-8 \(byte 3.*'byte' reads"):
        get("text_file", path=str(latin1), seq_len=8)
    assert get("text_file", path=str(latin1), seq_len=8, vocab="byte").info.vocab_size == 256
    with pytest.raises(ValueError, match=r"too short: its 'test' split has 51 characters.*"
                                         r"seq_len \(--config.data.seq_len\) = 64.*at most 51"):
        get("text_file", "test", path=str(text_path), seq_len=64)
    with pytest.raises(ValueError, match=r"too short: its 'train' split has 959"):
        get("text_file", path=str(text_path), seq_len=2000)
    with pytest.raises(ValueError, match=r"vocab \(--config.data.vocab\) must be one of"):
        get("text_file", path=str(text_path), vocab="word")
    with pytest.raises(ValueError, match=r"seq_len \(--config.data.seq_len\) must be a positive"):
        get("text_file", path=str(text_path), seq_len=0)
    with pytest.raises(ValueError, match="split must be one of"):
        get("text_file", "validation", path=str(text_path), seq_len=8)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['image_size'\]"):
        get("text_file", path=str(text_path), image_size=4)


# -- the launchers --------------------------------------------------------------------------------
def _override(config, **fields):
    """``config`` with ``section__field=value`` overrides (as ``--config.section.field``)."""
    with config.unlocked():
        for key, value in fields.items():
            section, field = key.split("__")
            assert field in config[section], key  # an override flag of that name exists
            config[section][field] = value
    return config


def test_launcher_trains_on_an_image_folder(class_folder, tmp_path):
    """The cifar10 config on a folder, with a tiny class-conditional MLP instead of its U-Net
    (the U-Net's shapes are covered by the config tests): the data path, the held-out
    reference and the figure."""
    from experiments import train
    from experiments.configs import cifar10

    config = _override(
        cifar10.get_config(), data__name="image_folder", data__path=str(class_folder),
        data__image_size=8, data__batch_size=4, data__prefetch=0,
        model__class_conditional=True, model__name="mlp", model__hidden=16, model__depth=1,
        model__time_embed_dim=8, model__dtype="float32",
        train__num_steps=2, train__checkpoint_every=2, train__log_every=1,
        train__num_devices=1, optim__warmup_steps=1, sample__num_samples=4,
        sample__batch_size=4, sample__steps=2)
    summary = train.run(config, str(tmp_path / "run"))
    assert summary["step"] == 2 and np.isfinite(summary["train_metrics"]["loss"])
    # The samples are compared with the held-out image (b/08.png, every 20th file).
    held_out = local.load_image(class_folder / "b" / "08.png", 8)
    assert summary["quality"]["num_samples"] == 4
    assert summary["quality"]["data_mean"] == pytest.approx(held_out.mean())
    assert os.path.getsize(tmp_path / "run" / "samples.png") > 100


def test_launcher_trains_on_a_text_file(text_path, tmp_path):
    from experiments import train
    from experiments.configs import text_small

    config = _override(
        text_small.get_config(), data__name="text_file", data__path=str(text_path),
        data__seq_len=16, data__batch_size=8, data__prefetch=0, model__dim=16,
        model__depth=1, model__heads=2, model__cond_dim=8, train__num_steps=2,
        train__checkpoint_every=2, train__log_every=1, train__num_devices=1,
        optim__warmup_steps=1, sample__steps=4, sample__num_samples=4, sample__batch_size=4)
    summary = train.run(config, str(tmp_path / "run"))
    assert summary["step"] == 2 and np.isfinite(summary["train_metrics"]["loss"])
    samples = (tmp_path / "run" / "samples.txt").read_text(encoding="utf-8")
    assert set(samples) <= set(TEXT) | {"\n"}  # decoded through the file's own alphabet
    assert len(samples.splitlines()) >= 4
    assert 0.0 <= summary["quality"]["word_fraction"] <= 1.0
