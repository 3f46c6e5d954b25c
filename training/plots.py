"""PNG figures: image grids, training curves, confusion matrices (matplotlib, headless)."""

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


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
    title_lines = max((label.count("\n") + 1 for label in titles), default=1)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, (1.6 + 0.2 * title_lines) * rows + 0.4),
                                squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, label in zip(axes.flat, images, titles, strict=False):
        axis.imshow(denormalize(image, mean, std).numpy(), interpolation="nearest")
        axis.set_title(label, fontsize=9)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def step_losses(log_history: list[dict]) -> tuple[list[int], list[float]]:
    """The training loss of every logged step (the Trainer's `loss` entries)."""
    entries = [e for e in log_history if "loss" in e and "step" in e]
    return [e["step"] for e in entries], [e["loss"] for e in entries]


def epoch_entries(log_history: list[dict]) -> list[dict]:
    """The one summary entry per epoch that StagedTrainer logs (it carries `stage`)."""
    return [e for e in log_history if "stage" in e and "eval_loss" in e]


def loss_points(log_history: list[dict]) -> tuple[list[int], list[float], str]:
    """The points of loss.png: every logged step, or, when fewer than two steps were logged (a run shorter than
    --logging_steps), each epoch's mean training loss at its last step; and the title that says which."""
    steps, losses = step_losses(log_history)
    if len(steps) >= 2:
        return steps, losses, "Training loss of every logged step"
    epochs = epoch_entries(log_history)
    return ([e["step"] for e in epochs], [e["train_loss"] for e in epochs],
            "Training loss per epoch (fewer steps than --logging_steps)")


def plot_training(log_history: list[dict], stage_first_epochs: list[int], out_dir: str | Path) -> list[Path]:
    """loss.png (every logged step, or every epoch when fewer were logged) and curves.png (accuracy and loss per
    epoch, stage boundaries marked)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps, losses, title = loss_points(log_history)
    figure, axis = plt.subplots(figsize=(8, 4))
    axis.plot(steps, losses, "o-" if len(steps) < 20 else "-", linewidth=1)
    axis.set(xlabel="optimizer step", ylabel="training loss", title=title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, out_dir / "loss.png")

    epochs = epoch_entries(log_history)
    x = [e["epoch"] for e in epochs]
    figure, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    accuracy_axis.plot(x, [100 * e["train_accuracy"] for e in epochs], "o-", label="train")
    accuracy_axis.plot(x, [100 * e["eval_accuracy"] for e in epochs], "o-", label="validation")
    loss_axis.plot(x, [e["train_loss"] for e in epochs], "o-", label="train")
    loss_axis.plot(x, [e["eval_loss"] for e in epochs], "o-", label="validation")
    for axis, name in ((accuracy_axis, "accuracy (%)"), (loss_axis, "loss")):
        for index, first in enumerate(stage_first_epochs[1:], start=2):
            axis.axvline(first + 0.5, color="grey", linestyle="--", linewidth=1)
            axis.text(
                first + 0.6,
                0.98,
                f"stage {index}",
                transform=axis.get_xaxis_transform(),
                va="top",
                fontsize=8,
                color="grey",
            )
        axis.set(xlabel="epoch", ylabel=name, title=f"{name.split(' ')[0].capitalize()} per epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return [out_dir / "loss.png", _save(figure, out_dir / "curves.png")]


def accuracy_over_time(log_history: list[dict]) -> list[tuple[float, float, float]]:
    """(epoch, seconds since training started, validation accuracy) of each evaluation of a run: the seconds add up
    the `epoch_time` of each evaluation's summary (training and evaluation since the one before)."""
    points, seconds = [], 0.0
    for entry in epoch_entries(log_history):
        seconds += entry["epoch_time"]
        points.append((entry["epoch"], seconds, entry["eval_accuracy"]))
    return points


