"""Print the layer table (output shape, parameters per module) and the parameters per group of a ResNetCBAM.

python scripts/summary.py                        # the CIFAR ResNet18-CBAM at 32x32
python scripts/summary.py --depths 3,4,6,3 --stem imagenet --image_size 224 --cbam_placement block
python scripts/summary.py --model outputs/cifar10   # a saved folder
"""

import sys
from dataclasses import dataclass, field

from torchinfo import summary

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.arguments import ArchitectureArguments
from training.inference import check_saved_model
from training.script_args import check_at_least, script_parser


@dataclass
class SummaryArguments:
    model: str | None = field(default=None, metadata={"help": "A saved model folder; else a config from the flags."})
    num_labels: int = field(default=10, metadata={"help": "Classes of the head."})
    image_size: int | None = field(default=None, metadata={"help": "Input side in pixels (default: the config's)."})
    depth: int = field(default=4, metadata={"help": "How many module levels the table shows."})

    def __post_init__(self):
        check_at_least(self, num_labels=1, depth=1)
        if self.image_size is not None:
            check_at_least(self, image_size=1)


def main(argv: list[str] | None = None) -> int:
    try:
        args, architecture = script_parser((SummaryArguments, ArchitectureArguments)).parse_args_into_dataclasses(
            argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.model and architecture != ArchitectureArguments():
        print("error: the architecture flags describe a new model; --model reads its own config", file=sys.stderr)
        return 2
    if args.model:
        try:
            check_saved_model(args.model)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        model = ResNetCBAMForImageClassification.from_pretrained(args.model)
    else:
        config = ResNetCBAMConfig(**architecture.config_fields, num_labels=args.num_labels)
        model = ResNetCBAMForImageClassification(config)
    size = args.image_size or model.config.image_size
    print(summary(model, input_size=(1, model.config.num_channels, size, size), depth=args.depth,
                  col_names=("output_size", "num_params"), row_settings=("var_names",), verbose=0))
    counts = {group: sum(p.numel() for p in parameters) for group, parameters in model.parameter_groups().items()}
    width = max(len(g) for g in counts)
    print("Parameters per group")
    for group, count in counts.items():
        print(f"  {group:<{width}}  {count:>12,}")
    print(f"  {'total':<{width}}  {sum(counts.values()):>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
