r"""InceptionV3 as used for FID (Flax NNX), with weights read from a file the user supplies.

The architecture is pytorch-fid's ``fid_inception_v3`` (torchvision's ``Inception3`` with the
``FIDInceptionA`` / ``FIDInceptionC`` / ``FIDInceptionE_1`` / ``FIDInceptionE_2`` blocks),
which reproduces the TensorFlow FID graph (``inception-2015-12-05``): average pools that
ignore the zero padding, a max pool in the last block, batch norm with ``eps = 1e-3``.
:class:`InceptionV3` maps images ``(B, H, W, 3)`` with values in ``[0, 1]`` to the 2048-d
``pool3`` features (the global average of ``Mixed_7c``), which is what FID compares. The
1008-way classifier on top is not part of it.

**The weights are not shipped and never downloaded.** :func:`load_inception` reads them
from a file in the format below; without the original FID weights the features (and any
"FID") are meaningless.

Weight file format
------------------
An uncompressed or compressed ``.npz`` (``numpy.savez``) holding one float array per
variable, named by the variable's path in the NNX module joined with ``/``. The module
mirrors torchvision's attribute names, so a name is the torchvision state-dict key with
``.`` -> ``/`` and the last part renamed:

====================================  ======================================  ==============
torchvision key                        file name                               layout
====================================  ======================================  ==============
``Mixed_5b.branch1x1.conv.weight``     ``Mixed_5b/branch1x1/conv/kernel``      HWIO (torch
                                                                               OIHW ->
                                                                               ``transpose(2,
                                                                               3, 1, 0)``)
``Mixed_5b.branch1x1.bn.weight``       ``Mixed_5b/branch1x1/bn/scale``         ``(C,)``
``Mixed_5b.branch1x1.bn.bias``         ``Mixed_5b/branch1x1/bn/bias``          ``(C,)``
``....bn.running_mean``                ``.../bn/mean``                         ``(C,)``
``....bn.running_var``                 ``.../bn/var``                          ``(C,)``
====================================  ======================================  ==============

The file must hold exactly these 470 arrays (:func:`parameter_shapes` lists them with their
shapes); ``fc.*`` and ``num_batches_tracked`` entries are not part of the format.
:func:`save_inception_weights` writes a model in this format.

Conversion recipe from pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (an untested
recipe: it needs torch, which diffjax does not use; run it wherever the file and torch are)::

    import numpy as np, torch
    state = torch.load("pt_inception-2015-12-05-6726825d.pth", map_location="cpu")
    names = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
    out = {}
    for key, value in state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        module, last = key.rsplit(".", 1)          # "Mixed_5b.branch1x1.conv", "weight"
        path = module.replace(".", "/")
        if module.endswith(".conv"):               # conv weights: OIHW -> HWIO
            out[path + "/kernel"] = value.numpy().transpose(2, 3, 1, 0)
        else:                                      # batch norm
            out[path + "/" + names[last]] = value.numpy()
    np.savez("inception_fid.npz", **out)

Input handling follows pytorch-fid: images are resized to 299x299 by bilinear interpolation
with half-pixel centres and no antialiasing (``F.interpolate(..., mode="bilinear",
align_corners=False)``; TensorFlow's original graph resized slightly differently, so
features differ from the TF implementation by a small amount), then mapped to ``[-1, 1]``.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["InceptionV3", "FEATURE_DIM", "INPUT_SIZE", "parameter_shapes", "load_inception",
           "save_inception_weights"]


def __dir__():
    return sorted(__all__)

FEATURE_DIM = 2048
"""Width of the pool3 features :class:`InceptionV3` returns."""
INPUT_SIZE = 299
"""Side of the square images the network sees after resizing."""
_MIN_SIZE = 75  # the smallest input the stride-2 stages accept


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


class BasicConv2d(nnx.Module):
    """Convolution without bias, batch norm (running statistics, eps 1e-3), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: Union[int, Sequence[int]], *,
                 stride: int = 1, padding: Union[int, Sequence[int]] = 0, dtype, param_dtype,
                 kernel_init, rngs: nnx.Rngs):
        ph, pw = _pair(padding)
        init = {} if kernel_init is None else {"kernel_init": kernel_init}
        self.conv = nnx.Conv(cin, cout, _pair(kernel), strides=_pair(stride),
                             padding=((ph, ph), (pw, pw)), use_bias=False, dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs, **init)
        self.bn = nnx.BatchNorm(cout, use_running_average=True, epsilon=1e-3, dtype=dtype,
                                param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x):  # TF semantics: the padded zeros do not count
    return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                        count_include_pad=False)


