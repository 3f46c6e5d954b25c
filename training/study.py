"""The transfer study: the main job (a pretrained backbone, CBAM inserted, three stages) against the alternatives.

No ImageNet weights can be had here, so the study builds the transfer situation from one dataset: a plain ResNet
(no CBAM, the 7x7 ImageNet stem) is pretrained on some classes at a larger resolution; then each recipe fine-tunes
it on the *other* classes at 32 px with the CIFAR stem, as the main job does with torchvision's file (`conv1`
dropped, CBAM and the head new), from the same small training set, for the same number of epochs, with the same
seed. Every run is an ordinary `scripts/finetune.py` run in its own folder; the study reads their
`trainer_state.json` and writes `results.json`, `results.md` and `accuracy.png` beside them.

A finished run is reused when the study is run again with the same arguments (its folder keeps the flags it was
run with); an unfinished one resumes from its last complete checkpoint.
"""

import json
import logging
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.checkpoints import last_complete_checkpoint
from training.plots import epoch_entries, plot_study
from training.script_args import check_at_least, comma_list, script_parser

logger = logging.getLogger(__name__)

STUDY_RUN = "study_run.json"  # in each run's folder: the flags the study ran it with
SOURCE_LABELS = "airplane,automobile,bird,cat,deer"
TARGET_LABELS = "dog,frog,horse,ship,truck"
# The study's two `--recipe fast` runs (the pretraining and the scratch row) augment, as they were run: fast's own
# default, no augmentation, was measured on 1-2 epochs of 45,000 images, not on these longer runs of fewer.
FAST_AUGMENT = ("--augment", "crop-flip")
# Every row names its CBAM init: on pretrained weights the default is now the identity, and these rows were measured
# (docs/runs/transfer-study) with the paper's unless they say otherwise.
PAPER_CBAM = ("--cbam_init", "default")


