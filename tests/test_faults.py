"""Bad input and faults, as a table: each case's exit code, the words its message must hold, and that an existing
output folder is left exactly as it was (a finished tiny run, copied afresh for each case)."""

import errno
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import concatenate_datasets
from helpers import ROOT, flags, hub_layout_folder, random_dataset, run_script, tiny_dataset
from safetensors.torch import save_file
from tiny_run import TINY

from training import hub
from training.backbones import load_backbone_weights
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
    elif how in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (newest / how).write_bytes(np.random.default_rng(0).bytes(5000))  # garbage where a pickle should be
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
     ["checkpoint-12: model.safetensors is unreadable (SafetensorError"]),
    *[(f"garbage-{name}-named", ["--resume_from_checkpoint", "{out}/checkpoint-12"], name, 2,
       [f"checkpoint-12: {name} is unreadable (UnpicklingError"]) for name in ("optimizer.pt", "scheduler.pt",
                                                                                 "rng_state.pth")],
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


def test_last_skips_a_checkpoint_with_a_garbage_optimizer_file(finished_run, dataset, tmp_path, caplog):
    folder = tmp_path / "out"
    shutil.copytree(finished_run, folder)
    break_newest_checkpoint(folder, "optimizer.pt")
    (folder / "run_complete.json").unlink()  # so that a resume of checkpoint-8 is not refused as a finished run
    assert finetune_main([*TINY, *flags(dataset, folder), "--resume_from_checkpoint", "last"]) == 0
    assert "checkpoint-12 (optimizer.pt is unreadable (UnpicklingError" in caplog.text


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
    assert not (folder / "checkpoint-4").exists()  # the previous run's own files are gone, the user's are kept
    assert (folder / "old-notes.txt").read_text() == "from the previous run" and "kept what this project" in caplog.text
    assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()


def diverging_run(dataset: Path, folder: Path, capsys, *more: str) -> tuple[int, str]:
    """A tiny run whose lr (1e30) makes the loss non-finite at step 2: its exit code and stderr."""
    code = finetune_main([*TINY, *flags(dataset, folder), "--recipe", "full", "--stage_epochs", "3",
                          "--learning_rate", "1e30", *more])
    return code, capsys.readouterr().err


def test_a_diverging_run_stops_before_the_next_checkpoint_and_publishes_nothing(dataset, tmp_path, capsys):
    folder = tmp_path / "out"
    code, err = diverging_run(dataset, folder, capsys, "--save_strategy", "steps", "--save_steps", "1")
    assert code == 1
    assert "training diverged at step 2 (stage 1, stem, layer1" in err and "lr then 1e+30): the loss was" in err
    assert "stopped at step 2. Nothing was saved after step 1" in err
    assert (folder / "checkpoint-1" / "run_facts.json").is_file(), "the last good checkpoint stays"
    assert not (folder / "checkpoint-2").exists()
    assert not (folder / "model.safetensors").exists() and not (folder / "README.md").exists()


def test_a_diverged_run_is_stopped_at_the_next_logging_step(dataset, tmp_path, capsys):
    folder = tmp_path / "out"
    code, err = diverging_run(dataset, folder, capsys, "--save_strategy", "no", "--logging_steps", "3")
    assert code == 1
    assert "training diverged at step 2 (stage 1" in err and "stopped at step 3." in err
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
                                         r".safetensors/.pth file \(scripts/finetune.py: --backbone_weights FILE\) "
                                         r"or start from random weights \(--backbone_weights none\)"):
        load_backbone_weights(model, "torchvision")


def test_no_network_for_the_push_is_one_line_before_training(monkeypatch, tmp_path):
    def offline(self, **kwargs):
        raise ConnectionError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(hub.HfApi, "whoami", offline)
    with pytest.raises(hub.HubError, match="cannot reach the Hub \\(ConnectionError: .*push the folder later"):
        hub.check_push_access("someone/model", token="hf_x")


# Round two: each numbered case of the reliability issue, through the command line where it can be.

def foreign_model(root: Path, kind: str) -> Path:
    from transformers import BertConfig, BertModel, ResNetConfig, ResNetForImageClassification

    if kind == "resnet":
        model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1] * 4))
    else:
        model = BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))
    model.save_pretrained(root / kind)
    return root / kind


