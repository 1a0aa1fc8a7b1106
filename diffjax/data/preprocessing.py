"""Quantised-image preprocessing shared by digits (levels 0..16) and TFDS images (0..255).

An image with integer levels ``0..L-1`` (``L = max_value + 1``) is mapped to ``[-1, 1]`` in
one of two ways, and :func:`to_levels` inverts whichever was used:

* plain: ``y = 2 x / (L - 1) - 1`` (level 0 -> -1, level L-1 -> +1); inverse rounds.
* uniform dequantisation: ``y = 2 (x + u) / L - 1`` with ``u ~ U[0, 1)`` per pixel, so ``y``
  has a density on ``[-1, 1)`` whose bin ``[2x/L - 1, 2(x+1)/L - 1)`` holds level ``x``; the
  inverse is ``floor(L (y + 1) / 2)``. A continuous density on this scale gives a discrete
  log-likelihood bound with the offset ``log(L / 2)`` per dimension.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from diffjax.data.pipeline import Batch

__all__ = ["ImageAugment", "dequantize", "to_levels", "to_symmetric"]


def __dir__():
    return sorted(__all__)


def to_symmetric(x: np.ndarray, max_value: int) -> np.ndarray:
    """Levels ``0..max_value`` -> float32 in ``[-1, 1]`` (plain scaling)."""
    return (np.asarray(x, np.float64) * (2.0 / max_value) - 1.0).astype(np.float32)


def dequantize(x: np.ndarray, noise: np.ndarray, max_value: int) -> np.ndarray:
    """Levels plus ``noise`` in ``[0, 1)`` -> float32 in ``[-1, 1)``: ``2 (x + u) / L - 1``."""
    levels = max_value + 1
    y = (np.asarray(x, np.float64) + noise) * (2.0 / levels) - 1.0
    # float32 rounding must not push the top bin onto +1 (the bin is half-open).
    return np.minimum(y.astype(np.float32), np.nextafter(np.float32(1), np.float32(0)))


def to_levels(y: np.ndarray, max_value: int, *, dequantized: bool = False) -> np.ndarray:
    """Inverse of :func:`to_symmetric` (``dequantized=False``) or :func:`dequantize`.

    Accepts any real array (e.g. model samples slightly outside ``[-1, 1]``) and returns
    integer levels clipped to ``[0, max_value]`` (uint8 when ``max_value < 256``).
    """
    y = np.asarray(y, np.float64)
    if dequantized:
        x = np.floor((y + 1.0) * ((max_value + 1) / 2.0))
    else:
        x = np.rint((y + 1.0) * (max_value / 2.0))
    x = np.clip(x, 0, max_value)
    return x.astype(np.uint8 if max_value < 256 else np.int32)


class ImageAugment:
    """Per-example random preprocessing of a batch ``{"x": levels (B, H, W, C), ...}``.

    Maps levels to ``[-1, 1]`` (plain or dequantised) and optionally flips left-right with
    probability 1/2, using one generator per example (see ``pipeline.example_rng``).
    """

    def __init__(self, max_value: int, *, random_flip: bool = False, dequantize: bool = False):
        self.max_value = max_value
        self.random_flip = bool(random_flip)
        self.dequantize = bool(dequantize)

    @property
    def is_random(self) -> bool:
        return self.random_flip or self.dequantize

    def postprocess(self, y: np.ndarray) -> np.ndarray:
        """Model-space images back to integer levels ``0..max_value``."""
        return to_levels(y, self.max_value, dequantized=self.dequantize)

    def deterministic(self, batch: Batch) -> Batch:
        """Plain scaling, no randomness (evaluation without dequantisation)."""
        return {**batch, "x": to_symmetric(batch["x"], self.max_value)}

    def __call__(self, batch: Batch, rngs: Sequence[np.random.Generator]) -> Batch:
        x = np.asarray(batch["x"])
        if len(rngs) != x.shape[0]:
            raise ValueError(f"need one generator per example: {len(rngs)} != {x.shape[0]}")
        out = np.empty(x.shape, np.float32)
        for i, rng in enumerate(rngs):
            # Fixed draw order per example: flip decision first, then the noise.
            flip = self.random_flip and rng.random() < 0.5
            xi = x[i, :, ::-1] if flip else x[i]
            if self.dequantize:
                out[i] = dequantize(xi, rng.random(xi.shape), self.max_value)
            else:
                out[i] = to_symmetric(xi, self.max_value)
        return {**batch, "x": out}
