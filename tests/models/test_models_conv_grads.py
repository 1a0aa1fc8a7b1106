"""The loop-friendly convolution gradients (diffjax.models.layers.conv_general_dilated)."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from diffjax import models
from diffjax.models import layers

DN = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w, pad="SAME", stride=1):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), pad, dimension_numbers=DN)


def conv_loop_friendly(x, w, pad="SAME", stride=1):
    with layers.loop_friendly_conv_gradients():
        return layers.conv_general_dilated(x, w, (stride, stride), pad,
                                           dimension_numbers=layers._NHWC)


@pytest.mark.parametrize("k,pad,stride", [
    (1, "SAME", 1), (3, "SAME", 1), (2, ((1, 0), (0, 1)), 1), (3, "SAME", 2),
    (3, ((1, 1), (0, 1)), 2), (3, "VALID", 2)])
def test_loop_friendly_form_has_the_same_values_and_derivatives(k, pad, stride):
    """Values, gradients (reverse mode), JVPs (forward mode) and second derivatives equal
    those of lax.conv_general_dilated, in float64: 3x3, 1x1 and 2x2 kernels, one-sided
    padding, stride 2 (the U-Net's downsampling) and an odd size."""
    rng = np.random.default_rng(k)
    lax_conv_p = functools.partial(lax_conv, pad=pad, stride=stride)
    friendly = functools.partial(conv_loop_friendly, pad=pad, stride=stride)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((3, 7, 5 if stride == 1 else 7, 4)))
        w = jnp.asarray(rng.standard_normal((k, k, 4, 7)))
        ct = jnp.asarray(rng.standard_normal(lax_conv_p(x, w).shape))
        assert "custom_jvp_call" in str(jax.make_jaxpr(friendly)(x, w))
        y, vjp = jax.vjp(friendly, x, w)
        y_ref, vjp_ref = jax.vjp(lax_conv_p, x, w)
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
        for got, want in zip(vjp(ct), vjp_ref(ct)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        tx, tw = jnp.asarray(rng.standard_normal(x.shape)), jnp.asarray(rng.standard_normal(w.shape))
        _, t = jax.jvp(friendly, (x, w), (tx, tw))
        _, t_ref = jax.jvp(lax_conv_p, (x, w), (tx, tw))
        np.testing.assert_allclose(t, t_ref, rtol=1e-12, atol=1e-12)
        check_grads(friendly, (x, w), order=2, modes=("fwd", "rev"))


def test_other_convolutions_and_no_context_are_plain_lax():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 5)).astype(np.float32))
    # Without the context the function is lax's: the same jaxpr.
    plain = jax.make_jaxpr(lambda x, w: layers.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=layers._NHWC))(x, w)
    assert "custom_jvp_call" not in str(plain)
    # Dilated convolutions are left to lax even inside the context.
    with layers.loop_friendly_conv_gradients():
        jaxpr = str(jax.make_jaxpr(lambda x, w: layers.conv_general_dilated(
            x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=layers._NHWC))(x, w))
        inside = str(jax.make_jaxpr(conv_loop_friendly)(x, w))
        # A strided VALID convolution that drops the last column: its gradient forms would
        # need negative padding, so it is lax's too.
        cropped = str(jax.make_jaxpr(lambda x, w: layers.conv_general_dilated(
            x, w, (2, 2), "VALID", dimension_numbers=layers._NHWC))(x[:, :, :6], w))
    assert "custom_jvp_call" in inside
    assert "custom_jvp_call" not in jaxpr and "custom_jvp_call" not in cropped


def _scan_conv_grads(x, w):
    """Weight and input gradients of a convolution inside a lax.scan over 2 batches."""
    def body(acc, xb):
        gw, gx = jax.grad(lambda w, xb: jnp.sum(jnp.tanh(
            layers.conv_general_dilated(xb, w, (1, 1), "SAME",
                                        dimension_numbers=layers._NHWC))), (0, 1))(w, xb)
        return acc + gw, gx
    return jax.lax.scan(body, jnp.zeros_like(w), x)


def test_gradients_inside_a_scan_are_canonical_convolutions():
    """Inside a while loop XLA:CPU leaves a weight-gradient convolution in the layout it was
    written in; in the loop-friendly form every convolution of the compiled loop reads
    NHWC/HWIO operands (``b01f_01io->b01f``), the form XLA:CPU runs through Eigen."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8, 16)).astype(np.float32)
    w = (0.1 * rng.standard_normal((3, 3, 16, 16))).astype(np.float32)

    def friendly(x, w):
        with layers.loop_friendly_conv_gradients():
            return _scan_conv_grads(x, w)

    compiled = jax.jit(friendly).lower(x, w).compile()
    labels = re.findall(r"convolution\([^\n]*dim_labels=([\w>-]+)", compiled.as_text())
    assert len(labels) == 3 and set(labels) == {"b01f_01io->b01f"}, labels
    got = compiled(x, w)
    want = jax.jit(_scan_conv_grads)(x, w)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max()))


def test_unet_uses_it_and_keeps_its_parameters():
    net = models.UNet(1, image_size=8, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                      attn_resolutions=(), dropout=0.0, rngs=nnx.Rngs(0))
    convs = [m for _, m in nnx.iter_graph(net) if isinstance(m, nnx.Conv)]
    assert convs and all(c.conv_general_dilated is layers.conv_general_dilated for c in convs)
    rng = np.random.default_rng(0)
    for c in convs:  # no zero-initialised branches: every convolution gets a gradient
        c.kernel[...] = jnp.asarray(0.3 * rng.standard_normal(c.kernel.shape), jnp.float32)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 1)).astype(np.float32))
    t = jnp.asarray([0.3, 0.7], jnp.float32)

    def loss(net, x):
        return jnp.sum(jnp.square(net(x, t)))

    ref = nnx.jit(nnx.grad(loss, argnums=(0, 1)))(net, x)

    @nnx.jit
    def friendly(net, x):
        with layers.loop_friendly_conv_gradients():
            return nnx.grad(loss, argnums=(0, 1))(net, x)

    got = friendly(net, x)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(ref[0].conv_in.kernel[...]).max()) > 0
    for g, r in zip(jax.tree.leaves(got[0]), jax.tree.leaves(ref[0])):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(float(jnp.abs(r).max()), 1))

