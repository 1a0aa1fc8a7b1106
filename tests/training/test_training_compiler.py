"""The train step's XLA compiler options (diffjax.training.compiler)."""
import re

import jax
import numpy as np
import pytest

from diffjax import training
from diffjax.training import compiler
from training_helpers import ToyData, flat, setup

DN = ("NHWC", "HWIO", "NHWC")


def ynn_convs(hlo: str) -> int:
    """Convolutions inside YNNPACK fusions of an optimised HLO module."""
    bodies = dict(re.findall(r"\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S))
    called = re.findall(r"calls=%?([\w.\-]+)[^\n]*__ynn_fusion", hlo)
    return sum(bodies.get(name, "").count("convolution(") for name in called)


def _conv_grads(x, w, dy):
    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)
    y, vjp = jax.vjp(conv, x, w)
    return (y, *vjp(dy))


def _conv_case():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 8, 32)).astype(np.float32)
    w = (0.1 * rng.standard_normal((3, 3, 32, 32))).astype(np.float32)
    dy = rng.standard_normal((4, 8, 8, 32)).astype(np.float32)
    return x, w, dy


def test_cpu_options_send_convolutions_to_eigen_and_keep_their_values():
    options = compiler.default_compiler_options(jax.devices("cpu"))
    assert options == compiler.CPU_OPTIONS  # this jaxlib accepts them
    x, w, dy = _conv_case()
    default = jax.jit(_conv_grads).lower(x, w, dy).compile()
    tuned = jax.jit(_conv_grads, compiler_options=options).lower(x, w, dy).compile()
    # XLA's default sends the forward convolution and both gradients to YNNPACK; with the
    # options none of the three convolutions is inside a YNNPACK fusion.
    assert ynn_convs(default.as_text()) >= 3
    assert ynn_convs(tuned.as_text()) == 0
    # Float64 reference: the tuned kernels are as exact as the default ones.
    ref = [np.asarray(v) for v in _conv_grads_f64(x, w, dy)]
    for got_d, got_t, r in zip(default(x, w, dy), tuned(x, w, dy), ref):
        scale = np.abs(r).max()
        assert np.abs(np.asarray(got_t) - r).max() <= 1e-5 * scale
        assert np.abs(np.asarray(got_d) - r).max() <= 1e-5 * scale


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


def test_compiler_jit_uses_the_default_options():
    x, w, dy = _conv_case()
    hlo = compiler.jit(_conv_grads).lower(x, w, dy).compile().as_text()
    assert ynn_convs(hlo) == 0
    assert ynn_convs(jax.jit(_conv_grads).lower(x, w, dy).compile().as_text()) >= 3


def test_no_options_off_cpu_and_for_an_empty_device_list():
    class FakeGpu:
        platform = "gpu"
    assert compiler.default_compiler_options([FakeGpu()]) == {}
    assert compiler.default_compiler_options([]) == {}


def test_resolve_compiler_options():
    cpus = jax.devices("cpu")
    assert compiler.resolve_compiler_options("auto", cpus) == compiler.CPU_OPTIONS
    assert compiler.resolve_compiler_options(None, cpus) is None
    assert compiler.resolve_compiler_options({}, cpus) is None
    mine = {"xla_cpu_enable_fast_math": False}
    assert compiler.resolve_compiler_options(mine, cpus) == mine
    with pytest.raises(ValueError, match="compiler_options must be 'auto'"):
        compiler.resolve_compiler_options("fast", cpus)
    with pytest.raises(ValueError, match="compiler_options must be 'auto'"):
        compiler.resolve_compiler_options(3, cpus)


def test_train_step_with_and_without_the_options_agree():
    mesh = training.make_mesh(2)
    results = []
    for options in ("auto", None):
        step, state = setup(mesh, compiler_options=options)
        data = ToyData(16)
        for _ in range(3):
            state, metrics = step(state, next(data))
        results.append((float(metrics["loss"]), flat(state.params)))
    assert step.compiler_options is None
    (loss_a, params_a), (loss_b, params_b) = results
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    for k in params_a:
        np.testing.assert_allclose(params_a[k], params_b[k], rtol=0, atol=1e-6, err_msg=k)


def test_a_refused_option_is_a_clear_compile_error():
    step, state = setup(training.make_mesh(1), compiler_options={"xla_no_such_option": 1})
    with pytest.raises(Exception, match="xla_no_such_option"):
        step(state, next(ToyData(16)))
