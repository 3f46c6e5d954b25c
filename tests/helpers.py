"""Tiny synthetic data made inside the tests, and the checks that several test modules share."""

import importlib.util
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import torch
from datasets import Dataset, DatasetDict
from PIL import Image
from safetensors.torch import load_file

from training import recipes
from training.stages import GROUPS
from training.synthetic import hub_layout_folder, random_dataset, random_image  # noqa: F401 (shared helpers)

NAMES = ["cat", "dog", "ship", "truck"]
ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 4  # the tiny runs: 32 training images of the `dataset` fixture, batch 8
STAGED_1_1_1 = recipes.get("staged").schedule().with_lengths([1, 1, 1])  # the tiny runs' schedule (tests/tiny_run.py)
RANDOM_AUGMENT = ["--augment", "tutorial"]  # random per-sample augmentation: resume must still be exact


def image_bytes(image: Image.Image, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    return image_bytes(random_image(), "JPEG")[:300]


def tiny_dataset(n_per_class=10, size=(32, 32), names=NAMES, image_column="img", label_column="label",
                 modes=("RGB",), seed=0) -> Dataset:
    return random_dataset(n_per_class, names, size, image_column, label_column, modes, seed)


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
    from unittest import mock
    from transformers import AutoBackbone, AutoModel, AutoModelForImageClassification, pipeline
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    from transformers.models.auto import auto_factory
    folder, x_file = sys.argv[1], sys.argv[2]
    try:
        import modeling_resnet_cbam
        raise SystemExit("the project package is importable: the test proves nothing")
    except ImportError:
        pass
    x = torch.load(x_file)
    classifier = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    as_tuples = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True,
                                                                return_dict=False).eval()
    classify = pipeline("image-classification", model=folder, trust_remote_code=True)
    # AutoBackbone.from_pretrained first asks the Hub whether the name is a repository (a local folder never is):
    # the Hub's answer for a published model is the one thing this offline process stands in for.
    with mock.patch.object(auto_factory, "hf_api") as hub:
        hub.return_value.repo_exists.return_value = True
        backbone = AutoBackbone.from_pretrained(folder, trust_remote_code=True, out_features=["stem", "stage2",
                                                                                              "stage4"]).eval()
    local_class = get_class_from_dynamic_module("modeling_resnet_cbam.ResNetCBAMBackbone", folder)
    local = local_class.from_pretrained(folder, out_indices=[1, 3]).eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 37), dtype=np.uint8))  # grayscale
    with torch.no_grad():
        print(json.dumps({
            "classifier": type(classifier).__name__, "base": type(base).__name__,
            "logits": classifier(x).logits.tolist(), "pooled": base(x).pooler_output.tolist(),
            "tuple": [type(as_tuples(x)).__name__, as_tuples(x)[0].tolist()],
            "pipeline": classify(image, top_k=3),
            "backbone": [type(backbone).__name__, backbone.channels, backbone.strides, local.out_features],
            "feature_maps": [f.tolist() for f in backbone(x).feature_maps],
            "local_maps": [f.tolist() for f in local(x).feature_maps],
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


def load_script(name: str) -> ModuleType:
    """scripts/NAME.py as a module, to call its main(argv) in this process."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def run_script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """One of scripts/ in a fresh process, as a user runs it (in `env`, if given)."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=300, env=env)


def flags(dataset: Path, output_dir: Path, *more: str) -> list[str]:
    """A tiny run's flags beyond tests/tiny_run.py's TINY: the data, 8 validation images, the output folder."""
    return ["--dataset_name", str(dataset), "--validation_split", "8", "--output_dir", str(output_dir), *more]


def assert_follows_schedule(steps: list[dict], schedule, distributed: bool = False) -> None:
    """Every recorded step (tests/tiny_run.py's Recorder) has the schedule's lrs, a fresh optimizer state exactly at
    each stage's start, and changes exactly the groups its stage trains."""
    plan = schedule.over_steps(schedule.total_epochs * STEPS_PER_EPOCH // (2 if distributed else 1))
    assert [s["step"] for s in steps] == list(range(plan.last_step))
    for record in steps:
        step, stage = record["step"], schedule.stages[record["stage"]]
        assert record["lrs"] == {g: plan.lr(g, step) for g in GROUPS}, f"step {step}"
        first = plan.first_steps[record["stage"]]
        assert record["adam_step"] == step - first + 1, f"optimizer state not reset exactly at step {first}"
        for group in GROUPS:
            trained = group in stage.lrs
            assert record["changed"][group] == trained, f"step {step}: {group} changed={record['changed'][group]}"
            if not distributed:
                assert record["requires_grad"][group] == trained


def assert_same_weights(a: Path, b: Path) -> None:
    """The model.safetensors of two output folders hold equal tensors, bit for bit."""
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
