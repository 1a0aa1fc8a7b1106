"""Offline datasets with deterministic, checkpointable, per-host sharded iteration.

One entry point for every dataset::

    ds = diffjax.data.get_dataset("digits", "train")
    it = ds.iterator(batch_size=128, seed=0)        # global batch size; this host's rows
    batch = next(it)                                 # {"x": float32 (128, 8, 8, 1), "label": int32}
    state = it.get_state()                           # {"seed", "epoch", "position"} -> checkpoint
    it = ds.iterator(batch_size=128, state=state)    # continues with exactly the same batches
    ds.info.shape, ds.info.num_classes, ds.info.postprocess(samples)  # metadata, inverse map

Names (``NAMES``):

* toy ``gaussian_ring``, ``two_moons``, ``swiss_roll``, ``checkerboard``: endless fresh exact
  draws (:mod:`diffjax.data.toy`); ``"x"`` float32 ``(B, 2)`` raw coordinates. Splits
  ``train``/``test`` are independent random streams.
* ``digits``: scikit-learn's 8x8 digits (:mod:`diffjax.data.digits`); ``"x"`` in ``[-1, 1]``,
  ``"label"``; splits ``train``/``test``/``all``.
* ``mnist``, ``fashion_mnist``, ``cifar10``: TFDS array_record datasets prepared in
  ``data_dir`` (:mod:`diffjax.data.tfds`); ``"x"`` in ``[-1, 1]``, ``"label"``; TFDS split
  names (``train``, ``test``, slices such as ``train[:90%]``).
* ``text8`` (file in ``data_dir``) and ``stdlib_text`` (offline corpus) -- see
  :mod:`diffjax.data.text`; ``"x"`` int32 token ids ``(B, seq_len)``. Splits: text8
  ``train``/``validation``/``test``; stdlib_text ``train``/``test``.
* ``imagenet256_latents``: precomputed Stable-Diffusion VAE latents of 256x256 ImageNet, one
  array_record file per split in ``data_dir`` (:mod:`diffjax.data.latents`, written by
  ``latents.write_latents``); ``"x"`` float32 ``(B, 32, 32, 4)`` already multiplied by the
  latent scale (``info.extra["scale"]``), ``"label"`` 0..999; the splits that were written.
  ``postprocess`` leaves latents as they are (decoding needs the VAE, outside diffjax).
* ``image_folder`` and ``text_file``: the user's own files at ``path`` (:mod:`diffjax.data.local`).
  image_folder: a folder of PNG/JPEG images, optionally one sub-folder per class (then
  ``"label"``); ``"x"`` in ``[-1, 1]`` of shape ``(image_size, image_size, C)``, C = 3, or 1
  when every image is grayscale; splits ``train``/``test`` (every 20th file)/``all``.
  text_file: any local file, ``"x"`` int32 token ids ``(B, seq_len)``; ``vocab="char"``
  (the file's sorted distinct UTF-8 characters, ``info.extra["alphabet"]``) or ``"byte"``;
  splits ``train``/``test`` (the last 5%).

Dataset options (keyword arguments of :func:`get_dataset`; others raise ValueError):

* images (digits and TFDS): ``dequantize=False`` (uniform dequantisation
  ``2 (x + u) / L - 1``), ``random_flip=False`` (left-right, p = 1/2); digits also
  ``holdout_fraction=0.2``, ``split_seed=0``.
* text: ``seq_len=256``, ``vocab="char"`` (27 symbols) or ``"byte"`` (256), ``cache_dir``.
* latents: none (no flips or dequantisation: the values are continuous).
* image_folder: ``path`` (required), ``image_size`` (required, > 0), ``dequantize=False``,
  ``random_flip=False``, ``cache=True`` (keep decoded images in memory).
* text_file: ``path`` (required), ``seq_len=256``, ``vocab="char"``.

Data that is not on disk raises ``DatasetNotPreparedError`` (a ``FileNotFoundError``; text8:
``FileNotFoundError``) naming the expected files and how to prepare them.

A batch (type ``Batch``, from :mod:`diffjax.data.pipeline`) is a dict of numpy arrays whose
first axis is the example: ``"x"``, and ``"label"`` / ``"mask"`` where the dataset has them.
Iteration semantics (shuffling per epoch, drop_remainder / padding with ``"mask"``, host
shards, resumable state) are described in :mod:`diffjax.data.pipeline`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import numpy as np

from diffjax.data import digits, latents, local, pipeline, preprocessing, text, tfds, toy
from diffjax.data.pipeline import Batch, DataIterator, DatasetInfo
from diffjax.data.tfds import DatasetNotPreparedError

__all__ = ["NAMES", "Batch", "DataIterator", "Dataset", "DatasetInfo", "DatasetNotPreparedError", "describe", "digits",
           "get_dataset", "get_iterator", "latents", "local", "pipeline", "preprocessing", "text", "tfds", "toy"]


def __dir__():
    return sorted(__all__)


NAMES = (toy.NAMES + ("digits",) + tuple(tfds.DATASETS) + text.NAMES + latents.NAMES
         + local.NAMES)
"""Every dataset name ``get_dataset`` accepts (toy, digits, TFDS, text, latents, local)."""
_IMAGE_OPTIONS = {"dequantize": False, "random_flip": False}
_OPTIONS: dict[str, dict[str, Any]] = {
    **{name: {} for name in toy.NAMES},
    "digits": {**_IMAGE_OPTIONS, "holdout_fraction": 0.2, "split_seed": 0},
    **{name: dict(_IMAGE_OPTIONS) for name in tfds.DATASETS},
    **{name: {"seq_len": 256, "vocab": "char", "cache_dir": None} for name in text.NAMES},
    **{name: {} for name in latents.NAMES},
    "image_folder": {**_IMAGE_OPTIONS, "path": None, "image_size": None, "cache": True},
    "text_file": {"path": None, "seq_len": 256, "vocab": "char"},
}
_TOY_SPLITS = ("train", "test")


def _default_processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # pylint: disable=import-outside-toplevel

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return process_index, process_count


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset split: metadata plus iterator factory.

    Attributes:
      info: :class:`DatasetInfo` (shape, ranges, classes, vocabulary, inverse transform).
      source: random-access source yielding model-space batches (``None`` for toy streams).
    """

    info: DatasetInfo
    source: pipeline.RandomAccessSource | None
    _augment: Callable[[Batch, Any], Batch] | None = None  # random, per example (iterator)
    _evaluate: Callable[[Batch, int], Batch] | None = None  # (batch, seed) for as_arrays
    _stream: Callable[[int, int, int], Batch] | None = None  # (seed, step, n) toy draws

    @property
    def num_examples(self) -> int | None:
        return self.info.num_examples

    def postprocess(self, x: np.ndarray) -> Any:
        """Model-space values back to the original range (see ``DatasetInfo.postprocess``)."""
        return self.info.postprocess(x)

    def iterator(self, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_remainder: bool = True, num_epochs: int | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 prefetch: int = 0, state: Mapping[str, int] | None = None) -> DataIterator:
        """This host's iterator over global batches of ``batch_size`` examples.

        ``process_index``/``process_count`` default to ``jax.process_index()`` /
        ``jax.process_count()``; each host receives ``batch_size // process_count`` rows.
        ``state`` (from ``get_state()``) resumes a previous iteration exactly. Toy streams
        ignore ``shuffle``/``drop_remainder``/``num_epochs`` (every batch is a fresh draw).
        """
        process_index, process_count = _default_processes(process_index, process_count)
        if self._stream is not None:
            stream = self._stream
            return pipeline.stream_iterator(
                lambda s, step: stream(s, step, batch_size), global_batch_size=batch_size,
                seed=seed, process_index=process_index, process_count=process_count,
                prefetch=prefetch, state=state)
        return pipeline.source_iterator(
            self.source, global_batch_size=batch_size, seed=seed, shuffle=shuffle,
            drop_remainder=drop_remainder, num_epochs=num_epochs, process_index=process_index,
            process_count=process_count, augment=self._augment, prefetch=prefetch, state=state)

    def __iter__(self):
        raise TypeError("call dataset.iterator(batch_size, ...) to iterate.")

    def as_arrays(self, num_examples: int | None = None, *, seed: int = 0) -> Batch:
        """The split in index order as model-space arrays (for evaluation).

        No shuffling and no flips; with ``dequantize=True`` the noise of example ``i`` comes
        from ``pipeline.example_rng(seed, 0, i)``. Toy datasets return ``num_examples`` exact
        draws (required) from the split's stream.
        """
        if self._stream is not None:
            if num_examples is None:
                raise ValueError("num_examples is required for toy (endless) datasets.")
            return self._stream(seed, 0, num_examples)
        n = len(self.source) if num_examples is None else min(num_examples, len(self.source))
        batch = dict(self.source.read(np.arange(n)))
        return self._evaluate(batch, seed) if self._evaluate is not None else batch


