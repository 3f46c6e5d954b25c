"""ResNet with CBAM attention as a transformers model.

The backbone keeps torchvision's ResNet parameter names (`conv1`, `bn1`, `layer1.0.conv1`, ...) under the prefix
`backbone.`, so torchvision and timm ResNet weights load by name. CBAM modules are named `cbam.layer1` ...
(`cbam_placement="stage"`) or `backbone.layer1.0.cbam` ... (`cbam_placement="block"`).
"""

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import shorten

import torch
import torchvision
from torch import nn
from transformers import BitImageProcessor, PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput
from transformers.utils import ModelOutput

from .configuration_resnet_cbam import EXPANSION, STAGE_WIDTHS, ResNetCBAMConfig

logger = logging.getLogger(__name__)

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
# The parts a training schedule can freeze or give their own learning rate, in forward order.
PARAMETER_GROUPS = ("stem", *STAGE_NAMES, "cbam", "head")
BACKBONE_PREFIX = "resnet_cbam.backbone"  # where a saved classifier of this project keeps torchvision's names
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
TORCHVISION_ARCHITECTURES = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
                             ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
                             ("bottleneck", (3, 8, 36, 3)): "resnet152"}
# Every entry so that AutoModel and pipeline("image-classification") load either class from one folder.
AUTO_MAP = {
    "AutoConfig": "configuration_resnet_cbam.ResNetCBAMConfig",
    "AutoModel": "modeling_resnet_cbam.ResNetCBAMModel",
    "AutoModelForImageClassification": "modeling_resnet_cbam.ResNetCBAMForImageClassification",
    "AutoBackbone": "modeling_resnet_cbam.ResNetCBAMBackbone",
}


