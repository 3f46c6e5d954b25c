"""Push a finished output folder (weights, code, card, plots) to the Hub, e.g. after a push that failed.

python scripts/push.py outputs/cifar10 --hub_model_id your-name/resnet-cbam-cifar10
"""

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from training.hub import HubError, check_push_access, push_folder


@dataclass
class PushArguments:
    hub_model_id: str = field(metadata={"help": "The Hub repo, e.g. your-name/resnet-cbam-cifar10."})
    private: bool = field(default=False, metadata={"help": "Create the repo as private if it does not exist."})
    token: str | None = field(default=None, metadata={"help": "A Hub token (default: the logged-in one)."})


def main(argv: list[str] | None = None) -> int:
    args, folders = HfArgumentParser(PushArguments).parse_known_args(argv)
    if len(folders) != 1 or folders[0].startswith("--"):
        print(f"error: give one output folder (got {folders})", file=sys.stderr)
        return 2
    try:
        repo = check_push_access(args.hub_model_id, args.token, args.private)
    except HubError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        print(f"pushed {folders[0]} to {push_folder(folders[0], repo, args.token)}")
    except HubError as error:  # not a finished folder
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the network or the Hub failed mid-push: the folder is untouched, try again
        print(f"error: the push of {folders[0]} to {repo} failed ({type(error).__name__}: {error}); the folder is "
              "unchanged: run the same command again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
