"""Backbone weights from wherever a user holds them: read once, named as torchvision names them, loaded into a
ResNet-CBAM by name with a report of what was loaded, new and skipped.

The sources: torchvision's ImageNet weights (`"torchvision"`), a timm Hub id (`timm/resnet50.a1_in1k`: timm's
ResNets keep torchvision's names), a transformers ResNet (a Hub id such as `microsoft/resnet-50`, a saved folder or
its model.safetensors: its names mapped), a folder saved by this project, or any local .safetensors/.pth/.pt/.bin
file (a `module.` prefix of DataParallel and a `state_dict`/`model` wrapper dropped), the CBAM authors' pretrained
ResNets included (their `MODELS/cbam.py` names mapped: their CBAM loads too, into `cbam_style="authors"`). The
weights say what network they are (the block type, the depths, a 3x3 CIFAR `conv1` or the 7x7 ImageNet one, the
authors' CBAM): a run that leaves the architecture flags out takes it from them (training/defaults.py). Training
code: the modeling package, which travels to the Hub, holds the model only.
"""

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from textwrap import shorten
from types import MappingProxyType

import torch
from torch import nn

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMPreTrainedModel
from modeling_resnet_cbam.modeling_resnet_cbam import STAGE_NAMES

logger = logging.getLogger(__name__)

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
BACKBONE_PREFIX = "resnet_cbam.backbone"  # where a saved classifier of this project keeps torchvision's names
TORCHVISION_ARCHITECTURES = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
                             ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
                             ("bottleneck", (3, 8, 36, 3)): "resnet152"}
STEM_OF_CONV1 = {3: "cifar", 7: "imagenet"}  # conv1's kernel size: the stem it belongs to


@dataclass(frozen=True)
class BackboneWeights:
    """A ResNet's tensors under torchvision's names, read from `source`."""

    source: str
    tensors: Mapping[str, torch.Tensor]
    cbam_style: str | None = None  # "authors": the source holds the CBAM authors' trained modules, inside each block

    @cached_property
    def layout(self) -> tuple[str, list[int]] | None:
        """The block type and depths (None: not a ResNet): bottleneck when layer1's first block has a conv3, the
        depths from the highest block index of each stage (found once: every key is scanned)."""
        blocks = {stage: {int(key.split(".")[1]) for key in self.tensors if key.startswith(f"{stage}.")}
                  for stage in STAGE_NAMES}
        if not all(blocks.values()):
            return None
        layer_type = "bottleneck" if "layer1.0.conv3.weight" in self.tensors else "basic"
        return layer_type, [max(indices) + 1 for indices in blocks.values()]

    @property
    def stem(self) -> str | None:
        """"cifar" for a 3x3 conv1, "imagenet" for the 7x7 one, None without a conv1 of either."""
        conv1 = self.tensors.get("conv1.weight")
        return None if conv1 is None or conv1.ndim != 4 else STEM_OF_CONV1.get(conv1.shape[-1])

    def describe(self) -> str:
        """'a resnet50 (bottleneck blocks, depths [3, 4, 6, 3]) with a 7x7 ImageNet stem'."""
        layout = self.layout
        if layout is None:
            return "no ResNet"
        name = TORCHVISION_ARCHITECTURES.get((layout[0], tuple(layout[1])), "ResNet")
        stem = {"cifar": " with a 3x3 CIFAR stem", "imagenet": " with a 7x7 ImageNet stem"}.get(self.stem, "")
        cbam = " and the CBAM authors' module in every block" if self.cbam_style == "authors" else ""
        return f"a {name} ({layout[0]} blocks, depths {layout[1]}){stem}{cbam}"


