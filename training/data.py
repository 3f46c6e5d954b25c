"""Image-classification data through `datasets`: sources, splits, label names and checks; the transforms are in
training/transforms.py, the reading of image files in training/images.py."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset, load_from_disk
from datasets import Image as ImageFeature

from training.defaults import InputPreset, describe_input, resolve_input
from training.images import ROW, DataError, SizeProfile, check_image_folder, profile_sizes, verify_images
from training.transforms import AUGMENT_ALIASES, AUGMENTATIONS, set_transforms

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = ("label", "labels", "fine_label")
VALIDATION_SPLITS = ("validation", "valid", "val")
MIN_IMAGE_SIZE = 16  # --image_size below it: 0 would fall back to the default silently, and layer4 would see 1x1 maps


@dataclass
class DataArguments:
    _argument_group_name = "data (resnet-cbam)"

    dataset_name: str = field(
        default="uoft-cs/cifar10",
        metadata={"help": "A Hub dataset id or a local folder in Hub layout (or one written by save_to_disk)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration, if any."})
    train_dir: str | None = field(
        default=None, metadata={"help": "An image folder (one sub-folder per class) used instead of dataset_name."}
    )
    validation_dir: str | None = field(default=None, metadata={"help": "An image folder for validation."})
    image_column_name: str | None = field(default=None, metadata={"help": "Default: the first of img, image."})
    label_column_name: str | None = field(
        default=None, metadata={"help": "Default: the first of label, labels, fine_label."}
    )
    labels: str | None = field(
        default=None, metadata={"help": "Keep only these classes (e.g. dog,frog,horse), relabelled 0..k-1 in "
                                "this order."}
    )
    validation_split: str = field(
        default="0.1",
        metadata={
            "help": "Without a validation split: a fraction or count of train, "
            "stratified."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N training images after a seeded shuffle."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Same for validation and test."})
    image_size: int | None = field(
        default=None, metadata={"help": "Default: 224 for photos; for CIFAR-sized images (median side <= 64 "
                                "px) 64 on a pretrained backbone (but in seed-exact), else 32."}
    )
    image_mean: list[float] | None = field(
        default=None, metadata={"help": "Default: CIFAR-10's at 32 px with the CIFAR stem, else ImageNet's."}
    )
    image_std: list[float] | None = field(default=None, metadata={"help": "Per-channel std, as image_mean."})
    augment: str | None = field(
        default=None, metadata={"help": "tutorial (padded crop, flip, jitter, rotation), crop-flip, "
                                "resized-crop-flip, none; randaugment, trivialaugment, autoaugment (torchvision's). "
                                "Default: tutorial (CIFAR-sized), resized-crop-flip (photos), none (fast)."}
    )
    random_erasing: float = field(
        default=0.0, metadata={"help": "Probability of erasing a random box of each training image (e.g. "
                               "0.25); 0 (default): never."}
    )
    verify_images: bool = field(
        default=False, metadata={"help": "Decode every image before training and list every bad one."}
    )
    skip_bad_images: bool = field(default=False, metadata={"help": "With verify_images: drop bad images."})

    @property
    def source(self) -> str:
        """What the data is read from: the image folder(s), else the dataset name or folder."""
        return self.train_dir or self.validation_dir or self.dataset_name

    def selection(self) -> dict:
        """The flags that say which images a run used (local paths made absolute), so that a later evaluation of the
        run can read the same data: DataArguments(**selection) loads it again."""
        fields = ("dataset_name", "dataset_config_name", "train_dir", "validation_dir", "image_column_name",
                  "label_column_name", "labels", "validation_split", "max_eval_samples")
        values = {name: getattr(self, name) for name in fields}
        for name in ("dataset_name", "train_dir", "validation_dir"):
            if values[name] and (name != "dataset_name" or not self.from_hub):
                values[name] = str(Path(values[name]).resolve())
        return values

    @property
    def display_name(self) -> str:
        """How the model card and the Hub name the data: a Hub id as it is, a local folder by its name (the name of
        the folder above an image folder called train), never by its path on this machine."""
        if self.from_hub:
            return self.dataset_name
        path = Path(self.source).resolve()
        return path.parent.name if path.name.lower() in ("train", "training") and path.parent.name else path.name

    @property
    def from_hub(self) -> bool:
        """Whether the data is a Hub dataset (its id names it for others), not a local folder."""
        return not self.train_dir and not self.validation_dir and not Path(self.dataset_name).exists()

    @property
    def label_subset(self) -> list[str] | None:
        """--labels as class names (None: every class)."""
        return None if self.labels is None else [name.strip() for name in self.labels.split(",")]

    def __post_init__(self):
        if self.label_subset is not None and (not all(self.label_subset) or
                                              len(set(self.label_subset)) != len(self.label_subset)):
            raise DataError(f"--labels must be distinct class names separated by commas, got {self.labels!r}")
        if self.augment in AUGMENT_ALIASES:
            logger.warning("--augment %s is now called %s", self.augment, AUGMENT_ALIASES[self.augment])
            self.augment = AUGMENT_ALIASES[self.augment]
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise DataError(f"--augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if not 0 <= self.random_erasing <= 1:
            raise DataError(f"--random_erasing is a probability in [0, 1] (0: off; e.g. 0.25), got "
                            f"{self.random_erasing}")
        for flag in ("max_train_samples", "max_eval_samples"):
            if getattr(self, flag) is not None and getattr(self, flag) < 1:
                raise DataError(f"--{flag} must be at least 1 (leave it out to keep every image), got "
                                f"{getattr(self, flag)}")
        if self.image_size is not None and self.image_size < MIN_IMAGE_SIZE:
            raise DataError(f"--image_size must be at least {MIN_IMAGE_SIZE} px (leave it out to choose it from the "
                            f"images), got {self.image_size}")
        if self.skip_bad_images and not self.verify_images:
            raise DataError("--skip_bad_images needs --verify_images: bad images are found by decoding every one first")


@dataclass
class ImageData:
    """Splits ready for the Trainer (train, validation and, when the dataset has one, test) and what they hold."""

    splits: DatasetDict
    image_column: str
    label_column: str
    label_names: list[str]
    image_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    crop_pct: float  # evaluation images: the shorter side resized to image_size / crop_pct, then centre-cropped
    augment: str  # of the training images
    random_erasing: float  # the probability of erasing a box of a training image, after `augment`
    profile: SizeProfile  # the sizes of a sample of the images the defaults were chosen from
    input_choice: str  # what the input defaults are and why (training/defaults.py), for the log and the card
    preset: InputPreset
    source_sizes: dict[str, int] = field(default_factory=dict)  # each split's images before --max_*_samples

    @property
    def native_size(self) -> tuple[int, int] | None:
        """The one size of the (sampled) images, or None when they differ."""
        return self.profile.uniform

    @property
    def augmentation(self) -> str:
        """The training augmentation in a few words, for the log, the card and the run's identity."""
        erasing = f" + random erasing (p={self.random_erasing:g})" if self.random_erasing else ""
        return self.augment + erasing

    @property
    def input_summary(self) -> str:
        """The sizes seen and the input chosen for them: one line for the log and the model card."""
        return f"{self.profile.describe()}: {self.input_choice}"

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}

    @property
    def eval_split(self) -> str:
        """The split of the final evaluation: test when there is one, else validation."""
        return "test" if "test" in self.splits else "validation"


