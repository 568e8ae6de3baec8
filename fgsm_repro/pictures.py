"""Pictures of adversarial examples: matplotlib on its file-only backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fgsm_repro.files import save_figure_atomic


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shown(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) image scaled to [0, 1] for display: pixels in [0, 1] as they are, anything
    else (e.g. whitened inputs) stretched from its own minimum to maximum."""
    if image.min() >= 0 and image.max() <= 1:
        return image
    lo, hi = image.min(), image.max()
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def save_example_grid(path: Path, x: np.ndarray, x_adv: np.ndarray, title: str) -> Path:
    """One row per example: the clean input, the perturbation (red up, blue down, scaled to the
    row's largest change) and the adversarial input. Writes `path` (PNG) and returns it."""
    plt = pyplot()
    n = len(x)
    fig, axes = plt.subplots(n, 3, figsize=(4.5, 1.6 * n + 0.4), squeeze=False)
    for i in range(n):
        delta = (x_adv[i] - x[i]).astype(np.float64)
        lim = float(np.abs(delta).max()) or 1.0
        gray = x.shape[-1] == 1
        images = [_shown(x[i]), delta.mean(-1), _shown(x_adv[i])]
        for j, image in enumerate(images):
            ax = axes[i, j]
            if j == 1:
                ax.imshow(image, cmap="RdBu_r", vmin=-lim, vmax=lim)
            else:
                ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 1].set_xlabel(f"L∞ {lim:.3g}", fontsize=7)
    for ax, name in zip(axes[0], ("clean", "perturbation", "adversarial"), strict=True):
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return path
