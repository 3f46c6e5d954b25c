"""A web page for a trained model: drop an image, see its top labels and what each CBAM attends to (Gradio).

    pip install -e ".[demo]"
    python scripts/demo.py --model outputs/resnet-cbam            # then open http://127.0.0.1:7860
    python scripts/demo.py --model you/resnet-cbam-cifar10 --examples photos/

The model is loaded once, as a user loads it (trust_remote_code), and kept in memory; it runs on the CPU.
"""

import sys
from dataclasses import dataclass, field

from training.inference import image_files
from training.script_args import check_at_least, check_port_free, script_parser


@dataclass
class DemoArguments:
    model: str = field(metadata={"help": "A model folder or Hub id (loaded with trust_remote_code)."})
    port: int = field(default=7860, metadata={"help": "The port to serve on."})
    host: str = field(default="127.0.0.1", metadata={"help": "The address to listen on (0.0.0.0: every interface)."})
    share: bool = field(default=False, metadata={"help": "Also serve through a public gradio.live link."})
    top_k: int = field(default=5, metadata={"help": "Labels shown."})
    examples: str | None = field(
        default=None, metadata={"help": "Image files or folders offered as examples (default: the run's "
                                "space/examples when --model is a run folder)."}
    )
    device: str | None = field(default=None, metadata={"help": "cuda or cpu (default: cuda when present)."})

    def __post_init__(self):
        check_at_least(self, top_k=1, port=1)
        if self.port > 65535:
            raise ValueError(f"--port must be at most 65535, got {self.port}")
        check_port_free(self.host, self.port)


def main(argv: list[str] | None = None) -> int:
    try:
        args = script_parser(DemoArguments).parse_args_into_dataclasses(argv)[0]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        from training.demo import default_examples, serve
    except ImportError as error:
        print(f"error: the demo needs gradio ({error}): pip install -e \".[demo]\"", file=sys.stderr)
        return 2
    try:
        examples = image_files(args.examples.split(",")) if args.examples else default_examples(args.model)
        serve(args.model, examples, args.top_k, args.device, server_name=args.host, server_port=args.port,
              share=args.share)
    except ValueError as error:  # no model there
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
