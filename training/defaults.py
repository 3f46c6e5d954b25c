"""The input and model defaults of a run, chosen in one place from the data's image sizes and the starting weights.

Photographs (a median shorter side above 64 px in a sample of the training split) get what practitioners use with an
ImageNet backbone (the HF `run_image_classification.py` example, timm's defaults): 224 px, the ImageNet stem with its
pretrained `conv1` and max-pool kept, ImageNet's mean and std, random-resized-crop and flip for training, resize to
256 and centre-crop 224 for evaluation. CIFAR-sized images on a pretrained backbone keep its stem too, upsampled to
64 px with ImageNet's mean and std: in the transfer study that beat the seed recipe's new 3x3 stem at 32 px by about
9 points, at 2.5x less time per run (docs/transfer-study.md). From random weights, and in `seed-exact` (the
tutorial reproduced), CIFAR-sized images keep the seed recipe's input exactly: 32 px, the CIFAR stem, CIFAR-10's
mean and std, the tutorial's augmentation. CBAM starts as the identity on pretrained weights (the transfer study
measured the paper's init as worse there). Every flag given explicitly wins; what was chosen, and why, is logged and
written into the model card.
"""

import logging
from dataclasses import dataclass

import torch

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from modeling_resnet_cbam.configuration_resnet_cbam import CIFAR10_MEAN, CIFAR10_STD
from training.backbones import TORCHVISION_ARCHITECTURES, BackboneWeights
from training.hardware import free_memory, launch
from training.images import SizeProfile
from training.recipes import Recipe

logger = logging.getLogger(__name__)

PHOTO_MIN_SIDE = 64  # a median shorter side above this: photographs (CIFAR is 32, its upsampled copies 64)
CIFAR_MEAN, CIFAR_STD = CIFAR10_MEAN, CIFAR10_STD  # the model config's defaults: one owner
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
COSTLY_CIFAR_STEM_SIZE = 128  # the CIFAR stem keeps full resolution into layer1: 16x the ImageNet stem's cost


@dataclass(frozen=True)
class InputPreset:
    """What a kind of image gets unless a flag says otherwise."""

    image_size: int
    stem: str
    crop_pct: float  # evaluation: the shorter side resized to image_size / crop_pct, then a centre crop
    augment: str
    why: str


CIFAR_INPUT = InputPreset(32, "cifar", 1.0, "tutorial",
                          f"CIFAR-sized images (median shorter side at most {PHOTO_MIN_SIDE} px): the seed recipe's")
KEPT_STEM_INPUT = InputPreset(64, "imagenet", 1.0, "tutorial",
                              f"CIFAR-sized images (median shorter side at most {PHOTO_MIN_SIDE} px) on a pretrained "
                              "backbone: the transfer study's best, its ImageNet stem's")
PHOTO_INPUT = InputPreset(224, "imagenet", 0.875, "resized-crop-flip",
                          f"photographs (median shorter side above {PHOTO_MIN_SIDE} px): an ImageNet backbone's")


def wants_pretrained_stem(pretrained: bool, recipe: Recipe, stem: str | None) -> bool:
    """Whether CIFAR-sized images are upsampled for the pretrained backbone's ImageNet stem: on pretrained weights,
    unless the stem is given as cifar or the recipe keeps the seed recipe's stem (`seed-exact`, the tutorial)."""
    return pretrained and recipe.keeps_pretrained_stem and stem in (None, "imagenet")


def input_preset(profile: SizeProfile, pretrained_stem: bool = False) -> InputPreset:
    if profile.median_short_side > PHOTO_MIN_SIDE:
        return PHOTO_INPUT
    return KEPT_STEM_INPUT if pretrained_stem else CIFAR_INPUT


@dataclass(frozen=True)
class InputSettings:
    """The resolved input of a run: the preset it came from and each value, given or defaulted."""

    preset: InputPreset
    image_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    augment: str
    given: tuple[str, ...]  # the flags that overrode the preset

    @property
    def crop_pct(self) -> float:
        return self.preset.crop_pct


