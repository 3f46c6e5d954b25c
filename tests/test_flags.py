"""Every flag does what it says: optimizer, weight decay, lr shapes and warmup per stage, label smoothing; every
other TrainingArguments field is passed to the Trainer or refused, before anything loads."""

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, STEPS_PER_EPOCH, assert_follows_schedule, assert_same_weights, flags, run_script
from tiny_run import run
from torch.nn import functional as F
from transformers import TrainingArguments

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.arguments import ARGUMENTS, build_schedule, parse_arguments
from training.cli import finetune_main
from training.stages import GROUPS, Schedule, ScheduleError, Stage
from training.trainer_fields import RECIPE_FIELDS, REFUSED_FIELDS, TRAINER_FIELDS, TRAINER_GROUP

SGD = ["--optim", "sgd", "--optim_args", "momentum=0.9,nesterov=True", "--weight_decay", "5e-4"]


def tiny_model() -> ResNetCBAMForImageClassification:
    return ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], image_size=16, num_labels=4))


def test_help_shows_this_projects_flags_first_then_the_trainers_then_the_refused_once():
    done = run_script("finetune.py", "--help", env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    shown = {line.split()[0]: number for number, line in enumerate(lines, 1) if line.startswith("  --")}
    trainer_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = [f.name for dtype in ARGUMENTS for f in dataclasses.fields(dtype) if f.init and (
        f.name not in trainer_fields or f.name in RECIPE_FIELDS)]
    assert {"--tta", "--ema_decay", "--data_on_device", "--export_onnx", "--scale_lr_with_batch",
            "--allow_changed_run", "--overwrite_output_dir", "--optim"} <= {f"--{name}" for name in own}
    assert max(shown[f"--{name}"] for name in own) <= 200, "every project flag within the first 200 lines"
    trainer_header = lines.index(f"{TRAINER_GROUP}:")
    assert max(shown[f"--{name}"] for name in own) < trainer_header < min(shown[f"--{n}"] for n in TRAINER_FIELDS)
    epilog = done.stdout[done.stdout.index("refused (set to anything but its default"):]
    entries = [" ".join(entry.split()) for entry in re.split(r"\n  (?=--)", epilog)[1:]]  # "--a, --b: reason"
    listed = [name for entry in entries for name in entry.split(": ", 1)[0].split(", ")]
    assert sorted(listed) == sorted(f"--{name}" for name in REFUSED_FIELDS), "each refused flag listed once"
    for name, reason in REFUSED_FIELDS.items():
        assert f"--{name}" not in shown, f"--{name} is refused: listed with its reason, not as a flag"
        reason = " ".join(reason.split())
        assert any(f"--{name}" in entry.split(": ", 1)[0] and entry.endswith(reason) for entry in entries)
    optim = "--optim VALUE adamw_torch_fused, adamw_torch (AdamW) or sgd; others are refused."
    assert optim in " ".join(done.stdout.split()), "the recipe's fields say what they do here"


def test_every_training_argument_is_classified_exactly_once():
    lists = (RECIPE_FIELDS, TRAINER_FIELDS, set(REFUSED_FIELDS))
    for name in (f.name for f in dataclasses.fields(TrainingArguments)):
        homes = [i for i, names in enumerate(lists) if name in names]
        assert len(homes) == 1, f"TrainingArguments.{name} is in {len(homes)} of the lists (recipe, trainer, refused)"
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    assert set().union(*lists) <= known, f"classified but not a field: {set().union(*lists) - known}"


@pytest.mark.parametrize(
    "bad_flags, message",
    [
        (["--optim", "adafactor"], "--optim adafactor is not supported here; choose one of adamw_torch_fused, "),
        (["--lr_scheduler_type", "polynomial"], "--lr_scheduler_type polynomial is not supported; the lr shapes"),
        (["--lr_scheduler_kwargs", '{"num_cycles": 2}'], "only {\"min_lr_rate\": x} (the floor"),
        (["--lr_scheduler_kwargs", "min_lr_rate=0.1"], "--lr_scheduler_kwargs must be a JSON object such as"),
        (["--recipe", "staged", "--learning_rate", "5e-4"],
         "--learning_rate sets the lr of --recipe full, full-cosine or fast; the stages"),
        (["--recipe", "full", "--learning_rate", "inf"], "--learning_rate must be a positive finite number"),
        (["--optim_args", "momentum=0.9"], "only --optim sgd takes optim_args"),
        (["--optim", "sgd", "--adam_beta2", "0.99"], "--adam_beta2 set with --optim sgd: they apply to adamw only"),
        (["--optim", "sgd", "--optim_args", "momentum=0.9,lr=3"], "'lr=3' is not one of momentum=..., dampening"),
        (["--optim", "sgd", "--optim_args", "nesterov=True"], "nesterov=True needs momentum > 0"),
        (["--weight_decay", "-1"], "--weight_decay must be >= 0"),
        (["--warmup_steps", "0.5", "--stages_file", "x.json"], "give each stage its \"shape\" and \"warmup\""),
        (["--recipe", "staged", "--stage_lrs", "inf,1,1"],
         "stage 1: the lr of stem must be a positive finite number, got inf"),
        (["--fp16", "true", "--bf16", "true"], "--bf16 and --fp16 are both on: choose one"),
        (["--fp16_full_eval"], "--fp16_full_eval: evaluation runs under the training precision"),
        (["--gradient_checkpointing"], "--gradient_checkpointing: the model does not support"),
        (["--early_stopping_patience", "0"], "--early_stopping_patience must be at least 1 evaluation"),
        (["--do_eval"], "--do_eval: the script always trains"),
        (["--label_names", "label"], "--label_names: the labels are the dataset's label column"),
        (["--hub_strategy", "checkpoint"], "--hub_strategy checkpoint pushes checkpoints to the Hub: it needs"),
        (["--hub_revision", "dev"], "--hub_revision: the push goes to the main branch"),
        (["--model_name_or_path", "x", "--depths", "3,4,6,3"], "--depths cannot change a saved model"),
        (["--recipe", "staged", "--stage_epochs", "5,15"], "--stage_epochs gives 2 values for 3 stages"),
        (["--recipe", "staged", "--stage_lrs", "1e-3,0,1e-5"],
         "stage 2: the lr of stem must be a positive finite number, got 0.0"),
        (
            ["--recipe", "staged", "--stage_epochs", "1,1,1", "--num_train_epochs", "5"],
            "the stages last 1+1+1=3 epochs but --num_train_epochs",
        ),
        (["--recipe", "gradual"], "unknown recipe 'gradual'"),
        (["--max_steps", "10"], "--max_steps: stages are in epochs"),
        (["--cbam_placement", "everywhere"],
         "cbam_placement must be one of ('stage', 'block', 'none'), got 'everywhere'"),
        (["--depths", "2,2,x,2"], "--depths must be four integers"),
        (["--bn_policy", "eval"], "--bn_policy must be 'train' or 'frozen'"),
        (["--recipe", "fast", "--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at least"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be at least 1, got 0"),
    ],
)
def test_refused_and_bad_flags_stop_before_any_loading(tmp_path, capsys, bad_flags, message):
    if "x.json" in bad_flags:
        (tmp_path / "x.json").write_text('[{"epochs": 1, "lr": 0.1}]')
        bad_flags = [str(tmp_path / "x.json") if flag == "x.json" else flag for flag in bad_flags]
    code = finetune_main(["--dataset_name", str(tmp_path / "absent"), "--output_dir", str(tmp_path / "o"), *bad_flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_defaults_are_adam_with_cosine_decay_and_the_tutorials_constant_stages_one_flag_away():
    model_args, _, stage_args, training_args = parse_arguments([])
    (stage,) = build_schedule(model_args, stage_args, training_args).stages  # on trained weights: full-cosine
    assert (stage.epochs, set(stage.lrs.values()), stage.shape, stage.warmup) == (50, {1e-4}, "cosine", 0.1)
    model_args, _, stage_args, training_args = parse_arguments(["--recipe", "full"])
    (stage,) = build_schedule(model_args, stage_args, training_args).stages
    assert (stage.epochs, set(stage.lrs.values()), stage.shape, stage.warmup) == (50, {1e-4}, "constant", 0.0)
    model_args, _, stage_args, training_args = parse_arguments(["--recipe", "staged"])
    assert training_args.optimizer.name == "adamw_torch_fused" and training_args.optimizer.weight_decay == 0
    assert training_args.optimizer.hyperparameters == {"betas": (0.9, 0.999), "eps": 1e-8}
    schedule = build_schedule(model_args, stage_args, training_args)
    assert all(stage.shape == "constant" and not stage.warmup and not stage.warmup_steps for stage in schedule.stages)
    assert [stage.lrs["head"] for stage in schedule.stages] == [1e-3, 1e-4, 1e-4]  # the study: not 1e-5
    optimizer = training_args.optimizer.build(tiny_model().parameter_groups(), torch.device("cpu"))
    assert type(optimizer) is torch.optim.AdamW and all(g["weight_decay"] == 0 for g in optimizer.param_groups)


def test_adam_flags_reach_every_param_group():
    args = parse_arguments(["--adam_beta1", "0.8", "--adam_beta2", "0.95", "--adam_epsilon", "1e-6",
                            "--optim", "adamw_torch"])[3]
    optimizer = args.optimizer.build(tiny_model().parameter_groups(), torch.device("cpu"))
    assert type(optimizer) is torch.optim.AdamW and not optimizer.defaults["fused"]
    assert all(g["betas"] == (0.8, 0.95) and g["eps"] == 1e-6 for g in optimizer.param_groups)


def test_weight_decay_shrinks_weights_and_spares_1d_parameters():
    args = parse_arguments(["--weight_decay", "0.1"])[3]
    model = tiny_model()
    optimizer = args.optimizer.build(model.parameter_groups(), torch.device("cpu"))
    assert {g["group"] for g in optimizer.param_groups} == set(GROUPS)
    for group in optimizer.param_groups:
        assert group["weight_decay"] == (0.1 if group["params"][0].ndim > 1 else 0.0)
        assert all((p.ndim > 1) == (group["weight_decay"] > 0) for p in group["params"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)  # no gradient: only the decay moves a weight
    optimizer.step()  # lr 1.0 in every group (the scheduler scales it): decoupled decay multiplies by 0.9
    for name, parameter in model.named_parameters():
        expected = before[name] * 0.9 if parameter.ndim > 1 else before[name]
        torch.testing.assert_close(parameter.detach(), expected, rtol=1e-6, atol=0, msg=name)
    conv = sum(p.ndim == 4 for p in model.parameters())
    assert conv > 0 and any(p.ndim == 1 for p in model.parameters())


def test_sgd_with_nesterov_momentum_and_decay_trains_as_told(dataset, tmp_path):
    finished, recorder = run(flags(dataset, tmp_path / "out", "--save_strategy", "no", "--recipe", "full",
                                   "--stage_epochs", "2", "--learning_rate", "0.05", *SGD))
    optimizer = finished.trainer.optimizer.optimizer if hasattr(finished.trainer.optimizer, "optimizer") \
        else finished.trainer.optimizer
    assert type(optimizer) is torch.optim.SGD
    for group in optimizer.param_groups:
        assert group["momentum"] == 0.9 and group["nesterov"] is True
        assert group["weight_decay"] == (5e-4 if group["params"][0].ndim > 1 else 0.0)
    assert all(set(record["lrs"].values()) == {0.05} for record in recorder.steps)
    assert "sgd (momentum=0.9, nesterov=True, weight decay 0.0005 on weights)" in finished.record.optimizer


def lr_by_hand(stage_step: int, steps: int, shape: str, warmup: int, floor: float = 0.0) -> float:
    """The multiplier of the peak, written out independently of training/stages.py."""
    if stage_step < warmup:
        return (stage_step + 1) / warmup
    t = (stage_step - warmup) / (steps - warmup)
    return {"constant": 1.0, "linear": 1 - t, "cosine": floor + (1 - floor) * (1 + math.cos(math.pi * t)) / 2}[shape]


@pytest.mark.parametrize("shape", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("warmup", [dict(), dict(warmup=0.25), dict(warmup_steps=3)], ids=["none", "25%", "3 steps"])
def test_every_group_follows_its_stage_shape_at_every_step(shape, warmup):
    floor = 0.1 if shape == "cosine" else 0.0
    schedule = Schedule((Stage(2, {"head": 0.5, "cbam": 0.1}, shape=shape, floor=floor, **warmup),
                         Stage(3, {"head": 0.2, "layer1": 0.3}, shape=shape, floor=floor, **warmup))).validate()
    plan = schedule.over_steps(5 * 4)  # 4 steps an epoch: stages of 8 and 12 steps
    assert plan.first_steps == (0, 8)
    for step in range(20):
        index, first = (0, 0) if step < 8 else (1, 8)
        steps = 8 if index == 0 else 12
        warm = warmup.get("warmup_steps") or round(warmup.get("warmup", 0) * steps)
        for group in GROUPS:
            peak = schedule.stages[index].lrs.get(group)
            expected = 0.0 if peak is None else peak * lr_by_hand(step - first, steps, shape, warm, floor)
            assert plan.lr(group, step) == pytest.approx(expected, abs=1e-12), (step, group)
    assert plan.lr("head", 8) == pytest.approx(0.2 * lr_by_hand(0, 12, shape, warmup.get("warmup_steps") or
                                                                round(warmup.get("warmup", 0) * 12), floor))
    assert all(plan.lr("head", step) > 0 for step in range(20)), "no training step at lr 0"


def test_bad_shapes_in_a_stages_file_name_the_stage(tmp_path):
    from training.stages import from_json

    path = tmp_path / "s.json"
    cases = [({"shape": "step"}, "unknown lr shape 'step'"), ({"warmup": 1.5}, "warmup must be a"),
             ({"shape": "linear", "floor": 0.1}, "floor is a fraction"), ({"lr_typo": 1}, "unknown keys")]
    for entry, message in cases:
        path.write_text(json.dumps([{"epochs": 1, "lr": 0.1, "train": "head"}, {"epochs": 1, "lr": 0.1, **entry}]))
        with pytest.raises(ScheduleError, match=f"stage 2[: ].*{message}"):
            from_json(path)
    path.write_text('[{"epochs": 1, "lr": 0.1, "train": "head"}]')
    assert from_json(path).stages[0].lrs == {"head": 0.1}, "a single group may be given as a string"


COSINE = ["--lr_scheduler_type", "cosine", "--warmup_steps", "0.25", "--stage_lrs", "1e-2,1e-3,1e-4"]


@pytest.fixture(scope="module")
def cosine_run(dataset, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("cosine") / "out"
    return output_dir, *run(flags(dataset, output_dir, "--save_strategy", "steps", "--save_steps", "1", *COSINE,
                                  "--augment", "tutorial"))


def test_a_cosine_run_follows_its_plan_and_logs_the_shaped_rates(cosine_run):
    _, finished, recorder = cosine_run
    schedule = finished.trainer.schedule
    assert [stage.shape for stage in schedule.stages] == ["cosine"] * 3 and schedule.stages[0].warmup == 0.25
    assert_follows_schedule(recorder.steps, schedule)
    first_of_stage_2 = recorder.steps[STEPS_PER_EPOCH]["lrs"]["head"]
    assert first_of_stage_2 == pytest.approx(1e-3 * lr_by_hand(0, STEPS_PER_EPOCH, "cosine", 1))
    assert recorder.steps[STEPS_PER_EPOCH - 1]["lrs"]["head"] < 1e-2, "the cosine decays within stage 1"


@pytest.mark.parametrize("checkpoint", [4, 6], ids=["at-a-stage-boundary", "in-the-middle-of-a-stage"])
def test_a_cosine_run_resumes_exactly(cosine_run, dataset, tmp_path, checkpoint):
    output_dir, _, recorder = cosine_run
    _, resumed = run(flags(dataset, tmp_path / "out", "--save_strategy", "no", *COSINE, "--augment", "tutorial",
                           "--resume_from_checkpoint", str(output_dir / f"checkpoint-{checkpoint}")))
    assert resumed.steps == recorder.steps[checkpoint:]
    assert_same_weights(output_dir, tmp_path / "out")


def test_label_smoothing_is_the_smoothed_cross_entropy_and_accuracy_stays_exact(dataset, tmp_path):
    finished, _ = run(flags(dataset, tmp_path / "out", "--save_strategy", "no", "--label_smoothing_factor", "0.1",
                            "--bf16", "false", "--channels_last", "false"))
    trainer = finished.trainer
    model = trainer.model.eval()
    x, labels = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        loss = trainer.compute_loss(model, {"pixel_values": x, "labels": labels})
        log_p = F.log_softmax(model(x).logits.float(), dim=-1)
    by_hand = (0.9 * -log_p[torch.arange(6), labels] + 0.1 * -log_p.mean(dim=-1)).mean()
    torch.testing.assert_close(loss, by_hand)
    epochs = [e for e in trainer.state.log_history if "train_accuracy" in e]
    assert len(epochs) == 3
    for entry in epochs:  # 32 training images an epoch: the accuracy is a count of them
        assert entry["train_accuracy"] * 32 == pytest.approx(round(entry["train_accuracy"] * 32))


def test_the_card_template_ships_with_a_non_editable_install(tmp_path):
    source, target = tmp_path / "source", tmp_path / "site"  # a copy: the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("modeling_resnet_cbam", "training"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--target", str(target), str(source)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    script = """
import sys, training
from pathlib import Path
assert Path(training.__file__).is_relative_to(sys.argv[1]), training.__file__
from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.outputs import RunRecord, write_model_card
from training import recipes
model = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], num_labels=2))
staged = recipes.get("staged").schedule()
record = RunRecord(Path(sys.argv[2]), "m", "d", "d", False, "staged", staged, "train", "tutorial", "random",
                   None, "apache-2.0", "adamw", 0.0, 0.0, 64, 1, 42, "cpu", "fp32", {"train": 4, "validation": 2},
                   ["a", "b"], architecture={},
                   metrics={"eval_split": "validation", "validation_accuracy": 0.5, "validation_loss": 0.7,
                            "validation_per_class_accuracy": {"a": 1.0, "b": 0.0}, "train_runtime": 3.0,
                            "train_samples_per_second": 9.0})
print(write_model_card(record, model).read_text())
"""
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", script, str(target), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "**validation accuracy: 50.00%** (2 validation images)" in done.stdout
