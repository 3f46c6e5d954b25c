"""The staged recipe's guarantees, on a tiny model and dataset: lrs, frozen bits, Adam resets, resume, DDP."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import (
    RANDOM_AUGMENT,
    ROOT,
    STAGED_1_1_1,
    assert_follows_schedule,
    assert_same_weights,
    flags,
    load_alone,
)
from safetensors.torch import load_file
from tiny_run import TINY as TINY_FLAGS
from tiny_run import run

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training import recipes
from training.arguments import chosen_recipe, parse_arguments
from training.callbacks import freeze_for_stage
from training.cli import finetune_main
from training.hardware import usable_cores
from training.stages import GROUPS

TINY_RUN = ROOT / "tests" / "tiny_run.py"
EMA = ["--ema_decay", "0.5"]  # the resumed runs must continue the average of the weights too


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run") / "out"
    result, recorder = run(flags(dataset, output_dir, "--save_strategy", "steps", "--save_steps", "1", *RANDOM_AUGMENT,
                                 *EMA))
    return output_dir, result, recorder


def test_every_step_follows_the_schedule(uninterrupted):
    _, finished, recorder = uninterrupted
    assert_follows_schedule(recorder.steps, finished.trainer.schedule)


def test_frozen_batchnorm_statistics_move_with_the_seed_policy(uninterrupted):
    _, _, recorder = uninterrupted
    assert recorder.steps[0]["running_stats_changed"]["layer1"], "bn_policy=train: frozen layers' BN stats update"


def test_bn_policy_frozen_keeps_frozen_groups_statistics(dataset, tmp_path):
    _, recorder = run(flags(dataset, tmp_path / "out", "--save_strategy", "no", "--bn_policy", "frozen"))
    for record in recorder.steps:
        trained = STAGED_1_1_1.stages[record["stage"]].lrs
        for group, changed in record["running_stats_changed"].items():
            assert changed == (group in trained), f"step {record['step']}: {group} BN stats changed={changed}"


@pytest.fixture(scope="module")
def train_bn_run(dataset, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("train_bn") / "out"
    result, recorder = run(flags(dataset, output_dir, "--train_bn", "true", "--save_strategy", "steps", "--save_steps",
                                 "1", *RANDOM_AUGMENT))
    return output_dir, result, recorder


def assert_trains_frozen_batchnorm(steps: list[dict], plan) -> None:
    """Every step changes the groups its stage trains, and of the frozen ones their BatchNorm scale and shift only,
    at the stage's lowest rate; every other parameter of a frozen group stays as it was, bit for bit."""
    for record in steps:
        step, stage = record["step"], plan.schedule.stages[record["stage"]]
        assert record["lrs"] == {g: plan.lr(g, step) for g in GROUPS}
        assert set(record["batchnorm_lrs"]) == {"stem", "layer1", "layer2", "layer3", "layer4"}
        for group, lr in record["batchnorm_lrs"].items():
            assert lr == (stage.lrs[group] if group in stage.lrs else min(stage.lrs.values())) > 0, (step, group)
            assert record["batchnorm_changed"][group], f"step {step}: {group}'s BatchNorm did not train"
        for group in GROUPS:
            assert record["others_changed"][group] == (group in stage.lrs), f"step {step}: {group}"


def test_train_bn_trains_frozen_groups_batchnorm_and_nothing_else_of_them(train_bn_run):
    output_dir, finished, recorder = train_bn_run
    assert finished.trainer.schedule.train_bn
    assert_trains_frozen_batchnorm(recorder.steps, finished.trainer.plan)
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    plain = STAGED_1_1_1.stages[0].parameter_count(finished.trainer.model.parameter_groups())
    assert [e["trainable_params"] for e in history if "stage" in e][0] > plain  # the frozen BatchNorm counted


def test_train_bn_resumes_exactly(train_bn_run, dataset, tmp_path):
    output_dir, _, recorder = train_bn_run
    _, resumed = run(flags(dataset, tmp_path / "out", "--train_bn", "true", "--save_strategy", "no",
                           "--resume_from_checkpoint", str(output_dir / "checkpoint-6"), *RANDOM_AUGMENT))
    assert_same_weights(output_dir, tmp_path / "out")
    assert resumed.steps == recorder.steps[6:]


