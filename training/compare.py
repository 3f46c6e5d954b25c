"""scripts/compare_runs.py: finished runs side by side, validation accuracy against wall-clock time (a table and a
plot), or one summary row per run."""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from training.plots import accuracy_over_time, plot_accuracy_over_time
from training.script_args import check_output_file, script_parser


@dataclass
class CompareArguments:
    plot: str | None = field(default=None, metadata={"help": "Write the plot as PNG."})
    title: str = field(default="", metadata={"help": "The plot's title."})
    summary: bool = field(default=False, metadata={"help": "One row per run: final accuracy, minutes, images/s."})


def compare_main(argv: list[str] | None = None) -> int:
    """scripts/compare_runs.py: 0; 2 for a bad --plot or a folder that is not a run."""
    args, runs = script_parser(CompareArguments).parse_known_args(argv)
    try:
        check_output_file("--plot", args.plot, ".png")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    histories = {}
    for run in runs:
        folder, _, label = run.partition("=")
        state = Path(folder) / "trainer_state.json"
        if not state.exists():
            print(f"error: {folder}: no trainer_state.json (not a run of scripts/finetune.py)", file=sys.stderr)
            return 2
        histories[label or Path(folder).name] = json.loads(state.read_text())["log_history"]
    if args.summary:
        print_summary([(Path(folder), label or Path(folder).name) for folder, _, label in
                       (run.partition("=") for run in runs)])
        return 0
    print("| run | epoch | minutes | validation accuracy |\n|---|---|---|---|")
    for label, history in histories.items():
        for epoch, seconds, accuracy in accuracy_over_time(history):
            print(f"| {label} | {epoch:g} | {seconds / 60:.1f} | {100 * accuracy:.2f}% |")
    if args.plot:
        plot_accuracy_over_time(histories, args.plot, args.title)
    return 0


def print_summary(runs: list[tuple[Path, str]]) -> None:
    """One row per run; the flags every run shares (the --output_dir aside) are said once, above the table."""
    flags = {label: _flags(folder) for folder, label in runs}
    shared = [flag for flag in next(iter(flags.values()), []) if all(flag in f for f in flags.values())]
    if shared:
        print(f"every run: `accelerate launch scripts/finetune.py {' '.join(shared)}`, plus its flags\n")
    print("| run | final accuracy | training minutes | images/s | its flags |\n|---|---|---|---|---|")
    for folder, label in runs:
        results = json.loads((folder / "all_results.json").read_text())
        split, own = results["eval_split"], " ".join(flag for flag in flags[label] if flag not in shared)
        print(f"| {label} | {100 * results[f'{split}_accuracy']:.2f}% ({split}) | "
              f"{results['train_wall_seconds'] / 60:.1f} | {results['train_samples_per_second']:.0f} | "
              f"{f'`{own}`' if own else ''} |")


def _flags(folder: Path) -> list[str]:
    """The flags of a record's command (run.json), each with its value, without --output_dir."""
    facts = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    words = facts.get("command", "").partition("scripts/finetune.py")[2].split()
    pairs, index = [], 0
    while index < len(words):
        takes_value = index + 1 < len(words) and not words[index + 1].startswith("--")
        pairs.append(" ".join(words[index:index + 1 + takes_value]))
        index += 1 + takes_value
    return [pair for pair in pairs if not pair.startswith("--output_dir")]
