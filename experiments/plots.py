"""PNG figures: a scatter plot of 2-D samples against data, and image sample grids.

Every figure says what it shows: the scatter panels are titled with their point counts
(``data (4000)``, ``samples (4000)``), an image grid with ``100 of 1000 samples`` when it shows
the first 100 of 1000 (``all 64 samples`` when it shows all).
"""
from __future__ import annotations

import math
import os
from typing import Optional
import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    """Lays out, writes ``fig`` to ``path`` (creating its folder) and closes it."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def scatter(samples: np.ndarray, data: np.ndarray, path: str, *, title: str = "") -> str:
    """Side-by-side scatter plots of data and model samples (every point of both, each panel
    titled with its count) with shared limits; ``title`` above both. Returns ``path``."""
    plt = _pyplot()
    both = np.concatenate([samples, data])
    lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    pad = 0.1 * (hi - lo)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    for ax, pts, name in ((axes[0], data, "data"), (axes[1], samples, "samples")):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5, color="C0" if name == "data" else "C1")
        ax.set_title(f"{name} ({len(pts)})")
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def shown_label(shown: int, total: int, what: str = "samples") -> str:
    """``"100 of 1000 samples"``, or ``"all 64 samples"`` when every one is shown."""
    return f"all {total} {what}" if shown >= total else f"{shown} of {total} {what}"


def image_grid(images: np.ndarray, path: str, *, max_value: float, title: str = "",
               max_images: int = 100) -> str:
    """A square grid of the first ``max_images`` of ``images`` (N, H, W, C) with levels in
    [0, max_value], titled ``title`` and, on a line of its own, how many of how many images
    it shows (`shown_label`). Returns ``path``."""
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    plt = _pyplot()
    total = len(images)
    images = np.asarray(images)[:max_images]
    n = len(images)
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    h, w, c = images.shape[1:]
    grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.float32)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + k * (w + 1):1 + k * (w + 1) + w] = \
            np.asarray(img, np.float32) / max_value
    fig, ax = plt.subplots(figsize=(min(12, 0.5 + cols * w / 8), min(12, 0.5 + rows * h / 8)))
    if c == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(grid, 0, 1), interpolation="nearest")
    ax.axis("off")
    label = shown_label(n, total)
    ax.set_title(f"{title}\n{label}" if title else label)
    return _save(fig, path)


def samples_figure(info, samples: np.ndarray, path: str, *, data: Optional[np.ndarray] = None,
                   title: str = "") -> str:
    """The launchers' figure for samples in the original range: a scatter plot against
    ``data`` for 2-D data, an image grid (the first 100) for images. ``title`` names the run
    and sampler; the figure adds how many samples it shows."""
    if len(info.shape) == 1 and info.shape[0] == 2:
        if data is None:
            raise ValueError("2-D samples are plotted against data: pass data=")
        return scatter(samples, data, path, title=title)
    if len(info.shape) == 3:
        return image_grid(samples, path, max_value=info.original_range[1], title=title)
    raise ValueError(f"no figure for examples of shape {info.shape}")
