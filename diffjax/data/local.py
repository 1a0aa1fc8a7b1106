"""The user's own local data: a folder of images (``image_folder``), a text file (``text_file``).

Both are read from ``path`` (the ``get_dataset`` option; ``--config.data.path`` in the
launchers); nothing is downloaded and ``data_dir`` is not used.

``image_folder`` (:class:`ImageFolderSource`)
    Files: every file under ``path`` whose name ends in one of ``IMAGE_EXTENSIONS``
    (``.png``, ``.jpg``, ``.jpeg``, any case); names starting with ``.`` (hidden files and
    folders) and files with other extensions are ignored. Two layouts:

    * images directly in ``path`` (sub-folders without images are ignored): unconditional,
      batches have no ``"label"``, ``num_classes`` is None;
    * one sub-folder per class (images anywhere below it): labels ``0..K-1`` follow the
      sorted sub-folder names (``info.extra["class_names"]``); every class folder must hold
      at least one image, and images directly in ``path`` next to class folders are refused.

    Order: files sorted by their path relative to ``path`` (``/``-separated, code-point
    order). Held-out split: position ``i`` of that order belongs to ``"test"`` when
    ``i % HELDOUT_EVERY == HELDOUT_EVERY - 1`` (every 20th file, 5%), else to ``"train"``;
    ``"all"`` is every file. A folder of fewer than 20 images has no ``"test"`` split
    (:class:`EmptySplitError`).

    Pixels: EXIF orientation is applied; the image becomes RGB (3 channels: palette, CMYK
    and grayscale images are converted, an alpha channel is dropped), unless *every* image of
    the folder is grayscale (PIL modes ``1``, ``L``, ``LA``, ``I``, ``I;16*``), in which case
    all are kept as 1-channel grayscale; 16-bit grayscale is scaled to 8 bits
    (``round(v / 257)``). Resizing follows ADM's ``center_crop_arr``: while the shorter
    side is at least ``2 N`` the image is halved (``BOX`` filter, sizes ``w // 2, h // 2``),
    then scaled by ``N / shorter side`` (``BICUBIC``, sizes rounded; no-op when the shorter
    side is already ``N``), then the central ``N x N`` window is cut out (offsets
    ``(h - N) // 2``, ``(w - N) // 2``). ``"x"`` is uint8 ``(n, N, N, C)`` with levels 0..255,
    so the shared image preprocessing (``[-1, 1]`` scaling, dequantisation, flips) applies.

    Decoding is lazy: constructing a source reads only the file headers (modes and sizes);
    a batch decodes the images it needs (only this host's rows), in up to 8 threads. With
    ``cache=True`` (default) each decoded, resized image is kept in memory after its first
    read, which costs ``num_examples * N * N * C`` bytes once every image has been read (e.g.
    100,000 images at 64x64 RGB: 1.2 GB); pass ``cache=False`` for folders that do not fit,
    and every read decodes its files again. An unreadable or corrupt image raises
    ``ValueError`` naming the file (a bad header when the source is built, bad pixel data
    when the image is first read).

``text_file`` (:class:`TextFileSource`)
    Any local file. Vocabulary ``vocab="byte"``: the file's bytes (256 ids; any encoding).
    ``vocab="char"``: the file decoded as UTF-8 (strictly: invalid UTF-8 is an error); the
    alphabet is the sorted set of distinct characters (Unicode code points) of the *whole*
    file, both splits, so held-out text has no unknown symbols; id ``k`` is
    ``alphabet[k]``, ``vocab_size = len(alphabet)``, and ``info.extra["alphabet"]`` holds it
    as a string so samples decode. The text is used exactly as stored (no normalisation;
    newlines are ordinary symbols). Split: the last ``(5 n + 50) // 100`` tokens (5% rounded
    half up, ``n`` tokens in the file) are ``"test"``, the rest ``"train"``; each split is
    cut into non-overlapping ``seq_len``-token sequences (the shorter tail is dropped), so
    each split must hold at least ``seq_len`` tokens. Byte-vocabulary sequences decode as
    UTF-8 with invalid bytes (e.g. a character cut at a sequence boundary) replaced by
    U+FFFD.

Errors name the argument, its launcher flag and the path: ``path`` missing
(``FileNotFoundError``), not a directory (``NotADirectoryError``) / not a file
(``IsADirectoryError`` or ``ValueError``), no images (``ValueError`` listing the accepted
extensions), ``image_size`` not a positive integer, an empty or non-UTF-8 text file, a
split shorter than one sequence (``ValueError``).
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import threading
from typing import Any

import numpy as np

from diffjax.data.text import TextChunks

__all__ = ["EmptySplitError", "HELDOUT_EVERY", "IMAGE_EXTENSIONS", "IMAGE_NAMES", "ImageFolderSource", "NAMES",
           "TEXT_NAMES", "TextFileSource", "center_crop_array", "decode_tokens", "heldout_indices", "list_images",
           "load_image", "load_text_file", "split_sizes", "text_split_bounds"]


def __dir__():
    return sorted(__all__)


IMAGE_NAMES = ("image_folder",)
"""The dataset names of this module that read a folder of images (``image_folder``)."""
TEXT_NAMES = ("text_file",)
"""The dataset names of this module that read a text file (``text_file``)."""
NAMES = IMAGE_NAMES + TEXT_NAMES
"""Every dataset name of this module: ``IMAGE_NAMES`` then ``TEXT_NAMES``."""
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
"""The file-name endings (matched in any case) of the files ``image_folder`` reads."""
IMAGE_SPLITS = ("train", "test", "all")
"""The split names of ``image_folder``."""
TEXT_SPLITS = ("train", "test")
"""The split names of ``text_file``."""
TEXT_VOCABS = ("char", "byte")
"""The vocabularies of ``text_file``."""
HELDOUT_EVERY = 20
"""Every ``HELDOUT_EVERY``-th image of the sorted file list (the last of each run of 20) is in
the ``"test"`` split."""
MAX_VALUE = 255
"""The largest pixel level of the images read (uint8 levels 0..255)."""
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
"""The PIL image modes counted as grayscale."""
PATH_FLAG = "--config.data.path"
"""The launcher flag of the ``path`` option, named in error messages."""
IMAGE_SIZE_FLAG = "--config.data.image_size"
"""The launcher flag of the ``image_size`` option, named in error messages."""
SEQ_LEN_FLAG = "--config.data.seq_len"
"""The launcher flag of the ``seq_len`` option, named in error messages."""
VOCAB_FLAG = "--config.data.vocab"
"""The launcher flag of the ``vocab`` option, named in error messages."""


class EmptySplitError(ValueError):
    """The requested split of a local dataset has no examples (e.g. ``"test"`` of a folder of
    fewer than ``HELDOUT_EVERY`` images)."""


def _path_arg(name: str) -> str:
    return f"{name}: path ({PATH_FLAG})"


def check_path(name: str, path: Any, *, directory: bool) -> pathlib.Path:
    """``path`` as an existing folder (``directory=True``) or regular file, else an error
    naming the dataset, the argument, its flag and the path."""
    what = "a folder of PNG/JPEG images" if directory else "a text file"
    if path is None or str(path) == "":
        raise ValueError(f"{_path_arg(name)} is required: the {what} to read; got {path!r}.")
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{_path_arg(name)} must be a str or os.PathLike naming {what}; got "
                         f"{type(path).__name__}.")
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{_path_arg(name)} {str(p)!r} does not exist (expected {what}).")
    if directory and not p.is_dir():
        raise NotADirectoryError(f"{_path_arg(name)} {str(p)!r} is not a directory; "
                                 f"{name} reads {what} (one sub-folder per class optional).")
    if not directory and not p.is_file():
        if p.is_dir():
            raise IsADirectoryError(f"{_path_arg(name)} {str(p)!r} is a directory; {name} "
                                    f"reads one {what}.")
        raise ValueError(f"{_path_arg(name)} {str(p)!r} is not a regular file; {name} reads "
                         f"{what}.")
    return p


def check_split(name: str, split: Any, allowed: tuple[str, ...]) -> str:
    if split not in allowed:
        raise ValueError(f"split must be one of {list(allowed)} for {name}, got {split!r}.")
    return split


def check_positive(name: str, arg: str, flag: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: {arg} ({flag}) must be a positive integer, got {value!r}.")
    return int(value)


def heldout_indices(num_files: int, split: str) -> np.ndarray:
    """Positions (in sorted file order) of ``split`` of a folder of ``num_files`` images."""
    check_split("image_folder", split, IMAGE_SPLITS)
    pos = np.arange(num_files)
    if split == "all":
        return pos
    held_out = pos % HELDOUT_EVERY == HELDOUT_EVERY - 1
    return pos[held_out] if split == "test" else pos[~held_out]


# -- image folders ------------------------------------------------------------------------------
def _is_image(p: pathlib.Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def _walk_images(folder: pathlib.Path) -> list[pathlib.Path]:
    """Image files below ``folder``, hidden names skipped, in sorted order of relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            p = pathlib.Path(dirpath) / f
            if not f.startswith(".") and _is_image(p):
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def list_images(root: str | os.PathLike) -> tuple[list[pathlib.Path], np.ndarray | None,
                                                  tuple[str, ...] | None]:
    """``(files, labels or None, class names or None)`` of an image folder (module docstring).

    Raises:
      ValueError: no images, an empty class folder, or images next to class folders.
    """
    root = check_path("image_folder", root, directory=True)
    entries = sorted((p for p in root.iterdir() if not p.name.startswith(".")),
                     key=lambda p: p.name)
    top = [p for p in entries if _is_image(p)]
    folders = [p for p in entries if p.is_dir()]
    per_class = {d.name: _walk_images(d) for d in folders}
    classes = [d for d in sorted(per_class) if per_class[d]]
    if not top and not classes:
        others = sum(1 for p in root.rglob("*") if p.is_file())
        raise ValueError(
            f"{_path_arg('image_folder')} {str(root)!r} holds no images: image_folder reads "
            f"files ending in {list(IMAGE_EXTENSIONS)} (any case), directly in the folder or "
            f"in one sub-folder per class ({others} other file(s) found).")
    if not classes:
        return top, None, None
    if top:
        raise ValueError(
            f"{_path_arg('image_folder')} {str(root)!r} holds both images ({top[0].name}, ...) "
            f"and class sub-folders {classes}: put every image into a class folder, or all "
            f"of them directly into the folder for an unconditional dataset.")
    empty = [d for d in sorted(per_class) if not per_class[d]]
    if empty:
        raise ValueError(
            f"{_path_arg('image_folder')} {str(root)!r}: class folder(s) {empty} hold no "
            f"images (accepted: {list(IMAGE_EXTENSIONS)}); remove them or add images.")
    files, labels = [], []
    for k, name in enumerate(classes):
        files += per_class[name]
        labels += [k] * len(per_class[name])
    return files, np.asarray(labels, np.int32), tuple(classes)


