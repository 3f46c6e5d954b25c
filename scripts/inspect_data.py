"""Look at a dataset before training on it: splits, label names and counts, batch statistics, augmented images.

python scripts/inspect_data.py --dataset_name ../shared/datasets/cifar10 --grid grid.png --json facts.json
python scripts/inspect_data.py --train_dir photos/train --image_size 224 --verify_images
"""

import json
import sys
from collections import Counter
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

from training.data import DataArguments, DataError, labels_of, load_image_data
from training.plots import save_image_grid


@dataclass
class InspectArguments:
    grid: str | None = field(default=None, metadata={"help": "Write a labelled grid of augmented train images."})
    grid_size: int = field(default=64, metadata={"help": "How many images the grid shows."})
    json: str | None = field(default=None, metadata={"help": "Write the facts printed here as JSON."})
    batch_size: int = field(default=256, metadata={"help": "Images in the batch whose mean/std is measured."})
    seed: int = field(default=42, metadata={"help": "Seed of the validation split and the shuffles."})


def main(argv: list[str] | None = None) -> int:
    data_args, args = HfArgumentParser((DataArguments, InspectArguments)).parse_args_into_dataclasses(argv)
    torch.manual_seed(args.seed)
    try:
        data = load_image_data(data_args, seed=args.seed)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    train = data.splits["train"]
    print(f"source: {data_args.source}")
    print(
        f"columns: image={data.image_column!r} label={data.label_column!r}; "
        f"images {data.native_size[0]}x{data.native_size[1]} -> {data.image_size}x{data.image_size}"
    )
    counts = {}
    for name, split in data.splits.items():
        counts[name] = Counter(labels_of(split, data.label_column).tolist())
        print(f"{name:<11}{len(split):>9,} images")
    width = max(len(n) for n in data.label_names)
    print(f"{len(data.label_names)} labels:" + "".join(f"{n:>12}" for n in data.splits))
    for index, name in enumerate(data.label_names):
        print(f"  {index:>3} {name:<{width}}" + "".join(f"{counts[s][index]:>12,}" for s in data.splits))
    batch = torch.stack(train.shuffle(seed=args.seed)[: args.batch_size]["pixel_values"])
    mean, std = batch.mean(dim=(0, 2, 3)).tolist(), batch.std(dim=(0, 2, 3)).tolist()
    print(
        f"transformed train batch of {len(batch)}: mean {_fmt(mean)}, std {_fmt(std)} "
        f"(normalised with mean {_fmt(data.image_mean)}, std {_fmt(data.image_std)})"
    )
    if args.grid:
        sample = train.shuffle(seed=args.seed)[: args.grid_size]
        titles = [data.label_names[label] for label in sample["labels"]]
        save_image_grid(
            sample["pixel_values"],
            titles,
            args.grid,
            mean=data.image_mean,
            std=data.image_std,
            title=f"{len(titles)} augmented training images",
        )
        print(f"grid: {args.grid}")
    if args.json:
        facts = {
            "splits": {name: len(split) for name, split in data.splits.items()},
            "labels": data.label_names,
            "label_counts": {name: [counts[name][i] for i in range(len(data.label_names))] for name in counts},
            "image_column": data.image_column,
            "label_column": data.label_column,
            "image_size": data.image_size,
            "batch_mean": mean,
            "batch_std": std,
        }
        with open(args.json, "w") as f:
            json.dump(facts, f, indent=2)
        print(f"json: {args.json}")
    return 0


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


if __name__ == "__main__":
    sys.exit(main())