class ChannelAttention(nn.Module):
    """Per-channel weights sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), one MLP C -> C/r -> C shared by both pools."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.stack([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))])
        return torch.sigmoid(self.mlp(pooled).sum(dim=0))[:, :, None, None]


class SpatialAttention(nn.Module):
    """A map sigmoid(conv_kxk([mean over channels, max over channels])) of shape (batch, 1, height, width)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Channel attention, then spatial attention. Returns the attended features and both attention tensors.

    With `gated`, the output is `x + gate * (attended - x)` with a learnable scalar `gate` that starts at 0: the
    module starts as the identity, so inserting it leaves a pretrained network's function unchanged.
    """

    def __init__(self, channels: int, reduction: int, kernel_size: int, gated: bool = False):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)
        self.gate = nn.Parameter(torch.zeros(1)) if gated else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        channel_weights = self.channel(x)
        weighted = x * channel_weights
        spatial_map = self.spatial(weighted)
        attended = weighted * spatial_map
        if self.gate is not None:
            attended = x + self.gate * (attended - x)
        return attended, channel_weights, spatial_map


class ResidualBatchNorm(nn.BatchNorm2d):
    """The last BatchNorm of a block's residual branch: `zero_init_residual` starts its scale at 0."""


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """torchvision's shortcut projection (1x1 convolution and BatchNorm) where the shape changes, else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


def _close_block(block: nn.Module, out: torch.Tensor, identity: torch.Tensor):
    """The residual branch's CBAM (if any) before the addition, the addition and the ReLU; with the attention."""
    attention = None
    if block.cbam is not None:
        out, channel_weights, spatial_map = block.cbam(out)
        attention = (channel_weights, spatial_map)
    return block.relu(out + identity), attention


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, with an optional CBAM on the residual branch before the addition."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, cbam: CBAM | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = ResidualBatchNorm(out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride)
        self.cbam = cbam

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return _close_block(self, out, identity)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride on the 3x3 convolution), `width` channels inside and four times
    as many out (EXPANSION), with an optional CBAM on the residual branch before the addition."""

    def __init__(self, in_channels: int, width: int, stride: int, cbam: CBAM | None):
        super().__init__()
        out_channels = width * EXPANSION["bottleneck"]
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = ResidualBatchNorm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)
        self.cbam = cbam

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
        return _close_block(self, out, identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetStage(nn.Sequential):
    """A sequence of blocks (torchvision's `layerN`); returns the features and the blocks' CBAM attentions."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        attentions = []
        for block in self:
            x, attention = block(x)
            if attention is not None:
                attentions.append(attention)
        return x, attentions


class ResNetCBAMTrunk(nn.Module):
    """torchvision's ResNet without its classifier, CBAM inserted: stem (conv1, bn1, relu, maxpool) and layer1..layer4
    (named to stay apart from transformers' public `ResNetBackbone`, a different class)."""

    def __init__(self, config: ResNetCBAMConfig):
        super().__init__()
        if config.stem == "cifar":
            self.conv1 = nn.Conv2d(config.num_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(config.num_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        block, in_channels = BLOCKS[config.layer_type], 64
        stages = zip(STAGE_NAMES, STAGE_WIDTHS, config.hidden_sizes, config.depths, strict=True)
        for index, (name, width, out_channels, depth) in enumerate(stages):
            blocks = []
            for block_index in range(depth):
                stride = 2 if index > 0 and block_index == 0 else 1
                cbam = _make_cbam(config, out_channels) if config.cbam_placement == "block" else None
                blocks.append(block(in_channels, width, stride, cbam))
                in_channels = out_channels
            self.add_module(name, ResNetStage(*blocks))

    def stem(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(pixel_values))))


def _make_cbam(config: ResNetCBAMConfig, channels: int) -> CBAM:
    return CBAM(channels, config.cbam_reduction, config.cbam_kernel_size, gated=config.cbam_init == "identity")


@dataclass
class BackboneLoadReport:
    """What `load_backbone_weights` did, tensor by tensor (names as in this model's state dict)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the source's tensors this model has no place for (names there)
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


@dataclass
class ResNetCBAMModelOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, 512, height, width)`):
            Features after layer4 (and its CBAM).
        pooler_output (`torch.FloatTensor` of shape `(batch_size, 512)`):
            Global average of `last_hidden_state`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The stem output, then the output of each stage (after its CBAM).
        channel_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            One `(batch_size, channels)` tensor of channel weights per CBAM, in the order of `model.cbam_names`.
        spatial_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            One `(batch_size, 1, height, width)` spatial map per CBAM, in the order of `model.cbam_names`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    channel_attentions: tuple[torch.FloatTensor, ...] | None = None
    spatial_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ResNetCBAMImageClassifierOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Cross-entropy of `logits` against `labels`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Classification scores before softmax.
        hidden_states, channel_attentions, spatial_attentions:
            As in [`ResNetCBAMModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    channel_attentions: tuple[torch.FloatTensor, ...] | None = None
    spatial_attentions: tuple[torch.FloatTensor, ...] | None = None


class ResNetCBAMPreTrainedModel(PreTrainedModel):
    config_class = ResNetCBAMConfig
    base_model_prefix = "resnet_cbam"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["BasicBlock", "Bottleneck", "CBAM"]
    accepts_loss_kwargs = False  # the loss is a per-batch mean: the Trainer scales it for gradient accumulation

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        # torchvision's ResNet init; the transformers `init` functions skip tensors already loaded from a checkpoint.
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):  # PyTorch's default for the head and the CBAM MLP
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.BatchNorm2d):
            closes_block = isinstance(module, ResidualBatchNorm) and self.config.zero_init_residual
            (init.zeros_ if closes_block else init.ones_)(module.weight)  # a block starting as its shortcut
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, CBAM) and module.gate is not None:
            init.zeros_(module.gate)  # the identity at the start (cbam_init="identity")

    @staticmethod
    def parameter_group(name: str) -> str:
        """The group (one of `PARAMETER_GROUPS`) of a parameter or buffer of this model, from its name:
        'resnet_cbam.backbone.layer2.0.conv1.weight' -> 'layer2', '...cbam.layer2.spatial.conv.weight' -> 'cbam'."""
        parts = name.split(".")
        if "cbam" in parts:
            return "cbam"
        if parts[0] == "classifier":
            return "head"
        if "backbone" in parts[:-1]:
            module = parts[parts.index("backbone") + 1]
            return module if module in STAGE_NAMES else "stem"
        raise ValueError(f"'{name}' belongs to none of the groups {', '.join(PARAMETER_GROUPS)}")

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter by group, in the model's order; each parameter in exactly one group (as timm's
        `group_matcher`, owned by the model because the names are the model's)."""
        groups = {name: [] for name in PARAMETER_GROUPS}
        for name, parameter in self.named_parameters():
            groups[self.parameter_group(name)].append(parameter)
        return groups

    @property
    def cbam_names(self) -> list[str]:
        """Names of the CBAM modules, in the order of the `channel_attentions` / `spatial_attentions` outputs."""
        return [name for name, module in self.named_modules() if isinstance(module, CBAM)]

    def image_processor(self) -> BitImageProcessor:
        """The transformers image processor that prepares images as evaluation does: RGB, resize the shorter side to
        `image_size / crop_pct`, centre-crop `image_size`, normalise."""
        size = self.config.image_size
        return BitImageProcessor(
            size={"shortest_edge": round(size / self.config.crop_pct)},
            crop_size={"height": size, "width": size},
            resample=2,  # bilinear, as torchvision's Resize
            image_mean=self.config.image_mean,
            image_std=self.config.image_std,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """Save config (with every auto_map entry), safetensors weights, both code files and the image processor."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.image_processor().save_pretrained(save_directory)

    def torchvision_state_dict(self) -> dict[str, torch.Tensor]:
        """The backbone's tensors under torchvision's ResNet names (`conv1.weight`, `layer1.0.bn1.running_mean`, ...),
        and a classifier's linear layer as `fc`: the inverse of `load_backbone_weights`. For a plain network
        (`cbam_placement="none"`) it is the state dict of a torchvision ResNet, which `torchvision.models.resnet18()`
        loads as it loads ImageNet's file."""
        backbone = self.base_model.backbone
        tensors = {name: tensor.detach().clone() for name, tensor in backbone.state_dict().items()
                   if "cbam" not in name.split(".")}
        classifier = getattr(self, "classifier", None)
        if isinstance(classifier, nn.Linear):
            tensors.update({f"fc.{name}": tensor.detach().clone() for name, tensor in classifier.state_dict().items()})
        return tensors

    def load_backbone_weights(self, source: str | os.PathLike) -> BackboneLoadReport:
        """Load ImageNet ResNet weights into the backbone by name and report what was loaded, new and skipped.

        `source` is `"torchvision"` (`torchvision_weights`: downloaded by torchvision on first use), a Hub id of a timm
        ResNet (e.g. `"timm/resnet18.a1_in1k"`), a local `.safetensors` / `.pth` file, or a model folder saved by
        this project or by transformers' `ResNetForImageClassification` with basic layers (its folder or its
        `model.safetensors`: the backbone loads, a CBAM and classifier are skipped).
        A file of another architecture is a ValueError naming the first tensor that does not fit.
        """
        backbone = self.base_model.backbone
        prefix = next(name for name, module in self.named_modules() if module is backbone) + "."
        own = backbone.state_dict()
        report = BackboneLoadReport(source=str(source))
        to_load = {}
        shape = f"{self.config.layer_type} blocks and depths {self.config.depths}"
        layout = (self.config.layer_type, list(self.config.depths))
        state_dict = _read_resnet_state_dict(source, self.config.layer_type, self.config.depths)
        for key, tensor in state_dict.items():
            if key.startswith(("fc.", "classifier.")) or "cbam" in key.split("."):
                report.skipped.append(key)  # the source's classifier, and its CBAM (a saved ResNet-CBAM)
                continue
            if key not in own:
                raise ValueError(
                    f"{source}: tensor '{key}' has no counterpart in a ResNet with {shape}; "
                    f"the weights are of another architecture{_what_the_weights_are(state_dict, layout)}"
                )
            if tensor.shape != own[key].shape:
                if key == "conv1.weight" and self.config.stem == "cifar":
                    report.dropped.append(key)  # the CIFAR stem replaces the 7x7 ImageNet one: it starts at random
                    continue
                if key == "conv1.weight" and tensor.shape[-1] == 3:
                    raise ValueError(
                        f"{source}: its conv1 is 3x3, a CIFAR stem's, and this model's ImageNet stem is 7x7; a model "
                        "with stem='cifar' takes these weights (scripts/finetune.py: --stem cifar)"
                    )
                raise ValueError(
                    f"{source}: tensor '{key}' has shape {tuple(tensor.shape)} but this model's is "
                    f"{tuple(own[key].shape)}; the weights are of another architecture"
                    f"{_what_the_weights_are(state_dict, layout)}"
                )
            to_load[key] = tensor
        missing = [k for k in own if k not in to_load and k != "conv1.weight" and ".cbam." not in k]
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(
                f"{source}: no tensor for '{missing[0]}' (and {len(missing) - 1} more); the weights are of another "
                f"architecture{_what_the_weights_are(state_dict, layout)}"
            )
        backbone.load_state_dict(to_load, strict=False)
        report.loaded = [prefix + key for key in to_load]
        report.new = [name for name in self.state_dict() if name.removeprefix(prefix) not in to_load]
        report.new = [name for name in report.new if not name.endswith("num_batches_tracked")]
        logger.info(str(report))
        return report


def resnet_layout(state_dict: dict[str, torch.Tensor]) -> tuple[str, list[int]] | None:
    """The block type and depths of a state dict under torchvision's ResNet names (None: it is not one): bottleneck
    when layer1's first block has a conv3, the depths from the highest block index of each stage."""
    blocks = {stage: {int(key.split(".")[1]) for key in state_dict if key.startswith(f"{stage}.")}
              for stage in STAGE_NAMES}
    if not all(blocks.values()):
        return None
    layer_type = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    return layer_type, [max(indices) + 1 for indices in blocks.values()]


def _what_the_weights_are(state_dict: dict[str, torch.Tensor], own: tuple[str, list[int]]) -> str:
    """': they are a ResNet with bottleneck blocks and depths [3, 4, 6, 3] (--architecture resnet50)', or '' when
    they are no ResNet or one of the model's own layout `own` (the difference is elsewhere)."""
    layout = resnet_layout(state_dict)
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
    architecture = TORCHVISION_ARCHITECTURES.get((layer_type, tuple(depths)))
    if architecture is None:
        raise ValueError(f"torchvision has no ImageNet ResNet with {layer_type} blocks and depths {depths}")
    return torchvision.models.get_model_weights(architecture).DEFAULT


def _read_resnet_state_dict(source: str | os.PathLike, layer_type: str, depths: list[int]) -> dict[str, torch.Tensor]:
    source = str(source)
    if source == "torchvision":
        weights = torchvision_weights(layer_type, depths)
        architecture = TORCHVISION_ARCHITECTURES[(layer_type, tuple(depths))]
        try:
            state_dict = weights.get_state_dict(progress=True)
        except OSError as error:  # URLError included: no network, or a proxy in the way
            raise ValueError(
                f"cannot download torchvision's {architecture} ImageNet weights ({error}); without network, give a "
                "local .safetensors/.pth file (scripts/finetune.py: --backbone_weights FILE) or start from random "
                "weights (--backbone_weights none)"
            ) from error
    elif Path(source).is_dir():  # a model saved by this project (save_pretrained)
        weights = Path(source) / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"backbone weights: {source} is a folder without model.safetensors (a model "
                                    "saved by this project has one)")
        state_dict = _read_file(weights)
    elif Path(source).is_file():
        state_dict = _read_file(Path(source))
    elif not is_hub_id(source):
        raise FileNotFoundError(f"backbone weights: no file {source} (and it is not a Hub id such as timm/resnet18)")
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(source, "model.safetensors")
        except Exception as error:  # not found, no network, offline mode: the Hub library's own words follow
            raise ValueError(f"cannot fetch {source}/model.safetensors from the Hub ({type(error).__name__}: "
                             f"{error}); without network, give a local .safetensors/.pth file") from error
        state_dict = _read_file(Path(path))
    if not isinstance(state_dict, dict):
        raise ValueError(f"{source}: holds a {type(state_dict).__name__}, not a state dict of tensors")
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{source}: '{not_tensors[0]}' is a {type(state_dict[not_tensors[0]]).__name__}, not a "
                         "tensor; the file is not a ResNet state dict")
    # torchvision's names: DDP's "module." wrapper dropped, a saved ResNet-CBAM's backbone prefix, transformers'
    # ResNet names mapped
    return {_torchvision_name(key.removeprefix("module.").removeprefix(f"{BACKBONE_PREFIX}.")): tensor
            for key, tensor in state_dict.items()}


