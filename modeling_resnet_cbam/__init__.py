"""ResNet with CBAM attention as a Hugging Face model; this folder travels to the Hub as it is."""

from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_resnet_cbam import ResNetCBAMConfig
from .modeling_resnet_cbam import (
    CBAM,
    PARAMETER_GROUPS,
    ChannelAttention,
    ResNetCBAMBackbone,
    ResNetCBAMForImageClassification,
    ResNetCBAMModel,
    ResNetCBAMPreTrainedModel,
    SpatialAttention,
)

AutoConfig.register(ResNetCBAMConfig.model_type, ResNetCBAMConfig, exist_ok=True)
AutoModel.register(ResNetCBAMConfig, ResNetCBAMModel, exist_ok=True)
AutoModelForImageClassification.register(ResNetCBAMConfig, ResNetCBAMForImageClassification, exist_ok=True)
AutoBackbone.register(ResNetCBAMConfig, ResNetCBAMBackbone, exist_ok=True)

__all__ = [
    "CBAM",
    "PARAMETER_GROUPS",
    "ChannelAttention",
    "ResNetCBAMBackbone",
    "ResNetCBAMConfig",
    "ResNetCBAMForImageClassification",
    "ResNetCBAMModel",
    "ResNetCBAMPreTrainedModel",
    "SpatialAttention",
]