def load_image_data(args: DataArguments, seed: int = 42, split: str | None = None,
                    pretrained_stem: bool = False) -> ImageData:
    """Load, check and split the data; set the lazy transforms. Raises DataError naming the split and row.
    `pretrained_stem`: CIFAR-sized images are upsampled for a pretrained ImageNet stem (wants_pretrained_stem).

    With `split`, only what evaluating that split needs is loaded: the split alone (a dataset of only a test split
    will do), or train when the validation split is carved out of it (with the same seed as in training).
    """
    if split is None and args.validation_dir and not args.train_dir:
        raise DataError(f"--validation_dir {args.validation_dir} needs --train_dir: the image folder to train on")
    raw = _load_source(args)
    reference = split if split not in (None, "train") and (split in raw or split != "validation") else "train"
    if reference not in raw:
        carve = " to carve a validation split from" if split == "validation" else ""
        choose = "; choose one with --split" if split is not None and raw else ""
        raise DataError(f"{args.source} has no {reference} split{carve} (splits: {', '.join(raw) or 'none'}){choose}")
    if reference != "train":
        raw = DatasetDict({reference: raw[reference]})
    _require_rows(raw)
    image_column = _pick_column(raw[reference], args.image_column_name, IMAGE_COLUMNS, "image")
    if not isinstance(raw[reference].features[image_column], ImageFeature):
        raise DataError(f"the column {image_column!r} holds {raw[reference].features[image_column]}, not images; "
                        "name the image column with --image_column_name")
    label_column = _pick_column(raw[reference], args.label_column_name, LABEL_COLUMNS, "label")
    raw = DatasetDict({name: split.add_column(ROW, range(len(split))) for name, split in raw.items()})
    raw = _as_class_labels(raw, label_column, reference)
    label_names = raw[reference].features[label_column].names
    for name, each in raw.items():
        _check_labels(each, name, label_column, len(label_names))
    if args.label_subset is not None:
        raw = _keep_classes(raw, label_column, args.label_subset, args.source, reference)
        label_names = args.label_subset
    if split is None and len(label_names) < 2:
        raise DataError(f"the train split of {args.source} has {len(label_names)} class ({', '.join(label_names)}): "
                        "a classifier needs at least two")
    splits = _train_validation_test(raw, args.validation_split, label_column, seed) if reference == "train" else raw
    source_sizes = {name: len(each) for name, each in splits.items()}
    if split is None:
        _check_every_class_trains(splits, label_column, label_names, args.source)
    splits = _limit(splits, args, seed)
    _require_rows(splits)
    if split is None and args.max_train_samples:
        kept = np.bincount(labels_of(splits["train"], label_column), minlength=len(label_names))
        if (kept == 0).any():
            logger.warning("the %d training images kept by --max_train_samples hold no image of %s: the model "
                           "cannot learn them", args.max_train_samples,
                           ", ".join(label_names[i] for i in np.flatnonzero(kept == 0)))
    splits = DatasetDict({name: s.cast_column(image_column, ImageFeature(decode=False)) for name, s in splits.items()})
    if args.verify_images:
        splits = verify_images(splits, image_column, skip_bad=args.skip_bad_images)
        _require_rows(splits)
    profile = profile_sizes(splits[reference], image_column, seed=seed)
    settings = resolve_input(profile, args.image_size, args.image_mean, args.image_std, args.augment,
                             pretrained_stem)
    data = ImageData(
        splits=splits,
        image_column=image_column,
        label_column=label_column,
        label_names=list(label_names),
        image_size=settings.image_size,
        image_mean=settings.image_mean,
        image_std=settings.image_std,
        crop_pct=settings.crop_pct,
        augment=settings.augment,
        random_erasing=args.random_erasing,
        profile=profile,
        input_choice=describe_input(settings),
        preset=settings.preset,
        source_sizes=source_sizes,
    )
    set_transforms(data)
    return data


