"""Hyperparameter search: optuna samples fine-tuning flags from a declared space, and each trial is an ordinary
fine-tuning run in OUTPUT/trial-NNN (model, card, metrics), pruned when its validation accuracy after an epoch
falls behind the earlier trials' at the same epoch (optuna's median rule).

Why not `Trainer.hyperparameter_search`: it sets each sampled value as an attribute of the `TrainingArguments` of a
Trainer already built (transformers' `_hp_search_setup`; any other name is skipped with a warning), while here the
stage lrs and lengths build the schedule, and the augmentation the data pipeline, before the Trainer exists; and
its trials are checkpoint folders (run-N/checkpoint-M), not runs with a card and metrics. So the search drives
optuna itself, runs each trial through the fine-tuning command (training.cli.finetune_main) with one more callback
that reports each epoch's validation accuracy to the trial and stops the run when optuna prunes it, and keeps the
study in OUTPUT/search.db, so that a stopped search continues where it stopped.
"""

import json
import logging
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from training.cli import Stopped
from training.recipes import Recipe
from training.script_args import check_at_least, flags_given

logger = logging.getLogger(__name__)

# The default spaces: the flags a practitioner tunes first, the rates as the recipe takes them (three stage lrs, or
# one-stage recipes' one). A value null leaves the flag out (the data's or the recipe's default).
SHARED_SPACE = {
    "label_smoothing_factor": {"low": 0.0, "high": 0.2},
    "augment": {"choices": [None, "trivialaugment", "randaugment"]},
    "mixup_alpha": {"choices": [0.0, 0.2, 0.4]},
}
STAGED_SPACE = {"stage_lrs": {"choices": ["3e-3,3e-4,3e-5", "1e-3,1e-4,1e-5", "3e-4,3e-5,3e-6"]}, **SHARED_SPACE}
ONE_STAGE_SPACE = {"learning_rate": {"low": 3e-5, "high": 1e-3, "log": True}, **SHARED_SPACE}
PRUNERS = ("median", "none")
# Fine-tuning flags a search cannot pass on to every trial: refused rather than silently ignored or repeated
REFUSED = {"--push_to_hub": "push the best trial's folder with scripts/push.py once the search is done",
           "--hub_strategy": "push the best trial's folder with scripts/push.py once the search is done",
           "--resume_from_checkpoint": "a stopped search continues with the same command",
           "--overwrite_output_dir": "each trial writes a new folder of its own"}
SEARCH_RECORD = "search.json"  # the fine-tuning flags the search was started with
TRIALS = "trials.md"
BEST = "best_command.txt"


class SearchError(ValueError):
    """A search that cannot run as asked: a bad space, a folder holding another search, a trial with bad flags."""


@dataclass
class SearchArguments:
    n_trials: int = field(default=10, metadata={"help": "Trials in all (finished and pruned); a second call with "
                                                "more continues the same search."})
    space: str | None = field(default=None, metadata={"help": "A JSON file: {flag: {\"choices\": [...]}} or {flag: "
                              "{\"low\": a, \"high\": b, \"log\": false, \"int\": false}}, flags without dashes. "
                              "Default: the recipe's lrs, label smoothing, augmentation policy and mixup alpha."})
    pruning: str = field(default="median", metadata={"help": "median (stop a trial whose validation accuracy after an "
                         "epoch is below the earlier trials' median there) or none."})
    search_seed: int = field(default=42, metadata={"help": "The sampler's seed (each trial trains with --seed)."})

    def __post_init__(self):
        check_at_least(self, n_trials=1)
        if self.pruning not in PRUNERS:
            raise SearchError(f"--pruning must be one of {', '.join(PRUNERS)}, got {self.pruning!r}")
        self.declared = read_space(self.space) if self.space else None  # checked before anything else

    def space_for(self, recipe: Recipe) -> dict:
        """The space searched: --space's, else the default for the recipe the trials share."""
        return self.declared or (ONE_STAGE_SPACE if recipe.one_stage else STAGED_SPACE)


def read_space(path: str) -> dict:
    """The space of `--space FILE`, each entry checked: choices, or a float or int range."""
    try:
        space = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SearchError(f"--space {path}: cannot read a JSON object: {error}") from error
    if not isinstance(space, dict) or not space:
        raise SearchError(f"--space {path}: expected a JSON object of flags, got {type(space).__name__}")
    for name, entry in space.items():
        where = f"--space {path}, {name!r}"
        if name in ("output_dir", "seed") or name.startswith("-"):
            raise SearchError(f"{where}: name a fine-tuning flag without dashes, other than output_dir and seed")
        if not isinstance(entry, dict):
            raise SearchError(f"{where}: expected {{\"choices\": [...]}} or {{\"low\": a, \"high\": b}}")
        if "choices" in entry:
            if not isinstance(entry["choices"], list) or not entry["choices"]:
                raise SearchError(f"{where}: choices must be a non-empty list")
        elif not {"low", "high"} <= set(entry) or not entry["low"] < entry["high"]:
            raise SearchError(f"{where}: a range needs low < high, got {entry}")
        elif entry.get("log") and entry["low"] <= 0:
            raise SearchError(f"{where}: a log range needs low > 0, got {entry['low']}")
    return space


