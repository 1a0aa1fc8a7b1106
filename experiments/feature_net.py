r"""A small classifier trained on a dataset's own images, whose penultimate layer gives the
features for Fréchet distance, KID and precision / recall (`experiments.image_metrics`).

InceptionV3 features (FID) mean little for 8x8 digits and need weights diffjax does not
ship; this network needs nothing but the dataset. It is trained once per dataset and
hyperparameters and cached; later calls load it.

Network (:class:`FeatureNet`): NHWC images in ``[-1, 1]`` -> stages of two 3x3 convolutions
(the second with stride 2; widths ``width * 2**i``) with ReLU until the side is at most 4 ->
flatten -> ``Linear(features)`` + ReLU (**the features**, default 128-d) -> ``Linear(classes)``.
Digits (8x8) have one stage, MNIST (28x28) and CIFAR-10 (32x32) three.

Training: cross-entropy on the dataset's ``train`` split, Adam with a cosine-decayed learning
rate, batches drawn by ``numpy.random.default_rng(seed)`` (a fresh permutation every epoch),
parameters initialised from ``seed``, one compiled step per batch: the result is
deterministic given the seed (on one backend). Its accuracy on the ``test`` split is stored
with it (``heldout_accuracy``; digits with the defaults: about 0.99).

Cache: ``<cache_dir>/feature_nets/<dataset>-<key>.npz``, where ``cache_dir`` defaults to
``$DIFFJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/diffjax``, else ``~/.cache/diffjax`` (the
text corpus cache's directory, ``diffjax.data.text.default_cache_dir``) and ``key`` hashes
:data:`VERSION` and the :class:`Spec` (dataset, shape, classes, a fingerprint of the training
images and labels, hyperparameters, seed): other data (another image folder, another
``data_dir``) gets another network. The ``.npz`` holds one float32 array per parameter (named by its
path, ``/``-joined) and ``__meta__`` (JSON: the spec and the held-out accuracy). It is written
to a temporary file and renamed, so concurrent runs never read a partial file. Delete the
file to retrain; change :data:`VERSION` when the network or the training changes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

__all__ = ["VERSION", "DEFAULT_STEPS", "Spec", "FeatureNet", "TrainedFeatureNet",
           "default_cache_dir", "fingerprint", "train", "load_or_train"]

VERSION = 1
"""Enters the cache key: bump it when the network or its training changes."""

DEFAULT_STEPS = {"digits": 300, "mnist": 3000, "fashion_mnist": 3000, "cifar10": 6000}
"""Training steps (batches of :attr:`Spec.batch_size`) per dataset; others: 3000."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything that determines a trained feature network (and its cache key).

    ``dataset``: name; ``shape``: ``(H, W, C)`` of one image; ``num_classes``; ``data_hash``:
    :func:`fingerprint` of the training data; ``width``: channels of the first stage; ``features``: feature width;
    ``steps``, ``batch_size``, ``learning_rate``: training; ``seed``: initialisation and batch
    order.
    """

    dataset: str
    shape: tuple
    num_classes: int
    data_hash: str
    width: int = 16
    features: int = 128
    steps: int = 300
    batch_size: int = 128
    learning_rate: float = 2e-3
    seed: int = 0

    def key(self) -> str:
        """Hex digest of :data:`VERSION` and the fields (the cache file's name)."""
        blob = json.dumps({"version": VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class FeatureNet(nnx.Module):
    """The classifier of the module docstring. ``model(x) -> logits (B, num_classes)``;
    ``model.features(x) -> (B, features)`` (post-ReLU penultimate layer), ``x`` float
    ``(B, H, W, C)`` in ``[-1, 1]``."""

    def __init__(self, shape, num_classes: int, *, width: int = 16, features: int = 128,
                 rngs: nnx.Rngs):
        h, w, c = (int(s) for s in shape)
        layers, side, cin = [], min(h, w), c
        stage = 0
        while True:
            ch = width * 2 ** stage
            layers += [nnx.Conv(cin, ch, (3, 3), rngs=rngs),
                       nnx.Conv(ch, ch, (3, 3), strides=(2, 2), rngs=rngs)]
            cin, stage = ch, stage + 1
            h, w, side = -(-h // 2), -(-w // 2), -(-side // 2)
            if side <= 4:
                break
        self.convs = nnx.List(layers)
        self.fc = nnx.Linear(h * w * cin, features, rngs=rngs)
        self.head = nnx.Linear(features, num_classes, rngs=rngs)

    def features(self, x):
        """The penultimate layer's activations, float32 ``(B, features)``."""
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return jax.nn.relu(self.fc(x.reshape(x.shape[0], -1)))

    def __call__(self, x):
        return self.head(self.features(x))


def _variables(model) -> dict:
    return {"/".join(str(p) for p in path): v for path, v in nnx.iter_graph(model)
            if isinstance(v, nnx.Variable)}


class TrainedFeatureNet:
    """A trained :class:`FeatureNet` with its :class:`Spec`.

    Attributes: ``model``, ``spec``, ``heldout_accuracy`` (test-split accuracy), ``path`` (the
    cache file), ``trained`` (True when this call trained it, False when it was loaded),
    ``feature_dim``.
    """

    def __init__(self, model: FeatureNet, spec: Spec, heldout_accuracy: float, path: str,
                 trained: bool):
        self.model, self.spec, self.path, self.trained = model, spec, path, trained
        self.heldout_accuracy = float(heldout_accuracy)
        self.feature_dim = int(spec.features)
        graphdef, state = nnx.split(model)
        self._state = state
        self._features = jax.jit(lambda s, x: nnx.merge(graphdef, s).features(x))

    def features(self, x, *, batch_size: int = 500) -> np.ndarray:
        """Features ``(N, feature_dim)`` float32 of images ``x`` ``(N, H, W, C)`` in
        ``[-1, 1]`` (model space), ``batch_size`` at a time (one compilation: the last batch
        is padded)."""
        x = np.asarray(x, np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.spec.shape):
            raise ValueError(f"x must have shape (N, {', '.join(map(str, self.spec.shape))}), "
                             f"got {x.shape}")
        n = len(x)
        b = int(min(batch_size, max(n, 1)))
        pad = (-n) % b
        xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], np.float32)]) if pad else x
        out = [np.asarray(self._features(self._state, xp[i:i + b])) for i in range(0, len(xp), b)]
        return np.concatenate(out)[:n] if out else np.zeros((0, self.feature_dim), np.float32)


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 (16 hex digits) of the training images ``x`` (as float32) and labels ``y``
    (as int32), shapes included."""
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int32)):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def default_cache_dir() -> str:
    """``$DIFFJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/diffjax``, else ``~/.cache/diffjax``."""
    from diffjax.data import text  # the same directory as the text corpus cache

    return str(text.default_cache_dir())


def _accuracy(model: FeatureNet, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    graphdef, state = nnx.split(model)
    logits = jax.jit(lambda s, xb: nnx.merge(graphdef, s)(xb))
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int(np.sum(np.asarray(logits(state, x[i:i + batch_size])).argmax(-1)
                              == y[i:i + batch_size]))
    return correct / max(len(x), 1)


def train(spec: Spec, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
          test_y: np.ndarray) -> tuple[FeatureNet, float]:
    """``(trained model, test accuracy)``: the training of the module docstring on model-space
    images ``train_x`` ``(N, *spec.shape)`` in ``[-1, 1]`` with int labels ``train_y``."""
    train_x, test_x = np.asarray(train_x, np.float32), np.asarray(test_x, np.float32)
    train_y, test_y = np.asarray(train_y, np.int32), np.asarray(test_y, np.int32)
    if train_x.shape[1:] != tuple(spec.shape) or len(train_x) != len(train_y):
        raise ValueError(f"train_x must be (N, {spec.shape}) with N = len(train_y), got "
                         f"{train_x.shape} and {train_y.shape}")
    if len(train_x) < spec.batch_size:
        raise ValueError(f"the training set ({len(train_x)}) is smaller than batch_size "
                         f"{spec.batch_size}")
    model = FeatureNet(spec.shape, spec.num_classes, width=spec.width, features=spec.features,
                       rngs=nnx.Rngs(spec.seed))
    graphdef, params = nnx.split(model)
    schedule = optax.cosine_decay_schedule(spec.learning_rate, spec.steps)
    tx = optax.adam(schedule)
    rng = np.random.default_rng(spec.seed)
    per_epoch = len(train_x) // spec.batch_size
    epochs = -(-spec.steps // per_epoch)
    idx = np.concatenate([rng.permutation(len(train_x))[:per_epoch * spec.batch_size]
                          for _ in range(epochs)])
    idx = idx[:spec.steps * spec.batch_size].reshape(spec.steps, spec.batch_size)

    def loss_fn(p, xb, yb):
        logits = nnx.merge(graphdef, p)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(p, opt, xb, yb):
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    opt = tx.init(params)
    losses = []
    for ib in idx:
        params, opt, loss = step(params, opt, train_x[ib], train_y[ib])
        losses.append(loss)
    if not np.all(np.isfinite(np.asarray(jnp.stack(losses)))):
        raise FloatingPointError("the feature network's training loss became non-finite")
    model = nnx.merge(graphdef, params)
    return model, _accuracy(model, test_x, test_y)


def _save(path: str, model: FeatureNet, spec: Spec, accuracy: float) -> None:
    arrays = {k: np.asarray(v.get_value(), np.float32) for k, v in _variables(model).items()}
    meta = json.dumps({"version": VERSION, "spec": dataclasses.asdict(spec),
                       "heldout_accuracy": accuracy})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, __meta__=np.array(meta), **arrays)
    os.replace(tmp, path)


def _load(path: str, spec: Spec) -> tuple[FeatureNet, float]:
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["__meta__"]))
        stored = {k: f[k] for k in f.files if k != "__meta__"}
    if meta.get("version") != VERSION or Spec(**{**meta["spec"], "shape": tuple(
            meta["spec"]["shape"])}) != spec:
        raise ValueError(f"cached feature network {path} was trained for {meta}, not {spec}; "
                         f"delete the file to retrain")
    model = FeatureNet(spec.shape, spec.num_classes, width=spec.width, features=spec.features,
                       rngs=nnx.Rngs(spec.seed))
    for name, var in _variables(model).items():
        if name not in stored or stored[name].shape != np.shape(var.get_value()):
            raise ValueError(f"cached feature network {path}: parameter {name!r} is missing or "
                             f"mis-shaped; delete the file to retrain")
        var.set_value(jnp.asarray(stored[name]))
    return model, float(meta["heldout_accuracy"])


def load_or_train(spec: Spec, data: Callable[[], tuple], *,
                  cache_dir: Optional[str] = None) -> TrainedFeatureNet:
    """The network for ``spec``: loaded from the cache (module docstring) when there, else
    trained on ``data()`` -> ``(train_x, train_y, test_x, test_y)`` (model-space images,
    int labels; called only when training) and cached.

    ``cache_dir``: the cache's base directory (None or ``""``: :func:`default_cache_dir`); the
    file goes to ``<cache_dir>/feature_nets/``.
    """
    base = cache_dir or default_cache_dir()
    path = os.path.join(os.path.expanduser(base), "feature_nets",
                        f"{spec.dataset}-{spec.key()}.npz")
    if os.path.isfile(path):
        model, accuracy = _load(path, spec)
        return TrainedFeatureNet(model, spec, accuracy, path, trained=False)
    t0 = time.perf_counter()
    model, accuracy = train(spec, *data())
    _save(path, model, spec, accuracy)
    logging.info("Trained the %s feature network (%d steps, %.1f s): held-out accuracy %.4f; "
                 "cached in %s", spec.dataset, spec.steps, time.perf_counter() - t0, accuracy,
                 path)
    return TrainedFeatureNet(model, spec, accuracy, path, trained=True)