# transformers' ResNet (ResNetModel / ResNetForImageClassification, basic layers) -> torchvision's names
TRANSFORMERS_RESNET_NAMES = [
    (r"^(?:resnet\.)?embedder\.embedder\.convolution\.", "conv1."),
    (r"^(?:resnet\.)?embedder\.embedder\.normalization\.", "bn1."),
    (r"^(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0."),
    (r"^(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1."),
    (r"^(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.([01])\.convolution\.",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}."),
    (r"^(?:resnet\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.([01])\.normalization\.",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}."),
    (r"^classifier\.1\.", "fc."),
]


def _torchvision_name(key: str) -> str:
    """A tensor's name as torchvision's ResNet has it; transformers' ResNet names are mapped mechanically."""
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


class ResNetCBAMModel(ResNetCBAMPreTrainedModel):
    """The backbone with its CBAM modules and global average pooling; no classifier."""

    def __init__(self, config: ResNetCBAMConfig):
        super().__init__(config)
        self.backbone = ResNetCBAMTrunk(config)
        if config.cbam_placement == "stage":
            stages = zip(STAGE_NAMES, config.hidden_sizes, strict=True)
            self.cbam = nn.ModuleDict({name: _make_cbam(config, channels) for name, channels in stages})
        self.pooler = nn.AdaptiveAvgPool2d(1)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ResNetCBAMModelOutput | tuple:
        output_hidden_states = _or_default(output_hidden_states, self.config.output_hidden_states)
        output_attentions = _or_default(output_attentions, self.config.output_attentions)
        x = self.backbone.stem(pixel_values)
        hidden_states, attentions = [x], []
        for name in STAGE_NAMES:
            x, block_attentions = getattr(self.backbone, name)(x)
            attentions.extend(block_attentions)
            if self.config.cbam_placement == "stage":
                x, channel_weights, spatial_map = self.cbam[name](x)
                attentions.append((channel_weights, spatial_map))
            hidden_states.append(x)
        output = ResNetCBAMModelOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x).flatten(1),
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            channel_attentions=tuple(c.flatten(1) for c, _ in attentions) if output_attentions else None,
            spatial_attentions=tuple(s for _, s in attentions) if output_attentions else None,
        )
        return output if _or_default(return_dict, self.config.return_dict) else output.to_tuple()


