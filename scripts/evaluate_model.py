"""Evaluate a trained model on a dataset split: accuracy, per-class accuracy and the confusion matrix.

    python scripts/evaluate_model.py --model outputs/resnet-cbam --dataset_name uoft-cs/cifar10 --split test
    python scripts/evaluate_model.py --model outputs/resnet-cbam --dataset_name ../shared/datasets/cifar10 \\
        --split validation --json eval.json --plot confusion.png

Data options as for training (Hub id, Hub-layout folder, image folders); images are prepared as the model was
trained (its image size and normalisation); labels are matched to the model's by name. (Not named evaluate.py:
that would shadow the `evaluate` library on this script's own sys.path.)
"""

import json
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from training.data import DataArguments, DataError, load_image_data
from training.inference import load_model, match_labels, predict_split
from training.metrics import classification_metrics
from training.plots import plot_confusion_matrix


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "A model folder or Hub id (loaded with trust_remote_code)."})
    split: str = field(default="test", metadata={"help": "train, validation or test."})
    json: str | None = field(default=None, metadata={"help": "Write the metrics as JSON."})
    plot: str | None = field(default=None, metadata={"help": "Write the confusion matrix as PNG."})
    batch_size: int = field(default=256, metadata={"help": "Images per forward pass."})
    seed: int = field(default=42, metadata={"help": "Seed of a carved validation split (as in training)."})
    device: str | None = field(default=None, metadata={"help": "cuda or cpu (default: cuda when present)."})


def main(argv: list[str] | None = None) -> int:
    args, data_args = HfArgumentParser((EvaluateArguments, DataArguments)).parse_args_into_dataclasses(argv)
    model, processor = load_model(args.model, args.device)
    data_args.image_size = model.config.image_size
    data_args.image_mean, data_args.image_std = list(processor.image_mean), list(processor.image_std)
    data_args.augment = "none"  # evaluation images are never augmented (only the train split is)
    try:
        data = load_image_data(data_args, seed=args.seed, split=args.split)
        to_model = match_labels(data.label_names, model.config.id2label)
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    predictions, labels = predict_split(model, data.splits[args.split], args.batch_size)
    references = [to_model[label] for label in labels.tolist()]
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    result = classification_metrics().compute(predictions=predictions.tolist(), references=references,
                                              num_classes=len(names))
    print(f"{args.split}: {len(references):,} images, accuracy {100 * result['accuracy']:.2f}%")
    width = max(map(len, names))
    print("per-class accuracy:")
    for name, value in zip(names, result["per_class_accuracy"], strict=True):
        print(f"  {name:<{width}}  {100 * value:6.2f}%")
    print("confusion matrix (rows: true, columns: predicted):")
    print(" " * (width + 2) + "".join(f"{name[:6]:>7}" for name in names))
    for name, row in zip(names, result["confusion_matrix"], strict=True):
        print(f"  {name:<{width}}" + "".join(f"{count:>7}" for count in row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"split": args.split, "images": len(references), "labels": names, **result}, f, indent=2)
    if args.plot:
        plot_confusion_matrix(result["confusion_matrix"], names, args.plot,
                              title=f"{args.split}: accuracy {100 * result['accuracy']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