class StudyError(ValueError):
    """A study that cannot run as asked, or a run of it that failed (`code`: its exit code), with what to do."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


@dataclass
class StudyArguments:
    output_dir: str = field(default="runs/transfer_study", metadata={"help": "One folder per run, and the results."})
    dataset_name: str = field(default="uoft-cs/cifar10", metadata={"help": "The dataset both tasks are taken from."})
    source_labels: str = field(default=SOURCE_LABELS, metadata={"help": "The pretraining task's classes."})
    target_labels: str = field(default=TARGET_LABELS, metadata={"help": "The fine-tuning task's classes."})
    pretrain_epochs: int = field(default=6, metadata={"help": "Epochs of pretraining (the fast recipe's triangle)."})
    pretrain_image_size: int = field(default=64, metadata={"help": "Pretraining resolution (224: ImageNet's)."})
    pretrain_train_samples: int | None = field(
        default=None, metadata={"help": "Pretraining images (a seeded sample). Default: every image of the classes."}
    )
    train_per_class: int = field(
        default=500, metadata={"help": "Fine-tuning images per class (a seeded sample of that many times the class "
                               "count); 0: all of them."}
    )
    eval_samples: int = field(default=1000, metadata={"help": "Validation images of each fine-tuning run."})
    stage_epochs: str = field(
        default="1,3,6", metadata={"help": "The three stages' lengths (the tutorial's 5,15,30 scaled down); every "
                                  "row trains for their sum."}
    )
    full_lrs: str = field(default="1e-3,1e-4", metadata={"help": "The lrs swept for one-stage full fine-tuning."})
    runs: str | None = field(default=None, metadata={"help": "Only these rows, comma-separated (pretrain is run "
                                                      "when a row needs it). Default: all."})
    tta: str = field(default="none", metadata={"help": "Every row's evaluation: none or flip (the same for all)."})
    seed: int = field(default=42, metadata={"help": "The seed of every run (data sample, init, order)."})
    finetune_args: str = field(default="", metadata={"help": "More flags for every run, e.g. '--bf16 false'."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Rerun rows whose folder holds a run made with other flags."}
    )

    def __post_init__(self):
        check_at_least(self, pretrain_epochs=1, pretrain_image_size=16, train_per_class=0, eval_samples=1, seed=0)
        self.epochs = comma_list(self.stage_epochs, int, "--stage_epochs")
        if len(self.epochs) != 3 or min(self.epochs) < 1:
            raise StudyError(f"--stage_epochs must be three positive integers such as 2,6,12, got {self.stage_epochs}")
        self.lrs = comma_list(self.full_lrs, float, "--full_lrs")
        if not self.lrs or min(self.lrs) <= 0:
            raise StudyError(f"--full_lrs must be positive learning rates, got {self.full_lrs}")
        if self.tta not in ("none", "flip"):
            raise StudyError(f"--tta must be none or flip, got {self.tta!r}")
        names = [row.name for row in study_rows(self)]
        self.selected = comma_list(self.runs, str, "--runs") or names
        unknown = [name for name in self.selected if name not in names]
        if unknown:
            raise StudyError(f"--runs: unknown rows {', '.join(unknown)}; the rows are {', '.join(names)}")

    @property
    def total_epochs(self) -> int:
        return sum(self.epochs)

    @property
    def target_classes(self) -> int:
        return len(self.target_labels.split(","))


@dataclass(frozen=True)
class StudyRow:
    name: str
    description: str
    flags: tuple[str, ...]  # beyond the target task's data flags
    pretrained: bool = True  # starts from the pretrained backbone


def study_rows(args: StudyArguments) -> list[StudyRow]:
    """The fine-tuning rows, each a recipe as a user would run it: the same data, epochs and seed for all."""
    epochs, total = ",".join(map(str, args.epochs)), str(args.total_epochs)
    rows = [
        StudyRow("scratch-fast", "from scratch, `--recipe fast` (the paper's CBAM)",
                 ("--recipe", "fast", "--num_train_epochs", total, *FAST_AUGMENT, *PAPER_CBAM), pretrained=False),
        StudyRow("scratch-full", "from scratch, `--recipe full` (Adam 1e-3; the paper's CBAM)",
                 ("--recipe", "full", "--num_train_epochs", total, *PAPER_CBAM), pretrained=False),
    ]
    rows += [StudyRow(f"full-lr{lr:g}", f"one stage, everything at Adam {lr:g} (the paper's CBAM)",
                      ("--recipe", "full", "--num_train_epochs", total, "--learning_rate", f"{lr:g}", *PAPER_CBAM))
             for lr in args.lrs]
    rows += [
        StudyRow("seed-exact", "the tutorial's stages (its stem frozen until stage 3; the paper's CBAM)",
                 ("--recipe", "seed-exact", "--stage_epochs", epochs, *PAPER_CBAM)),
        StudyRow("staged", "the project's stages (the new stem trains from stage 1; the paper's CBAM)",
                 ("--recipe", "staged", "--stage_epochs", epochs, *PAPER_CBAM)),
        StudyRow("staged-identity", "`staged`, CBAM starting as the identity (now the default on pretrained weights)",
                 ("--recipe", "staged", "--stage_epochs", epochs, "--cbam_init", "identity")),
        StudyRow("fine_tune", "fastai's `fine_tune`: new modules, then everything (discriminative lrs), one-cycle "
                 "(the paper's CBAM)",
                 ("--stages_file", str(Path(args.output_dir) / "fine_tune_stages.json"), *PAPER_CBAM)),
        StudyRow("staged-no-cbam", "`staged` without CBAM (`--cbam_placement none`)",
                 ("--recipe", "staged", "--stage_epochs", epochs, "--cbam_placement", "none")),
    ]
    return rows


def fine_tune_stages(args: StudyArguments) -> list[dict]:
    """fastai's `fine_tune(epochs, base_lr=2e-3)` in this project's groups: the new modules alone for the first
    stage's epochs at 2e-3, then everything for the rest, at base_lr / 2 for the new modules and the body's halves
    at 1/10 and 1/100 of it (fastai's `slice(lr / 100, lr)`); each stage a one-cycle: 25% warmup from 1/25 of the
    peak, then cosine to 0 (fastai's `fit_one_cycle` defaults)."""
    one_cycle = {"shape": "cosine", "warmup": 0.25, "start": 0.04}
    new = dict.fromkeys(("stem", "cbam", "head"))
    return [
        {"name": "new modules", "epochs": args.epochs[0], "lr": dict.fromkeys(new, 2e-3), **one_cycle},
        {"name": "everything", "epochs": args.total_epochs - args.epochs[0],
         "lr": {"layer1": 1e-5, "layer2": 1e-5, "layer3": 1e-4, "layer4": 1e-4, **dict.fromkeys(new, 1e-3)},
         **one_cycle},
    ]


def pretrain_flags(args: StudyArguments) -> list[str]:
    flags = ["--dataset_name", args.dataset_name, "--labels", args.source_labels, "--image_size",
             str(args.pretrain_image_size), "--stem", "imagenet", "--cbam_placement", "none", "--recipe", "fast",
             *FAST_AUGMENT, "--num_train_epochs", str(args.pretrain_epochs), "--backbone_weights", "none",
             "--seed", str(args.seed)]
    if args.pretrain_train_samples:
        flags += ["--max_train_samples", str(args.pretrain_train_samples)]
    return flags + shlex.split(args.finetune_args)


def row_flags(args: StudyArguments, row: StudyRow) -> list[str]:
    pretrained = str(Path(args.output_dir) / "pretrain") if row.pretrained else "none"
    flags = ["--dataset_name", args.dataset_name, "--labels", args.target_labels, "--max_eval_samples",
             str(args.eval_samples), "--backbone_weights", pretrained, "--tta", args.tta, "--seed", str(args.seed),
             *row.flags]
    if args.train_per_class:
        flags += ["--max_train_samples", str(args.train_per_class * args.target_classes)]
    return flags + shlex.split(args.finetune_args)


def run_once(name: str, flags: list[str], args: StudyArguments, finetune) -> Path:
    """One run into output_dir/name through `finetune(argv) -> exit code`: reused when it finished with the same
    flags, resumed when it stopped part-way, refused when the folder holds a run made with other flags."""
    folder = Path(args.output_dir) / name
    record = folder / STUDY_RUN
    argv = [*flags, "--output_dir", str(folder)]
    extra = []
    if record.is_file():
        saved = json.loads(record.read_text())["argv"]
        if saved == argv and (folder / "all_results.json").is_file():
            logger.info("study: %s finished before with the same flags: reused", name)
            return folder
        if saved != argv and not args.overwrite_output_dir:
            raise StudyError(f"{folder} holds a run made with other flags ({shlex.join(saved)}); rerun it with "
                             "--overwrite_output_dir, or choose another --output_dir")
        if saved == argv and last_complete_checkpoint(folder):
            extra = ["--resume_from_checkpoint", "last"]
            logger.info("study: %s stopped part-way: resuming from its last checkpoint", name)
    if args.overwrite_output_dir and not extra:
        extra = ["--overwrite_output_dir"]
    logger.info("study: %s: finetune %s", name, shlex.join(argv + extra))
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"argv": argv}, indent=2))  # first, so that a stopped run can be resumed
    code = finetune(argv + extra)
    if code != 0:
        raise StudyError(f"the run {name} failed (exit {code}): its folder {folder} keeps what it wrote; run the "
                         "study again to resume it", code)
    record.write_text(json.dumps({"argv": argv}, indent=2))  # again: --overwrite_output_dir cleared the folder
    return folder


