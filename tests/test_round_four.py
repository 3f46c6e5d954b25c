"""Round four of trying the project as a new user would: no user file is replaced by an output flag, and every
mistake is named before any work."""

import json

import pytest
import torch
from helpers import image_folder, load_script, random_image
from tiny_run import TINY

from training.cli import finetune_main
from training.inference import inference_device
from training.study import study_main


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    random_image((24, 16)).save(path, format="JPEG")
    return path


# (script, its flags with PHOTO for the user's photo and DIR for a folder, what the refusal says); each is refused
# before any model or data loads, so a model that does not exist is never reached
CASES = [
    ("predict", ["--model", "nothing", "--json", "PHOTO", "PHOTO"], "--json PHOTO is one of this command's inputs"),
    ("evaluate_model", ["--model", "nothing", "--plot", "PHOTO"], "--plot PHOTO exists and is not a .png file"),
    ("evaluate_model", ["--model", "nothing", "--json", "DIR"], "--json DIR is a folder"),
    ("evaluate_model", ["--model", "nothing", "--top_losses", "4", "--top_losses_plot", "PHOTO/grid.png"],
     "PHOTO is a file, not a folder"),
    ("lr_find", ["--plot", "PHOTO"], "--plot PHOTO exists and is not a .png file"),
    ("compare_runs", ["--plot", "PHOTO/curves.png"], "PHOTO is a file, not a folder"),
    ("attention_maps", ["--model", "nothing", "--out_dir", "PHOTO", "PHOTO"], "--out_dir PHOTO is a file"),
    ("inspect_data", ["--json", "PHOTO"], "--json PHOTO exists and is not a .json file"),
]


@pytest.mark.parametrize("script, flags, words", CASES, ids=[f"{case[0]}-{case[2][:20]}" for case in CASES])
def test_an_output_flag_never_replaces_a_users_file(tmp_path, photo, capsys, script, flags, words):
    before = photo.read_bytes()

    def place(text: str) -> str:
        return text.replace("PHOTO", str(photo)).replace("DIR", str(tmp_path))

    assert load_script(script).main([place(flag) for flag in flags]) == 2
    assert place(words) in capsys.readouterr().err
    assert photo.read_bytes() == before


def test_report_only_on_a_missing_or_empty_study_folder_is_an_error_that_writes_nothing(tmp_path, capsys):
    assert study_main(["--output_dir", str(tmp_path / "absent"), "--report_only", "true"]) == 2
    assert "is not a folder of the study's runs" in capsys.readouterr().err and not (tmp_path / "absent").exists()
    (tmp_path / "empty").mkdir()
    assert study_main(["--output_dir", str(tmp_path / "empty"), "--report_only", "true"]) == 2
    assert "holds no finished run of these flags" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize("content, words", [
    (None, "the run file cannot be read"),
    ("recipe: [staged\n", "not valid YAML"),
    ("- --recipe\n- fast\n", "holds one mapping of flag names to values"),
    ("", "not nothing"),
])
def test_a_bad_run_file_is_named_without_a_traceback(tmp_path, capsys, content, words):
    path = tmp_path / "run.yaml"
    if content is not None:
        path.write_text(content)
    assert finetune_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: " in err and words in err and "Traceback" not in err


def test_image_size_zero_is_refused_not_replaced_by_the_default(tmp_path, capsys):
    assert finetune_main(["--image_size", "0", "--output_dir", str(tmp_path / "out")]) == 2
    assert "--image_size must be at least 16 px" in capsys.readouterr().err


@pytest.mark.parametrize("device, words", [("gpu", "is not a device"), ("meta", "only cpu and cuda"),
                                           pytest.param("cuda", "sees no CUDA GPU", marks=pytest.mark.skipif(
                                               torch.cuda.is_available(), reason="a GPU is present here"))])
def test_a_device_this_machine_cannot_use_is_named(device, words):
    with pytest.raises(ValueError, match=words):
        inference_device(device)


