"""Backend-specific workarounds, in one place and behind one switch.

Everything else in diffjax is backend-agnostic; what XLA:CPU needs to run a train step at
full speed lives here, and is active only where every device is a CPU (``tweaks="auto"``):

1. **Compiler options** (`compiler_options`): XLA:CPU sends every convolution to YNNPACK by
   default, which runs each one on a single thread and computes weight gradients several
   times slower than XLA's Eigen convolutions. `CPU_OPTIONS` keeps YNNPACK for what it does
   well (dots and reductions) and leaves convolutions to Eigen. The options are per
   executable (``jax.jit(..., compiler_options=...)``): nothing global such as ``XLA_FLAGS``
   is touched, and a jaxlib that does not know them gets none (checked once, by compiling a
   tiny function).
2. **Loop-friendly convolution gradients** (`loop_friendly_convolutions`): inside a
   ``while`` loop (``lax.scan``: gradient accumulation, several train steps per call),
   XLA:CPU compiles a weight-gradient convolution without the layout changes it makes at
   the top level and runs it through a generic loop, orders of magnitude slower. The
   transformation re-expresses the gradients of 2-D NHWC/HWIO convolutions as NHWC/HWIO
   convolutions of explicitly transposed operands (same values). It rewrites a function's
   jaxpr, so models use plain Flax layers and know nothing of it.

`diffjax.training.make_train_step(..., platform_tweaks="auto")` applies both to the train
step; the launchers compile their samplers with `jit`. On GPU and TPU none of it is active.
``bench/train.py`` measures the effect (with and without: ``--frameworks jax,jax-xla``).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

__all__ = ["CPU_OPTIONS", "all_cpu", "active", "compiler_options", "resolve_compiler_options",
           "jit", "loop_friendly_convolutions"]


def __dir__():
    return sorted(__all__)


Tweaks = Union[str, bool]

# XLA's default YNNPACK set on CPU minus LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"),
}


def all_cpu(devices: Sequence[jax.Device]) -> bool:
    """Whether ``devices`` is non-empty and all XLA:CPU devices."""
    devices = list(devices)
    return bool(devices) and all(d.platform == "cpu" for d in devices)


def active(tweaks: Tweaks, devices: Sequence[jax.Device]) -> bool:
    """Whether the workarounds apply to a computation on ``devices``: ``"auto"`` = exactly
    when they are all CPU devices; ``True``/``False`` force them on or off."""
    if isinstance(tweaks, bool):
        return tweaks
    if tweaks != "auto":
        raise ValueError(f"platform_tweaks must be 'auto', True or False; got {tweaks!r}")
    return all_cpu(devices)


@functools.lru_cache(maxsize=None)
def _cpu_options_supported() -> bool:
    """Whether this jaxlib's CPU compiler accepts `CPU_OPTIONS` (an unknown option or enum
    value is an error at compile time, so try once on a tiny function)."""
    try:
        cpu = jax.devices("cpu")[0]
        x = jax.device_put(np.zeros(2, np.float32), cpu)
        jax.jit(lambda v: v + 1, compiler_options=CPU_OPTIONS).lower(x).compile()
        return True
    except (jax.errors.JaxRuntimeError, ValueError, RuntimeError):  # the option is refused
        return False


def compiler_options(devices: Sequence[jax.Device], tweaks: Tweaks = "auto") -> dict:
    """The XLA options for a computation on ``devices``: `CPU_OPTIONS` when the tweaks are
    active, they are CPU devices and this jaxlib accepts them, else ``{}``."""
    if active(tweaks, devices) and all_cpu(devices) and _cpu_options_supported():
        return dict(CPU_OPTIONS)
    return {}


def resolve_compiler_options(options: Union[str, Mapping[str, Any], None],
                             devices: Sequence[jax.Device],
                             tweaks: Tweaks = "auto") -> Optional[dict]:
    """``"auto"`` -> `compiler_options` (``None`` when empty); a mapping is used as given
    (``{}`` or ``None``: XLA's defaults)."""
    if isinstance(options, str):
        if options != "auto":
            raise ValueError(f"compiler_options must be 'auto', a mapping of XLA options or "
                             f"None; got {options!r}")
        return compiler_options(devices, tweaks) or None
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"compiler_options must be 'auto', a mapping of XLA options or None; "
                         f"got {type(options).__name__}")
    return dict(options) if options else None


def jit(fn, *, tweaks: Tweaks = "auto", **jit_kwargs):
    """``jax.jit(fn, **jit_kwargs)`` with `compiler_options` for the default backend's
    devices (the launchers' samplers and likelihoods: their forward convolutions gain too)."""
    options = compiler_options(jax.devices(), tweaks) or None
    return jax.jit(fn, compiler_options=options, **jit_kwargs)


# ------------------------------------------------------------------ convolution gradients
_NHWC = jax.lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                     out_spec=(0, 3, 1, 2))


def _conv_fwd(x, w, strides, pad):
    return jax.lax.conv_general_dilated(x, w, strides, pad, dimension_numbers=_NHWC)


def _weight_grad_padding(x_shape, kernel_shape, out_shape, strides, pad):
    return tuple((lo, k + s * (o - 1) - n - lo) for (lo, _), k, s, o, n in
                 zip(pad, kernel_shape[:2], strides, out_shape[1:3], x_shape[1:3]))