def _require_rows(splits: DatasetDict) -> None:
    for name, split in splits.items():
        if len(split) == 0:
            raise DataError(f"the {name} split is empty")


def _load_source(args: DataArguments) -> DatasetDict:
    try:
        return _load_splits(args)
    except DataError:
        raise
    except (FileNotFoundError, ValueError) as error:  # datasets' own words say what is missing or empty
        raise DataError(f"cannot load {args.source}: {error}") from error
    except OSError as error:  # ConnectionError: offline, or the Hub out of reach
        raise DataError(f"cannot load {args.source} from the Hub ({error}); without network, give a local copy: "
                        "--dataset_name <folder in Hub layout or written by save_to_disk>, or --train_dir "
                        "<image folder>") from error


def _load_splits(args: DataArguments) -> DatasetDict:
    if args.train_dir or args.validation_dir:  # a validation folder alone: what an evaluation needs
        for folder in filter(None, (args.train_dir, args.validation_dir)):
            check_image_folder(Path(folder))
        folders = [Path(folder).resolve() for folder in (args.train_dir, args.validation_dir) if folder]
        if len(folders) == 2 and folders[0] == folders[1]:
            logger.warning("--train_dir and --validation_dir are the same folder, %s: the validation accuracy will be "
                           "measured on the training images, and say how well they are remembered, not how well "
                           "new images are classified", args.train_dir)
        splits = {}
        if args.train_dir:
            splits["train"] = load_dataset("imagefolder", data_dir=args.train_dir, split="train")
        if args.validation_dir:
            splits["validation"] = load_dataset("imagefolder", data_dir=args.validation_dir, split="train")
        return DatasetDict(splits)
    if (Path(args.dataset_name) / "dataset_dict.json").is_file():
        return load_from_disk(args.dataset_name)
    loaded = load_dataset(args.dataset_name, args.dataset_config_name)
    return DatasetDict({_canonical_split(name): split for name, split in loaded.items()})


