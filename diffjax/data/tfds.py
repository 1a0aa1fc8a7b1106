"""TFDS image datasets (mnist, fashion_mnist, cifar10) read offline from a local ``data_dir``.

Reading goes through TFDS's array_record data sources (``builder.as_data_source(split)``),
which need neither TensorFlow nor a network: random access by index, images decoded to
uint8 numpy. Before anything from TFDS is touched, :func:`prepared_dir` checks on disk that
``<data_dir>/<name>/<version>/dataset_info.json`` exists, says array_record, and that the
split's files are present; otherwise it raises :class:`DatasetNotPreparedError` naming the
dataset, the data_dir and how to prepare it. The builder is then opened with
``tfds.builder_from_directory`` (a read-only builder made from the prepared folder: it has no
download code path at all), rather than ``tfds.builder(name)``, which instantiates the
dataset's download-capable builder class.

``data_dir`` defaults to ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (TFDS's own
default). Values: uint8 levels 0..255; preprocessing to ``[-1, 1]``, random flips and
uniform dequantisation are in :mod:`diffjax.data.preprocessing` (``MAX_VALUE = 255``).

:func:`write_synthetic_dataset` writes a small random dataset with the same name, layout and
features as a real one (array_record, no TensorFlow, no network) for tests and smoke runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import os
import pathlib
import re
from typing import Mapping

import numpy as np

__all__ = ["DATASETS", "DatasetNotPreparedError", "ImageSpec", "MAX_VALUE", "TfdsImageSource", "data_source",
           "default_data_dir", "prepared_dir", "write_synthetic_dataset"]


def __dir__():
    return sorted(__all__)


MAX_VALUE = 255
"""The largest pixel level of every TFDS image dataset here (uint8 levels 0..255)."""


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """What diffjax knows of a TFDS image dataset: the image ``shape`` (H, W, C), the number
    of classes and the TFDS version it was written against."""

    shape: tuple[int, int, int]
    num_classes: int
    version: str  # of the real TFDS dataset (informational; any prepared version is read)


DATASETS: dict[str, ImageSpec] = {
    "mnist": ImageSpec((28, 28, 1), 10, "3.0.1"),
    "fashion_mnist": ImageSpec((28, 28, 1), 10, "3.0.1"),
    "cifar10": ImageSpec((32, 32, 3), 10, "3.0.2"),
}
"""The supported TFDS image datasets: name -> :class:`ImageSpec`."""
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


class DatasetNotPreparedError(FileNotFoundError):
    """The requested TFDS dataset is not prepared (as array_record) in ``data_dir``."""


def default_data_dir() -> str:
    """TFDS's data folder: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def check_name(name: str) -> ImageSpec:
    """The :class:`ImageSpec` of ``name``, or a ValueError listing the supported names."""
    if name not in DATASETS:
        raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}.")
    return DATASETS[name]


def _how_to_prepare(name: str, data_dir: pathlib.Path) -> str:
    return (
        f"diffjax never downloads data. Prepare it on a machine with network access (TFDS "
        f"needs tensorflow there to encode the images):\n"
        f"    pip install tensorflow tensorflow-datasets\n"
        f"    tfds build {name} --data_dir={data_dir} --file_format=array_record\n"
        f"or copy an already prepared folder to {data_dir / name}/<version>/ (pass data_dir= "
        f"or set TFDS_DATA_DIR to point elsewhere). A copy prepared as tfrecord converts with\n"
        f"    tfds convert_format --dataset_dir={data_dir / name} --out_file_format=array_record")


def _split_names(split: str) -> list[str]:
    """Base split names of a TFDS split expression ("train[:90%]+test" -> train, test)."""
    return [part.split("[")[0].strip() for part in split.split("+")]


