"""Reading a dataset's image files: decode to RGB naming the file, check every image, and measure sizes."""

import io
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

ROW = "__row__"  # the row in the source split, carried along so that errors can name it


class DataError(ValueError):
    """Bad input data, with a message that says what and where.

    Raised in a DataLoader worker, torch re-raises it in the main process as a DataError built from its own text
    ("Caught DataError in DataLoader worker process 0. Original Traceback (most recent call last): ... DataError:
    <the message>"): the message alone is kept, so that the user reads one line."""

    def __init__(self, message: str = ""):
        if message.startswith("Caught ") and "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].split("DataError: ", 1)[-1]
        super().__init__(message)


def _image_source(value: dict):
    """What PIL opens for a `datasets` image value (decode=False): its bytes, else its file."""
    return io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]


EXIF_ORIENTATION = 0x0112  # the tag every phone and camera writes: how to turn the stored pixels to show them
TURNED = {5, 6, 7, 8}  # its values that turn the image by 90 degrees (width and height swap)


TRANSPARENT_BACKGROUND = (255, 255, 255)  # what a transparent pixel shows: white, as a browser page or viewer shows it
# the white of each wide mode, scaled to 255: 16-bit integers (PNG, TIFF; Pillow opens some as 32-bit "I"), floats
WIDE_MODE_WHITE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def upright_rgb(image: Image.Image) -> Image.Image:
    """An image as a viewer shows it, in RGB: its EXIF orientation applied (as `datasets` and transformers'
    `pipeline` do, so that training and every use of the saved model see the same photo); a 16-bit or float image
    scaled to 8 bits (Pillow's own conversion clips it: a 16-bit scan turns almost white); transparency over
    TRANSPARENT_BACKGROUND (the conversion alone would show the colours stored under transparent pixels); any
    other mode converted."""
    image = ImageOps.exif_transpose(image)
    if image.mode in WIDE_MODE_WHITE:
        scaled = np.asarray(image, dtype=np.float64) * (255 / WIDE_MODE_WHITE[image.mode])
        image = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, TRANSPARENT_BACKGROUND)
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as a viewer shows the image, from its header: swapped where its EXIF orientation turns it."""
    width, height = image.size
    return (height, width) if image.getexif().get(EXIF_ORIENTATION) in TURNED else (width, height)


def decode_image(value: dict | Image.Image, split: str, row: int) -> Image.Image:
    """An upright RGB PIL image from a `datasets` image value; a DataError naming split, row and file when it is
    bad."""
    if isinstance(value, Image.Image):
        return upright_rgb(value)
    try:
        with Image.open(_image_source(value)) as image:
            image.load()
            return upright_rgb(image)
    except Exception as error:
        where = f" ({value['path']})" if value.get("path") else ""
        raise DataError(f"cannot decode the image of {split} row {row}{where}: {error}") from error


def verify_images(splits: DatasetDict, image_column: str, skip_bad: bool) -> DatasetDict:
    """Decode every image; list every bad one in one error, or drop them with skip_bad and say how many."""
    bad: dict[str, list[int]] = {}
    messages = []
    for name, split in splits.items():
        for position, (value, row) in enumerate(zip(split[image_column], split[ROW], strict=True)):
            try:
                decode_image(value, name, row)
            except DataError as error:
                bad.setdefault(name, []).append(position)
                messages.append(str(error))
    if not messages:
        logger.info("verified every image: all decode")
        return splits
    if not skip_bad:
        raise DataError(
            f"{len(messages)} images cannot be decoded (drop them with --skip_bad_images):\n  " + "\n  ".join(messages)
        )
    logger.warning("dropping %d images that cannot be decoded:\n  %s", len(messages), "\n  ".join(messages))
    return DatasetDict(
        {name: split.select(sorted(set(range(len(split))) - set(bad.get(name, [])))) for name, split in splits.items()}
    )



@dataclass(frozen=True)
class SizeProfile:
    """The sizes (width, height) of a seeded sample of a split's images, read from their headers (nothing decoded),
    and how many images the split holds. A folder's images have many sizes: its first file says nothing of them."""

    sizes: tuple[tuple[int, int], ...]
    total: int

    @property
    def median_short_side(self) -> int:
        return int(np.median([min(size) for size in self.sizes])) if self.sizes else 0

    @property
    def uniform(self) -> tuple[int, int] | None:
        """The one size of every sampled image, or None when they differ."""
        return self.sizes[0] if self.sizes and len(set(self.sizes)) == 1 else None

    def describe(self) -> str:
        """'images 190x140 to 2592x1944 px (median shorter side 375; 100 of 245 sampled)' or 'images 32x32 px ...'."""
        sampled = f"{len(self.sizes):,} of {self.total:,} sampled" if len(self.sizes) < self.total \
            else f"all {self.total:,} read"
        if self.uniform:
            return f"images {self.uniform[0]}x{self.uniform[1]} px ({sampled})"
        by_area = sorted(self.sizes, key=lambda size: size[0] * size[1])
        (w0, h0), (w1, h1) = by_area[0], by_area[-1]
        return f"images {w0}x{h0} to {w1}x{h1} px (median shorter side {self.median_short_side}; {sampled})"


