"""What every script's command line shares: the parser with the project's help layout, the checks of counts and
comma-separated lists that refuse a bad value by its flag before anything loads, and a run file's flags."""

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import yaml
from transformers import HfArgumentParser


def flag_value(value) -> str:
    """A flag's value as given: the Trainer turns some (strategies, --optim, --lr_scheduler_type) into enums."""
    return str(getattr(value, "value", value))


def flags_given(argv: list[str], flags) -> list[str]:
    """Those of `flags` (--name) on the command line, as `--name VALUE` or `--name=VALUE`, in the order of `flags`."""
    names = {arg.split("=")[0] for arg in argv}
    return [flag for flag in flags if flag in names]


def check_at_least(args, **minimums: int) -> None:
    """Refuse a count flag below its minimum (--top_k 0, --batch_size -1), naming the flag, before any work."""
    for name, minimum in minimums.items():
        if getattr(args, name) < minimum:
            raise ValueError(f"--{name} must be at least {minimum}, got {getattr(args, name)}")


def check_output_file(flag: str, path: str | None, suffix: str, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse, before any work, an output file (`flag`'s value; None: not asked for) that would replace something
    of the user's or cannot be written: one of the command's `inputs`, a folder, a path under a file, or an existing
    file of another type than the `suffix` written (a photo given as --plot)."""
    if path is None:
        return
    target = Path(path)
    if any(target.resolve() == Path(given).resolve() for given in inputs):
        raise ValueError(f"{flag} {path} is one of this command's inputs: writing there would replace it; give "
                         "another file name")
    _check_parents(flag, target)
    if target.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {target / ('output' + suffix)}")
    if target.exists() and target.suffix.lower() != suffix:
        raise ValueError(f"{flag} {path} exists and is not a {suffix} file: this command would replace it with its "
                         f"{suffix} output; give another file name")


def check_output_folder(flag: str, path: str) -> None:
    """Refuse, before any work, an output folder that is a file or lies under one."""
    target = Path(path)
    _check_parents(flag, target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder; give a folder (it is created if missing)")


def _check_parents(flag: str, target: Path) -> None:
    blocking = next((parent for parent in target.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise ValueError(f"{flag} {target}: {blocking} is a file, not a folder")


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another server listens on, or an address this machine cannot listen on, before anything loads
    (a server started there would end in its own traceback)."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as error:
            busy = error.errno == errno.EADDRINUSE
            raise ValueError(f"--port {port}: cannot listen on {host}:{port} ({error.strerror or error}): "
                             + ("another server is listening there; give another --port" if busy else
                                "check --host")) from None


def comma_list(text: str | None, kind, flag: str) -> list | None:
    if text is None:
        return None
    try:
        return [kind(value) for value in text.split(",")]
    except ValueError as error:
        raise ValueError(f"{flag} must be comma-separated {kind.__name__} values, got {text!r}") from error


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """One name per flag (`--flag VALUE`, not also `--flag-name FLAG_NAME`), no "(default: None)" nor "(default:
    False)" nor a default its text already says, and the epilog as written: a help a user reads from the top."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:  # a positional, or --help
            return super()._format_action_invocation(action)
        value = "[BOOL]" if action.nargs == "?" else "VALUE ..." if action.nargs in ("+", "*") else "VALUE"
        return f"{action.option_strings[0]} {value}"

    def add_usage(self, usage, actions, groups, prefix=None):
        super().add_usage(usage or "%(prog)s [--flag VALUE ...]", actions, groups, prefix)

    def _get_help_string(self, action: argparse.Action) -> str:
        said = "default" in (action.help or "").lower()  # the text says it, in words
        off = action.default is None or action.default is False  # a [BOOL] flag is off unless given
        if off or action.default == argparse.SUPPRESS or said:
            return action.help or ""
        return super()._get_help_string(action)


def script_parser(dataclass_types, **kwargs) -> HfArgumentParser:
    """The HfArgumentParser of a script, with the project's help layout."""
    return HfArgumentParser(dataclass_types, formatter_class=HelpFormatter, **kwargs)


def read_run_file(path: Path) -> dict:
    """The flags a run file (`finetune.py run.yaml`) holds, as one mapping; a ValueError naming the file when it
    cannot be read, does not parse, or holds anything but a mapping of flag names to values."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"{path}: the run file cannot be read ({error.strerror or error})") from error
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({first})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a run file holds one mapping of flag names to values (e.g. 'recipe: staged' on a "
                         f"line), not {type(values).__name__ if values is not None else 'nothing'}")
    return values