def _max_pool_3x3_s2(x):
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nnx.Module):
    """``FIDInceptionA``: 1x1, 5x5, double 3x3 and average-pool branches."""

    def __init__(self, cin: int, pool_features: int, **kw):
        self.branch1x1 = BasicConv2d(cin, 64, 1, **kw)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1, **kw)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, **kw)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, **kw)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, **kw)
        self.branch_pool = BasicConv2d(cin, pool_features, 1, **kw)

    def __call__(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_3x3(x))],
                               axis=-1)


class InceptionB(nnx.Module):
    """torchvision's ``InceptionB`` (``Mixed_6a``): grid reduction 35 -> 17."""

    def __init__(self, cin: int, **kw):
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, **kw)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, **kw)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, **kw)

    def __call__(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch3x3(x), b3, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nnx.Module):
    """``FIDInceptionC``: factorised 7x7 branches and an average-pool branch."""

    def __init__(self, cin: int, channels_7x7: int, **kw):
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1, **kw)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1, **kw)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), **kw)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, **kw)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), **kw)
        self.branch_pool = BasicConv2d(cin, 192, 1, **kw)

    def __call__(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return jnp.concatenate([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_3x3(x))],
                               axis=-1)


class InceptionD(nnx.Module):
    """torchvision's ``InceptionD`` (``Mixed_7a``): grid reduction 17 -> 8."""

    def __init__(self, cin: int, **kw):
        self.branch3x3_1 = BasicConv2d(cin, 192, 1, **kw)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, **kw)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, **kw)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), **kw)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), **kw)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, **kw)

    def __call__(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nnx.Module):
    """``FIDInceptionE_1`` (``max_pool=False``: average pool without the padding) or
    ``FIDInceptionE_2`` (``max_pool=True``: 3x3 max pool, stride 1)."""

    def __init__(self, cin: int, *, max_pool: bool, **kw):
        self.max_pool = bool(max_pool)
        self.branch1x1 = BasicConv2d(cin, 320, 1, **kw)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1, **kw)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, **kw)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, **kw)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
        self.branch_pool = BasicConv2d(cin, 192, 1, **kw)

    def __call__(self, x):
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = jnp.concatenate([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], axis=-1)
        if self.max_pool:
            pooled = nnx.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        return jnp.concatenate([self.branch1x1(x), b3, d, self.branch_pool(pooled)], axis=-1)


class InceptionV3(nnx.Module):
    """The FID InceptionV3 trunk: ``model(images) -> (B, 2048)`` pool3 features, float32.

    ``images``: float ``(B, H, W, 3)`` NHWC with values in ``[0, 1]``. With
    ``resize_input=True`` (default) they are resized to 299x299 (module docstring); with
    ``False`` they are used as they are (H, W >= 75). The network is always in inference mode
    (batch norm uses the stored running statistics); it has no randomness.

    Random weights are for shapes and tests only; real features need :func:`load_inception`.
    Args: ``resize_input``; ``dtype`` (compute dtype, default float32) and ``param_dtype``
    (default float32); ``kernel_init``: initializer of the convolution kernels (None: Flax's
    default; each distinct kernel shape compiles its own random initializer, which takes
    minutes on a CPU the first time -- :func:`load_inception` passes a numpy zero initializer
    instead); ``rngs`` (initialisation only).
    """

    def __init__(self, *, resize_input: bool = True, dtype=jnp.float32,
                 param_dtype=jnp.float32, kernel_init=None, rngs: nnx.Rngs):
        self.resize_input = bool(resize_input)
        kw = dict(dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init, rngs=rngs)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, **kw)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, **kw)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, **kw)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, **kw)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, **kw)
        self.Mixed_5b = InceptionA(192, 32, **kw)
        self.Mixed_5c = InceptionA(256, 64, **kw)
        self.Mixed_5d = InceptionA(288, 64, **kw)
        self.Mixed_6a = InceptionB(288, **kw)
        self.Mixed_6b = InceptionC(768, 128, **kw)
        self.Mixed_6c = InceptionC(768, 160, **kw)
        self.Mixed_6d = InceptionC(768, 160, **kw)
        self.Mixed_6e = InceptionC(768, 192, **kw)
        self.Mixed_7a = InceptionD(768, **kw)
        self.Mixed_7b = InceptionE(1280, max_pool=False, **kw)
        self.Mixed_7c = InceptionE(2048, max_pool=True, **kw)

    def __call__(self, images):
        x = jnp.asarray(images)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images must be (B, H, W, 3) NHWC, got shape {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"images must be floats in [0, 1], got dtype {x.dtype} (divide "
                             f"uint8 images by 255)")
        if self.resize_input:
            x = jax.image.resize(x.astype(jnp.float32),
                                 (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), "bilinear",
                                 antialias=False)
        elif min(x.shape[1:3]) < _MIN_SIZE:
            raise ValueError(f"images must be at least {_MIN_SIZE}x{_MIN_SIZE} without "
                             f"resizing, got {x.shape[1]}x{x.shape[2]}")
        x = 2.0 * x - 1.0
        for layer in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3):
            x = layer(x)
        x = _max_pool_3x3_s2(x)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = _max_pool_3x3_s2(x)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def _variables(model: nnx.Module) -> dict:
    """``{"a/b/kernel": Variable}`` of every variable of ``model``, by path."""
    return {"/".join(str(p) for p in path): v for path, v in nnx.iter_graph(model)
            if isinstance(v, nnx.Variable)}


