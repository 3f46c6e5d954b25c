import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from datasets import Dataset, DatasetInfo, Features, Value
from datasets import Image as ImageFeature
from helpers import (
    NAMES,
    hub_layout_folder,
    image_bytes,
    image_folder,
    random_image,
    run_script,
    saved_to_disk,
    tiny_dataset,
    truncated_jpeg,
)
from torch.utils.data import DataLoader
from transformers import default_data_collator

from training.data import (
    DataArguments,
    DataError,
    labels_of,
    load_image_data,
)
from training.defaults import CIFAR_MEAN, IMAGENET_MEAN
from training.transforms import build_transforms

ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = ROOT.parent / "shared" / "datasets" / "cifar10"


def load(tmp_path, splits=None, **args):
    folder = hub_layout_folder(tmp_path / "ds", splits or {"train": tiny_dataset()})
    return load_image_data(DataArguments(dataset_name=str(folder), **args))


def test_hub_layout_folder_gives_stratified_train_and_validation(tmp_path):
    data = load(tmp_path)
    assert (len(data.splits["train"]), len(data.splits["validation"])) == (36, 4)
    assert Counter(labels_of(data.splits["validation"], "label").tolist()) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert data.label_names == NAMES and data.id2label[3] == "truck" and data.label2id["dog"] == 1
    assert (data.image_column, data.label_column, data.eval_split) == ("img", "label", "validation")
    row = data.splits["train"][0]
    assert row["pixel_values"].shape == (3, 32, 32) and row["pixel_values"].dtype == torch.float32
    assert set(row) == {"pixel_values", "labels"}


def test_the_split_is_seeded_and_a_count_works(tmp_path):
    first = load(tmp_path, validation_split="8")
    again = load_image_data(DataArguments(dataset_name=str(tmp_path / "ds"), validation_split="8"))
    other = load_image_data(DataArguments(dataset_name=str(tmp_path / "ds"), validation_split="8"), seed=1)
    rows = [labels_of(d.splits["validation"], "__row__").tolist() for d in (first, again, other)]
    assert len(rows[0]) == 8 and rows[0] == rows[1] and rows[0] != rows[2]


def test_too_small_a_train_split_to_stratify_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot carve a stratified validation split \\(0.1\\) out of 8 training"):
        load(tmp_path, {"train": tiny_dataset(2)})


def test_own_validation_and_test_splits_are_used(tmp_path):
    splits = {"train": tiny_dataset(), "validation": tiny_dataset(2, seed=50), "test": tiny_dataset(3, seed=90)}
    data = load(tmp_path, splits)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 40, "validation": 8, "test": 12}
    assert data.eval_split == "test"


def test_max_samples_take_the_first_n_after_a_seeded_shuffle(tmp_path):
    full = load(tmp_path)
    data = load_image_data(DataArguments(dataset_name=str(tmp_path / "ds"), max_train_samples=5, max_eval_samples=2))
    again = load_image_data(DataArguments(dataset_name=str(tmp_path / "ds"), max_train_samples=5, max_eval_samples=2))
    for name, count in (("train", 5), ("validation", 2)):
        kept = labels_of(data.splits[name], "__row__").tolist()
        every = labels_of(full.splits[name], "__row__").tolist()
        assert kept == labels_of(full.splits[name].shuffle(seed=42), "__row__").tolist()[:count]
        assert set(kept) <= set(every) and len(set(kept)) == count, "distinct rows of the same split"
        assert kept != every[:count], "a shuffle, not the first rows"
        assert kept == labels_of(again.splits[name], "__row__").tolist(), "the same rows every time"


def test_save_to_disk_folder_and_other_column_names(tmp_path):
    split = tiny_dataset(image_column="image", label_column="fine_label")
    data = load_image_data(DataArguments(dataset_name=str(saved_to_disk(tmp_path / "disk", {"train": split}))))
    assert (data.image_column, data.label_column) == ("image", "fine_label")


