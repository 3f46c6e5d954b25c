"""The learning-rate range test: the groups of the chosen stage train and no others, the rules it suggests by, the
bad ranges it refuses, and nothing saved."""

import math

import pytest
import torch
from helpers import STAGED_1_1_1, flags, load_script
from tiny_run import TINY

from training.arguments import parse_arguments
from training.lr_find import RangeTest, range_test
from training.run import build_run
from training.stages import GROUPS


@pytest.mark.parametrize("stage", [1, 3])
def test_the_range_test_trains_the_stage_groups_only_with_a_rising_lr(dataset, tmp_path, stage):
    run = build_run(*parse_arguments([*TINY, *flags(dataset, tmp_path / "out")]))
    before = {g: [p.detach().clone() for p in ps] for g, ps in run.trainer.model.parameter_groups().items()}
    test = range_test(run, stage - 1, 1e-6, 1e-2, steps=6)
    after = run.trainer.model.parameter_groups()
    trained = STAGED_1_1_1.stages[stage - 1].groups
    for group in GROUPS:
        changed = any(not torch.equal(a, b) for a, b in zip(before[group], after[group], strict=True))
        assert changed == (group in trained), f"stage {stage}: {group} changed={changed}"
    assert test.lrs == pytest.approx([1e-6 * 10 ** (4 * t / 5) for t in range(6)])
    assert len(test.losses) == 6 and all(math.isfinite(loss) for loss in test.losses)


def test_the_suggestion_is_a_tenth_of_the_minimum_and_the_steepest_descent_comes_before_it():
    lrs = [10 ** (k / 4) for k in range(-28, 1)]  # 1e-7 .. 1
    losses = [1 + (math.log10(lr) + 2) ** 2 / 10 for lr in lrs]  # lowest at 1e-2
    test = RangeTest(1, ("head",), 10, lrs, losses, "after 29 steps")
    assert test.minimum == pytest.approx(1e-2) and test.suggestion == pytest.approx(1e-3)
    assert test.steepest < test.minimum


def test_the_script_prints_its_suggestion_draws_the_curve_and_saves_nothing(dataset, tmp_path, capsys):
    plot, output_dir = tmp_path / "lr.png", tmp_path / "out"
    code = load_script("lr_find").main([*TINY, *flags(dataset, output_dir), "--stage", "2", "--num_steps", "12",
                                         "--start_lr", "1e-5", "--end_lr", "1", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"stage 2 of 3: {', '.join(STAGED_1_1_1.stages[1].groups)} (" in out
    assert "suggested lr: " in out and "(a tenth of that, fastai's lr_min)" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert not output_dir.exists(), "nothing is saved"


@pytest.mark.parametrize(("more", "message"), [
    (["--start_lr", "1e-3", "--end_lr", "1e-4"], "the lr range must increase from a positive --start_lr"),
    (["--start_lr", "0"], "the lr range must increase from a positive --start_lr"),
    (["--recipe", "staged", "--stage", "4"], "--stage 4: the recipe has 3 stage(s)"),
    (["--stage", "2"], "--stage 2: the recipe has 1 stage(s)"),  # the default on trained weights: one stage
    (["--stage", "0"], "--stage must be at least 1, got 0"),
    (["--num_steps", "1"], "--num_steps must be at least 2, got 1"),
    (["--push_to_hub", "--ema_decay", "0.9"], "--push_to_hub, --ema_decay: no effect on the range test"),
])
def test_bad_ranges_and_stages_are_refused_before_loading(more, message, tmp_path, capsys):
    assert load_script("lr_find").main(["--dataset_name", str(tmp_path / "absent"), *more]) == 2
    assert message in capsys.readouterr().err