@dataclass
class BackboneLoadReport:
    """What `load_backbone_weights` did, tensor by tensor (names as in the model's state dict)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the source's tensors the model has no place for (names there)
    dropped: list[str] = field(default_factory=list)  # the source's 7x7 conv1 under the CIFAR stem (names there)

    def __str__(self) -> str:
        new_modules = sorted({_module_of(name) for name in self.new})
        skipped_modules = sorted({_module_of(name) for name in self.skipped})
        text = (
            f"backbone weights from {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.new)} new ({', '.join(new_modules) or 'none'}), "
            f"{len(self.skipped)} skipped ({', '.join(skipped_modules) or 'none'})"
        )
        if self.dropped:
            text += f", {', '.join(self.dropped)} dropped (the 7x7 ImageNet stem: the CIFAR stem's 3x3 conv1 is new)"
        return text


def _module_of(tensor_name: str) -> str:
    """'resnet_cbam.cbam.layer1.channel.mlp.0.weight' -> 'resnet_cbam.cbam.layer1'; else the owning module."""
    match = re.match(r"((?:.*?\.)?cbam(?:\.layer\d)?)\.", tensor_name)
    return match.group(1) if match else tensor_name.rsplit(".", 1)[0]


def load_backbone_weights(model: ResNetCBAMPreTrainedModel,
                          weights: "BackboneWeights | str | os.PathLike") -> BackboneLoadReport:
    """Load ResNet weights (read already, or a source for `read_backbone_weights`) into the model's backbone by
    name and report what was loaded, new and skipped: a classifier and a saved model's CBAM are skipped; the CBAM
    authors' trained modules load into a model of their style with CBAM in every block, every tensor of them.
    Weights of another architecture are a ValueError naming the first tensor that does not fit, and what the
    weights are."""
    config = model.config
    if not isinstance(weights, BackboneWeights):
        weights = read_backbone_weights(weights, config.layer_type, config.depths)
    source = weights.source
    backbone = model.base_model.backbone
    prefix = next(name for name, module in model.named_modules() if module is backbone) + "."
    own = backbone.state_dict()
    report = BackboneLoadReport(source=source)
    to_load = {}
    shape = f"{config.layer_type} blocks and depths {config.depths}"
    other = _what_the_weights_are(weights, (config.layer_type, list(config.depths)))
    takes_cbam = weights.cbam_style == config.cbam_style == "authors" and config.cbam_placement == "block"
    for key, tensor in weights.tensors.items():
        if key.startswith(("fc.", "classifier.")) or ("cbam" in key.split(".") and not takes_cbam):
            report.skipped.append(key)  # the source's classifier, and its CBAM (a saved ResNet-CBAM)
            continue
        if key not in own:
            raise ValueError(f"{source}: tensor '{key}' has no counterpart in a ResNet with {shape}; the weights are "
                             f"of another architecture{other}")
        if tensor.shape != own[key].shape:
            if key == "conv1.weight" and config.stem == "cifar":
                report.dropped.append(key)  # the CIFAR stem replaces the 7x7 ImageNet one: it starts at random
                continue
            if key == "conv1.weight" and tensor.shape[-1] == 3:
                raise ValueError(f"{source}: its conv1 is 3x3, a CIFAR stem's, and this model's ImageNet stem is "
                                 "7x7; a model with stem='cifar' takes these weights (scripts/finetune.py: --stem "
                                 "cifar, or leave --stem out)")
            raise ValueError(f"{source}: tensor '{key}' has shape {tuple(tensor.shape)} but this model's is "
                             f"{tuple(own[key].shape)}; the weights are of another architecture{other}")
        to_load[key] = tensor
    missing = [key for key in own if key not in to_load and key != "conv1.weight" and not key.endswith(
        "num_batches_tracked") and (".cbam." not in key or takes_cbam and not key.endswith(".cbam.gate"))]
    if missing:
        raise ValueError(f"{source}: no tensor for '{missing[0]}' (and {len(missing) - 1} more); the weights are of "
                         f"another architecture{other}")
    backbone.load_state_dict(to_load, strict=False)
    report.loaded = [prefix + key for key in to_load]
    report.new = [name for name in model.state_dict() if name.removeprefix(prefix) not in to_load
                  and not name.endswith("num_batches_tracked")]
    logger.info(str(report))
    return report


def torchvision_state_dict(model: ResNetCBAMPreTrainedModel) -> dict[str, torch.Tensor]:
    """The backbone's tensors under torchvision's ResNet names (`conv1.weight`, `layer1.0.bn1.running_mean`, ...),
    and a classifier's linear layer as `fc`: the inverse of `load_backbone_weights`. For a plain network
    (`cbam_placement="none"`) it is the state dict of a torchvision ResNet, which `torchvision.models.resnet18()`
    loads as it loads ImageNet's file."""
    tensors = {name: tensor.detach().clone() for name, tensor in model.base_model.backbone.state_dict().items()
               if "cbam" not in name.split(".")}
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        tensors.update({f"fc.{name}": tensor.detach().clone() for name, tensor in classifier.state_dict().items()})
    return tensors


