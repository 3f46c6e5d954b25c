"""Push a finished output folder (weights, code, card, plots) to the Hub, e.g. after a push that failed.

python scripts/push.py outputs/cifar10 --hub_model_id your-name/resnet-cbam-cifar10
"""

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from training.hub import HubError, check_push_access, push_folder


@dataclass
class PushArguments:
    folder: str = field(metadata={"help": "The output folder of scripts/finetune.py."})
    hub_model_id: str = field(metadata={"help": "The Hub repo, e.g. your-name/resnet-cbam-cifar10."})
    private: bool = field(default=False, metadata={"help": "Create the repo as private if it does not exist."})
    token: str | None = field(default=None, metadata={"help": "A Hub token (default: the logged-in one)."})


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(argv)
    try:
        repo = check_push_access(args.hub_model_id, args.token, args.private)
        print(f"pushed {args.folder} to {push_folder(args.folder, repo, args.token)}")
    except HubError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
