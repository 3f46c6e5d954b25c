"""Configuration of a ResNet with CBAM attention (Woo et al., "CBAM: Convolutional Block Attention Module", 2018)."""

from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
STEMS = ("cifar", "imagenet")
CBAM_PLACEMENTS = ("stage", "block", "none")
CBAM_INITS = ("default", "identity")
CBAM_STYLES = ("tutorial", "authors")
LAYER_TYPES = ("basic", "bottleneck")
EXPANSION = {"basic": 1, "bottleneck": 4}  # a block's output channels over its width (torchvision's `expansion`)
STAGE_WIDTHS = (64, 128, 256, 512)


class ResNetCBAMConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of [`ResNetCBAMModel`] and [`ResNetCBAMForImageClassification`]: a torchvision-style ResNet
    built from basic or bottleneck blocks, with CBAM attention. The defaults give a CIFAR-10 ResNet18-CBAM
    (11,217,874 parameters).

    Args:
        num_labels (`int`, *optional*, defaults to 10):
            Number of classes of the classification head. Ignored when `id2label` is given.
        id2label (`dict[int, str]`, *optional*):
            Class index to class name; `label2id` is its inverse. Both are written by the training script from the
            dataset's `ClassLabel` feature.
        depths (`list[int]`, *optional*, defaults to `[2, 2, 2, 2]`):
            Number of blocks in layer1..layer4: with basic blocks `[2, 2, 2, 2]` is ResNet18 and `[3, 4, 6, 3]`
            ResNet34; with bottleneck blocks `[3, 4, 6, 3]` is ResNet50, `[3, 4, 23, 3]` ResNet101 and
            `[3, 8, 36, 3]` ResNet152.
        layer_type (`str`, *optional*, defaults to `"basic"`):
            `"basic"`: two 3x3 convolutions per block (ResNet18, 34). `"bottleneck"`: 1x1, 3x3 (with the stride, as
            torchvision's v1.5) and 1x1 convolutions, four times as many output channels as the block's width
            (ResNet50, 101, 152); torchvision's names (`conv1..conv3`, `bn1..bn3`, `downsample`).
        cbam_reduction (`int`, *optional*, defaults to 16):
            Reduction ratio r of the channel-attention MLP (C -> C/r -> C).
        cbam_kernel_size (`int`, *optional*, defaults to 7):
            Kernel size k of the spatial-attention convolution (2 -> 1 channels, padding k // 2); must be odd.
        cbam_placement (`str`, *optional*, defaults to `"stage"`):
            `"stage"`: one CBAM after the output of each of layer1..layer4.
            `"block"`: one CBAM inside every basic block, on the residual branch before the addition (the CBAM
            paper's reference code).
            `"none"`: no CBAM at all: torchvision's plain ResNet (the baseline, and what a backbone is pretrained as).
        cbam_init (`str`, *optional*, defaults to `"default"`):
            `"default"`: the paper's CBAM, `x * channel * spatial`, from PyTorch's default init.
            `"identity"`: each CBAM is wrapped in a learnable scalar gate g initialised at 0, computing
            `x + g * (CBAM(x) - x)`: a network into which CBAM has just been inserted computes exactly what it
            computed without it, and the attention is learned from there (as ReZero or LayerScale start a branch).
        cbam_style (`str`, *optional*, defaults to `"tutorial"`):
            `"tutorial"`: the tutorial's CBAM: a channel MLP without biases, the spatial convolution over the
            [mean, max] maps. `"authors"`: the module of the paper's released code (Woo et al., `MODELS/cbam.py`),
            whose ImageNet-trained ResNet50-CBAM loads tensor by tensor: the channel MLP with biases, the spatial
            convolution over the [max, mean] maps followed by a BatchNorm.
        zero_init_residual (`bool`, *optional*, defaults to `False`):
            Start the last BatchNorm scale (`bn2.weight`) of every basic block at 0, so that each block starts as
            its shortcut (torchvision's `zero_init_residual`; Goyal et al., 2017). Only the initialisation of a new
            model changes; weights loaded from a file or checkpoint keep their values.
        stem (`str`, *optional*, defaults to `"cifar"`):
            `"cifar"`: 3x3 stride-1 convolution and no max-pool, for 32 px images.
            `"imagenet"`: 7x7 stride-2 convolution and a 3x3 stride-2 max-pool, for 224 px images.
        num_channels (`int`, *optional*, defaults to 3):
            Number of input channels.
        image_size (`int`, *optional*, defaults to 32):
            Side of the square images the model is trained on; the saved image processor resizes to it.
        crop_pct (`float`, *optional*, defaults to 1.0):
            Evaluation images have their shorter side resized to `image_size / crop_pct`, then are centre-cropped to
            `image_size` (0.875: resize to 256, crop 224, as for ImageNet); 1.0 resizes straight to `image_size`.
        image_mean (`list[float]`, *optional*, defaults to the CIFAR-10 mean):
            Per-channel mean used to normalise inputs; written into `preprocessor_config.json`.
        image_std (`list[float]`, *optional*, defaults to the CIFAR-10 std):
            Per-channel standard deviation used to normalise inputs; written into `preprocessor_config.json`.
        out_features (`list[str]`, *optional*):
            For [`ResNetCBAMBackbone`]: the feature maps it returns, named after transformers' ResNet stages:
            `"stem"`, then `"stage1"`..`"stage4"` (the outputs of layer1..layer4, each after its CBAM). Defaults to
            `["stage4"]`; the other models ignore it.
        out_indices (`list[int]`, *optional*):
            The same as indices into `stage_names` (`0` is `"stem"`); give one of the two.

    Example:

    ```python
    >>> from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
    >>> model = ResNetCBAMForImageClassification(ResNetCBAMConfig())
    >>> sum(p.numel() for p in model.parameters())
    11217874
    ```
    """

    model_type = "resnet_cbam"

    depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    layer_type: str = "basic"
    cbam_reduction: int = 16
    cbam_kernel_size: int = 7
    cbam_placement: str = "stage"
    cbam_init: str = "default"
    cbam_style: str = "tutorial"
    zero_init_residual: bool = False
    stem: str = "cifar"
    num_channels: int = 3
    image_size: int = 32
    crop_pct: float = 1.0
    image_mean: list[float] | tuple[float, ...] = CIFAR10_MEAN
    image_std: list[float] | tuple[float, ...] = CIFAR10_STD

    def __post_init__(self, **kwargs):
        self.stage_names = ["stem", *(f"stage{index}" for index in range(1, 5))]
        self.set_output_features_output_indices(kwargs.pop("out_features", None), kwargs.pop("out_indices", None))
        if self.id2label is None:
            kwargs.setdefault("num_labels", 10)
        self.depths = list(self.depths)
        self.image_mean = list(self.image_mean)
        self.image_std = list(self.image_std)
        super().__post_init__(**kwargs)
        if self.label2id is None:
            self.label2id = {name: index for index, name in self.id2label.items()}
        self.validate_architecture()

    def validate_architecture(self):
        """Raise a ValueError naming the first field whose value cannot build a model."""
        if len(self.depths) != 4 or any(not isinstance(d, int) or d < 1 for d in self.depths):
            raise ValueError(f"depths must be four positive integers (layer1..layer4), got {self.depths}")
        if self.layer_type not in LAYER_TYPES:
            raise ValueError(f"layer_type must be one of {LAYER_TYPES}, got {self.layer_type!r}")
        if self.cbam_placement not in CBAM_PLACEMENTS:
            raise ValueError(f"cbam_placement must be one of {CBAM_PLACEMENTS}, got {self.cbam_placement!r}")
        if self.cbam_init not in CBAM_INITS:
            raise ValueError(f"cbam_init must be one of {CBAM_INITS}, got {self.cbam_init!r}")
        if self.cbam_style not in CBAM_STYLES:
            raise ValueError(f"cbam_style must be one of {CBAM_STYLES}, got {self.cbam_style!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if not 1 <= self.cbam_reduction <= 64:
            raise ValueError(f"cbam_reduction must be in 1..64 (layer1 has at least 64 channels), got "
                             f"{self.cbam_reduction}")
        if self.cbam_kernel_size < 1 or self.cbam_kernel_size % 2 == 0:
            raise ValueError(f"cbam_kernel_size must be a positive odd number, got {self.cbam_kernel_size}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError(f"image_mean and image_std need {self.num_channels} values (one per channel)")

    @property
    def hidden_sizes(self) -> list[int]:
        """The output channels of layer1..layer4 (transformers' ResNetConfig name): 64..512, times 4 for
        bottleneck blocks."""
        return [width * EXPANSION[self.layer_type] for width in STAGE_WIDTHS]


__all__ = ["ResNetCBAMConfig"]
