"""MixUp and CutMix of the training batches: soft targets that the loss (with label smoothing) reads, the dominant
class as the accuracy's label, evaluation never mixed, exact resume."""

import pytest
import torch
from helpers import assert_same_weights, flags
from tiny_run import TINY, run
from torch.nn import functional as F

from training.arguments import parse_arguments
from training.run import build_run

BOTH = ["--mixup_alpha", "0.4", "--cutmix_alpha", "1.0"]


@pytest.fixture(scope="module")
def mixing_run(dataset, tmp_path_factory):
    args = parse_arguments([*TINY, *flags(dataset, tmp_path_factory.mktemp("mix") / "out"), *BOTH,
                            "--label_smoothing_factor", "0.1"])
    return build_run(*args)


def batch(run) -> dict:
    return next(iter(run.trainer.get_train_dataloader()))


def test_training_batches_are_mixed_with_soft_targets_and_dominant_labels(mixing_run):
    trainer = mixing_run.trainer
    plain = trainer.device_data.inputs(trainer._prepare_inputs(batch(mixing_run)), True, trainer._augment_seed())
    mixed = trainer.model_inputs(batch(mixing_run), train=True)
    targets = mixed["targets"]
    assert targets.shape == (8, 4) and torch.allclose(targets.sum(dim=1), torch.ones(8))
    assert (targets.max(dim=1).values < 1).any(), "some images are mixtures"
    assert torch.equal(mixed["labels"], targets.argmax(dim=1))
    assert not torch.equal(mixed["pixel_values"], plain["pixel_values"])
    again = trainer.model_inputs(batch(mixing_run), train=True)
    assert torch.equal(again["pixel_values"], mixed["pixel_values"]), "drawn from the step's seed: reproducible"


def test_evaluation_is_never_mixed(mixing_run):
    trainer = mixing_run.trainer
    inputs = trainer.model_inputs(batch(mixing_run), train=False)
    assert "targets" not in inputs


def test_the_loss_reads_the_soft_targets_with_label_smoothing(mixing_run):
    trainer, model = mixing_run.trainer, mixing_run.trainer.model.train()
    inputs = trainer.model_inputs(batch(mixing_run), train=True)
    loss = trainer.compute_loss(model, inputs)
    logits = model(pixel_values=inputs["pixel_values"]).logits.float()
    smoothed = inputs["targets"] * 0.9 + 0.1 / 4
    expected = -(smoothed * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, inputs["labels"], label_smoothing=0.1).item())


def test_a_mixed_run_resumes_exactly_and_says_so(dataset, tmp_path):
    first, _ = run(flags(dataset, tmp_path / "first", "--save_strategy", "steps", "--save_steps", "1", *BOTH))
    assert first.record.mixing == "MixUp (alpha 0.4) or CutMix (alpha 1), one per batch"
    run(flags(dataset, tmp_path / "resumed", "--save_strategy", "no", *BOTH, "--resume_from_checkpoint",
              str(tmp_path / "first" / "checkpoint-6")))
    assert_same_weights(tmp_path / "first", tmp_path / "resumed")


@pytest.mark.parametrize("flag", ["--mixup_alpha", "--cutmix_alpha"])
def test_a_negative_alpha_is_refused_by_name(flag, tmp_path):
    with pytest.raises(ValueError, match=f"{flag} must be 0 \\(off\\) or positive"):
        parse_arguments(["--output_dir", str(tmp_path), flag, "-0.5"])
