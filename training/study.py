"""The transfer study: the main job (a pretrained backbone, CBAM inserted, three stages) against the alternatives.

No ImageNet weights can be had here, so the study builds the transfer situation from one dataset: a plain ResNet
(no CBAM, the 7x7 ImageNet stem) is pretrained on some classes at a larger resolution and saved in torchvision's
format; then each recipe fine-tunes that file on the *other* classes, as the main job does with torchvision's
file, from the same small training set, for the same number of epochs, once per seed (the seed draws the training
sample, the validation images, the new modules' init and the order; every row of one seed shares them). Every run
is an ordinary `scripts/finetune.py` run in its own folder; the study reads their `trainer_state.json` and writes
`results.json` (every run), `results.md` (each row's mean and standard deviation over the seeds, and its paired
difference from `staged`) and `accuracy.png` beside them.

With `--toolbox true` the rows are instead the practitioners' toolbox (augmentation policies, random erasing, MixUp,
CutMix), each added to one row (`--toolbox_base`, the study's best), paired with it by seed; their results go to
`toolbox/` in the same folder, beside which the base row's runs are reused.

A finished run is reused when the study is run again with the same arguments (its folder keeps the flags it was
run with); an unfinished one resumes from its last complete checkpoint.
"""

import json
import logging
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.backbones import torchvision_state_dict
from training.checkpoints import last_complete_checkpoint
from training.inference import check_tta
from training.plots import epoch_entries, plot_study
from training.recipes import COSINE_WARMUP  # the default's warmup: the row measures it
from training.recipes import get as recipe
from training.script_args import check_at_least, comma_list, script_parser
from training.study_report import REFERENCE_ROW, ROW_STYLES, results_table, row_style, summarise

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


FIRST_SEED = 42  # `--seeds N` runs seeds 42, 43, ...; the first also seeds the pretraining
MAX_SEED_COUNT = 10  # a larger single number is taken for a seed and refused, not run as that many seeds
IDENTITY_CBAM = ("--cbam_init", "identity")
# torchvision's stem kept: its 7x7 conv and max-pool, fed the 32 px target images upsampled to the pretraining's
# size, as a user of ImageNet weights does at 224 px (the photos default)
KEPT_STEM = ("--stem", "imagenet")
# The seed recipe's new 3x3 stem at 32 px, the pretrained conv1 dropped: the default on a pretrained backbone until
# this study measured the kept stem ahead; the rows that measured it name it
CIFAR_STEM = ("--stem", "cifar")
ONE_STAGE_LR = 1e-4  # the one-stage rate the 10-epoch study found best on the pretrained backbone


def stage_lrs(name: str) -> str:
    """A staged recipe's rates as --stage_lrs takes them, e.g. 0.001,0.0001,1e-05."""
    return ",".join(f"{stage.rate:g}" for stage in recipe(name).stages)


# The tutorial's rates (1e-5 last), `staged`'s until the 50-epoch study: the rows that measured them keep them
TUTORIAL_STAGE_LRS = stage_lrs("seed-exact")
SHORT_STAGE_LRS = stage_lrs("staged")  # the last stage at 1e-4: `staged` since the 50-epoch study
WEIGHTS_FILE = "resnet18-source.pth"  # the pretrained backbone in torchvision's format, in --output_dir
# --toolbox: each option at the value its help suggests, added to the base row
TOOLBOX = {
    "trivialaugment": ("--augment", "trivialaugment"),
    "randaugment": ("--augment", "randaugment"),
    "random-erasing": ("--random_erasing", "0.25"),
    "mixup": ("--mixup_alpha", "0.2"),
    "cutmix": ("--cutmix_alpha", "1.0"),
}
TOOLBOX_DIR = "toolbox"  # in --output_dir: the toolbox's results (its runs sit beside the study's)


