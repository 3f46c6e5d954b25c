"""The named recipes, registered in one place, as timm registers its models with their default configurations.

A recipe is one `Recipe` entry: its stages, the batch its rates were set for, the defaults it gives other flags,
its rule for a pretrained ImageNet stem and for CBAM's init, and a line that says what it is. Every other module
asks this registry (`get`, `names`, `help_text`); adding a recipe is one `register` call and its test.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from training.stages import GROUPS, Schedule, ScheduleError, Stage

TUTORIAL_BATCH = 64  # the batch size the tutorial's rates were set for


def every_group(lr: float, groups=GROUPS) -> dict[str, float]:
    return dict.fromkeys(groups, lr)


@dataclass(frozen=True)
class Recipe:
    """A named recipe. A one-stage recipe takes its length and peak lr from --num_train_epochs and
    --learning_rate; a staged one from --stage_epochs and --stage_lrs."""

    name: str
    summary: str  # one line: --help and the model card
    stages: tuple[Stage, ...]
    batch: int = TUTORIAL_BATCH  # --scale_lr_with_batch scales the rates from it
    flag_defaults: Mapping[str, object] = field(default_factory=dict)  # each still overridden by the flag itself
    # On pretrained weights, CIFAR-sized images are upsampled for the backbone's ImageNet stem, which is kept; False:
    # the recipe keeps the seed recipe's CIFAR stem at 32 px.
    keeps_pretrained_stem: bool = True
    paper_cbam: bool = False  # CBAM starts as the paper's, also on pretrained weights (else: the identity there)

    def __post_init__(self):
        object.__setattr__(self, "flag_defaults", MappingProxyType(dict(self.flag_defaults)))

    @property
    def one_stage(self) -> bool:
        return len(self.stages) == 1

    def schedule(self, epochs: int | None = None, lr: float | None = None) -> Schedule:
        """The recipe's schedule; a one-stage recipe's at `epochs` and peak `lr` where given."""
        if not self.one_stage:
            return Schedule(self.stages)
        stage = self.stages[0]
        return Schedule((replace(stage, epochs=epochs or stage.epochs,
                                 lrs=every_group(lr, stage.lrs) if lr else stage.lrs),))


_REGISTRY: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    if recipe.name in _REGISTRY:
        raise ValueError(f"a recipe named {recipe.name!r} is registered already")
    _REGISTRY[recipe.name] = recipe
    return recipe


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: str) -> Recipe:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ScheduleError(f"unknown recipe {name!r}; the recipes are {', '.join(_REGISTRY)}") from None


def help_text() -> str:
    """--recipe's help: every recipe with its line, and which weights each default is for."""
    return "; ".join(f"{recipe.name}{DEFAULT_FOR.get(recipe.name, '')}: {recipe.summary}"
                     for recipe in _REGISTRY.values()) + "."


def choose(name: str | None, random_weights: bool, stages_file: bool = False) -> tuple[Recipe, str | None]:
    """The recipe of a run, as the input follows the weights: the one named, else the from-scratch recipe on random
    weights and DEFAULT on any trained ones (a backbone, a saved model); with the reason when not named. A stages
    file replaces the stages: unless a recipe is named, its rules are DEFAULT's, and nothing is said."""
    if name is not None or stages_file:
        return get(name or DEFAULT), None
    if random_weights:
        return get(FROM_SCRATCH), (f"recipe {FROM_SCRATCH} (random weights: the from-scratch recipe trains every "
                                   "layer from the first step, where a staged one would keep a random backbone "
                                   "frozen)")
    return get(DEFAULT), (f"recipe {DEFAULT} (trained weights: the transfer study's best at 50 epochs, "
                          "docs/transfer-study.md; --recipe staged for the tutorial's stages)")


NEW_MODULES = ("stem", "cbam", "head")  # randomly initialised, whatever the backbone weights (but an ImageNet stem)

# staged: the tutorial's stages with its last stage at 1e-4, not its 1e-5. In the transfer study (3 seeds, paired)
# that last rate added 1.4 +- 0.3 points at the stages' own 50 epochs and 2.9 +- 0.2 at 10 (docs/transfer-study.md):
# 30 epochs at 1e-5 barely move the layers that stage unfreezes. seed-exact keeps the tutorial's 1e-5.
register(Recipe(
    "staged", "three stages: the new modules, + layer3-4, everything (Adam 1e-3, 1e-4, 1e-4; 5, 15, 30 epochs)",
    (Stage(5, every_group(1e-3, NEW_MODULES), "new modules"),
     Stage(15, every_group(1e-4, NEW_MODULES + ("layer3", "layer4")), "+ layer3, layer4"),
     Stage(30, every_group(1e-4), "everything"))))
register(Recipe(
    "seed-exact", "the tutorial exactly (the CIFAR stem at 32 px, the paper's CBAM)",
    (Stage(5, every_group(1e-3, ("cbam", "head")), "CBAM + head"),
     Stage(15, every_group(1e-4, ("cbam", "head", "layer3", "layer4")), "+ layer3, layer4"),
     Stage(30, every_group(1e-5), "everything")),
    keeps_pretrained_stem=False, paper_cbam=True))