def _check_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    allowed = _OPTIONS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for dataset {name!r}; allowed: "
                         f"{sorted(allowed)}.")
    return {**allowed, **options}


def _image_info(name, split, max_value, shape, num_classes, dequantize, random_flip,
                num_examples) -> DatasetInfo:
    augment = preprocessing.ImageAugment(max_value, random_flip=random_flip,
                                         dequantize=dequantize)
    return DatasetInfo(
        name=name, split=split, shape=tuple(shape), dtype="float32", value_range=(-1.0, 1.0),
        original_range=(0, max_value), num_classes=num_classes, vocab_size=None,
        num_examples=num_examples, postprocess=augment.postprocess,
        extra={"dequantize": dequantize, "random_flip": random_flip})


def _image_dataset(name: str, split: str, source: pipeline.RandomAccessSource, max_value: int,
                   shape: tuple[int, ...], num_classes: int, dequantize: bool,
                   random_flip: bool) -> Dataset:
    augment = preprocessing.ImageAugment(max_value, random_flip=random_flip,
                                         dequantize=dequantize)
    info = _image_info(name, split, max_value, shape, num_classes, dequantize, random_flip,
                       len(source))
    if not augment.is_random:  # plain scaling inside the source: no per-example generators
        return Dataset(info=info, source=pipeline.MappedSource(source, augment.deterministic))
    no_flip = preprocessing.ImageAugment(max_value, dequantize=dequantize)

    def evaluate(batch: Batch, seed: int) -> Batch:
        if not no_flip.is_random:
            return no_flip.deterministic(batch)
        return no_flip(batch, [pipeline.example_rng(seed, 0, i) for i in range(len(batch["x"]))])

    return Dataset(info=info, source=source, _augment=augment, _evaluate=evaluate)


