"""Regenerate every console output shown in README.md and docs/*.md, so that none is older than the code.

    python docs/render.py                 # every page
    python docs/render.py docs/using.md   # one page
    python docs/render.py --check         # list the blocks and their commands, run nothing
    python docs/render.py --record runs/fast-2ep docs/runs/fast-2ep --command "accelerate launch ..."

A page marks each output it shows:

    <!-- render: COMMAND -->
    (replaced: the command, its output, the commit and the host)
    <!-- /render -->

or, for a command that prints markdown (a table), `<!-- render-md: COMMAND -->`: its output goes in as markdown.
A command must exit with 0, or with the code its marker gives (`<!-- render exit=1: ... -->`, for an example of a
documented failure).

COMMAND runs with bash in the repository root, offline, one block after another (a block may use what an earlier
one wrote, e.g. a model folder under outputs/docs/). A long run is not rerun: its folder is kept small under
docs/runs/ by `--record` (trainer_state.json, all_results.json, the card, and run.json with the command and the
host) and a block renders it, e.g. with scripts/compare_runs.py. A command that fails stops the rendering, and the
page keeps its previous text.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The docs first: the README shows figures their examples write (the benchmark's JSON, the quick model).
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"(<!-- render(?P<markdown>-md)?(?: exit=(?P<exit>\d+))?: (?P<command>.+?) -->\n)(?P<body>.*?)"
                   r"(<!-- /render -->)", re.DOTALL)
# A run's figures (not its weights), or a study's results.
RECORD_FILES = ("trainer_state.json", "all_results.json", "README.md", "results.json", "results.md")
PROGRESS = re.compile(r"^.*\r(?!\n)")  # a progress bar redrawn with carriage returns: keep its last state
ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours and cursor moves


def host() -> str:
    """The machine, as the project's hardware probe names it."""
    import torch

    from training.hardware import bf16_is_fast, device_name

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return f"{device_name(device)}, {'bf16' if bf16_is_fast() else 'fp32 (no native bf16)'}"


def commit() -> str:
    """HEAD, and whether the code differs from it (the pages and pictures that rendering writes aside)."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    changed = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!*.md", ":!docs/*.png"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    return (done.stdout.strip() or "unknown") + (" with uncommitted changes" if changed else "")


def clean(output: str) -> str:
    """The output as a reader sees it at the end: progress bars at their last state, no colours, no trailing
    spaces."""
    lines = [PROGRESS.sub("", ESCAPES.sub("", line)).rstrip() for line in output.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def run(command: str, expected_exit: int = 0) -> str:
    """The command's output; any exit code but the block's (0 unless it says `exit=N`) stops the rendering."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # this environment's python
    env = {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "120",
           "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}  # unbuffered: lines in order
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)  # one stream, as a terminal shows it
    output = clean(done.stdout.decode(errors="replace"))  # decoded here: text mode would turn each \r into a line
    if done.returncode != expected_exit:
        raise SystemExit(f"render: `{command}` exited with {done.returncode} (expected {expected_exit}):\n"
                         f"{output[-3000:]}")
    return output


def render_page(page: Path, stamp: str, dry_run: bool = False, only: str | None = None) -> int:
    text = page.read_text()
    blocks = list(BLOCK.finditer(text))
    bodies = []
    for match in blocks:  # in page order: a block may use what an earlier one wrote
        command = match["command"]
        if only is not None and only not in command:
            bodies.append(match["body"])  # kept as it was rendered
            continue
        print(f"{page.name}: {command}", file=sys.stderr)
        if dry_run:
            continue
        start = datetime.datetime.now()
        output = run(command, int(match["exit"] or 0))
        seconds = (datetime.datetime.now() - start).total_seconds()
        footer = f"<small>{stamp}; {seconds:.0f} s</small>\n"
        if match["markdown"]:
            bodies.append(f"{output}\n\n<small>`{command}`</small><br>\n{footer}")
        else:
            shown = command.replace(" && ", " &&\n  ")
            bodies.append(f"```text\n$ {shown}\n{output}\n```\n{footer}")
    if dry_run:
        return len(blocks)
    for match, body in reversed(list(zip(blocks, bodies, strict=True))):  # from the end: earlier offsets hold
        text = text[:match.start("body")] + body + text[match.end("body"):]
    page.write_text(text)
    return len(blocks)


def record(run_folder: Path, target: Path, command: str) -> None:
    """Keep a finished run's figures (not its weights) under docs/runs/, with its command and host."""
    if not any((run_folder / name).is_file() for name in ("all_results.json", "results.json")):
        raise SystemExit(f"render: {run_folder} is neither a finished run nor a study (no all_results.json, no "
                         "results.json)")
    target.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (run_folder / name).is_file():
            shutil.copy2(run_folder / name, target / name)
    facts = {"command": command, "host": host(), "commit": commit(),
             "recorded": datetime.date.today().isoformat(), "from": str(run_folder)}
    (target / "run.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(f"recorded {run_folder} in {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", type=Path, help="Pages to render (default: README.md and docs/*.md).")
    parser.add_argument("--check", action="store_true", help="List the blocks and their commands; run nothing.")
    parser.add_argument("--record", nargs=2, type=Path, metavar=("RUN_FOLDER", "TARGET"),
                        help="Keep a finished run's figures in TARGET (under docs/runs/) instead of rendering.")
    parser.add_argument("--command", help="With --record: the command that made the run.")
    parser.add_argument("--only", help="Render only the blocks whose command contains this text (the others keep "
                        "what they show).")
    args = parser.parse_args(argv)
    if args.record:
        if not args.command:
            parser.error("--record needs --command (the command that made the run)")
        record(*args.record, args.command)
        return 0
    sys.path.insert(0, str(ROOT))
    stamp = f"rendered by docs/render.py at commit {commit()} on {host()}, {datetime.date.today().isoformat()}"
    total = sum(render_page(page.resolve(), stamp, args.check, args.only) for page in (args.pages or PAGES))
    print(f"{total} blocks {'found' if args.check else 'rendered'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
