"""Bad input and faults, as a table: each case's exit code, the words its message must hold, and that an existing
output folder is left exactly as it was (a finished tiny run, copied afresh for each case)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from datasets import concatenate_datasets
from helpers import flags, hub_layout_folder, random_dataset, run_script, tiny_dataset
from safetensors.torch import save_file
from tiny_run import TINY

from training import hub
from training.cli import finetune_main


@pytest.fixture(scope="session")
def finished_run(dataset, tmp_path_factory) -> Path:
    """A finished tiny run (3 epochs, one checkpoint each) whose folder each case copies."""
    output_dir = tmp_path_factory.mktemp("finished") / "out"
    assert finetune_main([*TINY, *flags(dataset, output_dir), "--save_strategy", "epoch"]) == 0
    return output_dir


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def break_newest_checkpoint(folder: Path, how: str) -> str:
    newest = folder / "checkpoint-12"
    if how == "partial":
        (newest / "run_facts.json").unlink()  # a crash while saving: the completion mark was never written
    else:
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 3])
    return str(newest)


# (id, extra flags, how to damage the copied folder first, exit code, words in the message)
FOLDER_CASES = [
    ("rerun-into-a-finished-run", [], None, 2, ["already holds a run (model.safetensors, README.md, checkpoint-12",
                                                "--resume_from_checkpoint last", "--overwrite_output_dir"]),
    ("rerun-with-other-flags", ["--stage_lrs", "1,1,1"], None, 2, ["already holds a run"]),
    ("changed-resume", ["--resume_from_checkpoint", "{out}/checkpoint-4", "--max_train_samples", "16",
                        "--stage_lrs", "1,1,1"], None, 2,
     ["checkpoint-4 is a checkpoint of another run", "split_sizes:", "schedule:", "--allow_changed_run"]),
    ("resume-a-finished-run", ["--resume_from_checkpoint", "last"], None, 2,
     ["checkpoint-12 is the end of its run (step 12 of 12): nothing is left to train"]),
    ("partial-checkpoint-named", ["--resume_from_checkpoint", "{out}/checkpoint-12"], "partial", 2,
     ["checkpoint-12: run_facts.json missing"]),
    ("truncated-weights-in-checkpoint", ["--resume_from_checkpoint", "{out}/checkpoint-12"], "truncated", 2,
     ["checkpoint-12: unreadable (SafetensorError"]),
    ("resume-another-folder-into-a-finished-run", ["--resume_from_checkpoint", "{out}/../elsewhere/checkpoint-4"],
     None, 2, ["already holds a run"]),
    ("bad-flag-into-a-finished-run", ["--optim", "lion_8bit"], None, 2, ["--optim lion_8bit is not supported"]),
]


@pytest.mark.parametrize("case, extra, damage, code, words", FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_an_existing_output_folder_is_never_changed_by_a_refused_run(finished_run, dataset, tmp_path, capsys, case,
                                                                     extra, damage, code, words):
    folder = tmp_path / "out"
    shutil.copytree(finished_run, folder)
    if damage:
        break_newest_checkpoint(folder, damage)
    before = snapshot(folder)
    assert finetune_main([*TINY, *flags(dataset, folder), *[e.format(out=folder) for e in extra]]) == code
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err
    assert snapshot(folder) == before


def test_last_skips_an_incomplete_checkpoint_and_says_so(finished_run, dataset, tmp_path, caplog):
    folder = tmp_path / "out"
    shutil.copytree(finished_run, folder)
    break_newest_checkpoint(folder, "partial")
    (folder / "checkpoint-8" / "run_facts.json").unlink()
    assert finetune_main([*TINY, *flags(dataset, folder), "--resume_from_checkpoint", "last"]) == 0
    out = caplog.text
    assert "skipping the incomplete checkpoint" in out and "checkpoint-12 (run_facts.json missing)" in out
    assert "checkpoint-8 (run_facts.json missing)" in out
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    assert [e["epoch"] for e in history if "stage" in e] == [1, 2, 3], "resumed from checkpoint-4: epochs 2 and 3"


def test_overwrite_output_dir_replaces_the_run_and_says_so(finished_run, dataset, tmp_path, caplog):
    folder = tmp_path / "out"
    shutil.copytree(finished_run, folder)
    (folder / "old-notes.txt").write_text("from the previous run")
    assert finetune_main([*TINY, *flags(dataset, folder), "--save_strategy", "no", "--overwrite_output_dir"]) == 0
    assert "--overwrite_output_dir: deleted the previous run in" in caplog.text
    assert not (folder / "old-notes.txt").exists() and not (folder / "checkpoint-4").exists()
    assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()


def test_a_diverging_run_stops_at_once_and_publishes_nothing(dataset, tmp_path, capsys):
    folder = tmp_path / "out"
    code = finetune_main([*TINY, *flags(dataset, folder), "--recipe", "full", "--stage_epochs", "3",
                          "--learning_rate", "1e30", "--save_strategy", "steps", "--save_steps", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "training diverged at step 2 (stage 1, stem, layer1" in err and "lr now 1e+30): the loss is" in err
    assert "Nothing was saved after the last checkpoint" in err
    assert (folder / "checkpoint-1" / "run_facts.json").is_file(), "the last good checkpoint stays"
    assert not (folder / "checkpoint-2").exists()
    assert not (folder / "model.safetensors").exists() and not (folder / "README.md").exists()


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    files = {"random-bytes.pth": bytes(range(256)) * 40, "text.pth": b"not weights at all\n"}
    for name, content in files.items():
        (root / name).write_bytes(content)
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, root / "whole.safetensors")
    data = (root / "whole.safetensors").read_bytes()
    (root / "corrupt.safetensors").write_bytes(data[:40])
    torch.save(torch.nn.Linear(2, 2), root / "module.pth")  # a pickled module: weights_only refuses to run it
    torch.save([torch.zeros(2)], root / "list.pth")
    return {path.name: path for path in root.iterdir()}


@pytest.mark.parametrize("name, words", [
    ("random-bytes.pth", "not a readable weights file"),
    ("text.pth", "not a readable weights file"),
    ("corrupt.safetensors", "not a readable weights file"),
    ("module.pth", "not a readable weights file (UnpicklingError"),
    ("list.pth", "holds a list, not a state dict of tensors"),
])
def test_a_bad_weights_file_is_named(weight_files, dataset, tmp_path, capsys, name, words):
    code = finetune_main([*TINY, *flags(dataset, tmp_path / "out"), "--backbone_weights", str(weight_files[name])])
    err = capsys.readouterr().err
    assert code == 2 and str(weight_files[name]) in err and words in err, err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def one_class(root: Path) -> Path:
    return hub_layout_folder(root, {"train": random_dataset(10, ["cat"], size=(16, 16))})


@pytest.mark.parametrize("make, extra, words", [
    (None, ["--skip_bad_images"], "--skip_bad_images needs --verify_images"),
    (None, ["--image_column_name", "label"], "the column 'label' holds ClassLabel"),
    (one_class, [], "has 1 class (cat): a classifier needs at least two"),
])
def test_data_mistakes_are_refused_before_training(dataset, tmp_path, capsys, make, extra, words):
    source = make(tmp_path / "ds") if make else dataset
    code = finetune_main([*TINY, *flags(source, tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and words in err, err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_hub_dataset_names_the_offline_alternative(tmp_path, capsys):
    code = finetune_main([*TINY, "--dataset_name", "someone/not-cached", "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot load someone/not-cached from the Hub" in err and "--dataset_name <folder" in err


def test_mixed_image_sizes_train_and_evaluate_on_the_dataloader_path(tmp_path):
    mixed = concatenate_datasets([tiny_dataset(6, size=(16, 16)), tiny_dataset(2, size=(20, 12), seed=70)])
    source = hub_layout_folder(tmp_path / "ds", {"train": mixed})
    assert finetune_main([*TINY, *flags(source, tmp_path / "out"), "--data_on_device", "false",
                          "--save_strategy", "no"]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_inference_scripts_name_what_is_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_script("predict.py", "--model", str(tmp_path / "no-model"), str(tmp_path / "empty"))
    assert done.returncode == 2 and f"no image files in {tmp_path / 'empty'}" in done.stderr
    random_dataset(1, ["a"])[0]["img"].save(tmp_path / "empty" / "one.png")
    done = run_script("predict.py", "--model", str(tmp_path / "no-model"), str(tmp_path / "empty"))
    assert done.returncode == 2 and f"--model {tmp_path / 'no-model'}: no model could be loaded" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_network_for_the_torchvision_weights_names_the_offline_alternatives(monkeypatch):
    from urllib.error import URLError

    from torchvision.models._api import WeightsEnum

    from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification

    def unreachable(self, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", unreachable)
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig())
    with pytest.raises(ValueError, match="cannot download torchvision's resnet18 ImageNet weights .*local "
                                         ".safetensors/.pth file or from random weights"):
        model.load_backbone_weights("torchvision")


def test_no_network_for_the_push_is_one_line_before_training(monkeypatch, tmp_path):
    def offline(self, **kwargs):
        raise ConnectionError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(hub.HfApi, "whoami", offline)
    with pytest.raises(hub.HubError, match="cannot reach the Hub \\(ConnectionError: .*push the folder later"):
        hub.check_push_access("someone/model", token="hf_x")
