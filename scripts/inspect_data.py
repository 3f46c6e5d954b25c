"""Look at a dataset before training on it: splits, label names and counts, batch statistics, augmented images.

python scripts/inspect_data.py --dataset_name ../shared/datasets/cifar10 --grid grid.png --json facts.json
python scripts/inspect_data.py --train_dir photos/train --image_size 224 --verify_images
"""

import json
import sys
from dataclasses import dataclass, field

import torch

from training.data import DataArguments, data_facts, data_report, load_image_data
from training.plots import save_image_grid
from training.script_args import check_at_least, check_output_file, script_parser


@dataclass
class InspectArguments:
    grid: str | None = field(default=None, metadata={"help": "Write a labelled grid of augmented train images."})
    grid_size: int = field(default=64, metadata={"help": "How many images the grid shows."})
    json: str | None = field(default=None, metadata={"help": "Write the facts printed here as JSON."})
    batch_size: int = field(default=256, metadata={"help": "Images in the batch whose mean/std is measured."})
    seed: int = field(default=42, metadata={"help": "Seed of the validation split and the shuffles."})
    pretrained: bool = field(default=True, metadata={"help": "The input of a run on pretrained backbone weights "
                             "(finetune.py's default); false: from random weights (--backbone_weights none), where "
                             "CIFAR-sized images keep 32 px and the CIFAR stem."})

    def __post_init__(self):
        check_at_least(self, grid_size=1, batch_size=1)


def main(argv: list[str] | None = None) -> int:
    try:
        data_args, args = script_parser((DataArguments, InspectArguments)).parse_args_into_dataclasses(argv)
        check_output_file("--json", args.json, ".json")
        check_output_file("--grid", args.grid, ".png")
        torch.manual_seed(args.seed)
        data = load_image_data(data_args, seed=args.seed, pretrained_stem=args.pretrained)
    except ValueError as error:  # DataError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    facts = data_facts(data, args.batch_size, args.seed)
    print(data_report(facts, data_args.source))
    if args.grid:
        sample = data.splits["train"].shuffle(seed=args.seed)[: args.grid_size]
        save_image_grid(sample["pixel_values"], [data.label_names[label] for label in sample["labels"]], args.grid,
                        mean=data.image_mean, std=data.image_std,
                        title=f"{len(sample['labels'])} augmented training images")
        print(f"grid: {args.grid}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(facts, f, indent=2)
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