def resolve_input(profile: SizeProfile, image_size: int | None, image_mean, image_std,
                  augment: str | None, pretrained_stem: bool = False) -> InputSettings:
    """The input settings for images of this profile (`pretrained_stem`: see wants_pretrained_stem); each flag given
    (not None) wins over the preset."""
    preset = input_preset(profile, pretrained_stem)
    size = image_size or preset.image_size
    # the seed recipe's input keeps the old rule (CIFAR-10's statistics at 32 px, ImageNet's at any other size);
    # images for a pretrained stem are normalised as the ImageNet backbone they are fine-tuned from expects
    cifar_statistics = preset is CIFAR_INPUT and size == CIFAR_INPUT.image_size
    mean, std = (CIFAR_MEAN, CIFAR_STD) if cifar_statistics else (IMAGENET_MEAN, IMAGENET_STD)
    given = tuple(flag for flag, value in (("--image_size", image_size), ("--image_mean", image_mean),
                                           ("--image_std", image_std), ("--augment", augment)) if value is not None)
    return InputSettings(preset, size, tuple(image_mean or mean), tuple(image_std or std), augment or preset.augment,
                         given)


def describe_input(settings: InputSettings) -> str:
    """What the input is, why, and which flags overrode it."""
    size, crop = settings.image_size, round(settings.image_size / settings.crop_pct)
    statistics = "CIFAR-10" if settings.image_mean == CIFAR_MEAN else \
        "ImageNet" if settings.image_mean == IMAGENET_MEAN else "the given"
    evaluation = f"resize to {crop} and centre-crop {size}" if crop != size else f"resize to {size}"
    text = (f"{settings.preset.why} input, {size} px, {statistics} mean and std, "
            f"augment {settings.augment}, evaluation images {evaluation}")
    return text + (f" (given: {', '.join(settings.given)})" if settings.given else "")


def architecture_from_weights(given: dict, weights: BackboneWeights | None) -> tuple[dict, list[str]]:
    """The architecture flags `given` (the config's fields), completed from the backbone weights where left out,
    with a sentence for each: the block type and depths are the weights' (a ResNet-50 file gives a ResNet-50), and
    a 3x3 `conv1` gives the CIFAR stem (a model this project trained from random weights on CIFAR-sized images has
    one), and the CBAM authors' trained modules give their CBAM style inside every block, starting as trained. A
    block type or depths given that the weights do not have is refused, naming both, before any data loads."""
    if weights is None or weights.layout is None:
        return dict(given), []
    resolved, reasons = dict(given), []
    layer_type, depths = weights.layout
    taken = [name for name in ("layer_type", "depths") if name not in given]
    resolved.setdefault("layer_type", layer_type)
    resolved.setdefault("depths", depths)
    if (resolved["layer_type"], list(resolved["depths"])) != (layer_type, depths):
        asked = TORCHVISION_ARCHITECTURES.get((resolved["layer_type"], tuple(resolved["depths"]))) or \
            f"ResNet with {resolved['layer_type']} blocks and depths {list(resolved['depths'])}"
        raise ValueError(f"--backbone_weights {weights.source}: the weights are {weights.describe()}, not the "
                         f"{asked} the flags ask for; leave out --architecture, --layer_type and --depths to take "
                         "the weights' own")
    if taken:
        reasons.append(f"{TORCHVISION_ARCHITECTURES.get((layer_type, tuple(depths)), 'architecture')} "
                       f"({layer_type} blocks, depths {depths}): the weights'")
    if "stem" not in given and weights.stem == "cifar":
        resolved["stem"] = "cifar"
        reasons.append("stem cifar: the weights' conv1 is 3x3, a CIFAR stem's")
    if weights.cbam_style == "authors" and given.get("cbam_placement", "block") == "block":
        resolved.update(cbam_style="authors", cbam_placement="block")
        resolved.setdefault("cbam_init", "default")
        reasons.append("CBAM: the authors' module in every block, loaded as they trained it (the weights hold it), "
                       f"init {resolved['cbam_init']}")
    return resolved, reasons


def resolve_architecture(architecture: dict, preset: InputPreset, recipe: Recipe,
                         pretrained: bool) -> tuple[dict, list[str]]:
    """The model's architecture with the defaults filled in (a None value: not given), and a sentence for each
    default chosen: the stem from the kind of image, CBAM's init from whether pretrained weights are loaded."""
    resolved, reasons = dict(architecture), []
    if resolved.get("stem") is None:
        resolved["stem"] = preset.stem
        reasons.append(f"stem {preset.stem} ({preset.why})")
    if resolved.get("cbam_init") is None and resolved.get("cbam_placement") != "none":
        if recipe.paper_cbam:
            resolved["cbam_init"], why = "default", f"{recipe.name}: {recipe.summary}"
        elif pretrained:
            resolved["cbam_init"], why = "identity", ("pretrained weights are loaded: CBAM starts as the identity, "
                                                      "so the network starts as the backbone computed")
        else:
            resolved["cbam_init"], why = "default", "random weights: the paper's CBAM"
        reasons.append(f"CBAM init {resolved['cbam_init']} ({why})")
    return resolved, reasons