def plot_accuracy_over_time(runs: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """Validation accuracy against wall-clock seconds, one line per run (label -> log history)."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for label, history in runs.items():
        _, seconds, accuracy = zip(*accuracy_over_time(history), strict=True)
        axis.plot([s / 60 for s in seconds], [100 * a for a in accuracy], "o-", label=label)
    axis.set(xlabel="wall-clock minutes (training and evaluation)", ylabel="validation accuracy (%)",
             title=title or "Validation accuracy against time")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return _save(figure, path)


def plot_study(rows: list[dict], path: str | Path, title: str = "",
               style: Callable[[str], tuple[str, str]] = lambda name: (name, "-"), styles_said: str = "") -> Path:
    """The transfer study's figure: validation accuracy against epoch, one line per row (its mean over the seeds,
    with a band of one standard deviation where an epoch has a `spread`), each row's stage ends marked with a
    diamond on its own line (training/study.py's summaries). `style(row name)` gives the row's colour key (rows
    sharing it share a colour) and line style, which `styles_said` explains under the axis."""
    keys = list(dict.fromkeys(style(row["name"])[0] for row in rows))
    palette = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    figure, axis = plt.subplots(figsize=(11, 6.5))
    for row in rows:
        epochs = [entry["epoch"] for entry in row["epochs"]]
        accuracy = [100 * entry["accuracy"] for entry in row["epochs"]]
        key, linestyle = style(row["name"])
        (line,) = axis.plot(epochs, accuracy, linestyle=linestyle, linewidth=1.5, color=palette(keys.index(key)),
                            label=f"{row['name']}: {accuracy[-1]:.1f}%")
        spreads = [entry.get("spread") for entry in row["epochs"]]
        if None not in spreads:
            axis.fill_between(epochs, [a - 100 * s for a, s in zip(accuracy, spreads, strict=True)],
                              [a + 100 * s for a, s in zip(accuracy, spreads, strict=True)],
                              color=line.get_color(), alpha=0.12, linewidth=0)
        ends = [(e, 100 * a) for e, a in zip(row["stage_ends"][:-1], row["accuracy_at_stage_ends"][:-1],
                                             strict=True) if a is not None]
        if ends:
            axis.plot(*zip(*ends, strict=True), "D", color=line.get_color(), markersize=6)
    axis.set(xlabel="epoch (diamonds: the end of a stage)" + (f"\n{styles_said}" if styles_said else ""),
             ylabel="validation accuracy (%)",
             title=title or "Validation accuracy per epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right", ncol=2)
    figure.tight_layout()
    return _save(figure, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Counts with rows = true class, columns = predicted class, each cell annotated."""
    matrix = torch.tensor(matrix)
    size = max(5.0, 0.6 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix.numpy(), cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    threshold = matrix.max().item() / 2
    if len(labels) <= 30:
        for (row, column), count in zip(
            torch.cartesian_prod(torch.arange(len(labels)), torch.arange(len(labels))), matrix.flatten(), strict=True
        ):
            axis.text(
                column.item(),
                row.item(),
                str(count.item()),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if count.item() > threshold else "black",
            )
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return _save(figure, path)


def channel_extremes(weights: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` channels whose weight differs most from the layer's mean: the strongest half (rounded up), then
    the weakest, each from the most extreme inwards."""
    order = weights.argsort(descending=True, stable=True)
    if weights.numel() <= count:
        return order
    up = -(-count // 2)
    return torch.cat([order[:up], order[len(order) - (count - up):]])


def _plot_channel_extremes(axis, weights: torch.Tensor, count: int) -> None:
    """channel_extremes as bars of their difference from the layer's mean, labelled with channel and weight: a
    layer's weights sit close together, so bars of the weights themselves on a 0-1 axis all look alike."""
    mean, spread = weights.mean(), weights.std() if weights.numel() > 1 else torch.tensor(0.0)
    chosen = channel_extremes(weights, count)
    deviation = (weights[chosen] - mean).numpy()[::-1]
    axis.barh(range(len(chosen)), deviation, color=["tab:orange" if d >= 0 else "tab:blue" for d in deviation])
    axis.set_yticks(range(len(chosen)), [f"{c} ({weights[c]:.2f})" for c in chosen.tolist()[::-1]], fontsize=6)
    limit = float(abs(deviation).max()) * 1.15 or 1e-3
    axis.set_xlim(-limit, limit)
    axis.axvline(0, color="black", linewidth=0.6)
    axis.set_title(f"channel weight - mean {mean:.3f}\n(sd {spread:.3f}; channel (weight))", fontsize=7)
    axis.tick_params(axis="x", labelsize=6)


def plot_attention(image: torch.Tensor, attentions: Sequence, path: str | Path, title: str = "",
                   top_channels: int = 8) -> Path:
    """The input, each CBAM's spatial map overlaid on it, and below it the CBAM's strongest and weakest channels.

    `image` is (H, W, 3) in [0, 1]; each attention has `.name`, `.spatial` (H, W) in [0, 1] and `.channel` (C,).
    """
    columns = 1 + len(attentions)
    figure, axes = plt.subplots(2, columns, figsize=(2.6 * columns, 5.4), squeeze=False,
                                gridspec_kw={"height_ratios": [1.1, 1]})
    axes[0][0].imshow(image.numpy(), interpolation="nearest")
    axes[0][0].set_title("input", fontsize=9)
    axes[1][0].axis("off")
    for column, attention in enumerate(attentions, start=1):
        axis = axes[0][column]
        axis.imshow(image.numpy(), interpolation="nearest")
        overlay = axis.imshow(attention.spatial.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axis.set_title(f"{attention.name}\nspatial", fontsize=8)
        _plot_channel_extremes(axes[1][column], attention.channel, top_channels)
    for axis in axes[0]:
        axis.axis("off")
    figure.colorbar(overlay, ax=list(axes[0]), fraction=0.02, pad=0.01)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], marks: dict[str, float], path: str | Path,
                 title: str = "") -> Path:
    """The range test's smoothed loss against the lr (log scale), with the named rates marked."""
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(lrs, losses)
    axis.set_xscale("log")
    axis.set_xlabel("learning rate (the stage's highest)")
    axis.set_ylabel("training loss (smoothed)")
    for (name, lr), colour in zip(marks.items(), ("tab:red", "tab:green", "tab:purple"), strict=False):
        axis.axvline(lr, color=colour, linestyle="--", label=f"{name}: {lr:.2g}")
    axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    return _save(figure, path)