def test_a_stage_that_trains_a_group_the_model_lacks_is_refused_before_training(dataset, tmp_path, capsys):
    stages = tmp_path / "stages.json"
    stages.write_text(json.dumps([{"epochs": 1, "train": ["cbam"], "lr": 1e-3}, {"epochs": 1, "lr": 1e-4}]))
    code = finetune_main([*TINY, "--dataset_name", str(dataset), "--output_dir", str(tmp_path / "out"),
                          "--stages_file", str(stages), "--cbam_placement", "none", "--stage_epochs", "1,1"])
    assert code == 2
    assert "stage 1 trains cbam, which hold no parameter in this model (--cbam_placement none" in \
        capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoint-1").exists()


def test_a_model_without_cbam_is_not_said_to_train_cbam(dataset, tmp_path):
    out = tmp_path / "out"
    assert finetune_main([*TINY, "--dataset_name", str(dataset), "--validation_split", "8", "--output_dir", str(out),
                          "--cbam_placement", "none", "--save_strategy", "no"]) == 0
    stage_rows = [line for line in (out / "README.md").read_text().splitlines() if " at lr " in line]
    assert stage_rows == ["| 1 | 1 | stem, head at lr 0.001 | 3,908 |",
                          "| 2 | 1 | stem, layer3, layer4, head at lr 0.0001 | 4,596,036 |",
                          "| 3 | 1 | stem, layer1, layer2, layer3, layer4, head at lr 0.0001 | 4,900,164 |"]


def _flat(root):
    root.mkdir()
    for i in range(3):
        random_image((40, 30), seed=i).save(root / f"{i}.jpg")


def _one_class(root):
    image_folder(root, n_per_class=3, names=["cat"])


def _loop(root):
    image_folder(root, n_per_class=3, names=["cat", "dog"])
    (root / "cat" / "again").symlink_to(root / "cat", target_is_directory=True)


@pytest.mark.parametrize("make, words", [
    (_flat, "photos: no class folder (3 files directly in it): an image folder holds one sub-folder per class"),
    (_one_class, "photos: one class folder (cat); a classifier needs two classes or more: an image folder holds"),
    (_loop, "photos: cat/again is a link back to"),
], ids=["flat", "one-class", "symlink-loop"])
def test_an_image_folder_of_the_wrong_layout_is_told_the_layout_not_a_flag(tmp_path, capsys, make, words):
    make(tmp_path / "photos")
    code = finetune_main(["--train_dir", str(tmp_path / "photos"), "--output_dir", str(tmp_path / "out"),
                          "--backbone_weights", "none"])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "--label_column_name" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_card_names_a_stages_file_by_its_name_not_its_path(dataset, tmp_path):
    stages = tmp_path / "my" / "stages.json"
    stages.parent.mkdir()
    stages.write_text('[{"epochs": 1, "lr": 1e-3}]')
    out = tmp_path / "out"
    assert finetune_main([*TINY, "--dataset_name", str(dataset), "--validation_split", "8", "--output_dir", str(out),
                          "--stages_file", str(stages), "--stage_epochs", "1", "--save_strategy", "no"]) == 0
    card = (out / "README.md").read_text()
    assert "recipe `stages.json`" in card and str(stages.parent) not in card