def resnet_cbam_missing_a_tensor(root: Path) -> Path:
    from safetensors.torch import load_file

    from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification

    ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], num_labels=4)).save_pretrained(root / "m")
    tensors = load_file(root / "m" / "model.safetensors")
    del tensors["resnet_cbam.backbone.layer2.0.conv1.weight"]
    save_file(tensors, root / "m" / "model.safetensors", metadata={"format": "pt"})
    return root / "m"


def strings_with_a_test_only_class(root: Path) -> Path:
    from datasets import Dataset, Features, Image, Value

    def split(labels, seed):
        images = [random_dataset(1, ["x"], size=(16, 16), seed=seed + i)[0]["img"] for i in range(len(labels))]
        return Dataset.from_dict({"img": images, "label": labels},
                                 features=Features({"img": Image(), "label": Value("string")}))

    return hub_layout_folder(root, {"train": split(["a", "b"] * 8, 0), "test": split(["a", "b", "c"] * 2, 50)})


def image_folder_with_an_empty_class(others: list[str]):
    def make(root: Path) -> Path:
        from helpers import image_folder

        image_folder(root, n_per_class=6, names=others, size=(16, 16), fmt="PNG")
        (root / "bird").mkdir()
        return root
    return make


# (id, make the data or model, flags beyond TINY with {out}/{model} placeholders, exit code, words in the message)
ROUND_TWO_CASES = [
    ("3-foreign-transformers-resnet", lambda root: foreign_model(root, "resnet"), ["--model_name_or_path", "{made}"],
     2, ["is a resnet model, not a ResNet-CBAM (model_type 'resnet_cbam')", "--backbone_weights"]),
    ("3-foreign-bert", lambda root: foreign_model(root, "bert"), ["--model_name_or_path", "{made}"], 2,
     ["is a bert model, not a ResNet-CBAM"]),
    ("3-missing-tensors", resnet_cbam_missing_a_tensor, ["--model_name_or_path", "{made}"], 2,
     ["no weights for resnet_cbam.backbone.layer2.0.conv1.weight (and 0 more tensors)"]),
    ("4-changed-architecture", None, ["--resume_from_checkpoint", "{finished}/checkpoint-4", "--allow_changed_run",
                                      "--depths", "2,1,1,1"], 2,
     ["--allow_changed_run cannot resume", "with another depths", "--backbone_weights"]),
    ("5-class-only-in-test", strings_with_a_test_only_class, ["--dataset_name", "{made}"], 2,
     ["has no image of 1 class(es): 'c' (2 in test)"]),
    ("6-empty-class-folder-beside-one", image_folder_with_an_empty_class(["cat"]), ["--train_dir", "{made}"], 2,
     ["the class folder(s) bird hold no image"]),
    ("6-empty-class-folder-beside-two", image_folder_with_an_empty_class(["cat", "dog"]), ["--train_dir", "{made}"],
     2, ["the class folder(s) bird hold no image"]),
    ("7-label-smoothing", None, ["--label_smoothing_factor", "1.5"], 2, ["--label_smoothing_factor must be in [0, 1)"]),
    ("7-seed", None, ["--seed", "-1"], 2, ["--seed must be at least 0, got -1"]),
    ("7-output-dir-is-a-file", lambda root: (root.mkdir(), root / "file.txt", (root / "file.txt").write_text("x"))[1],
     ["--output_dir", "{made}"], 2, ["is an existing file, not a folder"]),
    ("7-output-dir-not-creatable", lambda root: (root.mkdir(), (root / "file.txt").write_text("x"), root)[2],
     ["--output_dir", "{made}/file.txt/run"], 2, ["cannot be written"]),
]


@pytest.mark.parametrize("case, make, extra, code, words", ROUND_TWO_CASES, ids=[c[0] for c in ROUND_TWO_CASES])
def test_round_two_faults_are_one_clear_line_and_leave_nothing(finished_run, dataset, tmp_path, capsys, case, make,
                                                               extra, code, words):
    made = make(tmp_path / "made") if make else None
    before = snapshot(finished_run)
    assert TINY[:2] == ["--depths", "1,1,1,1"]
    tiny = TINY if "--model_name_or_path" not in extra else TINY[2:]  # a saved model keeps its own --depths
    argv = [*tiny, *flags(dataset, tmp_path / "out"), *[e.format(made=made, finished=finished_run) for e in extra]]
    assert finetune_main(argv) == code
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "error" in line]) == 1, err
    assert not (tmp_path / "out").exists(), "a refused run leaves no output folder behind"
    assert snapshot(finished_run) == before


