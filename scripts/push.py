"""Push a finished output folder to the Hub: the model (weights, code, card, plots) and/or its demo as a Space.

python scripts/push.py outputs/cifar10 --hub_model_id your-name/resnet-cbam-cifar10
python scripts/push.py outputs/cifar10 --space your-name/resnet-cbam-cifar10-demo
"""

import sys
from dataclasses import dataclass, field

from training.hub import HubError, check_push_access, push_folder, push_space
from training.script_args import script_parser


@dataclass
class PushArguments:
    hub_model_id: str | None = field(default=None, metadata={"help": "The model repo, e.g. you/resnet-cbam-cifar10."})
    space: str | None = field(
        default=None, metadata={"help": "A Gradio Space for the demo (OUTPUT/space/ with the model under model/), "
                                "e.g. you/resnet-cbam-demo."}
    )
    private: bool = field(default=False, metadata={"help": "Create the repos as private if they do not exist."})
    token: str | None = field(default=None, metadata={"help": "A Hub token (default: the logged-in one)."})


def main(argv: list[str] | None = None) -> int:
    args, folders = script_parser(PushArguments).parse_known_args(argv)
    if len(folders) != 1 or folders[0].startswith("--"):
        print(f"error: give one output folder (got {folders})", file=sys.stderr)
        return 2
    if not args.hub_model_id and not args.space:
        print("error: give --hub_model_id (the model), --space (its demo), or both", file=sys.stderr)
        return 2
    pushes = [(repo, space) for repo, space in ((args.hub_model_id, False), (args.space, True)) if repo]
    try:
        repos = [(check_push_access(repo, args.token, args.private, space=space), space) for repo, space in pushes]
    except HubError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for repo, space in repos:
        try:
            url = (push_space if space else push_folder)(folders[0], repo, args.token)
        except HubError as error:  # not a finished folder
            print(f"error: {error}", file=sys.stderr)
            return 2
        except Exception as error:  # the network or the Hub failed mid-push: the folder is untouched, try again
            print(f"error: the push of {folders[0]} to {repo} failed ({type(error).__name__}: {error}); the folder is "
                  "unchanged: run the same command again", file=sys.stderr)
            return 1
        print(f"pushed {folders[0]}{'/space' if space else ''} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
