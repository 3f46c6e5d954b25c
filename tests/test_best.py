"""The best epoch kept (--load_best_model_at_end) and early stopping (--early_stopping_patience): which epoch is
saved, what the card and results say, how a stage boundary counts, and exact resume with them on."""

import json
import shutil

import pytest
import torch
from helpers import assert_same_weights, flags
from safetensors.torch import load_file
from tiny_run import run

from training.arguments import parse_arguments
from training.callbacks import best_evaluation, evaluations_without_improvement
from training.outputs import write_model_card

# Stage 3 at a rate that ruins the model: its epochs are worse than stage 2's, so the best is not the last epoch
RUINED_LAST_STAGE = ["--stage_lrs", "1e-3,1e-3,0.5"]


def eval_entries(output_dir) -> list[dict]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "eval_loss" in entry]


def test_the_best_evaluation_is_the_first_of_equal_ones_as_the_trainer_keeps_it():
    log = [{"step": 4, "eval_accuracy": 0.5}, {"step": 8, "eval_accuracy": 0.7}, {"step": 9, "loss": 0.1},
           {"step": 12, "eval_accuracy": 0.7}]
    evaluations = [entry for entry in log if "eval_accuracy" in entry]
    assert best_evaluation(evaluations, "eval_accuracy", greater=True)["step"] == 8
    assert best_evaluation(evaluations, "eval_accuracy", greater=False)["step"] == 4
    assert best_evaluation([], "eval_accuracy", greater=True) is None


def test_evaluations_without_improvement_counts_only_after_the_last_stage_starts():
    assert evaluations_without_improvement([(4, 0.5), (8, 0.4), (12, 0.3)], 8, greater=True) == 1
    assert evaluations_without_improvement([(4, 0.5), (8, 0.4), (12, 0.3)], 12, greater=True) == 0
    assert evaluations_without_improvement([(4, 0.5), (8, 0.6), (12, 0.6), (16, 0.55)], 8, greater=True) == 2
    assert evaluations_without_improvement([(4, 2.0), (8, 1.0), (12, 1.5)], 4, greater=False) == 1
    assert evaluations_without_improvement([(4, 2.0), (8, 1.5), (12, 1.0)], 0, greater=False) == 0


@pytest.mark.parametrize("ema", [[], ["--ema_decay", "0.5"]], ids=["live-weights", "ema"])
def test_the_best_epoch_is_the_saved_and_evaluated_model(dataset, tmp_path, ema):
    output_dir = tmp_path / "out"
    result, _ = run(flags(dataset, output_dir, "--load_best_model_at_end", "--metric_for_best_model", "loss",
                          *RUINED_LAST_STAGE, *ema))
    losses = {entry["step"]: entry["eval_loss"] for entry in eval_entries(output_dir)}
    best = min(losses, key=losses.get)
    assert best != max(losses), "the test needs a best epoch that is not the last"
    kept = result.record.metrics["kept_epoch"]
    assert (kept["step"], kept["checkpoint"], kept["value"]) == (best, f"checkpoint-{best}", losses[best])
    saved = load_file(output_dir / "model.safetensors")
    source = load_file(output_dir / kept["checkpoint"] / ("ema.safetensors" if ema else "model.safetensors"))
    assert all(torch.equal(saved[name], source[name]) for name in saved), "the kept epoch's weights are saved"
    assert result.record.metrics["validation_loss"] == pytest.approx(losses[best], rel=1e-5), "and evaluated"
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["kept_epoch"]["epoch"] == kept["epoch"] < 3
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == kept["checkpoint"], "a name, not this machine's path"
    card = write_model_card(result.record, result.trainer.model).read_text()
    assert f"The saved model is **epoch {kept['epoch']:g}'s**" in card
    assert "best validation loss" in card and "so the validation figure below is biased upward" in card


def test_patience_stops_only_within_the_last_stage_and_resumes_exactly(dataset, tmp_path):
    """With the best epoch kept and an average of the weights too: the resumed run (in another folder) keeps the
    same epoch's average, read from the first run's checkpoint."""
    stop = ["--early_stopping_patience", "1", "--stage_epochs", "1,1,2", *RUINED_LAST_STAGE,
            "--load_best_model_at_end", "--ema_decay", "0.5"]
    first, _ = run(flags(dataset, tmp_path / "first", *stop))
    accuracies = [entry["eval_accuracy"] for entry in eval_entries(tmp_path / "first")]
    assert first.record.metrics["trained_epochs"] == 3 and len(accuracies) == 3, "stopped after epoch 3 of 4"
    assert accuracies[2] <= max(accuracies[:2])
    card = write_model_card(first.record, first.trainer.model).read_text()
    assert "Training stopped early, after epoch 3 of 4" in card
    run(flags(dataset, tmp_path / "resumed", *stop, "--resume_from_checkpoint",
              str(tmp_path / "first" / "checkpoint-8")))
    assert_same_weights(tmp_path / "first", tmp_path / "resumed")
    assert len(eval_entries(tmp_path / "resumed")) == 3


