"""diffjax.platform: the CPU workarounds (compiler options, loop-friendly convolution
gradients), checked for the values they compute, the form XLA compiles and the switch."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from diffjax import models, platform

DN = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w, pad="SAME", stride=1, **kw):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), pad, dimension_numbers=DN, **kw)


def conv_labels(hlo: str) -> list:
    return re.findall(r"convolution\([^\n]*dim_labels=([\w>-]+)", hlo)


# ------------------------------------------------------------------ loop-friendly gradients
@pytest.mark.parametrize("k,pad,stride", [
    (1, "SAME", 1), (3, "SAME", 1), (2, ((1, 0), (0, 1)), 1), (3, "SAME", 2),
    (3, ((1, 1), (0, 1)), 2), (3, "VALID", 2)])
def test_loop_friendly_form_has_the_same_values_and_derivatives(k, pad, stride):
    """Values, gradients (reverse mode), JVPs (forward mode) and second derivatives equal
    those of lax.conv_general_dilated, in float64: 3x3, 1x1 and 2x2 kernels, one-sided
    padding, stride 2 (the U-Net's downsampling) and an odd size."""
    rng = np.random.default_rng(k)
    plain = functools.partial(lax_conv, pad=pad, stride=stride)
    friendly = platform.loop_friendly_convolutions(plain)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((3, 7, 5 if stride == 1 else 7, 4)))
        w = jnp.asarray(rng.standard_normal((k, k, 4, 7)))
        ct = jnp.asarray(rng.standard_normal(plain(x, w).shape))
        assert "custom_jvp_call" in str(jax.make_jaxpr(friendly)(x, w))
        y, vjp = jax.vjp(friendly, x, w)
        y_ref, vjp_ref = jax.vjp(plain, x, w)
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
        for got, want in zip(vjp(ct), vjp_ref(ct)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        tx, tw = jnp.asarray(rng.standard_normal(x.shape)), jnp.asarray(rng.standard_normal(w.shape))
        _, t = jax.jvp(friendly, (x, w), (tx, tw))
        _, t_ref = jax.jvp(plain, (x, w), (tx, tw))
        np.testing.assert_allclose(t, t_ref, rtol=1e-12, atol=1e-12)
        check_grads(friendly, (x, w), order=2, modes=("fwd", "rev"))


def test_only_eligible_convolutions_are_rewritten():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 4)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 4)).astype(np.float32))

    def jaxpr(fn, *args):
        return str(jax.make_jaxpr(platform.loop_friendly_convolutions(fn))(*args))

    assert "custom_jvp_call" in jaxpr(lax_conv, x, w)
    # inside a nested jit too (jnp functions and nnx layers trace to nested jit calls)
    assert "custom_jvp_call" in jaxpr(jax.jit(lambda x, w: jnp.tanh(lax_conv(x, w))), x, w)
    # left to lax: dilated, grouped, and a strided VALID convolution that drops the last
    # column (its gradient forms would need negative padding)
    assert "custom_jvp_call" not in jaxpr(lambda x, w: lax_conv(x, w, rhs_dilation=(2, 2)), x, w)
    assert "custom_jvp_call" not in jaxpr(
        lambda x, w: lax_conv(x, w, feature_group_count=2), x, w[:, :, :2])
    assert "custom_jvp_call" not in jaxpr(
        lambda x, w: lax_conv(x, w, "VALID", 2), x[:, :, :6], w)
    # pytrees in, pytrees out, the same numbers
    fn = lambda d: {"y": lax_conv(d["x"], d["w"]), "n": 2 * d["x"].sum()}  # noqa: E731
    got = platform.loop_friendly_convolutions(fn)({"x": x, "w": w})
    want = fn({"x": x, "w": w})
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(g, r)


def _scan_conv_grads(conv):
    """Weight and input gradients of ``conv`` inside a lax.scan over 2 batches."""
    def run(x, w):
        def body(acc, xb):
            gw, gx = jax.grad(lambda w, xb: jnp.sum(jnp.tanh(conv(xb, w))), (0, 1))(w, xb)
            return acc + gw, gx
        return jax.lax.scan(body, jnp.zeros_like(w), x)
    return run