def test_image_folders_with_their_own_validation(tmp_path):
    train = image_folder(tmp_path / "train")
    validation = image_folder(tmp_path / "val", n_per_class=2, names=["dog", "truck"])  # a subset, other order
    data = load_image_data(DataArguments(train_dir=str(train), validation_dir=str(validation), image_size=24))
    assert data.label_names == sorted(NAMES)
    assert len(data.splits["validation"]) == 4
    assert sorted({data.label_names[i] for i in labels_of(data.splits["validation"], "label")}) == ["dog", "truck"]
    assert data.native_size == (40, 30) and data.image_mean == IMAGENET_MEAN
    assert data.splits["train"][0]["pixel_values"].shape == (3, 24, 24)
    assert data.splits["validation"][0]["pixel_values"].shape == (3, 24, 24)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "1"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    data = load(tmp_path, {"train": tiny_dataset(modes=(mode,))})
    assert data.splits["train"][0]["pixel_values"].shape == (3, 32, 32)
    assert data.splits["validation"][0]["pixel_values"].shape == (3, 32, 32)


def test_a_16_bit_scan_keeps_its_tones_and_a_transparent_pixel_shows_white(tmp_path):
    from PIL import Image

    from training.images import decode_image

    ramp = np.linspace(0, 65535, 64 * 16).reshape(16, 64).astype(np.uint16)  # black to white, as a viewer shows
    Image.fromarray(ramp).save(tmp_path / "scan.png")
    shown = np.asarray(decode_image({"path": str(tmp_path / "scan.png"), "bytes": None}, "train", 0))
    assert shown.shape == (16, 64, 3) and np.abs(shown[..., 0].astype(int) - ramp // 257).max() <= 1, "scaled"
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[0, 0, 3] = 200, 255  # red under full transparency, but the first pixel
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    shown = np.asarray(decode_image({"path": str(tmp_path / "cutout.png"), "bytes": None}, "train", 0))
    assert shown[0, 0].tolist() == [200, 0, 0] and shown[1, 1].tolist() == [255, 255, 255]


def test_string_labels_are_named(tmp_path):
    images = [image_bytes(random_image(seed=i)) for i in range(12)]
    split = Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in images], "label": ["b", "a", "c"] * 4},
        features=Features({"image": ImageFeature(), "label": Value("string")}),
    )
    data = load(tmp_path, {"train": split}, validation_split="3")
    assert data.label_names == ["a", "b", "c"]


def test_a_missing_column_lists_the_columns(tmp_path):
    with pytest.raises(DataError, match="--label_column_name 'target' is not a column; the columns are: img, label"):
        load(tmp_path, label_column_name="target")
    split = tiny_dataset(image_column="picture")
    with pytest.raises(DataError, match="no image column: looked for img, image; the columns are: picture, label"):
        load(tmp_path / "2", {"train": split})


def test_a_label_outside_the_classes_names_the_row(tmp_path):
    good = tiny_dataset(2)
    table = good.data.table.set_column(1, "label", pa.array([0, 1, 2, 3, 7, 1, 2, 3], pa.int64()))
    bad = Dataset(table, info=DatasetInfo(features=good.features))
    with pytest.raises(DataError, match=r"train split has 1 labels outside 0..3: row 4 \(label 7\)"):
        load_image_data(DataArguments(dataset_name=str(saved_to_disk(tmp_path / "d", {"train": bad}))))
    unlabeled = {"train": tiny_dataset(), "test": tiny_dataset(1).map(lambda r: {"label": -1})}
    with pytest.raises(DataError, match=r"test split has 4 labels outside 0..3: row 0 \(label -1\)"):
        load(tmp_path, unlabeled)


def test_an_empty_split_is_named(tmp_path):
    splits = {"train": tiny_dataset(), "test": tiny_dataset().select([])}
    with pytest.raises(DataError, match=r"cannot load .*ds: .*\"test\" corresponds to no data"):
        load(tmp_path, splits)
    with pytest.raises(DataError, match="--max_eval_samples must be at least 1"):
        load(tmp_path / "2", max_eval_samples=0)
    with pytest.raises(DataError, match="the train split is empty"):
        load(tmp_path / "3", {"train": with_bad_images(list(range(40)))}, verify_images=True, skip_bad_images=True)


def with_bad_images(rows: list[int]) -> Dataset:
    split = tiny_dataset().cast_column("img", ImageFeature(decode=False))
    values = list(split["img"])
    for row in rows:
        values[row] = {"bytes": truncated_jpeg(), "path": f"photos/broken_{row}.jpg"}
    return Dataset.from_dict({"img": values, "label": list(split["label"])}, features=tiny_dataset().features)


