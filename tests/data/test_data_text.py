"""Text data: normalisation, the stdlib corpus (exact on a synthetic tree), text8, chunks."""
import sysconfig
import zipfile

import numpy as np
import pytest

from diffjax.data import get_dataset, text

SOURCE = '''#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Module DOC: Hello, World!"""
import os  # noqa: F401

x = 1  # type: int


class Thing:
    """The 2nd thing; café   au lait."""

    def method(self):
        """Return 42 -- always."""
        # Compute the answer.
        return 42  # pragma: no cover


def greek():
    """Αυτό είναι ελληνικά."""
'''


def test_normalize():
    assert text.normalize("Hello, World! 42 times\n\tDONE") == "hello world times done"
    assert text.normalize("naïve café") == "na ve caf"  # non-ASCII letters are separators
    assert text.normalize("  ...  ") == ""
    assert text.normalize("K\u212a") == "k"  # Kelvin sign is not ASCII: not lower-cased to k


def test_source_pieces_order_and_directives():
    assert text.source_pieces(SOURCE) == [
        "Module DOC: Hello, World!", "The 2nd thing; café   au lait.", "Return 42 -- always.",
        "Compute the answer.", "Αυτό είναι ελληνικά."]


def test_build_corpus_exact_on_synthetic_tree(tmp_path):
    (tmp_path / "a.py").write_text(SOURCE, encoding="utf-8")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "c.py").write_text("# Second file.\n", encoding="utf-8")
    (tmp_path / "b" / "test_c.py").write_text("# skipped test file\n")
    for skipped in ("test", "tests", "encodings", "__pycache__"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "z.py").write_text("# skipped directory\n")
    (tmp_path / "binary.py").write_bytes(b"\x00\xff\xfe garbage \x00")
    (tmp_path / "broken.py").write_text("def f(:\n    # not parsed\n")
    (tmp_path / "notes.txt").write_text("not python")
    expected = ("module doc hello world the nd thing caf au lait return always "
                "compute the answer second file")
    assert text.build_stdlib_corpus(tmp_path) == expected


def test_real_stdlib_subset_deterministic():
    root = sysconfig.get_paths()["stdlib"] + "/json"
    a, b = text.build_stdlib_corpus(root), text.build_stdlib_corpus(root)
    assert a == b and len(a) > 5000
    assert set(a) <= set(text.CHARS) and "  " not in a and a == a.strip()
    assert "serialize" in a.split()


@pytest.fixture(scope="module")
def stdlib_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    corpus = text.stdlib_corpus(cache)  # full build, once
    return cache, corpus


def test_stdlib_corpus_cached_and_well_formed(stdlib_cache):
    cache, corpus = stdlib_cache
    path = text.stdlib_corpus_path(cache)
    assert path.is_file() and path.read_text() == corpus
    import platform
    assert platform.python_version() in path.name
    assert text.stdlib_corpus(cache) == corpus
    assert len(corpus) > 1_000_000
    assert set(corpus) == set(text.CHARS) and "  " not in corpus
    h = text.unigram_entropy_bits(corpus)
    assert 3.5 < h < np.log2(27)
    train = text.block_split(corpus, "train")
    test = text.block_split(corpus, "test")
    assert len(train) + len(test) == len(corpus)
    blocks = [corpus[i:i + text.BLOCK_CHARS] for i in range(0, len(corpus), text.BLOCK_CHARS)]
    assert test == "".join(blocks[19::20])
    assert abs(len(test) / len(corpus) - 0.05) < 0.01


