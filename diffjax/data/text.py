"""Character-level text: text8 (user-provided file) and an offline standard-library corpus.

Alphabet and vocabularies
    Text is normalised to text8's 27 symbols, ``a``-``z`` and space. The character vocabulary
    is ``CHARS = " abcdefghijklmnopqrstuvwxyz"`` (space = 0, ``a`` = 1, ..., ``z`` = 26;
    ``CHAR_VOCAB_SIZE = 27``). The byte vocabulary (``BYTE_VOCAB_SIZE = 256``) encodes the
    same text as its ASCII byte values.

text8 (``name="text8"``)
    Read from a file the user provides: ``<data_dir>/text8`` or ``<data_dir>/text8.zip``
    (the zip from http://mattmahoney.net/dc/text8.zip, member ``text8``); ``data_dir``
    defaults to ``$DIFFJAX_DATA_DIR``, else ``~/.cache/diffjax``. The standard split: the
    first 90M characters are ``"train"``, the next 5M ``"validation"``, the last 5M
    ``"test"`` (proportionally 90/5/5% for a file of another length). Nothing is downloaded;
    a missing file raises ``FileNotFoundError`` naming the expected paths.

Standard-library corpus (``name="stdlib_text"``), built by :func:`build_stdlib_corpus`
    1. Files: every ``*.py`` under ``sysconfig.get_paths()["stdlib"]``, walked with sorted
       directory and file names, skipping directories named in ``SKIP_DIRS`` (tests,
       ``site-packages``, ``__pycache__``, and ``encodings``, whose codec tables carry one
       Unicode character name per comment rather than prose) and files named ``test_*.py``.
       A file that cannot be decoded (``tokenize.open``) or parsed (``ast``) is skipped.
    2. Pieces, in source order (line, column): the docstring of the module and of every
       class and (async) function (``ast.get_docstring``, cleaned of indentation), and every
       comment token (``tokenize``) without its leading ``#`` characters. Comments that are
       directives rather than prose are dropped: a ``#!`` line, an encoding declaration on
       lines 1-2, and comments starting with ``type:``, ``noqa``, ``pragma:``, ``fmt:`` or
       ``pylint:``.
    3. English only: a piece is dropped when more than 10% of its letters (``str.isalpha``)
       are non-ASCII.
    4. Normalisation (:func:`normalize`): ASCII letters are lower-cased and every maximal run
       of any other characters (digits, punctuation, whitespace, non-ASCII) becomes one
       space; leading and trailing spaces are removed; pieces that become empty are dropped.
    5. The corpus is the pieces joined by single spaces, files in walk order.
    The result is cached as UTF-8 text in ``<cache_dir>/stdlib_text-<impl>-<python version>-
    v<CORPUS_FORMAT>.txt`` (``cache_dir``: ``$DIFFJAX_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/diffjax``, else ``~/.cache/diffjax``). Held-out split: the corpus is cut
    into blocks of ``BLOCK_CHARS = 10_000`` characters; block ``k`` belongs to ``"test"`` when
    ``k % 20 == 19`` (5%), else to ``"train"``; each split is its blocks concatenated in order.

Chunks
    A split's token stream is cut into non-overlapping sequences of ``seq_len`` tokens (the
    tail shorter than ``seq_len`` is dropped): :class:`TextChunks` is a random-access source
    ``read(idx) -> {"x": int32 (n, seq_len)}`` for :func:`diffjax.data.pipeline.source_iterator`.
"""

from __future__ import annotations

import ast
import io
import os
import pathlib
import platform
import re
import sys
import sysconfig
import tokenize
import zipfile
from typing import Iterator

import numpy as np

__all__ = ["BLOCK_CHARS", "BYTE_VOCAB_SIZE", "CHARS", "CHAR_VOCAB_SIZE", "CORPUS_FORMAT", "HELDOUT_EVERY", "NAMES",
           "SKIP_DIRS", "STDLIB_SPLITS", "TEXT8_SPLITS", "TextChunks", "VOCABS", "block_split",
           "build_stdlib_corpus", "decode", "default_cache_dir", "default_data_dir", "encode", "file_text",
           "iter_source_files", "load_chunks", "load_text8", "normalize", "source_pieces", "split_text",
           "stdlib_corpus", "stdlib_corpus_path", "text8_path", "text8_split", "unigram_entropy_bits",
           "vocab_size"]


