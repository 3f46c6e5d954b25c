"""Load ImageNet-style ResNet18 weights into a ResNet18-CBAM by name, and see what was loaded, new and skipped.

    python docs/examples/backbone_weights.py

torchvision's own file needs a download (`load_backbone_weights(model, "torchvision")`); here a torchvision ResNet18
with random weights, saved to a local file, stands in for it: the names and shapes are the same.
"""

from pathlib import Path

import torchvision
from safetensors.torch import save_file

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.backbones import load_backbone_weights

weights = Path("outputs/docs/resnet18.safetensors")
weights.parent.mkdir(parents=True, exist_ok=True)
save_file(torchvision.models.resnet18().state_dict(), weights)

model = ResNetCBAMForImageClassification(ResNetCBAMConfig())  # the CIFAR ResNet18-CBAM, 10 classes
print(load_backbone_weights(model, weights))
model.save_pretrained("outputs/docs/imported")  # config with auto_map, safetensors, both code files, processor
print(sorted(path.name for path in Path("outputs/docs/imported").iterdir()))