@dataclass
class StudyArguments:
    output_dir: str = field(default="runs/transfer_study", metadata={"help": "One folder per run, and the results."})
    dataset_name: str = field(default="uoft-cs/cifar10", metadata={"help": "The dataset both tasks are taken from."})
    source_labels: str = field(default=SOURCE_LABELS, metadata={"help": "The pretraining task's classes."})
    target_labels: str = field(default=TARGET_LABELS, metadata={"help": "The fine-tuning task's classes."})
    pretrain_epochs: int = field(default=10, metadata={"help": "Epochs of pretraining (the fast recipe's triangle)."})
    pretrain_image_size: int = field(default=64, metadata={"help": "Pretraining resolution (224: ImageNet's); the "
                                                         "kept-stem rows fine-tune at it too."})
    pretrain_train_samples: int | None = field(
        default=None, metadata={"help": "Pretraining images (a seeded sample). Default: every image of the classes "
                                "but those held out."}
    )
    pretrain_eval_samples: int = field(
        default=1000, metadata={"help": "Images of the source classes held out to watch the pretraining flatten."}
    )
    train_per_class: int = field(
        default=500, metadata={"help": "Fine-tuning images per class (a seeded sample of that many times the class "
                               "count, from the images not held out for validation); 0: all of them."}
    )
    validation_split: int = field(
        default=5000, metadata={"help": "Validation images of the target classes, held out stratified by class "
                                "(1,000 per class by default) and never trained on."}
    )
    stage_epochs: str = field(
        default="1,3,6", metadata={"help": "The three stages' lengths (the tutorial's 5,15,30 scaled down); every "
                                  "row trains for their sum."}
    )
    full_lrs: str = field(default="1e-3,1e-4", metadata={"help": "The lrs swept for one-stage full fine-tuning."})
    eval_every: int = field(
        default=1, metadata={"help": "Evaluate every N epochs, not every epoch (N must divide every stage's end): "
                             "on 5,000 validation images an evaluation costs about as much as an epoch on 2,500."}
    )
    reference: str = field(default=REFERENCE_ROW, metadata={"help": "The row every other row's paired difference is "
                                                            "taken from."})
    runs: str | None = field(default=None, metadata={"help": "Only these rows, comma-separated (pretrain is run "
                                                      "when a row needs it). Default: all."})
    tta: str = field(default="none", metadata={"help": "Every row's evaluation: none or flip (the same for all)."})
    seeds: str = field(default="3", metadata={"help": "A count N up to 10 (seeds 42, 43, ...) or a comma-separated "
                                              "list of two or more seeds: every row runs once per seed; the first "
                                              "seeds the pretraining."})
    finetune_args: str = field(default="", metadata={"help": "More flags for every run, e.g. '--bf16 false'."})
    report_only: bool = field(
        default=False, metadata={"help": "Run nothing: write the results from the runs of these flags already "
                                 "finished, each row over the seeds it has."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Rerun rows whose folder holds a run made with other flags."}
    )
    toolbox: bool = field(
        default=False, metadata={"help": f"Run the toolbox's rows instead: --toolbox_base alone and with each of "
                                 f"{', '.join(' '.join(flags) for flags in TOOLBOX.values())}; results in "
                                 f"OUTPUT/{TOOLBOX_DIR}/."}
    )
    toolbox_base: str = field(default="full-lr0.0001-kept-stem",
                              metadata={"help": "The study row the toolbox's options are added to."})

    def __post_init__(self):
        check_at_least(self, pretrain_epochs=1, pretrain_image_size=16, pretrain_eval_samples=1, train_per_class=0,
                       validation_split=1)
        if len(self.epochs or ()) != 3 or min(self.epochs) < 1:
            raise StudyError(f"--stage_epochs must be three positive integers such as 2,6,12, got {self.stage_epochs}")
        if not self.lrs or min(self.lrs) <= 0:
            raise StudyError(f"--full_lrs must be positive learning rates, got {self.full_lrs}")
        check_tta(self.tta)
        _ = self.seed_list  # parsed now: a malformed list stops the study before anything loads
        check_at_least(self, eval_every=1)
        ends = [sum(self.epochs[:i + 1]) for i in range(3)]
        if any(end % self.eval_every for end in ends):
            raise StudyError(f"--eval_every {self.eval_every} must divide every stage's end (epochs "
                             f"{', '.join(map(str, ends))}), so that each stage's end is evaluated")
        row_names = [row.name for row in study_rows(self)]
        if self.toolbox_base not in row_names:
            raise StudyError(f"--toolbox_base: unknown row {self.toolbox_base}")
        if self.reference not in row_names:
            raise StudyError(f"--reference: unknown row {self.reference}")
        names = [row.name for row in selectable_rows(self)]
        unknown = [name for name in self.selected if name not in names]
        if unknown:
            raise StudyError(f"--runs: unknown rows {', '.join(unknown)}; the rows are {', '.join(names)}")

    @property
    def epochs(self) -> list[int]:
        """--stage_epochs: the three stages' lengths."""
        return comma_list(self.stage_epochs, int, "--stage_epochs")

    @property
    def lrs(self) -> list[float]:
        """--full_lrs: the one-stage rows' rates."""
        return comma_list(self.full_lrs, float, "--full_lrs")

    @property
    def seed_list(self) -> list[int]:
        """--seeds as numbers."""
        return seed_list(self.seeds)

    @property
    def selected(self) -> list[str]:
        """The rows to run: --runs, or every selectable row."""
        return comma_list(self.runs, str, "--runs") or [row.name for row in selectable_rows(self)]

    @property
    def reference_row(self) -> str:
        """The row every other row's difference is taken from."""
        return self.toolbox_base if self.toolbox else self.reference

    @property
    def results_dir(self) -> Path:
        return Path(self.output_dir) / TOOLBOX_DIR if self.toolbox else Path(self.output_dir)

    @property
    def total_epochs(self) -> int:
        return sum(self.epochs)

    @property
    def target_classes(self) -> int:
        return len(self.target_labels.split(","))


def seed_list(text: str) -> list[int]:
    """`--seeds`: a count N, the seeds 42..42+N-1; or a list of two or more distinct non-negative seeds."""
    values = comma_list(text, int, "--seeds")
    if len(values) == 1:
        if values[0] < 1:
            raise StudyError(f"--seeds must be a count of at least 1 or a list of seeds, got {text}")
        if values[0] > MAX_SEED_COUNT:  # most likely a seed: 42 would be 42 runs of every row
            raise StudyError(f"--seeds {text} is a count: {values[0]} seeds ({FIRST_SEED} to "
                             f"{FIRST_SEED + values[0] - 1}) for every row; give a count up to {MAX_SEED_COUNT} "
                             f"(--seeds 1 is the seed {FIRST_SEED} alone) or list the seeds "
                             f"(e.g. {text},{values[0] + 1})")
        return list(range(FIRST_SEED, FIRST_SEED + values[0]))
    if min(values) < 0 or len(set(values)) != len(values):
        raise StudyError(f"--seeds must list distinct non-negative seeds, got {text}")
    return values


@dataclass(frozen=True)
class StudyRow:
    name: str
    description: str
    flags: tuple[str, ...]  # beyond the target task's data flags
    pretrained: bool = True  # starts from the pretrained backbone


def study_rows(args: StudyArguments) -> list[StudyRow]:
    """The fine-tuning rows, each a recipe as a user would run it: the same data, epochs and seed for all. On the
    pretrained backbone CBAM starts as the identity (the project's default there) unless a row says otherwise."""
    epochs, total = ",".join(map(str, args.epochs)), str(args.total_epochs)
    stages = ("--recipe", "staged", "--stage_epochs", epochs)
    staged = (*stages, "--stage_lrs", TUTORIAL_STAGE_LRS)
    kept = (*KEPT_STEM, "--image_size", str(args.pretrain_image_size))
    rows = [StudyRow("scratch-fast", "from scratch, `--recipe fast` (the paper's CBAM)",
                     ("--recipe", "fast", "--num_train_epochs", total, *FAST_AUGMENT, *PAPER_CBAM), pretrained=False)]
    rows += [StudyRow(f"full-lr{lr:g}", f"one stage, everything at Adam {lr:g}",
                      ("--recipe", "full", "--num_train_epochs", total, "--learning_rate", f"{lr:g}", *IDENTITY_CBAM,
                       *CIFAR_STEM))
             for lr in args.lrs]
    rows += [
        StudyRow("fine_tune", "fastai's `fine_tune`: new modules, then everything (discriminative lrs), one-cycle",
                 ("--stages_file", str(Path(args.output_dir) / "fine_tune_stages.json"), *IDENTITY_CBAM, *CIFAR_STEM)),
        StudyRow("seed-exact", "the tutorial exactly: its stages, its stem frozen until stage 3, the paper's CBAM",
                 ("--recipe", "seed-exact", "--stage_epochs", epochs, *PAPER_CBAM)),
        StudyRow(REFERENCE_ROW, "the tutorial's stages and rates (1e-3, 1e-4, 1e-5) with a new CIFAR stem at 32 px "
                 "(training from stage 1)",
                 (*staged, *IDENTITY_CBAM, *CIFAR_STEM)),
        StudyRow("staged-paper-cbam", "`staged` with the paper's CBAM init", (*staged, *PAPER_CBAM, *CIFAR_STEM)),
        StudyRow("staged-no-cbam", "`staged` without CBAM (`--cbam_placement none`)",
                 (*staged, "--cbam_placement", "none", *CIFAR_STEM)),
        StudyRow("staged-kept-stem", f"`staged` keeping the pretrained 7x7 stem, images upsampled to "
                 f"{args.pretrain_image_size} px", (*staged, *IDENTITY_CBAM, *kept)),
        StudyRow("staged-lr1e-4-kept-stem", "`staged-kept-stem` with the last stage at 1e-4, not 1e-5 (`--recipe "
                 "staged` since the 50-epoch study)", (*stages, "--stage_lrs", SHORT_STAGE_LRS, *IDENTITY_CBAM, *kept)),
    ]
    rows += [StudyRow(f"full-lr{lr:g}-kept-stem", f"one stage at Adam {lr:g}, keeping the pretrained stem",
                      ("--recipe", "full", "--num_train_epochs", total, "--learning_rate", f"{lr:g}", *IDENTITY_CBAM,
                       *kept))
             for lr in args.lrs]
    rows += [
        StudyRow("staged-train-bn-kept-stem", "`staged-kept-stem` with the frozen groups' BatchNorm scale and shift "
                 "trained (`--train_bn`, fastai's and Lightning's default)",
                 (*staged, "--train_bn", "true", *IDENTITY_CBAM, *kept)),
        StudyRow(f"full-cosine-lr{ONE_STAGE_LR:g}-kept-stem", f"one stage at Adam {ONE_STAGE_LR:g} with "
                 f"{COSINE_WARMUP:.0%} warmup and cosine decay (the HF example's and timm's shape)",
                 ("--recipe", "full", "--num_train_epochs", total, "--learning_rate", f"{ONE_STAGE_LR:g}",
                  "--lr_scheduler_type", "cosine", "--warmup_steps", f"{COSINE_WARMUP:g}", *IDENTITY_CBAM, *kept)),
    ]
    return rows + [without_cbam(row) for row in rows if row.name.endswith("-kept-stem")]


def without_cbam(row: StudyRow) -> StudyRow:
    """The same recipe on the plain pretrained ResNet (`--cbam_placement none`): what CBAM adds to it, paired."""
    flags = list(row.flags)
    if "--cbam_init" in flags:
        del flags[flags.index("--cbam_init"):flags.index("--cbam_init") + 2]
    return StudyRow(f"{row.name}-no-cbam", f"`{row.name}` without CBAM", (*flags, "--cbam_placement", "none"))


def toolbox_rows(args: StudyArguments) -> list[StudyRow]:
    """The base row, then the base row with each of the toolbox's options."""
    base = next(row for row in study_rows(args) if row.name == args.toolbox_base)
    return [base] + [StudyRow(f"{base.name}+{name}", f"`{base.name}` with `{' '.join(flags)}`", (*base.flags, *flags))
                     for name, flags in TOOLBOX.items()]


def selectable_rows(args: StudyArguments) -> list[StudyRow]:
    return toolbox_rows(args) if args.toolbox else study_rows(args)


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
             "--validation_split", str(args.pretrain_eval_samples), "--seed", str(args.seed_list[0])]
    if args.pretrain_train_samples:
        flags += ["--max_train_samples", str(args.pretrain_train_samples)]
    return flags + shlex.split(args.finetune_args)