def __dir__():
    return sorted(__all__)


CHARS = " abcdefghijklmnopqrstuvwxyz"
"""The character vocabulary in id order: space is 0, ``a`` is 1, ..., ``z`` is 26."""
CHAR_VOCAB_SIZE = len(CHARS)
"""The size of the character vocabulary (27)."""
BYTE_VOCAB_SIZE = 256
"""The size of the byte vocabulary (one id per byte value)."""
VOCABS = ("char", "byte")
"""The vocabulary names ``encode`` / ``decode`` / ``vocab_size`` accept."""

TEXT8_SPLITS = {"train": (0.0, 0.9), "validation": (0.9, 0.95), "test": (0.95, 1.0)}
"""text8's splits: name -> ``(start, end)`` as fractions of the file's length."""
STDLIB_SPLITS = ("train", "test")
"""The split names of the standard-library corpus (``"test"``: the held-out blocks)."""
NAMES = ("text8", "stdlib_text")
"""The text dataset names of this module."""

CORPUS_FORMAT = 1  # bump when the corpus construction below changes
"""The version of the corpus construction, part of the cache file's name."""
SKIP_DIRS = frozenset({"test", "tests", "idle_test", "__pycache__", "site-packages",
                       "dist-packages", "encodings"})
"""Directory names the standard-library walk skips (tests, installed packages, codec tables)."""
BLOCK_CHARS = 10_000
"""The length in characters of the blocks the held-out split is cut into."""
HELDOUT_EVERY = 20
"""Every ``HELDOUT_EVERY``-th block (the last of each run of 20) is held out as ``"test"``."""
_DIRECTIVES = ("type:", "noqa", "pragma:", "fmt:", "pylint:")
_CODING_RE = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*[-\w.]+")
_NON_LETTERS_RE = re.compile(r"[^a-z]+")
_UPPER_TO_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# char -> id lookup over bytes; 255 marks bytes outside the alphabet.
_CHAR_IDS = np.full(256, 255, np.uint8)
_CHAR_IDS[np.frombuffer(CHARS.encode("ascii"), np.uint8)] = np.arange(CHAR_VOCAB_SIZE)
_CHAR_BYTES = np.frombuffer(CHARS.encode("ascii"), np.uint8)


# -- normalisation and vocabularies ------------------------------------------------------------
def normalize(text: str) -> str:
    """Lower-cases ASCII letters and turns every run of other characters into one space."""
    return _NON_LETTERS_RE.sub(" ", text.translate(_UPPER_TO_LOWER)).strip()


def encode(text: str | bytes, vocab: str = "char") -> np.ndarray:
    """Normalised text -> uint8 token ids (``char``: 0..26, ``byte``: ASCII codes)."""
    if vocab not in VOCABS:
        raise ValueError(f"vocab must be one of {list(VOCABS)}, got {vocab!r}.")
    raw = np.frombuffer(text.encode("ascii") if isinstance(text, str) else text, np.uint8)
    if vocab == "byte":
        return raw.copy()
    ids = _CHAR_IDS[raw]
    if (ids == 255).any():
        bad = sorted(set(bytes(raw[ids == 255][:20]).decode("latin-1")))
        raise ValueError(f"text has characters outside a-z and space: {bad}; normalize() it.")
    return ids


def decode(ids: np.ndarray, vocab: str = "char") -> str:
    """Token ids (one sequence) -> text."""
    ids = np.asarray(ids)
    if vocab == "char":
        if ids.size and (ids.min() < 0 or ids.max() >= CHAR_VOCAB_SIZE):
            raise ValueError(f"char ids must be in [0, {CHAR_VOCAB_SIZE}).")
        return _CHAR_BYTES[ids].tobytes().decode("ascii")
    if vocab == "byte":
        return np.asarray(ids, np.uint8).tobytes().decode("latin-1")
    raise ValueError(f"vocab must be one of {list(VOCABS)}, got {vocab!r}.")


def vocab_size(vocab: str) -> int:
    """The number of token ids of vocabulary ``vocab`` (27 for ``char``, 256 for ``byte``)."""
    if vocab not in VOCABS:
        raise ValueError(f"vocab must be one of {list(VOCABS)}, got {vocab!r}.")
    return CHAR_VOCAB_SIZE if vocab == "char" else BYTE_VOCAB_SIZE


