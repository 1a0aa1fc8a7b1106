"""XLA compiler options that diffjax compiles its train step (and launchers' samplers) with.

On XLA:CPU (jaxlib 0.10) every convolution goes to YNNPACK by default, which runs each one
on a single thread and computes weight gradients about 4x slower than XLA's Eigen
convolutions (measured on 2 cores, 32x32x64 -> 64 3x3: forward 16.4 ms vs 10.6 ms,
input gradient 17.2 vs 9.0 ms, weight gradient 63.8 vs 16.0 ms). `default_compiler_options`
therefore keeps YNNPACK for what it does well (dots and reductions, XLA's default) and
leaves convolutions to Eigen. The options are per executable (``jax.jit(...,
compiler_options=...)``): nothing global such as ``XLA_FLAGS`` is touched, and a jaxlib that
does not know the option simply gets none (checked once by compiling a tiny function).
Other platforms get no options. ``bench/train.py`` measures the effect.
"""
from __future__ import annotations

import functools
from typing import Mapping, Optional, Sequence, Union

import jax
import numpy as np

__all__ = ["CPU_OPTIONS", "all_cpu", "default_compiler_options", "jit",
           "resolve_compiler_options"]

# XLA's default YNNPACK set on CPU minus LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"),
}


@functools.lru_cache(maxsize=None)
def _cpu_options_supported() -> bool:
    """Whether this jaxlib's CPU compiler accepts `CPU_OPTIONS` (an unknown option or enum
    value is an error at compile time, so try once on a tiny function)."""
    try:
        cpu = jax.devices("cpu")[0]
        x = jax.device_put(np.zeros(2, np.float32), cpu)
        jax.jit(lambda v: v + 1, compiler_options=CPU_OPTIONS).lower(x).compile()
        return True
    except Exception:  # noqa: BLE001 -- any refusal means "do not use them"
        return False


def all_cpu(devices: Sequence[jax.Device]) -> bool:
    """Whether ``devices`` is non-empty and all XLA:CPU devices (where diffjax works around
    XLA:CPU's performance traps: these options, loop-friendly convolution gradients)."""
    devices = list(devices)
    return bool(devices) and all(d.platform == "cpu" for d in devices)


def default_compiler_options(devices: Sequence[jax.Device]) -> dict:
    """The options diffjax uses for a computation on ``devices``: `CPU_OPTIONS` when they
    are all CPU devices and this jaxlib accepts them, else ``{}``."""
    if all_cpu(devices) and _cpu_options_supported():
        return dict(CPU_OPTIONS)
    return {}


def resolve_compiler_options(options: Union[str, Mapping[str, object], None],
                             devices: Sequence[jax.Device]) -> Optional[dict]:
    """``"auto"`` -> `default_compiler_options` (``None`` when empty); a mapping is used as
    given (``{}`` or ``None``: XLA's defaults)."""
    if isinstance(options, str):
        if options != "auto":
            raise ValueError(f"compiler_options must be 'auto', a mapping of XLA options or "
                             f"None; got {options!r}")
        return default_compiler_options(devices) or None
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"compiler_options must be 'auto', a mapping of XLA options or None; "
                         f"got {type(options).__name__}")
    return dict(options) if options else None


def jit(fn, **jit_kwargs):
    """``jax.jit(fn, **jit_kwargs)`` with `default_compiler_options` for the default backend's
    devices (the launchers' samplers and likelihoods: their forward convolutions gain too)."""
    options = default_compiler_options(jax.devices()) or None
    return jax.jit(fn, compiler_options=options, **jit_kwargs)