def run_result(name: str, description: str, folder: Path, stage_ends: list[int]) -> dict:
    """What the table and plot need from a finished run's folder: accuracy per epoch, at each stage's end, final,
    the wall time, and the image counts."""
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    results = json.loads((folder / "all_results.json").read_text())
    entries = epoch_entries(history)
    epochs = [{"epoch": round(entry["epoch"]), "stage": entry["stage"], "accuracy": entry["eval_accuracy"]}
              for entry in entries]
    by_epoch = {entry["epoch"]: entry["accuracy"] for entry in epochs}
    split = results["eval_split"]
    facts = json.loads((folder / STUDY_RUN).read_text())
    return {
        "name": name,
        "description": description,
        "command": "accelerate launch scripts/finetune.py " + shlex.join(facts["argv"]),
        "epochs": epochs,
        "stage_ends": stage_ends,
        "accuracy_at_stage_ends": [by_epoch.get(epoch) for epoch in stage_ends],
        "final_accuracy": results[f"{split}_accuracy"],
        "best_accuracy": max(by_epoch.values()),
        "eval_split": split,
        # each epoch's logged time (training and its evaluation), summed: whole even for a run that was resumed
        "wall_seconds": sum(entry["epoch_time"] for entry in entries),
        "split_sizes": results["split_sizes"],
    }


