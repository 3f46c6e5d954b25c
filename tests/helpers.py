"""Tiny synthetic data and models made inside the tests."""

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image

NAMES = ["cat", "dog", "ship", "truck"]


def random_image(size=(32, 32), mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def image_bytes(image: Image.Image, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    return image_bytes(random_image(), "JPEG")[:300]


def tiny_dataset(
    n_per_class=10, size=(32, 32), names=NAMES, image_column="img", label_column="label", modes=("RGB",), seed=0
) -> Dataset:
    images, labels = [], []
    for index in range(n_per_class * len(names)):
        images.append(random_image(size, modes[index % len(modes)], seed=seed + index))
        labels.append(index % len(names))
    features = Features({image_column: ImageFeature(), label_column: ClassLabel(names=names)})
    return Dataset.from_dict({image_column: images, label_column: labels}, features=features)


def hub_layout_folder(root: Path, splits: dict[str, Dataset]) -> Path:
    """A folder laid out as a Hub dataset repo (data/<split>-00000-of-00001.parquet), loadable with load_dataset."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        split.to_parquet(root / "data" / f"{name}-00000-of-00001.parquet")
    return root


def image_folder(root: Path, n_per_class=4, names=NAMES, size=(40, 30), fmt="JPEG") -> Path:
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            random_image(size, seed=100 * c + i).save(root / name / f"{i}.{fmt.lower()}", format=fmt)
    return root


def saved_to_disk(root: Path, splits: dict[str, Dataset]) -> Path:
    DatasetDict(splits).save_to_disk(root)
    return root


STANDALONE_LOAD = textwrap.dedent("""
    import importlib.abc, json, sys
    class BlockProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_resnet_cbam", "training"):
                raise ImportError(f"the project package {name} must not be needed")
    sys.meta_path.insert(0, BlockProject())
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoModel, AutoModelForImageClassification, pipeline
    folder, x_file = sys.argv[1], sys.argv[2]
    try:
        import modeling_resnet_cbam
        raise SystemExit("the project package is importable: the test proves nothing")
    except ImportError:
        pass
    x = torch.load(x_file)
    classifier = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    classify = pipeline("image-classification", model=folder, trust_remote_code=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 37), dtype=np.uint8))  # grayscale
    with torch.no_grad():
        print(json.dumps({
            "classifier": type(classifier).__name__, "base": type(base).__name__,
            "logits": classifier(x).logits.tolist(), "pooled": base(x).pooler_output.tolist(),
            "pipeline": classify(image, top_k=3),
        }))
""")


def load_alone(folder: Path, x_file: Path, workdir: Path) -> dict:
    """Load a saved folder in a fresh process where the project's packages cannot be imported."""
    env = {"HF_HOME": str(workdir / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", STANDALONE_LOAD, str(folder), str(x_file)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """One of scripts/ in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=300)