def test_a_bad_image_names_split_row_and_file_even_from_a_worker(tmp_path):
    data = load(tmp_path, {"train": with_bad_images([7])}, validation_split="4")
    train = data.splits["train"]
    position = labels_of(train, "__row__").tolist().index(7)
    with pytest.raises(DataError, match=r"cannot decode the image of train row 7 \(photos/broken_7.jpg\)"):
        train[position]
    loader = DataLoader(train, batch_size=36, num_workers=1, collate_fn=default_data_collator)
    with pytest.raises(DataError, match=r"train row 7 \(photos/broken_7.jpg\)") as error:
        next(iter(loader))
    assert str(error.value).startswith("cannot decode the image of train row 7")  # torch's worker text left out
    assert "\n" not in str(error.value) and "Traceback" not in str(error.value)


def test_verify_images_lists_every_bad_one_and_skip_drops_them(tmp_path):
    with pytest.raises(DataError) as error:
        load(tmp_path, {"train": with_bad_images([3, 21])}, verify_images=True)
    assert "2 images cannot be decoded" in str(error.value)
    assert "row 3 (photos/broken_3.jpg)" in str(error.value)
    assert "row 21 (photos/broken_21.jpg)" in str(error.value)
    data = load_image_data(DataArguments(dataset_name=str(tmp_path / "ds"), verify_images=True, skip_bad_images=True))
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 38
    batch = next(iter(DataLoader(data.splits["train"], batch_size=64, collate_fn=default_data_collator)))
    assert batch["pixel_values"].shape[0] == len(data.splits["train"])


def test_eval_transform_normalises_and_train_transform_augments(tmp_path):
    data = load(tmp_path)
    mean_image = random_image().point(lambda _: 0)  # a black image normalises to -mean/std
    x = build_transforms(data, train=False)(mean_image.convert("RGB"))
    expected = -torch.tensor(CIFAR_MEAN) / torch.tensor(data.image_std)
    torch.testing.assert_close(x.mean(dim=(1, 2)), expected)
    image = random_image(seed=3)
    train = build_transforms(data, train=True)
    torch.manual_seed(0)
    a, b = train(image), train(image)
    assert a.shape == b.shape == (3, 32, 32) and not torch.equal(a, b)
    plain = build_transforms(data, train=True, augment="none")
    assert torch.equal(plain(image), build_transforms(data, train=False)(image))


def test_bad_augment_value_is_refused():
    with pytest.raises(DataError, match="--augment"):
        DataArguments(augment="strong")


@pytest.mark.skipif(not CIFAR10.is_dir(), reason="../shared/datasets/cifar10 is absent")
def test_real_cifar10_copy_slice():
    data = load_image_data(DataArguments(dataset_name=str(CIFAR10), max_train_samples=64, max_eval_samples=32))
    assert data.label_names[:3] == ["airplane", "automobile", "bird"] and len(data.label_names) == 10
    batch = default_data_collator([data.splits["validation"][i] for i in range(32)])
    assert batch["pixel_values"].shape == (32, 3, 32, 32)
    assert abs(batch["pixel_values"].mean().item()) < 0.3


def test_inspect_data_script_writes_facts_and_grid(tmp_path):
    folder = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset()})
    done = run_script("inspect_data.py", "--dataset_name", str(folder), "--grid", str(tmp_path / "grid.png"),
                      "--json", str(tmp_path / "facts.json"), "--grid_size", "8")
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["splits"] == {"train": 36, "validation": 4} and facts["labels"] == NAMES
    assert len(facts["batch_mean"]) == len(facts["batch_std"]) == 3
    assert np.isfinite(facts["batch_std"]).all()
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert "36 images" in done.stdout and "cat" in done.stdout
    assert facts["image_size"] == 64 and "on a pretrained backbone" in done.stdout  # finetune.py's default weights
    scratch = run_script("inspect_data.py", "--dataset_name", str(folder), "--pretrained", "false")
    assert scratch.returncode == 0 and "the seed recipe's input, 32 px, CIFAR-10 mean and std" in scratch.stdout
    bad = run_script("inspect_data.py", "--dataset_name", str(folder), "--image_column_name", "nope")
    assert bad.returncode == 2 and "the columns are: img, label" in bad.stderr
