"""Throughput of this project's training path against the tutorial's plain PyTorch loop, measured in one run.

    python scripts/benchmark.py --dataset_name ../shared/datasets/cifar10 --steps 30 --json bench.json
    python scripts/benchmark.py --steps 30 --bf16 false --channels_last false
    python scripts/benchmark.py --train_dir ../shared/datasets/hymenoptera/train --batch_size 32 --steps 5 \
        --warmup 1 --eval_images 32                                                  # photos at 224 px

Prints a table and writes --json: the network's parameters and multiply-adds, step_img_s (train step on tensors in
memory, the project's speed settings and fused Adam), step_fp32_img_s (the tutorial's: fp32, NCHW, default Adam),
data_img_s (the data path alone), plain_loop_img_s (the tutorial's loop, data included), trainer_img_s (finetune.py's
path), speedup_vs_plain, eval_img_s; with --profile_steps, where the step's time goes. Compare ratios of one run.
"""

import json
import sys
from dataclasses import asdict, dataclass, field

from training.arguments import ModelArguments
from training.benchmark import run_benchmark
from training.script_args import check_at_least, script_parser


@dataclass
class BenchmarkArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Real data (e.g. the CIFAR-10 copy); "
                                                            "default: synthetic 32x32 images."})
    train_dir: str | None = field(default=None, metadata={"help": "A folder of photos (class folders): the 224 px "
                                                       "path, and JPEG decoding at full size and in draft mode."})
    steps: int = field(default=30, metadata={"help": "Measured steps per path (after the warm-up)."})
    warmup: int = field(default=3, metadata={"help": "Steps run before measuring."})
    eval_images: int = field(default=1024, metadata={"help": "Images evaluated for eval_img_s."})
    batch_size: int = field(default=64, metadata={"help": "Images per step in every path."})
    architecture: str = field(default="resnet18", metadata={"help": "resnet18/34/50/101/152, as finetune.py's."})
    bf16: bool | None = field(default=None, metadata={"help": "As finetune.py's --bf16 (default: the hardware's)."})
    fp16: bool | None = field(default=None, metadata={"help": "As finetune.py's --fp16 (default: the hardware's)."})
    channels_last: bool | None = field(default=None, metadata={"help": "As finetune.py's --channels_last."})
    data_on_device: bool | None = field(default=None, metadata={"help": "As finetune.py's --data_on_device."})
    torch_compile: bool = field(default=False, metadata={"help": "As finetune.py's --torch_compile."})
    profile_steps: int = field(default=0, metadata={"help": "Also profile this many train steps (torch.profiler): "
                                                       "where the time goes, by kind of op, and the heaviest ops."})
    json: str | None = field(default=None, metadata={"help": "Write the figures as JSON."})

    def __post_init__(self):
        check_at_least(self, steps=1, warmup=0, eval_images=1, batch_size=1, profile_steps=0)
        ModelArguments(architecture=self.architecture)  # an unknown name: refused with the list


def main(argv: list[str] | None = None) -> int:
    try:
        (args,) = script_parser(BenchmarkArguments).parse_args_into_dataclasses(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = {k: v for k, v in asdict(args).items() if k != "json"}
    result = run_benchmark(**{"dataset": options.pop("dataset_name"), **options})
    width = max(map(len, result))
    for key, value in result.items():
        if key != "profile":
            print(f"{key:<{width}}  {_number(value)}")
    if "profile" in result:
        profile = result["profile"]
        print(f"\nwhere a train step's time goes ({profile['ms_per_step']:,.0f} ms per step of {args.batch_size}, "
              "self time of each op, torch.profiler):")
        for title, table in (("kind of op", profile["by_kind"]), ("heaviest ops", profile["top_ops"])):
            print(f"  {title:<44}  {'ms/step':>8}  {'share':>6}")
            for name, ms in table.items():
                print(f"  {name[:44]:<44}  {ms:8,.1f}  {ms / profile['ms_per_step']:6.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _number(value) -> str:
    return f"{value:,.{2 if abs(value) < 10 else 1}f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
