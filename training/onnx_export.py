"""ONNX export of a trained model, checked against PyTorch with onnxruntime before it is kept.

The file takes `pixel_values` (batch, 3, size, size) float32 with a dynamic batch axis, as the model's image processor
prepares them, and returns `logits` (and, on request, every CBAM's channel weights and spatial map). The processor's
settings and the labels are written beside it as JSON, so that onnxruntime and numpy alone can use it.
"""

import importlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Opset 18: what torch's exporter writes natively, and what every onnxruntime since 1.14 runs.
OPSET = 18
# The largest |ONNX - PyTorch| logit allowed, relative to the largest |logit|. Both compute in float32 (2^-24, about
# 6e-8 relative per operation) but sum the convolutions in another order (oneDNN against MLAS); measured on the models
# here the difference is about 1e-7 to 1e-6 relative. 1e-4 is two orders of magnitude above that and two below the
# gap between the top two classes of a confident prediction: a wrongly exported operation shows at 1e-2 or more.
TOLERANCE = 1e-4
CHECK_BATCHES = (1, 5)  # each a run of the file: batch 1 and a batch the export never saw prove the dynamic axis
REQUIRED = ("onnx", "onnxscript", "onnxruntime")


class ExportError(ValueError):
    """A model, an output path or an environment the export cannot work with: said before anything is written."""


class ParityError(RuntimeError):
    """The exported file computes something else than the PyTorch model; the file was removed."""


@dataclass
class ExportReport:
    path: str
    settings: str
    opset: int
    outputs: list[str]
    max_difference: float  # the largest |onnxruntime - PyTorch| over every output and every check batch
    logit_scale: float  # the largest |logit| of the check batches
    tolerance: float  # relative, times logit_scale
    batches: list[int]
    seconds: float

    def __str__(self) -> str:
        attentions = f" and {len(self.outputs) - 1} CBAM attention tensors" if len(self.outputs) > 1 else ""
        return (f"wrote {self.path} (opset {self.opset}, dynamic batch; outputs logits{attentions}) and "
                f"{self.settings}; onnxruntime against PyTorch on batches of {' and '.join(map(str, self.batches))} "
                f"images: largest difference {self.max_difference:.2e} (logits up to {self.logit_scale:.2f}; "
                f"allowed {self.tolerance * max(self.logit_scale, 1.0):.2e})")


def require_onnx() -> None:
    """An ExportError naming the missing packages of the onnx extra, if any."""
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'resnet-cbam[onnx]' (or "
                          f"pip install {' '.join(missing)})")


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """The output path, checked before any work: its folder exists and can be written, and no file is replaced
    unless asked."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"--output {path} is a folder; give a file name such as {path / 'model.onnx'}")
    if not path.parent.is_dir():
        raise ExportError(f"--output {path}: the folder {path.parent} does not exist")
    if not overwrite:
        taken = [p for p in (path, settings_path(path)) if p.exists()]
        if taken:
            raise ExportError(f"--output {path}: {taken[0]} exists; remove it or pass --overwrite")
    probe = _partial(path)
    try:  # what the export will do first; os.access would answer yes to root on any folder
        probe.unlink(missing_ok=True)  # left by a killed export
        probe.open("x").close()
        probe.unlink()
    except OSError as error:
        raise ExportError(f"--output {path}: the folder {path.parent} cannot be written ({error.strerror})") from None
    return path


def _partial(path: Path) -> Path:
    """Where a file is written before it is complete: renamed to `path` only then."""
    return path.with_name(f".{path.name}.partial")


def settings_path(path: Path) -> Path:
    """Where the preprocessing and labels go: model.onnx -> model.onnx.json."""
    return path.with_name(path.name + ".json")


class _Exported(nn.Module):
    """The classifier as the ONNX graph sees it: a tensor in, a tuple of tensors out."""

    def __init__(self, model: nn.Module, attentions: bool):
        super().__init__()
        self.model, self.attentions = model, attentions

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(pixel_values=pixel_values, output_attentions=self.attentions, return_dict=True)
        if not self.attentions:
            return (out.logits,)
        return (out.logits, *out.channel_attentions, *out.spatial_attentions)


def output_names(model, attentions: bool) -> list[str]:
    names = ["logits"]
    if attentions:
        names += [f"channel_attention.{name}" for name in model.cbam_names]
        names += [f"spatial_attention.{name}" for name in model.cbam_names]
    return names


def preprocessing(model, processor, outputs: list[str]) -> dict:
    """What a caller without transformers does to an image before the file, from the model's own processor."""
    size = processor.crop_size
    return {
        "input": "pixel_values: float32 (batch, channels, height, width)",
        "outputs": outputs,
        "convert": "RGB",
        "resize_shortest_edge": processor.size["shortest_edge"],
        "resample": "bilinear",
        "center_crop": [size["height"], size["width"]],
        "rescale_factor": processor.rescale_factor,
        "image_mean": list(processor.image_mean),
        "image_std": list(processor.image_std),
        "id2label": {str(index): label for index, label in model.config.id2label.items()},
    }