@pytest.mark.parametrize(("more", "message"), [
    (["--early_stopping_patience", "0"], "--early_stopping_patience must be at least 1 evaluation, got 0"),
    (["--load_best_model_at_end", "--metric_for_best_model", "f1"], "--metric_for_best_model must be accuracy or loss"),
    (["--metric_for_best_model", "loss"], "give one of them"),
    (["--load_best_model_at_end", "--eval_strategy", "no", "--save_strategy", "no"], "--eval_strategy no has none"),
    (["--load_best_model_at_end", "--metric_for_best_model", "loss", "--greater_is_better", "true"],
     "--greater_is_better: it follows"),
])
def test_best_model_flags_that_cannot_work_are_refused_by_name(tmp_path, more, message):
    with pytest.raises(ValueError) as error:
        parse_arguments(["--output_dir", str(tmp_path / "out"), *more])
    assert message in str(error.value)


def test_the_watched_metric_defaults_to_validation_accuracy(tmp_path):
    args = parse_arguments(["--output_dir", str(tmp_path / "out"), "--load_best_model_at_end"])[3]
    assert (args.metric_for_best_model, args.greater_is_better) == ("accuracy", True)


def test_an_early_stopped_run_is_finished_and_resuming_it_trains_nothing(dataset, tmp_path, capsys):
    from tiny_run import TINY

    from training.cli import finetune_main

    out = tmp_path / "out"
    stopping = [*TINY, *flags(dataset, out, "--early_stopping_patience", "1", "--stage_epochs", "1,1,2",
                              *RUINED_LAST_STAGE)]
    assert finetune_main(stopping) == 0
    assert len(eval_entries(out)) == 3, "stopped after epoch 3 of 4"
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert finetune_main([*stopping, "--resume_from_checkpoint", "last"]) == 2
    assert "checkpoint-12 is where its run stopped early (step 12 of 16, --early_stopping_patience): nothing is " \
           "left to train" in " ".join(capsys.readouterr().err.split())
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_a_resumed_runs_training_time_is_every_sessions(dataset, tmp_path):
    first, _ = run(flags(dataset, tmp_path / "first"))
    resumed, _ = run(flags(dataset, tmp_path / "resumed", "--resume_from_checkpoint",
                           str(tmp_path / "first" / "checkpoint-4")))
    epochs = eval_entries(tmp_path / "resumed")
    assert [entry["epoch"] for entry in epochs] == [1, 2, 3], "the first epoch's entry came with the checkpoint"
    seconds = sum(entry["epoch_time"] for entry in epochs)
    metrics = resumed.record.metrics
    assert metrics["train_wall_seconds"] == pytest.approx(seconds) == metrics["train_runtime"]
    assert metrics["train_samples_per_second"] == pytest.approx(32 * 3 / seconds)


@pytest.mark.parametrize("first_watched", [[], ["--load_best_model_at_end", "--metric_for_best_model", "accuracy"]],
                         ids=["none-before", "accuracy-before"])
def test_the_best_epoch_of_a_resumed_run_is_chosen_over_its_whole_history(dataset, tmp_path, first_watched):
    """A run resumed with --allow_changed_run that now keeps its best epoch by loss: epoch 1, before the resume, is
    the best (later stages ruin the model), so it is the epoch kept, not the best since the resume."""
    ruin_after_one = ["--stage_lrs", "1e-3,0.5,0.5"]
    run(flags(dataset, tmp_path / "first", *ruin_after_one, *first_watched))
    resumed, _ = run(flags(dataset, tmp_path / "first", *ruin_after_one, "--load_best_model_at_end",
                           "--metric_for_best_model", "loss", "--allow_changed_run",
                           "--resume_from_checkpoint", str(tmp_path / "first" / "checkpoint-8")))
    losses = {entry["step"]: entry["eval_loss"] for entry in eval_entries(tmp_path / "first")}
    assert sorted(losses) == [4, 8, 12] and min(losses, key=losses.get) == 4, "the test needs epoch 1 best"
    kept = resumed.record.metrics["kept_epoch"]
    assert (kept["step"], kept["checkpoint"], kept["value"]) == (4, "checkpoint-4", losses[4])


def test_a_best_epoch_whose_checkpoint_is_gone_is_named_and_the_best_kept_one_is_used(dataset, tmp_path, caplog):
    ruin_after_one = ["--stage_lrs", "1e-3,0.5,0.5"]
    run(flags(dataset, tmp_path / "first", *ruin_after_one))
    shutil.rmtree(tmp_path / "first" / "checkpoint-4")
    resumed, _ = run(flags(dataset, tmp_path / "first", *ruin_after_one, "--load_best_model_at_end",
                           "--metric_for_best_model", "loss", "--allow_changed_run",
                           "--resume_from_checkpoint", str(tmp_path / "first" / "checkpoint-8")))
    losses = {entry["step"]: entry["eval_loss"] for entry in eval_entries(tmp_path / "first")}
    assert min(losses, key=losses.get) == 4, "the test needs epoch 1 best"
    assert resumed.record.metrics["kept_epoch"]["step"] == min((8, 12), key=losses.get)
    assert "epoch 1 had the best eval_loss of the run so far" in caplog.text
    assert "its checkpoint is no longer in" in caplog.text
