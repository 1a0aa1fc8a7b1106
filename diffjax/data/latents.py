"""Precomputed VAE latents (``imagenet256_latents``) read offline from a local ``data_dir``.

Latent diffusion (DiT, Peebles & Xie 2023) trains on images encoded once by a frozen VAE.
diffjax does not run the VAE: the user encodes the images on a machine that has them and
writes the latents with :func:`write_latents`; training then reads the folder with
random access, like any other :mod:`diffjax.data` source.

Datasets (``DATASETS``)
    ``imagenet256_latents``: ImageNet-1k at 256x256 (ADM-style center crop) encoded by the
    Stable-Diffusion VAE (``stabilityai/sd-vae-ft-ema`` or ``-mse``): latents of shape
    ``(32, 32, 4)`` (NHWC, 8x downsampling), labels 0..999, latent scale factor ``0.18215``.

On-disk format (``FORMAT = "diffjax-latents"``, ``FORMAT_VERSION = 1``)
    One folder ``<data_dir>/<name>/`` holding

    * ``info.json``: ``{"format": "diffjax-latents", "format_version": 1, "name": ...,
      "shape": [32, 32, 4], "dtype": "float16" | "float32", "num_classes": 1000,
      "scale": 0.18215, "splits": {"train": 1281167, ...}}`` -- ``shape`` and ``dtype`` of
      the stored latents, the factor the latents are multiplied by when read, and the number
      of examples of every prepared split;
    * ``<split>.array_record``, one file per split (split names: letters, digits, ``_``,
      ``-``, ``.``; no TFDS slicing), written with ``group_size:1`` (TFDS's random-access
      layout), uncompressed. Record ``i`` is example ``i``: the raw latent bytes in C order,
      little-endian ``dtype`` (``prod(shape) * itemsize`` bytes, *unscaled*: as the VAE
      encoder produced them), followed by its label as a 4-byte little-endian int32.
      Every record has the same length, so a batch is decoded with one ``np.frombuffer``.

    Latents are stored unscaled so that one folder serves any scale convention; float16
    halves the disk (256x256 ImageNet: 8 KiB per example, about 10 GiB for the train split)
    and is the default of :func:`write_latents`.

Reading
    ``get_dataset("imagenet256_latents", split, data_dir=...)`` yields ``{"x": float32
    (B, 32, 32, 4) = stored latents * scale, "label": int32 (B,)}``. Latents stay latents:
    ``info.postprocess`` returns them unchanged (float32, still scaled); to see images, divide
    by ``info.extra["scale"]`` and run the VAE decoder (``vae.decode(x / scale)``), which is
    not part of diffjax. No dataset options (no flips, no dequantisation: values are
    continuous). ``data_dir`` defaults to ``$DIFFJAX_DATA_DIR``, else ``~/.cache/diffjax``
    (as for text8). Nothing is downloaded: before any file is opened, :func:`prepared_dir`
    checks the folder, ``info.json`` and the split's file, and raises
    :class:`DatasetNotPreparedError` (the one of :mod:`diffjax.data.tfds`, a
    ``FileNotFoundError``) naming what is missing and how to write it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import threading
from typing import Any

import numpy as np

from diffjax.data import text
from diffjax.data.tfds import DatasetNotPreparedError

__all__ = ["DATASETS", "DTYPES", "DatasetNotPreparedError", "FORMAT", "FORMAT_VERSION", "INFO_FILE", "LatentSource",
           "LatentSpec", "NAMES", "default_data_dir", "prepared_dir", "read_info", "record_bytes", "split_path",
           "write_latents"]


def __dir__():
    return sorted(__all__)


FORMAT = "diffjax-latents"
"""The ``"format"`` entry of ``info.json`` that marks a latents folder."""
FORMAT_VERSION = 1
"""The version of the on-disk format this module reads and writes (``info.json``'s
``"format_version"``)."""
INFO_FILE = "info.json"
"""The name of the metadata file in ``<data_dir>/<name>/``."""
SUFFIX = ".array_record"
"""The suffix of a split's records file, ``<split>.array_record``."""
DTYPES = ("float16", "float32")
"""The dtypes latents may be stored in."""
_LABEL_BYTES = 4
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_WRITE_CHUNK = 1024  # rows converted at a time (memory-mapped inputs stay on disk)