def multiply_adds(config: ResNetCBAMConfig, image_size: int) -> float:
    """Multiply-adds of one forward pass of one image (convolutions and linear layers), counted on the meta
    device: nothing is allocated or computed."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = ResNetCBAMForImageClassification(config)
        pixels = torch.empty(1, config.num_channels, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pixel_values=pixels)
    return counter.get_total_flops() / 2


def layer_outputs(config: ResNetCBAMConfig) -> tuple[list[int], int]:
    """The elements of every layer's output for one image at the config's size, in forward order (an in-place
    ReLU's output is its input's memory: left out), and the network's parameter count. Counted on the meta device:
    nothing is allocated or computed."""
    with torch.device("meta"):
        model = ResNetCBAMForImageClassification(config).eval()  # one image: BatchNorm's training check would refuse
        pixels = torch.empty(1, config.num_channels, config.image_size, config.image_size)  # a 1x1 map of it
    outputs = []
    layers = [module for module in model.modules() if not list(module.children())
              and not getattr(module, "inplace", False)]
    hooks = [layer.register_forward_hook(lambda _, __, out: outputs.append(out.numel())) for layer in layers]
    with torch.no_grad():
        model(pixel_values=pixels)
    for hook in hooks:
        hook.remove()
    return outputs, model.num_parameters()


def training_bytes(config: ResNetCBAMConfig, batch_size: int, element_size: int = 4) -> int:
    """At least what one training step holds: every layer's output of `batch_size` images kept for the backward
    pass (`element_size` bytes each: 2 under 16-bit autocast), and the weights, their gradients and Adam's two
    moments in fp32."""
    outputs, parameters = layer_outputs(config)
    return batch_size * sum(outputs) * element_size + 4 * 4 * parameters


def inference_bytes(config: ResNetCBAMConfig, batch_size: int) -> int:
    """At least what a forward pass of `batch_size` images holds in fp32: the input, the largest layer's input and
    output at once, and the weights."""
    outputs, parameters = layer_outputs(config)
    image = config.num_channels * config.image_size**2
    return 4 * (batch_size * (image + 2 * max(outputs)) + parameters)


def check_inference_memory(config: ResNetCBAMConfig, batch_size: int, flag: str) -> None:
    """Refuse, before any work, a batch whose forward pass cannot fit in this machine's free memory."""
    need, free = inference_bytes(config, batch_size), free_memory(torch.device("cpu"))
    if need > free:
        raise ValueError(f"{flag}: a batch of {batch_size:,} images at {config.image_size} px holds at least "
                         f"{need / 2**30:,.1f} GiB in a forward pass, and this machine has {free / 2**30:,.1f} GiB "
                         "free; give smaller batch sizes")


def check_training_memory(config: ResNetCBAMConfig, batch_size: int, device: torch.device, half: bool) -> None:
    """Refuse, before the first step, an image size and batch whose training step cannot fit in the memory free
    on the device (at 4096 px the kernel would kill the run with no message), said with both figures. On CPUs the
    machine's processes share its memory: the need is every local process's step."""
    processes = 1 if device.type == "cuda" else launch().local_world_size
    need, free = processes * training_bytes(config, batch_size, 2 if half else 4), free_memory(device)
    if need > free:
        step = "a training step of this network holds" if processes == 1 else \
            f"the training steps of this machine's {processes} processes hold"
        where = "the GPU" if device.type == "cuda" else "this machine"
        raise ValueError(f"--image_size {config.image_size} at --per_device_train_batch_size {batch_size}: {step} "
                         f"at least {need / 2**30:,.1f} GiB (the layers' outputs kept for the backward pass, the "
                         f"weights and Adam's state), and {where} has {free / 2**30:,.1f} GiB free; lower "
                         "--per_device_train_batch_size or --image_size")


def warn_costly_stem(config: ResNetCBAMConfig) -> None:
    """The CIFAR stem at 128 px and above: an order of magnitude more compute than the ImageNet stem, said with the
    figures before training."""
    if config.stem != "cifar" or config.image_size < COSTLY_CIFAR_STEM_SIZE:
        return
    imagenet = ResNetCBAMConfig(**{**config.to_dict(), "stem": "imagenet"})
    costly, usual = multiply_adds(config, config.image_size), multiply_adds(imagenet, config.image_size)
    logger.warning("the CIFAR stem at %d px costs %.1f G multiply-adds per image, %.0fx the ImageNet stem's %.2f G "
                   "(it keeps full resolution into layer1); for images this large use --stem imagenet",
                   config.image_size, costly / 1e9, costly / usual, usual / 1e9)
