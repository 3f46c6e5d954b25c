"""Save a trained plain ResNet (`--cbam_placement none`) as torchvision's ResNet file: the stand-in for ImageNet's
weights that `--backbone_weights FILE` loads exactly as it loads torchvision's own (the transfer study saves its
pretrained backbone the same way).

    python docs/examples/torchvision_weights.py runs/pretrain-cifar10-64 outputs/docs/resnet18-cifar10-64px.pth
"""

import sys
from pathlib import Path

from training.study import save_torchvision_weights

print(save_torchvision_weights(Path(sys.argv[1]), Path(sys.argv[2])))