def row_flags(args: StudyArguments, row: StudyRow, seed: int) -> list[str]:
    pretrained = str(Path(args.output_dir) / WEIGHTS_FILE) if row.pretrained else "none"
    flags = ["--dataset_name", args.dataset_name, "--labels", args.target_labels, "--validation_split",
             str(args.validation_split), "--backbone_weights", pretrained, "--tta", args.tta, "--seed", str(seed),
             *row.flags]
    if args.eval_every > 1:  # the Trainer's own schedule: every N epochs as a fraction of the run's steps
        flags += ["--eval_strategy", "steps", "--eval_steps", f"{args.eval_every / args.total_epochs:g}"]
    if args.train_per_class:
        flags += ["--max_train_samples", str(args.train_per_class * args.target_classes)]
    return flags + shlex.split(args.finetune_args)


def save_torchvision_weights(run: Path, out: Path) -> str:
    """A trained plain ResNet (`--cbam_placement none`) saved as torchvision's ResNet file: the stand-in for
    ImageNet's weights that `--backbone_weights FILE` loads exactly as it loads torchvision's own. Returns what was
    written, in words."""
    import torch
    import torchvision

    from modeling_resnet_cbam import ResNetCBAMForImageClassification

    model = ResNetCBAMForImageClassification.from_pretrained(run)
    state_dict = torchvision_state_dict(model)
    resnet = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, model.config.depths,
                                              num_classes=model.config.num_labels)
    resnet.load_state_dict(state_dict)  # strict: every tensor of torchvision's ResNet, and nothing else
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, out)
    return (f"{out}: torchvision ResNet with depths {model.config.depths}, {len(state_dict)} tensors, "
            f"{sum(t.numel() for t in resnet.parameters()):,} parameters ({model.config.num_labels}-class fc)")


