"""Using a trained model: load it with its image processor, predict on image files in batches, read its attention."""

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from textwrap import shorten

import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from transformers import AutoImageProcessor, AutoModelForImageClassification

from modeling_resnet_cbam import ResNetCBAMConfig
from training.images import upright_rgb
from training.plots import denormalize, plot_attention, save_image_grid

IMAGE_SUFFIXES = {suffix for suffix, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
TTA_CHOICES = ("none", "flip")


def check_tta(tta: str) -> None:
    if tta not in TTA_CHOICES:
        raise ValueError(f"--tta must be one of {', '.join(TTA_CHOICES)}, got {tta!r}")


def class_probabilities(model, pixel_values: torch.Tensor, tta: str = "none",
                        logits: torch.Tensor | None = None) -> torch.Tensor:
    """The softmax over the classes of a batch of images; with tta="flip", the mean of the softmax of each image and
    of its mirror image. `logits`: the model's logits of `pixel_values`, when the caller already has them."""
    if logits is None:
        logits = model(pixel_values=pixel_values).logits
    probabilities = logits.float().softmax(dim=-1)
    if tta == "flip":
        mirrored = model(pixel_values=pixel_values.flip(-1)).logits.float().softmax(dim=-1)
        probabilities = (probabilities + mirrored) / 2
    return probabilities


def check_saved_model(name: str, flag: str = "--model") -> None:
    """A saved model must be a ResNet-CBAM: another model_type would load with every tensor reported missing, and
    run as a random model."""
    from transformers import PreTrainedConfig

    try:
        config = PreTrainedConfig.get_config_dict(name)[0]
    except OSError as error:  # no such folder or Hub id, offline, or no config.json
        why = shorten(str(error), 300, placeholder=" ...")
        raise ValueError(f"{flag} {name}: no model could be loaded from it (no readable config.json: {why}); give a "
                         "folder written by scripts/finetune.py or save_pretrained, or a Hub model id") from error
    found = config.get("model_type")
    if found != ResNetCBAMConfig.model_type:
        raise ValueError(f"{flag} {name} is a {found or 'untyped'} model, not a ResNet-CBAM (model_type "
                         f"{ResNetCBAMConfig.model_type!r}); to start from a ResNet's weights, give its folder or "
                         "weights file to scripts/finetune.py --backbone_weights (torchvision, timm and transformers "
                         "ResNets with basic blocks load by name)")


def load_model(name_or_path: str, device: str | None = None):
    """A saved model folder or Hub id, loaded with its own code and its preprocessor_config.json; a ValueError
    naming the folder or id when there is no model there, or when it is not a ResNet-CBAM."""
    check_saved_model(name_or_path)
    try:
        model = AutoModelForImageClassification.from_pretrained(name_or_path, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:  # no such folder, not a model folder, unknown or unreachable Hub id
        why = shorten(str(error), 300, placeholder=" ...")  # one line: transformers' messages span several
        raise ValueError(f"--model {name_or_path}: no model could be loaded from it ({why}); give a "
                         "folder written by scripts/finetune.py or save_pretrained, or a Hub model id") from error
    return model.to(inference_device(device)).eval(), processor


def inference_device(device: str | None) -> torch.device:
    """--device of the scripts that use a saved model: cpu, cuda or cuda:N (default: cuda when present); a
    ValueError that says why for a name torch does not know or a GPU this machine does not have."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda or cuda:N") from error
    if chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: only cpu and cuda (cuda:N) are supported")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA GPU on this machine; use --device cpu or leave it out")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return chosen


def preprocess_image(processor, image: str | Path | Image.Image) -> torch.Tensor:
    """One image (a file or a PIL image) as the model's (3, H, W) input: upright (its EXIF orientation applied, as
    in training) and in RGB (grayscale, palette, RGBA, CMYK, 16-bit converted), then the processor's steps."""
    if isinstance(image, Image.Image):
        return processor(upright_rgb(image), return_tensors="pt")["pixel_values"][0]
    with Image.open(image) as opened:
        return preprocess_image(processor, opened)


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files given, and every image file under the folders given (sorted), in order, each once. Hidden files
    and folders under a folder (macOS's AppleDouble `._photo.jpg`, `.DS_Store`, `.git/`) are left out, as training's
    image folders leave them out."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            files.append(path)
    return list(dict.fromkeys(files))


def output_stems(files: Sequence[Path]) -> dict[Path, str]:
    """A distinct name for each input's output file: its stem, or, where several inputs share one (a/rgb_0.png and
    b/rgb_0.png), its path from their common folder with the separators as underscores (a_rgb_0, b_rgb_0)."""
    by_stem: dict[str, list[Path]] = {}
    for file in files:
        by_stem.setdefault(file.stem, []).append(file)
    names = {}
    for stem, same in by_stem.items():
        if len(same) == 1:
            names[same[0]] = stem
            continue
        common = Path(os.path.commonpath([str(file.resolve().parent) for file in same]))
        for file in same:
            names[file] = "_".join(file.resolve().relative_to(common).with_suffix("").parts)
    return names


def model_and_images(name_or_path: str, paths: Sequence[str], device: str | None = None):
    """What the image scripts start from: (model, processor, image files); a ValueError when the paths hold no
    image file or the model cannot be loaded, checked in that order (the cheap check first)."""
    unknown = [path for path in paths if path.startswith("--")]
    if not paths or unknown:
        raise ValueError(f"give image files or folders{f' (unknown arguments: {unknown})' if unknown else ''}")
    files = image_files(paths)
    if not files:
        raise ValueError(f"no image files in {', '.join(paths)}")
    return *load_model(name_or_path, device), files


@dataclass
class Prediction:
    image: str
    predictions: list[dict] | None = None  # [{"label": name, "score": p}, ...], best first
    error: str | None = None


class _ImageFiles(Dataset):
    """Decoded and preprocessed in DataLoader workers; an unreadable file becomes an error entry, not a crash."""

    def __init__(self, files: list[Path], processor):
        self.files, self.processor = files, processor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        try:
            return index, preprocess_image(self.processor, self.files[index]), None
        except Exception as error:  # any decoding failure is reported by file name
            return index, None, f"{type(error).__name__}: {error}"


def _collate(items):
    return items


def predict_files(model, processor, files: list[Path], top_k: int = 3, batch_size: int = 64,
                  num_workers: int = 2, progress: bool = True, tta: str = "none") -> Iterator[Prediction]:
    """Top-k labels and probabilities (with flip TTA when asked) per file, in the order given; failures carry their
    error."""
    from tqdm.auto import tqdm

    loader = DataLoader(_ImageFiles(files, processor), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate)
    device = next(model.parameters()).device
    top_k = min(top_k, model.config.num_labels)
    with tqdm(total=len(files), unit="img", disable=None if progress else True) as bar:  # None: on a terminal only
        for batch in loader:
            good = [(index, pixels) for index, pixels, error in batch if error is None]
            results = {index: Prediction(str(files[index]), error=error) for index, _, error in batch if error}
            if good:
                with torch.inference_mode():
                    probabilities = class_probabilities(model, torch.stack([p for _, p in good]).to(device), tta)
                scores, labels = probabilities.topk(top_k, dim=-1)
                for (index, _), row_scores, row_labels in zip(good, scores.tolist(), labels.tolist(), strict=True):
                    predictions = [{"label": model.config.id2label[label], "score": score}
                                   for score, label in zip(row_scores, row_labels, strict=True)]
                    results[index] = Prediction(str(files[index]), predictions)
            yield from (results[index] for index, _, _ in batch)
            bar.update(len(batch))


@dataclass
class CBAMAttention:
    name: str
    spatial: torch.Tensor  # (height, width) in [0, 1], upsampled to the input size
    channel: torch.Tensor  # (channels,) in [0, 1]


def explain(model, pixel_values: torch.Tensor) -> tuple[str, list[CBAMAttention]]:
    """The predicted label of one (3, H, W) image, and every CBAM's spatial map (upsampled to the input) and
    channel weights, from one forward pass with `output_attentions=True`."""
    with torch.inference_mode():
        outputs = model(pixel_values[None].to(next(model.parameters()).device), output_attentions=True)
    size = pixel_values.shape[-2:]
    attentions = [
        CBAMAttention(name.removeprefix(model.base_model_prefix + "."),
                      F.interpolate(spatial.float(), size=size, mode="bilinear", align_corners=False)[0, 0].cpu(),
                      channel[0].float().cpu())
        for name, spatial, channel in zip(model.cbam_names, outputs.spatial_attentions, outputs.channel_attentions,
                                          strict=True)
    ]
    return model.config.id2label[int(outputs.logits[0].argmax())], attentions


def save_attention_map(model, pixel_values: torch.Tensor, mean, std, path: str | Path, title: str = "",
                       top_channels: int = 8) -> Path:
    """The attention figure of one normalised image (training/plots.py's plot_attention), titled with the
    model's prediction; the one picture of CBAM attention that the scripts and the model card share."""
    model.eval()
    predicted, attentions = explain(model, pixel_values)
    return plot_attention(denormalize(pixel_values.cpu(), mean, std), attentions, path,
                          title=f"{title}: predicted {predicted}", top_channels=top_channels)


def match_labels(dataset_labels: Sequence[str], model_labels: dict[int, str]) -> list[int]:
    """The model's class index for each dataset class, matched by name; a ValueError when the names differ."""
    by_name = {name: index for index, name in model_labels.items()}
    missing, extra = sorted(set(dataset_labels) - set(by_name)), sorted(set(by_name) - set(dataset_labels))
    if missing or extra:
        raise ValueError(
            "the dataset's labels and the model's differ: "
            + "; ".join(part for part in (f"only in the dataset: {', '.join(missing)}" if missing else "",
                                          f"only in the model: {', '.join(extra)}" if extra else "") if part)
        )
    return [by_name[name] for name in dataset_labels]


def predict_split(model, split, batch_size: int = 256, num_workers: int = 2,
                  tta: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (with flip TTA when asked; model classes) and dataset labels of a transformed split."""
    from tqdm.auto import tqdm
    from transformers import default_data_collator

    loader = DataLoader(split, batch_size=batch_size, num_workers=num_workers, collate_fn=default_data_collator)
    device = next(model.parameters()).device
    predictions, labels = [], []
    with torch.inference_mode():
        for batch in tqdm(loader, unit="batch"):
            predictions.append(class_probabilities(model, batch["pixel_values"].to(device), tta).float().cpu())
            labels.append(batch["labels"])
    return torch.cat(predictions), torch.cat(labels)


def evaluate_split(model, processor, data_args, split: str, seed: int = 42, batch_size: int = 256,
                   tta: str = "none", top_losses: int = 0, top_losses_plot: str | Path | None = None) -> dict:
    """Accuracy, per-class accuracy and confusion matrix of a model (with flip TTA when asked) on one split of a
    dataset, its images prepared as the model's processor says and its labels matched to the model's by name.
    Loads only that split. With `top_losses`, also the images of highest loss (and their grid in
    `top_losses_plot`) and the most confused class pairs."""
    from training.data import load_image_data
    from training.metrics import classification_metrics
    from training.transforms import set_transforms

    as_the_model = dataclasses.replace(  # evaluation images are never augmented (only the train split is)
        data_args, image_size=model.config.image_size, image_mean=list(processor.image_mean),
        image_std=list(processor.image_std), augment="none")
    data = load_image_data(as_the_model, seed=seed, split=split)
    data.crop_pct = processor.crop_size["height"] / processor.size["shortest_edge"]  # evaluated as the model says
    set_transforms(data)
    to_model = match_labels(data.label_names, model.config.id2label)
    probabilities, labels = predict_split(model, data.splits[split], batch_size, tta=tta)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    references = [to_model[label] for label in labels.tolist()]
    result = classification_metrics().compute(predictions=probabilities.argmax(dim=-1).tolist(),
                                              references=references, num_classes=len(names))
    result = {"split": split, "images": len(references), "tta": tta, "labels": names, **result}
    if top_losses:
        result["top_losses"] = highest_losses(probabilities, torch.tensor(references), names, top_losses)
        result["most_confused"] = most_confused(result["confusion_matrix"], names)
        if top_losses_plot:
            images = [data.splits[split][row["index"]]["pixel_values"] for row in result["top_losses"]]
            titles = [f"{row['true']} -> {row['predicted']}\n{row['probability']:.0%}, loss {row['loss']:.2f}"
                      for row in result["top_losses"]]
            save_image_grid(images, titles, top_losses_plot, columns=min(8, len(images)), mean=processor.image_mean,
                            std=processor.image_std, title=f"{split}: the {len(images)} images of highest loss")
    return result


def highest_losses(probabilities: torch.Tensor, references: torch.Tensor, names: Sequence[str],
                   count: int) -> list[dict]:
    """The `count` images of highest cross-entropy (-log of the probability of the true class), highest first:
    their index in the split, true and predicted class, the predicted class's probability and the loss."""
    losses = -probabilities.gather(1, references[:, None]).squeeze(1).clamp_min(torch.finfo(torch.float32).tiny).log()
    worst = losses.argsort(descending=True, stable=True)[:count]
    confidence, predicted = probabilities.max(dim=-1)
    return [{"index": int(i), "true": names[int(references[i])], "predicted": names[int(predicted[i])],
             "probability": float(confidence[i]), "loss": float(losses[i])} for i in worst]


def most_confused(confusion: Sequence[Sequence[int]], names: Sequence[str], count: int = 5) -> list[dict]:
    """The class pairs most often mistaken (true, predicted, images), most first; pairs never mistaken left out."""
    pairs = [(confusion[t][p], t, p) for t in range(len(names)) for p in range(len(names)) if t != p]
    return [{"true": names[t], "predicted": names[p], "images": n}
            for n, t, p in sorted(pairs, key=lambda pair: (-pair[0], pair[1], pair[2]))[:count] if n]


def evaluation_report(result: dict) -> str:
    """evaluate_split's result as text: accuracy, per-class accuracy, confusion matrix."""
    names = result["labels"]
    width = max(map(len, names))
    tta = " with flip TTA" if result.get("tta") == "flip" else ""
    lines = [f"{result['split']}: {result['images']:,} images, accuracy{tta} {100 * result['accuracy']:.2f}%",
             "per-class accuracy:"]
    lines += [f"  {name:<{width}}  {100 * value:6.2f}%" for name, value in zip(names, result["per_class_accuracy"],
                                                                              strict=True)]
    lines += ["confusion matrix (rows: true, columns: predicted):",
              " " * (width + 2) + "".join(f"{name[:6]:>7}" for name in names)]
    lines += [f"  {name:<{width}}" + "".join(f"{count:>7}" for count in row)
              for name, row in zip(names, result["confusion_matrix"], strict=True)]
    if "top_losses" in result:
        lines += ["most confused (true -> predicted: images):"]
        lines += [f"  {pair['true']} -> {pair['predicted']}: {pair['images']}" for pair in result["most_confused"]]
        lines += [] if result["most_confused"] else ["  none: every image is classified right"]
        lines += [f"the {len(result['top_losses'])} images of highest loss (index in the split: true -> predicted, "
                  "its probability, loss):"]
        lines += [f"  {row['index']}: {row['true']} -> {row['predicted']}, {row['probability']:.1%}, "
                  f"{row['loss']:.3f}" for row in result["top_losses"]]
    return "\n".join(lines)
