"""Top-k labels for image files and folders with a trained model (a local folder or a Hub id).

    python scripts/predict.py --model outputs/resnet-cbam photo.jpg more_photos/ --top_k 3 --json predictions.json

Any size and mode of image works: it is prepared as the model's preprocessor_config.json says. A file that cannot
be read is reported by name, the others still get predictions, and the exit code is 1 at the end.
"""

import json
import sys
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from training.inference import check_tta, model_and_images, predict_files
from training.script_args import check_at_least, check_output_file, script_parser


@dataclass
class PredictArguments:
    model: str = field(metadata={"help": "A model folder or Hub id (loaded with trust_remote_code)."})
    top_k: int = field(default=3, metadata={"help": "Labels shown per image."})
    json: str | None = field(default=None, metadata={"help": "Write [{image, predictions: [{label, score}]}]."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    num_workers: int = field(default=2, metadata={"help": "Processes decoding images."})
    device: str | None = field(default=None, metadata={"help": "cuda or cpu (default: cuda when present)."})
    tta: str = field(default="none", metadata={"help": "none, or flip: the mean softmax of each image and its mirror."})

    def __post_init__(self):
        check_at_least(self, top_k=1, batch_size=1, num_workers=0)
        check_tta(self.tta)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = script_parser(PredictArguments)
        args, paths = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
        check_output_file("--json", args.json, ".json", inputs=paths)
        model, processor, files = model_and_images(args.model, paths, args.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results, failed = [], 0
    for result in predict_files(model, processor, files, args.top_k, args.batch_size, args.num_workers,
                                tta=args.tta):
        results.append(result)
        if result.error:
            failed += 1
            tqdm.write(f"{result.image}: cannot read: {result.error}", file=sys.stderr)
        else:  # tqdm.write keeps the lines apart from the progress bar
            tqdm.write(f"{result.image}: " + ", ".join(f"{p['label']} {p['score']:.3f}" for p in result.predictions),
                       file=sys.stdout)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: v for k, v in asdict(r).items() if v is not None} for r in results], f, indent=2)
    if failed:
        print(f"{failed} of {len(files)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