def prepared_dir(name: str, data_dir: str | os.PathLike | None = None,
                 split: str | None = None) -> pathlib.Path:
    """The newest prepared version folder of ``name``; checks the files, touches no TFDS code.

    Raises:
      ValueError: unknown ``name`` or a split the prepared dataset does not have.
      DatasetNotPreparedError: nothing prepared, not array_record, or split files missing.
    """
    check_name(name)
    data_dir = pathlib.Path(os.path.expanduser(str(data_dir or default_data_dir()))).absolute()
    root = data_dir / name
    versions = []
    if root.is_dir():
        versions = [p for p in root.iterdir()
                    if _VERSION_RE.match(p.name) and (p / "dataset_info.json").is_file()]
    if not versions:
        raise DatasetNotPreparedError(
            f"TFDS dataset {name!r} is not prepared in data_dir={data_dir} (no "
            f"{root}/<version>/dataset_info.json).\n" + _how_to_prepare(name, data_dir))
    path = max(versions, key=lambda p: tuple(int(v) for v in p.name.split(".")))
    info = json.loads((path / "dataset_info.json").read_text())
    file_format = info.get("fileFormat", "tfrecord")
    if file_format != "array_record":
        raise DatasetNotPreparedError(
            f"TFDS dataset {name!r} in {path} is prepared as {file_format}, but reading "
            f"without TensorFlow needs array_record.\n" + _how_to_prepare(name, data_dir))
    if split is not None:
        available = [s["name"] for s in info.get("splits", [])]
        for base in _split_names(split):
            if base not in available:
                raise ValueError(f"split must name splits of {name} among {available}, got "
                                 f"{split!r}.")
            if not any(path.glob(f"{name}-{base}.array_record-*")):
                raise DatasetNotPreparedError(
                    f"TFDS dataset {name!r} in {path} lists split {base!r} but its "
                    f"array_record files are missing (incomplete copy?).\n"
                    + _how_to_prepare(name, data_dir))
    return path


def data_source(name: str, split: str, data_dir: str | os.PathLike | None = None):
    """TFDS array_record data source of ``name``/``split`` (random access, numpy examples)."""
    path = prepared_dir(name, data_dir, split)
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    builder = tfds.builder_from_directory(path)
    return builder.as_data_source(split=split)


class TfdsImageSource:
    """Random-access source ``read(idx) -> {"x": uint8 (n, H, W, C), "label": int32 (n,)}``.

    Only the requested indices are read and decoded (each host reads only its shard). A batch
    is read and decoded in ``num_threads`` interleaved parts in parallel (order preserved;
    default ``min(8, cpu count)``).
    """

    def __init__(self, name: str, split: str, data_dir: str | os.PathLike | None = None,
                 num_threads: int | None = None):
        self.spec = check_name(name)
        self.name = name
        self._source = data_source(name, split, data_dir)
        self._threads = num_threads or min(8, os.cpu_count() or 1)
        self._pool = None

    def __len__(self) -> int:
        return len(self._source)

    def _records(self, indices: list[int]) -> list:
        if self._threads < 2 or len(indices) < 2 * self._threads:
            return self._source.__getitems__(indices)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, "diffjax-tfds")
        parts = [indices[i::self._threads] for i in range(self._threads)]
        decoded = list(self._pool.map(self._source.__getitems__, parts))
        records = [None] * len(indices)
        for i, part in enumerate(decoded):
            records[i::self._threads] = part
        return records

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        records = self._records([int(i) for i in indices])
        images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
        if images.shape[1:] != self.spec.shape:
            raise ValueError(f"{self.name}: images of shape {images.shape[1:]}, expected "
                             f"{self.spec.shape}")
        labels = np.asarray([r["label"] for r in records], np.int32)
        return {"x": images, "label": labels}


def _png(image: np.ndarray) -> bytes:
    import PIL.Image  # pylint: disable=import-outside-toplevel

    buf = io.BytesIO()
    PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="png")
    return buf.getvalue()


def write_synthetic_dataset(data_dir: str | os.PathLike, name: str,
                            num_examples: Mapping[str, int] | None = None,
                            seed: int = 0) -> pathlib.Path:
    """Writes random images in the layout of the real prepared ``name`` (array_record).

    Same folder structure, file names, features (``image``, ``label``), shapes and version as
    ``tfds build name --file_format=array_record`` produces, with uniformly random uint8
    pixels and labels ``i % num_classes``. Images are PNG-encoded with PIL, so neither
    TensorFlow nor a network is needed. Returns the version folder.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    spec = check_name(name)
    counts = dict(num_examples or {"train": 16, "test": 8})
    dataset_name = name

    class _Synthetic(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = dataset_name
        VERSION = tfds.core.Version(spec.version)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"Synthetic stand-in for {dataset_name} (random pixels).",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=spec.shape),
                    "label": tfds.features.ClassLabel(num_classes=spec.num_classes),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing is downloaded
            return {split: self._generate_examples(split, n) for split, n in counts.items()}

        def _generate_examples(self, split, n):
            rng = np.random.default_rng([seed, sorted(counts).index(split)])
            for i in range(n):
                image = rng.integers(0, 256, spec.shape, dtype=np.uint8)
                yield i, {"image": _png(image), "label": i % spec.num_classes}

    builder = _Synthetic(data_dir=os.fspath(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return pathlib.Path(builder.data_dir)