def _input_grad_padding(x_shape, kernel_shape, out_shape, strides, pad):
    return tuple((k - 1 - lo, n + lo - (o - 1) * s - 1) for (lo, _), k, s, o, n in
                 zip(pad, kernel_shape[:2], strides, out_shape[1:3], x_shape[1:3]))


def _conv_weight_grad(x, ct, kernel_shape, strides, pad):
    """d<ct, conv(x, w)>/dw: a convolution of x as (C, H, W, N) by ct as (H, W, N, O),
    the latter dilated by the strides."""
    xt = jnp.transpose(x, (3, 1, 2, 0))
    ctt = jnp.transpose(ct, (1, 2, 0, 3))
    wpad = _weight_grad_padding(x.shape, kernel_shape, ct.shape, strides, pad)
    out = jax.lax.conv_general_dilated(xt, ctt, (1, 1), wpad, rhs_dilation=strides,
                                       dimension_numbers=_NHWC)  # (I, kh, kw, O)
    return jnp.transpose(out, (1, 2, 0, 3))


def _conv_input_grad(ct, w, x_shape, strides, pad):
    """d<ct, conv(x, w)>/dx: ct (dilated by the strides) convolved with the flipped kernel,
    in/out swapped."""
    wt = jnp.transpose(jnp.flip(w, (0, 1)), (0, 1, 3, 2))
    dpad = _input_grad_padding(x_shape, w.shape, ct.shape, strides, pad)
    return jax.lax.conv_general_dilated(ct, wt, (1, 1), dpad, lhs_dilation=strides,
                                        dimension_numbers=_NHWC)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _conv_nhwc(x, w, strides, pad):
    return _conv_fwd(x, w, strides, pad)


@_conv_nhwc.defjvp
def _conv_nhwc_jvp(strides, pad, primals, tangents):
    # The tangent maps are written as the transposes of the backward convolutions above,
    # so reverse mode (which transposes them back) runs exactly those.
    x, w = primals
    dx, dw = tangents
    y = _conv_fwd(x, w, strides, pad)
    out = jax.ShapeDtypeStruct(y.shape, y.dtype)
    t_x = jax.linear_transpose(
        lambda c: _conv_input_grad(c, w, x.shape, strides, pad), out)(dx)[0]
    t_w = jax.linear_transpose(
        lambda c: _conv_weight_grad(x, c, w.shape, strides, pad), out)(dw)[0]
    return y, t_x + t_w


def _rewritable(params, lhs_shape, rhs_shape):
    """``(strides, padding)`` of an undilated, ungrouped NHWC/HWIO convolution (the
    ``conv_general_dilated`` equation's ``params``) whose gradient forms need no negative
    padding, else None."""
    if len(lhs_shape) != 4 or len(rhs_shape) != 4 or params["dimension_numbers"] != _NHWC:
        return None
    if params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
        return None
    if params["precision"] is not None or params["preferred_element_type"] is not None:
        return None
    if tuple(params["lhs_dilation"]) != (1, 1) or tuple(params["rhs_dilation"]) != (1, 1):
        return None
    strides = tuple(int(v) for v in params["window_strides"])
    pad = tuple((int(lo), int(hi)) for lo, hi in params["padding"])
    out = (None,) + tuple((n + lo + hi - k) // st + 1 for n, (lo, hi), k, st in
                          zip(lhs_shape[1:3], pad, rhs_shape[:2], strides))
    pads = (pad + _weight_grad_padding(lhs_shape, rhs_shape, out, strides, pad)
            + _input_grad_padding(lhs_shape, rhs_shape, out, strides, pad))
    return (strides, pad) if min(min(p) for p in pads) >= 0 else None


def _eval(jaxpr, consts, *args):
    """``jax.core.eval_jaxpr`` with eligible convolutions replaced by `_conv_nhwc`; nested
    ``jit`` calls are inlined (their convolutions too), other higher-order primitives
    (scan, cond, remat, custom derivatives) are bound unchanged."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        rewrite = None
        if name == "conv_general_dilated":
            rewrite = _rewritable(eqn.params, np.shape(invals[0]), np.shape(invals[1]))
        if rewrite is not None:
            outvals = [_conv_nhwc(invals[0], invals[1], *rewrite)]
        elif name in ("pjit", "jit"):
            closed = eqn.params["jaxpr"]
            outvals = _eval(closed.jaxpr, closed.consts, *invals)
        else:
            with eqn.ctx.manager:
                ans = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outvals = ans if eqn.primitive.multiple_results else [ans]
        for v, val in zip(eqn.outvars, outvals):
            env[v] = val
    return [read(v) for v in jaxpr.outvars]


def loop_friendly_convolutions(fn):
    """``fn`` with the gradients of its 2-D NHWC/HWIO convolutions (undilated, ungrouped,
    any strides, padding that leaves no input row unused) computed as NHWC/HWIO
    convolutions of explicitly transposed operands (module docstring, item 2).

    The values and every derivative are those of ``fn``; only the form of the gradient
    convolutions changes. Apply it to a function that is differentiated inside a loop on
    XLA:CPU (the train step does, under ``platform_tweaks``); forward-mode derivatives are
    slower in this form, which is why it is not applied elsewhere. Convolutions inside
    ``lax.scan``/``cond``/``remat`` bodies of ``fn`` itself are left as they are.
    """

    @functools.wraps(fn)
    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        flat = _eval(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(out_shape), flat)

    return wrapped