def profile_sizes(split: Dataset, image_column: str, sample: int = 1000, seed: int = 0) -> SizeProfile:
    """The sizes of up to `sample` images of a split (a seeded sample), from their headers; an image whose header
    cannot be read is left out here (decoding names it, with its file)."""
    rows = np.random.default_rng(seed).permutation(len(split))[:sample]
    sizes = []
    for value in split.select(sorted(rows.tolist()))[image_column]:
        try:
            if isinstance(value, Image.Image):
                sizes.append(upright_size(value))
                continue
            with Image.open(_image_source(value)) as image:
                sizes.append(upright_size(image))
        except Exception:  # noqa: BLE001 - any unreadable header: decoding reports the file
            continue
    return SizeProfile(tuple(sizes), len(split))


def check_image_folder(root: Path) -> None:
    """An image folder's class sub-folders each hold a file: `imagefolder` drops an empty one without a word (and
    with one class left, reports no label column at all)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (an image folder has one sub-folder of images per class)")
    layout = f"an image folder holds one sub-folder per class, each with that class's images ({root / 'cat'}/1.jpg, " \
             f"{root / 'dog'}/2.jpg, ...)"
    classes = [path.name for path in sorted(root.iterdir()) if path.is_dir() and not path.name.startswith(".")]
    if not classes:
        loose = sum(1 for path in root.iterdir() if path.is_file() and not path.name.startswith("."))
        raise DataError(f"{root}: no class folder{f' ({loose} files directly in it)' if loose else ''}: {layout}")
    if len(classes) == 1:
        raise DataError(f"{root}: one class folder ({classes[0]}); a classifier needs two classes or more: {layout}")
    for folder, subfolders, _ in os.walk(root):  # os.walk does not follow links: a loop is found, not walked
        here = Path(folder).resolve()
        for name in subfolders:
            link = Path(folder) / name
            if link.is_symlink() and link.resolve() in (here, *here.parents):
                raise DataError(f"{root}: {link.relative_to(root)} is a link back to {link.resolve()} (a loop: its "
                                "images would be found again, under another name); remove the link")
    empty = [path.name for path in sorted(root.iterdir()) if path.is_dir() and not any(p.is_file()
                                                                                        for p in path.rglob("*"))]
    if empty:
        raise DataError(f"{root}: the class folder(s) {', '.join(empty)} hold no image; add images or remove them")
    _warn_unread_files(root)
    nested = next((path for path in sorted(root.glob("*/*/**/*")) if path.is_file() and not
                   any(part.startswith(".") for part in path.relative_to(root).parts)), None)
    if nested is not None:  # `imagefolder` would take its folder as a label of another depth, and find no labels
        cls = nested.relative_to(root).parts[0]
        raise DataError(f"{root}: {nested.relative_to(root)} is in a sub-folder of the class folder {cls}/; an image "
                        f"folder holds its images directly in one folder per class: move them into {root / cls} "
                        "or out of the image folder")


def _warn_unread_files(root: Path) -> None:
    """Files in the class folders of a type `imagefolder` does not read (an iPhone's .heic, a .txt note) are left out
    of the data: said with their count by type, so that a class that lost its photos is noticed."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    unread = Counter(path.suffix.lower() or path.name for path in root.glob("*/*") if path.is_file()
                     and not path.name.startswith(".") and path.suffix.lower() not in ImageFolder.EXTENSIONS)
    if unread:
        kinds = ", ".join(f"{suffix}: {count}" for suffix, count in unread.most_common())
        logger.warning("%s: %d file(s) of a type the image loader does not read are left out (%s); convert photos to "
                       "JPEG or PNG to train on them", root, unread.total(), kinds)
