"""Mixed precision: the default per device, fp16 with loss scaling (run on the CPU, as on a GPU), steps the scaler
skips, and exact resume with the scaler's state."""

import pytest
import torch
from helpers import assert_same_weights, flags
from tiny_run import TINY, Recorder

from training import hardware
from training.arguments import parse_arguments
from training.outputs import write_model_card
from training.run import prepare_run, train_and_evaluate
from training.stages import GROUPS

# Far above what fp16 gradients hold (65,504): the first steps overflow and are skipped, halving the scale each time.
OVERFLOWING_SCALE = 2.0**20


def fp16_run(finetune_flags: list[str], init_scale: float = OVERFLOWING_SCALE):
    """A tiny run with --fp16 true whose GradScaler starts at `init_scale`, recording every step."""
    model_args, data_args, stage_args, training_args = parse_arguments([*TINY, "--fp16", "true", *finetune_flags])
    recorder = Recorder()
    run, checkpoint = prepare_run(model_args, data_args, stage_args, training_args, extra_callbacks=[recorder])
    run.trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    record = train_and_evaluate(run, checkpoint)
    return run, record, recorder


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("fp16") / "out"
    run, record, recorder = fp16_run(flags(dataset, output_dir, "--save_strategy", "steps", "--save_steps", "1",
                                           "--augment", "tutorial"))
    return output_dir, run, record, recorder


@pytest.mark.parametrize(("cuda", "bf16_gpu", "bf16_cpu", "expected"), [
    (True, True, False, "bf16"),  # Ampere and later
    (True, False, True, "fp16"),  # T4, V100, P100: emulated bf16 does not count
    (False, False, True, "bf16"),  # a CPU with AVX512-BF16 or AMX
    (False, False, False, "no"),  # any other CPU: fp16 is no faster there
])
def test_the_default_precision_is_what_the_device_computes_natively(monkeypatch, cuda, bf16_gpu, bf16_cpu, expected):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return bf16_gpu or including_emulation  # as torch on a T4: "supported", by emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: bf16_cpu)
    assert hardware.default_precision() == expected
    assert asked == ([False] if cuda else [])
    assert hardware.default_precision(use_cpu=True) == ("bf16" if bf16_cpu else "no")


def test_precision_flags_on_this_cpu(tmp_path):
    def precision(*more):
        args = parse_arguments(["--output_dir", str(tmp_path / "out"), *more])[3]
        return args.bf16, args.fp16

    native = hardware.cpu_has_bf16()
    assert precision() == (native, False)
    assert precision("--fp16", "true") == (False, True)
    assert precision("--fp16", "false") == (native, False)
    assert precision("--bf16", "false") == (False, False)
    with pytest.raises(ValueError, match="--bf16 and --fp16 are both on"):
        precision("--bf16", "true", "--fp16", "true")


def test_fp16_trains_under_autocast_with_loss_scaling(uninterrupted):
    output_dir, run, record, _ = uninterrupted
    scaler = run.trainer.accelerator.scaler
    assert run.trainer.accelerator.native_amp and scaler.is_enabled()
    assert scaler.get_scale() < OVERFLOWING_SCALE, "no step overflowed: the test proves nothing about skipped steps"
    assert (output_dir / "checkpoint-1" / "scaler.pt").is_file()
    assert record.precision == "fp16 autocast with loss scaling"
    card = write_model_card(record, run.trainer.model).read_text()
    assert "Hardware: CPU (" in card and ", fp16 autocast with loss scaling. Training time" in card


@pytest.mark.parametrize("optim", ["adamw_torch_fused", "adamw_torch", "sgd"])
def test_steps_the_scaler_skips_keep_the_stage_schedule(uninterrupted, dataset, tmp_path, optim):
    """A skipped step (an overflowing fp16 gradient) changes no weight and is not divergence, and the lrs of every
    later step are still those of its own step in the plan. The Trainer does not step its scheduler after a step
    Accelerate saw skipped (an unfused optimizer: the scaler does not call its step), which would shift every stage
    boundary by the number of skipped steps; a fused optimizer skips inside its own step, unseen."""
    if optim == "adamw_torch_fused":
        _, run, _, recorder = uninterrupted
    else:
        run, _, recorder = fp16_run(flags(dataset, tmp_path / "out", "--save_strategy", "no", "--optim", optim))
    plan = run.trainer.plan
    skipped = [s["step"] for s in recorder.steps if not any(s["changed"].values())]
    assert skipped and skipped[0] < plan.first_steps[1], "skips must come before a stage boundary to test it"
    assert run.trainer.accelerator.scaler.get_scale() == OVERFLOWING_SCALE / 2 ** len(skipped), "each one halved it"
    for record in recorder.steps:
        step = record["step"]
        assert record["lrs"] == {g: plan.lr(g, step) for g in GROUPS}, f"step {step}"
        if step not in skipped:
            trained = plan.schedule.stages[record["stage"]].lrs
            assert {g for g, changed in record["changed"].items() if changed} == set(trained), f"step {step}"


@pytest.mark.parametrize("checkpoint", [2, 6], ids=["among-the-skipped-steps", "in-the-middle-of-a-stage"])
def test_fp16_resume_ends_with_the_uninterrupted_weights(uninterrupted, dataset, tmp_path, checkpoint):
    output_dir, _, _, recorder = uninterrupted
    _, _, resumed = fp16_run(flags(dataset, tmp_path / "out", "--save_strategy", "no", "--augment", "tutorial",
                                   "--resume_from_checkpoint", str(output_dir / f"checkpoint-{checkpoint}")))
    assert resumed.steps == recorder.steps[checkpoint:]
    assert_same_weights(output_dir, tmp_path / "out")