def test_one_epoch_entry_per_epoch_in_trainer_state(uninterrupted):
    output_dir, _, _ = uninterrupted
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    epochs = [entry for entry in history if "stage" in entry]
    assert [e["stage"] for e in epochs] == [1, 2, 3] and [e["epoch"] for e in epochs] == [1, 2, 3]
    for entry in epochs:
        for key in ("trainable_params", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy", "epoch_time"):
            assert key in entry
        assert all(f"lr_{group}" in entry for group in GROUPS)
    assert epochs[0]["lr_layer1"] == 0 and epochs[2]["lr_layer1"] == pytest.approx(1e-4)
    assert epochs[0]["trainable_params"] < epochs[1]["trainable_params"] < epochs[2]["trainable_params"]
    assert sum("loss" in e and "stage" not in e and "train_runtime" not in e for e in history) == 12  # every step


def test_output_folder_loads_alone_and_results_are_written(uninterrupted, tmp_path):
    output_dir, _, _ = uninterrupted
    torch.save(torch.randn(2, 3, 16, 16), tmp_path / "x.pt")
    loaded = load_alone(output_dir, tmp_path / "x.pt", tmp_path)
    assert loaded["classifier"] == "ResNetCBAMForImageClassification"
    assert {p["label"] for p in loaded["pipeline"]} <= {"cat", "dog", "ship", "truck"}
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["eval_split"] == "validation"
    confusion = torch.tensor(results["validation_confusion_matrix"])
    assert confusion.sum() == 8 and results["validation_accuracy"] == confusion.trace().item() / 8


@pytest.mark.parametrize("checkpoint", [4, 6], ids=["at-a-stage-boundary", "in-the-middle-of-a-stage"])
def test_resume_ends_with_the_uninterrupted_weights(uninterrupted, dataset, tmp_path, checkpoint):
    output_dir, _, recorder = uninterrupted
    _, resumed_recorder = run(
        flags(
            dataset,
            tmp_path / "out",
            "--save_strategy",
            "no",
            "--resume_from_checkpoint",
            str(output_dir / f"checkpoint-{checkpoint}"),
            *RANDOM_AUGMENT,
            *EMA,
        )
    )
    assert_same_weights(output_dir, tmp_path / "out")  # the saved models are the averages of the weights
    assert resumed_recorder.steps == recorder.steps[checkpoint:]
    live = load_file(output_dir / "checkpoint-12" / "model.safetensors")
    average = load_file(output_dir / "model.safetensors")
    assert (output_dir / "checkpoint-12" / "ema.safetensors").exists()
    assert not torch.equal(live["classifier.weight"], average["classifier.weight"])


def test_a_killed_run_resumes_from_its_last_checkpoint(uninterrupted, dataset, tmp_path):
    output_dir, _, _ = uninterrupted
    command = [
        sys.executable,
        str(TINY_RUN),
        str(tmp_path / "rec"),
        "--kill_after_save",
        "6",
        "--",
        *flags(dataset, tmp_path / "out", "--save_strategy", "steps", "--save_steps", "1", *RANDOM_AUGMENT, *EMA),
    ]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "out" / "checkpoint-6").is_dir() and not (tmp_path / "out" / "checkpoint-7").exists()
    assert not (tmp_path / "out" / "checkpoint-6" / "run_facts.json").exists(), "killed before its completion mark"
    run(flags(dataset, tmp_path / "out", "--save_strategy", "no", "--resume_from_checkpoint", "last", *RANDOM_AUGMENT,
              *EMA))
    assert_same_weights(output_dir, tmp_path / "out")


