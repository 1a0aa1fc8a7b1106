"""Time / class embeddings and adaLN helpers against closed forms."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.models import embeddings as E


def test_sinusoidal_matches_closed_form():
    t = np.array([0.0, 0.25, 1.0])
    dim, scale, max_period = 10, 1000.0, 10000.0
    got = E.sinusoidal_embedding(jnp.asarray(t), dim, scale=scale, max_period=max_period)
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half) / half)
    args = scale * t[:, None] * freqs[None]
    want = np.concatenate([np.sin(args), np.cos(args)], axis=1)
    assert got.dtype == jnp.float32 and got.shape == (3, dim)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-4)
    odd = E.sinusoidal_embedding(jnp.asarray(t), 7)
    assert odd.shape == (3, 7) and np.all(np.asarray(odd[:, -1]) == 0)


@pytest.mark.parametrize("kind", ["sinusoidal", "fourier"])
def test_time_features_distinguish_ends_of_time(kind):
    emb = E.TimeEmbedding(64, kind=kind, rngs=nnx.Rngs(0))
    # Input in bfloat16 would collapse 0.999 and 1.0; the features must not.
    t = jnp.array([0.0, 1e-3, 1.0 - 1e-3, 1.0], jnp.float32)
    f = emb.features(t)
    assert f.dtype == jnp.float32
    f = np.asarray(f)
    assert np.all(np.isfinite(f))
    assert np.linalg.norm(f[0] - f[1]) > 0.3
    assert np.linalg.norm(f[2] - f[3]) > 0.3
    out = emb(t)
    assert out.dtype == jnp.float32 and out.shape == (4, 64)


def test_fourier_features_are_unit_circle_pairs():
    ff = E.GaussianFourierFeatures(16, scale=16.0, rngs=nnx.Rngs(0))
    f = np.asarray(ff(jnp.linspace(0.0, 1.0, 5)))
    np.testing.assert_allclose(f[:, :8] ** 2 + f[:, 8:] ** 2, 1.0, atol=1e-5)
    # The kernel is a fixed buffer, not a trainable parameter.
    assert not jax.tree.leaves(nnx.state(ff, nnx.Param))


def test_as_time_broadcasts_and_validates():
    np.testing.assert_array_equal(E.as_time(0.5, 3), np.full(3, 0.5, np.float32))
    assert E.as_time(jnp.array([0.2], jnp.bfloat16), 4).dtype == jnp.float32
    with pytest.raises(ValueError, match="t must be a floating-point"):
        E.as_time(jnp.array([1, 2, 3]), 3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        E.as_time(jnp.zeros((2,)), 3)


def test_class_embedding_null_class():
    ce = E.ClassEmbedding(4, 8, rngs=nnx.Rngs(0))
    assert ce.null_class == 4
    null = ce(None, 2)
    np.testing.assert_array_equal(null, ce(jnp.array([4, 4]), 2))
    assert not np.allclose(ce(jnp.array([0, 0]), 2), null)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        ce(jnp.array([0, 5]), 2)
    with pytest.raises(ValueError, match="integer"):
        ce(jnp.array([0.0, 1.0]), 2)


def test_conditioning_none_is_the_null_class():
    c = E.Conditioning(8, num_classes=3, rngs=nnx.Rngs(0))
    t = jnp.array([0.1, 0.7])
    np.testing.assert_array_equal(c(t, None, 2), c(t, jnp.array([3, 3]), 2))
    # conditioning = time embedding + class embedding (float32 sums: equal to rounding)
    np.testing.assert_allclose(c(t, jnp.array([3, 3]), 2) - c.classes(None, 2), c.time(t),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="num_classes=None"):
        E.Conditioning(8, rngs=nnx.Rngs(0))(0.5, jnp.array([1]), 1)


def test_adaln_zero_and_modulate():
    ada = E.AdaLNModulation(5, 3, 4, rngs=nnx.Rngs(0))
    chunks = ada(jnp.ones((2, 5)))
    assert len(chunks) == 4 and all(ch.shape == (2, 3) for ch in chunks)
    assert all(np.all(np.asarray(ch) == 0.0) for ch in chunks)
    x = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    shift = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    scale = jnp.array([[0.0, 1.0, -1.0], [2.0, 2.0, 2.0]])
    want = np.asarray(x) * (1 + np.asarray(scale)[:, None]) + np.asarray(shift)[:, None]
    np.testing.assert_allclose(E.modulate(x, shift, scale), want)