def _canonical_split(name: str) -> str:
    return "validation" if name in VALIDATION_SPLITS else name


def _pick_column(split: Dataset, given: str | None, candidates: tuple[str, ...], kind: str) -> str:
    columns = split.column_names
    if given is not None:
        if given not in columns:
            raise DataError(f"--{kind}_column_name {given!r} is not a column; the columns are: {', '.join(columns)}")
        return given
    for name in candidates:
        if name in columns:
            return name
    raise DataError(
        f"no {kind} column: looked for {', '.join(candidates)}; the columns are: {', '.join(columns)} "
        f"(name one with --{kind}_column_name)"
    )


def _as_class_labels(raw: DatasetDict, label_column: str, reference: str = "train") -> DatasetDict:
    """Every split's label column as the reference split's ClassLabel (strings and plain integers are named)."""
    feature = raw[reference].features[label_column]
    if not isinstance(feature, ClassLabel):
        raw = DatasetDict({name: split.class_encode_column(label_column) for name, split in raw.items()})
        names = sorted({n for split in raw.values() for n in split.features[label_column].names})
        feature = ClassLabel(names=names)
    out = {}
    for name, split in raw.items():
        own = split.features[label_column]
        if own.names != feature.names:
            unknown = sorted(set(own.names) - set(feature.names))
            if unknown:
                raise DataError(f"the {name} split has classes the {reference} split lacks: {', '.join(unknown)}")
            split = split.align_labels_with_mapping({n: i for i, n in enumerate(feature.names)}, label_column)
        out[name] = split.cast_column(label_column, feature)
    return DatasetDict(out)


def _keep_classes(raw: DatasetDict, label_column: str, names: list[str], source: str, reference: str) -> DatasetDict:
    """--labels: only the rows of these classes, in every split, relabelled 0..k-1 in the given order (no image is
    decoded). A name the dataset lacks is a DataError listing the dataset's names."""
    available = raw[reference].features[label_column].names
    unknown = [name for name in names if name not in available]
    if unknown:
        raise DataError(f"--labels: {', '.join(map(repr, unknown))} not among the classes of {source}: "
                        f"{', '.join(available)}")
    new_index = np.full(len(available), -1)
    new_index[[available.index(name) for name in names]] = np.arange(len(names))
    feature = ClassLabel(names=list(names))
    out = {}
    for name, split in raw.items():
        relabelled = new_index[labels_of(split, label_column)]
        rows = np.flatnonzero(relabelled >= 0)
        kept = split.select(rows).remove_columns(label_column)
        out[name] = kept.add_column(label_column, relabelled[rows].tolist(), feature=feature)
    return DatasetDict(out)


def _check_every_class_trains(splits: DatasetDict, label_column: str, names: list[str], source: str) -> None:
    """A class without a training image cannot be learned, yet the head and the card would count it: a DataError
    naming it and where its images are (another split, or nowhere: an empty class folder or a ClassLabel name)."""
    counts = {name: np.bincount(labels_of(split, label_column), minlength=len(names)) for name, split in splits.items()}
    absent = [index for index in range(len(names)) if counts["train"][index] == 0]
    if not absent:
        return
    def where(index: int) -> str:
        found = [f"{counts[name][index]} in {name}" for name in counts if counts[name][index]]
        return f"{names[index]!r} ({', '.join(found) if found else 'no image in any split'})"
    raise DataError(f"the train split of {source} has no image of {len(absent)} class(es): "
                    f"{', '.join(map(where, absent))}; a class without training images cannot be learned: add "
                    "images, or keep the other classes with --labels")