def accelerate_launch(*args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", *args]


def launch_tiny_ddp(dataset: Path, tmp_path: Path, *options: str, finetune: tuple[str, ...] = ()
                    ) -> subprocess.CompletedProcess:
    """tests/tiny_run.py on two CPU processes, exactly as a user launches DDP (`finetune`: more run flags)."""
    command = accelerate_launch("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
                                "no", "--dynamo_backend", "no", str(TINY_RUN), str(tmp_path / "rec"), *options, "--",
                                *flags(dataset, tmp_path / "out", "--save_strategy", "no", *finetune))
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_ddp_on_two_processes_keeps_ranks_identical_and_follows_the_schedule(dataset, tmp_path):
    done = launch_tiny_ddp(dataset, tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads(Path(f"{tmp_path / 'rec'}.rank{r}").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["checksums"] == ranks[1]["checksums"]
    assert "all 2 ranks hold identical parameters after the stage ending at step 6" in done.stdout + done.stderr
    for rank in ranks:
        assert_follows_schedule(rank["steps"], STAGED_1_1_1, distributed=True)


def test_ddp_with_train_bn_keeps_ranks_identical(dataset, tmp_path):
    done = launch_tiny_ddp(dataset, tmp_path, finetune=("--train_bn", "true"))
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads(Path(f"{tmp_path / 'rec'}.rank{r}").read_text()) for r in (0, 1)]
    assert ranks[0]["checksums"] == ranks[1]["checksums"]
    assert "all 2 ranks hold identical parameters after the stage ending at step 2" in done.stdout + done.stderr
    plan = replace(STAGED_1_1_1, train_bn=True).over_steps(STAGED_1_1_1.total_epochs * 2)  # 2 steps an epoch a rank
    for rank in ranks:
        assert_trains_frozen_batchnorm(rank["steps"], plan)


def test_ddp_rank_mismatch_stops_the_run_with_a_clear_error(dataset, tmp_path):
    done = launch_tiny_ddp(dataset, tmp_path, "--perturb_rank", "1")
    assert done.returncode != 0
    assert "DDP ranks hold different parameters after the stage ending at step 2: groups head differ" in done.stderr


def test_accelerate_launch_on_one_process_runs_the_script(dataset, tmp_path):
    command = accelerate_launch(
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "scripts" / "finetune.py"),
        *flags(dataset, tmp_path / "out"),
        *TINY_FLAGS,
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Stage 3/3 (epochs 3-3, everything)" in done.stdout
    assert f"{usable_cores()} CPU threads per process" in done.stdout, "not accelerate's OMP_NUM_THREADS=1"
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "recipe_name, expected",
    [("seed-exact", [49_042, 10_542_482, 11_217_874]), ("staged", [50_898, 10_544_338, 11_217_874])],
)
def test_trainable_parameters_per_stage_of_the_default_model(recipe_name, expected):
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig())
    counts = []
    for stage in recipes.get(recipe_name).schedule().stages:
        assert freeze_for_stage(model, stage, distributed=False) == []
        counts.append(sum(p.numel() for p in model.parameters() if p.requires_grad))
        assert counts[-1] == stage.parameter_count(model.parameter_groups())
    assert counts == expected
    dropped = freeze_for_stage(model, recipes.get(recipe_name).schedule().stages[0], distributed=True)
    assert all(p.requires_grad for p in model.parameters()), "under DDP every parameter stays trainable"
    assert sum(p.numel() for p in dropped) == 11_217_874 - expected[0]


def test_stages_file_errors_name_the_stage(tmp_path, capsys):
    stages = tmp_path / "stages.json"
    stages.write_text(json.dumps([{"epochs": 2, "lr": {"cbam": 1e-3, "head": 1e-3, "neck": 1e-3}}]))
    assert finetune_main(["--stages_file", str(stages), "--dataset_name", str(tmp_path / "absent")]) == 2
    assert "stage 1: unknown group 'neck'; the groups are stem, layer1" in capsys.readouterr().err


def test_stages_file_with_differential_rates(dataset, tmp_path):
    stages = tmp_path / "stages.json"
    new, pretrained = {g: 1e-3 for g in ("stem", "cbam", "head")}, {f"layer{i}": 1e-5 for i in range(1, 5)}
    stages.write_text(json.dumps([{"epochs": 2, "lr": {**new, **pretrained}}]))
    _, recorder = run(
        flags(dataset, tmp_path / "out", "--save_strategy", "no", "--stages_file", str(stages), "--stage_epochs", "2")
    )
    assert recorder.steps[0]["lrs"] == {**new, **pretrained}
    assert len(recorder.steps) == 8 and recorder.steps[-1]["adam_step"] == 8