def _image_error(path: pathlib.Path, err: Exception) -> ValueError:
    return ValueError(f"image_folder: cannot read image {str(path)!r} "
                      f"({type(err).__name__}: {err}); fix or remove the file.")


def image_mode(path: pathlib.Path) -> str:
    """The PIL mode of an image file from its header (no pixel decoding)."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    try:
        with Image.open(path) as im:
            return im.mode
    except Exception as err:  # pylint: disable=broad-except  (PIL raises many types)
        raise _image_error(path, err) from err


def center_crop_array(image, image_size: int) -> np.ndarray:
    """A PIL image (mode ``L`` or ``RGB``) resized and center-cropped to ``image_size``
    squared as ADM's ``center_crop_arr`` (module docstring): uint8 ``(N, N, C)``."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.Resampling.BOX)
    scale = image_size / min(image.size)
    image = image.resize(tuple(max(image_size, round(s * scale)) for s in image.size),
                         resample=Image.Resampling.BICUBIC)
    arr = np.asarray(image, np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[top:top + image_size, left:left + image_size]


def _to_mode(image, channels: int):
    """``image`` as mode ``L`` (``channels=1``) or ``RGB`` (16-bit grayscale scaled)."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    if image.mode.startswith("I") or image.mode == "F":
        wide = np.asarray(image, np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def load_image(path: str | os.PathLike, image_size: int, channels: int = 3) -> np.ndarray:
    """One image file decoded, oriented, converted and resized/cropped (module docstring):
    uint8 ``(image_size, image_size, channels)``; ValueError naming the file if unreadable."""
    from PIL import Image, ImageOps  # pylint: disable=import-outside-toplevel

    path = pathlib.Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return center_crop_array(_to_mode(im, channels), image_size)
    except Exception as err:  # pylint: disable=broad-except  (PIL raises many types)
        raise _image_error(path, err) from err


class ImageFolderSource:
    """Random-access source of one split of an image folder (module docstring):
    ``read(idx) -> {"x": uint8 (n, N, N, C)[, "label": int32 (n,)]}``.

    Args:
      path: the folder (``--config.data.path``).
      split: ``"train"``, ``"test"`` (every 20th file) or ``"all"``.
      image_size: ``N`` (``--config.data.image_size``), a positive integer.
      cache: keep decoded images in memory after their first read.
      num_threads: decoding threads per batch (default ``min(8, cpu count)``).

    Attributes: ``files`` (this split's files), ``labels`` (int32 or None), ``class_names``
    (or None), ``channels`` (1 or 3), ``shape`` ``(N, N, C)``, ``num_classes`` (or None),
    ``root``, ``num_files`` (in the whole folder).
    """

    def __init__(self, path: str | os.PathLike, split: str = "train", image_size: int = 0, *,
                 cache: bool = True, num_threads: int | None = None):
        check_split("image_folder", split, IMAGE_SPLITS)
        self.image_size = check_positive("image_folder", "image_size", IMAGE_SIZE_FLAG,
                                         image_size)
        files, labels, self.class_names = list_images(path)
        self.root = pathlib.Path(path).expanduser()
        self.num_files = len(files)
        modes = [image_mode(f) for f in files]  # every header: bad files fail here
        self.channels = 1 if all(m in GRAY_MODES for m in modes) else 3
        idx = heldout_indices(len(files), split)
        if len(idx) == 0:
            raise EmptySplitError(
                f"{_path_arg('image_folder')} {str(self.root)!r} has {len(files)} images, "
                f"too few for a {split!r} split (every {HELDOUT_EVERY}th file is held out: "
                f"add images, or use split='train' / 'all').")
        self.files = [files[i] for i in idx]
        self.labels = None if labels is None else labels[idx]
        self.num_classes = None if self.class_names is None else len(self.class_names)
        self.shape = (self.image_size, self.image_size, self.channels)
        self._cache = bool(cache)
        self._images: np.ndarray | None = None
        self._filled: np.ndarray | None = None
        self._threads = num_threads or min(8, os.cpu_count() or 1)
        self._pool = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, i: int) -> np.ndarray:
        return load_image(self.files[i], self.image_size, self.channels)

    def _decode_many(self, todo: list[int]) -> list[np.ndarray]:
        if self._threads < 2 or len(todo) < 4:
            return [self._decode(i) for i in todo]
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self._threads,
                                                                   "diffjax-images")
        return list(self._pool.map(self._decode, todo))

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, np.int64).reshape(-1)
        if not self._cache:
            out = np.zeros((len(indices),) + self.shape, np.uint8)
            for row, image in enumerate(self._decode_many([int(i) for i in indices])):
                out[row] = image
        else:
            with self._lock:
                if self._images is None:  # zero pages cost no memory until written
                    self._images = np.zeros((len(self),) + self.shape, np.uint8)
                    self._filled = np.zeros(len(self), bool)
            todo = sorted({int(i) for i in indices if not self._filled[i]})
            for i, image in zip(todo, self._decode_many(todo)):
                self._images[i] = image  # identical values if two threads race
                self._filled[i] = True
            out = self._images[indices]
        batch = {"x": out}
        if self.labels is not None:
            batch["label"] = self.labels[indices]
        return batch


# -- text files -----------------------------------------------------------------------------------
def check_vocab(vocab: Any) -> str:
    if vocab not in TEXT_VOCABS:
        raise ValueError(f"text_file: vocab ({VOCAB_FLAG}) must be one of {list(TEXT_VOCABS)}, "
                         f"got {vocab!r}.")
    return vocab


def load_text_file(path: str | os.PathLike, vocab: str = "char") -> tuple[np.ndarray, str | None]:
    """``(token ids of the whole file, alphabet or None)`` (module docstring): ``byte``: uint8
    bytes, alphabet None; ``char``: int32 indices into the alphabet (sorted distinct
    characters)."""
    check_vocab(vocab)
    p = check_path("text_file", path, directory=False)
    data = p.read_bytes()
    if not data:
        raise ValueError(f"{_path_arg('text_file')} {str(p)!r} is empty.")
    if vocab == "byte":
        return np.frombuffer(data, np.uint8).copy(), None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{_path_arg('text_file')} {str(p)!r} is not valid UTF-8 (byte {err.start}: "
            f"{err.reason}); vocab ({VOCAB_FLAG}) 'char' needs UTF-8 text, 'byte' reads any "
            f"file.") from None
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    alphabet_codes = np.unique(codes)
    ids = np.searchsorted(alphabet_codes, codes).astype(np.int32)
    alphabet = "".join(map(chr, alphabet_codes.tolist()))
    return ids, alphabet


def text_split_bounds(num_tokens: int, split: str) -> tuple[int, int]:
    """``[start, stop)`` of ``split`` in a file of ``num_tokens`` tokens: the last
    ``(5 n + 50) // 100`` tokens are ``"test"``."""
    check_split("text_file", split, TEXT_SPLITS)
    boundary = num_tokens - (5 * num_tokens + 50) // 100
    return (0, boundary) if split == "train" else (boundary, num_tokens)


def decode_tokens(ids: np.ndarray, vocab: str, alphabet: str | None = None) -> str:
    """One sequence of ``text_file`` token ids back to text (``byte``: UTF-8, invalid bytes
    replaced by U+FFFD; ``char``: ``alphabet[id]``)."""
    ids = np.asarray(ids).reshape(-1)
    if check_vocab(vocab) == "byte":
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ValueError("byte ids must be in [0, 256).")
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
    if alphabet is None:
        raise ValueError("alphabet is required to decode vocab='char' ids (it is "
                         "info.extra['alphabet']).")
    if ids.size and (ids.min() < 0 or ids.max() >= len(alphabet)):
        raise ValueError(f"char ids must be in [0, {len(alphabet)}) (the alphabet's size).")
    return "".join(alphabet[i] for i in ids.tolist())


class TextFileSource(TextChunks):
    """Random-access source of ``seq_len``-token sequences of one split of a text file:
    ``read(idx) -> {"x": int32 (n, seq_len)}``.

    Attributes (besides :class:`~diffjax.data.text.TextChunks`'): ``path``, ``vocab``,
    ``alphabet`` (``char``; else None), ``vocab_size``, ``tokens`` (the split's whole token
    stream), ``num_file_tokens`` (tokens in the whole file).
    """

    def __init__(self, path: str | os.PathLike, split: str = "train", *, seq_len: int = 256,
                 vocab: str = "char"):
        check_split("text_file", split, TEXT_SPLITS)
        seq_len = check_positive("text_file", "seq_len", SEQ_LEN_FLAG, seq_len)
        tokens, self.alphabet = load_text_file(path, vocab)
        self.path = pathlib.Path(path).expanduser()
        self.vocab = vocab
        self.vocab_size = 256 if vocab == "byte" else len(self.alphabet)
        self.num_file_tokens = len(tokens)
        start, stop = text_split_bounds(len(tokens), split)
        if stop - start < seq_len:
            unit = "bytes" if vocab == "byte" else "characters"
            raise ValueError(
                f"{_path_arg('text_file')} {str(self.path)!r} is too short: its {split!r} split "
                f"has {stop - start} {unit} (of {len(tokens)}; the last 5% are 'test'), fewer "
                f"than one sequence of seq_len ({SEQ_LEN_FLAG}) = {seq_len}. Use a longer file "
                f"or a smaller seq_len (at most {min(split_sizes(len(tokens)))}).")
        self.tokens = tokens[start:stop]
        super().__init__(self.tokens, seq_len)

    def decode(self, ids: np.ndarray) -> str:
        return decode_tokens(ids, self.vocab, self.alphabet)


def split_sizes(num_tokens: int) -> tuple[int, int]:
    """``(train tokens, test tokens)`` of a file of ``num_tokens`` tokens."""
    return tuple(b - a for a, b in (text_split_bounds(num_tokens, s) for s in TEXT_SPLITS))

