"""A run's configuration, decided once from the parsed flags, the data and the weights, and never changed after.

The parsed argument dataclasses hold what the user gave; `resolve_run` turns them, with the data's profile and the
loaded model, into a frozen `RunConfig`: the recipe and why, the schedule as this model trains it, where the data
lives, every default chosen with its reason. The Trainer's arguments are derived from it once
(`RunConfig.trainer_arguments`); the log's "default:" lines, run_facts.json and the card read it.
"""

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from modeling_resnet_cbam import ResNetCBAMForImageClassification
from training.arguments import ARCHITECTURE_FLAGS, FinetuneTrainingArguments, ModelArguments, StageArguments
from training.data import ImageData
from training.device_data import supports_device_data
from training.hardware import device_name, precision
from training.recipes import Recipe, random_start_warning
from training.stages import Schedule, ScheduleError

# the config's fields that shape the network: the architecture flags, the CBAM style the weights choose (no flag),
# and those the data sets
ARCHITECTURE_FIELDS = (*ARCHITECTURE_FLAGS, "cbam_style", "num_channels", "image_size", "crop_pct", "image_mean",
                       "image_std")


@dataclass(frozen=True)
class RunConfig:
    """What a run is, as decided: assigning to it raises (dataclasses.FrozenInstanceError)."""

    architecture: Mapping  # the model's shape, as its saved config.json has it (read-only)
    recipe: Recipe  # given with --recipe, or chosen from the weights (training/recipes.py choose)
    schedule: Schedule  # what trains when, at which rate: the recipe's, as the flags and this model make it
    data_on_device: bool  # the images decoded once into a tensor on the training device (training/device_data.py)
    loader_workers: int  # DataLoader workers: none when the data is on the device (the loader carries indices)
    precision: str  # bf16, fp16 or fp32: given, or the hardware's default (FinetuneTrainingArguments)
    hardware: str  # what trains it, in words
    weights: str  # where the model's weights came from, in a sentence (the backbone import's own report)
    defaults: tuple[str, ...]  # every default chosen, each with its reason; the input's first
    warnings: tuple[str, ...] = ()  # what the configuration asked for does that a user may not expect

    def trainer_arguments(self, args: FinetuneTrainingArguments) -> FinetuneTrainingArguments:
        """The Trainer's arguments: the parsed ones with what this configuration decided (the run's length, the
        data's place and loader workers) and none of the Trainer's own pushes (the finished folder is pushed by
        training/cli.py, checkpoints by hub.CheckpointPusher). A copy, made once: the parsed arguments stay as
        given. (dataclasses.replace would run TrainingArguments.__post_init__ again, which is not idempotent: it
        fills in fields, such as accelerator_config, whose refusal reads them as set.)"""
        derived = copy.copy(args)
        decided = dict(num_train_epochs=self.schedule.total_epochs, data_on_device=self.data_on_device,
                       dataloader_num_workers=self.loader_workers, push_to_hub=False,
                       dataloader_persistent_workers=args.dataloader_persistent_workers and self.loader_workers > 0)
        vars(derived).update(decided)
        return derived


def resolve_run(model_args: ModelArguments, stage_args: StageArguments, training_args: FinetuneTrainingArguments,
                *, recipe: Recipe, why: str | None, schedule: Schedule, data: ImageData,
                model: ResNetCBAMForImageClassification, weights: str, chosen: list[str]) -> RunConfig:
    """The run's configuration from its flags' recipe (`why`: the reason it was chosen, None when given) and
    schedule, the loaded data, and the model with its weights (`chosen`: the architecture defaults and reasons)."""
    defaults = [data.input_summary, *([why] if why else []), *chosen]
    if keeps_pretrained_stem(model_args, model) and not stage_args.stages_file and \
            (kept := schedule.with_pretrained_stem()) != schedule:
        schedule = kept
        defaults.append(f"the stem is pretrained (its conv1 loaded with the backbone): {recipe.name} trains it with "
                        "layer1, not as a new module")
    groups = model.parameter_groups()
    check_stages_train_something(schedule, groups)
    present = [group for group, parameters in groups.items() if parameters]
    schedule = schedule.of_groups(present)
    given = stage_args.recipe is not None and not stage_args.stages_file
    warning = random_start_warning(recipe.name, schedule.stages[0], present) \
        if given and model_args.random_weights else None
    data_on_device = training_args.data_on_device
    if data_on_device is None:  # auto: small images are decoded once, wherever training runs
        data_on_device = supports_device_data(data)
    architecture = {name: getattr(model.config, name) for name in ARCHITECTURE_FIELDS}
    return RunConfig(architecture=MappingProxyType(architecture), recipe=recipe, schedule=schedule,
                     data_on_device=data_on_device,
                     loader_workers=0 if data_on_device else training_args.dataloader_num_workers,
                     precision=precision(training_args.bf16, training_args.fp16),
                     hardware=device_name(training_args.device, training_args.world_size),
                     weights=weights, defaults=tuple(defaults), warnings=(warning,) if warning else ())


def keeps_pretrained_stem(args: ModelArguments, model: ResNetCBAMForImageClassification) -> bool:
    """Whether backbone weights were loaded into an ImageNet stem (its 7x7 conv1 kept, not dropped)."""
    return args.pretrained_backbone and model.config.stem == "imagenet"


def check_stages_train_something(schedule: Schedule, groups: dict) -> None:
    """Refuse, before training, a stage whose groups hold no parameter of the model (`groups`: its parameters by
    group; `"train": ["cbam"]` with `--cbam_placement none`): it would train nothing, and the optimizer could not be
    built for it."""
    for index, stage in enumerate(schedule.stages, start=1):
        if stage.parameter_count(groups) == 0:
            empty = ", ".join(stage.groups)
            raise ScheduleError(f"stage {index} trains {empty}, which hold no parameter in this model"
                                + (" (--cbam_placement none: it has no CBAM)" if "cbam" in stage.groups else "")
                                + "; give the stage a group the model has")