def test_defaults_are_the_seed_recipes_but_its_stages():
    """The tutorial's batch, clipping and data; the recipe on trained weights is the transfer study's one stage with
    cosine decay, of the tutorial's 50 epochs (its stages: --recipe staged)."""
    model_args, data_args, stage_args, training_args = parse_arguments([])
    assert training_args.max_grad_norm == 0 and training_args.per_device_train_batch_size == 64
    assert training_args.remove_unused_columns is False
    assert chosen_recipe(model_args, stage_args)[0].name == "full-cosine" and stage_args.bn_policy == "train"
    assert data_args.dataset_name == "uoft-cs/cifar10"
    assert recipes.get("staged").schedule().total_epochs == recipes.get(recipes.DEFAULT).schedule().total_epochs == 50


def test_the_dataloader_path_follows_the_schedule_and_resumes_exactly(dataset, tmp_path):
    """The PIL/DataLoader path (images over 64x64, or --data_on_device false): exact resume from the epoch-end
    checkpoints the recipe saves, with the tutorial's random augmentations. (A mid-epoch checkpoint resumes exactly
    only without random augmentation: the Trainer restores the RNG after fetching the first resumed batch.)"""
    path = ["--data_on_device", "false", *RANDOM_AUGMENT]
    full, recorder = run(flags(dataset, tmp_path / "full", "--save_strategy", "epoch", *path))
    assert full.trainer.device_data is None
    assert_follows_schedule(recorder.steps, full.trainer.schedule)
    for checkpoint in (4, 8):
        run(flags(dataset, tmp_path / f"resumed{checkpoint}", "--save_strategy", "no", *path,
                  "--resume_from_checkpoint", str(tmp_path / "full" / f"checkpoint-{checkpoint}")))
        assert_same_weights(tmp_path / "full", tmp_path / f"resumed{checkpoint}")
    plain = ["--data_on_device", "false", "--augment", "none"]
    run(flags(dataset, tmp_path / "plain", "--save_strategy", "steps", "--save_steps", "1", *plain))
    run(flags(dataset, tmp_path / "plain6", "--save_strategy", "no", *plain,
              "--resume_from_checkpoint", str(tmp_path / "plain" / "checkpoint-6")))
    assert_same_weights(tmp_path / "plain", tmp_path / "plain6")


def test_a_loader_worker_augments_a_resumed_run_as_the_uninterrupted_one(dataset, tmp_path):
    """A worker process draws the augmentation. It starts each epoch seeded from the run's RNG, which the epoch-end
    checkpoint restores; a persistent worker would carry its draws over from the epochs before the resume."""
    path = ["--data_on_device", "false", *RANDOM_AUGMENT, "--dataloader_num_workers", "1"]
    run(flags(dataset, tmp_path / "full", "--save_strategy", "epoch", *path))
    run(flags(dataset, tmp_path / "resumed", "--save_strategy", "no", *path,
              "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-8")))
    assert_same_weights(tmp_path / "full", tmp_path / "resumed")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_every_flag_can_come_from_one_file(tmp_path, suffix):
    values = {"dataset_name": "some/dataset", "stage_epochs": "1,2,3", "bn_policy": "frozen", "learning_rate": 0.5,
              "output_dir": str(tmp_path / "out")}
    path = tmp_path / f"run{suffix}"
    path.write_text(json.dumps(values) if suffix == ".json" else "\n".join(f"{k}: {v!r}" for k, v in values.items()))
    _, data_args, stage_args, training_args = parse_arguments([str(path)])
    assert (data_args.dataset_name, stage_args.stage_epochs) == ("some/dataset", "1,2,3")
    assert stage_args.bn_policy == "frozen" and training_args.learning_rate == 0.5
    assert training_args.output_dir == str(tmp_path / "out") and training_args.max_grad_norm == 0
