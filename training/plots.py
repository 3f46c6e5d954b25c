"""PNG figures: image grids, training curves, confusion matrices (matplotlib, headless)."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def denormalize(pixel_values: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(C, H, W) normalised -> (H, W, C) in [0, 1] for display."""
    mean_t, std_t = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return (pixel_values * std_t + mean_t).clamp(0, 1).permute(1, 2, 0)


def save_image_grid(
    images: Sequence[torch.Tensor],
    titles: Sequence[str],
    path: str | Path,
    columns: int = 8,
    mean: Sequence[float] = (0, 0, 0),
    std: Sequence[float] = (1, 1, 1),
    title: str = "",
) -> Path:
    """A labelled grid of normalised images, written as PNG."""
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows + 0.4), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, label in zip(axes.flat, images, titles, strict=False):
        axis.imshow(denormalize(image, mean, std).numpy(), interpolation="nearest")
        axis.set_title(label, fontsize=9)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
