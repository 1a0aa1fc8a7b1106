"""Shapes, zero output at init, class conditioning and input validation of each model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.models import MLP, PatchTransformer, TokenTransformer, UNet, count_params
from models_helpers import (
    LABELS, MODELS, expected_shape, forward, make_input, make_model, maxabs, random_model,
)


@pytest.mark.parametrize("name", MODELS)
def test_shape_dtype_and_zero_output_at_init(name):
    model = make_model(name)  # num_classes=3
    x = make_input(name)
    out = forward(model, x, np.array([0.0, 0.5, 1.0, 0.2]), LABELS)  # 3 is the null class
    assert out.shape == expected_shape(name, x) and out.dtype == jnp.float32
    assert maxabs(out) == 0.0


@pytest.mark.parametrize("name", MODELS)
def test_class_conditioning_and_null_class(name):
    model = random_model(name)
    assert model.null_class == 3
    x = make_input(name)
    t = np.full(4, 0.3)
    out = lambda c: forward(model, x, t, np.full(4, c))
    assert maxabs(out(0), out(1)) > 1e-4
    assert maxabs(out(0), out(3)) > 1e-4  # the null class is a condition of its own
    with pytest.raises(ValueError, match="cond"):
        model(x, t, jnp.full((4,), 4))  # out of range: checked on concrete labels


@pytest.mark.parametrize("name", MODELS)
def test_unconditional_model_refuses_labels(name):
    model = random_model(name, num_classes=None)
    assert model.null_class is None
    with pytest.raises(ValueError, match="num_classes=None"):
        model(make_input(name), 0.5, jnp.zeros((4,), jnp.int32))


def test_mlp_flattens_trailing_axes():
    model = random_model("mlp")  # dim=2
    x = make_input("mlp")
    t = jnp.full((4,), 0.5)
    out = forward(model, x.reshape(4, 1, 2), t, LABELS)
    assert out.shape == (4, 1, 2)
    np.testing.assert_allclose(out.reshape(4, 2), forward(model, x, t, LABELS), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        model(jnp.ones((4, 3)), 0.5)


def _fourier_mlp(features, scale=1.0):
    return lambda: MLP(2, hidden=32, depth=2, time_embed_dim=16, num_classes=3,
                       input_fourier_features=features, input_fourier_scale=scale,
                       rngs=nnx.Rngs(0))


def test_mlp_input_fourier_features_zero_init_param_count_and_frequency_scale():
    plain = nnx.eval_shape(_fourier_mlp(0))
    assert plain.input_fourier is None and plain.proj_in.kernel.shape == (2, 32)
    model = _fourier_mlp(128, scale=0.5)()  # Flax initialisation: the output head is zero
    model.eval()
    x = make_input("mlp")
    assert maxabs(forward(model, x, np.array([0.0, 0.3, 0.7, 1.0]), LABELS)) == 0.0
    # B (2 x 128) is fixed: not a parameter; only proj_in's 2 * 128 extra input rows are.
    assert model.input_fourier[...].shape == (2, 128)
    assert "input_fourier" not in nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert count_params(model) == count_params(plain) + 2 * 128 * 32
    # 256 draws of N(0, 0.5^2): the sample std is 0.5 within 4 standard errors (~0.044 each)
    assert abs(float(np.std(model.input_fourier[...])) - 0.5) < 0.2 * 0.5
    for bad in (dict(input_fourier_features=-1), dict(input_fourier_features=2.0),
                dict(input_fourier_features=4, input_fourier_scale=0.0)):
        with pytest.raises(ValueError, match="input_fourier"):
            MLP(2, hidden=8, depth=1, time_embed_dim=8, rngs=nnx.Rngs(0), **bad)


def test_mlp_input_fourier_features_are_sin_cos_of_2pi_x_b():
    # Independent truth: with B set to integers and proj_in's rows for x zeroed, the
    # model sees x only through sin / cos(2 pi x B), which have period 1 in every
    # coordinate; with the Fourier rows zeroed it is the plain MLP with the same weights.
    model = random_model(ctor=_fourier_mlp(3))
    plain = random_model(ctor=_fourier_mlp(0))
    rest = lambda m: {k: v for k, v in nnx.to_pure_dict(nnx.state(m)).items()
                      if k not in ("proj_in", "input_fourier")}
    nnx.update(plain, rest(model))
    model.input_fourier[...] = jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, -3.0]])
    kernel = np.asarray(model.proj_in.kernel[...])  # rows: x (2), sin (3), cos (3)
    plain.proj_in.kernel[...] = jnp.asarray(kernel[:2])
    plain.proj_in.bias[...] = model.proj_in.bias[...]
    x, t = make_input("mlp"), np.array([0.1, 0.4, 0.6, 0.9])
    out = forward(model, x, t, LABELS)
    assert maxabs(out) > 1e-3

    model.proj_in.kernel[...] = jnp.asarray(kernel * (np.arange(8) >= 2)[:, None])
    shifted = forward(model, x + np.array([[1.0, -2.0]], np.float32), t, LABELS)
    np.testing.assert_allclose(shifted, forward(model, x, t, LABELS), atol=2e-5)
    half = forward(model, x + np.array([[0.5, 0.0]], np.float32), t, LABELS)
    assert maxabs(half, forward(model, x, t, LABELS)) > 1e-3  # not periodic in 1/2

    model.proj_in.kernel[...] = jnp.asarray(kernel * (np.arange(8) < 2)[:, None])
    np.testing.assert_allclose(forward(model, x, t, LABELS), forward(plain, x, t, LABELS),
                               atol=1e-6)


def test_unet_mnist_height_odd_width_pooling_scale_shift():
    # Heights 28 -> 14 -> 7 (the MNIST levels, attention at 14); widths 18 -> 9 -> 5, so
    # the way up resizes 5 -> 9 -> 18 to the skips' odd sizes. Average-pool / plain nearest
    # resampling, scale-shift conditioning, separate output channels.
    model = random_model(ctor=lambda: UNet(
        1, 2, image_size=(28, 18), ch=16, ch_mult=(1, 2, 2), num_res_blocks=1,
        attn_resolutions=(14,), resample_with_conv=False, scale_shift=True, rngs=nnx.Rngs(0)))
    out = forward(model, np.ones((2, 28, 18, 1)), np.array([0.1, 0.9]))
    assert out.shape == (2, 28, 18, 2)
    assert np.all(np.isfinite(out)) and maxabs(out[0], out[1]) > 1e-4


def test_unet_validation():
    with pytest.raises(ValueError, match="attn_resolutions"):
        UNet(1, image_size=28, ch=8, attn_resolutions=(16,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=">= 2"):
        UNet(1, image_size=8, ch=8, ch_mult=(1, 2, 2, 2), attn_resolutions=(), rngs=nnx.Rngs(0))
    model = random_model("unet")  # 8x8x1
    with pytest.raises(ValueError, match=r"\(B, 8, 8, 1\)"):
        model(jnp.ones((1, 8, 8, 3)), 0.5)


def test_token_transformer_vocab_and_lengths():
    model = random_model("tokens", positions="learned")
    assert model.mask_id == 11
    # all-mask input, shorter than seq_len
    logits = forward(model, np.full((4, 5), 11), np.ones(4), LABELS)
    assert logits.shape == (4, 5, 11)
    with pytest.raises(ValueError, match=r"\[0, 11\]"):
        model(jnp.full((4, 5), 12), 1.0)
    with pytest.raises(ValueError, match="seq_len=8"):
        model(jnp.zeros((4, 9), jnp.int32), 1.0)
    with pytest.raises(ValueError, match="integer"):
        model(jnp.zeros((4, 4)), 1.0)
    uniform = random_model("tokens", num_extra_tokens=0)  # no mask token
    assert uniform.mask_id is None
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        uniform(jnp.full((4, 5), 11), 1.0)
    with pytest.raises(ValueError, match="positions"):
        make_model("tokens", positions="alibi")
    with pytest.raises(ValueError, match="even head dimension"):
        TokenTransformer(11, seq_len=8, dim=12, depth=1, heads=4, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_token_transformer_is_bidirectional(positions):
    overrides = {} if positions == "rope" else {"positions": positions}  # rope: the default
    model = random_model("tokens", **overrides)
    x = make_input("tokens")
    y = x.at[0, -1].set((x[0, -1] + 1) % 11)
    t = np.full(4, 0.5)
    a, b = forward(model, x, t, LABELS), forward(model, y, t, LABELS)
    # The last token influences the first position's logits (no causal mask) ...
    assert maxabs(a[0, 0], b[0, 0]) > 1e-4
    # ... and order is seen: in [5, 3, 5, 5, 5, 5, 5, 5] the 5s next to the 3 and far from it
    # get different logits (a bag-of-tokens model would give them the same).
    z = jnp.tile(jnp.array([[5, 3, 5, 5, 5, 5, 5, 5]]), (4, 1))
    out = forward(model, z, t, LABELS)
    assert maxabs(out[0, 0], out[0, 7]) > 1e-4


def test_patch_transformer_patchify_roundtrip_and_validation():
    from diffjax.models.transformer import patchify, unpatchify

    x = jax.random.normal(jax.random.key(0), (2, 6, 4, 3))
    p = patchify(x, 2)
    assert p.shape == (2, 6, 12)
    np.testing.assert_array_equal(p[0, 1], x[0, 0:2, 2:4].reshape(-1))
    np.testing.assert_array_equal(unpatchify(p, 2, (6, 4), 3), x)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        PatchTransformer(1, image_size=7, patch_size=2, dim=16, depth=1, heads=2,
                         rngs=nnx.Rngs(0))
    model = random_model("patches", positions="learned")
    assert forward(model, make_input("patches"), np.full(4, 0.5), LABELS).shape == (4, 8, 8, 2)