def test_the_same_folder_as_train_and_validation_is_warned_about(tmp_path, caplog):
    import logging

    from training.data import DataArguments, load_image_data

    folder = image_folder(tmp_path / "photos", n_per_class=3, names=["cat", "dog"])
    with caplog.at_level(logging.WARNING, logger="training.data"):
        load_image_data(DataArguments(train_dir=str(folder), validation_dir=str(tmp_path / "photos" / ".." / "photos")),
                        seed=0)
    assert any("--train_dir and --validation_dir are the same folder" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fact, other", [("layer_type", "bottleneck"), ("cbam_style", "authors")])
def test_a_checkpoint_from_before_a_model_fact_existed_still_resumes(tmp_path, fact, other):
    """Run facts written before the model had a block type or a CBAM style were all basic blocks and the tutorial's
    CBAM: not a change of run; another value is one."""
    from training.checkpoints import LATER_MODEL_FACTS, RUN_FACTS, changed_facts

    model = {"depths": [2, 2, 2, 2], "stem": "imagenet", "crop_pct": 1.0}
    (tmp_path / RUN_FACTS).write_text(json.dumps({"model": model, "seed": 1}))
    now = {**model, **LATER_MODEL_FACTS}
    assert changed_facts(tmp_path, {"model": now, "seed": 1}) == []
    changed = changed_facts(tmp_path, {"model": {**now, fact: other}, "seed": 1})
    then, now_said = changed[0].split(" in the checkpoint, ")
    assert len(changed) == 1 and f'"{fact}": "{LATER_MODEL_FACTS[fact]}"' in then and f'"{fact}": "{other}"' in now_said


def test_a_batch_whose_training_step_cannot_fit_is_refused_with_both_figures(dataset, tmp_path, capsys, monkeypatch):
    """--image_size 4096 was killed by the kernel with no message: a step that cannot fit in the free memory is
    refused before the first step, naming what it needs and what is free; the lock does not stay behind."""
    from helpers import flags

    import training.defaults
    from modeling_resnet_cbam import ResNetCBAMConfig
    from training.defaults import training_bytes

    def per_image(size):  # the outputs one more image adds
        config = ResNetCBAMConfig(depths=[1, 1, 1, 1], image_size=size)
        return training_bytes(config, 2) - training_bytes(config, 1)

    assert 3.5 < per_image(32) / per_image(16) <= 4, "twice the side: four times the maps (the head's: the same)"
    assert training_bytes(ResNetCBAMConfig(depths=[1, 1, 1, 1], stem="imagenet", image_size=16), 1) > 0  # 1x1 maps
    step = training_bytes(ResNetCBAMConfig(depths=[1, 1, 1, 1], image_size=16), 8)
    monkeypatch.setattr(training.defaults, "free_memory", lambda device: step // 2)
    out = tmp_path / "out"
    assert finetune_main([*TINY, *flags(dataset, out)]) == 2
    err = capsys.readouterr().err
    assert "--image_size 16 at --per_device_train_batch_size 8: a training step of this network holds at least" in err
    assert "GiB free; lower --per_device_train_batch_size or --image_size" in err and "Traceback" not in err
    assert not (out / ".run.lock").exists()


def test_the_processes_of_one_cpu_machine_share_its_memory(monkeypatch):
    import training.defaults
    from modeling_resnet_cbam import ResNetCBAMConfig
    from training.defaults import check_training_memory, training_bytes
    from training.hardware import Launch

    config = ResNetCBAMConfig(depths=[1, 1, 1, 1], image_size=16)
    monkeypatch.setattr(training.defaults, "free_memory", lambda device: training_bytes(config, 8) * 3 // 2)
    check_training_memory(config, 8, torch.device("cpu"), half=False)  # one process: fits
    monkeypatch.setattr(training.defaults, "launch", lambda: Launch(world_size=2, local_world_size=2))
    with pytest.raises(ValueError, match="the training steps of this machine's 2 processes hold at least"):
        check_training_memory(config, 8, torch.device("cpu"), half=False)


def test_files_the_image_loader_does_not_read_are_counted_by_type(tmp_path, caplog):
    """An iPhone's .heic photos were dropped without a word: they are counted, by type, with what to do."""
    from training.data import DataArguments, load_image_data

    folder = image_folder(tmp_path / "photos", n_per_class=4, names=("ants", "bees"))
    (folder / "ants" / "IMG_0001.HEIC").write_bytes(b"not read")
    (folder / "bees" / "IMG_0002.heic").write_bytes(b"not read")
    (folder / "bees" / "notes.txt").write_text("taken in June")
    (folder / "bees" / ".DS_Store").write_bytes(b"hidden: not a photo of anyone's")
    data = load_image_data(DataArguments(train_dir=str(folder), validation_split="2"), seed=0)
    assert sum(len(split) for split in data.splits.values()) == 8  # the photos, and only them
    said = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert len(said) == 1 and "3 file(s) of a type the image loader does not read are left out (.heic: 2, .txt: 1)" \
        in said[0]
