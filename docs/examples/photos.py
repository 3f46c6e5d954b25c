"""A few CIFAR-10 validation images as files, for the pages' examples: PNGs named by label, a grayscale one at another
size, and a truncated JPEG (what an unreadable file looks like to the scripts).

    python docs/examples/photos.py ../shared/datasets/cifar10 photos/
"""

import sys
from pathlib import Path

from datasets import load_dataset

source, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
data = load_dataset(source, split="train")
names = data.features["label"].names
for index in (5000, 15000, 40000):
    row = data[index]
    row["img"].save(out / f"{names[row['label']]}_{index}.png")
horse = data[35000]
horse["img"].convert("L").resize((96, 80)).save(out / f"{names[horse['label']]}_35000_gray_96x80.png")
horse["img"].save(out / "broken.jpg")
(out / "broken.jpg").write_bytes((out / "broken.jpg").read_bytes()[:200])
print("\n".join(sorted(path.name for path in out.iterdir())))