class ResNetCBAMForImageClassification(ResNetCBAMPreTrainedModel):
    """[`ResNetCBAMModel`] with a linear classifier on the pooled features."""

    def __init__(self, config: ResNetCBAMConfig):
        super().__init__(config)
        self.resnet_cbam = ResNetCBAMModel(config)
        self.classifier = nn.Linear(config.hidden_sizes[-1], config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ResNetCBAMImageClassifierOutput | tuple:
        features = self.resnet_cbam(
            pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions,
            return_dict=True,  # read by name here; this model's own return_dict decides what it returns
        )
        logits = self.classifier(features.pooler_output)
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels)
        output = ResNetCBAMImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=features.hidden_states,
            channel_attentions=features.channel_attentions,
            spatial_attentions=features.spatial_attentions,
        )
        return output if _or_default(return_dict, self.config.return_dict) else output.to_tuple()


class ResNetCBAMBackbone(BackboneMixin, ResNetCBAMModel):
    """[`ResNetCBAMModel`] as a transformers backbone: the feature maps named in `config.out_features` (`stem`,
    `stage1`..`stage4`, each stage after its CBAM), for detection and segmentation heads. It loads a saved
    classifier's weights (its classifier is left out), like transformers' `ResNetBackbone`:

    ```python
    >>> backbone = AutoBackbone.from_pretrained(folder, trust_remote_code=True, out_features=["stage2", "stage4"])
    >>> backbone.channels, backbone.strides
    ([128, 512], [2, 8])
    ```
    """

    has_attentions = False  # the CBAM maps are the classifier's outputs (output_attentions), not a backbone's

    def __init__(self, config: ResNetCBAMConfig):
        super().__init__(config)
        self.num_features = [64, *config.hidden_sizes]
        stem_stride = 1 if config.stem == "cifar" else 4
        self.feature_strides = [stem_stride, *(stem_stride * 2**index for index in range(len(STAGE_NAMES)))]

    @property
    def out_feature_strides(self) -> dict[str, int]:
        """Each stage's stride: how many input pixels one feature-map position spans, along a side."""
        return dict(zip(self.stage_names, self.feature_strides, strict=True))

    @property
    def strides(self) -> list[int]:
        """The strides of the returned feature maps, in the order of `out_features` (as `channels`)."""
        return [self.out_feature_strides[name] for name in self.out_features]

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        features = ResNetCBAMModel.forward(self, pixel_values, output_hidden_states=True, return_dict=True)
        hidden_states = features.hidden_states  # (BackboneMixin.forward, next in line, is abstract)
        output = BackboneOutput(
            feature_maps=tuple(hidden_states[self.stage_names.index(name)] for name in self.out_features),
            hidden_states=hidden_states if _or_default(output_hidden_states, self.config.output_hidden_states)
            else None,
        )
        return output if _or_default(return_dict, self.config.return_dict) else output.to_tuple()


def _or_default(value: bool | None, default: bool) -> bool:
    return default if value is None else value


ResNetCBAMConfig.register_for_auto_class()
ResNetCBAMModel.register_for_auto_class("AutoModel")
ResNetCBAMForImageClassification.register_for_auto_class("AutoModelForImageClassification")
ResNetCBAMBackbone.register_for_auto_class("AutoBackbone")

__all__ = [
    "CBAM",
    "PARAMETER_GROUPS",
    "BackboneLoadReport",
    "ChannelAttention",
    "ResNetCBAMBackbone",
    "ResNetCBAMForImageClassification",
    "ResNetCBAMModel",
    "ResNetCBAMPreTrainedModel",
    "SpatialAttention",
]
