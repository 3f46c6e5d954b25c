"""Synthetic image-classification data in the layouts `datasets` reads: for tests and benchmarks, never training."""

from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image


def random_image(size=(32, 32), mode="RGB", seed=0) -> Image.Image:
    """Uniform noise of `size` (width, height), converted to `mode`."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def random_dataset(n_per_class: int, names: list[str], size=(32, 32), image_column="img", label_column="label",
                   modes=("RGB",), seed=0) -> Dataset:
    """n_per_class noise images per class, labels cycling through the classes, with a ClassLabel feature."""
    count = n_per_class * len(names)
    images = [random_image(size, modes[index % len(modes)], seed=seed + index) for index in range(count)]
    features = Features({image_column: ImageFeature(), label_column: ClassLabel(names=list(names))})
    return Dataset.from_dict({image_column: images, label_column: [i % len(names) for i in range(count)]},
                             features=features)


def hub_layout_folder(root: Path, splits: dict[str, Dataset]) -> Path:
    """A folder laid out as a Hub dataset repo (data/<split>-00000-of-00001.parquet), loadable with load_dataset."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        split.to_parquet(root / "data" / f"{name}-00000-of-00001.parquet")
    return root