def check_images(processor, batch: int, seed: int) -> torch.Tensor:
    """`batch` random RGB images of another size than the model's, through the model's processor."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (45, 37, 3), dtype=np.uint8)) for _ in range(batch)]
    return processor(images, return_tensors="pt")["pixel_values"]


def _torch_outputs(module: nn.Module, pixel_values: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.float().numpy() for t in module(pixel_values)]


def export_onnx(model, processor, output: str | Path, attentions: bool = False, tolerance: float = TOLERANCE,
                overwrite: bool = False) -> ExportReport:
    """Write `output` (and its settings JSON), run it with onnxruntime on CHECK_BATCHES of images and compare every
    output with PyTorch's. A difference above `tolerance` x max(1, largest |logit|) is a ParityError, and then
    neither file is left; so is a failure half-way. The model is moved to the CPU in float32."""
    require_onnx()
    import onnxruntime

    output = check_output(output, overwrite)
    settings = settings_path(output)
    partial, settings_partial = _partial(output), _partial(settings)
    start = time.perf_counter()
    module = _Exported(model.float().cpu().eval(), attentions).eval()
    names = output_names(model, attentions)
    try:
        example = check_images(processor, 2, seed=0)
        torch.onnx.export(
            module, (example,), str(partial), input_names=["pixel_values"], output_names=names, opset_version=OPSET,
            dynamo=True, dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1)}},
            external_data=False, verbose=False,
        )
        session = onnxruntime.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
        difference, scale = 0.0, 0.0
        for seed, batch in enumerate(CHECK_BATCHES, start=1):
            pixel_values = check_images(processor, batch, seed)
            expected = _torch_outputs(module, pixel_values)
            got = session.run(names, {"pixel_values": pixel_values.numpy()})
            difference = max(difference, *(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True)))
            scale = max(scale, float(np.abs(expected[0]).max()))
        if difference > tolerance * max(scale, 1.0):
            raise ParityError(f"the exported file differs from the PyTorch model: largest difference {difference:.2e} "
                              f"with logits up to {scale:.2f} (allowed: {tolerance:g} x {max(scale, 1.0):.2f}); "
                              f"{output} was not written")
        settings_partial.write_text(json.dumps(preprocessing(model, processor, names), indent=2) + "\n")
        os.replace(settings_partial, settings)  # both renamed only once the file has passed
        os.replace(partial, output)
    except BaseException:
        for path in (partial, settings_partial):
            path.unlink(missing_ok=True)
        raise
    return ExportReport(str(output), str(settings), OPSET, names, difference, scale, tolerance, list(CHECK_BATCHES),
                        time.perf_counter() - start)


def export_run(output_dir: str | Path, attentions: bool = False) -> ExportReport:
    """`model.onnx` in a finished run's folder, from the model saved there (what a user of the folder loads)."""
    from training.inference import load_model

    model, processor = load_model(str(output_dir), device="cpu")
    return export_onnx(model, processor, Path(output_dir) / "model.onnx", attentions, overwrite=True)


def images_per_second(run, pixel_values: torch.Tensor, seconds: float = 2.0) -> float:
    """How many images a callable `run(pixel_values)` goes through per second (one warm-up call, then `seconds`)."""
    run(pixel_values)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(pixel_values)
        count += len(pixel_values)
    return count / (time.perf_counter() - start)


def speed_against_torch(model, processor, path: str | Path, batches: list[int]) -> list[dict]:
    """Images per second of the ONNX file under onnxruntime and of the PyTorch model (float32, no grad), on this
    machine, for each batch size."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = model.float().cpu().eval()
    rows = []
    for batch in batches:
        pixel_values = check_images(processor, batch, seed=batch)
        with torch.no_grad():
            torch_speed = images_per_second(lambda x: model(pixel_values=x), pixel_values)
        onnx_speed = images_per_second(lambda x: session.run(["logits"], {"pixel_values": x.numpy()}), pixel_values)
        rows.append({"batch": batch, "onnxruntime": onnx_speed, "pytorch": torch_speed})
    return rows


__all__ = ["ExportError", "ExportReport", "ParityError", "export_onnx", "export_run", "require_onnx",
           "speed_against_torch"]