def labels_of(split: Dataset, label_column: str) -> np.ndarray:
    """The label column as integers, read from Arrow without decoding or transforming any image."""
    return np.asarray(split.with_format("numpy", columns=[label_column])[label_column])


def _check_labels(split: Dataset, split_name: str, label_column: str, num_classes: int) -> None:
    labels = labels_of(split, label_column)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        rows = ", ".join(f"row {r} (label {labels[r]})" for r in bad[:5])
        raise DataError(
            f"the {split_name} split has {bad.size} labels outside 0..{num_classes - 1}: {rows}"
            + (" ..." if bad.size > 5 else "")
        )


def _train_validation_test(raw: DatasetDict, validation_split: str, label_column: str, seed: int) -> DatasetDict:
    splits = {"train": raw["train"]}
    if "validation" in raw:
        splits["validation"] = raw["validation"]
    else:
        size = float(validation_split) if "." in validation_split else int(validation_split)
        if not 0 < size < (1 if isinstance(size, float) else len(raw["train"])):
            raise DataError(
                f"--validation_split must be a fraction in (0, 1) or a count below the train size, "
                f"got {validation_split}"
            )
        try:
            carved = raw["train"].train_test_split(test_size=size, stratify_by_column=label_column, seed=seed)
        except ValueError as error:  # too few images per class to stratify
            raise DataError(f"cannot carve a stratified validation split ({validation_split}) out of "
                            f"{len(raw['train'])} training images: {error}") from error
        splits = {"train": carved["train"], "validation": carved["test"]}
    if "test" in raw:
        splits["test"] = raw["test"]
    return DatasetDict(splits)


def _limit(splits: DatasetDict, args: DataArguments, seed: int) -> DatasetDict:
    out = {}
    for name, split in splits.items():
        limit = args.max_train_samples if name == "train" else args.max_eval_samples
        out[name] = split if limit is None else split.shuffle(seed=seed).select(range(min(limit, len(split))))
    return DatasetDict(out)


def data_facts(data: ImageData, batch_size: int = 256, seed: int = 42) -> dict:
    """What a dataset holds once loaded as for training: split sizes, labels and their counts per split, columns,
    image size, and the per-channel mean and std of one transformed (augmented) training batch."""
    counts = {name: np.bincount(labels_of(split, data.label_column), minlength=len(data.label_names)).tolist()
              for name, split in data.splits.items()}
    batch = torch.stack(data.splits["train"].shuffle(seed=seed)[:batch_size]["pixel_values"])
    return {
        "splits": {name: len(split) for name, split in data.splits.items()},
        "labels": data.label_names,
        "label_counts": counts,
        "image_column": data.image_column,
        "label_column": data.label_column,
        "image_sizes": data.profile.describe(),
        "image_size": data.image_size,
        "input": data.input_choice,
        "batch_size": len(batch),
        "batch_mean": batch.mean(dim=(0, 2, 3)).tolist(),
        "batch_std": batch.std(dim=(0, 2, 3)).tolist(),
        "image_mean": list(data.image_mean),
        "image_std": list(data.image_std),
    }


def data_report(facts: dict, source: str) -> str:
    """data_facts as the text scripts/inspect_data.py prints."""
    def fmt(values) -> str:
        return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"

    size, splits = facts["image_size"], facts["splits"]
    lines = [f"source: {source}",
             f"columns: image={facts['image_column']!r} label={facts['label_column']!r}; "
             f"{facts['image_sizes']} -> {size}x{size}",
             f"input: {facts['input']}"]
    lines += [f"{name:<11}{count:>9,} images" for name, count in splits.items()]
    width = max(len(n) for n in facts["labels"])
    lines.append(f"{len(facts['labels'])} labels:" + "".join(f"{n:>12}" for n in splits))
    lines += [f"  {index:>3} {name:<{width}}" + "".join(f"{facts['label_counts'][s][index]:>12,}" for s in splits)
              for index, name in enumerate(facts["labels"])]
    lines.append(f"transformed train batch of {facts['batch_size']}: mean {fmt(facts['batch_mean'])}, std "
                 f"{fmt(facts['batch_std'])} (normalised with mean {fmt(facts['image_mean'])}, std "
                 f"{fmt(facts['image_std'])})")
    return "\n".join(lines)