def test_a_folder_that_another_run_holds_is_refused_naming_it(finished_run, dataset, tmp_path):
    """Two real processes on one folder: the second, started while the first runs, is refused with exit 2."""
    folder = tmp_path / "out"
    command = [sys.executable, str(ROOT / "tests" / "interrupt_run.py"), "slow-finish", "--",
               *flags(dataset, folder), "--save_strategy", "no"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (folder / ".run.lock").exists() and time.time() < deadline:
        time.sleep(0.1)
    owner = json.loads((folder / ".run.lock").read_text())
    second = subprocess.run(command[:2] + ["none"] + command[3:], capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"is in use by another run (pid {owner['pid']} on {owner['host']}" in second.stderr
    assert "Traceback" not in second.stderr
    assert not (folder / ".run.lock").exists(), "released at the end"
    assert (folder / "run_complete.json").is_file() and (folder / "model.safetensors").is_file()


def test_a_stale_lock_is_reported_and_taken_over(dataset, tmp_path, caplog):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "out"
    folder.mkdir()
    lock = {"pid": int(gone.stdout), "host": socket.gethostname(), "started": "2026-01-01 00:00:00"}
    (folder / ".run.lock").write_text(json.dumps(lock))
    assert finetune_main([*TINY, *flags(dataset, folder), "--save_strategy", "no"]) == 0
    assert f"removing the stale lock of pid {lock['pid']}" in caplog.text
    assert not (folder / ".run.lock").exists()


def test_sigterm_as_training_ends_leaves_a_finish_that_resume_completes(dataset, tmp_path):
    """A real process, SIGTERM as the final model starts to be written: exit 143 with what to do; the resume writes
    every missing output from the last checkpoint without training, and says so."""
    folder = tmp_path / "out"
    command = [sys.executable, str(ROOT / "tests" / "interrupt_run.py"), "sigterm-at-finish", "--",
               *flags(dataset, folder), "--save_strategy", "epoch"]
    stopped = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "stopped by SIGTERM; the last complete checkpoint is" in stopped.stderr and "checkpoint-12" in stopped.stderr
    assert "--resume_from_checkpoint last" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not (folder / "run_complete.json").exists() and not (folder / ".run.lock").exists()
    assert finetune_main([*TINY, *flags(dataset, folder), "--save_strategy", "epoch"]) == 2, "a rerun is refused"
    resumed = subprocess.run(command[:2] + ["none"] + command[3:] + ["--resume_from_checkpoint", "last"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "lacks some of its final outputs (an interrupted finish): writing them from it" in resumed.stdout
    for name in ("model.safetensors", "all_results.json", "README.md", "run_complete.json", "space"):
        assert (folder / name).exists(), name
    assert_same_weights_as_checkpoint(folder, "checkpoint-12")
    card = (folder / "README.md").read_text()
    assert "written from `checkpoint-12`" in card
    assert json.loads((folder / "all_results.json").read_text())["train_runtime"] > 0.5


def test_sigterm_to_accelerate_launch_stops_the_run_cleanly_with_no_worker_traceback(tmp_path):
    """`timeout` or a pre-emption signals `accelerate launch`, which stops its child's whole process tree: the
    DataLoader workers ignore the signal, and the run ends on its own stop message, with no worker traceback."""
    from helpers import image_folder

    photos = image_folder(tmp_path / "photos", n_per_class=8)  # not of the model's size: through the DataLoader
    command = [sys.executable, "-m", "accelerate.commands.launch", "-q", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "tests" / "interrupt_run.py"),
               "sigterm-launcher-in-training", "--",
               "--train_dir", str(photos), "--validation_split", "8", "--output_dir", str(tmp_path / "out"),
               "--save_strategy", "epoch", "--dataloader_num_workers", "1"]
    stopped = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "DataLoader worker" not in stopped.stderr and "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
    after = stopped.stderr.split("error: stopped by SIGTERM; the last complete checkpoint is")[1].splitlines()[1:]
    assert all("/it]" in line or "it/s]" in line or not line.strip() for line in after), after  # a bar redrawn


def assert_same_weights_as_checkpoint(folder: Path, checkpoint: str) -> None:
    from safetensors.torch import load_file

    final, saved = load_file(folder / "model.safetensors"), load_file(folder / checkpoint / "model.safetensors")
    assert final.keys() == saved.keys() and all(torch.equal(final[k], saved[k]) for k in final)


def test_sigterm_in_training_says_what_was_saved(dataset, tmp_path):
    folder = tmp_path / "out"
    stopped = subprocess.run([sys.executable, str(ROOT / "tests" / "interrupt_run.py"), "sigterm-in-training", "--",
                              *flags(dataset, folder), "--save_strategy", "epoch"],
                             capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert f"the last complete checkpoint is {folder / 'checkpoint-4'}" in stopped.stderr
    assert not (folder / ".run.lock").exists() and not (folder / "model.safetensors").exists()


@pytest.mark.parametrize("where, failure, words", [
    ("checkpoint", OSError(errno.ENOSPC, "No space left on device"),
     ["could not write checkpoint-4 in", "the disk is full (", "MiB free there); no complete checkpoint yet"]),
    ("checkpoint", RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                                "data/0: file write failed"),
     ["could not write checkpoint-4 in", "PytorchStreamWriter"]),
    ("checkpoint", RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 17494464 vs 17494356"),
     ["could not write checkpoint-4 in", "unexpected pos"]),
    ("checkpoint", RuntimeError("basic_ios::clear: iostream error"), ["could not write checkpoint-4 in", "iostream"]),
    ("final", OSError(errno.ENOSPC, "No space left on device"),
     ["could not write the final model in", "the disk is full", "the last complete checkpoint is checkpoint-12",
      "--resume_from_checkpoint last"]),
])
def test_a_failed_write_names_the_file_the_reason_and_what_is_complete(dataset, tmp_path, capsys, monkeypatch, where,
                                                                       failure, words):
    from transformers import Trainer

    from training.trainer import StagedTrainer

    def fail(*args, **kwargs):
        raise failure

    if where == "checkpoint":
        monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", fail)
    else:
        save_model = StagedTrainer.save_model
        monkeypatch.setattr(StagedTrainer, "save_model", lambda self, *a, _internal_call=False, **k:
                            save_model(self, *a, _internal_call=True, **k) if _internal_call else fail())
    assert finetune_main([*TINY, *flags(dataset, tmp_path / "out"), "--save_strategy", "epoch"]) == 1
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err and not (tmp_path / "out" / "run_complete.json").exists()


def test_results_and_card_say_when_a_figure_is_on_a_subset(tmp_path):
    source = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset(10, size=(16, 16)),
                                                  "test": tiny_dataset(3, size=(16, 16), seed=9)})
    folder = tmp_path / "out"
    assert finetune_main([*TINY, *flags(source, folder), "--max_eval_samples", "5", "--save_strategy", "no"]) == 0
    results = json.loads((folder / "all_results.json").read_text())
    assert results["test_images"] == "5 of the 12 test images (--max_eval_samples)"
    assert results["split_sizes"] == {"train": 32, "validation": 5, "test": 5}
    assert results["source_split_sizes"] == {"train": 32, "validation": 8, "test": 12}
    card = (folder / "README.md").read_text()
    assert "(5 of the 12 test images (--max_eval_samples))" in card
    assert "they are on 5 of the 12 test images (--max_eval_samples), not the whole split" in card


def test_the_channel_panel_shows_the_strongest_and_weakest_channels():
    from training.plots import channel_extremes

    weights = torch.tensor([0.50, 0.52, 0.49, 0.61, 0.40, 0.50, 0.55, 0.45])
    assert channel_extremes(weights, 4).tolist() == [3, 6, 7, 4]
    assert channel_extremes(weights, 3).tolist() == [3, 6, 4]
    assert sorted(channel_extremes(weights, 20).tolist()) == list(range(8))