@dataclasses.dataclass(frozen=True)
class LatentSpec:
    """A latents dataset: the ``shape`` (H, W, C) of one latent (NHWC), the number of classes,
    the VAE's latent ``scale`` factor (the default of :func:`write_latents`) and a one-line
    ``description`` of the images and the VAE."""

    shape: tuple[int, int, int]  # (H, W, C) of one latent, NHWC
    num_classes: int
    scale: float  # the VAE's latent scale factor (default of write_latents)
    description: str


DATASETS: dict[str, LatentSpec] = {
    "imagenet256_latents": LatentSpec(
        (32, 32, 4), 1000, 0.18215,
        "ImageNet-1k 256x256 encoded by the Stable-Diffusion VAE"),
}
"""The known latents datasets: name -> :class:`LatentSpec`."""
NAMES = tuple(DATASETS)
"""The latents dataset names (``imagenet256_latents``)."""


def check_name(name: str) -> LatentSpec:
    """The :class:`LatentSpec` of ``name``, or a ValueError listing the known names."""
    if name not in DATASETS:
        raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}.")
    return DATASETS[name]


def default_data_dir() -> pathlib.Path:
    """``$DIFFJAX_DATA_DIR``, else ``~/.cache/diffjax`` (the same default as text8)."""
    return text.default_data_dir()


def _data_dir(data_dir: str | os.PathLike | None) -> pathlib.Path:
    path = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()
    return path.absolute()


def _check_split(split: str) -> str:
    if not isinstance(split, str) or not _SPLIT_RE.match(split):
        raise ValueError(f"split must be a plain split name (letters, digits, '_', '-', '.'; "
                         f"no slicing), got {split!r}.")
    return split


def split_path(root: str | os.PathLike, split: str) -> pathlib.Path:
    """``<root>/<split>.array_record`` (``root`` = ``<data_dir>/<name>``)."""
    return pathlib.Path(root) / f"{_check_split(split)}{SUFFIX}"


def record_bytes(shape, dtype: str) -> int:
    """Length of one record: the latent bytes plus the 4-byte label."""
    return int(np.prod(shape)) * np.dtype(dtype).itemsize + _LABEL_BYTES


def _how_to_prepare(name: str, data_dir: pathlib.Path, split: str) -> str:
    spec = DATASETS[name]
    h, w, c = spec.shape
    return (
        f"diffjax never downloads data and does not run the VAE. Encode the images "
        f"({spec.description}) on a machine that has them, into NHWC latents of shape "
        f"(N, {h}, {w}, {c}) (unscaled encoder output; transpose diffusers' (N, {c}, {h}, {w}) "
        f"with .transpose(0, 2, 3, 1)) "
        f"and int labels (N,), then write every split with\n"
        f"    diffjax.data.latents.write_latents({str(data_dir)!r}, {name!r}, {split!r}, "
        f"latents, labels, scale={spec.scale})\n"
        f"which writes {data_dir / name / INFO_FILE} and {data_dir / name / (split + SUFFIX)}; "
        f"or copy an already prepared folder to {data_dir / name}/ (pass data_dir= or set "
        f"DIFFJAX_DATA_DIR to point elsewhere).")


def read_info(root: str | os.PathLike) -> dict[str, Any]:
    """``<root>/info.json``, validated (``ValueError`` when it is not this format)."""
    path = pathlib.Path(root) / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rewrite the folder with "
                         f"diffjax.data.latents.write_latents.") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT!r} info file (format "
                         f"{info.get('format') if isinstance(info, dict) else None!r}).")
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {info.get('format_version')!r}; this "
                         f"diffjax reads version {FORMAT_VERSION}.")
    if info.get("dtype") not in DTYPES:
        raise ValueError(f"{path}: dtype must be one of {list(DTYPES)}, got "
                         f"{info.get('dtype')!r}.")
    if not isinstance(info.get("splits"), dict):
        raise ValueError(f"{path}: 'splits' must map split names to example counts.")
    if not isinstance(info.get("scale"), (int, float)) or not info["scale"] > 0:
        raise ValueError(f"{path}: scale must be a positive number, got {info.get('scale')!r}.")
    info["shape"] = [int(s) for s in info.get("shape") or []]
    return info