def _toy_dataset(name: str, split: str) -> Dataset:
    if split not in _TOY_SPLITS:
        raise ValueError(f"split must be one of {list(_TOY_SPLITS)} for {name}, got {split!r}.")
    tag = _TOY_SPLITS.index(split)

    def stream(seed: int, step: int, n: int) -> Batch:
        return {"x": toy.sample(name, n, seed=[tag, seed, step])}

    info = DatasetInfo(
        name=name, split=split, shape=(2,), dtype="float32", value_range=None,
        original_range=None, num_classes=None, vocab_size=None, num_examples=None,
        postprocess=np.asarray, extra={"exact_sampler": f"diffjax.data.toy.sample({name!r}, ...)"})
    return Dataset(info=info, source=None, _stream=stream)


def _text_info(name, split, seq_len, vocab, num_examples, extra) -> DatasetInfo:
    size = text.vocab_size(vocab)

    def postprocess(ids: np.ndarray) -> list[str]:
        ids = np.asarray(ids)
        return [text.decode(row, vocab) for row in ids.reshape(-1, ids.shape[-1])]

    return DatasetInfo(
        name=name, split=split, shape=(int(seq_len),), dtype="int32",
        value_range=(0, size - 1), original_range=None, num_classes=None, vocab_size=size,
        num_examples=num_examples, postprocess=postprocess, extra=extra)


def _text_dataset(name: str, split: str, data_dir, seq_len: int, vocab: str,
                  cache_dir) -> Dataset:
    raw = text.split_text(name, split, data_dir=data_dir, cache_dir=cache_dir)
    source = text.TextChunks(text.encode(raw, vocab), seq_len)

    info = _text_info(name, split, source.seq_len, vocab, len(source),
                      {"num_chars": len(raw), "vocab": vocab,
                       "unigram_entropy_bits": text.unigram_entropy_bits(raw)})
    return Dataset(info=info, source=source)


def _latent_info(name, split, shape, num_classes, num_examples, extra) -> DatasetInfo:
    def postprocess(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32)  # latents stay (scaled) latents: no decoder here

    return DatasetInfo(
        name=name, split=split, shape=tuple(shape), dtype="float32", value_range=None,
        original_range=None, num_classes=num_classes, vocab_size=None,
        num_examples=num_examples, postprocess=postprocess,
        extra={**extra,
               "decode": "images = vae.decode(x / scale) with the VAE that encoded them"})


def _latent_dataset(name: str, split: str, data_dir) -> Dataset:
    source = latents.LatentSource(name, split, data_dir)

    info = _latent_info(name, split, source.shape, source.num_classes, len(source),
                        {"scale": source.scale, "stored_dtype": source.stored_dtype,
                         "path": str(source.path)})
    return Dataset(info=info, source=source)


def _image_folder_dataset(split: str, opts: Mapping[str, Any]) -> Dataset:
    source = local.ImageFolderSource(opts["path"], split, opts["image_size"],
                                     cache=opts["cache"])
    ds = _image_dataset("image_folder", split, source, local.MAX_VALUE, source.shape,
                        source.num_classes, opts["dequantize"], opts["random_flip"])
    extra = {**ds.info.extra, "path": str(source.root.absolute()),
             "num_files": source.num_files, "class_names": source.class_names,
             "channels": source.channels}
    return dataclasses.replace(ds, info=dataclasses.replace(ds.info, extra=extra))


