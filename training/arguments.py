"""Command-line arguments of the fine-tuning script, as dataclasses for HfArgumentParser, each checking itself.

Every value is parsed and validated when its dataclass is built, so a mistyped flag stops the script before
anything loads. Every `TrainingArguments` field is classified in training/trainer_fields.py: read by this project's
recipe, passed to the Trainer as it is, or refused when set (the Trainer would ignore or contradict it here).
"""

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments

from modeling_resnet_cbam import ResNetCBAMConfig
from training import recipes, stages
from training.backbones import TORCHVISION_ARCHITECTURES
from training.data import DataArguments
from training.hardware import default_num_workers, default_precision, launch
from training.hub import HUB_STRATEGIES
from training.inference import check_tta
from training.onnx_export import require_onnx
from training.optimizers import OptimizerSpec
from training.script_args import check_at_least, comma_list, flag_value, read_run_file, script_parser
from training.trainer_fields import REFUSED_FIELDS, arrange_help, refused_epilog, was_set


@dataclass
class ArchitectureArguments:
    _argument_group_name = "model (resnet-cbam)"

    architecture: str | None = field(default=None, metadata={"help": "resnet18/34/50/101/152: its depths and block "
                                     "type."})
    depths: str | None = field(default=None, metadata={"help": "Blocks per stage: 2,2,2,2 (the default), 3,4,6,3."})
    layer_type: str | None = field(default=None, metadata={"help": "basic (the default) or bottleneck (ResNet50 "
                                                          "and up)."})
    stem: str | None = field(default=None, metadata={"help": "cifar (3x3, stride 1) or imagenet (7x7, stride 2, "
                                                    "max-pool). Default: imagenet; cifar for CIFAR-sized images from "
                                                    "random weights or in seed-exact."})
    cbam_placement: str = field(default="stage", metadata={"help": "stage (after layer1..4), block, or none "
                                                           "(the plain ResNet: no CBAM)."})
    cbam_init: str | None = field(default=None, metadata={"help": "default (the paper's) or identity (behind a "
                                  "gate at 0). Default: identity on a pretrained backbone."})
    zero_init_residual: bool = field(default=False, metadata={"help": "Each basic block's last BatchNorm scale starts "
                                     "at 0: the block starts as its shortcut."})
    cbam_reduction: int = field(default=16, metadata={"help": "Channel-attention MLP reduction ratio."})
    cbam_kernel_size: int = field(default=7, metadata={"help": "Spatial-attention kernel size."})

    def __post_init__(self):
        try:
            depths = comma_list(self.depths, int, "--depths")
        except ValueError:
            depths = []
        if self.depths is not None and len(depths) != 4:
            raise ValueError(f"--depths must be four integers such as 2,2,2,2, got {self.depths!r}")
        if self.architecture is not None:
            if self.architecture not in NAMED_ARCHITECTURES:
                raise ValueError(f"--architecture must be one of {', '.join(NAMED_ARCHITECTURES)}, got "
                                 f"{self.architecture!r}")
            given = [f"--{name}" for name in ("depths", "layer_type") if getattr(self, name) is not None]
            if given:
                raise ValueError(f"--architecture {self.architecture} sets the depths and the block type: leave out "
                                 f"{' and '.join(given)}")
        ResNetCBAMConfig(**self.config_fields)  # a ValueError naming the field that cannot build a model

    @property
    def config_fields(self) -> dict:
        """The architecture flags given, as the config's fields (--architecture as its depths and block type); stem
        and cbam_init, when not given, are chosen from the data and the weights (training/defaults.py)."""
        given = {name: getattr(self, name) for name in ARCHITECTURE_FLAGS}
        given["depths"] = comma_list(self.depths, int, "--depths")
        if self.architecture is not None:
            given["layer_type"], given["depths"] = NAMED_ARCHITECTURES[self.architecture]
        return {name: value for name, value in given.items() if value is not None}


# the config's own names (--architecture names a combination of two of them)
ARCHITECTURE_FLAGS = tuple(spec.name for spec in dataclasses.fields(ArchitectureArguments)
                           if spec.name != "architecture")
NAMED_ARCHITECTURES = {name: (layer_type, list(depths)) for (layer_type, depths), name in
                       TORCHVISION_ARCHITECTURES.items()}