def prepared_dir(name: str, data_dir: str | os.PathLike | None = None,
                 split: str | None = None) -> tuple[pathlib.Path, dict[str, Any]]:
    """``(<data_dir>/<name>, its info.json)`` after checking the files on disk.

    Raises:
      ValueError: unknown ``name``, a malformed split name, or an ``info.json`` that does not
        describe ``name`` (other shape / classes).
      DatasetNotPreparedError: no folder, no ``info.json``, the split not written, or its
        file missing / truncated.
    """
    spec = check_name(name)
    data_dir = _data_dir(data_dir)
    root = data_dir / name
    shown = "train" if split is None else _check_split(split)
    if not (root / INFO_FILE).is_file():
        what = f"no folder {root}" if not root.is_dir() else f"no {root / INFO_FILE}"
        raise DatasetNotPreparedError(
            f"latent dataset {name!r} is not prepared in data_dir={data_dir} ({what}; "
            f"expected {root / INFO_FILE} and {root}/<split>{SUFFIX}).\n"
            + _how_to_prepare(name, data_dir, shown))
    info = read_info(root)
    if tuple(info["shape"]) != spec.shape or int(info.get("num_classes", -1)) != spec.num_classes:
        raise ValueError(
            f"{root / INFO_FILE} describes latents of shape {tuple(info['shape'])} with "
            f"{info.get('num_classes')} classes, but {name!r} has shape {spec.shape} and "
            f"{spec.num_classes} classes; rewrite it with write_latents.")
    if split is None:
        return root, info
    if split not in info["splits"]:
        raise DatasetNotPreparedError(
            f"latent dataset {name!r} in {root} has no split {split!r} (info.json lists "
            f"{sorted(info['splits'])}; expected {split_path(root, split)}).\n"
            + _how_to_prepare(name, data_dir, split))
    path = split_path(root, split)
    expected = int(info["splits"][split])
    if not path.is_file():
        raise DatasetNotPreparedError(
            f"latent dataset {name!r} in {root} lists split {split!r} ({expected} examples) "
            f"but {path} is missing (incomplete copy?).\n"
            + _how_to_prepare(name, data_dir, split))
    return root, info


def _open_reader(path: pathlib.Path):
    from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel

    # Random-access settings (as array_record's own data source); the constructor does not
    # raise on a bad file, ok() says whether it could be read.
    reader = array_record_module.ArrayRecordReader(os.fspath(path), "readahead_buffer_size:0")
    if reader.ok():
        return reader, ""
    try:
        reader.close()  # raises the reason (e.g. "file should be at least 64KB big")
    except RuntimeError as err:
        return None, f": {err}"
    return None, ""


