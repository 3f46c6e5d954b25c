"""scripts/evaluate_model.py: a trained model on a dataset split, its data following its run unless flags give other
data; accuracy, per-class accuracy, the confusion matrix and, with --top_losses, its worst mistakes."""

import json
import sys
from dataclasses import dataclass, field

from training.data import DataArguments
from training.inference import check_tta, evaluate_split, evaluation_report, load_model
from training.outputs import read_run_data
from training.plots import plot_confusion_matrix
from training.script_args import check_at_least, check_output_file, script_parser


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "A model folder or Hub id (loaded with trust_remote_code)."})
    split: str | None = field(default=None, metadata={"help": "train, validation or test. Default: the run's "
                              "evaluation split for a run folder evaluated on its own data, else test (validation "
                              "for --validation_dir alone)."})
    json: str | None = field(default=None, metadata={"help": "Write the metrics as JSON."})
    plot: str | None = field(default=None, metadata={"help": "Write the confusion matrix as PNG."})
    batch_size: int = field(default=256, metadata={"help": "Images per forward pass."})
    seed: int | None = field(default=None, metadata={"help": "Seed of a carved validation split: the run's for a run "
                             "folder evaluated on its own data, else 42 (training's default)."})
    device: str | None = field(default=None, metadata={"help": "cuda or cpu (default: cuda when present)."})
    tta: str = field(default="none", metadata={"help": "none, or flip: the mean softmax of each image and its mirror."})
    top_losses: int = field(default=0, metadata={"help": "Also list the N images of highest loss (true and predicted "
                            "class, probability), draw them in --top_losses_plot, and print the most confused class "
                            "pairs. 0 (default): none."})
    top_losses_plot: str = field(default="top_losses.png", metadata={"help": "Where --top_losses draws its grid."})

    def __post_init__(self):
        check_at_least(self, batch_size=1, top_losses=0)
        check_tta(self.tta)


def data_to_evaluate(args: EvaluateArguments, data_args: DataArguments) -> tuple[DataArguments, str, int]:
    """The data, split and seed to evaluate on: a run folder with no data flag given follows its run (the data it
    was trained from, its evaluation split and seed); otherwise the flags, with test as the split (validation for
    an image folder given only as --validation_dir)."""
    run = read_run_data(args.model)
    if run is not None and data_args == DataArguments():
        print(f"data: the run's own ({run['data']['train_dir'] or run['data']['dataset_name']}), "
              f"split {args.split or run['eval_split']}")
        return (DataArguments(**run["data"]), args.split or run["eval_split"],
                run["seed"] if args.seed is None else args.seed)
    alone = data_args.validation_dir and not data_args.train_dir
    return data_args, args.split or ("validation" if alone else "test"), 42 if args.seed is None else args.seed


def evaluate_main(argv: list[str] | None = None) -> int:
    """scripts/evaluate_model.py: 0; 2 for bad flags, a bad model, split, column or image."""
    try:
        args, data_args = script_parser((EvaluateArguments, DataArguments)).parse_args_into_dataclasses(argv)
        check_output_file("--json", args.json, ".json")
        check_output_file("--plot", args.plot, ".png")
        check_output_file("--top_losses_plot", args.top_losses_plot if args.top_losses else None, ".png")
        data_args, split, seed = data_to_evaluate(args, data_args)
        model, processor = load_model(args.model, args.device)
        result = evaluate_split(model, processor, data_args, split, seed, args.batch_size, args.tta,
                                args.top_losses, args.top_losses_plot if args.top_losses else None)
    except ValueError as error:  # DataError included: a bad split, column, label set or image, named
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(evaluation_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.plot:
        plot_confusion_matrix(result["confusion_matrix"], result["labels"], args.plot,
                              title=f"{split}: accuracy {100 * result['accuracy']:.2f}%")
    return 0
