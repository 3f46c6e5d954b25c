"""Validation accuracy against wall-clock time for finished runs: a table, and a plot of all of them together.

    python scripts/compare_runs.py runs/fast=fast runs/full=full --plot docs/accuracy_vs_time.png

Each run is an output folder of scripts/finetune.py (its trainer_state.json), optionally with =LABEL.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from training.arguments import script_parser
from training.plots import accuracy_over_time, plot_accuracy_over_time


@dataclass
class CompareArguments:
    plot: str | None = field(default=None, metadata={"help": "Write the plot as PNG."})
    title: str = field(default="", metadata={"help": "The plot's title."})


def main(argv: list[str] | None = None) -> int:
    args, runs = script_parser(CompareArguments).parse_known_args(argv)
    histories = {}
    for run in runs:
        folder, _, label = run.partition("=")
        state = Path(folder) / "trainer_state.json"
        if not state.exists():
            print(f"error: {folder}: no trainer_state.json (not a run of scripts/finetune.py)", file=sys.stderr)
            return 2
        histories[label or Path(folder).name] = json.loads(state.read_text())["log_history"]
    print("| run | epoch | minutes | validation accuracy |\n|---|---|---|---|")
    for label, history in histories.items():
        for epoch, seconds, accuracy in accuracy_over_time(history):
            print(f"| {label} | {epoch:g} | {seconds / 60:.1f} | {100 * accuracy:.2f}% |")
    if args.plot:
        plot_accuracy_over_time(histories, args.plot, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
