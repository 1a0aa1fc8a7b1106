"""The checked model call shared by the Gaussian solvers and the discrete samplers.

``call_model(model_fn, x, t, ...)`` calls the user's model once, where it is traced (no extra
trace, no FLOPs), and turns a misuse into an error that names ``model_fn``, the shapes and dtypes
it was given and the calling convention of ``t``. It imports nothing of diffjax, so every layer
may use it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp

__all__ = ["call_model", "describe"]


def describe(a) -> str:
    """An array's dtype and shape as ``float32[4, 3]``."""
    return f"{jnp.dtype(a.dtype).name}{list(a.shape)}"


def call_model(model_fn: Callable, x, t, *, out_shapes: Sequence[tuple], returns: str, convention: str,
               name: str = "model_fn"):
    """``model_fn(x, t)``, checked: one floating-point array of one of the ``out_shapes``.

    Args:
      model_fn: the model, called once as ``model_fn(x, t)``.
      x, t: its arguments (arrays).
      out_shapes: the shapes the output may have.
      returns: what the model must return, in words, for the messages (e.g. ``"an array of the
        shape of x"``).
      convention: the calling convention of ``t`` (and of the output), quoted in the messages.
      name: the model's name in the messages.

    Raises:
      ValueError: the call fails with a plain ValueError or IndexError (chained from it), or
        returns another shape; the message names ``name``, the shapes it was given and
        ``convention``.
      TypeError: the call fails with a plain TypeError (chained), or returns something that is
        not a floating-point array. Other exceptions (e.g. jax's tracer errors) keep their type
        and get the call described in a note.
    """
    given = f"{name}(x, t) with x: {describe(x)} and t: {describe(t)}"
    try:
        out = model_fn(x, t)
    except Exception as e:  # noqa: BLE001
        if type(e) not in (TypeError, ValueError, IndexError):  # e.g. jax's tracer errors: type kept
            e.add_note(f"(while calling {given}; convention: {convention})")
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""  # shape / dtype misuse
        kind = TypeError if type(e) is TypeError else ValueError
        raise kind(f"{name} failed when called as {given} ({type(e).__name__}: {first[:300]}). "
                   f"Convention: {convention}") from e
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(f"{name} must return {returns}; {given} returned {type(out).__name__}")
    if tuple(out.shape) not in [tuple(s) for s in out_shapes]:
        raise ValueError(f"{name} must return {returns}; {given} returned shape {tuple(out.shape)}. "
                         f"Convention: {convention}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{name} must return floating-point values ({returns}); {given} returned dtype "
                        f"{out.dtype}")
    return out
