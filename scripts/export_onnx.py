"""Export a trained model to ONNX, checked against PyTorch with onnxruntime before the file is kept.

    python scripts/export_onnx.py --model outputs/resnet-cbam --output model.onnx [--output_attentions]

Writes model.onnx (dynamic batch axis) and model.onnx.json (the preprocessing and the labels, for onnxruntime and
numpy alone). Exit 1 when the file computes something else than the PyTorch model (it is then removed), 2 for a
model, output path or environment it cannot use.
"""

import sys
from dataclasses import dataclass, field

from training.defaults import check_inference_memory
from training.inference import load_model
from training.onnx_export import TOLERANCE, ParityError, check_output, export_onnx, require_onnx, speed_against_torch
from training.script_args import script_parser


@dataclass
class ExportArguments:
    model: str = field(metadata={"help": "A model folder or Hub id (loaded with trust_remote_code)."})
    output: str = field(metadata={"help": "The .onnx file to write; its settings go beside it (FILE.json)."})
    output_attentions: bool = field(
        default=False, metadata={"help": "Also return every CBAM's channel weights and spatial map."})
    tolerance: float = field(
        default=TOLERANCE, metadata={"help": "The largest logit difference allowed against PyTorch, relative to "
                                     "the largest |logit|."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output file."})
    speed: str | None = field(
        default=None, metadata={"help": "Batch sizes, e.g. 1,64: after the export, images per second of "
                                "onnxruntime and PyTorch on this machine."})

    def __post_init__(self):
        if not self.tolerance > 0:
            raise ValueError(f"--tolerance must be positive, got {self.tolerance}")
        try:
            self.speed_batches = [int(b) for b in self.speed.split(",")] if self.speed else []
        except ValueError:
            raise ValueError(f"--speed takes batch sizes such as 1,64, got {self.speed!r}") from None
        if any(b < 1 for b in self.speed_batches):
            raise ValueError(f"--speed: batch sizes must be at least 1, got {self.speed!r}")


def main(argv: list[str] | None = None) -> int:
    try:
        (args,) = script_parser(ExportArguments).parse_args_into_dataclasses(argv)
        require_onnx()
        check_output(args.output, args.overwrite)  # before the model loads
        model, processor = load_model(args.model, device="cpu")
        if args.speed_batches:  # before the export: a batch too large for memory is refused, not a traceback after
            check_inference_memory(model.config, max(args.speed_batches), "--speed")
        report = export_onnx(model, processor, args.output, args.output_attentions, args.tolerance, args.overwrite)
    except ValueError as error:  # ExportError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ParityError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report)
    for row in speed_against_torch(model, processor, args.output, args.speed_batches):
        print(f"batch {row['batch']}: onnxruntime {row['onnxruntime']:.1f} images/s, PyTorch {row['pytorch']:.1f} "
              f"images/s ({row['onnxruntime'] / row['pytorch']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