# full: everything from the first step at a constant Adam 1e-4. In the transfer study at the default's own 50 epochs
# (CIFAR-10 from a backbone pretrained on other CIFAR-10 classes, 3 seeds, paired by seed) it beat `staged` clearly;
# at 10 epochs 1e-4 beat 1e-3 on the pretrained backbone (docs/transfer-study.md).
FULL = register(Recipe("full", "one stage, everything at a constant Adam 1e-4 from the first step, 50 epochs",
                       (Stage(50, every_group(1e-4), "everything"),)))
# full-cosine: `full` with 10% linear warmup and cosine decay to 0 (the HF example's and timm's shape), the default on
# trained weights. In the same study it scored as `full` did (+0.3 +- 0.3 points, paired over 3 seeds; +2.3 +- 0.4
# over `staged`) and ends where its rate does, at 0: a constant rate's final model is wherever its last steps leave
# it (on the ants/bees photos `full` fell from 77.1% to 68.0% at its last epoch).
COSINE_WARMUP = 0.1
register(Recipe("full-cosine", "one stage, everything at Adam 1e-4 from the first step, warming up over the first "
                "tenth of the steps, then cosine decay to 0, 50 epochs",
                (replace(FULL.stages[0], shape="cosine", warmup=COSINE_WARMUP),)))
# fast: a triangle (from 0.2x the peak to the peak at 20% of the steps, then linear to 0), as Keller Jordan's
# ResNet-18 CIFAR-10 baseline (cifar10-airbench), at a batch of 64: on a CPU a larger batch is no faster per image,
# and in one or two epochs more steps learn more (2 epochs of CIFAR-10 with lr 0.1: 76.18% at batch 64, 74.50% at
# 128; README, "Learning fast from scratch"). The lr 0.1, first set for batch 128, was kept at 64 (not re-tuned):
# about 4x that baseline's 0.2 at 500 scaled linearly to 64. No EMA: over 2 epochs of CIFAR-10 its average scored
# 0.5 points below the live weights. No augmentation: in 1 and 2 epochs of the 45,000 images the model is far from
# fitting them, and crop-flip cost 2.8 and 2.9 points (69.38% against 66.56%, 78.78% against 75.84%); a longer
# schedule takes --augment crop-flip.
FAST_BATCH, FAST_LR, FAST_EPOCHS = 64, 0.1, 2
register(Recipe(
    "fast", "one stage from scratch for 1-2 epochs: SGD one-cycle, label smoothing, flip TTA",
    (Stage(FAST_EPOCHS, every_group(FAST_LR), "everything", shape="linear", warmup=0.2, start=0.2),),
    batch=FAST_BATCH,
    flag_defaults=dict(optim="sgd", optim_args="momentum=0.9,nesterov=True", weight_decay=5e-4,
                       label_smoothing_factor=0.2, per_device_train_batch_size=FAST_BATCH, augment="none",
                       ema_decay=0.0, tta="flip", backbone_weights="none")))
DEFAULT = "full-cosine"  # on trained weights (a pretrained backbone or a saved model): the transfer study's best
FROM_SCRATCH = "fast"  # on random weights: a staged recipe would freeze a random backbone
DEFAULT_FOR = {DEFAULT: " (default on trained weights)", FROM_SCRATCH: " (default from random weights)"}


def one_stage_names() -> str:
    *most, last = (name for name, recipe in _REGISTRY.items() if recipe.one_stage)
    return f"{', '.join(most)} or {last}" if most else last


def one_stage_lrs() -> str:
    """The peak lr of each one-stage recipe, for --learning_rate's help."""
    return ", ".join(f"{name}: {recipe.stages[0].rate:g}" for name, recipe in _REGISTRY.items()
                     if recipe.one_stage)


def batch_text() -> str:
    """The batch each recipe's rates were set for, for --scale_lr_with_batch's help."""
    batches = {name: recipe.batch for name, recipe in _REGISTRY.items()}
    usual = max(set(batches.values()), key=list(batches.values()).count)
    if len(set(batches.values())) == 1:
        return f"{usual} for every recipe"
    return ", ".join([f"{batch} for {name}" for name, batch in batches.items() if batch != usual]
                     + [f"{usual} for the others"])


def random_start_warning(name: str, first: Stage, present=GROUPS) -> str | None:
    """What recipe `name` does on random weights when its `first` stage keeps some of the model's groups (`present`)
    frozen (None: it trains all)."""
    frozen = [group for group in present if group not in first.lrs]
    if not frozen:
        return None
    return (f"--recipe {name} on random weights: its first stage keeps {', '.join(frozen)} frozen at their random "
            f"values for {first.epochs} epoch{'s' * (first.epochs != 1)} while the rest learns on top of them (on the "
            "ants/bees photos from random weights, staged ended at chance, 55.56%: docs/photos.md); "
            f"--recipe {FROM_SCRATCH}, the default from random weights, trains every layer from the first step")


def flag_defaults(name: str | None, optim: str | None = None) -> dict:
    """The defaults a recipe gives other flags (none for an unknown name: the flag's own check names it); another
    --optim than the recipe's drops the recipe's --optim_args."""
    defaults = dict(_REGISTRY[name].flag_defaults) if name in _REGISTRY else {}
    if optim is not None and optim != defaults.get("optim", optim):
        defaults.pop("optim_args", None)
    return defaults
