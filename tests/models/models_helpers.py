"""Small model factories for tests/models (imported by the tests).

Flax initialises eagerly and every new parameter shape costs an XLA compilation (about
half a second on CPU), so Flax's own initialisation is used only where a test is about it
(:func:`make_model`, built once per configuration and handed out as clones); every other
test takes generic random parameters drawn with numpy (:func:`random_model`).
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models import MLP, PatchTransformer, TokenTransformer, UNet

MODELS = ("mlp", "unet", "tokens", "patches")
VOCAB = 11  # TokenTransformer vocab; id 11 is the mask token
# Labels for the standard (num_classes=3) models, the null class 3 included. Tests pass
# labels to every forward so that one compiled signature serves them all; cond=None is
# tested where it is resolved (diffjax.models.embeddings.Conditioning).
LABELS = np.array([0, 1, 2, 3], np.int32)
# The standard test configuration: class-conditional with dropout, so one configuration
# (one XLA compilation per call signature) serves most tests.
DEFAULTS = {"num_classes": 3, "dropout": 0.1}


def _construct(name, **kw):
    rngs = nnx.Rngs(0)
    if name == "mlp":
        return MLP(2, hidden=32, depth=2, time_embed_dim=16, rngs=rngs, **kw)
    if name == "unet":
        # Few distinct parameter shapes (each costs a compilation at init); channel
        # changes are exercised by the 28x18 U-Net test.
        return UNet(1, image_size=8, ch=16, ch_mult=(1, 1), num_res_blocks=1,
                    attn_resolutions=(4,), rngs=rngs, **kw)
    if name == "tokens":
        return TokenTransformer(VOCAB, seq_len=8, dim=32, depth=2, heads=4, cond_dim=16,
                                rngs=rngs, **kw)
    if name == "patches":
        return PatchTransformer(2, image_size=8, patch_size=2, dim=32, depth=2, heads=4,
                                cond_dim=16, rngs=rngs, **kw)
    raise KeyError(name)


@functools.lru_cache(maxsize=None)
def _initialised(name, items):
    return _construct(name, **dict(items))


def make_model(name, **kw):
    """A fresh (independent) Flax-initialised tiny model of family ``name``, in eval mode;
    ``kw`` overrides :data:`DEFAULTS` and the family's configuration."""
    model = nnx.clone(_initialised(name, tuple(sorted({**DEFAULTS, **kw}.items()))))
    model.eval()
    return model


def random_model(name=None, *, ctor=None, seed=0, **kw):
    """A model (family ``name`` with ``kw`` as in :func:`make_model`, or ``ctor()``) in eval
    mode whose variables are generic random values from numpy: weights N(0, 1/fan_in),
    norm scales 1 + N(0, 0.1^2), everything else (biases, zero-initialised output layers,
    adaLN-Zero gates) N(0, 0.1^2). No Flax initialisation runs, so nothing is compiled."""
    if ctor is None:
        ctor = functools.partial(_construct, name, **{**DEFAULTS, **kw})
    model = nnx.eval_shape(ctor)
    rng = np.random.default_rng(seed)

    def draw(path, v):
        if path[-1] == "scale":
            x = 1.0 + 0.1 * rng.standard_normal(v.shape)
        elif len(v.shape) >= 2:
            x = rng.standard_normal(v.shape) / math.sqrt(math.prod(v.shape[:-1]))
        else:
            x = 0.1 * rng.standard_normal(v.shape)
        return jnp.asarray(x, v.dtype)

    flat = nnx.to_flat_state(nnx.state(model))
    nnx.update(model, nnx.from_flat_state([(path, v.replace(draw(path, v))) for path, v in flat]))
    model.eval()
    return model


def make_input(name, batch=4, seed=1):
    rng = np.random.default_rng(seed)
    if name == "mlp":
        return jnp.asarray(rng.standard_normal((batch, 2)), jnp.float32)
    if name == "unet":
        return jnp.asarray(rng.standard_normal((batch, 8, 8, 1)), jnp.float32)
    if name == "tokens":
        return jnp.asarray(rng.integers(0, VOCAB + 1, (batch, 8)), jnp.int32)
    if name == "patches":
        return jnp.asarray(rng.standard_normal((batch, 8, 8, 2)), jnp.float32)
    raise KeyError(name)


def expected_shape(name, x):
    return x.shape + (VOCAB,) if name == "tokens" else x.shape


@nnx.jit
def _forward(model, x, t, cond=None):
    return model(x, t, cond)


def strong(x, t, cond=None):
    """Inputs as strongly typed arrays: a weakly typed ``jnp.full(.., 0.5)`` would give a
    different jit cache key (and a fresh compilation) than ``jnp.array([...])``."""
    x = jnp.asarray(np.asarray(x))
    t = jnp.asarray(np.asarray(t, np.float32))
    return x, t, None if cond is None else jnp.asarray(np.asarray(cond, np.int32))


def forward(model, x, t, cond=None) -> np.ndarray:
    """Jitted forward (one compilation per configuration and input signature), returned
    as a numpy array so that checks on it do not compile one XLA program per shape."""
    return np.asarray(_forward(model, *strong(x, t, cond)))


def maxabs(a, b=None) -> float:
    """max |a - b| (or max |a|), in numpy."""
    a = np.asarray(a, np.float64)
    return float(np.max(np.abs(a if b is None else a - np.asarray(b, np.float64))))
