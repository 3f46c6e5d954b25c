"""Save a trained plain ResNet (`--cbam_placement none`) as torchvision's ResNet file: the stand-in for ImageNet's
weights that `--backbone_weights FILE` loads exactly as it loads torchvision's own.

    python docs/examples/torchvision_weights.py runs/pretrain-cifar10-64 outputs/docs/resnet18-cifar10-64px.pth
"""

import sys
from pathlib import Path

import torch
import torchvision

from modeling_resnet_cbam import ResNetCBAMForImageClassification

run, out = sys.argv[1], Path(sys.argv[2])
model = ResNetCBAMForImageClassification.from_pretrained(run)
state_dict = model.torchvision_state_dict()
resnet = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, model.config.depths,
                                          num_classes=model.config.num_labels)
resnet.load_state_dict(state_dict)  # strict: every tensor of torchvision's ResNet, and nothing else
out.parent.mkdir(parents=True, exist_ok=True)
torch.save(state_dict, out)
print(f"{out}: torchvision ResNet with depths {model.config.depths}, {len(state_dict)} tensors, "
      f"{sum(t.numel() for t in resnet.parameters()):,} parameters ({model.config.num_labels}-class fc)")