class LatentSource:
    """Random-access source ``read(idx) -> {"x": float32 (n, H, W, C) scaled latents,
    "label": int32 (n,)}`` over ``<data_dir>/<name>/<split>.array_record``."""

    def __init__(self, name: str, split: str, data_dir: str | os.PathLike | None = None):
        root, info = prepared_dir(name, data_dir, split)
        self.name, self.split, self.root = name, split, root
        self.path = split_path(root, split)
        self.shape = tuple(info["shape"])
        self.stored_dtype = info["dtype"]
        self.scale = float(info["scale"])
        self.num_classes = int(info["num_classes"])
        self._latent_dtype = np.dtype(self.stored_dtype).newbyteorder("<")
        self._record = record_bytes(self.shape, self.stored_dtype)
        expected = int(info["splits"][split])
        self._reader, why = _open_reader(self.path)
        n = -1 if self._reader is None else int(self._reader.num_records())
        if n != expected:
            if self._reader is not None:
                self._reader.close()
            found = f"has {n} records" if n >= 0 else f"is not a readable array_record file{why}"
            raise DatasetNotPreparedError(
                f"latent dataset {name!r}: {self.path} {found}; info.json says {expected} "
                f"examples (truncated or foreign file?).\n"
                + _how_to_prepare(name, root.parent, split))
        self._num_examples = expected
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._num_examples

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        with self._lock:
            records = self._reader.read(indices) if indices else []
        if any(len(r) != self._record for r in records):
            bad = next(len(r) for r in records if len(r) != self._record)
            raise ValueError(f"{self.path}: a record of {bad} bytes, expected {self._record} "
                             f"(shape {self.shape} {self.stored_dtype} + int32 label).")
        raw = np.frombuffer(b"".join(records), np.uint8).reshape(len(records), self._record)
        latents = np.ascontiguousarray(raw[:, :-_LABEL_BYTES]).view(self._latent_dtype)
        labels = np.ascontiguousarray(raw[:, -_LABEL_BYTES:]).view("<i4").reshape(-1)
        x = latents.reshape((len(records),) + self.shape).astype(np.float32)
        return {"x": x * np.float32(self.scale), "label": labels.astype(np.int32)}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _write_json_atomic(path: pathlib.Path, obj: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_latents(data_dir: str | os.PathLike, name: str, split: str, latents, labels, *,
                  scale: float | None = None, dtype: str = "float16") -> pathlib.Path:
    """Writes ``split`` of latent dataset ``name`` in the format of the module docstring.

    Args:
      data_dir: the data folder; files go to ``<data_dir>/<name>/``.
      name: a name of ``DATASETS`` (``"imagenet256_latents"``).
      split: split name (``"train"``, ``"validation"``, ...).
      latents: ``(N, H, W, C)`` NHWC array of *unscaled* VAE encoder outputs with the
        dataset's ``(H, W, C)`` (any float dtype; an ``np.memmap`` / ``np.load(...,
        mmap_mode="r")`` array is written in chunks without loading it whole).
      labels: ``(N,)`` integer class labels in ``[0, num_classes)``.
      scale: latent scale factor recorded in ``info.json`` (read values are multiplied by
        it); default: the dataset's (``0.18215`` for the SD VAE).
      dtype: stored precision, ``"float16"`` (default) or ``"float32"``.

    Creates or updates ``info.json`` (its shape, dtype, scale and classes must match those of
    splits written before) and replaces the split's file if it exists. Files are written
    under temporary names and renamed, so a crash never leaves a half-written split behind.
    Returns the dataset folder.
    """
    spec = check_name(name)
    split = _check_split(split)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}.")
    scale = float(spec.scale if scale is None else scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}.")
    shape = tuple(np.shape(latents))
    if len(shape) != 4 or shape[1:] != spec.shape:
        hint = ""
        if len(shape) == 4 and (shape[1], shape[2], shape[3]) == (spec.shape[2],) + spec.shape[:2]:
            hint = " (NCHW? transpose with latents.transpose(0, 2, 3, 1))"
        raise ValueError(f"latents must have shape (N, {', '.join(map(str, spec.shape))}) "
                         f"(NHWC) for {name!r}, got {shape}{hint}.")
    labels = np.asarray(labels)
    n = shape[0]
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array of shape ({n},), got "
                         f"{labels.dtype} {labels.shape}.")
    if n and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise ValueError(f"labels must lie in [0, {spec.num_classes}), got values in "
                         f"[{labels.min()}, {labels.max()}].")
    if n == 0:
        raise ValueError("latents must hold at least one example.")

    root = pathlib.Path(data_dir).expanduser().absolute() / name
    root.mkdir(parents=True, exist_ok=True)
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name,
            "shape": list(spec.shape), "dtype": dtype, "num_classes": spec.num_classes,
            "scale": scale, "splits": {}}
    if (root / INFO_FILE).is_file():
        old = read_info(root)
        for key in ("shape", "dtype", "num_classes", "scale"):
            if old.get(key) != info[key]:
                raise ValueError(
                    f"{root / INFO_FILE} has {key}={old.get(key)!r} but this split would be "
                    f"written with {key}={info[key]!r}; all splits of a folder share them "
                    f"(write to another data_dir, or delete the folder first).")
        info["splits"] = dict(old["splits"])

    from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel

    path = split_path(root, split)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    stored = np.dtype(dtype).newbyteorder("<")
    label_bytes = labels.astype("<i4")
    writer = array_record_module.ArrayRecordWriter(os.fspath(tmp), "group_size:1,uncompressed")
    try:
        for start in range(0, n, _WRITE_CHUNK):
            with np.errstate(over="ignore"):  # overflow to inf is reported just below
                chunk = np.asarray(latents[start:start + _WRITE_CHUNK]).astype(stored)
            if not np.all(np.isfinite(chunk)):
                raise ValueError(f"latents {start}..{start + len(chunk) - 1} contain NaN or "
                                 f"inf after conversion to {dtype} (overflow?).")
            for i, row in enumerate(chunk):
                writer.write(row.tobytes(order="C") + label_bytes[start + i].tobytes())
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, path)
    info["splits"][split] = int(n)
    _write_json_atomic(root / INFO_FILE, info)
    return root

