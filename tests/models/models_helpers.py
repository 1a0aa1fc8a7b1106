"""Small model factories and a parameter perturbation for tests/models (imported by the tests).

Flax initialises eagerly and every new parameter shape costs an XLA compilation, so models
are built once per configuration and handed out as independent clones.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.models import MLP, PatchTransformer, TokenTransformer, UNet

MODELS = ("mlp", "unet", "tokens", "patches")
VOCAB = 11  # TokenTransformer vocab; id 11 is the mask token


def perturb(model, seed=0, scale=0.1):
    """Adds N(0, scale^2) noise (numpy, no compilation) to every parameter, so that
    zero-initialised output layers and adaLN-Zero gates no longer hide the network."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)
    noisy = jax.tree.map(
        lambda p: jnp.asarray(np.asarray(p) + scale * rng.standard_normal(p.shape), p.dtype),
        state,
    )
    nnx.update(model, noisy)
    return model


@functools.lru_cache(maxsize=None)
def _build(name, items):
    kw = dict(items)
    rngs = nnx.Rngs(kw.pop("seed", 0))
    if name == "mlp":
        return MLP(2, hidden=32, depth=2, time_embed_dim=16, rngs=rngs, **kw)
    if name == "unet":
        return UNet(1, image_size=8, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                    attn_resolutions=(4,), rngs=rngs, **kw)
    if name == "tokens":
        return TokenTransformer(VOCAB, seq_len=8, dim=32, depth=2, heads=4, cond_dim=16,
                                rngs=rngs, **kw)
    if name == "patches":
        return PatchTransformer(2, image_size=8, patch_size=2, dim=32, depth=2, heads=4,
                                rngs=rngs, **kw)
    raise KeyError(name)


# The standard test configuration: class-conditional with dropout, so one configuration
# (one XLA compilation per call signature) serves most tests.
DEFAULTS = {"num_classes": 3, "dropout": 0.1}


def make_model(name, **kw):
    """A fresh (independent) tiny model of family ``name`` in eval mode; ``kw`` overrides
    :data:`DEFAULTS` and the family's configuration."""
    model = nnx.clone(_build(name, tuple(sorted({**DEFAULTS, **kw}.items()))))
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
