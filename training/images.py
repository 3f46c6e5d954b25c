"""Reading a dataset's image files: decode to RGB naming the file, check every image, and measure sizes."""

import io
import logging

from datasets import DatasetDict
from PIL import Image

logger = logging.getLogger(__name__)

ROW = "__row__"  # the row in the source split, carried along so that errors can name it


class DataError(ValueError):
    """Bad input data, with a message that says what and where."""



def decode_image(value: dict | Image.Image, split: str, row: int) -> Image.Image:
    """An RGB PIL image from a `datasets` image value; a DataError naming split, row and file when it is bad."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        with Image.open(source) as image:
            image.load()
            return image.convert("RGB")
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