def stage_ends_of(row: StudyRow, args: StudyArguments) -> list[int]:
    """The epochs at which a row's stages end (one stage: the last epoch)."""
    if "--stage_epochs" in row.flags:
        return [sum(args.epochs[:i + 1]) for i in range(3)]
    if "--stages_file" in row.flags:
        return [args.epochs[0], args.total_epochs]
    return [args.total_epochs]


def run_study(args: StudyArguments, finetune) -> dict:
    """Pretrain once, run every selected row, write results.json, results.md and accuracy.png; returns the
    results. `finetune(argv) -> exit code` runs one fine-tuning (training.cli.finetune_main)."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for row in study_rows(args) if row.name in args.selected]
    (out / "fine_tune_stages.json").write_text(json.dumps(fine_tune_stages(args), indent=2))
    results = {"arguments": asdict(args), "runs": []}
    if any(row.pretrained for row in rows):
        folder = run_once("pretrain", pretrain_flags(args), args, finetune)
        results["pretrain"] = run_result("pretrain", "plain ResNet18, ImageNet stem, source classes", folder,
                                         [args.pretrain_epochs])
    for row in rows:
        folder = run_once(row.name, row_flags(args, row), args, finetune)
        results["runs"].append(run_result(row.name, row.description, folder, stage_ends_of(row, args)))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_table(results))
    plot_study(results["runs"], out / "accuracy.png",
               title=f"Fine-tuning on {args.target_labels.replace(',', ', ')}: validation accuracy")
    logger.info("study: results in %s (results.json, results.md, accuracy.png)", out)
    return results


def results_table(results: dict) -> str:
    """The Markdown table of the rows: accuracy at each stage's end, final and best accuracy, wall time."""
    lines = ["| row | recipe | after stage 1 | after stage 2 | final | best | time (train + eval) |",
             "|---|---|---|---|---|---|---|"]
    for run in results["runs"]:
        ends = [f"{100 * a:.2f}% (ep {e})" if a is not None else "" for a, e in
                zip(run["accuracy_at_stage_ends"], run["stage_ends"], strict=True)][:-1]
        ends += [""] * (2 - len(ends))
        lines.append(f"| {run['name']} | {run['description']} | {' | '.join(ends)} | "
                     f"**{100 * run['final_accuracy']:.2f}%** | {100 * run['best_accuracy']:.2f}% | "
                     f"{run['wall_seconds'] / 60:.1f} min |")
    pretrain = results.get("pretrain")
    if pretrain:
        lines.append("")
        lines.append(f"Pretraining: {100 * pretrain['final_accuracy']:.2f}% validation accuracy after "
                     f"{pretrain['stage_ends'][-1]} epochs, {pretrain['wall_seconds'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def study_main(argv: list[str] | None = None) -> int:
    """scripts/transfer_study.py: exit 2 for bad flags or a folder that holds other runs, else the failed run's code."""
    from training.cli import finetune_main, setup_logging

    try:
        (args,) = script_parser(StudyArguments).parse_args_into_dataclasses(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup_logging(None)
    try:
        run_study(args, finetune_main)
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    return 0