def sample(trial, space: dict) -> dict:
    """One trial's values, by the space's kinds (null: the flag left out)."""
    values = {}
    for name, entry in space.items():
        if "choices" in entry:
            values[name] = trial.suggest_categorical(name, entry["choices"])
        elif entry.get("int"):
            values[name] = trial.suggest_int(name, int(entry["low"]), int(entry["high"]), log=entry.get("log", False))
        else:
            values[name] = trial.suggest_float(name, entry["low"], entry["high"], log=entry.get("log", False))
    return values


def as_flags(values: dict) -> list[str]:
    return [token for name, value in values.items() if value is not None
            for token in (f"--{name}", f"{value:.4g}" if isinstance(value, float) else str(value))]


def space_corners(space: dict) -> list[dict]:
    """Every choice and each range's ends, each in one set of values: what a trial may be given, checked once
    before the first trial."""
    corners = []
    for name, entry in space.items():
        options = entry["choices"] if "choices" in entry else [entry["low"], entry["high"]]
        corners += [{name: option} for option in options]
    return corners


class TrialReporter(TrainerCallback):
    """Reports each evaluation's validation accuracy to the optuna trial, by epoch, and stops the run (as early
    stopping does: the folder is written as a run that stopped) once optuna prunes it."""

    def __init__(self, trial):
        self.trial, self.reports, self.pruned = trial, {}, False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_accuracy" not in metrics:
            return
        epoch = round(state.epoch)
        self.reports[epoch] = metrics["eval_accuracy"]
        self.trial.report(metrics["eval_accuracy"], epoch)
        if self.trial.should_prune():
            self.pruned = control.should_training_stop = True
            logger.info("search: trial %d pruned after epoch %d (validation accuracy %.2f%%)", self.trial.number,
                        epoch, 100 * metrics["eval_accuracy"])


def base_flags(argv: list[str], search_fields: set[str]) -> tuple[list[str], str]:
    """The fine-tuning flags of the command line without the search's own and --output_dir, and that folder."""
    kept, output_dir, skip = [], None, False
    for index, token in enumerate(argv):
        if skip:
            skip = False
            continue
        name, _, inline = token.partition("=")
        if name == "--output_dir":
            output_dir = inline or argv[index + 1]
            skip = not inline
        elif name.startswith("--") and name[2:] in search_fields:
            skip = not inline
        else:
            kept.append(token)
    return kept, output_dir


def run_search(args: SearchArguments, space: dict, base: list[str], output_dir: str,
               finetune) -> "optuna.Study":  # noqa: F821
    """Trials of `space` until the study holds args.n_trials finished or pruned ones; writes trials.md and
    best_command.txt after each. `finetune(argv, callbacks) -> exit code` runs one fine-tuning."""
    import optuna

    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    record = root / SEARCH_RECORD
    started = {"flags": base, "space": space}
    if record.is_file() and json.loads(record.read_text()) != started:
        raise SearchError(f"{root} holds a search started with other flags or another space "
                          f"({record}); choose another --output_dir")
    record.write_text(json.dumps(started, indent=2))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if args.pruning == "median"
              else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name="search", storage=f"sqlite:///{root / 'search.db'}", load_if_exists=True,
                                direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.search_seed),
                                pruner=pruner)
    for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):  # a search stopped in the middle
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        logger.info("search: trial %d was stopped in the middle: marked failed, a new trial takes its place",
                    trial.number)
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    while len(study.get_trials(states=counted)) < args.n_trials:
        trial = study.ask()
        values = sample(trial, space)
        folder = root / f"trial-{trial.number:03d}"
        trial.set_user_attr("folder", folder.name)
        trial.set_user_attr("flags", as_flags(values))
        reporter = TrialReporter(trial)
        logger.info("search: trial %d: %s", trial.number, shlex.join(as_flags(values)))
        code = finetune([*base, *as_flags(values), "--output_dir", str(folder)], [reporter])
        if code >= 128:  # a stop signal (SIGTERM, Ctrl-C): the search stops as the run did
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            write_trials(study, base, root)
            raise Stopped(code - 128)
        if code == 2:  # bad flags or data: the search stops as well
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise SearchError(f"trial {trial.number} ({folder}) could not run (exit {code}); the search stops "
                              "(the same command continues it)")
        if code != 0:  # a diverged trial: a result of its flags, not a reason to stop
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif reporter.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, kept_accuracy(folder, reporter.reports))
        write_trials(study, base, root)
    write_trials(study, base, root)
    return study