def _what_the_weights_are(weights: BackboneWeights, own: tuple[str, list[int]]) -> str:
    """': they are a ResNet with bottleneck blocks and depths [3, 4, 6, 3] (--architecture resnet50)', or '' when
    they are no ResNet or one of the model's own layout `own` (the difference is elsewhere)."""
    layout = weights.layout
    if layout is None or layout == own:
        return ""
    name = TORCHVISION_ARCHITECTURES.get((layout[0], tuple(layout[1])))
    flags = f"--architecture {name}" if name else f"--layer_type {layout[0]} --depths {','.join(map(str, layout[1]))}"
    return f": they are a ResNet with {layout[0]} blocks and depths {layout[1]} ({flags})"


def is_hub_id(name: str | None) -> bool:
    """USER/NAME that is no path here nor a weights file name: what is fetched from the Hub."""
    return bool(name) and name.count("/") == 1 and not name.startswith((".", "/", "~")) and \
        not name.endswith(WEIGHT_FILE_SUFFIXES) and not Path(name).exists()


def torchvision_weights(layer_type: str, depths: list[int]):
    """torchvision's ImageNet weights for this architecture: its DEFAULT, IMAGENET1K_V1 for ResNet18 and 34 (the
    only ones), IMAGENET1K_V2 for ResNet50, 101 and 152 (the better recipe: 80.9% top-1 for ResNet50, not 76.1%)."""
    import torchvision

    architecture = TORCHVISION_ARCHITECTURES.get((layer_type, tuple(depths)))
    if architecture is None:
        raise ValueError(f"torchvision has no ImageNet ResNet with {layer_type} blocks and depths {depths}")
    return torchvision.models.get_model_weights(architecture).DEFAULT


def read_backbone_weights(source: str | os.PathLike, layer_type: str = ResNetCBAMConfig.layer_type,
                          depths: list[int] = ResNetCBAMConfig.depths) -> BackboneWeights:
    """The tensors of `source` under torchvision's names. `layer_type` and `depths` (the config's defaults when not
    given) choose torchvision's file only: any other source says what it is. A transformers ResNet whose stride sits
    where torchvision's does not is refused with the reason: its tensors would load and compute something else."""
    source = str(source)
    config = None
    if source == "torchvision":
        state_dict = _download_torchvision(layer_type, depths)
    elif Path(source).is_dir():  # a model saved by this project or by transformers (save_pretrained)
        weights = Path(source) / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"backbone weights: {source} is a folder without model.safetensors (a saved "
                                    "model has one)")
        state_dict, config = _read_file(weights), Path(source) / "config.json"
    elif Path(source).is_file():
        state_dict = _read_file(Path(source))
        config = Path(source).with_name("config.json") if Path(source).name == "model.safetensors" else None
    elif not is_hub_id(source):
        raise FileNotFoundError(f"backbone weights: no file {source} (and it is not a Hub id such as timm/resnet18)")
    else:
        state_dict, config = _read_file(_hub_file(source, "model.safetensors")), _hub_config(source)
    if config is not None and Path(config).is_file():
        _check_transformers_strides(source, Path(config))
    state_dict = _unwrapped(source, state_dict)
    authors = any(".cbam.ChannelGate." in key for key in state_dict)
    return BackboneWeights(source, MappingProxyType(_torchvision_names(state_dict)), "authors" if authors else None)


def _download_torchvision(layer_type: str, depths: list[int]) -> dict:
    weights = torchvision_weights(layer_type, depths)
    try:
        return weights.get_state_dict(progress=True)
    except OSError as error:  # URLError included: no network, or a proxy in the way
        architecture = TORCHVISION_ARCHITECTURES[(layer_type, tuple(depths))]
        raise ValueError(
            f"cannot download torchvision's {architecture} ImageNet weights ({error}); without network, give a "
            "local .safetensors/.pth file (scripts/finetune.py: --backbone_weights FILE) or start from random "
            "weights (--backbone_weights none)"
        ) from error