@dataclass
class ModelArguments(ArchitectureArguments):
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved ResNetCBAM (folder or Hub id) to start from."}
    )
    backbone_weights: str = field(
        default="torchvision",
        metadata={"help": "torchvision (ImageNet), a timm Hub id, a .safetensors/.pth file, a "
                          "folder saved here, or none."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.model_name_or_path:
            given = [f"--{f.name}" for f in dataclasses.fields(ArchitectureArguments) if was_set(self, f)]
            given += ["--backbone_weights"] if self.backbone_weights not in ("torchvision", "none") else []
            if given:
                raise ValueError(f"{', '.join(given)} cannot change a saved model: --model_name_or_path "
                                 f"{self.model_name_or_path} keeps its own architecture and weights")

    @property
    def pretrained_backbone(self) -> bool:
        """Whether a new model starts from pretrained backbone weights."""
        return not self.model_name_or_path and self.backbone_weights.lower() != "none"

    @property
    def random_weights(self) -> bool:
        """Whether the model starts from random weights: neither a saved model nor a backbone."""
        return is_random_start(self.backbone_weights, self.model_name_or_path)


def is_random_start(backbone_weights: str | None, model_name_or_path: str | None) -> bool:
    """--backbone_weights none without --model_name_or_path (absent flags: their defaults)."""
    return not model_name_or_path and str(backbone_weights or ModelArguments.backbone_weights).lower() == "none"


@dataclass
class StageArguments:
    _argument_group_name = "stages (resnet-cbam)"

    recipe: str = field(
        default=None, metadata={"help": recipes.help_text()}
    )
    stage_epochs: str | None = field(default=None, metadata={"help": "Stage lengths in epochs, e.g. 5,15,30."})
    stage_lrs: str | None = field(default=None, metadata={"help": "One lr per stage, e.g. 1e-3,1e-4,1e-5."})
    stages_file: str | None = field(default=None, metadata={"help": "A JSON list of stages (overrides recipe)."})
    bn_policy: str = field(
        default="train", metadata={"help": "train (frozen groups' BatchNorm statistics update) or frozen (in "
                                   "eval mode)."}
    )
    train_bn: bool = field(
        default=False, metadata={"help": "Also train the frozen groups' BatchNorm scale and shift (fastai's "
                                 "train_bn), at the stage's lowest rate; their convolutions stay frozen."}
    )
    scale_lr_with_batch: bool = field(
        default=False, metadata={"help": "Multiply every stage's lr by global batch / the recipe's "
                                 f"({recipes.batch_text()}): the linear scaling rule."}
    )

    def __post_init__(self):
        if self.recipe is not None:
            recipes.get(self.recipe)  # an unknown name is refused with the list
        if self.bn_policy not in ("train", "frozen"):
            raise ValueError(f"--bn_policy must be 'train' or 'frozen', got {self.bn_policy!r}")
        _ = self.epochs, self.lrs  # parsed now: a malformed list stops the script before anything loads

    @property
    def epochs(self) -> list[int] | None:
        """--stage_epochs as numbers (None: not given)."""
        return comma_list(self.stage_epochs, int, "--stage_epochs")

    @property
    def lrs(self) -> list[float] | None:
        """--stage_lrs as numbers (None: not given)."""
        return comma_list(self.stage_lrs, float, "--stage_lrs")


BEST_MODEL_METRICS = {"accuracy": True, "loss": False}  # --metric_for_best_model: whether higher is better
LR_SHAPES = {"constant": "constant", "constant_with_warmup": "constant", "cosine": "cosine", "linear": "linear",
             "cosine_with_min_lr": "cosine"}


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """TrainingArguments with the tutorial recipe's defaults (batch 64, Adam, constant rates, no clipping, an
    evaluation and a save per epoch), the speed defaults of the hardware, and the unsupported flags refused."""

    _argument_group_name = "training (transformers TrainingArguments, with this recipe's defaults)"

    output_dir: str = field(default="outputs/resnet-cbam", metadata={"help": "Where checkpoints and the model go."})
    num_train_epochs: float | None = field(
        default=None, metadata={"help": "Default: the stages' sum; if given, it must equal it."}
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": f"The peak lr of the one-stage recipes ({recipes.one_stage_lrs()}). "
                                "Staged recipes take --stage_lrs."}
    )
    lr_scheduler_type: str | None = field(
        default=None, metadata={"help": "The lr shape in each stage: constant, cosine, linear. Default: "
                                "the recipe's (constant; fast: its triangle)."}
    )
    warmup_steps: float = field(
        default=0, metadata={"help": "Linear warmup at each stage's start: steps, or a fraction below 1."}
    )
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Images per step on each process."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Images per evaluation step."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm; 0: none."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: epoch (default), steps, no."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint: epoch, steps, no."})
    save_total_limit: int | None = 2
    logging_steps: float = field(default=100, metadata={"help": "Log the loss every N steps; a non-finite loss "
                                 "is also found at these steps (or sooner, at an evaluation or checkpoint)."})
    logging_nan_inf_filter: bool = False  # refused: see REFUSED_FIELDS
    remove_unused_columns: bool = False  # the image column must reach the set_transform
    dataloader_num_workers: int = field(default_factory=default_num_workers)
    dataloader_persistent_workers: bool = field(default=False, metadata={"help": "Keep the loader workers "
                                                "between epochs. Off: a worker's random state (the augmentation's) "
                                                "then starts each epoch from the run's RNG, which a checkpoint "
                                                "restores, so a resumed run augments as the uninterrupted one did; "
                                                "a persistent worker carries it across epochs, and a resume cannot."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 autocast. Default: on where bf16 is native (Ampere+, "
                                "AVX512-BF16, AMX)."}
    )
    fp16: bool | None = field(
        default=None, metadata={"help": "fp16 autocast, loss scaling. Default: on GPUs without bf16 (T4, "
                                "V100); slow on a CPU."}
    )
    channels_last: bool | None = field(
        default=None, metadata={"help": "Default: on with bf16 or on a GPU."}
    )
    data_on_device: bool | None = field(
        default=None, metadata={"help": "Decode images <= 64x64 once onto the training device, augment there. "
                                "Default: on for them."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a previous run in --output_dir (deleted once the new run "
                                 "has loaded)."}
    )
    allow_changed_run: bool = field(
        default=False, metadata={"help": "Resume although the run's defining flags changed (the differences "
                                 "are logged and in the card)."}
    )
    ema_decay: float = field(
        default=0.0, metadata={"help": "Evaluate and save an exponential moving average of the weights "
                               "with this decay (e.g. 0.99); 0 (default): none."}
    )
    tta: str = field(
        default="none", metadata={"help": "Test-time augmentation: none (default) or flip (each image with "
                                  "its mirror)."}
    )
    mixup_alpha: float = field(
        default=0.0, metadata={"help": "MixUp: batch and labels blended with a shuffled copy, weight ~ "
                               "Beta(alpha, alpha) (e.g. 0.2); 0 (default): off."}
    )
    cutmix_alpha: float = field(
        default=0.0, metadata={"help": "CutMix: a box from another image, labels by area ~ Beta(alpha, "
                               "alpha) (e.g. 1.0); 0 (default): off. Both: one a batch."}
    )
    metric_for_best_model: str | None = field(
        default=None, metadata={"help": "accuracy (default) or loss on validation: what "
                                "--load_best_model_at_end and --early_stopping_patience watch."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without a new best, counted in the "
                                "last stage only (earlier ones plateau by design). Default: never."}
    )
    hub_strategy: str = field(
        default="end", metadata={"help": "What --push_to_hub sends after each checkpoint, in the background: "
                                 "end (default): nothing before the end; every_save: the model; checkpoint: also the "
                                 "checkpoint (resume from hf://USER/NAME); all_checkpoints: every checkpoint-N/."}
    )
    license: str = field(
        default="apache-2.0", metadata={"help": "The card's license (a Hub id); the base weights' terms apply too."}
    )
    export_onnx: bool = field(
        default=False, metadata={"help": "Also write model.onnx (checked against PyTorch; the onnx extra) into "
                                 "--output_dir at the end."}
    )

    # --lr_scheduler_type as given (None: not given, the recipe's shapes stay), kept before the Trainer's own
    # __post_init__ turns the field into an enum (it needs a name it knows: "constant" when none is given)
    lr_shape_given: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self._refuse_unsupported()
        self._check_values()
        self._check_lr_shape()
        self._check_hub_strategy()
        self._check_best_model()
        if self.export_onnx:
            require_onnx()  # now, not after the training
        _ = self.optimizer  # checked now, as given (the Trainer turns --optim into an enum below)
        if launch().distributed and not torch.cuda.is_available():
            self.use_cpu = True  # launched as DDP on a machine without GPUs: CPU processes over gloo (MULTI_CPU)
        if self.dataloader_num_workers == 0:
            self.dataloader_persistent_workers = False  # torch refuses persistent workers without workers
        self.dataloader_pin_memory = self.dataloader_pin_memory and torch.cuda.is_available()
        gpu = torch.cuda.is_available() and not self.use_cpu
        self._choose_precision()
        if (self.bf16 or self.fp16) and not gpu:
            self.use_cpu = True  # the Trainer only takes mixed precision on a CPU when told the CPU is the device
        if self.channels_last is None:
            self.channels_last = self.bf16 or gpu
        super().__post_init__()

    @property
    def optimizer(self) -> OptimizerSpec:
        """The optimizer these flags ask for (--optim, --optim_args, --weight_decay, --adam_*)."""
        return OptimizerSpec.from_args(self)

    def _choose_precision(self) -> None:
        """--bf16 / --fp16 as given, else the hardware's default (training/hardware.py); never both."""
        if self.bf16 and self.fp16:
            raise ValueError("--bf16 and --fp16 are both on: choose one mixed precision (or neither, for fp32)")
        chosen = default_precision(self.use_cpu)
        if self.bf16 is None:
            self.bf16 = chosen == "bf16" and not self.fp16
        if self.fp16 is None:
            self.fp16 = chosen == "fp16" and not self.bf16

    def _refuse_unsupported(self) -> None:
        """A field the recipe cannot honour (trainer_fields.REFUSED_FIELDS), set: refused with the reason."""
        for spec in dataclasses.fields(self):
            if spec.name in REFUSED_FIELDS and was_set(self, spec):
                raise ValueError(f"--{spec.name}: {REFUSED_FIELDS[spec.name]}")

    def _check_values(self) -> None:
        """Each number in its range, --tta a known choice."""
        check_at_least(self, per_device_train_batch_size=1, per_device_eval_batch_size=1,
                       gradient_accumulation_steps=1, dataloader_num_workers=0, seed=0)
        if not 0 <= self.label_smoothing_factor < 1:
            raise ValueError(f"--label_smoothing_factor must be in [0, 1) (0: none; e.g. 0.1), got "
                             f"{self.label_smoothing_factor}")
        if self.num_train_epochs is not None and (self.num_train_epochs < 1 or self.num_train_epochs % 1):
            raise ValueError(f"--num_train_epochs must be a whole number of epochs, at least 1 (the length of --recipe "
                             f"full or fast, or the sum of the stages), got {self.num_train_epochs:g}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema_decay must be in [0, 1) (0: no average; e.g. 0.99), got {self.ema_decay}")
        check_tta(self.tta)
        for flag in ("mixup_alpha", "cutmix_alpha"):
            if not 0 <= getattr(self, flag) < math.inf:
                raise ValueError(f"--{flag} must be 0 (off) or positive (e.g. 0.2 for MixUp, 1.0 for CutMix), got "
                                 f"{getattr(self, flag)}")
        if self.learning_rate is not None and not 0 < self.learning_rate < math.inf:
            raise ValueError(f"--learning_rate must be a positive finite number, got {self.learning_rate}")

    def _check_lr_shape(self) -> None:
        """--lr_scheduler_type one of LR_SHAPES (kept as given in lr_shape_given), --lr_scheduler_kwargs the JSON of
        a floor or a warmup start."""
        self.lr_shape_given = None if self.lr_scheduler_type is None else self._scheduler_name()
        self.lr_scheduler_type = self.lr_scheduler_type or "constant"
        shape = self._scheduler_name()
        if shape not in LR_SHAPES:
            raise ValueError(f"--lr_scheduler_type {shape} is not supported; the lr shapes (per stage) are "
                             f"{', '.join(LR_SHAPES)}")
        if isinstance(self.lr_scheduler_kwargs, str):  # a JSON object on the command line
            try:
                self.lr_scheduler_kwargs = json.loads(self.lr_scheduler_kwargs or "{}")
            except json.JSONDecodeError as error:
                raise ValueError(f"--lr_scheduler_kwargs must be a JSON object such as '{{\"min_lr_rate\": 0.1}}', "
                                 f"got {self.lr_scheduler_kwargs!r}") from error
        kwargs = self.lr_scheduler_kwargs or {}
        if (not isinstance(kwargs, dict) or set(kwargs) - {"min_lr_rate", "start_factor"}
                or ("min_lr_rate" in kwargs and LR_SHAPES[shape] != "cosine")
                or ("start_factor" in kwargs and not self.warmup_steps)):
            raise ValueError(f"--lr_scheduler_kwargs {kwargs}: only {{\"min_lr_rate\": x}} (the floor of a cosine "
                             "shape, as a fraction of the peak) and {\"start_factor\": x} (where warmup starts, "
                             "as a fraction of the peak; with --warmup_steps) are supported")

    def _check_best_model(self) -> None:
        """--load_best_model_at_end and --early_stopping_patience watch accuracy (default) or loss on validation."""
        watched = self.load_best_model_at_end or self.early_stopping_patience is not None
        if self.metric_for_best_model is not None:
            metric = self.metric_for_best_model.removeprefix("eval_")
            if metric not in BEST_MODEL_METRICS:
                raise ValueError(f"--metric_for_best_model must be accuracy or loss, got "
                                 f"{self.metric_for_best_model!r}")
            if not watched:
                raise ValueError("--metric_for_best_model chooses the epoch --load_best_model_at_end keeps and what "
                                 "--early_stopping_patience watches: give one of them")
            self.metric_for_best_model = metric
        elif watched:
            self.metric_for_best_model = "accuracy"
        if watched:
            self.greater_is_better = BEST_MODEL_METRICS[self.metric_for_best_model]
            if flag_value(self.eval_strategy) == "no":
                raise ValueError("--load_best_model_at_end and --early_stopping_patience read the evaluations: "
                                 "--eval_strategy no has none")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"--early_stopping_patience must be at least 1 evaluation, got "
                             f"{self.early_stopping_patience}")

    def _check_hub_strategy(self) -> None:
        strategy = flag_value(self.hub_strategy)
        if strategy not in HUB_STRATEGIES:
            raise ValueError(f"--hub_strategy must be one of {', '.join(HUB_STRATEGIES)}, got {strategy!r}")
        if strategy != "end" and not self.push_to_hub:
            raise ValueError(f"--hub_strategy {strategy} pushes checkpoints to the Hub: it needs --push_to_hub and "
                             "--hub_model_id")
        if strategy != "end" and flag_value(self.save_strategy) == "no":
            raise ValueError(f"--hub_strategy {strategy} pushes at each save, and --save_strategy no saves none")
        if self.hub_always_push and strategy == "end":
            raise ValueError("--hub_always_push is about pushes during training: it needs --hub_strategy every_save, "
                             "checkpoint or all_checkpoints")

    def _scheduler_name(self) -> str:
        """--lr_scheduler_type as given (the Trainer turns it into an enum in its own __post_init__)."""
        return flag_value(self.lr_scheduler_type)

    def lr_shape(self) -> dict | None:
        """The stage shape these flags ask for (shape, warmup as a fraction or warmup_steps, floor), or None when
        they ask for none: no --lr_scheduler_type, warmup or floor, so the recipe's own shapes stay."""
        kwargs = self.lr_scheduler_kwargs or {}
        shape, floor = LR_SHAPES[self._scheduler_name()], kwargs.get("min_lr_rate", 0.0)
        if self.lr_shape_given is None and not self.warmup_steps and not floor:
            return None
        fraction = self.warmup_steps < 1
        return dict(shape=shape, warmup=self.warmup_steps if fraction else 0.0,
                    warmup_steps=0 if fraction else int(self.warmup_steps), start=kwargs.get("start_factor", 0.0),
                    floor=floor)


ARGUMENTS = (ModelArguments, DataArguments, StageArguments, FinetuneTrainingArguments)
FINETUNE = "Fine-tune a ResNet18-CBAM on an image-classification dataset."


def build_parser(extra: tuple = (), description: str = FINETUNE) -> HfArgumentParser:
    """The parser of scripts/finetune.py, its --help in the order a user reads it: model, data, stages, this
    project's training flags, then the Trainer's own fields passed through, then the refused ones, listed once.
    `extra`: the dataclasses of another script that takes every fine-tuning flag too (listed first)."""
    parser = script_parser((*extra, *ARGUMENTS), usage="%(prog)s [--flag VALUE ...]  |  %(prog)s ARGS.json|ARGS.yaml",
                           epilog=refused_epilog(), description=description)
    arrange_help(parser, FinetuneTrainingArguments._argument_group_name)
    return parser


def parse_arguments(argv: list[str] | None = None, extra: tuple = (), description: str = FINETUNE):
    """Flags, or a single .json / .yaml file holding them all: (model, data, stage, training) arguments, after those
    of the `extra` dataclasses. The recipe's flag defaults (training/recipes.py) apply to every flag not given."""
    parser = build_parser(extra, description)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        path = Path(argv[0])
        values = read_run_file(path)
        try:
            return parser.parse_dict({**recipe_flag_defaults(values), **values})
        except ValueError as error:  # an unknown key, or a value its dataclass refuses: said with the file
            raise ValueError(f"{path}: {error}") from error
    probe = argparse.ArgumentParser(add_help=False)
    for flag in RECIPE_CHOICE_FLAGS:
        probe.add_argument(f"--{flag}")
    parser.set_defaults(**recipe_flag_defaults(vars(probe.parse_known_args(argv)[0])))
    return parser.parse_args_into_dataclasses(argv)


# what the recipe's flag defaults follow
RECIPE_CHOICE_FLAGS = ("recipe", "optim", "backbone_weights", "model_name_or_path", "stages_file")


def recipe_flag_defaults(given: dict) -> dict:
    """The defaults the run's recipe gives other flags, from the flags given (a name for --recipe, else the weights
    choose it: recipes.choose). An unknown recipe gives none: StageArguments refuses it with the list."""
    name = given.get("recipe")
    if name is None:  # recipes.choose owns the rule, a stages file's included
        random_weights = is_random_start(given.get("backbone_weights"), given.get("model_name_or_path"))
        name = recipes.choose(None, random_weights, bool(given.get("stages_file")))[0].name
    return recipes.flag_defaults(name, given.get("optim"))


def chosen_recipe(model_args: ModelArguments, stage_args: StageArguments) -> tuple[recipes.Recipe, str | None]:
    """The run's recipe (recipes.choose) and the reason it was chosen (None: given with --recipe)."""
    return recipes.choose(stage_args.recipe, model_args.random_weights, bool(stage_args.stages_file))


def build_schedule(model_args: ModelArguments, stage_args: StageArguments, training_args: FinetuneTrainingArguments,
                   recipe: recipes.Recipe | None = None) -> stages.Schedule:
    """The validated schedule of the flags and the run's recipe (chosen_recipe, unless the caller has it); a
    ScheduleError says what is wrong before anything loads."""
    num_train_epochs = training_args.num_train_epochs
    recipe = recipe or chosen_recipe(model_args, stage_args)[0]
    if stage_args.stages_file:
        schedule = stages.from_json(stage_args.stages_file)
    else:
        given = {"epochs": int(num_train_epochs or 0), "lr": training_args.learning_rate}
        schedule = recipe.schedule(**{key: value for key, value in given.items() if value})
    if training_args.learning_rate is not None and (stage_args.stages_file or not recipe.one_stage):
        raise stages.ScheduleError(f"--learning_rate sets the lr of --recipe {recipes.one_stage_names()}; the stages "
                                   "have their own rates: use --stage_lrs (one per stage) or a --stages_file")
    if stage_args.epochs is not None:
        schedule = schedule.with_lengths(stage_args.epochs)
    if stage_args.lrs is not None:
        schedule = schedule.with_rates(stage_args.lrs)
    shape = training_args.lr_shape()
    if shape is not None:
        if stage_args.stages_file:
            raise stages.ScheduleError("--lr_scheduler_type/--warmup_steps/--lr_scheduler_kwargs and --stages_file: "
                                       "give each stage its \"shape\" and \"warmup\" in the file")
        schedule = schedule.with_shape(**shape)
    if stage_args.scale_lr_with_batch:
        args = training_args
        batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
        schedule = schedule.scaled(batch / recipe.batch)
    if stage_args.train_bn:
        schedule = dataclasses.replace(schedule, train_bn=True)
    return schedule.validate(num_train_epochs)