def run_once(name: str, flags: list[str], args: StudyArguments, finetune) -> Path:
    """One run into output_dir/name through `finetune(argv) -> exit code`: reused when it finished with the same
    flags, resumed when it stopped part-way, refused when the folder holds a run made with other flags."""
    folder = Path(args.output_dir) / name
    record = folder / STUDY_RUN
    argv = [*flags, "--output_dir", str(folder)]
    extra = []
    if finished(name, flags, args):
        logger.info("study: %s finished before with the same flags: reused", name)
        return folder
    if record.is_file():
        saved = json.loads(record.read_text())["argv"]
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


def finished(name: str, flags: list[str], args: StudyArguments) -> Path | None:
    """output_dir/name when it holds a finished run made with these flags."""
    folder = Path(args.output_dir) / name
    record = folder / STUDY_RUN
    if (record.is_file() and json.loads(record.read_text())["argv"] == [*flags, "--output_dir", str(folder)]
            and (folder / "all_results.json").is_file()):
        return folder
    return None


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
    """Pretrain once and save the backbone in torchvision's format, then run every selected row once per seed (all
    rows of one seed before the next seed), writing results.json, results.md and accuracy.png after every run, so
    that a stopped study leaves what it finished; returns the results. `finetune(argv) -> exit code` runs one
    fine-tuning (training.cli.finetune_main). With --report_only, the finished runs only."""
    out = Path(args.output_dir)
    if args.report_only and not out.is_dir():
        raise StudyError(f"--report_only: {out} is not a folder of the study's runs; nothing was written")
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for row in selectable_rows(args) if row.name in args.selected]
    if not args.report_only:
        (out / "fine_tune_stages.json").write_text(json.dumps(fine_tune_stages(args), indent=2))
    results = {"arguments": asdict(args), "seeds": args.seed_list, "reference": args.reference_row, "runs": []}

    def run(name: str, flags: list[str]) -> Path | None:
        return finished(name, flags, args) if args.report_only else run_once(name, flags, args, finetune)

    if any(row.pretrained for row in rows) and (folder := run("pretrain", pretrain_flags(args))):
        results["pretrain"] = run_result("pretrain", "plain ResNet18, ImageNet stem, source classes", folder,
                                         [args.pretrain_epochs])
        weights, model = out / WEIGHTS_FILE, folder / "model.safetensors"
        # written once per pretraining: a study restored from its records (docs/runs) has the file, not the model
        if not args.report_only and model.is_file() and (not weights.is_file() or
                                                         weights.stat().st_mtime < model.stat().st_mtime):
            logger.info("study: %s", save_torchvision_weights(folder, weights))
    for seed in args.seed_list:
        for row in rows:
            if folder := run(f"seed{seed}/{row.name}", row_flags(args, row, seed)):
                results["runs"].append({**run_result(row.name, row.description, folder, stage_ends_of(row, args)),
                                        "seed": seed})
                write_results(results, rows, args)
    if args.report_only and not results["runs"]:
        raise StudyError(f"--report_only: {out} holds no finished run of these flags (rows "
                         f"{', '.join(args.selected)}, seeds {', '.join(map(str, args.seed_list))}); nothing was "
                         "written")
    logger.info("study: results in %s (results.json, results.md, accuracy.png)", args.results_dir)
    return results


def write_results(results: dict, rows: list[StudyRow], args: StudyArguments) -> None:
    out = args.results_dir
    out.mkdir(parents=True, exist_ok=True)
    results["rows"] = summarise(results["runs"], [row.name for row in rows], args.reference_row)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_table(results))
    plot_study(results["rows"], out / "accuracy.png",
               title=f"Fine-tuning on {args.target_labels.replace(',', ', ')}: validation accuracy, mean over "
                     f"seeds (band: one standard deviation)", style=row_style, styles_said=ROW_STYLES)


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
