"""The networks --architecture names, with their parameters and multiply-adds: a markdown table.

    python docs/examples/architectures.py

1,000 classes, the ImageNet stem, 224 px; counted on the meta device (nothing is allocated or computed).
"""

from modeling_resnet_cbam import ResNetCBAMConfig
from training.arguments import NAMED_ARCHITECTURES
from training.defaults import multiply_adds, parameter_count

PLACEMENTS = {"none": "no CBAM", "stage": "CBAM after each stage", "block": "CBAM in every block"}

print("| network | " + " | ".join(f"{title}: parameters, multiply-adds" for title in PLACEMENTS.values()) + " |")
print("|---|" + "---|" * len(PLACEMENTS))
for name, (layer_type, depths) in NAMED_ARCHITECTURES.items():
    cells = []
    for placement in PLACEMENTS:
        config = ResNetCBAMConfig(layer_type=layer_type, depths=depths, stem="imagenet", image_size=224,
                                  num_labels=1000, cbam_placement=placement)
        cells.append(f"{parameter_count(config):,}, {multiply_adds(config, 224) / 1e9:.2f} G")
    print(f"| {name} | " + " | ".join(cells) + " |")