def _text_file_dataset(split: str, opts: Mapping[str, Any]) -> Dataset:
    source = local.TextFileSource(opts["path"], split, seq_len=opts["seq_len"],
                                  vocab=opts["vocab"])
    vocab, alphabet = source.vocab, source.alphabet

    def postprocess(ids: np.ndarray) -> list[str]:
        ids = np.asarray(ids)
        return [local.decode_tokens(row, vocab, alphabet)
                for row in ids.reshape(-1, ids.shape[-1])]

    extra = {"path": str(source.path.absolute()), "vocab": vocab,
             "num_tokens": len(source.tokens), "num_file_tokens": source.num_file_tokens,
             "unigram_entropy_bits": text.unigram_entropy_bits(source.tokens)}
    if alphabet is not None:
        extra["alphabet"] = alphabet
    info = DatasetInfo(
        name="text_file", split=split, shape=(source.seq_len,), dtype="int32",
        value_range=(0, source.vocab_size - 1), original_range=None, num_classes=None,
        vocab_size=source.vocab_size, num_examples=len(source), postprocess=postprocess,
        extra=extra)
    return Dataset(info=info, source=source)


def get_dataset(name: str, split: str = "train", *,
                data_dir: str | os.PathLike | None = None, **options: Any) -> Dataset:
    """The :class:`Dataset` ``name``/``split`` (see the module docstring for names/options).

    ``data_dir``: where TFDS datasets are prepared (default ``$TFDS_DATA_DIR`` or
    ``~/tensorflow_datasets``) or where the text8 file or the latent folders lie (default
    ``$DIFFJAX_DATA_DIR`` or ``~/.cache/diffjax``). Nothing is ever downloaded: missing data
    raises an error that says how to provide it.
    """
    if name not in NAMES:
        raise ValueError(f"name must be one of {list(NAMES)}, got {name!r}.")
    opts = _check_options(name, options)
    if name in toy.NAMES:
        return _toy_dataset(name, split)
    if name == "digits":
        source = digits.DigitsSource(split, holdout_fraction=opts["holdout_fraction"],
                                     split_seed=opts["split_seed"])
        return _image_dataset(name, split, source, digits.MAX_VALUE, digits.SHAPE,
                              digits.NUM_CLASSES, opts["dequantize"], opts["random_flip"])
    if name in tfds.DATASETS:
        spec = tfds.DATASETS[name]
        source = tfds.TfdsImageSource(name, split, data_dir)
        return _image_dataset(name, split, source, tfds.MAX_VALUE, spec.shape,
                              spec.num_classes, opts["dequantize"], opts["random_flip"])
    if name in latents.DATASETS:
        return _latent_dataset(name, split, data_dir)
    if name == "image_folder":
        return _image_folder_dataset(split, opts)
    if name == "text_file":
        return _text_file_dataset(split, opts)
    return _text_dataset(name, split, data_dir, opts["seq_len"], opts["vocab"],
                         opts["cache_dir"])


def describe(name: str, split: str = "train", **options: Any) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``get_dataset(name, split, **options)`` from what is known
    without the data (shape, dtype, classes, vocabulary, ranges, inverse transform): for
    compiling and sizing a model whose data is not on this machine. ``num_examples`` and
    data-dependent ``extra`` facts are None / absent for datasets read from disk. The user's
    local ``image_folder`` / ``text_file`` are read (folder listing and image headers; the
    text file, for its alphabet), as their shape or vocabulary depends on the files."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {list(NAMES)}, got {name!r}.")
    opts = _check_options(name, options)
    if name in toy.NAMES or name == "digits" or name in local.NAMES:  # here, or bundled
        return get_dataset(name, split, **options).info
    if name in tfds.DATASETS:
        spec = tfds.DATASETS[name]
        return _image_info(name, split, tfds.MAX_VALUE, spec.shape, spec.num_classes,
                           opts["dequantize"], opts["random_flip"], None)
    if name in latents.DATASETS:
        spec = latents.DATASETS[name]
        return _latent_info(name, split, spec.shape, spec.num_classes, None,
                            {"scale": spec.scale})
    return _text_info(name, split, opts["seq_len"], opts["vocab"], None,
                      {"vocab": opts["vocab"]})


def get_iterator(name: str, split: str = "train", *, batch_size: int,
                 data_dir: str | os.PathLike | None = None, seed: int = 0,
                 shuffle: bool = True, drop_remainder: bool = True,
                 num_epochs: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, prefetch: int = 0,
                 state: Mapping[str, int] | None = None, **options: Any) -> DataIterator:
    """Shortcut: ``get_dataset(name, split, data_dir=..., **options).iterator(...)``."""
    return get_dataset(name, split, data_dir=data_dir, **options).iterator(
        batch_size, seed=seed, shuffle=shuffle, drop_remainder=drop_remainder,
        num_epochs=num_epochs, process_index=process_index, process_count=process_count,
        prefetch=prefetch, state=state)