def test_gradients_inside_a_scan_are_canonical_convolutions():
    """Inside a while loop XLA:CPU leaves a weight-gradient convolution in the layout it was
    written in (the plain form compiles other layouts); in the loop-friendly form every
    convolution of the compiled loop reads NHWC/HWIO operands (``b01f_01io->b01f``)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8, 16)).astype(np.float32)
    w = (0.1 * rng.standard_normal((3, 3, 16, 16))).astype(np.float32)
    friendly = jax.jit(_scan_conv_grads(platform.loop_friendly_convolutions(
        lambda x, w: lax_conv(x, w)))).lower(x, w).compile()
    plain = jax.jit(_scan_conv_grads(lax_conv)).lower(x, w).compile()
    labels = conv_labels(friendly.as_text())
    assert len(labels) == 3 and set(labels) == {"b01f_01io->b01f"}, labels
    assert set(conv_labels(plain.as_text())) != {"b01f_01io->b01f"}
    for g, r in zip(friendly(x, w), plain(x, w)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max()))


def test_unet_gradients_are_unchanged():
    """A plain-Flax U-Net: the rewritten loss has the same gradients."""
    net = models.UNet(1, image_size=8, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                      attn_resolutions=(), dropout=0.0, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(net)
    rng = np.random.default_rng(0)
    params = jax.tree.map(  # no zero-initialised branches: every convolution gets a gradient
        lambda p: jnp.asarray(0.3 * rng.standard_normal(p.shape), p.dtype), params)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 1)).astype(np.float32))
    t = jnp.asarray([0.3, 0.7], jnp.float32)

    def loss(params, x):
        return jnp.sum(jnp.square(nnx.merge(graphdef, params)(x, t)))

    friendly = platform.loop_friendly_convolutions(loss)
    assert str(jax.make_jaxpr(friendly)(params, x)).count("custom_jvp_call") >= 6
    ref = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    got = jax.jit(jax.grad(friendly, argnums=(0, 1)))(params, x)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-6)
    for g, r in zip(jax.tree.leaves(got[0]), jax.tree.leaves(ref[0])):
        assert float(jnp.abs(r).max()) > 0
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(float(jnp.abs(r).max()), 1))


# ------------------------------------------------------------------ compiler options
def ynn_convs(hlo: str) -> int:
    """Convolutions inside YNNPACK fusions of an optimised HLO module."""
    bodies = dict(re.findall(r"\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S))
    called = re.findall(r"calls=%?([\w.\-]+)[^\n]*__ynn_fusion", hlo)
    return sum(bodies.get(name, "").count("convolution(") for name in called)


def _conv_grads(x, w, dy):
    y, vjp = jax.vjp(lax_conv, x, w)
    return (y, *vjp(dy))


def _conv_case():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 8, 32)).astype(np.float32)
    w = (0.1 * rng.standard_normal((3, 3, 32, 32))).astype(np.float32)
    dy = rng.standard_normal((4, 8, 8, 32)).astype(np.float32)
    return x, w, dy


def _conv_grads_f64(x, w, dy):
    """Direct float64 convolution (SAME padding) and its two gradients, in numpy."""
    x, w, dy = (np.asarray(a, np.float64) for a in (x, w, dy))
    b, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((b, h, wd, w.shape[3]))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(3):
        for j in range(3):
            patch = xp[:, i:i + h, j:j + wd, :]
            y += patch @ w[i, j]
            dxp[:, i:i + h, j:j + wd, :] += dy @ w[i, j].T
            dw[i, j] = np.einsum("bhwc,bhwo->co", patch, dy)
    return y, dxp[:, 1:-1, 1:-1, :], dw


def test_cpu_options_send_convolutions_to_eigen_and_keep_their_values():
    options = platform.compiler_options(jax.devices("cpu"))
    assert options == platform.CPU_OPTIONS  # this jaxlib accepts them
    x, w, dy = _conv_case()
    default = jax.jit(_conv_grads).lower(x, w, dy).compile()
    tuned = jax.jit(_conv_grads, compiler_options=options).lower(x, w, dy).compile()
    # XLA's default sends the forward convolution and both gradients to YNNPACK; with the
    # options none of the three convolutions is inside a YNNPACK fusion.
    assert ynn_convs(default.as_text()) >= 3
    assert ynn_convs(tuned.as_text()) == 0
    ref = [np.asarray(v) for v in _conv_grads_f64(x, w, dy)]
    for got_d, got_t, r in zip(default(x, w, dy), tuned(x, w, dy), ref):
        scale = np.abs(r).max()
        assert np.abs(np.asarray(got_t) - r).max() <= 1e-5 * scale
        assert np.abs(np.asarray(got_d) - r).max() <= 1e-5 * scale


def test_jit_follows_the_switch():
    x, w, dy = _conv_case()
    assert ynn_convs(platform.jit(_conv_grads).lower(x, w, dy).compile().as_text()) == 0
    off = platform.jit(_conv_grads, tweaks=False).lower(x, w, dy).compile().as_text()
    assert ynn_convs(off) >= 3


def test_the_switch():
    class FakeGpu:
        platform = "gpu"
    cpus = jax.devices("cpu")
    assert platform.active("auto", cpus) and not platform.active("auto", [FakeGpu()])
    assert not platform.active("auto", []) and not platform.active(False, cpus)
    assert platform.compiler_options([FakeGpu()]) == {}
    assert platform.compiler_options([FakeGpu()], True) == {}  # CPU options only on CPUs
    assert platform.compiler_options(cpus, False) == {}
    with pytest.raises(ValueError, match="platform_tweaks must be 'auto', True or False"):
        platform.active("yes", cpus)
    assert platform.resolve_compiler_options("auto", cpus) == platform.CPU_OPTIONS
    assert platform.resolve_compiler_options("auto", cpus, False) is None
    assert platform.resolve_compiler_options(None, cpus) is None
    assert platform.resolve_compiler_options({}, cpus) is None
    mine = {"xla_cpu_enable_fast_math": False}
    assert platform.resolve_compiler_options(mine, cpus) == mine
    with pytest.raises(ValueError, match="compiler_options must be 'auto'"):
        platform.resolve_compiler_options("fast", cpus)
    with pytest.raises(ValueError, match="compiler_options must be 'auto'"):
        platform.resolve_compiler_options(3, cpus)
