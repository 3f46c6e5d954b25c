"""Evaluate a trained model on a dataset split: accuracy, per-class accuracy and the confusion matrix.

    python scripts/evaluate_model.py --model outputs/resnet-cbam --dataset_name uoft-cs/cifar10 --split test
    python scripts/evaluate_model.py --model outputs/resnet-cbam --dataset_name ../shared/datasets/cifar10 \\
        --split validation --json eval.json --plot confusion.png

Data options as for training (Hub id, Hub-layout folder, image folders); only the evaluated split is needed; images
are prepared as the model was trained (its image size and normalisation); labels are matched to the model's by
name. (Not named evaluate.py: that would shadow the `evaluate` library on this script's own sys.path.)
"""

import json
import sys
from dataclasses import dataclass, field

from training.arguments import check_at_least, script_parser
from training.data import DataArguments
from training.inference import check_tta, evaluate_split, evaluation_report, load_model
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
    tta: str = field(default="none", metadata={"help": "none, or flip: the mean softmax of each image and its mirror."})

    def __post_init__(self):
        check_at_least(self, batch_size=1)
        check_tta(self.tta)


def main(argv: list[str] | None = None) -> int:
    try:
        args, data_args = script_parser((EvaluateArguments, DataArguments)).parse_args_into_dataclasses(argv)
        model, processor = load_model(args.model, args.device)
        result = evaluate_split(model, processor, data_args, args.split, args.seed, args.batch_size, args.tta)
    except ValueError as error:  # DataError included: a bad split, column, label set or image, named
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(evaluation_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.plot:
        plot_confusion_matrix(result["confusion_matrix"], result["labels"], args.plot,
                              title=f"{args.split}: accuracy {100 * result['accuracy']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
