"""ResNet with CBAM attention as a transformers model.

The backbone keeps torchvision's ResNet parameter names (`conv1`, `bn1`, `layer1.0.conv1`, ...) under the prefix
`backbone.`, so torchvision and timm ResNet weights load by name (training/backbones.py: that import is training
code, not part of this file). CBAM modules are named `cbam.layer1` ...
(`cbam_placement="stage"`) or `backbone.layer1.0.cbam` ... (`cbam_placement="block"`).
"""

import math
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import BitImageProcessor, PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput
from transformers.utils import ModelOutput

from .configuration_resnet_cbam import EXPANSION, STAGE_WIDTHS, ResNetCBAMConfig

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
# The parts a training schedule can freeze or give their own learning rate, in forward order.
PARAMETER_GROUPS = ("stem", *STAGE_NAMES, "cbam", "head")
# Every entry so that AutoModel and pipeline("image-classification") load either class from one folder.
AUTO_MAP = {
    "AutoConfig": "configuration_resnet_cbam.ResNetCBAMConfig",
    "AutoModel": "modeling_resnet_cbam.ResNetCBAMModel",
    "AutoModelForImageClassification": "modeling_resnet_cbam.ResNetCBAMForImageClassification",
    "AutoBackbone": "modeling_resnet_cbam.ResNetCBAMBackbone",
}


class ChannelAttention(nn.Module):
    """Per-channel weights sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), one MLP C -> C/r -> C shared by both pools
    (with biases in the authors' module)."""

    def __init__(self, channels: int, reduction: int, bias: bool = False):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.stack([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))])
        return torch.sigmoid(self.mlp(pooled).sum(dim=0))[:, :, None, None]


class SpatialAttention(nn.Module):
    """A map sigmoid(conv_kxk([mean over channels, max over channels])) of shape (batch, 1, height, width); the
    authors' module takes [max, mean] and normalises the convolution's output with a BatchNorm."""

    def __init__(self, kernel_size: int, authors: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, momentum=0.01) if authors else None  # their BatchNorm's momentum
        self.max_first = authors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)]
        out = self.conv(torch.cat(maps[::-1] if self.max_first else maps, dim=1))
        return torch.sigmoid(out if self.bn is None else self.bn(out))


class CBAM(nn.Module):
    """Channel attention, then spatial attention. Returns the attended features and both attention tensors.

    With `gated`, the output is `x + gate * (attended - x)` with a learnable scalar `gate` that starts at 0: the
    module starts as the identity, so inserting it leaves a pretrained network's function unchanged.
    """

    def __init__(self, channels: int, reduction: int, kernel_size: int, gated: bool = False, authors: bool = False):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, bias=authors)
        self.spatial = SpatialAttention(kernel_size, authors=authors)
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
    return CBAM(channels, config.cbam_reduction, config.cbam_kernel_size, gated=config.cbam_init == "identity",
                authors=config.cbam_style == "authors")


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
    "ChannelAttention",
    "ResNetCBAMBackbone",
    "ResNetCBAMForImageClassification",
    "ResNetCBAMModel",
    "ResNetCBAMPreTrainedModel",
    "SpatialAttention",
]