def unigram_entropy_bits(corpus: str | bytes | np.ndarray) -> float:
    """Entropy in bits of the empirical symbol distribution of ``corpus`` (text or ids)."""
    if isinstance(corpus, str):
        corpus = corpus.encode("utf-8")
    symbols = np.frombuffer(corpus, np.uint8) if isinstance(corpus, bytes) else np.ravel(corpus)
    if symbols.size == 0:
        raise ValueError("corpus must not be empty.")
    if symbols.dtype == np.uint8:
        counts = np.bincount(symbols, minlength=256)
    else:
        _, counts = np.unique(symbols, return_counts=True)
    counts = counts[counts > 0]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


# -- directories -------------------------------------------------------------------------------
def default_cache_dir() -> pathlib.Path:
    """Where built corpora are cached: ``$DIFFJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/diffjax``,
    else ``~/.cache/diffjax``."""
    if os.environ.get("DIFFJAX_CACHE_DIR"):
        return pathlib.Path(os.environ["DIFFJAX_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return pathlib.Path(base).expanduser() / "diffjax"


def default_data_dir() -> pathlib.Path:
    """Where user-provided data (text8) is looked for: ``$DIFFJAX_DATA_DIR``, else
    :func:`default_cache_dir`."""
    if os.environ.get("DIFFJAX_DATA_DIR"):
        return pathlib.Path(os.environ["DIFFJAX_DATA_DIR"]).expanduser()
    return default_cache_dir()


# -- text8 -------------------------------------------------------------------------------------
def text8_path(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The text8 file in ``data_dir`` (``text8`` preferred over ``text8.zip``)."""
    data_dir = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()
    for candidate in (data_dir / "text8", data_dir / "text8.zip"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"text8 not found: expected {data_dir / 'text8'} or {data_dir / 'text8.zip'} "
        f"(data_dir={data_dir}; pass data_dir= or set DIFFJAX_DATA_DIR). diffjax never "
        f"downloads it: fetch http://mattmahoney.net/dc/text8.zip on a machine with network "
        f"access and copy it there. Offline, name='stdlib_text' needs no download.")


def load_text8(data_dir: str | os.PathLike | None = None) -> bytes:
    """The whole text8 file as bytes (validated: only a-z and space)."""
    path = text8_path(data_dir)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "text8"]
            if not names:
                raise ValueError(f"{path} has no member named 'text8' (has {zf.namelist()}).")
            data = zf.read(names[0])
    else:
        data = path.read_bytes()
    if not data or (_CHAR_IDS[np.frombuffer(data, np.uint8)] == 255).any():
        raise ValueError(f"{path} is not text8: it must be non-empty and contain only a-z "
                         f"and space.")
    return data


def text8_split(data: bytes, split: str) -> bytes:
    """The standard 90M/5M/5M split (proportional for other lengths)."""
    if split not in TEXT8_SPLITS:
        raise ValueError(f"split must be one of {list(TEXT8_SPLITS)}, got {split!r}.")
    lo, hi = TEXT8_SPLITS[split]
    n = len(data)
    return data[round(lo * n):round(hi * n)]


# -- standard-library corpus -------------------------------------------------------------------
def _is_english(piece: str) -> bool:
    letters = [c for c in piece if c.isalpha()]
    non_ascii = sum(not c.isascii() for c in letters)
    return non_ascii <= 0.1 * len(letters)


def _comment_text(token: tokenize.TokenInfo, line: str) -> str | None:
    """The prose of a comment token, or None for directives."""
    row = token.start[0]
    if token.string.startswith("#!") or (row <= 2 and _CODING_RE.match(line)):
        return None
    body = token.string.lstrip("#").strip()
    if body.lower().startswith(_DIRECTIVES):
        return None
    return body


_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BODY_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _docstrings(node: ast.AST, found: list) -> None:
    """Docstrings of ``node`` and of every class/def nested in its statements.

    Classes and functions can only appear in statement lists, so only those are walked
    (much faster than ``ast.walk`` over every expression node).
    """
    if isinstance(node, _DOC_NODES):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            first = node.body[0]
            found.append(((first.lineno, first.col_offset), doc))
    for field in _BODY_FIELDS:
        for child in getattr(node, field, ()):
            _docstrings(child, found)


def source_pieces(source: str) -> list[str]:
    """Docstrings and comments of one Python source text, in source order (un-normalised)."""
    found: list[tuple[tuple[int, int], str]] = []
    _docstrings(ast.parse(source), found)
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = _comment_text(token, lines[token.start[0] - 1])
            if text:
                found.append((token.start, text))
    found.sort(key=lambda item: item[0])
    return [text for _, text in found]


def iter_source_files(root: str | os.PathLike) -> Iterator[pathlib.Path]:
    """``*.py`` files under ``root`` in sorted walk order, without skipped dirs and tests."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for filename in sorted(filenames):
            if filename.endswith(".py") and not filename.startswith("test_"):
                yield pathlib.Path(dirpath) / filename


def file_text(path: str | os.PathLike) -> str:
    """The normalised corpus text of one file ('' when it is unreadable or has no prose)."""
    try:
        with tokenize.open(path) as f:
            source = f.read()
        pieces = source_pieces(source)
    except (SyntaxError, UnicodeError, ValueError, tokenize.TokenError, OSError):
        return ""
    normalised = (normalize(p) for p in pieces if _is_english(p))
    return " ".join(p for p in normalised if p)


def build_stdlib_corpus(root: str | os.PathLike | None = None) -> str:
    """The corpus of the module docstring, built from scratch (no cache)."""
    root = root if root is not None else sysconfig.get_paths()["stdlib"]
    texts = (file_text(path) for path in iter_source_files(root))
    return " ".join(t for t in texts if t)


def stdlib_corpus_path(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The cache file of this Python's standard-library corpus in ``cache_dir`` (default
    :func:`default_cache_dir`); its name holds the implementation, the Python version and
    ``CORPUS_FORMAT``."""
    cache_dir = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = f"{sys.implementation.name}-{platform.python_version()}-v{CORPUS_FORMAT}"
    return cache_dir / f"stdlib_text-{key}.txt"


def stdlib_corpus(cache_dir: str | os.PathLike | None = None, *, refresh: bool = False) -> str:
    """The standard-library corpus of this Python, built once and cached (module docstring)."""
    path = stdlib_corpus_path(cache_dir)
    if path.is_file() and not refresh:
        return path.read_text(encoding="ascii")
    corpus = build_stdlib_corpus()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(corpus, encoding="ascii")
    os.replace(tmp, path)  # atomic: concurrent builders write identical content
    return corpus


def block_split(corpus: str | bytes, split: str) -> str | bytes:
    """Train/held-out split of the stdlib corpus by interleaved blocks (module docstring)."""
    if split not in STDLIB_SPLITS:
        raise ValueError(f"split must be one of {list(STDLIB_SPLITS)}, got {split!r}.")
    held_out = split == "test"
    blocks = [corpus[i:i + BLOCK_CHARS] for i in range(0, len(corpus), BLOCK_CHARS)]
    keep = [b for k, b in enumerate(blocks) if (k % HELDOUT_EVERY == HELDOUT_EVERY - 1) == held_out]
    return corpus[:0].join(keep)


# -- chunked sources ---------------------------------------------------------------------------
class TextChunks:
    """Non-overlapping ``seq_len``-token chunks of a token stream (random-access source)."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}.")
        n = len(tokens) // seq_len
        if n == 0:
            raise ValueError(f"seq_len={seq_len} is longer than the text ({len(tokens)} tokens).")
        self.seq_len = int(seq_len)
        self.chunks = np.asarray(tokens[:n * seq_len]).reshape(n, seq_len)

    def __len__(self) -> int:
        return len(self.chunks)

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {"x": self.chunks[indices].astype(np.int32)}


def split_text(name: str, split: str, *, data_dir: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None) -> bytes:
    """The normalised text (ASCII bytes) of ``split`` of ``"text8"`` or ``"stdlib_text"``."""
    if name == "text8":
        return text8_split(load_text8(data_dir), split)
    if name == "stdlib_text":
        return block_split(stdlib_corpus(cache_dir).encode("ascii"), split)
    raise ValueError(f"name must be one of {list(NAMES)}, got {name!r}.")


def load_chunks(name: str, split: str, *, seq_len: int = 256, vocab: str = "char",
                data_dir: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None) -> TextChunks:
    """:class:`TextChunks` of ``split`` of ``name`` in vocabulary ``vocab``."""
    text = split_text(name, split, data_dir=data_dir, cache_dir=cache_dir)
    return TextChunks(encode(text, vocab), seq_len)