def test_stdlib_dataset_chunks_and_iterator(stdlib_cache):
    cache, corpus = stdlib_cache
    ds = get_dataset("stdlib_text", "test", seq_len=64, cache_dir=cache)
    held_out = text.block_split(corpus, "test")
    assert ds.info.vocab_size == 27 and ds.info.shape == (64,) and ds.info.dtype == "int32"
    assert ds.info.extra["num_chars"] == len(held_out)
    assert ds.num_examples == len(held_out) // 64
    batches = list(ds.iterator(16, shuffle=False, num_epochs=1, process_index=0, process_count=1))
    decoded = "".join(s for b in batches for s in ds.postprocess(b["x"]))
    assert decoded == held_out[:len(decoded)] and len(decoded) == (ds.num_examples // 16) * 16 * 64
    it = ds.iterator(8, seed=2, process_index=0, process_count=1)
    [next(it) for _ in range(3)]
    resumed = ds.iterator(8, state=it.get_state(), process_index=0, process_count=1)
    np.testing.assert_array_equal(next(resumed)["x"], next(it)["x"])
    byte_ds = get_dataset("stdlib_text", "test", seq_len=64, vocab="byte", cache_dir=cache)
    assert byte_ds.info.vocab_size == 256
    first = next(byte_ds.iterator(4, shuffle=False, process_index=0, process_count=1))["x"]
    assert byte_ds.postprocess(first)[0] == held_out[:64]


def test_vocabularies_round_trip_and_entropy():
    s = "the quick brown fox jumps over the lazy dog"
    ids = text.encode(s)
    assert ids.max() < 27 and ids[3] == 0 and ids[0] == ord("t") - ord("a") + 1
    assert text.decode(ids) == s
    assert text.decode(text.encode(s, "byte"), "byte") == s
    with pytest.raises(ValueError, match="outside a-z"):
        text.encode("Hello")
    with pytest.raises(ValueError, match="vocab must be one of"):
        text.encode(s, "word")
    assert text.unigram_entropy_bits("abab") == pytest.approx(1.0)
    assert text.unigram_entropy_bits(text.CHARS) == pytest.approx(np.log2(27))
    assert text.unigram_entropy_bits(np.array([5, 5, 5, 7], np.int32)) == pytest.approx(
        -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))


def test_text8_missing_file_names_expected_paths(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        get_dataset("text8", "train", data_dir=tmp_path)
    assert str(tmp_path / "text8") in str(err.value)
    assert str(tmp_path / "text8.zip") in str(err.value)
    with pytest.raises(FileNotFoundError, match="data_default"):  # $DIFFJAX_DATA_DIR default
        text.text8_path()


@pytest.mark.parametrize("as_zip", [False, True])
def test_text8_split_from_local_file(tmp_path, as_zip):
    rng = np.random.default_rng(0)
    content = text.decode(rng.integers(0, 27, 20_000))
    if as_zip:
        with zipfile.ZipFile(tmp_path / "text8.zip", "w") as zf:
            zf.writestr("text8", content)
    else:
        (tmp_path / "text8").write_text(content)
    parts = {s: get_dataset("text8", s, data_dir=tmp_path, seq_len=100)
             for s in ("train", "validation", "test")}
    # 90/5/5 split: for the real 100M-character file exactly 90M/5M/5M.
    assert [parts[s].info.extra["num_chars"] for s in parts] == [18_000, 1_000, 1_000]
    assert [parts[s].num_examples for s in parts] == [180, 10, 10]
    test_batch = next(parts["test"].iterator(10, shuffle=False, process_index=0, process_count=1))
    assert "".join(parts["test"].postprocess(test_batch["x"])) == content[19_000:]
    (tmp_path / "text8.zip").unlink(missing_ok=True)
    (tmp_path / "text8").write_text("Not Text8!")
    with pytest.raises(ValueError, match="only a-z and space"):
        get_dataset("text8", "train", data_dir=tmp_path)


def test_unknown_options_and_splits(stdlib_cache):
    cache, _ = stdlib_cache
    with pytest.raises(ValueError, match="split must be one of"):
        get_dataset("stdlib_text", "validation", cache_dir=cache)
    with pytest.raises(ValueError, match="seq_len must be"):
        get_dataset("stdlib_text", "test", cache_dir=cache, seq_len=0)
