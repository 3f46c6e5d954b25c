"""A saved classifier's weights as a transformers backbone: feature maps for a detection or segmentation head.

    python docs/examples/as_backbone.py outputs/docs/quick

Run where this repository cannot be imported too: the class comes from the folder's own code (trust_remote_code).
"""

import sys

import torch
from transformers import logging
from transformers.dynamic_module_utils import get_class_from_dynamic_module

folder = sys.argv[1]
# transformers 5's AutoBackbone.from_pretrained asks the Hub whether the name is a repository before anything else,
# so it takes Hub ids only; a local folder loads through the class its auto_map names:
Backbone = get_class_from_dynamic_module("modeling_resnet_cbam.ResNetCBAMBackbone", folder)
logging.set_verbosity_error()  # no load report: the same facts are printed below, sorted
backbone, loaded = Backbone.from_pretrained(folder, out_features=["stage1", "stage2", "stage3", "stage4"],
                                            output_loading_info=True)
backbone.eval()
print("missing     ", sorted(loaded["missing_keys"]) or "none")
print("not used    ", sorted(loaded["unexpected_keys"]) or "none")  # a classifier's head: a backbone has none
print("out_features", backbone.out_features)
print("channels    ", backbone.channels)
print("strides     ", backbone.strides)
with torch.no_grad():
    maps = backbone(torch.randn(2, 3, 32, 32)).feature_maps
for name, feature_map in zip(backbone.out_features, maps, strict=True):
    print(f"{name}: {tuple(feature_map.shape)}")