def kept_accuracy(folder: Path, reports: dict[int, float]) -> float:
    """The validation accuracy of the model the run kept: its best epoch's with --load_best_model_at_end, else
    the last epoch's (never a test split's)."""
    kept = json.loads((folder / "all_results.json").read_text()).get("kept_epoch")
    return reports[round(kept["epoch"])] if kept else reports[max(reports)]


def write_trials(study, base: list[str], root: Path) -> None:
    """trials.md: one line per trial (state, validation accuracy, epochs, flags, folder); best_command.txt: the
    fine-tuning command line of the best finished trial."""
    lines = ["| trial | state | validation accuracy | epochs reported | flags | folder |", "|---|---|---|---|---|---|"]
    for trial in study.trials:
        value = f"{100 * trial.value:.2f}%" if trial.value is not None else ""
        last = (f"{100 * trial.intermediate_values[max(trial.intermediate_values)]:.2f}% at the last"
                if trial.value is None and trial.intermediate_values else "")
        lines.append(f"| {trial.number} | {trial.state.name.lower()} | {value or last} | "
                     f"{len(trial.intermediate_values)} | `{shlex.join(trial.user_attrs.get('flags', []))}` | "
                     f"{trial.user_attrs.get('folder', '')} |")
    (root / TRIALS).write_text("\n".join(lines) + "\n")
    finished = [trial for trial in study.trials if trial.state.name == "COMPLETE" and not math.isnan(trial.value)]
    if finished:
        best = max(finished, key=lambda trial: trial.value)
        command = shlex.join(["accelerate", "launch", "scripts/finetune.py", *base, *best.user_attrs["flags"]])
        (root / BEST).write_text(f"{command}\n")


def check_space(space: dict, base: list[str], output_dir: str) -> None:
    """Every value a trial may be given, parsed with the shared flags and its schedule built: a flag the recipe
    refuses (--stage_lrs with --recipe full), a mistyped name or value, is said here, naming the space's entry,
    before any data loads."""
    from training.arguments import build_schedule, parse_arguments

    for corner in space_corners(space):
        try:
            model_args, _, stage_args, training_args = parse_arguments([*base, *as_flags(corner), "--output_dir",
                                                                        output_dir])
            build_schedule(model_args, stage_args, training_args)
        except (ValueError, SystemExit) as error:
            raise SearchError(f"the space's {shlex.join(as_flags(corner)) or corner}: {error}") from error


def search_main(argv: list[str] | None = None) -> int:
    """scripts/search.py: 0; 2 for bad flags, a bad space or a folder holding another search; a trial's failure
    to start stops the search with its code."""
    import os
    import sys

    from training.arguments import chosen_recipe, parse_arguments
    from training.cli import finetune_main, setup_logging, stop_signals_raise
    from training.lock import run_lock

    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
            raise SearchError("give the search its flags on the command line (a trial adds its own to them)")
        refused = flags_given(argv, REFUSED)
        if refused:
            raise SearchError("; ".join(f"{flag}: not for a search ({REFUSED[flag]})" for flag in refused))
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise SearchError("run the search with python, in one process: each trial is one fine-tuning run, and "
                              "several processes would each sample their own trials")
        args, model_args, _, stage_args, _ = parse_arguments(argv, extra=(SearchArguments,),
                                   description="Hyperparameter search with optuna (its flags first); every "
                                               "scripts/finetune.py flag sets what the trials share; each trial is "
                                               "a run in OUTPUT/trial-NNN.")
        base, output_dir = base_flags(argv, set(SearchArguments.__dataclass_fields__))
        output_dir = output_dir or "outputs/search"
        space = args.space_for(chosen_recipe(model_args, stage_args)[0])
        check_space(space, base, output_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup_logging(None)
    try:  # one search per folder, as one run per folder: a second one is refused while the first holds the lock
        with stop_signals_raise(), run_lock(output_dir):
            study = run_search(args, space, base, output_dir, finetune_main)
    except ValueError as error:  # a SearchError, or the folder in use
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Stopped as stop:
        print(f"error: the search was stopped by {stop}; trials.md lists its trials so far, and the same command "
              "continues it", file=sys.stderr)
        return 128 + stop.signum
    print((Path(output_dir) / TRIALS).read_text(), end="")
    best = Path(output_dir) / BEST
    if best.is_file():
        print(f"best: trial {study.best_trial.number}, {100 * study.best_value:.2f}% validation accuracy:\n"
              f"{best.read_text()}", end="")
    return 0