def _hub_file(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as error:  # not found, no network, offline mode: the Hub library's own words follow
        raise ValueError(f"cannot fetch {repo}/{filename} from the Hub ({type(error).__name__}: {error}); without "
                         "network, give a local .safetensors/.pth file") from error


def _hub_config(repo: str) -> Path | None:
    """The Hub repo's config.json (a transformers model has one, a timm model its own), None where it has none."""
    try:
        return _hub_file(repo, "config.json")
    except ValueError:
        return None


def _check_transformers_strides(source: str, config_file: Path) -> None:
    """Refuse a transformers ResNet that downsamples where torchvision's does not: the stride on the bottleneck's
    first 1x1 convolution (`downsample_in_bottleneck`, the original ResNet v1), or in the first stage
    (`downsample_in_first_stage`). Its tensors have torchvision's shapes, so only its config tells."""
    import json

    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(config, dict) or config.get("model_type") != "resnet":
        return
    for name, where in (("downsample_in_bottleneck", "on the first 1x1 convolution of a bottleneck"),
                        ("downsample_in_first_stage", "in the first stage")):
        if config.get(name):
            raise ValueError(f"{source}: a transformers ResNet with {name}=true, which downsamples {where}; this "
                             "model downsamples as torchvision's ResNet (v1.5: on the 3x3 convolution, from the "
                             "second stage on), so these weights would load and compute something else")


def _torchvision_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An unwrapped state dict's tensors under torchvision's names: DataParallel's `module.` and a saved
    ResNet-CBAM's backbone prefix dropped, transformers' ResNet names and the CBAM authors' module names mapped."""
    return {_torchvision_name(key.removeprefix("module.").removeprefix(f"{BACKBONE_PREFIX}.")): tensor
            for key, tensor in state_dict.items()}


def _unwrapped(source: str, state_dict) -> dict[str, torch.Tensor]:
    """The tensors of a read file, out of a training checkpoint's `state_dict` or `model` entry."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"{source}: holds a {type(state_dict).__name__}, not a state dict of tensors")
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{source}: '{not_tensors[0]}' is a {type(state_dict[not_tensors[0]]).__name__}, not a "
                         "tensor; the file is not a ResNet state dict")
    return state_dict


# transformers' ResNet (ResNetModel / ResNetForImageClassification, basic or bottleneck layers) -> torchvision's names
_STAGE = r"^(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\."
TRANSFORMERS_RESNET_NAMES = [
    (r"^(?:resnet\.)?embedder\.embedder\.convolution\.", "conv1."),
    (r"^(?:resnet\.)?embedder\.embedder\.normalization\.", "bn1."),
    (_STAGE + r"shortcut\.convolution\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0."),
    (_STAGE + r"shortcut\.normalization\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1."),
    (_STAGE + r"layer\.([012])\.convolution\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}."),
    (_STAGE + r"layer\.([012])\.normalization\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}."),
    (r"^classifier\.1\.", "fc."),
]


# the CBAM authors' module (MODELS/cbam.py: ChannelGate's MLP after a Flatten, SpatialGate's BasicConv) -> this
# model's CBAM names
AUTHORS_CBAM_NAMES = [
    (r"\.cbam\.ChannelGate\.mlp\.1\.", ".cbam.channel.mlp.0."),
    (r"\.cbam\.ChannelGate\.mlp\.3\.", ".cbam.channel.mlp.2."),
    (r"\.cbam\.SpatialGate\.spatial\.(conv|bn)\.", r".cbam.spatial.\1."),
]


def _torchvision_name(key: str) -> str:
    """A tensor's name as torchvision's ResNet has it (transformers' ResNet names mapped mechanically), a CBAM
    authors' module's as this model's CBAM has it."""
    for pattern, replacement in AUTHORS_CBAM_NAMES:
        key, count = re.subn(pattern, replacement, key)
        if count:
            return key
    for pattern, replacement in TRANSFORMERS_RESNET_NAMES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def _read_file(path: Path) -> dict:
    """The tensors of a .safetensors file, or the state dict in a .pth/.pt/.bin file (read with weights_only, so no
    code in it runs); a ValueError naming the file when it is neither."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, foreign, or pickled objects: each library words it its own way
        why = shorten(f"{type(error).__name__}: {error}", 200, placeholder=" ...")
        raise ValueError(f"{path}: not a readable weights file ({why}); "
                         "expected a ResNet state dict saved as .safetensors or with torch.save") from error