def _zeros_init(key, shape, dtype=jnp.float32):
    del key
    return np.zeros(shape, dtype)


def _unloaded(**kw) -> InceptionV3:
    """The model with zero kernels (numpy, no random initialisation to compile)."""
    return InceptionV3(rngs=nnx.Rngs(0), kernel_init=_zeros_init, **kw)


@functools.lru_cache(maxsize=1)
def _shapes() -> tuple:
    return tuple((k, tuple(np.shape(v.get_value()))) for k, v in _variables(_unloaded()).items())


def parameter_shapes() -> dict:
    """``{name: shape}`` of every array a weight file must hold (module docstring)."""
    return dict(_shapes())


def save_inception_weights(model: InceptionV3, path: Union[str, os.PathLike]) -> None:
    """Write ``model``'s variables to ``path`` in the weight-file format (``numpy.savez``,
    float32 arrays named by their path)."""
    arrays = {k: np.asarray(v.get_value(), np.float32) for k, v in _variables(model).items()}
    with open(os.fspath(path), "wb") as f:
        np.savez(f, **arrays)


def load_inception(path: Union[str, os.PathLike], *, resize_input: bool = True,
                   dtype=jnp.float32) -> InceptionV3:
    """An :class:`InceptionV3` with the weights of the ``.npz`` file ``path`` (format in the
    module docstring); no random initialisation is run.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the file is not an ``.npz`` archive, or an array is missing, has the wrong
        shape or is not finite, or the file holds arrays that are not parameters -- the message
        names the parameter(s).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"InceptionV3 weight file {path!r} does not exist (the FID "
                                f"weights are not shipped with diffjax; see "
                                f"diffjax.models.inception for the format and a conversion "
                                f"recipe)")
    expected = parameter_shapes()
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"InceptionV3 weight file {path!r} is not a numpy .npz archive: "
                         f"{e}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"InceptionV3 weight file {path!r} is a single .npy array, not an "
                         f".npz archive of named parameters")
    arrays = {}
    with archive:
        names = set(archive.files)
        missing = sorted(set(expected) - names)
        if missing:
            raise ValueError(f"InceptionV3 weight file {path!r} lacks {len(missing)} "
                             f"parameter(s), e.g. {missing[:5]}")
        unexpected = sorted(names - set(expected))
        if unexpected:
            raise ValueError(f"InceptionV3 weight file {path!r} holds {len(unexpected)} "
                             f"array(s) that are not parameters of the model, e.g. "
                             f"{unexpected[:5]}")
        for name, shape in expected.items():
            got = archive[name]
            if tuple(got.shape) != shape:
                raise ValueError(f"InceptionV3 weight file {path!r}: parameter {name!r} has "
                                 f"shape {tuple(got.shape)}, expected {shape}")
            if not np.issubdtype(got.dtype, np.floating) or not np.all(np.isfinite(got)):
                raise ValueError(f"InceptionV3 weight file {path!r}: parameter {name!r} must "
                                 f"hold finite floats (dtype {got.dtype})")
            arrays[name] = got
    model = _unloaded(resize_input=resize_input, dtype=dtype)
    for name, var in _variables(model).items():
        var.set_value(jnp.asarray(arrays[name], dtype=var.get_value().dtype))
    return model
