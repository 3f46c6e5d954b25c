"""What CBAM attends to: per image, the input, each CBAM's spatial map overlaid on it, and its strongest channels.

    python scripts/attention_maps.py --model outputs/resnet-cbam photo.jpg more_photos/ --out_dir attention/

Uses the model's own `output_attentions=True` outputs (no hooks). Writes <out_dir>/<image name>_attention.png
(inputs of the same name from different folders: <folder>_<image name>_attention.png, never one over another).
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from training.inference import model_and_images, output_stems, preprocess_image, save_attention_map
from training.script_args import check_at_least, check_output_folder, script_parser


@dataclass
class AttentionArguments:
    model: str = field(metadata={"help": "A model folder or Hub id (loaded with trust_remote_code)."})
    out_dir: str = field(default="attention_maps", metadata={"help": "Where the PNG files go."})
    top_channels: int = field(default=8, metadata={"help": "Channels shown per CBAM: half the "
                                                                     "strongest, half the weakest."})
    device: str | None = field(default=None, metadata={"help": "cuda or cpu (default: cuda when present)."})

    def __post_init__(self):
        check_at_least(self, top_channels=1)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = script_parser(AttentionArguments)
        args, paths = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
        check_output_folder("--out_dir", args.out_dir)
        model, processor, files = model_and_images(args.model, paths, args.device)
        if not model.cbam_names:
            raise ValueError(f"{args.model} has no CBAM (cbam_placement none): it has no attention to show")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed, stems = 0, output_stems(files)
    for file in files:
        try:
            pixel_values = preprocess_image(processor, file)
        except Exception as error:  # any decoding failure is reported by file name
            print(f"{file}: cannot read: {type(error).__name__}: {error}", file=sys.stderr)  # as predict.py
            failed += 1
            continue
        out = save_attention_map(model, pixel_values, processor.image_mean, processor.image_std,
                                 Path(args.out_dir) / f"{stems[file]}_attention.png", title=file.name,
                                 top_channels=args.top_channels)
        print(f"{file}: {out}")
    if failed:
        print(f"{failed} of {len(files)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
