"""The FID InceptionV3: its parameter count against torchvision's published figure, output
shapes by abstract evaluation (no 299x299 forward pass), the pools and conv layer against
numpy, and the weight file's round trip and errors."""
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.models import inception


@pytest.fixture(scope="module")
def shapes():
    return inception.parameter_shapes()


def test_parameter_count_matches_torchvision(shapes):
    # torchvision's inception_v3 has 27,161,264 parameters (its weights' metadata); without the
    # auxiliary classifier (3,326,696) and the 1000-way fc (2,049,000) that leaves the trunk.
    trainable = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(("/mean", "/var")))
    assert trainable == 27_161_264 - 3_326_696 - 2_049_000
    assert len(shapes) == 470 and shapes["Conv2d_1a_3x3/conv/kernel"] == (3, 3, 3, 32)
    assert shapes["Mixed_6b/branch7x7_2/conv/kernel"] == (1, 7, 128, 128)
    assert shapes["Mixed_7c/branch_pool/bn/var"] == (192,)


def test_feature_shapes_by_abstract_evaluation():
    model = inception._unloaded()
    out = jax.eval_shape(model, jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32))
    assert out.shape == (3, inception.FEATURE_DIM) and out.dtype == jnp.float32
    raw = inception._unloaded(resize_input=False)
    # Without resizing the network is fully convolutional down to 75x75.
    assert jax.eval_shape(raw, jax.ShapeDtypeStruct((1, 75, 90, 3), jnp.float32)).shape == (1, 2048)
    with pytest.raises(ValueError, match="at least 75x75"):
        raw(jnp.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        model(jnp.zeros((1, 32, 32, 1)))
    with pytest.raises(ValueError, match="divide uint8 images by 255"):
        model(jnp.zeros((1, 32, 32, 3), jnp.uint8))


def test_pools_and_conv_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 2)).astype(np.float32)
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    windows = np.stack([pad[:, i:i + 4, j:j + 5] for i in range(3) for j in range(3)])
    # TF average pooling: the mean over the window's real pixels (corners: 4, edges: 6)
    np.testing.assert_allclose(inception._avg_pool_3x3(jnp.asarray(x)), np.nanmean(windows, 0),
                               rtol=1e-6)
    kw = dict(dtype=jnp.float32, param_dtype=jnp.float32, kernel_init=inception._zeros_init,
              rngs=nnx.Rngs(0))
    block = inception.InceptionE(2, max_pool=True, **kw)
    assert jax.eval_shape(block, jax.ShapeDtypeStruct((1, 4, 5, 2), jnp.float32)).shape == (1, 4, 5, 2048)

    # A BasicConv2d with a (1, 3) kernel and padding (0, 1): conv, running-stat BN, ReLU.
    conv = inception.BasicConv2d(2, 3, (1, 3), padding=(0, 1), **kw)
    k = rng.standard_normal((1, 3, 2, 3)).astype(np.float32)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    scale, bias = rng.standard_normal(3), rng.standard_normal(3)
    conv.conv.kernel.set_value(jnp.asarray(k))
    for name, v in (("mean", mean), ("var", var), ("scale", scale), ("bias", bias)):
        getattr(conv.bn, name).set_value(jnp.asarray(v, jnp.float32))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    y = sum(np.einsum("bhwc,co->bhwo", xp[:, :, j:j + 5], k[0, j]) for j in range(3))
    y = np.maximum((y - mean) / np.sqrt(var + 1e-3) * scale + bias, 0)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(conv, jnp.asarray(x)), y, rtol=1e-4,
                               atol=1e-5)


def test_weight_file_round_trip_and_errors(shapes, tmp_path):
    rng = np.random.default_rng(1)
    arrays = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
    path = tmp_path / "w.npz"
    np.savez(path, **arrays)
    model = inception.load_inception(path)
    loaded = inception._variables(model)
    assert set(loaded) == set(arrays)
    for k in ("Conv2d_1a_3x3/conv/kernel", "Mixed_5b/branch_pool/bn/mean", "Mixed_7c/branch3x3dbl_3b/bn/scale"):
        np.testing.assert_array_equal(np.asarray(loaded[k].get_value()), arrays[k])
    again = tmp_path / "again.npz"
    inception.save_inception_weights(model, again)
    with np.load(again) as f:
        assert set(f.files) == set(arrays)
        assert all(np.array_equal(f[k], arrays[k]) for k in list(arrays)[::37])

    victim = "Mixed_6c/branch7x7dbl_3/conv/kernel"

    def rewrite(name, drop, extra=None):
        out = tmp_path / name
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
            for item in src.infolist():
                if item.filename != drop + ".npy":
                    dst.writestr(item, src.read(item.filename))
            if extra is not None:
                with dst.open(extra[0] + ".npy", "w") as fh:
                    np.lib.format.write_array(fh, extra[1])
        return out

    with pytest.raises(ValueError, match=f"lacks 1 parameter.*{victim}"):
        inception.load_inception(rewrite("missing.npz", victim))
    with pytest.raises(ValueError, match=rf"parameter '{victim}' has shape \(7, 1, 160, 160\), expected \(1, 7, 160, 160\)"):
        inception.load_inception(rewrite("shape.npz", victim, (victim, np.zeros((7, 1, 160, 160), np.float32))))
    with pytest.raises(ValueError, match="not parameters of the model.*fc/kernel"):
        inception.load_inception(rewrite("extra.npz", "", ("fc/kernel", np.zeros((2048, 1008), np.float32))))
    with pytest.raises(FileNotFoundError, match="not shipped"):
        inception.load_inception(tmp_path / "nope.npz")
