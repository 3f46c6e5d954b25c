"""The module groups a stage schedule speaks of, derived from the model's parameter names."""

import re
from collections import Counter

from torch import nn

GROUPS = ("stem", "layer1", "layer2", "layer3", "layer4", "cbam", "head")

_STAGE = re.compile(r"(?:^|\.)backbone\.(layer[1-4])\.")
_STEM = re.compile(r"(?:^|\.)backbone\.(?:conv1|bn1)\.")


def group_of(parameter_name: str) -> str:
    """The group of one parameter or buffer of a ResNetCBAM model, e.g. 'resnet_cbam.cbam.layer2...' -> 'cbam'."""
    if ".cbam." in parameter_name or parameter_name.startswith("cbam."):
        return "cbam"
    if parameter_name.startswith("classifier."):
        return "head"
    if _STEM.search(parameter_name):
        return "stem"
    if match := _STAGE.search(parameter_name):
        return match.group(1)
    raise ValueError(f"parameter '{parameter_name}' belongs to none of the groups {GROUPS}")


def parameters_by_group(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Every parameter of the model, by group, in the model's order; each parameter in exactly one group."""
    groups = {name: [] for name in GROUPS}
    for name, parameter in model.named_parameters():
        groups[group_of(name)].append(parameter)
    return groups


def count_by_group(model: nn.Module) -> Counter:
    return Counter({group: sum(p.numel() for p in params) for group, params in parameters_by_group(model).items()})
